"""A routed token stream (``split_values: hold``) reads its messages' texts at the depths the
classifier accepts, counted as it counts them, and refuses (``MESSAGE_TOO_DEEP``) where it
would: it counted each Any twice and stopped quietly past 32, so a value split across two
messages nested 17 to 32 Anys deep (``my ssn is 123-45-`` / ``6789 thanks``) was read in
neither, each message passed its own classification, and the caller got it whole (review,
rev-routed ``hold_any_depth``). Held integer paths and key-block following read the same
walk (``message_texts.texts_of``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from labelgate.classify import Catalog, classify_message, reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.message_texts import texts_of
from labelgate.classify.messages import MAX_MESSAGE_DEPTH, MESSAGE_TOO_DEEP, MessageValues
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError, UpstreamError
from tests.classify import split_values_proto
from tests.classify.secret_values import pem_value

CATALOG = Catalog.from_data({"default_label": "internal", "entries": []})
DETECTORS = DetectorSet.default()
# Built at run time: fields mypy cannot see.
Token: Any = split_values_proto.Token
INNER = "the innermost text"


def packed(message: Message) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder


def in_extras(inner: Message, anys: int) -> Message:
    """``inner`` inside ``anys`` Tokens' ``extra`` Anys, one in the other (the review's shape)."""
    message = inner
    for _ in range(anys):
        holder = Token()
        holder.extra.Pack(message)
        message = holder
    return message


def nested(text: str, anys: int) -> Message:
    return in_extras(Token(text=text), anys)


def in_repeated(text: str, anys: int) -> Message:
    message: Message = Token(text=text)
    for _ in range(anys):
        holder = Token()
        holder.extras.add().Pack(message)
        message = holder
    return message


def in_maps(text: str, anys: int) -> Message:
    message: Message = Token(text=text)
    for _ in range(anys):
        holder = Token()
        holder.anys["k"].Pack(message)
        message = holder
    return message


def any_of_anys(text: str, anys: int) -> Message:
    """One field's Any packing an Any, ``anys`` of them, the last the text's Token."""
    holder: Message = Token(text=text)
    if anys == 0:
        return holder
    message: Message = packed(holder)
    for _ in range(anys - 1):
        message = packed(message)
    holder = Token()
    holder.extra.CopyFrom(message)  # type: ignore[attr-defined]
    return holder


def as_reply(text: str, anys: int) -> Message:
    """A reply that is itself an Any, the rest in ``extra`` Anys."""
    return packed(nested(text, anys - 1)) if anys else nested(text, 0)


def structs(text: str, levels: int) -> Message:
    """A map of message values in a message field (``Struct``, ``Value.struct_value``)."""
    message = struct_pb2.Struct()
    message.fields["t"].string_value = text
    for _ in range(levels):
        holder = struct_pb2.Struct()
        holder.fields["s"].struct_value.CopyFrom(message)
        message = holder
    return message


def lists(text: str, levels: int) -> Message:
    """Repeated messages in message fields (``ListValue.values``, ``Value.list_value``)."""
    value = struct_pb2.Value(string_value=text)
    for _ in range(levels):
        holder = struct_pb2.Value()
        holder.list_value.values.add().CopyFrom(value)
        value = holder
    return struct_pb2.ListValue(values=[value])


def mixed(text: str, levels: int) -> Message:
    """Every kind of level in turn: an Any field, a map of Any, a repeated Any, a Struct's map."""
    message: Message = Token(text=text)
    for level in range(levels):
        holder = Token()
        kind = level % 4
        if kind == 0:
            holder.extra.Pack(message)
        elif kind == 1:
            holder.anys["k"].Pack(message)
        elif kind == 2:
            holder.extras.add().Pack(message)
        else:
            struct = struct_pb2.Struct()
            struct.fields["m"].struct_value.fields["t"].string_value = text
            holder.extra.Pack(struct)
            holder.extras.add().Pack(message)
        message = holder
    return message


