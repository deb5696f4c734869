"""Float tensors of code points are read as characters, as integer tensors are: a client turns
``[115.0, 115.0, 110.0, 32.0, 49.0, ...]`` into ``ssn 1...`` with ``chr(int(x))`` or
``String.fromCharCode`` as readily as an INT32 output's. Found by review (ninth round): FP32
and FP64 outputs of code points (an SSN, a card, an ``sk_live_`` key; one reversed inside a
RIGHT-TO-LEFT OVERRIDE too) went out where the same values as INT32 were zeroed, though typed
double fields were already read so (``integer_text.whole_numbers``). A whole number in the
code-point range is that character; anything else (a fraction, a negative, NaN, an infinity)
is none. Ordinary float tensors (embeddings, scores, small class ids) are not masked."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs
from labelgate.classify.detectors import CustomPattern
from labelgate.classify.numbers import numeric_detections
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs
from tests.classify.test_carryover_keys import _BODY_TEXT as BODY_TEXT
from tests.classify.test_carryover_keys import BEGIN, RESTRICTED_R, caller_sees, clear_bytes

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
SSN, CARD, KEY = "123-45-6789", "4111 1111 1111 1111", "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
RLO, PDF = "\u202e", "\u202c"
VALUES = {"us_ssn": f"ssn {SSN}", "credit_card": f"card {CARD}", "secret": f"key {KEY}"}
# Backwards inside an override: shown forwards by any bidi-aware renderer.
REVERSED = {
    name: f"{text.split()[0]} {RLO}{text.split(' ', 1)[1][::-1]}{PDF}" for name, text in VALUES.items()
}
FLOATS = ("FP16", "BF16", "FP32", "FP64")


def decoded(tensor: Tensor) -> Tensor:
    """``tensor`` as the gateway gets it from a raw reply: values built from the buffer."""
    response = pb.ModelInferResponse()
    encode_outputs(response, [tensor], raw=True)
    (result,) = decode_outputs(response)
    assert result.raw_form() is not None
    return result


def as_floats(text: str, datatype: str, shape: list[int] | None = None) -> Tensor:
    return Tensor("out", datatype, shape or [len(text)], [float(ord(char)) for char in text])


def found(tensor: Tensor, detectors: DetectorSet = DETECTORS) -> set[str]:
    return {hit.detector for hits in numeric_detections(tensor, detectors).values() for hit in hits}


def classified(tensor: Tensor) -> set[str]:
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    return {hit.detector for hits in result.spans.get(tensor.name, {}).values() for hit in hits}


@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
@pytest.mark.parametrize("datatype", FLOATS)
@pytest.mark.parametrize("detector", list(VALUES))
def test_a_value_as_float_code_points_is_found(
    detector: str, datatype: str, build: Callable[[Tensor], Tensor]
) -> None:
    tensor = build(as_floats(VALUES[detector], datatype))
    assert detector in classified(tensor)
    # A hit spans the tensor's elements it covers (masking zeroes the tensor whole anyway).
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert f"outputs.out{{{detector}}}" in {field.path for field in result.fields}


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])  # FP16 and BF16 cannot hold U+202E
@pytest.mark.parametrize("detector", list(VALUES))
def test_a_value_reversed_in_an_override_as_float_code_points_is_found(detector: str, datatype: str) -> None:
    tensor = decoded(as_floats(REVERSED[detector], datatype))
    assert detector in classified(tensor)


def test_each_element_is_a_character_or_none_of_its_own() -> None:
    """Unlike a typed field's list (read only when every value is whole), a fraction, a
    negative, NaN or an infinity is no character: it joins nothing, and the code points
    around it are still read."""
    codes = [float(ord(char)) for char in VALUES["us_ssn"]]
    for other in (0.5, -49.0, math.nan, math.inf, 1.5e7):
        assert found(Tensor("out", "FP32", [len(codes) + 1], [*codes, other])) == {"us_ssn"}, other
        split = [*codes[:-2], other, *codes[-2:]]  # ``123-45-67?89``: no SSN
        assert found(Tensor("out", "FP32", [len(split)], split)) == set(), other


def test_rows_of_float_code_points_are_read_each_on_its_own() -> None:
    """A rank-2 tensor may be a string per row: as an integer tensor's rows, each is read
    apart too (an override left open in one row does not run into the next)."""
    rows = ["id \u202dx\u0627".rjust(12), "\u0627" + "6789 45 123".rjust(11)]
    tensor = as_floats("".join(rows), "FP32", [2, 12])
    assert "us_ssn" in found(tensor)


def test_a_custom_pattern_reads_float_code_points_too() -> None:
    detectors = DetectorSet(custom=[CustomPattern("ticket", r"TICKET-[A-Z]{4}", "internal")])
    assert "ticket" in found(as_floats("ref TICKET-ABCD", "FP32"), detectors)
    assert found(Tensor("out", "FP32", [3], [0.5, 0.25, 1.5]), detectors) == set()


# Ordinary float outputs: nothing in them is a value in any reading.
RNG = np.random.default_rng(7)
_LOGITS = RNG.normal(size=(100, 10)).astype(np.float32)
ORDINARY = {
    "normal": RNG.normal(size=10_000).astype(np.float32),
    "softmax": (np.exp(_LOGITS) / np.exp(_LOGITS).sum(axis=1, keepdims=True)).ravel(),
    "saturated softmax": np.tile(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), 2500),
    "relu": np.maximum(RNG.normal(size=10_000), 0).astype(np.float32),
    "class ids": np.tile(np.arange(21, dtype=np.float32), 500),
    "small class ids": np.array([0.0, 1.0, 2.0] * 1000, dtype=np.float32),
    "boxes": RNG.uniform(0, 640, size=4000).astype(np.float32),
}


@pytest.mark.parametrize("datatype", FLOATS)
@pytest.mark.parametrize("name", list(ORDINARY))
def test_ordinary_float_tensors_are_not_masked(name: str, datatype: str) -> None:
    values = ORDINARY[name].tolist()
    tensor = decoded(Tensor("out", datatype, [len(values)], values))
    assert classified(tensor) == set()


@pytest.mark.parametrize("name", ["k", "r"], ids=["scanned", "restricted"])
@pytest.mark.parametrize("datatype", FLOATS)
def test_a_key_marker_as_float_code_points_opens_a_block_for_the_other_outputs(
    name: str, datatype: str
) -> None:
    """As an integer tensor's characters do (``classifier._opens_unscanned``): the key's lines
    in a BYTES output beside it are covered, whether or not the marker's own output is
    scanned for ``secret`` (one catalogued ``restricted`` is not)."""
    marker = Tensor(name, datatype, [1, len(BEGIN) + 1], [float(ord(char)) for char in BEGIN + "\n"])
    out = caller_sees([marker, Tensor("u", "BYTES", [1], [BODY_TEXT])], RESTRICTED_R)
    assert clear_bytes(out) == 0, out[:300]


def test_a_float_output_spelling_no_marker_covers_no_other() -> None:
    ordinary = Tensor("k", "FP32", [1000], ORDINARY["normal"][:1000].tolist())
    out = caller_sees([ordinary, Tensor("u", "BYTES", [1], [BODY_TEXT])], RESTRICTED_R)
    assert clear_bytes(out) > 0
