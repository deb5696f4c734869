from __future__ import annotations

import contextlib
import copy
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, native
from labelgate.enforce import apply_masks
from labelgate.enforce import native as json_native
from labelgate.enforce.strategies import MASK_INVALID
from labelgate.errors import PolicyUnavailable
from labelgate.oip import native as tensor_native
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs

REPO = Path(__file__).resolve().parents[2]
CATALOG_DATA = json.loads((REPO / "rego" / "labelgate" / "catalog" / "data.json").read_text())
# The shipped catalog, plus entries naming the keys of the JSON documents below: only
# catalogued keys are spelled verbatim in paths.
CATALOG = Catalog.from_data(
    {
        **CATALOG_DATA,
        "entries": [
            *CATALOG_DATA["entries"],
            *(
                {"model": "customer-profile", "path": f"outputs.doc[].{path}", "labels": ["internal"]}
                for path in ("contact.email", "contact.phone", "n", "ssn")
            ),
        ],
    }
)
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"


def text(name: str, *values: str | bytes) -> Tensor:
    elements = [value.encode() if isinstance(value, str) else value for value in values]
    return Tensor(name, "BYTES", [len(elements)], elements)


def mask(path: str, strategy: str, **params: object) -> dict:
    return {"path": path, "strategy": strategy, "params": params}


def masked(tensors: list[Tensor], *masks: dict) -> dict[str, list]:
    classification = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    return {tensor.name: tensor.values for tensor in apply_masks(tensors, classification, list(masks), KEY)}


@pytest.mark.parametrize(
    ("datatype", "values", "zero"),
    [
        ("FP32", [0.25, -1.5], 0.0),
        ("FP16", [1.0, 2.0], 0.0),
        ("INT64", [7, 4111111111111111], 0),
        ("UINT8", [1, 255], 0),
        ("BOOL", [True, False], False),
    ],
)
@pytest.mark.parametrize("strategy", ["redact", "partial", "hash", "null"])
def test_numeric_tensors_become_zeros_of_their_type(
    datatype: str, values: list, zero: object, strategy: str
) -> None:
    tensor = Tensor("risk_score", datatype, [1, 2], list(values))
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    [result] = apply_masks([tensor], classification, [mask("outputs.risk_score", strategy)], KEY)
    assert result.values == [zero, zero]
    assert all(type(value) is type(zero) for value in result.values)
    assert (result.datatype, result.shape) == (datatype, [1, 2])


def test_whole_bytes_elements_per_strategy() -> None:
    ssn = text("ssn", "123-45-6789", "078-05-1121")
    assert masked([ssn], mask("outputs.ssn", "redact"))["ssn"] == [b"[REDACTED]", b"[REDACTED]"]
    assert masked([ssn], mask("outputs.ssn", "redact", replacement="***"))["ssn"] == [b"***", b"***"]
    assert masked([ssn], mask("outputs.ssn", "partial", keep_last=4))["ssn"] == [
        b"*******6789",
        b"*******1121",
    ]
    assert masked([ssn], mask("outputs.ssn", "null"))["ssn"] == [b"", b""]
    hashed = masked([ssn], mask("outputs.ssn", "hash"))["ssn"]
    assert all(value.startswith(b"hmac:") and len(value) == 69 for value in hashed)
    assert hashed == masked([ssn], mask("outputs.ssn", "hash"))["ssn"]  # stable


def test_span_masks_rewrite_only_what_the_detector_found() -> None:
    notes = text("notes", "card 4111 1111 1111 1111 about 123-45-6789 today", "no numbers", "ssn 078-05-1121")
    result = masked([notes], mask("outputs.notes{us_ssn}", "redact"))["notes"]
    assert result == [b"card 4111 1111 1111 1111 about [REDACTED] today", b"no numbers", b"ssn [REDACTED]"]
    both = masked(
        [notes],
        mask("outputs.notes{us_ssn}", "partial", keep_last=4),
        mask("outputs.notes{credit_card}", "null"),
    )["notes"]
    assert both[0] == b"card  about *******6789 today"


def test_a_whole_mask_supersedes_span_masks() -> None:
    notes = text("notes", "about 123-45-6789")
    result = masked([notes], mask("outputs.notes{us_ssn}", "redact"), mask("outputs.notes", "null"))
    assert result["notes"] == [b""]


