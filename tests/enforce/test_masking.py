from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs
from labelgate.enforce import apply_masks
from labelgate.enforce.strategies import MASK_INVALID
from labelgate.errors import PolicyUnavailable
from labelgate.oip.tensors import Tensor, decode_outputs, encode_outputs

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
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
    notes = text("notes", "call 212-555-1234 about 123-45-6789 today", "no numbers", "ssn 078-05-1121")
    result = masked([notes], mask("outputs.notes{us_ssn}", "redact"))["notes"]
    assert result == [b"call 212-555-1234 about [REDACTED] today", b"no numbers", b"ssn [REDACTED]"]
    both = masked(
        [notes], mask("outputs.notes{us_ssn}", "partial", keep_last=4), mask("outputs.notes{phone}", "null")
    )["notes"]
    assert both[0] == b"call  about *******6789 today"


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


def test_a_node_mask_and_a_span_mask_on_the_same_leaf_use_the_original_value() -> None:
    element = json.dumps({"ssn": "123-45-6789"})
    both = masked(
        [text("doc", element)], mask("outputs.doc[].ssn", "hash"), mask("outputs.doc{us_ssn}", "redact")
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
