"""Request bytes in flight (``gateway/inflight.py``): the budget itself, and a real gateway in
this process shedding a request while another holds the budget at a stalled upstream."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import shutil
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals import deadline
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings, LimitSettings
from labelgate.errors import Overloaded
from labelgate.gateway import inflight, reasons
from labelgate.gateway.grpc_metrics import _Measured, _streamed_response
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from tests.support.grpc_servers import serving_services
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
MIB = 1024 * 1024
INFER = "/inference.GRPCInferenceService/ModelInfer"


def test_a_request_that_does_not_fit_is_shed_and_nothing_is_taken() -> None:
    budget = inflight.RequestBytes(1000)
    with budget.call(600):
        assert budget.in_use == 600
        with pytest.raises(Overloaded) as refused, budget.call(600):
            pass
        assert refused.value.reason == reasons.REQUEST_BYTES_EXHAUSTED
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.http_status == 503
        assert budget.in_use == 600
    assert budget.in_use == 0
    with budget.call(1000):
        assert budget.in_use == 1000


def test_a_streams_message_replaces_the_last_one() -> None:
    budget = inflight.RequestBytes(1000)
    with budget.call():
        inflight.message_read(700)
        inflight.message_read(900)  # the 700 were given back first
        assert budget.in_use == 900
        with pytest.raises(Overloaded):
            inflight.message_read(1001)
        assert budget.in_use == 0
    assert budget.in_use == 0


def test_a_call_held_for_approval_sets_its_bytes_aside() -> None:
    budget = inflight.RequestBytes(1000)
    with budget.call(800):
        inflight.set_aside()
        assert budget.in_use == 0
        with budget.call(900):  # another caller's call fits meanwhile
            assert budget.in_use == 900
    assert budget.in_use == 0


def test_a_call_whose_hold_ended_counts_its_bytes_again_even_past_the_limit() -> None:
    """A granted call runs upstream after its hold: its bytes were counted by no bound then."""
    budget = inflight.RequestBytes(1000)
    with budget.call(800):
        aside = inflight.set_aside()
        assert (aside, budget.in_use) == (800, 0)
        budget.take(900)  # another call's, admitted while this one was held
        inflight.take_back(aside)  # past the limit: taken anyway
        assert budget.in_use == 1700
        with pytest.raises(Overloaded):  # and new requests are shed meanwhile
            budget.take(1)
        inflight.take_back(aside)  # once only: the lease holds its bytes again
        assert budget.in_use == 1700
        budget.give_back(900)
    assert budget.in_use == 0


def test_nothing_is_taken_back_for_a_call_that_ended_during_its_hold() -> None:
    """A stream's reading task, or a REST call's task whose caller hung up, may end its hold
    after the call itself ended: bytes taken back then stayed counted for good."""
    budget = inflight.RequestBytes(1000)
    call = budget.call(800)
    call.__enter__()
    holding = contextvars.copy_context()  # the task that holds: a copy of the call's context
    aside = holding.run(inflight.set_aside)
    call.__exit__(None, None, None)  # the transport ends the call meanwhile
    holding.run(inflight.take_back, aside)
    assert budget.in_use == 0


async def test_a_lease_closed_from_another_context_gives_its_bytes_back() -> None:
    """asyncio closes a stream handler left suspended at a write its caller cancelled from a
    task of its own, in another context: the lease's bytes stayed counted for good there (the
    context variable's reset failed first), and a few such streams refused every call."""
    budget = inflight.RequestBytes(1000)

    async def handler() -> AsyncIterator[int]:
        with budget.call(300):
            yield 1
            yield 2  # pragma: no cover

    suspended = handler()
    await anext(suspended)
    assert budget.in_use == 300
    await asyncio.create_task(suspended.aclose(), context=contextvars.Context())
    assert budget.in_use == 0


async def test_a_streaming_handler_is_closed_with_the_interceptors_wrapper_in_its_task() -> None:
    """The wrappers every stream goes through close the handler they wrap when they are closed,
    in the same task: left to the garbage collector, it is closed later from another one."""
    budget = inflight.RequestBytes(1000)
    closed: list[bool] = []

    async def handler(request: Any, context: Any) -> AsyncIterator[int]:
        with budget.call(300):
            try:
                yield 1
                yield 2  # pragma: no cover
            finally:
                closed.append(True)

    class Context:
        def time_remaining(self) -> None:
            return None

        def code(self) -> None:
            return None

    measured = _Measured("server_stream", "/test.Streams/Stream")
    for wrap in (deadline._streaming, lambda behaviour: _streamed_response(measured, behaviour)):
        closed.clear()
        wrapped = wrap(handler)(b"", Context())
        await anext(wrapped)
        await wrapped.aclose()
        assert closed == [True] and budget.in_use == 0


def test_outside_a_call_nothing_is_counted() -> None:
    inflight.message_read(10**12)
    inflight.set_aside()


def test_the_budget_holds_at_least_one_message_of_the_largest_size() -> None:
    with pytest.raises(ValueError, match="max_request_bytes_in_flight"):
        LimitSettings(max_message_bytes=2 * MIB, max_request_bytes_in_flight=MIB)


def token(sub: str, *groups: str) -> str:
    return mint_dev_token(sub, list(groups), 300, DEV_KEYS)


def request_of(size: int) -> bytes:
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(1)
    pad = request.inputs.add(name="pad", datatype="BYTES", shape=[1])
    pad.contents.bytes_contents.append(b"p" * size)
    return request.SerializeToString()


