"""``ModelStreamInfer`` toward a REST upstream (``gateway/rest_streams.py``), with a scripted
``infer`` in place of the REST calls."""

from __future__ import annotations

import asyncio
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
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
