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
