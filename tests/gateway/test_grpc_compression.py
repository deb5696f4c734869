"""The gRPC listener takes identity-encoded requests only, unless
``limits.grpc_request_compression`` turns gzip and deflate back on (``gateway/server.py``).

Found by review: grpc inflates a compressed request, up to ``limits.max_message_bytes``
(16 MiB), before any handler of the gateway sees it, so before the caller is authenticated
and before any bound of the gateway counts it. ~15 KB of gzip on the wire cost 15 MiB and
43 ms of CPU each, for every method; an anonymous ModelInfer flood took a health Check's
median from 1.5 ms to 4.4 s. Now grpc refuses such a call from its headers
(``grpc-encoding``), UNIMPLEMENTED, before its message is read: a unary method's handler never
runs (``grpc_server_started_total``, counted by the gateway's first interceptor, does not
move); a streaming method's handler may be started on a call grpc has already cancelled, and
reads nothing from it (reflection answers nothing: ``grpc_server_msg_sent_total`` does not
move).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import REGISTRY

from labelgate._proto.inference import open_inference_pb2 as pb
from tests.gateway.test_infer_request_bounds import REPLY, analyst, inference_upstream
from tests.gateway.test_routes import gateway_in_process

SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
# What the review sent: 15 MiB of zeros, ~15 KB once gzipped.
INFLATING = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * (15 << 20)]).SerializeToString()
SMALL = pb.ModelInferRequest(model_name="customer-profile").SerializeToString()
SEND_LARGE = [("grpc.max_send_message_length", 32 << 20)]


def counted(name: str, service: str, method: str, **labels: str) -> float:
    """A counter of the gateway's gRPC metrics (``gateway/grpc_metrics.py``) for one method,
    summed over the labels not named."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            wanted = {"grpc_service": service, "grpc_method": method, **labels}
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return total


def started(service: str, method: str) -> float:
    """The RPCs of a method the gateway's metrics interceptor saw start: the first code of
    the gateway a call reaches."""
    return counted("grpc_server_started_total", service, method)


def reflection_answers() -> float:
    return counted("grpc_server_msg_sent_total", REFLECTION, "ServerReflectionInfo")


@contextlib.asynccontextmanager
async def gateway(**limits: Any) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A gateway in this process in front of an inference upstream: its address, and what
    reached the upstream."""
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream, limits=limits) as listen,
    ):
        yield listen, received


async def infer(
    channel: grpc.aio.Channel, body: bytes, compression: grpc.Compression, **kwargs: Any
) -> bytes:
    call: Any = channel.unary_unary(INFER)
    reply: bytes = await call(body, compression=compression, timeout=30, **kwargs)
    return reply


async def reflect(
    channel: grpc.aio.Channel, compression: grpc.Compression
) -> list[reflection_pb2.ServerReflectionResponse]:
    """One reflection request (list the services) and the answers to it. Sent with the call's
    headers and its end in one batch, as a unary-stream call: a stream's separate write may
    lose the race with the refusal, and the client then reports its own INTERNAL instead."""
    call: Any = channel.unary_stream(
        f"/{REFLECTION}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = call(
        reflection_pb2.ServerReflectionRequest(list_services=""), compression=compression, timeout=30
    )
    return [answer async for answer in answers]


async def test_a_compressed_call_is_refused_before_its_message_is_read() -> None:
    async with (
        gateway() as (listen, received),
        grpc.aio.insecure_channel(listen, options=SEND_LARGE) as channel,
    ):
        infers, answers = started(SERVICE, "ModelInfer"), reflection_answers()
        # Anonymous, as the review's flood; and an authenticated caller's, small.
        for body, metadata in ((INFLATING, ()), (SMALL, analyst())):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await infer(channel, body, grpc.Compression.Gzip, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "gzip" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reflect(channel, grpc.Compression.Gzip)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "gzip" in (refused.value.details() or "")
        assert started(SERVICE, "ModelInfer") == infers
        assert reflection_answers() == answers
        # Deflate too.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await infer(channel, SMALL, grpc.Compression.Deflate, metadata=analyst())
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert started(SERVICE, "ModelInfer") == infers
        # The same calls uncompressed are served, their replies as before.
        assert await infer(channel, SMALL, grpc.Compression.NoCompression, metadata=analyst()) == REPLY
        assert started(SERVICE, "ModelInfer") == infers + 1
        (listed,) = await reflect(channel, grpc.Compression.NoCompression)
        assert listed.list_services_response.service
        assert reflection_answers() == answers + 1
    assert received == [SMALL]


async def test_with_grpc_request_compression_on_a_gzip_compressed_call_is_served() -> None:
    """For deployments whose clients compress (tritonclient's ``compression_algorithm``)."""
    async with (
        gateway(grpc_request_compression=True) as (listen, received),
        grpc.aio.insecure_channel(listen, options=SEND_LARGE) as channel,
    ):
        for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            assert await infer(channel, SMALL, compression, metadata=analyst()) == REPLY
        # Inflated, then refused by the gateway as any anonymous call is.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await infer(channel, INFLATING, grpc.Compression.Gzip)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert received == [SMALL, SMALL]