class StalledUpstream:
    """ModelInfer upstream whose every call waits until ``go`` is set."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.go = asyncio.Event()

    async def infer(self, body: bytes, context: Any) -> bytes:
        self.arrived.set()
        await self.go.wait()
        return pb.ModelInferResponse(model_name="customer-profile").SerializeToString()


OPAQUE = "/labelgate.v1.demo.CustomerDirectory/Upload"


async def upload(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    count = 0
    async for _ in requests:
        count += 1
    yield b"got %d" % count


@pytest.fixture
async def stalled() -> AsyncIterator[tuple[StalledUpstream, str]]:
    """The stalled ModelInfer upstream, which also serves an opaque client stream."""
    upstream = StalledUpstream()
    services = {
        "inference.GRPCInferenceService": {"ModelInfer": grpc.unary_unary_rpc_method_handler(upstream.infer)},
        "labelgate.v1.demo.CustomerDirectory": {"Upload": grpc.stream_stream_rpc_method_handler(upload)},
    }
    async with serving_services(services) as (address, _):
        yield upstream, address


@pytest.fixture
async def gateway(stalled: tuple[StalledUpstream, str], tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A gateway whose budget fits one 600 KiB request, not two, and whose policy lets analysts
    call ``OPAQUE`` (routed, no descriptors): its gRPC and REST addresses."""
    policy = tmp_path / "rego"
    shutil.copytree(REPO / "rego", policy)
    tables_file = policy / "labelgate" / "tables" / "data.json"
    tables = json.loads(tables_file.read_text())
    tables["opaque_methods"] = {OPAQUE: ["analysts"]}
    tables_file.write_text(json.dumps(tables))
    listen, rest = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        listen=listen,
        rest_listen=rest,
        admin_listen=None,
        upstream={"address": stalled[1]},
        routes=[{"method_prefix": "/labelgate.v1.demo.CustomerDirectory/"}],
        policy={"dir": str(policy)},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "inflight-test-hash-key-0123456789"},
        limits={"max_message_bytes": MIB, "max_request_bytes_in_flight": MIB},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    )
    served = Gateway(settings)
    await served.start()
    try:
        yield listen, f"http://{rest}"
    finally:
        await served.stop(0)


async def test_a_request_is_shed_while_another_holds_the_budget_and_served_after(
    stalled: tuple[StalledUpstream, str], gateway: tuple[str, str]
) -> None:
    upstream, _ = stalled
    listen, rest = gateway
    metadata = (("authorization", f"Bearer {token('ana', 'analysts')}"),)
    body = request_of(600 * 1024)
    async with grpc.aio.insecure_channel(listen) as channel:
        infer = channel.unary_unary(INFER)
        first = asyncio.ensure_future(infer(body, metadata=metadata, timeout=30))
        await asyncio.wait_for(upstream.arrived.wait(), 30)
        with pytest.raises(grpc.aio.AioRpcError) as shed:
            await infer(body, metadata=metadata, timeout=30)
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(shed.value)
        assert info is not None and info.reason == reasons.REQUEST_BYTES_EXHAUSTED
        # REST sheds the same way, as the binding's 503 problem.
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{rest}/v2/models/customer-profile/infer",
                content=b'{"inputs":[{"name":"pad","datatype":"BYTES","shape":[1],"data":["'
                + b"p" * (600 * 1024)
                + b'"]}]}',
                headers={"authorization": metadata[0][1], "content-type": "application/json"},
            )
        assert (reply.status_code, reply.json()["reason"]) == (503, reasons.REQUEST_BYTES_EXHAUSTED)
        # An opaque routed stream's message is shed as it is read, with its own status at once
        # (grpc's request pump swallowed the refusal: the caller waited for its deadline).
        opaque = channel.stream_stream(OPAQUE)(metadata=metadata, timeout=30)
        await opaque.write(b"y" * (600 * 1024))
        await opaque.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as shed_stream:
            _ = [reply async for reply in opaque]
        info = error_info(shed_stream.value)
        assert shed_stream.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info is not None and info.reason == reasons.REQUEST_BYTES_EXHAUSTED
        upstream.go.set()
        await first
        # The first call's bytes were given back: the same request is served now.
        await infer(body, metadata=metadata, timeout=30)


async def test_a_refused_call_lets_go_of_its_request_at_once(gateway: tuple[str, str]) -> None:
    """A refusal's traceback holds the frames that held the request, in reference cycles
    (an exception and the frames it passed through): with the gateway's rare young-generation
    collections (``gateway/heap.py``), 60 concurrent refused 15 MiB calls took 2.5 GB. The
    transport clears those frames as it turns the refusal into a status."""
    listen, _ = gateway
    body = request_of(MIB - 4096)
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()  # cycles stay until a collection: only what reference counting frees is freed
    tracemalloc.start()
    try:
        async with grpc.aio.insecure_channel(listen) as channel:
            infer = channel.unary_unary(INFER)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await infer(body, timeout=30)  # no credentials
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # The server side ends the call after the caller has its status: wait for it.
            for _ in range(100):
                retained, _ = tracemalloc.get_traced_memory()
                if retained < MIB / 4:
                    break
                await asyncio.sleep(0.05)
            assert retained < MIB / 4, f"{retained / MIB:.2f} MiB still held after the refusal"
    finally:
        tracemalloc.stop()
        if collecting:
            gc.enable()
