"""The codec's fast paths (one-length BYTES tensors, unchecked splitting) give exactly what
the plain element-by-element reading gives, and fall back to it for anything unusual."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest

from labelgate.errors import InvalidInput
from labelgate.oip import native
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import fixed_width_elements, split_raw_bytes, tensor_to_raw

MANY = 40  # above the count where one-length tensors take the fast path


@pytest.fixture(autouse=True, params=["native", "python"])
def kernel_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test on both paths: the native kernels, and the Python fast paths they replace
    (the one-length numpy split and join, the unchecked split), which run without them."""
    with native.forced(request.param == "native"):
        yield


def reference_split(data: bytes, count: int) -> list[bytes] | str:
    """Reading one prefix at a time, as the protocol describes it; a string for malformed data."""
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(data):
            return "malformed"
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if length > len(data) - offset:
            return "malformed"
        values.append(data[offset : offset + length])
        offset += length
    return values if offset == len(data) else "malformed"


def encode(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def split_or_error(data: bytes, count: int) -> list[bytes] | str:
    try:
        return split_raw_bytes(data, count)
    except InvalidInput:
        return "malformed"


@pytest.mark.parametrize("length", [0, 1, 11, 300])
def test_one_length_tensors_split_like_the_reference(length: int) -> None:
    values = [bytes([index % 256]) * length for index in range(MANY)]
    data = encode(values)
    assert split_raw_bytes(data, MANY) == values


def test_same_total_size_but_different_lengths_is_not_taken_for_one_length() -> None:
    # 10 + 12 averages 11: the total matches 40 elements of 11 bytes, the prefixes do not.
    values = [b"a" * (10 if index % 2 else 12) for index in range(MANY)]
    data = encode(values)
    assert len(data) == MANY * (4 + 11)
    assert split_raw_bytes(data, MANY) == values


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: data[:-1], "element 39 declares 11 bytes but only 10 remain"),
        (lambda data: data + b"\x00", "1 unexpected bytes after the 40 raw BYTES elements"),
        (lambda data: data[: 15 * 20], "ends at byte 300 inside the length prefix of element 20"),
        (
            lambda data: data[:150] + struct.pack("<I", 1 << 20) + data[154:],
            "element 10 declares 1048576 bytes",
        ),
    ],
)
def test_malformed_one_length_tensors_get_the_precise_error(mutate, message: str) -> None:
    data = mutate(encode([b"123-45-6789"] * MANY))
    with pytest.raises(InvalidInput, match=message):
        split_raw_bytes(data, MANY)


def test_random_buffers_split_exactly_like_the_reference() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        count = rng.choice([0, 1, 2, 5, MANY, MANY + 3])
        width = rng.choice([None, 0, 3, 11])
        values = [
            bytes(rng.randrange(256) for _ in range(width if width is not None else rng.randint(0, 9)))
            for _ in range(count)
        ]
        data = encode(values)
        change = rng.random()
        if change < 0.2 and data:
            position = rng.randrange(len(data))
            data = data[:position] + bytes([rng.randrange(256)]) + data[position + 1 :]
        elif change < 0.3:
            data = data[: rng.randrange(len(data) + 1)]
        elif change < 0.4:
            data += bytes(rng.randint(1, 5))
        assert split_or_error(data, count) == reference_split(data, count), (count, data)


@pytest.mark.parametrize(
    "values",
    [
        [b"same"] * MANY,
        [b""] * MANY,
        [b"x"],
        [b"a", b"bb", b"", "ünï".encode()],
        [],
    ],
)
def test_bytes_encode_like_the_reference(values: list[bytes]) -> None:
    assert tensor_to_raw(Tensor("t", "BYTES", [len(values)], values)) == encode(values)


@pytest.mark.parametrize(
    "values",
    [
        [b"\x00\x00\x00"] * MANY,  # NULs only: kept, never stripped
        [b"a\x00\x00", b"\x00b\x00"] * (MANY // 2),
        [bytes([byte, 0, 255]) for byte in range(MANY)],
        [b""] * MANY,
        [b"x"] * MANY,
    ],
    ids=["nuls", "trailing-nuls", "high-bytes", "empty", "one-byte"],
)
def test_one_length_elements_keep_every_byte(values: list[bytes]) -> None:
    data = encode(values)
    assert split_raw_bytes(data, len(values)) == reference_split(data, len(values)) == values
    assert fixed_width_elements(data, len(values), len(values[0])) == values
    assert all(type(value) is bytes for value in split_raw_bytes(data, len(values)))
