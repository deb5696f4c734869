"""What the streams of ``split_values: hold`` routes hold, across a process, and where their
end is read.

- Each stream was bounded by ``limits.max_message_bytes``, nothing counted what they held
  together: 40 streams holding 6.5 MiB of binary each took a gateway from 181 to 970 MiB
  (review). They share ``limits.max_stream_held_bytes`` (``inflight.HeldBytes``): the stream
  whose hold would pass it ends (RESOURCE_EXHAUSTED, ``STREAM_HELD_BYTES_EXHAUSTED``),
  recorded, nothing of what it held released.
- The end of a stream (``SplitValues.flush``) is read in a thread, not on the event loop
  every call of the worker waits on (6 MiB of binary held a health check 9.8 s: review); a
  caller that leaves meanwhile does not wait for it, and the bytes stay counted until it ends.

Bytes and threads are counted, never time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from labelgate.calls import Target
from labelgate.classify.split_values import SplitValues
from labelgate.config import LimitSettings, RouteSettings, UpstreamSettings
from labelgate.errors import LabelgateError, Overloaded
from labelgate.gateway import inflight, metrics, reasons
from labelgate.gateway.routes import Route, RoutedServices, held
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import Upstream
from tests.classify.split_values_proto import TOKENS
from tests.classify.split_values_proto import Token as _Token
from tests.gateway.test_pipeline import make_call, make_pipeline
from tests.gateway.test_routed_leaks import HOLD_METHOD, _Only

# Built at run time: fields mypy cannot see.
Token: Any = _Token
CHUNK = 16 << 10
# Random bytes in chunks (compressed audio): binary, held to the stream's end.
AUDIO = [random.Random(5).randbytes(CHUNK) for _ in range(4)]
TARGET = Target(service="labelgateheld.Tokens")


def splitter() -> SplitValues:
    split: SplitValues = make_pipeline()[0].split_values()
    return split


def data(message: Message) -> bytes:
    return bytes(getattr(message, "data"))  # noqa: B009  # a field built at run time


def holding(chunks: list[bytes]) -> int:
    """What a stream holding ``chunks`` counts against the budget (``SplitValues.held_bytes``)."""
    stream = splitter()
    for chunk in chunks:
        assert stream.hold(Token(data=chunk)) == []
    return stream.held_bytes


def shed(bound: str) -> float:
    return metrics.REQUESTS_SHED.labels(bound)._value.get()


async def test_hold_streams_share_one_budget_and_the_one_past_it_ends() -> None:
    shed_before = shed("stream_held_bytes")
    two = holding(AUDIO[:2])
    budget = inflight.HeldBytes(two + holding(AUDIO[:1]))
    sent, keep_open = asyncio.Event(), asyncio.Event()

    async def first_upstream() -> AsyncIterator[Message]:
        for chunk in AUDIO[:2]:
            yield Token(data=chunk)
        sent.set()
        await keep_open.wait()

    first = held(first_upstream(), splitter(), None, budget)
    waiting = asyncio.ensure_future(anext(first))  # holds both, waits for more
    await sent.wait()
    await asyncio.sleep(0)
    assert budget.in_use == two
    assert metrics.STREAM_HELD_BYTES._value.get() == two

    async def second_upstream() -> AsyncIterator[Message]:
        for chunk in AUDIO:
            yield Token(data=chunk)

    got: list[Message] = []
    with pytest.raises(Overloaded) as refused:
        async for message in held(second_upstream(), splitter(), None, budget):
            got.append(message)
    assert refused.value.reason == reasons.STREAM_HELD_BYTES_EXHAUSTED
    assert got == []  # nothing it held left
    assert budget.in_use == two  # its own share given back, the first's kept
    # Counted where every bound's refusals are (the request budget's are not).
    assert shed("stream_held_bytes") == shed_before + 1
    keep_open.set()
    assert data(await waiting) == AUDIO[0]
    assert [data(message) async for message in first] == AUDIO[1:2]
    assert budget.in_use == 0
    assert metrics.STREAM_HELD_BYTES._value.get() == 0


async def test_the_end_of_a_hold_stream_is_read_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = SplitValues.flush

    def flush(self: SplitValues, *bound: int | None) -> list[Message]:
        threads.append(threading.get_ident())
        return real(self, *bound)

    monkeypatch.setattr(SplitValues, "flush", flush)

    async def upstream() -> AsyncIterator[Message]:
        for chunk in AUDIO:
            yield Token(data=chunk)

    assert [data(message) async for message in held(upstream(), splitter(), 100_000)] == AUDIO
    assert threads and threading.get_ident() not in threads


async def test_a_caller_leaving_while_the_end_is_read_keeps_its_bytes_counted_until_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading, go_on = threading.Event(), threading.Event()
    real = SplitValues.flush

    def slow(self: SplitValues, max_values: int | None = None) -> list[Message]:
        reading.set()
        go_on.wait(10)
        return real(self, max_values)

    monkeypatch.setattr(SplitValues, "flush", slow)
    budget = inflight.HeldBytes(1 << 30)

    async def upstream() -> AsyncIterator[Message]:
        for chunk in AUDIO:
            yield Token(data=chunk)

    stream = held(upstream(), splitter(), 100_000, budget)
    task = asyncio.ensure_future(anext(stream))
    await asyncio.to_thread(reading.wait, 10)
    counted = budget.in_use
    assert counted >= len(AUDIO) * CHUNK
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert budget.in_use == counted  # the thread still holds them
    go_on.set()
    for _ in range(1_000):
        if not budget.in_use:
            break
        await asyncio.sleep(0.01)
    assert budget.in_use == 0


async def _routed(
    limit: int, replies: list[bytes]
) -> tuple[list[Any], grpc.aio.AioRpcError | None, list[Any], int]:
    """A ``hold`` route served by ``RoutedServices`` with ``limits.max_stream_held_bytes``
    ``limit``, its upstream streaming ``replies``: what the caller got, how it ended, the
    records, and what the budget holds once the stream ended."""
    upstream_server = grpc.aio.server()

    async def answer(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for reply in replies:
            yield reply

    upstream_server.add_generic_rpc_handlers(
        [_Only(grpc.unary_stream_rpc_method_handler(answer), HOLD_METHOD)]
    )
    upstream_port = upstream_server.add_insecure_port("127.0.0.1:0")
    await upstream_server.start()
    pipeline, _, _, recorder = make_pipeline()
    pipeline.limits = LimitSettings(max_stream_held_bytes=limit)
    upstream = Upstream(UpstreamSettings(address=f"127.0.0.1:{upstream_port}"), 4 << 20)
    settings = RouteSettings(method_prefix="/labelgateheld.Tokens/", split_values="hold")
    routed = RoutedServices(
        pipeline, [Route(settings, upstream, {HOLD_METHOD: TOKENS.methods_by_name["Stream"]})]
    )
    gateway = grpc.aio.server()
    gateway.add_generic_rpc_handlers([routed])
    gateway_port = gateway.add_insecure_port("127.0.0.1:0")
    await gateway.start()
    got: list[Any] = []
    failed = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            stream = channel.unary_stream(
                HOLD_METHOD, request_serializer=bytes, response_deserializer=Token.FromString
            )
            try:
                async for reply in stream(b"", timeout=10):
                    got.append(reply)
            except grpc.aio.AioRpcError as error:
                failed = error
    finally:
        await gateway.stop(None)
        await upstream_server.stop(None)
        await upstream.close()
    return got, failed, recorder.records, routed.held_bytes.in_use


def test_a_routed_hold_stream_past_the_process_bound_is_refused_and_recorded() -> None:
    replies = [Token(data=chunk).SerializeToString() for chunk in AUDIO]
    got, failed, records, left = asyncio.run(_routed(holding(AUDIO[:3]), replies))
    assert failed is not None and got == []
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "STREAM_HELD_BYTES_EXHAUSTED",
    )
    assert "limits.max_stream_held_bytes" in (failed.details() or "")
    assert (records[-1].refusal, records[-1].status_code) == (
        "STREAM_HELD_BYTES_EXHAUSTED",
        "RESOURCE_EXHAUSTED",
    )
    assert left == 0


def test_a_routed_hold_stream_within_the_bound_flows_and_gives_its_bytes_back() -> None:
    replies = [Token(data=chunk).SerializeToString() for chunk in AUDIO]
    got, failed, _, left = asyncio.run(_routed(holding(AUDIO), replies))
    assert failed is None and [reply.data for reply in got] == AUDIO
    assert left == 0


async def test_a_refusal_by_the_bound_is_recorded_once_through_the_pipeline() -> None:
    pipeline, _, _, recorder = make_pipeline()
    call = make_call("/labelgateheld.Tokens/Stream")
    subject = await pipeline.admit_stream(call, TARGET, contextlib.ExitStack())
    admitted = len(recorder.records)

    async def upstream() -> AsyncIterator[Message]:
        for chunk in AUDIO:
            yield Token(data=chunk)

    budget = inflight.HeldBytes(holding(AUDIO[:1]))
    replies = pipeline.upstream_replies(
        call, subject, TARGET, held(upstream(), pipeline.split_values(), None, budget)
    )
    with pytest.raises(LabelgateError) as ended:
        async for _ in replies:
            pass
    assert ended.value.reason == reasons.STREAM_HELD_BYTES_EXHAUSTED
    assert [record.refusal for record in recorder.records[admitted:]] == ["STREAM_HELD_BYTES_EXHAUSTED"]
    assert budget.in_use == 0
