"""A REST caller that hangs up while its call is in the pipeline: the call is cancelled, as
grpc cancels a gRPC call's task. A held call was left pending, and a later grant ran it
upstream and recorded it delivered to nobody; a call in flight kept its upstream call open.

A real gateway in this process (approvals on a SQLite file), a gRPC upstream on loopback that
counts what it is asked, and a raw HTTP client whose connection the test closes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals import events as approval_events
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port

SERVICE = "inference.GRPCInferenceService"
Context = grpc.aio.ServicerContext[bytes, bytes]
# Far beyond how long the tests wait (20 s): an upstream call ending is the gateway's cancel.
UPSTREAM_TIMEOUT = 3600
BODY = json.dumps(
    {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}
).encode()


class Upstream:
    """``ModelInfer``, ``ModelMetadata`` and Triton's model extensions on loopback: each call is
    counted, then answered at once, or (``stall``) held until it is cancelled, which sets
    ``cancelled``."""

    def __init__(self, *, stall: bool = False) -> None:
        self.stall = stall
        self.calls = 0
        self.asked, self.cancelled = asyncio.Event(), asyncio.Event()

    async def _called(self) -> None:
        self.calls += 1
        self.asked.set()
        if self.stall:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

    async def infer(self, request: bytes, context: Context) -> bytes:
        await self._called()
        return pb.ModelInferResponse(model_name="customer-profile", id="1").SerializeToString()

    async def metadata(self, request: bytes, context: Context) -> bytes:
        await self._called()
        return pb.ModelMetadataResponse(name="customer-profile", platform="test").SerializeToString()

    async def config(self, request: bytes, context: Context) -> bytes:
        await self._called()
        return ext.ModelConfigResponse(config=ext.ModelConfig(name="customer-profile")).SerializeToString()

    async def statistics(self, request: bytes, context: Context) -> bytes:
        await self._called()
        reply = ext.ModelStatisticsResponse(model_stats=[ext.ModelStatistics(name="customer-profile")])
        return reply.SerializeToString()

    async def index(self, request: bytes, context: Context) -> bytes:
        await self._called()
        entry = ext.RepositoryIndexResponse.ModelIndex(name="customer-profile", state="READY")
        return ext.RepositoryIndexResponse(models=[entry]).SerializeToString()

    async def load(self, request: bytes, context: Context) -> bytes:
        await self._called()
        return ext.RepositoryModelLoadResponse().SerializeToString()


@contextlib.asynccontextmanager
async def serving(upstream: Upstream) -> AsyncIterator[tuple[str, grpc.aio.Server]]:
    """The upstream on loopback: its address, and its server (stopped first by a test whose
    gateway would otherwise wait for a stalled call to end)."""
    handlers: dict[str, Any] = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(upstream.infer),
        "ModelMetadata": grpc.unary_unary_rpc_method_handler(upstream.metadata),
        "ModelConfig": grpc.unary_unary_rpc_method_handler(upstream.config),
        "ModelStatistics": grpc.unary_unary_rpc_method_handler(upstream.statistics),
        "RepositoryIndex": grpc.unary_unary_rpc_method_handler(upstream.index),
        "RepositoryModelLoad": grpc.unary_unary_rpc_method_handler(upstream.load),
    }
    async with serving_grpc(SERVICE, handlers) as served:
        yield served


@contextlib.asynccontextmanager
async def gateway_with_approvals(tmp: Path, upstream: str) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        rest_listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": upstream, "timeout_seconds": UPSTREAM_TIMEOUT},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "rest-hangup-test-hash-key-0123456789"},
        auth={"jwt": {"trust_dev_key": True}},
        approvals={
            "sqlite_file": str(tmp / "approvals.db"),
            "hold_timeout_seconds": UPSTREAM_TIMEOUT,
            "node_id": "rest-hangup",
            "public_url": "http://127.0.0.1:1",
        },
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(0)


@contextlib.asynccontextmanager
async def approval_events_seen() -> AsyncIterator[Callable[[str], asyncio.Future[dict[str, Any]]]]:
    """``first(event)``: a future of the next approval event of that name (this process's)."""
    waiting: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []

    def sink(event: str, payload: dict[str, Any]) -> None:
        for name, future in waiting:
            if name == event and not future.done():
                future.set_result(payload)

    def first(event: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiting.append((event, future))
        return future

    approval_events.add_sink(sink)
    try:
        yield first
    finally:
        approval_events.remove_sink(sink)


INFER = "/v2/models/customer-profile/infer"


async def send(
    rest_listen: str, token: str, method: str = "POST", path: str = INFER, body: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A whole request (an infer's body with a POST, unless ``body`` says) sent on a
    connection of its own; its reader, and its writer to hang up with."""
    host, port = rest_listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    if body is None:
        body = BODY if method == "POST" else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    return reader, writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_a_held_rest_call_whose_caller_hangs_up_is_abandoned_and_never_sent(tmp_path: Path) -> None:
    upstream = Upstream()
    steward = mint_dev_token("stew-hangup", ["data-stewards"], 300)
    async with (
        serving(upstream) as (address, _),
        gateway_with_approvals(tmp_path, address) as gateway,
        approval_events_seen() as first,
    ):
        assert gateway.settings.rest_listen is not None and gateway.approvals is not None
        requested, abandoned = first("approval.requested"), first("approval.abandoned")
        _, writer = await send(gateway.settings.rest_listen, steward)
        held = await asyncio.wait_for(requested, 20)
        try:
            await hang_up(writer)
            ended = await asyncio.wait_for(abandoned, 20)
            assert ended["approval_id"] == held["approval_id"]
            final = await gateway.approvals.get(held["approval_id"])
            assert final is not None and final.state == "abandoned", final
        finally:
            # Left pending (the failure this tests), the held call would hold up the
            # gateway's stop: its REST listener waits for the calls it serves.
            await gateway.approvals.expire(held["approval_id"], "the test ends")
        # The control: a caller the policy does not hold (an analyst) reaches the upstream.
        async with httpx.AsyncClient() as client:
            analyst = mint_dev_token("ana-hangup", ["analysts"], 300)
            reply = await client.post(
                f"http://{gateway.settings.rest_listen}/v2/models/customer-profile/infer",
                content=BODY,
                headers={"authorization": f"Bearer {analyst}", "content-type": "application/json"},
                timeout=20,
            )
        assert reply.status_code == 200, reply.text
    assert upstream.calls == 1, "only the analyst's call reached the upstream"


# Every REST route that sends a call upstream: (HTTP method, path, body, caller's groups, the
# call's method).
IN_FLIGHT = {
    "infer": ("POST", INFER, None, ["analysts"], "ModelInfer"),
    "metadata": ("GET", "/v2/models/customer-profile", None, ["analysts"], "ModelMetadata"),
    "config": ("GET", "/v2/models/customer-profile/config", None, ["analysts"], "ModelConfig"),
    "model-stats": ("GET", "/v2/models/customer-profile/stats", None, ["analysts"], "ModelStatistics"),
    "all-stats": ("GET", "/v2/models/stats", None, ["analysts"], "ModelStatistics"),
    "index": ("POST", "/v2/repository/index", b"{}", ["analysts"], "RepositoryIndex"),
    "load": (
        "POST",
        "/v2/repository/models/customer-profile/load",
        b"{}",
        ["model-admins"],
        "RepositoryModelLoad",
    ),
}


class CallRecords(logging.Handler):
    """(method, outcome, code) of each call record the record stage logs (one per call), and
    an event set by the first (written as the call's cancellation ends)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str, str]] = []
        self.first = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "call":
            fields = vars(record)
            self.seen.append((fields["method"].rsplit("/", 1)[-1], fields["outcome"], fields["code"]))
            self.first.set()


@contextlib.contextmanager
def call_records() -> Iterator[CallRecords]:
    logger = logging.getLogger("labelgate.decision")
    handler, level = CallRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("route", IN_FLIGHT)
async def test_a_rest_call_in_flight_whose_caller_hangs_up_is_cancelled_upstream(
    tmp_path: Path, route: str
) -> None:
    """Each route's call is cancelled, upstream too, and recorded as cancelled: the model
    extensions' routes left the upstream call running to its timeout, then recorded it
    allowed and OK, delivered to nobody."""
    method, path, body, groups, called = IN_FLIGHT[route]
    upstream = Upstream(stall=True)
    caller = mint_dev_token("inflight", groups, 300)
    async with serving(upstream) as (address, server), gateway_with_approvals(tmp_path, address) as gateway:
        assert gateway.settings.rest_listen is not None
        with call_records() as records:
            _, writer = await send(gateway.settings.rest_listen, caller, method, path, body)
            try:
                await asyncio.wait_for(upstream.asked.wait(), 20)
                await hang_up(writer)
                await asyncio.wait_for(upstream.cancelled.wait(), 20)
            finally:
                # Else a call left open (the failure this tests) would hold up the gateway's stop.
                await server.stop(0)
            await asyncio.wait_for(records.first.wait(), 20)
    assert records.seen == [(called, "error", "CANCELLED")]


async def test_a_bodiless_route_still_answers_a_caller_that_stays(tmp_path: Path) -> None:
    """The watch for a hang-up reads the request's (empty) body; the route's answer is
    unchanged."""
    upstream = Upstream()
    analyst = mint_dev_token("ana-stays", ["analysts"], 300)
    async with (
        serving(upstream) as (address, _),
        gateway_with_approvals(tmp_path, address) as gateway,
        httpx.AsyncClient() as client,
    ):
        reply = await client.get(
            f"http://{gateway.settings.rest_listen}/v2/models/customer-profile",
            headers={"authorization": f"Bearer {analyst}"},
            timeout=20,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == "customer-profile"


async def test_a_stopping_gateway_abandons_a_held_rest_call_whose_caller_stays(tmp_path: Path) -> None:
    """The REST listener waited for every call it served: a held one, with its caller still
    connected, held up the gateway's stop until the hold ended (up to an hour)."""
    upstream = Upstream()
    steward = mint_dev_token("stew-stop", ["data-stewards"], 300)
    async with (
        serving(upstream) as (address, _),
        approval_events_seen() as first,
        gateway_with_approvals(tmp_path, address) as gateway,
    ):
        assert gateway.settings.rest_listen is not None and gateway.approvals is not None
        requested, abandoned = first("approval.requested"), first("approval.abandoned")
        _, writer = await send(gateway.settings.rest_listen, steward)
        held = await asyncio.wait_for(requested, 20)
        stopping = asyncio.ensure_future(gateway.stop(0))
        try:
            ended = await asyncio.wait_for(abandoned, 20)
            await asyncio.wait_for(stopping, 20)
        finally:
            if not stopping.done():  # the failure this tests: let the test end
                await gateway.approvals.expire(held["approval_id"], "the test ends")
            await hang_up(writer)
        assert ended["approval_id"] == held["approval_id"]
    assert upstream.calls == 0


@pytest.mark.parametrize("route", ["infer", "metadata", "config"])
async def test_a_stopping_gateway_cancels_a_rest_call_in_flight_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    """Past the stop's grace, uvicorn cancels each route's task; the cancellation reached it
    and it logged "Exception in ASGI application" with a traceback (whose text may quote a
    caller's or an upstream's data). It ends in ``LastResort`` now, in one line."""
    method, path, body, groups, called = IN_FLIGHT[route]
    upstream = Upstream(stall=True)
    caller = mint_dev_token("stop-inflight", groups, 300)
    async with serving(upstream) as (address, _), gateway_with_approvals(tmp_path, address) as gateway:
        assert gateway.settings.rest_listen is not None
        reader, writer = await send(gateway.settings.rest_listen, caller, method, path, body)
        try:
            await asyncio.wait_for(upstream.asked.wait(), 20)
            with caplog.at_level(logging.DEBUG):
                await asyncio.wait_for(gateway.stop(0), 20)
                await asyncio.wait_for(upstream.cancelled.wait(), 20)
                answer = await asyncio.wait_for(reader.read(), 20)
        finally:
            await hang_up(writer)
    with_traceback = [(r.name, r.getMessage()) for r in caplog.records if r.exc_info or r.exc_text]
    assert with_traceback == []
    assert "Traceback" not in caplog.text
    cancelled = [r for r in caplog.records if r.getMessage() == "REST request cancelled"]
    assert [vars(r)["task_cancelled"] for r in cancelled] == [True]
    # The call is recorded as cancelled before the gateway's stop returns.
    calls = [vars(r) for r in caplog.records if r.name == "labelgate.decision" and r.getMessage() == "call"]
    assert [(c["method"].rsplit("/", 1)[-1], c["outcome"], c["code"]) for c in calls] == [
        (called, "error", "CANCELLED")
    ]
    # The caller still connected is told the gateway stopped (503), not uvicorn's text/plain 500.
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    assert json.loads(content)["reason"] == "GATEWAY_STOPPING"
