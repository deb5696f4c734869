"""A routed token stream (``split_values: hold``) whose text is inside ``google.protobuf.Any``
fields: the hold read an Any as its type URL and its bytes, so a value split across two
messages' Anys (``ssn 123-4`` / ``5-6789``) left in pieces, each masked on its own (review
s15 rev-routed-fuzz, finding 1). An Any's contents are now read as the fields they are
(``extra{}.text``); an Any the gateway cannot read ends the stream."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.message_texts import text_fields
from labelgate.classify.split_values import SplitValues
from labelgate.errors import UpstreamError
from tests.classify.split_values_proto import Note, Token

DETECTORS = DetectorSet.default()


def packed(message: Message) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder


def stream(messages: list[Message]) -> list[Message]:
    carry = CarryOver(DETECTORS, 256)
    splitter = SplitValues(DETECTORS, carry.cut_point)
    released = []
    for message in messages:
        released += splitter.hold(message)
    return released + splitter.flush()


def in_extra(text: str) -> Message:
    token = Token()
    token.extra.Pack(Note(text=text))
    return token


def in_extras(text: str) -> Message:
    token = Token()
    token.extras.add().Pack(Note(text=text))
    return token


def in_map(text: str) -> Message:
    token = Token()
    token.anys["k"].Pack(Note(text=text))
    return token


def in_string_value(text: str) -> Message:
    token = Token()
    token.extra.Pack(wrappers_pb2.StringValue(value=text))
    return token


def in_any_of_any(text: str) -> Message:
    token = Token()
    token.extra.Pack(packed(Note(text=text)))
    return token


def as_reply(text: str) -> Message:
    """A method whose reply type is Any itself."""
    return packed(Note(text=text))


SHAPES = {
    "extra": (in_extra, "extra{}.text"),
    "extras": (in_extras, "extras[0]{}.text"),
    "map": (in_map, "anys{}.text"),
    "string value": (in_string_value, "extra{}.value"),
    "any of any": (in_any_of_any, "extra{}.text"),
    "reply": (as_reply, "value{}.text"),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "pieces", [("ssn 123-4", "5-6789 end"), ("card 4111 1111", " 1111 1111 end")], ids=["ssn", "card"]
)
def test_a_value_split_across_messages_inside_anys_ends_the_stream(
    shape: str, pieces: tuple[str, str]
) -> None:
    build, shown = SHAPES[shape]
    with pytest.raises(UpstreamError) as refused:
        stream([build(piece) for piece in pieces])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
    assert f"(field {shown})" in refused.value.message


@pytest.mark.parametrize("shape", SHAPES)
def test_anys_whose_pieces_make_no_value_flow_in_order(shape: str) -> None:
    build, _ = SHAPES[shape]
    messages = [build(piece) for piece in ("The weather ", "is fine, ", "ssn 123-45-6789 whole", " bye")]
    assert stream(messages) == messages


def test_an_anys_contents_are_read_under_its_path_and_a_map_key_is_not_shown() -> None:
    token = Token(text="a")
    token.extra.Pack(Note(text="b", data=b"c"))
    token.anys["SSN 123-45-6789"].Pack(Note(text="d"))
    assert list(text_fields(token)) == [
        ("text", "text", b"a"),
        ("extra{}.text", "extra{}.text", b"b"),
        ("extra{}.data", "extra{}.data", b"c"),
        ("anys['SSN 123-45-6789']{}.text", "anys{}.text", b"d"),
    ]


@pytest.mark.parametrize(
    "holder",
    [
        any_pb2.Any(type_url="type.googleapis.com/labelgateheld.Unknown", value=b"\x0a\x03abc"),
        any_pb2.Any(type_url="type.googleapis.com/labelgateheld.Note", value=b"\x0a\xff"),
    ],
    ids=["unknown type", "invalid"],
)
def test_an_any_the_gateway_cannot_read_ends_the_stream(holder: any_pb2.Any) -> None:
    """Nothing can say what it holds, so nothing can say no value runs on from or into it."""
    token = Token()
    token.extra.CopyFrom(holder)
    with pytest.raises(UpstreamError) as refused:
        stream([in_extra("ssn 123-4"), token])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
    assert "(field extra: any_" in refused.value.message and "Unknown" not in refused.value.message
