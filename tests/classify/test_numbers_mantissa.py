"""Text in the mantissa bytes of float tensors (``classify.mantissas``, ``numbers.packed_detections``).

An FP64 NaN is ``0x7ff8`` above 6 bytes the upstream chooses, and a finite double's low 6 bytes
are its mantissa's whatever its exponent: a client reading
``np.frombuffer(raw, "<f8").view("<u8") & 0xffffffffffff`` gets 6 bytes of text a value, which
the raw bytes' reading missed (the two exponent bytes between the pieces broke the text). So
are an FP32's low 2 bytes (a NaN's payload), an FP16's low byte, and all but the top byte of a
finite value (7 of a double, 3 of a float). Those bytes are now read too, detections mapped to
the elements they touch, and masking zeroes the tensor: the payloads go. Ordinary float data
(embeddings, scores, noise, images, timestamps) is not flagged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import DetectorSet, classify_outputs, native
from labelgate.classify.mantissas import forms, per_value
from labelgate.classify.numbers import form_detections, numeric_detections, packed_detections
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs, tensor_to_raw
from tests.classify.test_float_images import IMAGES, LAYOUTS
from tests.classify.test_numbers_packed import CARD, CATALOG, IBAN, SSN, raw_tensor, values_tensor

SECRET = f"ssn {SSN} card {CARD} iban {IBAN} ".encode()
DETECTORS = DetectorSet.default()
SIZES = {"FP16": 2, "FP32": 4, "FP64": 8}
NUMPY = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
# A quiet NaN's top bytes above each datatype's payload bytes (little-endian; FP16's negative:
# ``~`` between the bytes, a positive one's, read as text, was found before).
NAN_TOPS = {"FP64": b"\xf8\x7f", "FP32": b"\xc0\x7f", "FP16": b"\xfe"}
BUILDS: dict[str, Callable[..., Tensor]] = {"raw": raw_tensor, "values": values_tensor}


def pieces(text: bytes, size: int) -> list[bytes]:
    return [text[start : start + size].ljust(size) for start in range(0, len(text), size)]


def nan_payloads(text: bytes, datatype: str) -> bytes:
    """``text`` in the payloads of quiet NaNs of ``datatype``, as their raw bytes."""
    top = NAN_TOPS[datatype]
    return b"".join(piece + top for piece in pieces(text, SIZES[datatype] - len(top)))


def under_tops(text: bytes, tops: list[bytes]) -> bytes:
    """``text`` in doubles' low 6 bytes under the top bytes ``tops`` (2 each, cycled)."""
    return b"".join(piece + tops[index % len(tops)] for index, piece in enumerate(pieces(text, 6)))


def found(tensor: Tensor) -> set[str]:
    return {hit.detector for hits in numeric_detections(tensor, DETECTORS).values() for hit in hits}


