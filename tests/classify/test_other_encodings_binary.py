"""Binary payloads whose NULs look like UTF-16 or UTF-32 text are not failed closed
(``other_encodings.wide_folded``): arrays of small integers decode to code points a few of which are
unassigned, and only text that reads as text is failed closed for those. Found by review
(rev-new A1): an ``.npy`` of class ids got every detector, ``secret`` included, and the shipped
policy emptied it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from labelgate.classify import DetectorSet, classify_outputs, native
from labelgate.classify.folding import UNFOLDABLE
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.other_encodings import _nuls, wide_encoding, wide_folded
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG
from tests.classify.test_folding_hidden import text_tensor_of_bytes

DETECTORS = DetectorSet.default()
CARD = "4111111111111111"
RNG = np.random.default_rng(5)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    """A grey-scale PNG of ``pixels``, stored (zlib level 0) as a raw encoder writes small ones."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )


def jpeg_like() -> bytes:
    """A JPEG's opening segments (JFIF, a quantization table of small values, a frame header)
    and entropy-coded noise."""
    quantization = bytes(RNG.integers(1, 40, 64, dtype=np.uint8))
    return (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + b"\xff\xdb\x00\x43\x00"
        + quantization
        + b"\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00"
        + bytes(RNG.integers(0, 256, 600, dtype=np.uint8))
        + b"\xff\xd9"
    )


BINARY = {
    ".npy of int32 class ids 0..999": npy(RNG.integers(0, 1000, 4096).astype("<i4")),
    ".npy of int64 class ids 0..999": npy(RNG.integers(0, 1000, 2048).astype("<i8")),
    "uint16 values 0..2000": RNG.integers(0, 2000, 8000).astype("<u2").tobytes(),
    # Counts of about 200 (counts of about 50 are ASCII digits and dots, read as such before).
    "uint16 histogram": np.bincount(RNG.integers(0, 2000, 400_000), minlength=2000).astype("<u2").tobytes(),
    "int32 values 0..1000": RNG.integers(0, 1000, 4000).astype("<i4").tobytes(),
    "int32 big-endian 0..1000": RNG.integers(0, 1000, 4000).astype(">i4").tobytes(),
    "int32 token ids 0..50257": RNG.integers(0, 50257, 4000).astype("<i4").tobytes(),
    "int32 values 256..2000": RNG.integers(256, 2000, 4000).astype("<i4").tobytes(),
    "int32 years 1900..2100": RNG.integers(1900, 2100, 4000).astype("<i4").tobytes(),
    "int16 audio, a quiet sine": (200 * np.sin(np.arange(16000) / 5)).astype("<i2").tobytes(),
    "float32 normal values": RNG.normal(0, 1, 4000).astype("<f4").tobytes(),
    "float32 whole numbers": RNG.integers(0, 100, 4000).astype("<f4").tobytes(),
    "float32 halves": (RNG.integers(0, 64, 4000) / 2).astype("<f4").tobytes(),
    "float32 one-hot rows": np.eye(10, dtype="<f4")[RNG.integers(0, 10, 400)].tobytes(),
    "PNG, a dark image stored": png(RNG.integers(0, 8, (32, 32))),
    "PNG, a gradient stored": png(np.add.outer(np.arange(32), np.arange(32)) * 4),
    "JPEG-like": jpeg_like(),
}


@pytest.mark.parametrize("data", BINARY.values(), ids=BINARY.keys())
def test_binary_data_that_reads_as_utf16_or_utf32_is_not_failed_closed(data: bytes) -> None:
    assert wide_folded(data) is not UNFOLDABLE
    assert hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])) == {}


def test_the_arrays_of_small_integers_are_guessed_as_wide_text_still() -> None:
    # What makes the cases above worth testing: their NULs are those of UTF-16 or UTF-32.
    for name in (".npy of int32 class ids 0..999", "uint16 values 0..2000", "int32 token ids 0..50257"):
        assert wide_encoding(BINARY[name]) is not None, name


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_binary_outputs_get_no_detector_fields(use_native: bool, raw: bool) -> None:
    values = list(BINARY.values())
    with native.forced(use_native):
        tensors = [Tensor("blob", "BYTES", [len(values)], values)]
        tensors += [
            Tensor(f"bytes{index}", "UINT8", [len(data)], list(data)) for index, data in enumerate(values)
        ]
        if raw:
            tensors = [text_tensor_of_bytes(tensor) for tensor in tensors]
        result = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    assert [field.path for field in result.fields if "{" in field.path] == []


# Text with an unassigned code point (a digit or a mark to a reader on a newer Unicode, maybe)
# still fails closed when it reads as text: with a byte order mark, or words apart.
MARKED = "card " + "\u0378".join(CARD)
WORDS = "please note that the card on file is " + "\U00040000".join(CARD) + " thanks"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_wide_text_with_an_unassigned_code_point_still_fails_closed(encoding: str) -> None:
    texts = [WORDS] if encoding.endswith(("le", "be")) else [WORDS, MARKED]
    for text in texts:
        assert wide_folded(text.encode(encoding)) is UNFOLDABLE, (text, encoding)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_short_wide_text_that_moves_a_terminals_cursor_still_fails_closed(encoding: str) -> None:
    # One escape sequence in 31 characters: text as much as its UTF-8 form is.
    for text in ("card 4111 1111x\x1b[1D 1111 1111", f"card 9999\x1b[4D{CARD}"):
        assert wide_folded(text.encode(encoding)) is UNFOLDABLE, text


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_unassigned_code_points_in_a_guess_that_reads_as_no_text_are_read_as_nothing(encoding: str) -> None:
    # No byte order mark, one space in 36 characters: no text, so not failed closed; read as
    # nothing, the code points between the digits join them, as marks would to a newer reader.
    data = MARKED.encode(encoding)
    assert wide_folded(data) == f"card {CARD}".encode()
    [hits] = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])).values()
    assert [(hit.detector, hit.start, hit.end) for hit in hits] == [("credit_card", 0, len(data))]


def test_nuls_are_counted_alike_in_short_and_long_texts() -> None:
    # Long texts' NULs are counted by numpy (``other_encodings._nuls``), short ones by ``bytes.count``.
    for data in (*BINARY.values(), "ssn １２３-４５-６７８９ ".encode("utf-16-le") * 400):
        for start, stop, step in (
            (0, None, 1),
            (1, len(data) // 2 * 2, 2),
            (0, len(data) // 2 * 2, 2),
            (3, 4000, 4),
        ):
            assert _nuls(data, start, stop, step) == data[start:stop:step].count(0)


def test_rows_are_decoded_alike_however_many() -> None:
    # A few rows are joined by slices, more by numpy (``other_encodings.wide_folded``).
    row = "ref ４１１１".ljust(12, "\0")
    for count in (2, 15, 16, 17, 40):
        data = (row * count).encode("utf-16-le")
        assert wide_folded(data, 24) == b"\n".join([b"ref 4111"] * count), count
