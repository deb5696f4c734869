"""Values only the folded form shows are placed, not counted (``hidden_values.hidden_by_folding``).

A decoy: a plain value the raw scan finds that folding joins to the digit after it
(``111-22-3333\\u200b0`` folds to ``111-22-33330``, no SSN). Counted per detector, the
decoy's raw SSN stood in for a second SSN only the folded form shows (full-width digits),
and that one went out in clear (review s13, rev-labels finding 1).

Identical elements are read once, each placed against its own detections."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import (
    classify_message,
    classify_outputs,
    hidden_values,
    json_elements,
    jsonpaths,
    native,
)
from labelgate.classify.detectors import Detection
from labelgate.classify.folding import folded
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.parameters import classify_parameters, released_parameters
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from tests.classify.order_proto import Order
from tests.classify.test_folding import CATALOG, DETECTORS, KEY, text_tensor

FULL_WIDTH = str.maketrans("0123456789-", "０１２３４５６７８９－")
SSN_DECOY = "ref 111-22-3333\u200b0"  # an SSN to the raw scan, none folded
CARD_DECOY = "ref2 5555555555554444\u200b1"
HIDDEN_SSN = "ssn ١٢٣-٤٥-٦٧٨٩"  # Arabic-Indic: an SSN folded only
HIDDEN_CARD = f"card {'4111 1111 1111 1111'.translate(FULL_WIDTH)}"
DECOYED = {
    "SSN behind an SSN decoy": f"{SSN_DECOY}; {HIDDEN_SSN}",
    "card behind a card decoy": f"{HIDDEN_CARD}; {CARD_DECOY}",
    "both": f"{SSN_DECOY} {HIDDEN_CARD}; {CARD_DECOY}; {HIDDEN_SSN}",
    # Values alone are not enough either: the decoy is the very SSN the folded form shows.
    "the same SSN as decoy": f"ssn 123-45-6789\u200b0 and {'123-45-6789'.translate(FULL_WIDTH)}",
}
HIDING = {
    "SSN behind an SSN decoy": {"us_ssn"},
    "card behind a card decoy": {"credit_card"},
    "both": {"us_ssn", "credit_card"},
    "the same SSN as decoy": {"us_ssn"},
}
HIDDEN_DIGITS = ("٦٧٨٩", "４１１１", "６７８９")


def test_the_decoys_are_values_only_as_written() -> None:
    for decoy, detector in ((SSN_DECOY, "us_ssn"), (CARD_DECOY, "credit_card")):
        assert [hit.detector for hit in DETECTORS.scan(decoy.encode())] == [detector]
        assert DETECTORS.scan(folded(decoy.encode()) or b"") == []


@pytest.mark.parametrize("case", DECOYED)
def test_a_decoy_does_not_stand_in_for_a_value_only_folding_shows(case: str) -> None:
    data = DECOYED[case].encode()
    [hits] = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])).values()
    assert {hit.detector for hit in hits} == HIDING[case]
    assert all((hit.start, hit.end) == (0, len(data)) for hit in hits)


def test_raw_values_folding_leaves_in_place_cover_what_folding_shows() -> None:
    texts = [
        "José ssn 123-45-6789 ✓".encode(),  # not ASCII: folded, the SSN is where it was
        "a\u200b ssn 123-45-6789\x1b[0m card 4111111111111111 ok".encode(),
        "ann@x.com\u200bbob@y.com".encode(),  # one email folded, over two raw ones side by side
    ]
    assert hidden_by_folding(texts, DETECTORS, DETECTORS.scan_each(texts)) == {}


def test_raw_values_folding_cannot_place_fail_closed() -> None:
    # The mark composes with the email's last letter: folded piece by piece, the text does not
    # fold as it does whole, so the raw email places nothing in the folded form.
    data = "mail a@b.com\u0301 now".encode()
    [hits] = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])).values()
    assert [(hit.detector, hit.start, hit.end) for hit in hits] == [("email", 0, len(data))]


def redacted(path: str) -> list[dict[str, str]]:
    return [{"path": f"{path}{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_a_value_behind_a_decoy_in_a_text_tensor_is_masked(use_native: bool, raw: bool) -> None:
    values = [*DECOYED.values(), "José 123-45-6789"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, redacted("outputs.free"), KEY)
    for original, value in zip(values, masked.values[: len(DECOYED)], strict=False):
        assert value == b"[REDACTED]", original
    assert masked.values[-1] == "José [REDACTED]".encode(), "placed: only the span is masked"


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_element_with_a_value_behind_a_decoy_is_opaque(use_native: bool) -> None:
    document = json.dumps({"contact": {"id": DECOYED["SSN behind an SSN decoy"]}}, ensure_ascii=False)
    with native.forced(use_native):
        tensor = text_tensor("notes", [document], raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert "outputs.notes{opaque-json}" in {field.path for field in result.fields}
        [masked] = apply_masks([tensor], result, redacted("outputs.notes"), KEY)
    assert not any(digits.encode() in masked.values[0] for digits in HIDDEN_DIGITS)


def test_a_value_behind_a_decoy_in_a_uint8_text_is_spanned_whole() -> None:
    data = DECOYED["SSN behind an SSN decoy"].encode()
    result = classify_outputs(
        "customer-profile", [Tensor("t", "UINT8", [len(data)], list(data))], CATALOG, DETECTORS
    )
    spans = [(hit.detector, hit.start, hit.end) for hits in result.spans["t"].values() for hit in hits]
    assert ("us_ssn", 0, len(data)) in spans


def test_a_value_behind_a_decoy_in_parameters_and_message_strings_is_spanned_whole() -> None:
    text = DECOYED["both"]
    size = len(text.encode())
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].string_param = text
    released = {"note": "internal"}
    result = classify_parameters(released_parameters(reply, released), released, DETECTORS)
    whole = {(hit.detector, hit.start, hit.end) for hit in result.spans["parameters.note"]}
    assert {("us_ssn", 0, size), ("credit_card", 0, size)} <= whole
    [leaf] = classify_message(Order(id=text), CATALOG, DETECTORS).message_spans
    whole = {(hit.detector, hit.start, hit.end) for hit in leaf.detections}
    assert {("us_ssn", 0, size), ("credit_card", 0, size)} <= whole


def test_identical_elements_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"legacy": 0, "forms": 0}
    legacy_readings = hidden_values.legacy_readings
    unescaped_forms = jsonpaths.unescaped_forms

    def counted_legacy(*args: Any) -> Any:
        calls["legacy"] += 1
        return legacy_readings(*args)

    def counted_forms(data: bytes) -> list[bytes]:
        calls["forms"] += 1
        return unescaped_forms(data)

    monkeypatch.setattr(hidden_values, "legacy_readings", counted_legacy)
    monkeypatch.setattr(json_elements.jsonpaths, "unescaped_forms", counted_forms)
    texts = [b"\xe9", b"\xa3\xb1", b"\\u0031"] * 1000
    assert hidden_by_folding(texts, DETECTORS) == {}
    assert calls["legacy"] == 2  # the two that are not UTF-8, once each
    assert hidden_by_escapes(texts, DETECTORS) == {}
    assert calls["forms"] == 1


def test_identical_elements_each_get_what_they_hide() -> None:
    hidden = "\uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19".encode()
    escaped = b"\\u0031\\u0032\\u0033-45-6789"
    texts = [b"plain", hidden, escaped, hidden, b"plain", escaped]
    found = hidden_by_folding(texts, DETECTORS)
    assert sorted(found) == [1, 3]
    assert found[1] == found[3] == [Detection("us_ssn", DETECTORS.label_of("us_ssn"), 0, len(hidden))]
    assert sorted(hidden_by_escapes(texts, DETECTORS)) == [2, 5]


def test_identical_elements_are_placed_against_their_own_detections() -> None:
    # A PEM block from an element before covers one copy whole and not the other.
    hidden = "\uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19".encode()
    covering = [Detection("us_ssn", DETECTORS.label_of("us_ssn"), 0, len(hidden))]
    found = hidden_by_folding([hidden, hidden, hidden], DETECTORS, {1: covering})
    assert sorted(found) == [0, 2]
