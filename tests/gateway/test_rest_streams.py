"""``ModelStreamInfer`` toward a REST upstream (``gateway/rest_streams.py``), with a scripted
``infer`` in place of the REST calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import Overloaded
from labelgate.gateway import inflight
from labelgate.gateway.rest_streams import MAX_OUTSTANDING, RestStream


class HeldCalls:
    """An ``infer`` whose calls wait until ``answer`` is set; counts the calls started."""

    def __init__(self) -> None:
        self.started = 0
        self.answer = asyncio.Event()

    async def __call__(self, request: pb.ModelInferRequest, **_: Any) -> pb.ModelInferResponse:
        self.started += 1
        await self.answer.wait()
        return pb.ModelInferResponse(model_name=request.model_name)


async def test_a_caller_writing_faster_than_replies_are_read_waits() -> None:
    """Each write started a REST call at once and each reply was queued, however many the
    caller wrote and whether or not it read them: a caller could start any number of upstream
    calls. Past ``MAX_OUTSTANDING`` unread requests, the next write waits for a reply to be read."""
    calls = HeldCalls()
    stream = RestStream(calls, metadata=(), timeout=60)
    written = 0

    async def write_all() -> None:
        nonlocal written
        for number in range(MAX_OUTSTANDING + 8):
            await stream.write(pb.ModelInferRequest(model_name="m", id=str(number)))
            written += 1
        await stream.done_writing()

    writer = asyncio.create_task(write_all())
    for _ in range(100):  # the writer runs until it must wait
        await asyncio.sleep(0)
    assert written == MAX_OUTSTANDING and calls.started == MAX_OUTSTANDING
    calls.answer.set()
    replies = [reply async for reply in stream]
    await writer
    assert len(replies) == MAX_OUTSTANDING + 8 and calls.started == MAX_OUTSTANDING + 8


async def test_each_request_in_flight_holds_its_own_bytes_until_its_call_ends() -> None:
    """The stream's lease holds only its latest message (``inflight.message_read``): the
    requests in flight at the REST upstream were counted nowhere (four streams held 112 MiB
    at a stalled upstream while the gauge read 3.5 MiB). Past the budget the stream ends."""
    calls = HeldCalls()
    budget = inflight.RequestBytes(10_000)
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"x" * 3000])
    size = request.ByteSize()
    with budget.call():
        stream = RestStream(calls, metadata=(), timeout=60)
        await stream.write(request)
        await stream.write(request)
        assert budget.in_use == 2 * size
        with pytest.raises(Overloaded):
            for _ in range(2):
                await stream.write(request)
        assert budget.in_use == 3 * size
        calls.answer.set()
        await stream.done_writing()
        replies = [reply async for reply in stream]
        assert len(replies) == 3
        for _ in range(10):  # each call's task ends a turn or two after its reply is queued
            await asyncio.sleep(0)
        assert budget.in_use == 0
        stream.cancel()


async def test_a_call_cancelled_before_it_started_gives_its_bytes_back() -> None:
    calls = HeldCalls()
    budget = inflight.RequestBytes(10_000)
    with budget.call():
        stream = RestStream(calls, metadata=(), timeout=60)
        await stream.write(pb.ModelInferRequest(model_name="m", id="x" * 3000))
        stream.cancel()  # in the same turn: the call's task never ran
        for _ in range(10):
            await asyncio.sleep(0)
        assert budget.in_use == 0


class LargeReplies:
    """An ``infer`` answering each request at once with ``size`` bytes of output."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def __call__(self, request: pb.ModelInferRequest, **_: Any) -> pb.ModelInferResponse:
        return pb.ModelInferResponse(model_name=request.model_name, raw_output_contents=[b"\0" * self.size])


async def unread_replies(count: int) -> RestStream:
    """A stream (in the current call's budget) with ``count`` requests written, each answered
    with 100,000 bytes, none read yet."""
    stream = RestStream(LargeReplies(100_000), metadata=(), timeout=60)
    for number in range(count):
        await stream.write(pb.ModelInferRequest(model_name="m", id=str(number)))
    for _ in range(20):  # each call's task queues its reply a turn or two after it starts
        await asyncio.sleep(0)
    return stream


async def test_replies_not_yet_read_hold_their_bytes_until_read() -> None:
    """A caller who wrote and never read held up to ``MAX_OUTSTANDING`` whole replies a
    stream, counted nowhere (review: +292 MiB for 40 requests to a model with 4 MiB outputs,
    the gauge at 7 bytes). Each queued reply now holds its bytes until it is read."""
    budget = inflight.RequestBytes(10_000_000)
    with budget.call():
        stream = await unread_replies(5)
        assert budget.in_use >= 5 * 100_000
        await stream.done_writing()
        replies = [reply async for reply in stream]
        assert len(replies) == 5 and budget.in_use == 0
        stream.cancel()


async def test_a_reply_past_the_budget_ends_the_stream_and_unread_ones_give_bytes_back() -> None:
    budget = inflight.RequestBytes(250_000)
    with budget.call():
        stream = await unread_replies(3)
        assert 200_000 <= budget.in_use <= 250_000  # two replies held, the third refused
        with pytest.raises(Overloaded):
            async for _ in stream:
                pass
        stream.cancel()
        assert budget.in_use == 0
