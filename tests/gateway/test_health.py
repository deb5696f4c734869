"""The gRPC health service behind the gateway's own handlers (``gateway/health.py``), on a
gateway in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labelgate.config import GatewaySettings
from labelgate.gateway.health import MAX_REQUEST_BYTES
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from tests.support.procs import REPO, free_port

INFERENCE = "inference.GRPCInferenceService"

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
ANSWERS = (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.fixture
async def listen() -> AsyncIterator[str]:
    address = f"127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        listen=address,
        admin_listen=None,
        upstream={"address": f"127.0.0.1:{free_port()}"},  # nothing there: not asked
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "health-test-hash-key-0123456789"},
        limits={"max_open_streams": 1, "max_health_watches": 1},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield address
    finally:
        await gateway.stop(0)


def oversized() -> bytes:
    """A ``HealthCheckRequest`` larger than any health request needs (a 64 KiB service name)."""
    return health_pb2.HealthCheckRequest(service="s" * (64 * 1024)).SerializeToString()


async def test_probes_answer_and_a_request_larger_than_a_health_request_is_refused_unread(
    listen: str,
) -> None:
    """grpc_health's servicer took any request and kept it while a Watch stayed open: 12 Watch
    streams of 15 MiB requests with no credentials held 555 MiB, counted by no bound."""
    async with grpc.aio.insecure_channel(listen) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert len(oversized()) > MAX_REQUEST_BYTES
        for method in ("Check", "Watch"):
            call = getattr(channel, "unary_unary" if method == "Check" else "unary_stream")(
                f"/grpc.health.v1.Health/{method}"
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                reply = call(oversized(), timeout=10)
                if method == "Check":
                    await reply
                else:
                    await reply.read()
            info = error_info(refused.value)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info is not None and info.reason == "REQUEST_TOO_LARGE"


async def test_a_watch_is_an_open_stream_counted_apart_from_the_callers(listen: str) -> None:
    """Watches are not authenticated: counted with the callers' streams, an anonymous client
    holding every place left no stream to anyone else."""
    async with grpc.aio.insecure_channel(listen) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watching = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        first = await watching.read()
        assert first.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        second = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        info = error_info(refused.value)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info is not None and info.reason == "TOO_MANY_STREAMS"
        # The callers' one place is still free: a stream gets as far as its authentication.
        stream = channel.stream_stream(f"/{INFERENCE}/ModelStreamInfer")(timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stream.read()
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watching.cancel()
