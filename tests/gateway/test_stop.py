"""Gateway.stop loses nothing it was handed: the records of calls it cancels and the decision
inputs queued for the input store's writer thread are written before it returns, and its
audit connections are closed after them."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.approvals.audit_sink import ApprovalAuditSink
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.record import (
    AuditRecorder,
    InputStoreRecorder,
    LogAndMetricsRecorder,
    Recorders,
)
from labelgate.gateway.server import Gateway
from tests.audit.conftest import read_records, writer_process
from tests.gateway.expected import customer_request
from tests.gateway.harness import run_backend
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_backend(tmp_path_factory.mktemp("stop-backend")) as (address, _):
        yield address


def settings(backend: str, audit: dict) -> GatewaySettings:
    return GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "stop-test-hash-key-0123456789"},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        audit=audit,
    )


async def one_call(gateway: Gateway) -> None:
    token = mint_dev_token("ana", ["analysts"], 300, DEV_KEYS)
    async with grpc.aio.insecure_channel(gateway.settings.listen) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(customer_request([1, 2]), metadata=(("authorization", f"Bearer {token}"),))


def stored_inputs(store: Path) -> int:
    with contextlib.closing(sqlite3.connect(store)) as db:
        return int(db.execute("SELECT count(*) FROM decision_inputs").fetchone()[0])


async def started_with_input_store(backend: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """A gateway keeping decision inputs in ``store``, whose writer thread never flushes on
    its own within a test: only stop can write them."""
    monkeypatch.setitem(InputStoreRecorder.__init__.__kwdefaults__, "flush_seconds", 3600.0)
    gateway = Gateway(settings(backend, {"inputs_file": str(store)}))
    await gateway.start()
    return gateway


async def test_decision_inputs_still_queued_are_written_by_stop(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "inputs.db"
    gateway = await started_with_input_store(backend, store, monkeypatch)
    try:
        await one_call(gateway)
        assert stored_inputs(store) == 0, "queued, not yet written"
    finally:
        await gateway.stop(0)
    assert stored_inputs(store) == 2, "the request and the response phase's inputs"


async def test_stop_closes_the_audit_connection(backend: str, tmp_path: Path) -> None:
    with writer_process(tmp_path / "audit.sock", tmp_path / "audit") as _:
        gateway = Gateway(settings(backend, {"socket": str(tmp_path / "audit.sock"), "timeout_seconds": 5}))
        await gateway.start()
        records = next(r for r in gateway.pipeline.recorder.recorders if isinstance(r, AuditRecorder))
        try:
            await one_call(gateway)
            assert records.client.connected
        finally:
            await gateway.stop(0)
        assert not records.client.connected


class _Closable:
    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.closed = False

    async def record(self, entry: object) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True
        if self.failure is not None:
            raise self.failure


async def test_every_recorder_is_closed_even_after_one_fails() -> None:
    broken, intact = _Closable(OSError("disk gone")), _Closable()
    with pytest.raises(OSError, match="disk gone"):
        await Recorders(LogAndMetricsRecorder(), broken, intact).aclose()
    assert broken.closed and intact.closed


@contextlib.asynccontextmanager
async def stalling_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An upstream whose ModelInfer never answers; the event is set once a call arrives."""
    arrived = asyncio.Event()

    async def model_infer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    service = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})
    server.add_generic_rpc_handlers([service])
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    try:
        yield address, arrived
    finally:
        await server.stop(0)


async def test_a_call_cancelled_by_stop_is_recorded_before_the_audit_connection_closes(
    tmp_path: Path,
) -> None:
    socket, log_dir, store = tmp_path / "audit.sock", tmp_path / "audit", tmp_path / "inputs.db"
    with writer_process(socket, log_dir):
        async with stalling_upstream() as (upstream, arrived):
            audit = {"socket": str(socket), "timeout_seconds": 5, "inputs_file": str(store)}
            gateway = Gateway(settings(upstream, audit))
            await gateway.start()
            call = asyncio.ensure_future(one_call(gateway))
            try:
                await asyncio.wait_for(arrived.wait(), 10)
            finally:
                await gateway.stop(0)  # the call is in flight: stop cancels it
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        records = read_records(log_dir)
    assert [record["event"]["reason"] for record in records] == ["CancelledError"]
    assert stored_inputs(store) == 1, "the request phase's input"


class _SlowAuditClient:
    """Appends that finish only when released: what the sink must wait for."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.appended: list[dict] = []

    async def append(self, event: dict) -> None:
        await self.release.wait()
        self.appended.append(event)


async def test_the_approval_events_sink_waits_for_its_appends() -> None:
    client = _SlowAuditClient()
    sink = ApprovalAuditSink(client)  # type: ignore[arg-type]
    sink("approval.granted", {"approval_id": "a1", "approver": "bob", "requester": "ana"})
    await asyncio.sleep(0)
    assert not client.appended
    asyncio.get_running_loop().call_later(0.05, client.release.set)
    await sink.drain(10)
    assert [event["approval_id"] for event in client.appended] == ["a1"]
    await sink.drain(10)  # nothing left: returns at once


async def test_a_failing_step_does_not_skip_the_steps_after_it(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "inputs.db"
    gateway = await started_with_input_store(backend, store, monkeypatch)
    closed: list[str] = []
    engine_close = gateway.engine.close

    async def failing_close() -> None:
        raise RuntimeError("upstream close failed")

    async def noted_engine_close() -> None:
        closed.append("engine")
        await engine_close()

    monkeypatch.setattr(gateway.upstream, "close", failing_close)
    monkeypatch.setattr(gateway.engine, "close", noted_engine_close)
    await one_call(gateway)
    with pytest.raises(RuntimeError, match="upstream close failed"):
        await gateway.stop(0)
    assert closed == ["engine"], "the steps after the failing one still ran"
    assert stored_inputs(store) == 2
