"""The raw bytes of numbers wider than 8 bits are read as text too (``numbers.packed_detections``):
a client reads them back with ``tobytes()`` (review s15, finding 1: text labelled INT32 or
FP32 went out unmasked). Random floats (embeddings) are not flagged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, native
from labelgate.classify.numbers import PACKED_DATATYPES, numeric_detections, packed_detections
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs, tensor_to_raw

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
SSN, CARD, IBAN = "123-45-6789", "4111111111111111", "GB82WEST12345698765432"
TOKEN = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
KEY_LINE = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"
TEXT = (
    f"ssn {SSN} card {CARD} iban {IBAN} token {TOKEN}\n-----BEGIN RSA PRIVATE KEY-----\n"
    f"{KEY_LINE}\n-----END RSA PRIVATE KEY-----\n"
).encode()
TEXT += b" " * (-len(TEXT) % 8)  # whole elements of every width
SIZES = {
    "INT16": 2,
    "UINT16": 2,
    "INT32": 4,
    "UINT32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP16": 2,
    "BF16": 2,
    "FP32": 4,
    "FP64": 8,
}
NUMPY = {"INT16": "<i2", "UINT16": "<u2", "INT32": "<i4", "UINT32": "<u4", "INT64": "<i8", "UINT64": "<u8"}
NUMPY |= {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


@pytest.fixture(params=[True, False], ids=["native", "python"])
def scan_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """The detectors' native scan and the Python one."""
    with native.forced(request.param):
        yield


