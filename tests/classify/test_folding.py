"""Values written in other scripts' digits, other dashes or with invisible characters are
found: ``folding`` and the classifier's use of it on every text path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_message, classify_outputs, native
from labelgate.classify.folding import UNFOLDABLE, folded
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.parameters import classify_parameters, released_parameters
from labelgate.enforce import apply_masks
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.classify.order_proto import Order

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"
SSN = "123-45-6789"
HIDDEN = {
    "full-width digits": "ssn １２３-４５-６７８９",
    "Arabic-Indic digits": "ssn ١٢٣-٤٥-٦٧٨٩",
    "non-breaking hyphens": "ssn 123\u201145\u20116789",
    "zero-width spaces": "ssn 123-\u200b45-\u200b6789",
    # Digits that are not decimal digits but read as ones, and marks drawn over digits.
    "dingbat digits": "ssn \u278a\u278b\u278c-\u278d\u278e-\u278f\u2790\u2791\u2792",
    "keycap digits": "ssn " + "-".join("".join(f"{d}\ufe0f\u20e3" for d in part) for part in SSN.split("-")),
    "underlined digits": "ssn " + "".join(f"{char}\u0332" if char.isdigit() else char for char in SSN),
}


@pytest.mark.parametrize("text", HIDDEN.values(), ids=HIDDEN.keys())
def test_folded_text_is_what_a_reader_reads(text: str) -> None:
    assert folded(text.encode()) == f"ssn {SSN}".encode()


def test_ascii_text_and_text_folding_leaves_alone_are_not_folded() -> None:
    assert folded(f"ssn {SSN}".encode()) is None
    assert folded("café".encode()) is None


def test_a_value_found_only_folded_spans_the_whole_text() -> None:
    texts = [HIDDEN["full-width digits"].encode(), f"ssn {SSN}".encode(), "plain é".encode()]
    hidden = hidden_by_folding(texts, DETECTORS, DETECTORS.scan_each(texts))
    assert list(hidden) == [0], "the ASCII SSN is found by the scan itself; no text is left to fold"
    [hit] = hidden[0]
    assert (hit.detector, hit.start, hit.end) == ("us_ssn", 0, len(texts[0]))


def text_tensor(name: str, values: list[str], raw: bool) -> Tensor:
    """A BYTES tensor as the gateway decodes it, from raw contents or typed ones."""
    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, [Tensor(name, "BYTES", [len(values)], [v.encode() for v in values])], raw=raw)
    return oip.decode_outputs(reply)[0]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_a_hidden_ssn_in_a_text_tensor_is_found_and_masked(use_native: bool, raw: bool) -> None:
    values = [*HIDDEN.values(), f"ssn {SSN}", "nothing here"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert "outputs.free{us_ssn}" in {field.path for field in result.fields}
        assert sorted(result.spans["free"]) == list(range(len(HIDDEN) + 1))
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.free{us_ssn}", "strategy": "redact"}], KEY
        )
    for original, value in zip(values[: len(HIDDEN)], masked.values[: len(HIDDEN)], strict=True):
        assert value == b"[REDACTED]", original
    assert masked.values[-1] == b"nothing here"


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_element_hiding_a_value_in_a_leaf_is_opaque_and_masked_whole(use_native: bool) -> None:
    document = json.dumps({"contact": {"id": HIDDEN["full-width digits"]}}, ensure_ascii=False)
    with native.forced(use_native):
        tensor = text_tensor("notes", [document, json.dumps({"contact": {"id": "x"}})], raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        paths = {field.path for field in result.fields}
        assert {"outputs.notes{opaque-json}", "outputs.notes{us_ssn}"} <= paths
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.notes{us_ssn}", "strategy": "redact"}], KEY
        )
    assert "１２３".encode() not in masked.values[0]
    assert json.loads(masked.values[1]) == {"contact": {"id": "x"}}


def test_released_parameters_and_message_strings_are_folded_too() -> None:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].string_param = HIDDEN["Arabic-Indic digits"]
    released = {"note": "internal"}
    result = classify_parameters(released_parameters(reply, released), released, DETECTORS)
    assert "parameters.note{us_ssn}" in {field.path for field in result.fields}
    order = Order(id=HIDDEN["zero-width spaces"], attrs={"k": HIDDEN["non-breaking hyphens"]})
    labels = {field.path: set(field.labels) for field in classify_message(order, CATALOG, DETECTORS).fields}
    assert labels["id{us_ssn}"] == {"confidential"}
    assert "confidential" in labels["attrs"]


@pytest.mark.parametrize("use_native", [True, False])
def test_a_plain_value_does_not_hide_a_folded_one_beside_it(use_native: bool) -> None:
    # Counted, not just named: the raw scan's SSN must not vouch for the Arabic-Indic one.
    values = [f"ssn {SSN} and also ١٢٣-٤٥-٦٧٥٠", f"José {SSN}"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.free{us_ssn}", "strategy": "redact"}], KEY
        )
    assert "٦٧٥٠".encode() not in masked.values[0]
    assert masked.values[1] == "José [REDACTED]".encode(), "nothing folded to find: only the span is masked"


@pytest.mark.parametrize("use_native", [True, False])
def test_full_width_digits_written_as_json_escapes_are_folded_too(use_native: bool) -> None:
    escaped = json.dumps({"contact": {"id": HIDDEN["full-width digits"]}})  # ensure_ascii: \\uff11...
    assert escaped.isascii()
    with native.forced(use_native):
        tensor = text_tensor("notes", [escaped, json.dumps(HIDDEN["full-width digits"])], raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert "outputs.notes{us_ssn}" in {field.path for field in result.fields}
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.notes{us_ssn}", "strategy": "redact"}], KEY
        )
    assert all(b"\\uff11" not in value for value in masked.values)


def test_a_value_straddling_a_fold_slice_is_still_found() -> None:
    from labelgate.classify.folding import _SLICE

    text = "数" * (_SLICE - 5) + HIDDEN["full-width digits"]
    assert folded(text.encode()) == ("数" * (_SLICE - 5) + f"ssn {SSN}").encode()


def test_text_that_grows_too_much_when_folded_is_not_folded_but_failed_closed() -> None:
    # U+FDFA is one character that NFKC spells out as 18: a reply of it must not cost its
    # size times 18 to fold (it took 11 s and 587 MB for 16 MB).
    grows = ("\ufdfa" * 300_000).encode()
    assert folded(grows) is UNFOLDABLE
    assert folded("ﬁ ①".encode()) == b"fi 1", "a little growth is folded as before"
    [free, spelled] = [t.encode() for t in ("just text é", "\ufdfa" * 3 + " text")]
    hidden = hidden_by_folding([free, grows, spelled], DETECTORS, {})
    assert list(hidden) == [1], "every detector spans the text that could not be folded, and only it"
    assert {(hit.detector, hit.start, hit.end) for hit in hidden[1]} == {
        (name, 0, len(grows)) for name in DETECTORS.names
    }
    assert hidden_by_folding([grows], DetectorSet.none(), {}) == {}, "no detector, nothing to hide"


@pytest.mark.parametrize("use_native", [True, False])
def test_an_unfoldable_element_is_masked_whole_in_text_and_json(use_native: bool) -> None:
    spelled = "\ufdfa" * 5_000
    values = [f"{spelled} ssn {HIDDEN['full-width digits']}", json.dumps({"contact": {"id": spelled}}), "ok"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert "outputs.free{us_ssn}" in {field.path for field in result.fields}
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.free{us_ssn}", "strategy": "redact"}], KEY
        )
    assert masked.values[0] == b"[REDACTED]"
    assert b"\\ufdfa" not in masked.values[1] and "\ufdfa".encode() not in masked.values[1]
    assert masked.values[2] == b"ok"
