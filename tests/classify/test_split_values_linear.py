"""Routed hold streams: a key block's lines on a path are not cut again on every message
(review s15 rev-cpu, finding 2): the block's match runs to the end of the path's text, so its
cut stayed at the BEGIN marker and the whole text was read again per message (4 MiB: 52 s).
What the cut reads is counted (no timing); what leaves is compared with a cut read again
whenever a path's text changed."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from labelgate.classify import credentials
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError

MESSAGES = 300
LINE = ("MIIEabcd" * 25)[:199] + "\n"
MARKERS = {
    "PEM": ("-----BEGIN RSA PRIVATE KEY-----\n", "-----END RSA PRIVATE KEY-----"),
    "OPENSSH": ("-----BEGIN OPENSSH PRIVATE KEY-----\n", "-----END OPENSSH PRIVATE KEY-----"),
    "SSH2": ("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n", "---- END SSH2 ENCRYPTED PRIVATE KEY ----"),
}


def counted(monkeypatch: pytest.MonkeyPatch, carry: CarryOver) -> list[int]:
    """Bytes of path text the cut reads: each call of what reads all of it counts its length."""
    reads: list[int] = []
    for name in ("_cuttable", "_cut"):
        method = getattr(carry, name)

        def counting(text: bytes, method=method) -> object:  # type: ignore[no-untyped-def]
            reads.append(len(text))
            return method(text)

        monkeypatch.setattr(carry, name, counting)
    open_block = getattr(credentials, "open_block", None)
    if open_block is not None:

        def blocks(text: bytes) -> object:
            reads.append(len(text))
            return open_block(text)

        monkeypatch.setattr(credentials, "open_block", blocks)
    return reads


def outcome(splitter: SplitValues, messages: Sequence[Message]) -> list[object]:
    """What leaves after each message and at the end, or the reason the stream ended."""
    out: list[object] = []
    try:
        for message in messages:
            out.append([m.SerializeToString(deterministic=True) for m in splitter.hold(message)])
        out.append([m.SerializeToString(deterministic=True) for m in splitter.flush()])
    except LabelgateError as error:
        out.append(error.reason)
    return out


@pytest.mark.parametrize("kind", list(MARKERS))
@pytest.mark.parametrize("before", ["", "the key you asked for: "])
def test_a_key_block_s_lines_are_not_cut_again_on_every_message(
    kind: str, before: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    begin, _ = MARKERS[kind]
    carry = CarryOver(DetectorSet.default(), window=256)
    reads = counted(monkeypatch, carry)
    splitter = SplitValues(DetectorSet.default(), carry.cut_point)
    pieces = [before + begin, *[LINE] * MESSAGES]
    for piece in pieces:
        assert splitter.hold(wrappers_pb2.StringValue(value=piece)) == []
    assert sum(reads) <= 4 * sum(map(len, pieces)), "the path's text is cut once the block holds its cut"
    with pytest.raises(LabelgateError) as refused:
        splitter.flush()
    assert refused.value.reason == "STREAM_VALUE_SPLIT"  # the lines were never going out


@pytest.mark.parametrize("kind", list(MARKERS))
@pytest.mark.parametrize("split", [0, 9, 20])
def test_the_end_marker_moves_the_cut_again_wherever_the_messages_split_it(kind: str, split: int) -> None:
    """An END marker whole in a message, or begun in one and ended in the next, is read."""
    begin, end = MARKERS[kind]
    closing = (
        ["\n" + end + " and then prose " + "z" * 300]
        if not split
        else ["\n" + end[:split], end[split:] + " ok"]
    )
    messages = [wrappers_pb2.StringValue(value=p) for p in ["x" * 300 + begin, *[LINE] * 5, *closing]]
    carry = CarryOver(DetectorSet.default(), window=256)
    fast = outcome(SplitValues(DetectorSet.default(), carry.cut_point), messages)
    again = outcome(SplitValues(DetectorSet.default(), lambda text: carry.cut_point(text)), messages)
    assert fast == again
    assert fast[-1] == "STREAM_VALUE_SPLIT"  # the lines went apart from their marker


# What the random streams are made of: mostly a key's lines and markers (whole and split),
# now and then text a raw scan cannot judge, a run, a brace.
FRAGMENTS = [
    *["MIIEabcd" * 8, "MIIEabcd" * 8, "MIIEabcd" * 8, "\n", "x" * 40] * 3,
    *["-----BEGIN RSA PRIVATE KEY-----\n", "-----END RSA PRIVATE KEY-----"] * 2,
    "-----BEGIN ",
    "RSA PRI",
    "VATE KEY-----",
    "-----END RSA PRI",
    "-----",
    " ",
    "}",
    "4111 ",
    "1111",
    "ann@",
    "eyJ",
    "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
    "---- END SSH2 ENCRYPTED PRIVATE KEY ----",
]
RARE = ["\\", "é", "1<", "&#52;"]


def test_what_leaves_is_what_left_when_every_changed_path_was_cut_again() -> None:
    """Random streams over one to three paths: the same messages leave at the same points, and
    the same streams end, as with a cut read again whenever a path's text changed (a cut that
    is not the carry-over's own method: no shortcut applies to it)."""
    rng = random.Random(15)
    detectors = DetectorSet.default()
    for _ in range(200):
        keys = rng.choice([["a"], ["a", "b"], ["a", "b", "c"]])
        messages = []
        for _ in range(rng.randint(1, 50)):
            message = struct_pb2.Struct()
            for key in keys:
                if rng.random() < 0.7:
                    message.fields[key].string_value = "".join(
                        rng.choice(RARE if rng.random() < 0.01 else FRAGMENTS)
                        for _ in range(rng.randint(0, 5))
                    )
            messages.append(message)
        carry = CarryOver(detectors, rng.choice([16, 64, 256]))
        fast = outcome(SplitValues(detectors, carry.cut_point), messages)

        def again_cut(text: bytes, carry: CarryOver = carry) -> int | None:
            return carry.cut_point(text)

        again = outcome(SplitValues(detectors, again_cut), messages)
        assert fast == again, [dict((k, v.string_value) for k, v in m.fields.items()) for m in messages]
