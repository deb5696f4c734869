"""Routed token streams (``split_values: hold``): a right-to-left letter or a bidi control in
one message and the characters it reorders in a later one (``display_context``; the residual
of ``docs/THREAT-MODEL.md``: "``ssn \\u202eא`` then ``9876-54-321`` as Int64Value messages ...
goes out"). A client joining the messages shows them in display order; what left before the
stream ended, joined, must show no value the classifier finds in any order (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError
from tests.classify.test_carryover_display_order import (
    ALEF,
    HEBREW,
    RLO,
    STREAMS,
    labels_of,
    shows,
    streams_hiding_values,
)
from tests.classify.test_split_values_integers import Tok

WINDOW = 64


def released_before_refusal(messages: list[Message]) -> tuple[list[Any], str]:
    """What left, and the reason the stream ended (empty: it did not)."""
    detectors = DetectorSet()
    split = SplitValues(detectors, CarryOver(detectors, WINDOW).cut_point)
    released: list[Any] = []
    try:
        for message in messages:
            released += split.hold(message)
        released += split.flush()
    except LabelgateError as error:
        return released, error.reason
    return released, ""


def as_messages(form: str, pieces: list[str]) -> list[Message]:
    if form == "Int64Value, a code point each":
        return [wrappers_pb2.Int64Value(value=ord(char)) for piece in pieces for char in piece]
    if form == "repeated int32":
        return [Tok(codes=[ord(char) for char in piece]) for piece in pieces]
    return [wrappers_pb2.StringValue(value=piece) for piece in pieces]


def shown(form: str, released: list[Any]) -> str:
    if form == "Int64Value, a code point each":
        return "".join(chr(message.value) for message in released)
    if form == "repeated int32":
        return "".join(chr(code) for message in released for code in message.codes)
    return "".join(message.value for message in released)


FORMS = ["Int64Value, a code point each", "repeated int32", "StringValue"]
ROUTED = {
    **STREAMS,
    # Released as ASCII before the letter came (a message leaves once the cut is past it).
    "released groups, then text, then a letter": (["6789 45 123 ", "hello world " * 10, ALEF], "us_ssn"),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stream", ROUTED)
def test_a_value_only_the_joined_display_order_shows_does_not_leave(stream: str, form: str) -> None:
    pieces, detector = ROUTED[stream]
    assert shows("".join(pieces), detector)
    released, reason = released_before_refusal(as_messages(form, pieces))
    got = shown(form, released)
    assert not shows(got, detector), (got, reason)
    assert reason in ("", "STREAM_VALUE_SPLIT")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "pieces",
    [
        [f"שלום {ALEF} ", "עולם 12 34 ", "ok"],
        [f"note {RLO}olleh\u202c ", f"{ALEF} 12 34 ", "done"],
        [HEBREW, "and then words", " and more words"],
    ],
)
def test_text_without_a_value_shown_by_its_joining_leaves_whole(form: str, pieces: list[str]) -> None:
    released, reason = released_before_refusal(as_messages(form, pieces))
    assert reason == ""
    assert shown(form, released) == "".join(pieces)


@pytest.mark.parametrize("form", ["repeated int32", "StringValue"])
def test_values_only_display_orders_show_never_leave_wherever_they_are_cut(form: str) -> None:
    for pieces, alone in streams_hiding_values(2027, 60):
        released, reason = released_before_refusal(as_messages(form, pieces))
        assert not labels_of(shown(form, released)) - alone, (pieces, reason)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("filler", ["!" * 80, "?" * 300])
def test_an_earlier_copy_of_the_value_does_not_let_one_only_the_joining_shows_leave(
    form: str, filler: str
) -> None:
    """The first message shows the value on its own (masked by its own classification); the
    copy after it only in the right-to-left reading a letter later turns on."""
    first = "123 45 6789 " + filler
    pieces = [first, "6789 45 123!" + filler, ALEF, " ok"]
    released, reason = released_before_refusal(as_messages(form, pieces))
    got = shown(form, released)
    assert not shows(got[len(first) :], "us_ssn"), (got, reason)
    assert reason in ("", "STREAM_VALUE_SPLIT")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("hidden", ["\u200b", "\u00ad\u0301", "\u3164"])
def test_characters_that_show_as_nothing_do_not_push_a_value_out_of_what_is_kept(
    form: str, hidden: str
) -> None:
    run = hidden * (1000 // len(hidden))
    pieces = ["card 4111 1111" + run + " " + "\u05d0\u05d1\u05d2 " * 3, "1111 1111", " ok"]
    released, reason = released_before_refusal(as_messages(form, pieces))
    assert not shows(shown(form, released), "credit_card"), reason
    assert reason in ("", "STREAM_VALUE_SPLIT")