def raw_tensor(datatype: str, data: bytes, shape: list[int] | None = None) -> Tensor:
    """The tensor a raw reply of ``data`` decodes to (values built from the buffer)."""
    response = pb.ModelInferResponse()
    response.outputs.add(name="notes", datatype=datatype, shape=shape or [len(data) // SIZES[datatype]])
    response.raw_output_contents.append(data)
    (tensor,) = decode_outputs(response)
    assert tensor.raw_form() == data
    return tensor


def values_tensor(datatype: str, data: bytes, shape: list[int] | None = None) -> Tensor:
    """The same values without a raw form (a JSON reply, typed contents)."""
    decoded = raw_tensor(datatype, data, shape)
    tensor = Tensor("notes", datatype, list(decoded.shape), list(decoded.values))
    assert tensor.raw_form() is None and tensor_to_raw(tensor) == data
    return tensor


BUILDS: dict[str, Callable[..., Tensor]] = {"raw": raw_tensor, "values": values_tensor}


def found(tensor: Tensor) -> set[str]:
    return {hit.detector for hits in numeric_detections(tensor, DETECTORS).values() for hit in hits}


def floats(datatype: str, values: np.ndarray) -> bytes:
    """``values`` as the raw bytes of ``datatype`` (BF16: a float32's upper half)."""
    if datatype == "BF16":
        return (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return values.astype(NUMPY[datatype]).tobytes()


def test_every_numeric_datatype_wider_than_8_bits_is_read_packed() -> None:
    assert frozenset(SIZES) == PACKED_DATATYPES


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("build", sorted(BUILDS))
@pytest.mark.parametrize("datatype", sorted(SIZES))
def test_text_packed_in_the_bytes_of_wider_numbers_is_found(datatype: str, build: str) -> None:
    tensor = BUILDS[build](datatype, TEXT)
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    fields = {item.path for item in result.fields if "{" in item.path}
    assert {"outputs.notes{us_ssn}", "outputs.notes{credit_card}", "outputs.notes{iban}"} <= fields
    assert "outputs.notes{secret}" in fields  # the token and the PEM block


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("datatype", sorted(SIZES))
def test_a_hit_covers_the_elements_its_bytes_touch(datatype: str) -> None:
    size = SIZES[datatype]
    start = TEXT.index(SSN.encode())
    end = start + len(SSN)
    hits = [
        hit for hit in packed_detections(raw_tensor(datatype, TEXT), DETECTORS) if hit.detector == "us_ssn"
    ]
    assert [(hit.start, hit.end) for hit in hits] == [(start // size, -(-end // size))]


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP32", "FP64", "INT32", "INT64"])
def test_a_value_amid_random_floats_is_found_raw(datatype: str) -> None:
    # Binary data around it: the raw reading (and the one without control characters). (FP32
    # noise read as FP64 holds 16-digit whole numbers, some passing Luhn: ``in``, not ``==``.)
    noise = floats("FP32", np.random.default_rng(1).standard_normal(4096))
    for value, name in ((f" {SSN} ", "us_ssn"), (f" {CARD} ", "credit_card"), (f"\0{IBAN}\0", "iban")):
        data = noise[:4000] + value.encode() + noise[4000:]
        data += b"\0" * (-len(data) % 8)
        assert name in found(raw_tensor(datatype, data))
    # NULs between its bytes (a UTF-16 reading of ASCII) hide nothing.
    data = noise[:4000] + f" {SSN} ".encode("utf-16-le") + noise[4000:]
    data += b"\0" * (-len(data) % 8)
    assert "us_ssn" in found(raw_tensor(datatype, data))


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_rows_of_packed_text_are_read_apart(build: str) -> None:
    # A card at the end of one row and a digit starting the next: 17 digits if glued.
    width = 8  # FP32 elements: 32 bytes a row
    rows = [f"card {CARD}".encode().rjust(width * 4), b"7 and more text".ljust(width * 4)]
    tensor = BUILDS[build]("FP32", b"".join(rows), [2, width])
    assert "credit_card" in found(tensor)


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP32"])
def test_a_masked_float_tensor_holds_no_packed_text(datatype: str) -> None:
    tensor = raw_tensor(datatype, TEXT)
    classification = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    masks = [{"path": "outputs.notes{us_ssn}", "strategy": "redact", "params": {}}]
    [result] = apply_masks([tensor], classification, masks, b"k" * 32)
    assert tensor_to_raw(result) == b"\0" * len(TEXT)
    response = pb.ModelInferResponse()
    encode_outputs(response, [result], raw=True)
    assert SSN.encode() not in response.SerializeToString()


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "embedding": lambda rng, n: rng.standard_normal(n) * 0.03,
    "wide": lambda rng, n: rng.standard_normal(n) * 5,
    "uniform": lambda rng, n: rng.random(n),
    "softmax": lambda rng, n: np.exp(x := rng.standard_normal(n)) / np.exp(x).sum(),
    "relu": lambda rng, n: np.maximum(rng.standard_normal(n), 0),
}


@pytest.mark.usefixtures("scan_path")
def test_a_large_random_fp32_array_is_not_flagged() -> None:
    values = np.random.default_rng(2024).standard_normal(1_000_000)
    assert found(raw_tensor("FP32", floats("FP32", values))) == set()


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP32", "FP64"])
def test_random_floats_of_usual_shapes_are_not_flagged(datatype: str, distribution: str) -> None:
    # Measured before the loose detectors' floor: a third of softmax outputs as FP32, nearly
    # all as BF16 and half of uniform FP16 ones held an IPv6 address (``8::``) or an email.
    rng = np.random.default_rng(11)
    for _ in range(64):
        values = DISTRIBUTIONS[distribution](rng, 1024)
        assert found(raw_tensor(datatype, floats(datatype, values))) == set()


def test_long_loose_values_are_still_found_in_binary_data() -> None:
    noise = floats("FP32", np.random.default_rng(3).standard_normal(1024))
    email = b" first.last@corp.example.com "
    data = noise[:2000] + email + noise[2000:]
    data += b"\0" * (-len(data) % 4)
    assert found(raw_tensor("FP32", data)) == {"email"}


def test_token_ids_and_timestamps_are_not_flagged() -> None:
    rng = np.random.default_rng(5)
    for _ in range(32):
        assert found(raw_tensor("INT64", rng.integers(0, 50_000, 1024).astype("<i8").tobytes())) == set()
        assert found(raw_tensor("INT32", rng.integers(0, 50_000, 1024).astype("<i4").tobytes())) == set()
        stamps = 1_700_000_000_000_000_000 + rng.integers(0, 10**12, 1024)
        assert found(raw_tensor("INT64", stamps.astype("<i8").tobytes())) == set()
