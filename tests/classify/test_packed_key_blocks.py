"""A PEM block opened in the raw bytes of wider numbers covers the reply's other outputs, and
a block another output opens covers text packed into them (found by a fix helper, fifth
round: ``numbers.packed_detections`` read FP32 or INT32 bytes as text, but a BEGIN marker
there opened no block for a sibling BYTES output, and key lines packed into float bytes were
not covered by a marker in a sibling: the key's lines went out in clear).

Each reply is classified and masked for a caller who may see everything but ``restricted``
(``secret``'s label); what it gets of every output but ``r`` is read as a client reads it
(BYTES as written, numbers with ``tobytes()``, wider integers also with ``chr``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from labelgate.classify import DetectorSet, classifier
from labelgate.oip.tensor import Tensor
from tests.classify.test_carryover_keys import (
    AFTER,
    BEGIN,
    BODY,
    CATALOG,
    END,
    RESTRICTED_R,
    caller_sees,
    characters_of,
    clear_bytes,
    eight_bit,
    line,
)
from tests.classify.test_numbers_packed import SIZES, floats, raw_tensor, values_tensor

DETECTORS = DetectorSet.default()
BODY_TEXT = b"".join(map(line, BODY))
NOISE = floats("FP32", np.random.default_rng(17).standard_normal(512))


def noise(datatype: str) -> bytes:
    """Random floats as ``datatype``'s bytes (the FP32 noise for integers: any bytes are)."""
    kind = datatype if datatype in ("FP16", "BF16", "FP32", "FP64") else "FP32"
    return floats(kind, np.random.default_rng(17).standard_normal(512))


def padded(data: bytes) -> bytes:
    """``data`` padded with spaces to whole elements of every width."""
    return data + b" " * (-len(data) % 8)


def packed(name: str, datatype: str, data: bytes, build: str = "raw") -> Tensor:
    """``data`` packed into the raw bytes of a ``datatype`` output named ``name``."""
    made = (raw_tensor if build == "raw" else values_tensor)(datatype, padded(data))
    if build == "raw":
        return Tensor.decoded(
            name, datatype, list(made.shape), made.raw_form() or b"", made.size, lambda: made.values
        )
    return Tensor(name, datatype, list(made.shape), list(made.values))


def text(name: str, data: bytes) -> Tensor:
    return Tensor(name, "BYTES", [1], [data])


Reply = Callable[[str, str], list[Tensor]]
REPLIES: dict[str, Reply] = {
    "packed marker, text lines": lambda datatype, build: [
        packed("k", datatype, line(BEGIN), build),
        text("u", BODY_TEXT),
    ],
    "text lines, then a packed marker": lambda datatype, build: [
        text("u", BODY_TEXT),
        packed("k", datatype, b"note\n" + line(BEGIN), build),
    ],
    "text marker, packed lines": lambda datatype, build: [
        text("u", line(BEGIN)),
        packed("v", datatype, BODY_TEXT, build),
    ],
    "packed lines, then a text marker": lambda datatype, build: [
        packed("v", datatype, BODY_TEXT, build),
        text("u", b"x " + line(BEGIN)),
    ],
    "packed marker, lines packed in another output": lambda datatype, build: [
        packed("k", datatype, line(BEGIN), build),
        packed("v", "FP32" if datatype != "FP32" else "INT64", BODY_TEXT, build),
    ],
    "packed marker, 8-bit lines": lambda datatype, build: [
        packed("k", datatype, line(BEGIN), build),
        eight_bit("v", BODY_TEXT),
    ],
    "8-bit marker, packed lines": lambda datatype, build: [
        eight_bit("k", line(BEGIN)),
        packed("v", datatype, BODY_TEXT, build),
    ],
    "characters marker, packed lines": lambda datatype, build: [
        characters_of("k", BEGIN + "\n"),
        packed("v", datatype, BODY_TEXT, build),
    ],
    "restricted packed marker, text lines": lambda datatype, build: [
        packed("r", datatype, line(BEGIN), build),
        text("u", BODY_TEXT),
    ],
    "restricted text marker, packed lines": lambda datatype, build: [
        text("r", line(BEGIN)),
        packed("v", datatype, BODY_TEXT, build),
    ],
    "packed marker amid float noise, text lines": lambda datatype, build: [
        packed("k", datatype, noise(datatype) + padded(b"\0" + line(BEGIN)) + noise(datatype), build),
        text("u", BODY_TEXT),
    ],
    "packed escaped marker, text lines": lambda datatype, build: [
        packed("k", datatype, BEGIN.replace("-", "\\u002d").encode() + b"\n", build),
        text("u", BODY_TEXT),
    ],
}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("build", ["raw", "values"])
@pytest.mark.parametrize("datatype", sorted(SIZES))
@pytest.mark.parametrize("name", REPLIES)
def test_no_line_of_a_key_a_reply_packs_apart_from_its_marker_reaches_the_caller(
    name: str, datatype: str, build: str, use_native: bool
) -> None:
    tensors = REPLIES[name](datatype, build)
    catalog = RESTRICTED_R if any(tensor.name == "r" for tensor in tensors) else CATALOG
    out = caller_sees(tensors, catalog, use_native)
    assert clear_bytes(out) == 0, (name, out[:400])


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "FP16", "INT64"])
def test_a_packed_block_closed_in_its_own_output_covers_no_other(datatype: str) -> None:
    key = "\n".join([BEGIN, *BODY, END]).encode() + b"\n"
    for use_native in (True, False):
        out = caller_sees([packed("k", datatype, key), text("u", AFTER.encode())], use_native=use_native)
        assert AFTER.encode() in out
        assert clear_bytes(out) == 0


def test_random_floats_beside_an_open_block_are_covered_and_elsewhere_left_alone() -> None:
    """Floats next to an output that leaves a block open are covered whole (fail closed: their
    bytes may hold its lines); without an open block they come back as they were."""
    embedding = packed("e", "FP32", NOISE)
    opened = caller_sees([text("u", line(BEGIN)), embedding])
    assert NOISE not in opened
    prose = b"PRIVATE notes: KEY points, VERY early; A TIE. -- " + "\n".join([BEGIN, *BODY, END]).encode()
    for opener in (text("u", prose), text("r", line(BEGIN) + b"x\n" + END.encode())):
        assert NOISE in caller_sees([opener, embedding], RESTRICTED_R)


def test_random_floats_of_an_output_not_scanned_for_secret_are_not_read_for_a_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restricted float output is not scanned for ``secret``: its bytes are asked for a
    marker apart, and floats that hold no ``PRIVATE KEY`` cost no reading of blocks."""
    asked: list[object] = []

    def left_open(*args: object) -> frozenset[bytes]:
        asked.append(args)
        return frozenset()

    monkeypatch.setattr(classifier, "left_open", left_open)
    embedding = packed("r", "FP32", NOISE)
    out = caller_sees([embedding, text("u", AFTER.encode())], RESTRICTED_R)
    assert AFTER.encode() in out and asked == []