def test_unrelated_or_unmatched_masks_are_no_ops() -> None:
    tensors = [text("notes", "about 123-45-6789"), Tensor("risk_score", "FP32", [1], [0.5])]
    result = masked(tensors, mask("outputs.absent", "null"), mask("outputs.notes{email}", "null"))
    assert result == {"notes": [b"about 123-45-6789"], "risk_score": [0.5]}


def test_nested_json_masks_keep_valid_json() -> None:
    profile = {"name": "Ann", "contact": {"email": "ann@example.com", "phone": "212-555-1234"}, "n": [1, 2]}
    tensors = [text("doc", json.dumps(profile), json.dumps({"other": True}), "plain text 123-45-6789")]
    result = masked(
        tensors,
        mask("outputs.doc[].contact.email", "partial", keep_last=11),
        mask("outputs.doc[].contact.phone", "null"),
        mask("outputs.doc[].n", "hash"),
    )["doc"]
    first = json.loads(result[0])
    assert first["name"] == "Ann"
    assert first["contact"] == {"email": "****example.com", "phone": None}
    assert first["n"].startswith("hmac:")
    assert json.loads(result[1]) == {"other": True}
    assert result[2] == b"plain text 123-45-6789"  # not JSON: nested paths do not apply


def test_span_masks_inside_json_elements_edit_leaves_and_keep_valid_json() -> None:
    element = {"note": 'SSN "123-45-6789" on file', "items": [{"card": 4111111111111111}], "ok": "x"}
    result = masked(
        [text("doc", json.dumps(element))],
        mask("outputs.doc{us_ssn}", "redact"),
        mask("outputs.doc{credit_card}", "partial"),
    )
    parsed = json.loads(result["doc"][0])
    assert parsed == {"note": 'SSN "[REDACTED]" on file', "items": [{"card": "************1111"}], "ok": "x"}


@pytest.mark.parametrize("card", ["4111111111111111.0", "4111111111111111e0", "4.111111111111111e15"])
def test_a_card_written_as_a_json_float_is_found_and_masked(card: str) -> None:
    # A JSON client reads each of these back as the card's digits. The element before it
    # has the same shape with a fraction in that leaf: the shape must not decide what is read.
    elements = ['{"id": 1, "card": 0.5}', f'{{"id": 2, "card": {card}}}']
    result = masked([text("doc", *elements)], mask("outputs.doc{credit_card}", "partial"))
    assert json.loads(result["doc"][0]) == {"id": 1, "card": 0.5}
    assert json.loads(result["doc"][1]) == {"id": 2, "card": "************1111"}


def test_a_card_in_a_json_float_with_a_fraction_is_masked_with_its_integer_part() -> None:
    # A reader sees the card in 4111111111111111.5 (review: leaks, numbers).
    elements = ['{"n": 4111111111111111.5}', '{"n": -378282246310005.25}', '{"n": 2.5}']
    result = masked([text("doc", *elements)], mask("outputs.doc{credit_card}", "partial"))
    assert [json.loads(value)["n"] for value in result["doc"]] == [
        "************1111 .5",
        "-***********0005 .25",
        2.5,
    ]


@pytest.mark.parametrize("use_native", [True, False])
def test_a_card_written_as_a_float_in_free_text_is_found_and_masked(use_native: bool) -> None:
    # What a reader (or pandas writing a card column it read as floats) reads as the card:
    # the card pass sees digits glued to a dot or a letter, so floats have their own pass.
    forms = ["4111111111111111.0", "4.111111111111111e+15", "[4111111111111111e0]", "41111111111111110e-1"]
    with native.forced(use_native):
        result = masked(
            [text("note", *(f"card {form} on file" for form in forms), "pi 3.14159, 4111111111111111.5")],
            mask("outputs.note{credit_card}", "redact"),
        )
    assert result["note"][:2] == [b"card [REDACTED] on file"] * 2
    assert result["note"][2:4] == [b"card [[REDACTED]] on file", b"card [REDACTED] on file"]
    # A reader sees the card in its integer part (found by review): masked too.
    assert result["note"][4] == b"pi 3.14159, [REDACTED]"


@pytest.mark.parametrize("use_native", [True, False])
def test_a_float_a_parser_rounds_to_a_card_is_masked(use_native: bool) -> None:
    # float("4111111111111111.1") is the card, as JSON and CSV readers parse it (review).
    forms = ["4111111111111111.1", "4.1111111111111109e15", "4111111111111110.9"]
    with native.forced(use_native):
        result = masked(
            [text("note", *(f"amount {form}" for form in forms))], mask("outputs.note{credit_card}", "redact")
        )
    assert result["note"] == [b"amount [REDACTED]"] * 3