SHAPES: dict[str, Callable[[str, int], Message]] = {
    "extra": nested,
    "extras": in_repeated,
    "map of Any": in_maps,
    "Any of Any": any_of_anys,
    "reply an Any": as_reply,
    "Struct": structs,
    "ListValue": lists,
    "mixed": mixed,
}


def classifier_refuses(message: Message) -> bool:
    try:
        classify_message(message, CATALOG, DETECTORS)
    except UpstreamError as error:
        assert error.reason == MESSAGE_TOO_DEEP
        return True
    return False


def held_texts(message: Message) -> list[bytes] | None:
    """The texts the hold reads of ``message``; None when it refuses it as too deep."""
    try:
        return [text for _, _, text in texts_of(message, MessageValues(None), [])]
    except UpstreamError as error:
        assert error.reason == MESSAGE_TOO_DEEP
        assert str(MAX_MESSAGE_DEPTH) in error.message
        return None


@pytest.mark.parametrize("shape", SHAPES)
def test_the_hold_reads_every_depth_the_classifier_accepts_and_refuses_the_rest(shape: str) -> None:
    build = SHAPES[shape]
    refused_at = None
    # Up to the first depth the classifier refuses, and a few past it (no shape takes fewer
    # than one level a depth, so it is reached by MAX_MESSAGE_DEPTH + 1).
    for levels in range(MAX_MESSAGE_DEPTH + 4):
        if refused_at is not None and levels > refused_at + 3:
            break
        message = build(INNER, levels)
        texts = held_texts(message)
        refused = classifier_refuses(message)
        assert (texts is None) == refused, (shape, levels, refused)
        if refused:
            refused_at = levels if refused_at is None else refused_at
        else:
            assert refused_at is None, (shape, levels)  # deeper is never accepted again
            assert texts is not None and INNER.encode() in texts, (shape, levels)
    assert refused_at is not None


def hold_stream(messages: list[Message]) -> tuple[list[Message], str]:
    """What left, and the reason the stream ended (empty: it did not)."""
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released: list[Message] = []
    try:
        for message in messages:
            released += splitter.hold(message)
        released += splitter.flush()
    except LabelgateError as error:
        return released, error.reason
    return released, ""


@pytest.mark.parametrize(
    ("anys", "reason"),
    [
        (16, reasons.STREAM_VALUE_SPLIT),
        (17, reasons.STREAM_VALUE_SPLIT),
        (31, reasons.STREAM_VALUE_SPLIT),
        (32, reasons.STREAM_VALUE_SPLIT),
        (33, MESSAGE_TOO_DEEP),
    ],
)
def test_a_value_split_across_messages_deep_in_anys_ends_the_stream(anys: int, reason: str) -> None:
    pieces = [nested("my ssn is 123-45-", anys), nested("6789 thanks", anys)]
    # Each piece passes its own classification up to the classifier's depth: only the hold
    # can see the value.
    assert [classifier_refuses(piece) for piece in pieces] == [anys > MAX_MESSAGE_DEPTH] * 2
    assert hold_stream(pieces) == ([], reason)


@pytest.mark.parametrize("anys", [17, 32])
def test_code_points_one_a_message_deep_in_anys_end_the_stream(anys: int) -> None:
    codes = [ord(character) for character in "ssn 123-45-6789 ok"]
    messages = [in_extras(wrappers_pb2.Int64Value(value=code), anys) for code in codes]
    released, reason = hold_stream(messages)
    assert (released, reason) == ([], reasons.STREAM_VALUE_SPLIT)


@pytest.mark.parametrize("anys", [17, 32])
def test_a_keys_lines_deep_in_anys_after_its_begin_marker_end_the_stream(anys: int) -> None:
    begin, *body, end = pem_value(random.Random(3), "RSA PRIVATE KEY", 3).split("\n")
    messages = [Token(text=begin + "\n"), *(nested(line + "\n", anys) for line in body), Token(text=end)]
    released, reason = hold_stream(messages)
    assert reason == reasons.STREAM_VALUE_SPLIT
    assert not any(message.HasField("extra") for message in released)
