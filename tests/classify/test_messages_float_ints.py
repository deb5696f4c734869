"""Float and double fields holding whole numbers, read as integer fields are.

A JavaScript client reads ``repeated double codes = [49, 50, 51, 45, ...]`` back with
``String.fromCharCode(...codes)`` and prints ``[4111.0, 1111.0, 1111.0, 1111.0]`` with
``codes.join(" ")`` exactly as it does an int list (``String(4111.0)`` is "4111"). So a float
or double field whose values are all whole numbers is read as characters and as digit runs,
as a repeated integer field is (``classify.messages``: ``message_numbers.as_integers``), and so are such
fields of repeated messages and a map's such values; a list holding a fraction (embeddings,
probabilities) is not, and costs nothing more.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.message_bytes import packed_cost
from labelgate.classify.messages import FIXED_STEP_VALUES
from labelgate.enforce import apply_message_masks
from labelgate.errors import UpstreamError
from tests.classify.proto_files import add_map

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"
SSN_TEXT = "ssn 123-45-6789"
SSN_PARTS = [123.0, 45.0, 6789.0]
CARD_PARTS = [4111.0, 1111.0, 1111.0, 1111.0]
_PACKAGE = "labelgatefloatints"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/float_ints.proto", package=_PACKAGE, syntax="proto3"
    )
    point = file.message_type.add(name="Point")
    point.field.add(name="v", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    point.field.add(name="f", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    reply = file.message_type.add(name="Reply")
    reply.field.add(name="dbl", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_REPEATED)
    reply.field.add(name="fl", number=2, type=F.TYPE_FLOAT, label=F.LABEL_REPEATED)
    reply.field.add(
        name="points", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Point"
    )
    add_map(reply, f"{_PACKAGE}.Reply", "by_name", 4, F.TYPE_STRING, F.TYPE_DOUBLE)
    reply.field.add(name="ints", number=5, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    reply.field.add(name="flags", number=6, type=F.TYPE_BOOL, label=F.LABEL_REPEATED)
    reply.field.add(name="note", number=7, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    return file


descriptor_pool.Default().Add(_file())
Point: Any
Reply: Any
Point, Reply = (
    message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.{name}"))
    for name in ("Point", "Reply")
)


def codes(text: str) -> list[float]:
    return [float(ord(character)) for character in text]


def detected(message: Any) -> dict[str, dict[str, list[str]]]:
    result = classify_message(message, CATALOG, DETECTORS)
    return {
        field["path"]: field["sources"] for field in to_policy_fields(result.fields) if "{" in field["path"]
    }


def released(message: Any, path: str) -> tuple[Any, Any]:
    result = classify_message(message, CATALOG, DETECTORS)
    return result, apply_message_masks(
        message, result, [{"path": path, "strategy": "redact", "params": {}}], KEY
    )


@pytest.mark.parametrize("field", ["dbl", "fl"])
def test_code_points_in_a_float_field_are_found_and_every_value_zeroed(field: str) -> None:
    message = Reply(**{field: codes(SSN_TEXT)}, note="kept")
    assert detected(message)[f"{field}[]{{us_ssn}}"] == {"confidential": ["detector:us_ssn"]}
    result, masked = released(message, f"{field}[]{{us_ssn}}")
    assert {leaf.location for leaf in result.message_spans} == {(field, i) for i in range(len(SSN_TEXT))}
    assert list(getattr(masked, field)) == [0.0] * len(SSN_TEXT) and masked.note == "kept"


@pytest.mark.parametrize(
    ("message", "path"),
    [
        pytest.param(Reply(dbl=CARD_PARTS), "dbl[]{credit_card}", id="card-in-doubles"),
        pytest.param(Reply(fl=SSN_PARTS), "fl[]{us_ssn}", id="ssn-in-floats"),
        pytest.param(Reply(dbl=[123.0, -45.0, -6789.0]), "dbl[]{us_ssn}", id="negatives-bring-hyphens"),
    ],
)
def test_whole_numbers_printed_one_after_another_are_found_and_zeroed(message: Any, path: str) -> None:
    assert path in detected(message)
    field = path.split("[", 1)[0]
    _, masked = released(message, path)
    assert set(getattr(masked, field)) == {0.0}


def test_code_points_in_a_float_field_of_repeated_messages_are_found_and_zeroed() -> None:
    message = Reply(points=[Point(v=code, f=0.25) for code in codes(SSN_TEXT)])
    assert "points[].v{us_ssn}" in detected(message)
    _, masked = released(message, "points[].v{us_ssn}")
    assert {point.v for point in masked.points} == {0.0}
    assert {point.f for point in masked.points} == {0.25}  # the rest of each element stays


def test_a_maps_whole_double_values_spelling_an_ssn_label_the_map() -> None:
    message = Reply(by_name={"c": 6789.0, "a": 123.0, "b": 45.0})  # by key: 123-45-6789
    by_path = {
        field["path"]: field["sources"]
        for field in to_policy_fields(classify_message(message, CATALOG, DETECTORS).fields)
    }
    assert by_path["by_name"]["confidential"] == ["detector:us_ssn"]


def test_values_of_both_signs_past_int64_do_not_stop_the_reading() -> None:
    # Neither int64 nor uint64 holds both; the large one is no character in either.
    message = Reply(dbl=[-1.0, 2.0**63, *codes(SSN_TEXT)])
    assert "dbl[]{us_ssn}" in detected(message)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([*codes(SSN_TEXT), math.nan], id="nan"),
        pytest.param([*codes(SSN_TEXT), math.inf], id="infinity"),
        pytest.param([*codes(SSN_TEXT), 1e300], id="past-uint64"),
        pytest.param([code + 0.25 for code in codes(SSN_TEXT)], id="fractions"),
    ],
)
def test_values_no_integer_field_could_hold_are_not_read_as_integers(values: list[float]) -> None:
    assert not classify_message(Reply(dbl=values), CATALOG, DETECTORS).message_spans


def embeddings(count: int, seed: int = 7) -> list[float]:
    generator = random.Random(seed)
    return [generator.uniform(-1.0, 1.0) for _ in range(count)]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Reply(dbl=embeddings(512)), id="embedding"),
        pytest.param(Reply(fl=[0.1, 0.7, 0.2]), id="probabilities"),
        pytest.param(Reply(dbl=[1.0, 3.0, 224.0, 224.0]), id="shape-as-doubles"),
        pytest.param(Reply(points=[Point(v=value) for value in embeddings(64)]), id="records"),
        pytest.param(Reply(by_name={"a": 0.5, "b": 1.5}), id="map"),
    ],
)
def test_ordinary_float_values_are_not_data(message: Any) -> None:
    result = classify_message(message, CATALOG, DETECTORS)
    assert not result.message_spans and not detected(message)


def cheapest(message: Any) -> int:
    """The smallest ``max_values`` that does not refuse ``message``."""
    low, high = 0, 1_000_000
    while low < high:
        middle = (low + high) // 2
        try:
            classify_message(message, CATALOG, DETECTORS, max_values=middle)
        except UpstreamError:
            low = middle + 1
        else:
            high = middle
    return low


def test_whole_floats_are_charged_as_integers_and_fractions_nothing_more() -> None:
    # Besides: every double field is read as its bytes too (``message_bytes``), charged so;
    # integers that are ASCII code points are not (``integer_text`` reads their text).
    as_bytes = packed_cost(FieldDescriptor.CPPTYPE_DOUBLE, len(SSN_TEXT))
    text = codes(SSN_TEXT)
    assert cheapest(Reply(dbl=text)) - as_bytes == cheapest(Reply(ints=[int(code) for code in text]))
    # Worth reading as characters (a value reads as a digit), found nothing: charged a read.
    worth = [126.0] * 14 + [49.0]
    plain = Reply(flags=[True] * len(worth))
    assert cheapest(Reply(dbl=worth)) - as_bytes - cheapest(plain) == FIXED_STEP_VALUES
    assert (
        cheapest(Reply(points=[Point(v=v) for v in worth]))
        - cheapest(Reply(points=[Point(v=0.5) for _ in worth]))
        == FIXED_STEP_VALUES
    )
    # A fraction: not read as integers, so charged as any field of that many values.
    assert cheapest(Reply(dbl=embeddings(len(worth)))) - as_bytes == cheapest(plain)
    assert cheapest(Reply(dbl=[*worth[:-1], 49.5])) - as_bytes == cheapest(plain)