@pytest.mark.parametrize("use_native", [True, False])
def test_a_card_and_an_ssn_written_with_tabs_are_found_and_masked(use_native: bool) -> None:
    # A tab reads as a space (the columns of a TSV a terminal shows): found by review.
    with native.forced(use_native):
        result = masked(
            [text("note", "card 4111\t1111\t1111\t1111 ssn 123\t45\t6789", "years 2019\t2020")],
            mask("outputs.note{credit_card}", "redact"),
            mask("outputs.note{us_ssn}", "redact"),
        )
    assert result["note"] == [b"card [REDACTED] ssn [REDACTED]", b"years 2019\t2020"]


def test_a_node_mask_and_a_span_mask_on_the_same_leaf_use_the_original_value() -> None:
    element = json.dumps({"ssn": "123-45-6789"})
    # ``hash`` covers a ``partial`` span (``strategies.covers``): the node mask alone applies.
    both = masked(
        [text("doc", element)], mask("outputs.doc[].ssn", "hash"), mask("outputs.doc{us_ssn}", "partial")
    )
    only_hash = masked([text("doc", element)], mask("outputs.doc[].ssn", "hash"))
    assert both == only_hash
    assert (
        json.loads(both["doc"][0])["ssn"]
        == masked([text("ssn", "123-45-6789")], mask("outputs.ssn", "hash"))["ssn"][0].decode()
    )


def test_glob_masks_cover_every_matching_path() -> None:
    tensors = [text("notes", "x"), Tensor("risk_score", "FP64", [1], [0.5])]
    assert masked(tensors, mask("outputs.*", "null")) == {"notes": [b""], "risk_score": [0.0]}


def test_inputs_are_never_mutated() -> None:
    tensors = [
        text("notes", "about 123-45-6789"),
        text("doc", json.dumps({"ssn": "123-45-6789"})),
        Tensor("risk_score", "FP32", [1], [0.5]),
    ]
    before = copy.deepcopy(tensors)
    classification = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    masks = [
        mask("outputs.notes{us_ssn}", "redact"),
        mask("outputs.doc[].ssn", "null"),
        mask("outputs.risk_score", "null"),
    ]
    result = apply_masks(tensors, classification, masks, KEY)
    assert tensors == before
    assert all(new is not old for new, old in zip(result, tensors, strict=True))


def test_unknown_strategies_raise() -> None:
    tensor = text("notes", "x")
    classification = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    with pytest.raises(PolicyUnavailable) as caught:
        apply_masks([tensor], classification, [mask("outputs.notes", "scramble")], KEY)
    assert caught.value.reason == MASK_INVALID


def test_span_masks_on_tensors_the_classification_did_not_see_empty_them() -> None:
    seen = text("notes", "about 123-45-6789")
    classification = classify_outputs("m", [seen], CATALOG, DETECTORS)
    grown = text("notes", "about 123-45-6789", "and 078-05-1121")
    unseen = text("other", "078-05-1121")
    result = apply_masks(
        [grown, unseen],
        classification,
        [mask("outputs.notes{us_ssn}", "redact"), mask("outputs.other{us_ssn}", "redact")],
        KEY,
    )
    assert [tensor.values for tensor in result] == [[b"", b""], [b""]]


def test_an_element_that_no_longer_parses_as_json_is_emptied() -> None:
    original = text("doc", json.dumps({"ssn": "123-45-6789"}))
    classification = classify_outputs("m", [original], CATALOG, DETECTORS)
    changed = text("doc", 'ssn: "123-45-6789" (not JSON any more)')
    [result] = apply_masks([changed], classification, [mask("outputs.doc[].ssn", "redact")], KEY)
    assert result.values == [b""]


def test_spans_that_do_not_fit_the_element_empty_it() -> None:
    original = text("notes", "padding padding 123-45-6789")
    classification = classify_outputs("m", [original], CATALOG, DETECTORS)
    shorter = text("notes", "123")
    [result] = apply_masks([shorter], classification, [mask("outputs.notes{us_ssn}", "null")], KEY)
    assert result.values == [b""]


