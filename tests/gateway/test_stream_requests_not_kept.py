"""A stream's requests are referred to no longer than the stream works on them: the gateway's
cyclic collector runs rarely (``gateway/heap.py``), so a request kept in a reference cycle
stays until it does, and a request kept by something the stream keeps stays for the stream's
whole life, counted by no bound.

Found by review on a real gateway: each ModelStreamInfer's first request was kept as long as
its upstream call lived (the raw message was the call's noted request in the context every
task of that call copies, ``approvals.deadline``), while ``request_bytes_in_flight`` counted
only the message read last (100 streams of one allowed 15 MiB message: 191 -> 1,895 MiB,
~650 KB counted); and every stream's last message was left in a cycle (grpc's request
iterator, the noted-request wrapper suspended at it, the handler's closures, the refusal's
traceback): one caller refusing one 15 MiB message at a time grew the gateway 15.6 MiB a
stream (283 streams: 4.6 GiB, nothing counted), routed client streams the same.

These run in process with the collector off, so what is found is what only a collection would
free."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.gateway import metrics
from tests.gateway.test_routed_request_bounds import (
    DEFAULT_MAX_VALUES,
    bytes_kept,
    empty_kids,
    nesting_upstream,
    none_kept_once_the_calls_end,
    refused,
    route,
)
from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc

SERVICE = "inference.GRPCInferenceService"
STREAM_INFER = f"/{SERVICE}/ModelStreamInfer"
Metadata = tuple[tuple[str, str], ...]


def analyst() -> Metadata:
    return token("ann", "analysts")


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cyclic collector off for the block (as rare as the gateway makes it), as it was after."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@contextlib.asynccontextmanager
async def echoing_upstream() -> AsyncIterator[str]:
    """A ModelStreamInfer upstream answering each request at once under its id; it keeps
    nothing of what it read."""

    async def stream_infer(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for body in requests:
            request = pb.ModelInferRequest.FromString(body)
            reply = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            output = reply.outputs.add(name="customer_id", datatype="INT64", shape=[1])
            output.contents.int64_contents.append(7)
            yield pb.ModelStreamInferResponse(infer_response=reply).SerializeToString()

    handlers: dict[str, Any] = {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream_infer)}
    async with serving_grpc(SERVICE, handlers) as (address, _):
        yield address


def infer_request(padding: int, output: str = "customer_id") -> bytes:
    """A request of customer-profile naming ``output``, ``padding`` bytes of text besides."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="customer_id", datatype="INT64", shape=[1]).contents.int64_contents.append(1)
    request.outputs.add(name=output)
    if padding:
        request.parameters["pad"].string_param = "x" * padding
    return request.SerializeToString()


async def stream_of(
    channel: grpc.aio.Channel, body: bytes, metadata: Metadata, *, stay_open: bool
) -> tuple[str, int]:
    """``body`` as a ModelStreamInfer's one message: the stream's status and its replies.
    ``stay_open``: the caller does not end its side (the gateway ends the stream)."""
    ended = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        yield body
        if stay_open:
            await ended.wait()

    open_stream: Any = channel.stream_stream(STREAM_INFER)
    stream = open_stream(requests(), metadata=metadata, timeout=30)
    try:
        replies = [reply async for reply in stream]
    except grpc.aio.AioRpcError as error:
        return error.code().name, 0
    finally:
        ended.set()
    return "OK", len(replies)


