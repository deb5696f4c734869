"""Bytes that are not UTF-8 are read as a client that decodes them otherwise reads them
(``other_encodings.legacy_readings``: GB18030, CP932, EUC-JP, CP949, Big5, Windows-1252; surrogates
written as UTF-8, CESU-8, joined in pairs: ``decoded_text.utf8_read``), on every path that reads
text folded. Found by review (rev-rest-render 2): a card and an SSN in full-width digits in
GBK or Shift_JIS, or in mathematical digits in CESU-8, reached gRPC and binary REST callers
unmasked, the raw scan and the UTF-8 reading seeing only replacement characters."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate.classify import DetectorSet, classify_message, classify_outputs, hidden_values, native
from labelgate.classify.folding import folded
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.key_blocks import opens_key_block
from labelgate.classify.other_encodings import decoded_readings, is_utf8, legacy_readings, wide_folded
from labelgate.classify.split_values import straddled
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from tests.classify.order_proto import Order
from tests.classify.test_folding import CATALOG, KEY, SSN
from tests.classify.test_folding_hidden import text_tensor_of_bytes
from tests.classify.test_hidden_forms import cesu8, circled, digits_from
from tests.classify.test_other_encodings_binary import BINARY

DETECTORS = DetectorSet.default()
CARD = "4111111111111111"
FULL_SSN = digits_from(SSN, 0xFF10)
FULL_CARD = digits_from(CARD, 0xFF10)
MATH_CARD = digits_from(CARD, 0x1D7CE)

# Each a card or an SSN that the bytes' UTF-8 reading shows none of.
ENCODED = {
    "CESU-8, mathematical digits": cesu8(f"card {MATH_CARD}"),
    "CESU-8, the review's text": cesu8(f"card {MATH_CARD} ssn {digits_from(SSN, 0x1D7CE)}"),
    "GBK, full-width": f"card {FULL_CARD} ssn {FULL_SSN}".encode("gbk"),
    "GB18030, mathematical digits": f"card {MATH_CARD}".encode("gb18030"),
    "Shift_JIS, full-width": f"ssn {FULL_SSN}".encode("shift_jis"),
    "CP932, circled digits": f"card {circled(CARD)}".encode("cp932"),
    "EUC-JP, full-width": f"ssn {FULL_SSN}".encode("euc_jp"),
    "EUC-KR, circled digits": f"card {circled(CARD)}".encode("euc_kr"),
    "Big5, full-width": f"card {FULL_CARD}".encode("big5"),
    "CP950, circled digits": f"card {circled(CARD)}".encode("cp950"),
    "Windows-1252, no-break spaces": "card 4111\xa01111\xa01111\xa01111".encode("cp1252"),
    "Windows-1252, en dashes": "ssn 123\u201345\u20136789".encode("cp1252"),
    "GBK, stray bytes after": f"ssn {FULL_SSN}".encode("gbk") + b"\xff\x80",
    "GBK, a stray byte before": b"\xff" + f"ssn {FULL_SSN} on file".encode("gbk"),
}


@pytest.mark.parametrize("data", ENCODED.values(), ids=ENCODED.keys())
def test_a_value_only_a_legacy_reading_shows_spans_the_whole_text(data: bytes) -> None:
    assert not is_utf8(data)
    assert DETECTORS.scan_each([data]) == {}
    [hits] = hidden_by_folding([data], DETECTORS, {}).values()
    assert {hit.detector for hit in hits} & {"us_ssn", "credit_card"}
    assert all((hit.start, hit.end) == (0, len(data)) for hit in hits)


@pytest.mark.parametrize("data", ENCODED.values(), ids=ENCODED.keys())
def test_the_readings_reach_the_paths_that_read_decoded_forms(data: bytes) -> None:
    # ``wide_folded``: what the 8-bit tensors' and key blocks' readings take (numbers.py,
    # key_blocks.py); CESU-8 is read by ``folded`` itself, the UTF-8 reading.
    forms = [folded(data) or b"", wide_folded(data) or b""]
    assert any(DETECTORS.scan_each([form]) for form in forms)


@pytest.mark.parametrize("use_native", [True, False])
def test_encoded_values_in_8_bit_tensors_are_found(use_native: bool) -> None:
    with native.forced(use_native):
        for name, data in ENCODED.items():
            tensor = Tensor("notes", "UINT8", [len(data)], list(data))
            result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
            assert any(field.path.endswith(("{us_ssn}", "{credit_card}")) for field in result.fields), name


def test_rows_of_a_character_array_are_read_each_in_a_legacy_encoding() -> None:
    # A fixed-width array: "ref" and its NUL padding, then a full-width card in GBK, a row each.
    rows = [row.encode("gbk").ljust(40, b"\x00") for row in ("ref", f"card {FULL_CARD}", "x")]
    data = b"".join(rows)
    assert b"ref\ncard " + CARD.encode() + b"\nx" in decoded_readings(data, 40)
    tensor = Tensor("notes", "UINT8", [3, 40], list(data))
    result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    assert any(field.path.endswith("{credit_card}") for field in result.fields)


def test_bytes_fields_of_messages_are_read_so() -> None:
    for name, data in ENCODED.items():
        result = classify_message(Order(blob=data), CATALOG, DETECTORS)
        assert {hit.detector for leaf in result.message_spans for hit in leaf.detections} & {
            "us_ssn",
            "credit_card",
        }, name


def test_a_key_block_opened_in_a_legacy_reading_is_seen_open() -> None:
    begin = "-----BEGIN RSA PRIVATE KEY-----".translate({code: code + 0xFEE0 for code in range(0x21, 0x7F)})
    data = f"{begin}\nMIIEow".encode("gbk")
    assert opens_key_block(data)


def test_json_escaped_surrogates_read_as_the_character_they_pair_into() -> None:
    # A JSON reader joins ``\\ud835\\udfd2``; decoded an escape at a time it is CESU-8.
    escaped = "card " + "".join(
        f"\\u{ord(unit):04x}" for unit in cesu8(MATH_CARD).decode("utf-8", "surrogatepass")
    )
    data = escaped.encode()
    assert DETECTORS.scan_each([data]) == {}
    with native.forced(False):
        tensor = Tensor("notes", "BYTES", [1], [data])
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    assert any(field.path.endswith("{credit_card}") for field in result.fields)


def test_a_value_split_across_streamed_strings_as_escaped_surrogates_is_refused() -> None:
    pieces = [b"card \\ud835\\udfd2\\ud835\\udfcf", ("\\ud835\\udfcf" * 14).encode()]
    assert straddled(DETECTORS, pieces) == "credit_card"


def test_a_plain_value_in_text_with_a_stray_byte_keeps_its_span() -> None:
    # Latin-1 text in a UTF-8 reply: its plain SSN is placed in each reading (the reading
    # folded a piece at a time), so the mask covers it and not the whole text.
    data = "José Núñez, ssn 123-45-6789, on file".encode("latin-1")
    found = DETECTORS.scan_each([data])
    assert [(hit.start, hit.end) for hit in found[0]] == [(16, 27)]
    assert legacy_readings(data)  # read, and nothing more found
    assert hidden_by_folding([data], DETECTORS, found) == {}


def test_a_lone_surrogate_is_a_replacement_character_still() -> None:
    assert folded(b"a\xed\xa0\xb5b") == "a\ufffdb".encode()
    assert folded(b"a\xed\xbf\x92\xed\xa0\xb5b") == "a\ufffd\ufffdb".encode()
    assert folded(cesu8("x\U0001d7d2y") + b"\xff") == "x4y\ufffd".encode()


def test_utf8_text_is_read_in_no_legacy_encoding() -> None:
    for text in (f"ssn {FULL_SSN}", "카드 번호", "plain"):
        assert decoded_readings(text.encode()) == []


# Random bytes (compressed data, an image's entropy-coded part) are flagged no more than
# before: a legacy reading of a short one may read as text, and fails nothing closed.
RANDOM = np.random.default_rng(14)


def flagged(blobs: list[bytes]) -> list[int]:
    return [
        index
        for index, data in enumerate(blobs)
        if hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data]))
    ]


def test_random_bytes_are_flagged_no_more_than_before(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [16, 32, 64, 128, 256, 4096] * 100 + [65_536, 1_000_000]
    blobs = [bytes(RANDOM.integers(0, 256, size, dtype=np.uint8)) for size in sizes]
    # From a few hundred bytes on, none is read at all (what a reading costs): their control
    # bytes alone rule them out.
    assert [data for data in blobs if len(data) >= 256 and legacy_readings(data)] == []
    now = flagged(blobs)
    monkeypatch.setattr(hidden_values, "legacy_readings", lambda text, width=0: [])
    assert now == flagged(blobs)


def test_binary_payloads_are_flagged_no_more_than_before(monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = list(BINARY.values())
    now = flagged(blobs)
    monkeypatch.setattr(hidden_values, "legacy_readings", lambda text, width=0: [])
    assert now == flagged(blobs) == []


@pytest.mark.parametrize("use_native", [True, False])
def test_the_review_reply_is_masked(use_native: bool) -> None:
    # The review's element (rev-rest-render p1_encodings.py), each form in a BYTES output the
    # analyst's policy masks SSNs and cards in, as decoded from raw contents.
    text = "card 4111 1111 1111 1111 ssn 123-45-6789"
    full = digits_from(text, 0xFF10)
    values = [cesu8(digits_from(text, 0x1D7CE)), full.encode("gbk"), full.encode("shift_jis"), text.encode()]
    masks = [{"path": f"outputs.notes{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")]
    with native.forced(use_native):
        tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [len(values)], values))
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, masks, KEY)
    assert masked.values == [b"[REDACTED]"] * 3 + [b"card [REDACTED] ssn [REDACTED]"]