@pytest.mark.parametrize("raw", [True, False])
def test_masked_tensors_encode_back_into_the_response(raw: bool) -> None:
    response = pb.ModelInferResponse(model_name="customer-profile")
    tensors = [
        text("notes", "about 123-45-6789"),
        Tensor("risk_score", "FP32", [1], [0.5]),
        Tensor("ok", "BOOL", [1], [True]),
    ]
    encode_outputs(response, tensors, raw=raw)
    decoded = decode_outputs(response)
    classification = classify_outputs("customer-profile", decoded, CATALOG, DETECTORS)
    masks = [
        mask("outputs.notes{us_ssn}", "hash"),
        mask("outputs.risk_score", "partial"),
        mask("outputs.ok", "redact"),
    ]
    encode_outputs(response, apply_masks(decoded, classification, masks, KEY), raw=raw)
    values = {tensor.name: tensor.values for tensor in decode_outputs(response)}
    assert values["notes"][0].startswith(b"about hmac:")
    assert values["risk_score"] == [0.0]
    assert values["ok"] == [False]


# --- fail closed: elements the classifier could not read key by key -------------------------

SECRET_VALUE = "TOPSECRET-VALUE"
SSN = "123-45-6789"
ESCAPED_SSN = "\\u0031\\u0032\\u0033-45-6789"  # the JSON text of SSN with its first digits escaped
TABLES = json.loads((REPO / "rego" / "labelgate" / "tables" / "data.json").read_text())
# outputs.doc is public, so a no-group caller sees the tensor and only what policy masks.
NESTED = Catalog.from_data(
    {
        "entries": [
            {"model": "m", "path": "outputs.doc", "labels": ["public"]},
            {"model": "m", "path": "outputs.doc[].contact.email", "labels": ["confidential"]},
            {"model": "m", "path": "outputs.doc[].secret", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.doc[].note", "labels": ["public"]},
            {"model": "m", "path": "outputs.wide", "labels": ["public"]},
            {"model": "m", "path": "outputs.wide[].secret", "labels": ["restricted"]},
        ]
    }
)
DEEP = '{"secret": "' + SECRET_VALUE + '", "deep": ' + "[" * 70 + "1" + "]" * 70 + "}"
FAILURE_MODES = {
    "300 keys": json.dumps({"secret": SECRET_VALUE, **{f"k{i}": i for i in range(300)}}),
    "detector on a key": json.dumps({SSN: "x", "secret": SECRET_VALUE}),
    "duplicate key": '{"secret": "' + SECRET_VALUE + '", "secret": "other"}',
    "too deep": DEEP,
    "invalid JSON": '{"secret": "' + SECRET_VALUE + '", "note": "' + SSN,
    "escaped SSN, invalid JSON": '{"secret": "' + SECRET_VALUE + '", "note": "' + ESCAPED_SSN + '"',
    "escaped SSN, duplicate key": '{"note": "' + ESCAPED_SSN + '", "note": 1, "secret": "x"}',
    # JSON a reader parses that is not a bare object (review: leaks, JSON shapes).
    "top-level array": json.dumps([{"secret": SECRET_VALUE, "note": SSN}]),
    "JSON in a JSON string": json.dumps(json.dumps({"secret": SECRET_VALUE, "note": SSN})),
    "UTF-8 byte-order mark": "\ufeff" + json.dumps({"secret": SECRET_VALUE, "note": SSN}),
    "no-break space": "\u00a0" + json.dumps({"secret": SECRET_VALUE, "note": SSN}),
}


def default_policy_masks(classification, groups: tuple[str, ...] = ()) -> list[dict]:
    """The masks of the default tables for a caller in ``groups`` (the rules of decision.rego:
    every label of a field has its say, so a field is in clear only if each of its labels is,
    else it gets the strongest of its labels' masks; a group's offer beats the default)."""
    masks = []
    for field in classification.fields:
        offered = []
        for label in field.labels:
            entry = TABLES["labels"][label]
            offers = [entry["groups"][group] for group in groups if group in entry["groups"]]
            offer = next((offer for offer in offers if offer.get("see")), (offers or [entry["default"]])[0])
            if not offer.get("see"):
                offered.append(offer["mask"])
        if offered:
            strongest = min(offered, key=lambda mask: TABLES["mask_permissiveness"][mask["strategy"]])
            masks.append({"path": field.path, **strongest})
    return masks


def released(tensors: list[Tensor], groups: tuple[str, ...] = ()) -> tuple[list[bytes], list[str]]:
    classification = classify_outputs("m", tensors, NESTED, DETECTORS)
    masks = default_policy_masks(classification, groups)
    [result] = apply_masks(tensors, classification, masks, KEY)
    return result.values, [mask["path"] for mask in masks]


@pytest.mark.parametrize("groups", [(), ("analysts",)], ids=["no-group", "analysts"])
@pytest.mark.parametrize("mode", list(FAILURE_MODES))
def test_an_element_read_as_text_is_released_only_as_policy_saw_it(mode: str, groups: tuple) -> None:
    element = FAILURE_MODES[mode]
    values, masked_paths = released([text("doc", "plain words", element, '{"secret": "s2"}')], groups)
    assert "outputs.doc{opaque-json}" in masked_paths
    output = b"\n".join(values)
    for hidden in (SECRET_VALUE, SSN, ESCAPED_SSN, "s2"):
        assert hidden.encode() not in output, hidden
    assert values[0] == b"plain words"
    assert values[1] == b""  # restricted: emptied whole
    if mode == "300 keys":  # the limit is per tensor: no JSON element of it was read key by key
        assert values[2] == b""
    else:
        assert json.loads(values[2]) == {"secret": None}


def test_a_valid_element_with_an_escaped_ssn_in_a_value_is_masked_in_place() -> None:
    element = '{"note": "' + ESCAPED_SSN + '", "secret": "' + SECRET_VALUE + '"}'
    values, masked_paths = released([text("doc", element)])
    assert "outputs.doc{opaque-json}" not in masked_paths
    assert json.loads(values[0]) == {"note": "[REDACTED]", "secret": None}


def test_escaped_values_in_plain_text_mask_the_whole_element() -> None:
    values, _ = released([text("doc", "call " + ESCAPED_SSN + " today", "ssn\\n" + SSN, "fine")])
    assert values == [b"[REDACTED]", b"[REDACTED]", b"fine"]


def test_opaque_elements_take_the_strongest_mask_naming_anything_inside_them() -> None:
    tensor = text("doc", '{"secret": "a", "secret": "b"}', '{"secret": "c"}', "plain")
    classification = classify_outputs("m", [tensor], NESTED, DETECTORS)
    nested_only = [mask("outputs.doc[].contact.email", "partial"), mask("outputs.doc[].secret", "redact")]
    [result] = apply_masks([tensor], classification, nested_only, KEY)
    assert result.values == [b"[REDACTED]", b'{"secret":"[REDACTED]"}', b"plain"]
    [result] = apply_masks([tensor], classification, [mask("outputs.doc{opaque-json}", "hash")], KEY)
    assert result.values[0].startswith(b"hmac:") and result.values[1:] == tensor.values[1:]


def test_an_opaque_element_that_changed_size_is_emptied() -> None:
    classification = classify_outputs("m", [text("doc", '{"a": 1, "a": 2}')], NESTED, DETECTORS)
    changed = text("doc", '{"a": 1, "a": 2, "b": "longer"}')
    [result] = apply_masks([changed], classification, [mask("outputs.doc{opaque-json}", "redact")], KEY)
    assert result.values == [b""]


def test_masks_reach_keys_spelled_as_placeholders_and_through_globs() -> None:
    element = json.dumps({"sk_live_abc123": "v", "contact": {"email": "e", "4111 1111": "w"}})
    tensor = text("doc", element)
    classification = classify_outputs("m", [tensor], NESTED, DETECTORS)
    assert classification.json_keys is not None
    placeholder = classification.json_keys.placeholder("sk_live_abc123")
    paths = [field.path for field in classification.fields]
    assert f"outputs.doc[].{placeholder}" in paths and not any("sk_live" in path for path in paths)

    def apply(*masks: dict) -> object:
        [result] = apply_masks([tensor], classification, list(masks), KEY)
        return json.loads(result.values[0])

    assert apply(mask(f"outputs.doc[].{placeholder}", "null")) == {
        "sk_live_abc123": None,
        "contact": {"email": "e", "4111 1111": "w"},
    }
    assert apply(mask("outputs.doc[].*", "redact")) == {
        "sk_live_abc123": "[REDACTED]",
        "contact": "[REDACTED]",
    }
    assert apply(mask("outputs.doc[].contact.<key:*>", "null")) == {
        "sk_live_abc123": "v",
        "contact": {"email": "e", "4111 1111": None},
    }
    # A mask spelling the key verbatim names a path no field has: it reaches nothing.
    assert apply(mask("outputs.doc[].sk_live_abc123", "null"))["sk_live_abc123"] == "v"


def test_the_real_policy_empties_opaque_elements_for_a_no_group_caller() -> None:
    import asyncio
    import time

    from labelgate.classify import to_policy_fields
    from labelgate.policy.contract import build_input
    from labelgate.policy.embedded import EmbeddedEngine

    modes = {mode: element for mode, element in FAILURE_MODES.items() if mode != "300 keys"}
    tensors = [
        text("doc", "plain words", *modes.values(), '{"secret": "s2"}'),
        text("wide", FAILURE_MODES["300 keys"], "plain words"),
    ]
    classification = classify_outputs("m", tensors, NESTED, DETECTORS)
    policy_input = build_input(
        phase="response",
        subject={"id": "nobody@example.com", "groups": [], "auth": "jwt"},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "m",
            "requested_outputs": [],
            "model_version": "1",
            "request_id": "fail-closed",
        },
        fields=to_policy_fields(classification.fields),
        approval=None,
        time_ns=time.time_ns(),
    )

    async def decide() -> object:
        engine = EmbeddedEngine(REPO / "rego", watch_interval=None)
        await engine.start()
        try:
            return await engine.decide(policy_input)
        finally:
            await engine.close()

    decision = asyncio.run(decide())
    assert decision.allow
    doc, wide = apply_masks(tensors, classification, list(decision.masks), KEY)
    assert doc.values[0] == b"plain words"
    assert doc.values[1:-1] == [b""] * len(modes)
    assert json.loads(doc.values[-1]) == {"secret": None}
    assert wide.values == [b"", b"plain words"]