async def test_a_streams_first_request_is_not_kept_while_the_stream_goes_on() -> None:
    """Once a stream read its next message, nothing refers to the first one: its bytes are
    no longer counted (the lease holds the message read last), so nothing may keep them. The
    upstream call opened while the first was admitted kept it for as long as it lived."""
    first = infer_request(2 * 1_000_117)  # a size nothing else has
    async with (
        echoing_upstream() as upstream,
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        assert await stream_of(channel, infer_request(1), analyst(), stay_open=False) == ("OK", 1)
        with collector_off():
            following: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def requests() -> AsyncIterator[bytes]:
                yield first
                while (request := await following.get()) is not None:
                    yield request

            open_stream: Any = channel.stream_stream(STREAM_INFER)
            stream = open_stream(requests(), metadata=analyst(), timeout=60)
            replies = aiter(stream)
            await anext(replies)
            await following.put(infer_request(0))
            await anext(replies)  # the second message was read, admitted and answered
            await none_kept_while_the_stream_is_open(len(first), first)
            await following.put(None)
            assert [reply async for reply in replies] == []
            assert await stream.code() == grpc.StatusCode.OK


async def none_kept_while_the_stream_is_open(size: int, *apart: bytes) -> None:
    """No ``bytes`` of ``size`` is referred to (``bytes_kept``); a kept one stays kept, so
    this waits up to 20 s for the count to fall and fails if it never does."""
    for _ in range(400):
        if bytes_kept(size, *apart) == 0:
            return
        await asyncio.sleep(0.05)
    assert bytes_kept(size, *apart) == 0


STREAM_ENDS = {
    # Refused by its wire bounds once read (TOO_MANY_INPUTS), before it is parsed.
    "too_many_inputs": (b"\x2a\x00" * 1_000_211, "INVALID_ARGUMENT", 0),
    # More values than limits.max_message_values, found by a walk in the caller's lane.
    "too_many_values": (b"\x22\x00" * (DEFAULT_MAX_VALUES + 54_321), "INVALID_ARGUMENT", 0),
    # Parsed and admitted to the policy, which refuses an output analysts may not see.
    "policy_denies": (infer_request(2 * 1_000_223, output="account_secret"), "PERMISSION_DENIED", 0),
    # A model name whose length is no varint.
    "unparsable": (b"\x0a" + b"\xff" * 9 + b"\x00" * 2_000_447, "INVALID_ARGUMENT", 0),
    # Admitted, sent upstream and answered.
    "completed": (infer_request(2 * 1_000_231), "OK", 1),
}


@pytest.mark.parametrize("ending", sorted(STREAM_ENDS))
async def test_a_streams_requests_are_not_kept_once_it_ended(ending: str) -> None:
    """However a ModelStreamInfer ends (refused at its read, its parse or its policy, or
    answered), nothing refers to its message once it ended: the refused ones stayed in a
    reference cycle until a collection (15.6 MiB a stream on a real gateway)."""
    body, status, replies = STREAM_ENDS[ending]
    async with (
        echoing_upstream() as upstream,
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        # Its first stream's imports and caches (a policy decision cached, a deadline timer).
        assert await stream_of(channel, infer_request(1), analyst(), stay_open=False) == ("OK", 1)
        with collector_off():
            for _ in range(3):
                outcome = await stream_of(channel, body, analyst(), stay_open=status != "OK")
                assert outcome == (status, replies)
            await none_kept_once_the_calls_end(len(body), body)


ROUTED_REFUSALS = {
    # More values than limits.max_message_values: refused unparsed (MESSAGE_TOO_MANY_VALUES).
    "too_many_values": empty_kids(DEFAULT_MAX_VALUES + 23_457),
    # A Query whose text's length is no varint.
    "unparsable": b"\x0a" + b"\xff" * 9 + b"\x00" * 2_000_459,
}


@pytest.mark.parametrize("method", ["Chat", "Send"])
@pytest.mark.parametrize("refusal", sorted(ROUTED_REFUSALS))
async def test_a_routed_client_streams_refused_message_is_not_kept_once_it_ended(
    method: str, refusal: str, tmp_path: Path
) -> None:
    """A routed client stream (bidi ``Chat``, client stream ``Send``) refused at its message's
    parse: nothing refers to that message once the stream ended."""
    body = ROUTED_REFUSALS[refusal]
    async with (
        nesting_upstream() as (upstream, received),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        metadata = analyst()
        # The method's admission decided once, and cached.
        error = await refused(channel, method, b"\x0a\x05", metadata)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        with collector_off():
            for _ in range(3):
                error = await refused(channel, method, body, metadata)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            del error
            await none_kept_once_the_calls_end(len(body), body)
        assert received == []


async def test_a_half_closed_streams_last_message_is_no_longer_counted() -> None:
    """Review of the fix: once the caller half-closed, nothing refers to its last message, yet
    its lease went on counting it in ``request_bytes_in_flight`` until the stream ended (up to
    the call's deadline, with a reply still awaited)."""
    body = infer_request(2_000_000 + 77)
    upstream_read_all = asyncio.Event()

    async def stalling(context_requests: Any, context: Any) -> AsyncIterator[bytes]:
        while (message := await context.read()) is not grpc.aio.EOF:
            del message
        upstream_read_all.set()
        await asyncio.Event().wait()  # never answers
        yield b""

    handlers: dict[str, Any] = {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stalling)}
    async with (
        serving_grpc(SERVICE, handlers) as (upstream, _),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        half_close = asyncio.Event()

        async def requests() -> AsyncIterator[bytes]:
            yield body
            await half_close.wait()

        open_stream: Any = channel.stream_stream(STREAM_INFER)
        stream = open_stream(requests(), metadata=analyst(), timeout=60)
        await until(lambda: in_flight() >= len(body), "the message counted")
        half_close.set()
        await asyncio.wait_for(upstream_read_all.wait(), 30)  # the gateway passed on the end
        await until(lambda: in_flight() == 0, "nothing counted once the caller half-closed")
        stream.cancel()


def in_flight() -> float:
    return float(metrics.REQUEST_BYTES_IN_FLIGHT._value.get())


async def until(check: Any, what: str, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {in_flight():.0f} bytes in flight")
        await asyncio.sleep(0.02)
