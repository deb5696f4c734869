"""What a routed token stream's release reads across its messages (``SplitValues._release``)
is bounded by ``limits.max_message_values``, counted as a reply's classification counts
text (``messages.MessageValues``). Binary (audio chunks) is held to the stream's end, and
its end read every held byte in every reading, joined and piece by piece, and again for a
PEM block running on (``_follow_keys``): 6 MiB took 10 s of the event loop, no bound in
sight (review). Past the bound the stream ends (``MESSAGE_TOO_MANY_VALUES``), nothing of
what it held released; a path's joined text is weighed before any of it is read. These
tests count work (values, calls), never time."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.message import Message

from labelgate.classify import key_blocks, split_values
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.messages import MESSAGE_TOO_MANY_VALUES, MessageValues
from labelgate.classify.split_values import SplitValues
from labelgate.errors import UpstreamError
from labelgate.gateway.routes import held
from tests.classify.split_values_proto import Token as _Token

DETECTORS = DetectorSet.default()
# Built at run time: fields mypy cannot see.
Token: Any = _Token
CHUNK = 16 << 10
# Random bytes in chunks (compressed audio): binary, held to the stream's end.
AUDIO = [random.Random(7).randbytes(CHUNK) for _ in range(4)]


def splitter() -> SplitValues:
    return SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)


def weighed(text: bytes) -> int:
    """What ``text`` takes of a reply's values when it is scanned (``MessageValues.take_text``)."""
    values = MessageValues(1 << 40)
    values.take_text(text)
    return (1 << 40) - (values.left or 0)


async def through_held(messages: list[Message], max_values: int) -> tuple[list[Message], Exception | None]:
    """What a hold route lets out of ``messages`` (``routes.held``), and how it ended."""

    async def upstream() -> AsyncIterator[Message]:
        for message in messages:
            yield message

    got: list[Message] = []
    try:
        async for message in held(upstream(), splitter(), max_values):
            got.append(message)
    except UpstreamError as error:
        return got, error
    return got, None


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes each ``straddled`` call read across messages."""
    read: list[int] = []
    real = split_values.straddled

    def counting(detectors: DetectorSet, pieces: list[bytes]) -> str | None:
        read.append(sum(map(len, pieces)))
        return real(detectors, pieces)

    monkeypatch.setattr(split_values, "straddled", counting)
    return read


async def test_binary_held_to_the_end_past_the_bound_is_refused_before_it_is_read(reads: list[int]) -> None:
    joined = weighed(b"".join(AUDIO))
    assert joined > 2_000  # four times its bytes over 128: read again decoded and folded
    # Each message alone is far below the bound: its own walk counts two values.
    got, ended = await through_held([Token(data=chunk) for chunk in AUDIO], joined)
    assert got == []
    assert isinstance(ended, UpstreamError) and ended.reason == MESSAGE_TOO_MANY_VALUES
    assert reads == []  # weighed first: not one reading of it was made


async def test_binary_within_the_bound_leaves_whole_and_in_order(reads: list[int]) -> None:
    messages = [Token(data=chunk) for chunk in AUDIO]
    got, ended = await through_held(messages, 100_000)
    assert ended is None and got == messages
    assert reads == [len(AUDIO) * CHUNK]


async def test_the_texts_a_key_block_may_run_on_into_count_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk on a path of its own (a map's keys): no path's pieces are read joined, but
    every text of a message whose text may spell a marker is read in every form for one
    (``_follow_keys``): counted before it is read."""
    read: list[bytes] = []
    real = key_blocks.awaited_after

    def counting(text: bytes) -> frozenset[bytes]:
        read.append(text)
        return real(text)

    monkeypatch.setattr(key_blocks, "awaited_after", counting)
    messages = [Token(blobs={f"k{index}": chunk}) for index, chunk in enumerate(AUDIO)]
    each = weighed(AUDIO[0])
    got, ended = await through_held(messages, 2 * each)
    assert got == [] and isinstance(ended, UpstreamError) and ended.reason == MESSAGE_TOO_MANY_VALUES
    assert len(read) < len(AUDIO)  # refused before the rest was read
    read.clear()
    got, ended = await through_held(messages, 100_000)
    assert ended is None and got == messages and read == AUDIO


def test_detections_the_reading_across_messages_finds_count_too() -> None:
    """A path dense with values (each found in every reading, joined and piece by piece):
    each detection counts, as a reply's scan counts it, before it is looked at."""
    pieces = [("ssn 123-45-6789 " * 200).encode() for _ in range(2)]
    stream = SplitValues(DETECTORS, lambda text: None)  # nothing cut: held to the end
    for piece in pieces:
        assert stream.hold(Token(data=piece), 1_000) == []
    text_only = weighed(b"".join(pieces)) + len(pieces)
    with pytest.raises(UpstreamError) as refused:
        stream.flush(text_only + 100)
    assert refused.value.reason == MESSAGE_TOO_MANY_VALUES
    assert len(stream.flush(100_000)) == 2  # nothing was released by the refusal


def test_without_a_bound_the_end_reads_everything() -> None:
    stream = splitter()
    for chunk in AUDIO:
        assert stream.hold(Token(data=chunk)) == []
    assert stream.flush() == [Token(data=chunk) for chunk in AUDIO]