# --- review rev-s11-mask: what a partial mask still shows -------------------------------------


def _mongolian(text: str) -> str:
    """``text`` with its digits written as Mongolian digits (U+1810..U+1819): in UTF-16 or
    UTF-32 every byte of one is an ASCII control character."""
    return "".join(chr(0x1810 + int(char)) if char.isdigit() else char for char in text)


def _digits_shown(data: bytes) -> int:
    """The most ASCII digits a reading the classifier uses shows of ``data``: as it is,
    folded, decoded as the UTF-16 or UTF-32 it reads as and folded; and for a JSON object,
    each string leaf read so too."""
    from labelgate.classify.folding import UNFOLDABLE, folded
    from labelgate.classify.jsonpaths import parse_object
    from labelgate.classify.other_encodings import wide_folded

    forms = [data]
    for form in (folded(data), wide_folded(data)):
        if form is not None and form is not UNFOLDABLE:
            forms.append(form)
    shown = max(len(re.findall(rb"[0-9]", form)) for form in forms)
    parsed = parse_object(data)
    if parsed is not None:
        for value in parsed.values():
            if isinstance(value, str):
                shown = max(shown, _digits_shown(value.encode("utf-8", "surrogatepass")))
    return shown


def _all_native(use_native: bool) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for switch in (native, tensor_native, json_native):
        stack.enter_context(switch.forced(use_native))
    return stack


