"""A routed token stream (``split_values: hold``) with a PEM key whose BEGIN marker is in one
message's field and whose lines are in later messages' other fields: each message is
classified on its own, and the lines' messages showed no marker, so they reached a caller
who may not see ``restricted`` in clear. The stream now ends (``STREAM_VALUE_SPLIT``) before
any of them leaves, as it does for a key split across one field's messages."""

from __future__ import annotations

import random

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import UpstreamError
from tests.classify.secret_values import pem_value
from tests.classify.split_values_proto import Note, Token

DETECTORS = DetectorSet.default()
_LINES = pem_value(random.Random(7), "RSA PRIVATE KEY", 4).split("\n")
BEGIN, BODY, END = _LINES[0], _LINES[1:-1], _LINES[-1]


def msg(**fields: str) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    for name, value in fields.items():
        message.fields[name].string_value = value
    return message


def stream(messages: list[struct_pb2.Struct], detectors: DetectorSet = DETECTORS) -> list[Message]:
    carry = CarryOver(detectors, 256)
    splitter = SplitValues(detectors, carry.cut_point)
    released = []
    for message in messages:
        released += splitter.hold(message)
    return released + splitter.flush()


SPLIT = {
    "lines in another field, END in the first": [
        msg(a=BEGIN + "\n"),
        *(msg(b=body + "\n") for body in BODY),
        msg(a=END),
    ],
    "lines in another field, no END": [msg(a=BEGIN + "\n"), *(msg(b=body + "\n") for body in BODY)],
    "BEGIN beside other text": [msg(a=BEGIN + "\n", b="x"), *(msg(b=body + "\n") for body in BODY)],
    "escaped BEGIN": [msg(a=BEGIN.replace("-", "\\u002d") + "\n"), *(msg(b=body + "\n") for body in BODY)],
    "lines beside the END marker": [msg(a=BEGIN + "\n"), msg(a=END, b="\n".join(BODY))],
}


@pytest.mark.parametrize("name", SPLIT)
def test_a_key_whose_lines_follow_in_other_fields_ends_the_stream(name: str) -> None:
    with pytest.raises(UpstreamError) as refused:
        stream(SPLIT[name])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT


def test_a_block_closed_in_its_message_or_by_the_next_leaves_the_stream_alone() -> None:
    key = "\n".join(_LINES)
    messages = [msg(a="hi"), msg(a=key, b="x"), msg(b="after")]
    assert stream(messages) == messages
    # BEGIN and lines in one message, the END marker alone in the next (blank besides).
    messages = [msg(a=BEGIN + "\n" + "\n".join(BODY) + "\n"), msg(a=END, b=" "), msg(b="later")]
    assert stream(messages) == messages


def test_without_the_secret_detector_nothing_is_followed() -> None:
    detectors = DetectorSet.default().besides(frozenset({"restricted"}))
    messages = [msg(a=BEGIN + "\n"), *(msg(b=body + "\n") for body in BODY)]
    assert stream(messages, detectors) == messages


def _token(**fields: object) -> Message:
    """A ``Token`` (``split_values_proto``); ``extra``, ``extra_data`` and ``anys`` pack a Note
    with that text (or data)."""
    token = Token()
    for name, value in fields.items():
        if name == "extra":
            token.extra.Pack(Note(text=value))
        elif name == "extra_data":
            token.extra.Pack(Note(data=value))
        elif name == "anys":
            token.anys["k"].Pack(Note(text=value))
        elif name == "chunks":
            token.chunks.append(value)
        elif name == "blobs":
            token.blobs["k"] = value
        else:
            setattr(token, name, value)
    return token


_LINE = BODY[0] + "\n"
BEYOND_STRINGS = {
    # Review s15 rev-routed-fuzz, finding 2: the key's lines in a bytes field of a later
    # message left, the bytes never read while the block was open.
    "lines in a bytes field": [_token(text=BEGIN + "\n"), _token(data=_LINE.encode()), _token(text=END)],
    "lines in repeated bytes": [_token(text=BEGIN + "\n"), _token(chunks=_LINE.encode())],
    "lines in a map's bytes value": [_token(text=BEGIN + "\n"), _token(blobs=_LINE.encode())],
    "lines in an Any": [_token(text=BEGIN + "\n"), _token(extra=_LINE), _token(text=END)],
    "lines in a map of Any": [_token(text=BEGIN + "\n"), _token(anys=_LINE)],
    "lines in an Any's bytes": [_token(text=BEGIN + "\n"), _token(extra_data=_LINE.encode())],
    "BEGIN in a bytes field": [_token(data=(BEGIN + "\n").encode()), _token(text=_LINE)],
    "BEGIN in an Any": [_token(extra=BEGIN + "\n"), _token(text=_LINE)],
}


@pytest.mark.parametrize("name", BEYOND_STRINGS)
def test_a_key_whose_lines_or_marker_are_beyond_string_fields_ends_the_stream(name: str) -> None:
    with pytest.raises(UpstreamError) as refused:
        stream(BEYOND_STRINGS[name])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT


def test_a_block_closed_by_a_bytes_field_or_an_any_leaves_the_stream_alone() -> None:
    messages = [
        _token(text=BEGIN + "\n" + "\n".join(BODY) + "\n"),
        _token(data=END.encode()),
        _token(data=b"x"),
    ]
    assert stream(messages) == messages
    messages = [_token(text=BEGIN + "\n" + "\n".join(BODY) + "\n"), _token(extra=END), _token(extra="after")]
    assert stream(messages) == messages
