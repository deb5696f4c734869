"""UTF-16 and UTF-32 text is read decoded and folded (``other_encodings.wide_reading``), known
by its byte order mark or by its NULs whatever pads it; bytes that are neither are not decoded
so. Found by review (rev-tensors): such text was read only by dropping its NULs, which shows its
ASCII characters and nothing else."""

from __future__ import annotations

import pytest

from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.other_encodings import wide_encoding, wide_folded
from tests.classify.test_folding import DETECTORS
from tests.classify.test_folding_hidden import NOT_ASCII

WIDE_ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


@pytest.mark.parametrize("encoding", WIDE_ENCODINGS)
@pytest.mark.parametrize("text", NOT_ASCII.values(), ids=NOT_ASCII.keys())
def test_utf16_and_utf32_text_is_read_decoded_and_folded(text: str, encoding: str) -> None:
    data = text.encode(encoding)
    hidden = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data]))
    assert [(hit.start, hit.end) for hit in hidden.get(0, ())] == [(0, len(data))], data


def test_utf16_is_known_by_its_nuls_whatever_pads_it() -> None:
    text = NOT_ASCII["full-width SSN"]
    for data in (b"\x00" * 64 + text.encode("utf-16-le") + b"\x00" * 400, text.encode("utf-16-be") + b"\xff"):
        assert hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])), data


def test_bytes_that_are_not_utf16_or_utf32_are_not_decoded_so() -> None:
    noise = bytes(range(256)) * 8
    padded = b"card 4111 1111 1111 1111" + b"\x00" * 500
    for data in (noise, bytes(300), padded, b"ok", "plain é".encode()):
        assert wide_encoding(data) is None, data
    assert wide_folded(padded) is None
    assert hidden_by_folding([padded], DETECTORS, DETECTORS.scan_each([padded])) == {}, "found raw already"
