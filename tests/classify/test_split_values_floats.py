"""Routed token streams (``split_values: hold``): float and double fields whose values are whole
numbers are read across messages as integer fields are (``held_integers``), as the classifier
reads them in one reply (``integer_text.whole_numbers``): a JavaScript client's
``String.fromCharCode`` reads ``115.0`` as ``s``. ``double`` code points one a message went
out where int64 ones ended the stream ``STREAM_VALUE_SPLIT`` (review). A list holding a
fraction (embeddings, probabilities) is not read so, as the classifier does not read it."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError
from tests.classify.proto_files import add_map

_PACKAGE = "labelgateheldfloats"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/held_floats.proto", package=_PACKAGE, syntax="proto3"
    )
    point = file.message_type.add(name="Point")
    point.field.add(name="c", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    tok = file.message_type.add(name="Tok")
    tok.field.add(name="codes", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_REPEATED)
    tok.field.add(name="d", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    tok.field.add(name="f", number=3, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    add_map(tok, f"{_PACKAGE}.Tok", "scores", 4, F.TYPE_STRING, F.TYPE_DOUBLE)
    tok.field.add(
        name="points", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Point"
    )
    return file


descriptor_pool.Default().Add(_file())
_POOL = descriptor_pool.Default()
Tok: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Tok"))
Point: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Point"))
SSN = "ssn 123-45-6789 ok"


def codes(text: str) -> list[float]:
    return [float(ord(character)) for character in text]


def released_before_refusal(messages: list[Message]) -> tuple[list[Any], str]:
    """What left, and the reason the stream ended (empty: it did not)."""
    detectors = DetectorSet()
    split = SplitValues(detectors, CarryOver(detectors, 64).cut_point)
    released: list[Any] = []
    try:
        for message in messages:
            released += split.hold(message, 100_000)
        released += split.flush(100_000)
    except LabelgateError as error:
        return released, error.reason
    return released, ""


SPLIT = {
    "a double a message": [Tok(d=code) for code in codes(SSN)],
    "a float a message": [Tok(f=code) for code in codes(SSN)],
    "a repeated double split": [Tok(codes=codes(SSN[:9])), Tok(codes=codes(SSN[9:]))],
    "a map's double values": [Tok(scores={"s": code}) for code in codes(SSN)],
    "records' doubles split": [
        Tok(points=[Point(c=code) for code in codes(SSN[:9])]),
        Tok(points=[Point(c=code) for code in codes(SSN[9:])]),
    ],
}


@pytest.mark.parametrize("name", SPLIT)
def test_a_value_split_across_whole_number_floats_ends_the_stream_before_it_leaves(name: str) -> None:
    released, reason = released_before_refusal(SPLIT[name])
    assert reason == reasons.STREAM_VALUE_SPLIT
    assert released == []


def test_whole_numbers_with_no_value_leave_message_by_message() -> None:
    released, reason = released_before_refusal([Tok(d=code) for code in codes("hello, world!")])
    assert (reason, len(released)) == ("", 13)


def test_lists_holding_a_fraction_are_not_read_as_characters() -> None:
    generator = random.Random(3)
    embeddings = [Tok(codes=[generator.random() for _ in range(16)]) for _ in range(200)]
    released, reason = released_before_refusal(embeddings)
    assert (reason, len(released)) == ("", 200)
    # As the classifier reads one reply: a fraction among code points, and the list is not read.
    pieces = [Tok(codes=[*codes(SSN[:9]), 0.5]), Tok(codes=[0.5, *codes(SSN[9:])])]
    assert released_before_refusal(pieces) == (pieces, "")
    # A map's values likewise, all of them or none.
    scores = [Tok(scores={"s": code, "p": 0.25}) for code in codes(SSN)]
    assert released_before_refusal(scores)[1] == ""


def test_whole_numbers_past_any_character_of_both_signs_end_nothing() -> None:
    # -1.0 reads as an int64, 2.0**63 only as a uint64: read together, neither is a character.
    messages = [Tok(d=-1.0), Tok(d=2.0**63), Tok(codes=[-1.0, 2.0**63, 1e19]), Tok(d=49.0), Tok(d=2.0**64)]
    released, reason = released_before_refusal(messages)
    assert (reason, len(released)) == ("", 5)
