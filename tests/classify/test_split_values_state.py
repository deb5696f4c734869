"""Routed server streams: what a held stream keeps per path is bounded and read only when it
changed (review s13 rev-streams-mem, findings 1 and 4)."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError


def fresh_key(index: int, value: str = "x") -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.fields[f"k{index}"].string_value = value
    return message


def test_what_each_path_keeps_counts_toward_the_hold_limit() -> None:
    """Tiny messages each naming a new path, behind text that cannot be cut: the paths'
    state, not only the messages' bytes, reaches the limit (they grew paths x messages)."""
    splitter = SplitValues(DetectorSet(), lambda text: None, hold_limit=100_000, max_paths=1_000_000)
    splitter.hold(wrappers_pb2.StringValue(value="é"))
    with pytest.raises(LabelgateError) as refused:
        for index in range(1000):  # about 12 KB of messages
            assert splitter.hold(fresh_key(index)) == []
    assert refused.value.reason == "STREAM_HELD_TOO_LARGE"


def test_a_stream_holding_more_paths_than_the_bound_is_refused() -> None:
    # Eight keys' values, and the map's keys followed at one path of their own (fields{keys}).
    splitter = SplitValues(DetectorSet(), lambda text: None, max_paths=9)
    for index in range(8):
        splitter.hold(fresh_key(index))
    with pytest.raises(LabelgateError) as refused:
        splitter.hold(fresh_key(8))
    assert refused.value.reason == "STREAM_HELD_TOO_LARGE"
    assert "limits.max_fields" in refused.value.message


def test_paths_whose_text_did_not_change_are_not_cut_again() -> None:
    calls: list[int] = []

    def cut(text: bytes) -> int | None:
        calls.append(len(text))
        return None if not text.isascii() else max(0, len(text) - 8)

    splitter = SplitValues(DetectorSet(), cut, max_paths=1000)
    splitter.hold(wrappers_pb2.StringValue(value="é"))
    for index in range(300):
        splitter.hold(fresh_key(index))
    assert len(calls) <= 300, "one cut per message at most, not one per path and message"
    assert len(splitter.flush()) == 301


class CountingCarry(CarryOver):
    def __init__(self) -> None:
        super().__init__(DetectorSet.default(), window=64)
        self.read = 0

    def cut_point(self, text: bytes) -> int | None:
        self.read += len(text)
        return super().cut_point(text)


@pytest.mark.parametrize("run", ["1234567890", "bbbbbbbbbb", "AKIAABCDEF"])
def test_a_run_its_own_bytes_extend_is_not_cut_again(run: str) -> None:
    carry = CountingCarry()
    splitter = SplitValues(carry.detectors, carry.cut_point)
    opening = {"1": "total: 1", "b": "mail: a@b", "A": "key: AKIA"}[run[0]]
    sent = [opening, *[run] * 400, " end " + "z" * 100]
    released = [m.value for piece in sent for m in splitter.hold(wrappers_pb2.StringValue(value=piece))]
    released += [m.value for m in splitter.flush()]
    assert released == sent
    assert carry.read < 20 * len("".join(sent)), "held text is not read again for every message"


def test_tiny_messages_count_what_holding_them_costs() -> None:
    """A parsed message costs far more than its few serialized bytes: a stream of tiny
    messages held to its end reaches the limit long before its bytes would."""
    splitter = SplitValues(DetectorSet(), lambda text: None, hold_limit=100_000)
    with pytest.raises(LabelgateError) as refused:
        for _ in range(1000):  # about 10 KB serialized
            splitter.hold(wrappers_pb2.StringValue(value="é"))
    assert refused.value.reason == "STREAM_HELD_TOO_LARGE"