WIDE_SSN = b"\xff\xfe" + ("SSN " + _mongolian("123-45-6789")).encode("utf-16-le")
WIDE_CARD = b"\xff\xfe" + ("card " + _mongolian("4111111111111111")).encode("utf-16-le")
# A JSON leaf whose UTF-8 is UTF-16 text (an e-acute, then a card in Mongolian digits).
WIDE_LEAF = "\u00e9" + ("card " + _mongolian("4111111111111111")).encode("utf-16-le").decode("ascii")


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_partial_shows_no_more_than_keep_last_of_text_that_reads_as_utf16(use_native: bool) -> None:
    """Review (F1): an SSN or a card in Mongolian digits, in UTF-16 text (a byte order mark,
    or the NULs of one): the classifier finds it decoded, and ``partial`` kept every digit,
    each two ASCII control bytes it counted as no character. Whole outputs, detector spans,
    and JSON leaves: no reading shows more than ``keep_last`` digits."""
    with _all_native(use_native):
        tensors = [
            decode_outputs(_raw_reply(text("ssn", WIDE_SSN, "SSN 123-45-6789")))[0],
            text("notes", WIDE_CARD, "\u00e9".encode() + WIDE_CARD[2:], "card 4111111111111111"),
            text("doc", json.dumps({"n": WIDE_LEAF, "contact": {"email": "x"}})),
        ]
        result = masked(
            tensors,
            mask("outputs.ssn", "partial", keep_last=4),
            mask("outputs.notes{credit_card}", "partial", keep_last=4),
            mask("outputs.doc[].n", "partial", keep_last=4),
        )
    assert result["ssn"][1] == b"***********6789"  # ASCII: the last four, as ever
    assert result["notes"][2] == b"card ************1111"
    assert all(_digits_shown(value) <= 4 for value in result["ssn"] + result["notes"] + result["doc"])
    assert _digits_shown(WIDE_SSN) == 9 and _digits_shown(WIDE_CARD) == 16  # there to find
    # The card is found in the leaf read as UTF-16 (a JSON string read from its own start): the
    # element is opaque, so the mask on its leaf starred it whole, keep_last included.
    assert set(result["doc"][0][:-4]) == {ord("*")} and WIDE_LEAF.encode() not in result["doc"][0]


