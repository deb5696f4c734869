"""Text packed into the bytes of a routed reply's number fields (``classify.message_bytes``).

A client reads ``repeated double xs`` back with ``np.array(reply.xs, "<f8").tobytes()`` as it
reads an FP64 tensor's bytes: an upstream packing ``SSN 123-45-6789 card 4111...`` into them
got it past the classifier, which read numbers only as their digits and code points (review).
Every number field of width 32 or 64 bits is now read as its little-endian bytes, and a
float's or a double's mantissa bytes (a NaN's payload) too: what is found labels the field as
any detection does, and masking zeroes every value, so the bytes go.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.message_bytes import packed_cost
from labelgate.enforce import apply_message_masks
from tests.classify.proto_files import add_map
from tests.classify.test_messages_float_ints import cheapest

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"
SECRET = b"SSN 123-45-6789 card 4111111111111111 "
_PACKAGE = "labelgatepacked"
# Field name -> (protobuf type, little-endian dtype a client packs its values back in).
WIDTHS: dict[str, tuple[int, str]] = {
    "f64": (F.TYPE_DOUBLE, "<f8"),
    "f32": (F.TYPE_FLOAT, "<f4"),
    "i64": (F.TYPE_INT64, "<i8"),
    "u64": (F.TYPE_UINT64, "<u8"),
    "s64": (F.TYPE_SINT64, "<i8"),
    "x64": (F.TYPE_FIXED64, "<u8"),
    "sx64": (F.TYPE_SFIXED64, "<i8"),
    "i32": (F.TYPE_INT32, "<i4"),
    "u32": (F.TYPE_UINT32, "<u4"),
    "s32": (F.TYPE_SINT32, "<i4"),
    "x32": (F.TYPE_FIXED32, "<u4"),
    "sx32": (F.TYPE_SFIXED32, "<i4"),
    "kinds": (F.TYPE_ENUM, "<i4"),
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/packed.proto", package=_PACKAGE, syntax="proto3"
    )
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSET", number=0)
    row = file.message_type.add(name="Row")
    row.field.add(name="x", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    row.field.add(name="id", number=2, type=F.TYPE_FIXED64, label=F.LABEL_OPTIONAL)
    reply = file.message_type.add(name="Reply")
    for number, (name, (kind_of, _)) in enumerate(WIDTHS.items(), start=1):
        field = reply.field.add(name=name, number=number, type=kind_of, label=F.LABEL_REPEATED)
        if kind_of == F.TYPE_ENUM:
            field.type_name = f".{_PACKAGE}.Kind"
    reply.field.add(name="note", number=30, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    reply.field.add(name="flags", number=31, type=F.TYPE_BOOL, label=F.LABEL_REPEATED)
    reply.field.add(
        name="rows", number=32, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Row"
    )
    add_map(reply, f"{_PACKAGE}.Reply", "weights", 33, F.TYPE_STRING, F.TYPE_DOUBLE)
    add_map(reply, f"{_PACKAGE}.Reply", "ids_by_name", 34, F.TYPE_STRING, F.TYPE_FIXED64)
    return file


descriptor_pool.Default().Add(_file())
Row: Any
Reply: Any
Row, Reply = (
    message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.{name}"))
    for name in ("Row", "Reply")
)


def packed(text: bytes, dtype: str) -> list[Any]:
    """``text`` as the values whose little-endian bytes it is (padded with spaces)."""
    size = np.dtype(dtype).itemsize
    values: list[Any] = np.frombuffer(text + b" " * (-len(text) % size), dtype=dtype).tolist()
    return values


def nan_payloads(text: bytes, size: int) -> list[float]:
    """``text`` in the payloads of quiet NaNs: 6 bytes a double, 2 a float."""
    chunks = [text[start : start + size].ljust(size) for start in range(0, len(text), size)]
    if size == 6:
        return [struct.unpack("<d", chunk + b"\xf8\x7f")[0] for chunk in chunks]
    return [struct.unpack("<f", chunk + b"\xc0\x7f")[0] for chunk in chunks]


def client_bytes(values: Any, dtype: str) -> bytes:
    return np.array(values, dtype=dtype).tobytes()


def detected(message: Any) -> dict[str, dict[str, list[str]]]:
    result = classify_message(message, CATALOG, DETECTORS)
    return {field["path"]: field["sources"] for field in to_policy_fields(result.fields)}


def masked(message: Any, *paths: str) -> Any:
    result = classify_message(message, CATALOG, DETECTORS)
    masks = [{"path": path, "strategy": "redact", "params": {}} for path in paths]
    return apply_message_masks(message, result, masks, KEY)


@pytest.mark.parametrize("name", list(WIDTHS))
def test_text_packed_in_a_number_fields_bytes_is_found_and_its_values_zeroed(name: str) -> None:
    dtype = WIDTHS[name][1]
    message = Reply(**{name: packed(SECRET, dtype)}, note="kept")
    assert SECRET in client_bytes(getattr(message, name), dtype)  # what the caller would read
    found = detected(message)
    assert found[f"{name}[]{{us_ssn}}"] == {"confidential": ["detector:us_ssn"]}
    assert found[f"{name}[]{{credit_card}}"] == {"confidential": ["detector:credit_card"]}
    released = masked(message, f"{name}[]{{us_ssn}}", f"{name}[]{{credit_card}}")
    assert set(client_bytes(getattr(released, name), dtype)) == {0}  # every value zeroed
    assert released.note == "kept"


@pytest.mark.parametrize(("name", "size"), [("f64", 6), ("f32", 2)])
def test_text_in_nan_payloads_is_found(name: str, size: int) -> None:
    values = nan_payloads(SECRET, size)
    message = Reply(**{name: values})
    assert all(value != value for value in getattr(message, name))  # NaNs, all of them
    found = detected(message)
    assert "confidential" in found[f"{name}[]{{us_ssn}}"]
    assert "confidential" in found[f"{name}[]{{credit_card}}"]
    released = masked(message, f"{name}[]{{us_ssn}}")
    assert list(getattr(released, name)) == [0.0] * len(values)


def test_text_in_the_mantissas_of_finite_doubles_is_found() -> None:
    # Six bytes of text a value under a fixed exponent: ordinary numbers between 2 and 4.
    chunks = [SECRET[start : start + 6].ljust(6) for start in range(0, len(SECRET), 6)]
    values = [struct.unpack("<d", chunk + b"\x00\x40")[0] for chunk in chunks]
    assert all(2.0 <= value < 4.0 for value in values)
    assert "f64[]{credit_card}" in detected(Reply(f64=values))


@pytest.mark.parametrize(("name", "size"), [("f64", 7), ("f32", 3)])
def test_text_under_the_top_byte_of_finite_values_is_found(name: str, size: int) -> None:
    # All but the top byte (sign and exponent, here 0xc0: values near -2**N) carry text, as
    # an FP64 or FP32 tensor's do (``classify.mantissas``).
    chunks = [SECRET[start : start + size].ljust(size) + b"\xc0" for start in range(0, len(SECRET), size)]
    values = np.frombuffer(b"".join(chunks), dtype="<f8" if size == 7 else "<f4").tolist()
    assert all(value == value and abs(value) != float("inf") for value in values)
    found = detected(Reply(**{name: values}))
    assert "confidential" in found[f"{name}[]{{us_ssn}}"]
    assert "confidential" in found[f"{name}[]{{credit_card}}"]


def test_a_maps_number_values_packed_with_text_label_the_map_and_masking_clears_it() -> None:
    values = packed(SECRET, "<f8")
    in_order = Reply(weights={f"k{index}": value for index, value in enumerate(values)})
    assert detected(in_order)["weights"]["confidential"] == ["detector:credit_card", "detector:us_ssn"]
    # A map has no order of its own: its values are read in its keys' order too.
    keys = [f"{index:02d}" for index in range(len(values))]
    shuffled = list(zip(keys, values, strict=True))
    random.Random(4).shuffle(shuffled)
    by_key = Reply(ids_by_name=dict((key, int(np.float64(value).view("<u8"))) for key, value in shuffled))
    assert "confidential" in detected(by_key)["ids_by_name"]
    assert not masked(in_order, "weights").weights


def test_a_field_of_repeated_messages_is_read_as_its_values_bytes_across_them() -> None:
    # ``[r.x for r in reply.rows]``, packed back as a client reads a list of doubles.
    message = Reply(rows=[Row(x=value, id=7) for value in packed(SECRET, "<f8")])
    assert "rows[].x{credit_card}" in detected(message)
    released = masked(message, "rows[].x{credit_card}")
    assert {row.x for row in released.rows} == {0.0}
    assert {row.id for row in released.rows} == {7}  # the rest of each element stays


def test_ordinary_numbers_are_not_data() -> None:
    # (Random 64-bit hashes are left out: their digits pass as cards one in ten or so, read
    # as numbers are since before; their bytes are binary, found nothing here.)
    rng = random.Random(11)
    for _ in range(50):
        message = Reply(
            f64=[rng.gauss(0.0, 1.0) for _ in range(512)],
            f32=np.random.default_rng(rng.randrange(1 << 30)).random(512, dtype=np.float32).tolist(),
            i32=[rng.randrange(50_000) for _ in range(256)],  # token ids
            u64=[1_733_500_000_000_000_000 + rng.randrange(10**12) for _ in range(64)],  # timestamps, ns
            x64=[rng.randrange(1 << 40) for _ in range(128)],  # offsets, sizes
            rows=[Row(x=rng.random(), id=rng.randrange(1 << 40)) for _ in range(32)],
            weights={f"w{index}": rng.uniform(-3.0, 3.0) for index in range(32)},
        )
        result = classify_message(message, CATALOG, DETECTORS)
        assert not result.message_spans
        assert not [field for field in to_policy_fields(result.fields) if "detector" in str(field["sources"])]


def test_a_pem_block_packed_into_numbers_covers_the_replys_texts_and_one_opened_elsewhere_covers_them() -> (
    None
):
    begin = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    opened_in_bytes = detected(
        Reply(f64=packed(begin, "<f8"), note="MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu")
    )
    assert "restricted" in opened_in_bytes["f64[]{secret}"]
    assert "restricted" in opened_in_bytes["note{secret}"]  # the key's next line, in a string
    embedding = [random.Random(2).gauss(0.0, 1.0) for _ in range(64)]
    opened_in_text = detected(Reply(note=begin.decode(), f64=embedding))
    assert "restricted" in opened_in_text["f64[]{secret}"]  # may carry its lines: covered whole


def test_booleans_and_ascii_code_points_are_not_read_as_bytes() -> None:
    # A bool is a byte of 0 or 1; integers that are all ASCII code points are the text
    # ``integer_text`` reads (an SSN's codes are found there, once).
    assert not [path for path in detected(Reply(flags=[True, False] * 64)) if "{" in path]
    found = [path for path in detected(Reply(i64=list(b"SSN 123-45-6789"))) if "{" in path]
    assert found == ["i64[]{us_ssn}"]


def test_reading_a_fields_bytes_is_charged_before_it_is_read() -> None:
    embedding = [random.Random(6).gauss(0.0, 1.0) for _ in range(10_000)]
    plain = Reply(flags=[True] * len(embedding))  # as many values, none read as bytes
    charged = packed_cost(FieldDescriptor.CPPTYPE_DOUBLE, len(embedding))
    assert cheapest(Reply(f64=embedding)) - cheapest(plain) == charged
    # 210 KB of bytes (raw, 6 and 7 low bytes a value): far less than walking the values.
    assert charged < len(embedding) // 4
