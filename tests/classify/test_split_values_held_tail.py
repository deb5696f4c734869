"""A value that reaches from a released message into one still held: the later message's long
tail moves the cut past the value, so the first message may leave while the second is held,
and reading only the pieces released together never joined the two (``_released_pieces``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import wrappers_pb2

from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError
from tests.classify.test_split_values import stream, window_cut

# The gateway's default carry window (``limits.stream_carry_bytes``): a tail longer than it
# moves the carry-over's cut past the value.
GATEWAY_WINDOW = 256
TAILS = ["z " * 300, " " * 300, "7" * 300, ".,;:!?-/" * 40]
# A plain SSN the detector takes (123-45-6789 too: its context rules refuse neither).
VALUES = ["212-55-4462", "123-45-6789"]


def released_before_refusal(
    pieces: list[str], cut: Callable[[bytes], int | None]
) -> tuple[list[str], str | None]:
    """What leaves before the stream ends, and the reason it ended with (None: it did not)."""
    splitter = SplitValues(DetectorSet(), cut)
    released: list[str] = []
    try:
        for piece in pieces:
            released += [m.value for m in splitter.hold(wrappers_pb2.StringValue(value=piece))]
        released += [m.value for m in splitter.flush()]
    except LabelgateError as error:
        return released, error.reason
    return released, None


def cuts() -> list[Callable[[bytes], int | None]]:
    return [window_cut, CarryOver(DetectorSet(), GATEWAY_WINDOW).cut_point]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("tail", TAILS, ids=["letters", "spaces", "digits", "punctuation"])
def test_a_value_reaching_into_a_held_message_ends_the_stream_before_either_leaves(
    value: str, tail: str
) -> None:
    for cut in cuts():
        for at in range(1, len(value)):
            pieces = ["x " + value[:at], value[at:] + " " + tail]
            released, reason = released_before_refusal(pieces, cut)
            assert (released, reason) == ([], "STREAM_VALUE_SPLIT"), at


@pytest.mark.parametrize("value", VALUES)
def test_so_does_one_split_across_three_messages_the_last_with_a_long_tail(value: str) -> None:
    for cut in cuts():
        for first in range(1, len(value) - 1):
            for second in range(first + 1, len(value)):
                pieces = ["x " + value[:first], value[first:second], value[second:] + " " + "z " * 300]
                released, reason = released_before_refusal(pieces, cut)
                assert (released, reason) == ([], "STREAM_VALUE_SPLIT"), (first, second)


def test_a_whole_value_before_a_long_tail_is_left_to_its_messages_classification() -> None:
    """Held pieces read with the released ones make no value of a value one piece holds whole,
    nor of numbers side by side that join into none."""
    carry = CarryOver(DetectorSet(), GATEWAY_WINDOW).cut_point
    for pieces in (
        ["ssn ", "212-55-4462 " + "z " * 300, "bye"],
        ["ssn 212-55-4462", " and " + "z " * 300, "bye"],
        ["token 4121 ", "7 " * 300, "bye"],
    ):
        assert stream(pieces, carry) == pieces