def _raw_reply(tensor: Tensor) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse()
    encode_outputs(reply, [tensor], raw=True)
    return reply


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_card_written_as_a_json_float_with_more_digits_than_a_double_is_found(use_native: bool) -> None:
    """Review (F2): ``4111111111111111110.0`` (a Luhn-valid 19-digit card) was scanned as the
    float it parses to (``4111111111111111168``), found nothing, and the element left as
    written: every reader keeping number literals (a person, ``jq``, a decimal parser) read
    the card."""
    card = "4111111111111111110"
    forms = [f"{card}.0", f"{card}e0", f"{card[0]}.{card[1:]}e18", f"{card}.5", f"{card[:17]}.{card[17:]}e2"]
    elements = [f'{{"ref": {form}, "note": "x"}}' for form in forms]
    with _all_native(use_native):
        tensor = text("notes", *elements)
        classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        found = classification.json_elements["notes"]
        assert all(
            [hit.detector for leaf in found[index] for hit in leaf.detections] == ["credit_card"]
            for index in range(len(forms))
        )
        [result] = apply_masks([tensor], classification, [mask("outputs.notes{credit_card}", "partial")], KEY)
    for value in result.values:
        read = json.loads(value, parse_float=Decimal)
        assert isinstance(read["ref"], str) and card[:15] not in value.decode() and read["note"] == "x"
        assert re.sub(r"[^0-9]", "", read["ref"]).__len__() <= 4


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_partial_on_json_booleans_numbers_and_nulls_writes_null(use_native: bool) -> None:
    """Review (F3): ``partial`` starred a boolean's text (``false`` -> ``*alse``, ``true`` ->
    ``****``: confidential flags shown whole) and kept a number's length. Only text keeps
    characters; anything else under ``partial`` is ``null``."""
    elements = [
        '{"n": true, "ssn": false}',
        '{"n": 85000, "ssn": 42}',
        '{"n": null, "ssn": "123-45-6789"}',
        '{"n": -1.5, "ssn": [true]}',
    ]
    with _all_native(use_native):
        result = masked(
            [text("doc", *elements)],
            mask("outputs.doc[].n", "partial", keep_last=4),
            mask("outputs.doc[].ssn", "partial", keep_last=0),
        )
    assert [json.loads(value) for value in result["doc"]] == [
        {"n": None, "ssn": None},
        {"n": None, "ssn": None},
        {"n": None, "ssn": "***********"},
        {"n": None, "ssn": None},
    ]


AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_whole_output_mask_never_shows_more_of_a_span_than_its_own_mask(use_native: bool) -> None:
    """Review s13 (rev-labels 3): ``outputs.ssn`` partial (keep_last 4) and a secret found in
    it nulled: the whole-output mask applied alone and showed the secret's last characters
    (``****************MPLE``). An element holding a part its mask does not cover is masked
    whole by the part's mask; the others keep the output's own mask."""
    tensor = text("ssn", AWS_KEY, "123-45-6789", f"{GITHUB_TOKEN} and more")
    with _all_native(use_native):
        result = masked(
            [tensor],
            mask("outputs.ssn", "partial", keep_last=4),
            mask("outputs.ssn{secret}", "null"),
        )["ssn"]
    assert result == [b"", b"*******6789", b""]
    with _all_native(use_native):
        hashed = masked(
            [tensor], mask("outputs.ssn", "hash"), mask("outputs.ssn{secret}", "redact", replacement="[S]")
        )["ssn"]
    assert hashed[0] == hashed[2] == b"[S]" and hashed[1].startswith(b"hmac:")


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_whole_output_mask_over_a_partial_span_redacts_the_element_holding_it(
    use_native: bool,
) -> None:
    """Review s13 (rev-last 1): an AWS key masked partial keep_last 20 is starred whole, and
    the output's partial keep_last 4 showed its last characters (``...MPLE``). No partial of
    the whole covers a partial part: the element holding it is redacted, the others keep the
    output's own mask."""
    tensor = text("ssn", AWS_KEY, "123-45-6789")
    with _all_native(use_native):
        looser = masked(
            [tensor],
            mask("outputs.ssn", "partial", keep_last=2),
            mask("outputs.ssn{secret}", "partial", keep_last=6),
        )["ssn"]
        stricter = masked(
            [tensor],
            mask("outputs.ssn", "partial", keep_last=6),
            mask("outputs.ssn{secret}", "partial", keep_last=2),
        )["ssn"]
        redacted = masked(
            [tensor], mask("outputs.ssn", "redact"), mask("outputs.ssn{secret}", "redact", replacement="<s>")
        )["ssn"]
        starred = masked(
            [tensor],
            mask("outputs.ssn", "partial", keep_last=4),
            mask("outputs.ssn{secret}", "partial", keep_last=20),
        )["ssn"]
    assert looser == [b"[REDACTED]", b"*********89"]
    assert stricter == [b"[REDACTED]", b"*****5-6789"]
    assert redacted == [b"[REDACTED]", b"[REDACTED]"]
    assert starred == [b"[REDACTED]", b"*******6789"]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_whole_output_mask_never_shows_more_of_a_json_node_than_its_own_mask(use_native: bool) -> None:
    """The same for a node of a JSON element (``outputs.doc[].ssn`` nulled under ``outputs.doc``
    partial: the element's last characters were the SSN's), and for a node of one an element
    is only opaque JSON in (its nodes cannot be found: the strongest mask inside covers it)."""
    elements = [json.dumps({"n": 1, "ssn": "123-45-6789"}), "plain 123", '{"n": 1, "ssn": "078-05-1121"}x']
    with _all_native(use_native):
        result = masked(
            [text("doc", *elements)],
            mask("outputs.doc", "partial", keep_last=4),
            mask("outputs.doc[].ssn", "null"),
        )["doc"]
    assert result == [b"", b"***** 123", b""]


def test_a_whole_output_mask_over_elements_not_those_classified_takes_the_strongest_part() -> None:
    tensor = text("ssn", AWS_KEY)
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    grown = text("ssn", AWS_KEY, "another")  # two elements: which holds the secret is unknown
    [result] = apply_masks(
        [grown],
        classification,
        [mask("outputs.ssn", "partial", keep_last=4), mask("outputs.ssn{secret}", "redact")],
        KEY,
    )
    assert result.values == [b"[REDACTED]", b"[REDACTED]"]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_json_node_mask_never_shows_more_of_a_span_in_it_than_its_own_mask(use_native: bool) -> None:
    """A masked JSON leaf (``outputs.doc[].ssn`` partial) holding a secret the policy nulls
    (``outputs.doc{secret}``): the leaf mask skipped the spans in it and kept the secret's last
    characters. The leaf takes the stronger mask in the element that holds one, in Python and
    in the extension alike."""
    elements = [json.dumps({"ssn": AWS_KEY, "n": 1}), json.dumps({"ssn": "123-45-6789", "n": 1})]
    with _all_native(use_native):
        result = masked(
            [text("doc", *elements)],
            mask("outputs.doc[].ssn", "partial", keep_last=4),
            mask("outputs.doc{secret}", "null"),
        )["doc"]
    assert [json.loads(value) for value in result] == [{"ssn": None, "n": 1}, {"ssn": "*******6789", "n": 1}]


def test_a_json_node_mask_never_shows_more_of_a_node_inside_it_than_that_node_s_mask() -> None:
    profile = {"name": "Ann", "contact": {"email": "ann@example.com", "phone": "212-555-1234"}}
    hashed = masked([text("doc", json.dumps(profile))], mask("outputs.doc[].contact", "hash"))["doc"]
    assert json.loads(hashed[0])["contact"].startswith("hmac:")
    result = masked(
        [text("doc", json.dumps(profile))],
        mask("outputs.doc[].contact", "hash"),
        mask("outputs.doc[].contact.email", "redact", replacement="<e>"),
    )["doc"]
    assert json.loads(result[0]) == {"name": "Ann", "contact": "<e>"}
    kept = masked(
        [text("doc", json.dumps(profile))],
        mask("outputs.doc[].contact", "null"),
        mask("outputs.doc[].contact.email", "partial"),
    )["doc"]
    assert json.loads(kept[0]) == {"name": "Ann", "contact": None}