@pytest.fixture(params=[True, False], ids=["native", "python"])
def scan_path(request: pytest.FixtureRequest) -> object:
    with native.forced(request.param):
        yield


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("build", sorted(BUILDS))
@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16"])
def test_text_in_nan_payloads_is_found(datatype: str, build: str) -> None:
    data = nan_payloads(SECRET, datatype)
    values = np.frombuffer(data, dtype=NUMPY[datatype])
    assert np.isnan(values).all()
    # What the caller reads: each value's low bytes.
    payload_bytes = SIZES[datatype] - len(NAN_TOPS[datatype])
    low = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZES[datatype])[:, :payload_bytes].tobytes()
    assert SSN.encode() in low and SSN.encode() not in data
    assert {"us_ssn", "credit_card", "iban"} <= found(BUILDS[build](datatype, data))


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_text_in_the_mantissas_of_finite_doubles_of_varying_exponents_is_found(build: str) -> None:
    # Ordinary-looking numbers (0.5 to 512, either sign): the top two bytes vary value by value.
    tops = [
        struct.pack("<H", 0x3FE0 + 0x10 * (index % 10) + (0x8000 if index % 3 else 0)) for index in range(30)
    ]
    data = under_tops(SECRET, tops)
    values = np.frombuffer(data, dtype="<f8")
    assert np.isfinite(values).all() and len({int(np.log2(abs(value))) for value in values}) > 5
    assert {"us_ssn", "credit_card", "iban"} <= found(BUILDS[build]("FP64", data))


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize(("datatype", "top"), [("FP64", b"\xc0"), ("FP32", b"\xc0"), ("FP64", b"\xbf")])
def test_text_under_the_top_byte_of_finite_values_is_found(datatype: str, top: bytes) -> None:
    # 7 bytes of text a double, 3 a float, under a top byte that is no text (sign and exponent).
    size = SIZES[datatype] - 1
    data = b"".join(piece + top for piece in pieces(SECRET, size))
    values = np.frombuffer(data, dtype=NUMPY[datatype])
    assert np.isfinite(values).all()
    assert found(raw_tensor(datatype, data)) >= {"us_ssn", "credit_card", "iban"}


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_a_hit_covers_the_elements_its_mantissa_bytes_touch(datatype: str) -> None:
    data = nan_payloads(SECRET, datatype)
    size = SIZES[datatype] - len(NAN_TOPS[datatype])
    start = SECRET.index(SSN.encode())
    end = start + len(SSN)
    hits = [
        hit for hit in packed_detections(raw_tensor(datatype, data), DETECTORS) if hit.detector == "us_ssn"
    ]
    assert [(hit.start, hit.end) for hit in hits] == [(start // size, -(-end // size))]
    assert hits[0].end - hits[0].start > 1  # across element boundaries


def test_text_split_across_many_elements_with_nuls_between_is_found() -> None:
    # A character a payload byte, NULs between: what a terminal shows of the low bytes.
    spaced = b"".join(bytes([byte]) + b"\0" for byte in SECRET)
    assert "us_ssn" in found(raw_tensor("FP64", nan_payloads(spaced, "FP64")))
    assert "us_ssn" in found(raw_tensor("FP32", nan_payloads(spaced, "FP32")))


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16"])
def test_a_masked_tensor_no_longer_carries_the_payloads(datatype: str) -> None:
    data = nan_payloads(SECRET, datatype)
    tensor = raw_tensor(datatype, data)
    classification = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert "outputs.notes{us_ssn}" in {item.path for item in classification.fields}
    masks = [{"path": "outputs.notes{us_ssn}", "strategy": "redact", "params": {}}]
    [result] = apply_masks([tensor], classification, masks, b"k" * 32)
    assert tensor_to_raw(result) == b"\0" * len(data)  # zeros: no NaN, no payload
    response = pb.ModelInferResponse()
    encode_outputs(response, [result], raw=True)
    wire = response.SerializeToString()
    assert (
        SSN.encode()[:2] not in wire
        and not np.isnan(np.frombuffer(tensor_to_raw(result), NUMPY[datatype])).any()
    )


def test_forms_read_the_low_bytes_of_each_value() -> None:
    data = np.array([1.5, -2.25], dtype="<f8").tobytes()
    double = [(form.per_value, form.whole) for form in forms("FP64", data)]
    assert double == [(6, True), (7, False)]
    assert forms("FP64", data)[1].data == data[0:7] + data[8:15]
    assert [(form.per_value, form.whole) for form in forms("FP32", data)] == [(2, True), (3, False)]
    assert [form.per_value for form in forms("FP16", data)] == [1]
    assert forms("BF16", data) == [] and forms("INT64", data) == []
    assert (per_value("FP64"), per_value("FP32"), per_value("FP16"), per_value("BF16")) == (13, 5, 1, 0)


def mantissa_hits(datatype: str, data: bytes, width: int = 0) -> list[object]:
    """What the mantissa readings alone find (``packed_detections`` adds them to the raw
    bytes' reading, whose own findings are ``test_numbers_packed``'s)."""
    return list(form_detections(forms(datatype, data), DETECTORS, width))


def _softmax(rng: np.random.Generator, n: int) -> np.ndarray:
    logits = rng.standard_normal(n) * 3
    scores: np.ndarray = np.exp(logits) / np.exp(logits).sum()
    return scores


ORDINARY: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "embedding": lambda rng, n: rng.standard_normal(n) * 0.03,
    "unit-embedding": lambda rng, n: (v := rng.standard_normal(n)) / np.linalg.norm(v),
    "wide": lambda rng, n: rng.standard_normal(n) * 1e4,
    "uniform": lambda rng, n: rng.random(n),
    "softmax": _softmax,
    "relu": lambda rng, n: np.maximum(rng.standard_normal(n), 0),
    "hundredths": lambda rng, n: np.round(rng.standard_normal(n), 2),
    "tenths": lambda rng, n: np.round(rng.random(n) * 10) / 10,
    "thirds-fifths": lambda rng, n: rng.integers(0, 30, n) / rng.choice([3, 5, 15], n),
    "sevenths-ninths": lambda rng, n: rng.integers(0, 60, n) / rng.choice([7, 9, 13], n),
    "thousandths": lambda rng, n: np.round(rng.random(n), 3),
    "epoch-seconds": lambda rng, n: 1_733_500_000 + rng.random(n) * 86_400,
    "epoch-millis": lambda rng, n: np.rint(1_733_500_000_000 + rng.random(n) * 86_400_000),
    "whole-epoch-seconds": lambda rng, n: np.rint(1_733_500_000 + rng.random(n) * 86_400),
    "counts": lambda rng, n: rng.poisson(40, n).astype(np.float64),
    "ids": lambda rng, n: rng.integers(0, 2**24, n).astype(np.float64),
    "coordinates": lambda rng, n: rng.uniform(-180, 180, n),
    "pixels": lambda rng, n: rng.integers(0, 256, n).astype(np.float64),
    "normalised-pixels": lambda rng, n: rng.integers(0, 256, n) / 255.0,
    "flat-grey-normalised": lambda rng, n: rng.integers(150, 160, n) / 255.0,
    "standardised-pixels": lambda rng, n: (rng.integers(0, 256, n) / 255.0 - 0.485) / 0.229,
    "grey-pixels": lambda rng, n: rng.integers(170, 190, n).astype(np.float64),
}


@pytest.mark.parametrize("distribution", sorted(ORDINARY))
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_ordinary_floats_are_not_flagged(datatype: str, distribution: str) -> None:
    rng = np.random.default_rng(17)
    for size in (1, 2, 3, 5, 8, 64, 1024, 4096):
        for _ in range(16 if size < 4096 else 2):
            with np.errstate(over="ignore"):
                data = ORDINARY[distribution](rng, size).astype(NUMPY[datatype]).tobytes()
            assert mantissa_hits(datatype, data) == []
            if size >= 64:
                assert mantissa_hits(datatype, data, 64) == []


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_a_few_random_floats_are_not_failed_closed(datatype: str) -> None:
    # A few values' low bytes often read as text, and a backspace or an ESC there failed them
    # closed (one FP32 tensor of 2-5 values in 500): read as binary below 16 bytes.
    rng = np.random.default_rng(23)
    for _ in range(3000):
        data = rng.standard_normal(int(rng.integers(1, 8))).astype(NUMPY[datatype]).tobytes()
        assert mantissa_hits(datatype, data) == []


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("scale", ["pixels", "normalised", "standardised"])
def test_images_as_floats_are_not_flagged(scale: str, datatype: str, layout: str, image: str) -> None:
    # Normalised (a pixel / 255.0), a double's mantissa repeats the byte of its pixel: a grey
    # photo's ``444444555555444444`` passed as a card before ``mantissas.repeating``.
    pixels = LAYOUTS[layout](IMAGES[image]())
    if scale == "normalised":
        pixels = pixels / 255.0
    elif scale == "standardised":
        pixels = (pixels / 255.0 - 0.45) / 0.226
    data = pixels.astype(NUMPY[datatype]).tobytes()
    assert mantissa_hits(datatype, data, pixels.shape[-1]) == []
    assert mantissa_hits(datatype, data) == []


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_text_with_repeated_characters_is_still_found(datatype: str) -> None:
    # Pieces that repeat one byte (``111111``) are read: only a hit all of whose values repeat
    # is dropped, and no card is made of such pieces alone.
    size = SIZES[datatype] - len(NAN_TOPS[datatype])
    for shift in range(size):
        text = b"x" * shift + b"card 4111111111111111 and 4000000000000002 ssn 111-11-1112 "
        hits = packed_detections(raw_tensor(datatype, nan_payloads(text, datatype)), DETECTORS)
        assert {hit.detector for hit in hits} >= {"credit_card", "us_ssn"}, shift
