"""Held calls are bounded by the bytes of their requests, in all and per requester.

A held call keeps its request in the gateway's memory until approvers decide (about 2.5 times
its size): past ``approvals.max_held_bytes`` or ``max_held_bytes_per_requester`` the next call
is refused with RESOURCE_EXHAUSTED (APPROVAL_HELD_BYTES_EXHAUSTED), and opens no request; a
decided call gives its bytes back; async mode holds nothing, so it is never refused for bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.approvals import deadline, reasons
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.errors import ApprovalPending
from labelgate.approvals.hold import note_request, request_bytes
from labelgate.approvals.model import State
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.stage import HoldForApproval, held_bytes
from labelgate.auth import Subject
from labelgate.config import ApprovalSettings
from labelgate.errors import ResourceExhausted
from labelgate.gateway.status import error_info
from tests.approvals.conftest import Api, dev_id, gateway_config, person, running_gateway, token
from tests.approvals.test_hold_window import POLICY_INPUT, call, held_decision, never
from tests.approvals.test_service import OLIVIA, STEVE, draft
from tests.support.procs import free_port, labelgate_command, running, wait_until

KIB = 1024
ANN = Subject("ann", ("data-stewards",))


def holding(size: int, subject: Subject = STEVE, **kwargs: Any) -> Any:
    return dataclasses.replace(draft(subject, **kwargs), held_bytes=size)


async def test_held_calls_are_refused_past_the_bytes_per_requester_and_in_all(tmp_path: Path) -> None:
    service = ApprovalService(
        SqliteDatabase(tmp_path / "a.db"),
        node_id="n",
        link_base="http://inbox.test",
        max_held_bytes=100 * KIB,
        max_held_bytes_per_requester=60 * KIB,
    )
    await service.start(sweep=False)
    try:
        first = await service.open(holding(40 * KIB))
        with pytest.raises(ResourceExhausted) as mine:
            await service.open(holding(30 * KIB))
        assert mine.value.reason == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        assert "your calls held for approval" in mine.value.message
        assert "x-labelgate-approval: async" in mine.value.message
        # Nothing was opened for the refused call; async mode holds nothing.
        assert [r.id for r in await service.visible_to(OLIVIA)] == [first.id]
        await service.open(holding(30 * KIB, mode="async"))
        # Another requester fits under their own bound, until the gateway's is reached.
        await service.open(holding(50 * KIB, ANN))
        with pytest.raises(ResourceExhausted) as everyone:
            await service.open(holding(20 * KIB, Subject("bea", ("data-stewards",))))
        assert "in this gateway" in everyone.value.message
        # A call that is decided gives its bytes back once nobody waits for it.
        await service.deny(OLIVIA, first.id, "no")
        assert (await service.wait(first.id, time.time() + 5)).state is State.DENIED
        again = await service.open(holding(30 * KIB))
        assert again.state is State.PENDING
    finally:
        await service.close()


def test_the_bounds_come_from_the_settings(tmp_path: Path) -> None:
    settings = ApprovalSettings(max_held_bytes=5 * KIB, max_held_bytes_per_requester=2 * KIB)
    service = ApprovalService.from_settings(settings, node_id="n", link_base="http://inbox.test")
    assert (service.max_held_bytes, service.max_held_bytes_per_requester) == (5 * KIB, 2 * KIB)
    defaults = ApprovalSettings()
    assert (defaults.max_held_bytes, defaults.max_held_bytes_per_requester) == (256 << 20, 64 << 20)


def test_a_call_is_counted_by_the_request_its_transport_noted_and_never_by_its_shapes() -> None:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"x" * 1000])
    note_request(b"y" * 5000)
    assert held_bytes() == 5000
    note_request(message)
    assert held_bytes() == message.ByteSize()
    # Nothing noted: not a guess from the inputs' shapes (a BYTES element of 5 MiB is one
    # element of them), refused.
    note_request(None)
    with pytest.raises(ResourceExhausted) as refused:
        held_bytes()
    assert refused.value.reason == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
    assert "x-labelgate-approval: async" in refused.value.message


async def test_a_call_whose_transport_noted_nothing_is_not_held_but_may_ask_async(tmp_path: Path) -> None:
    service = ApprovalService(SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="http://inbox.test")
    await service.start(sweep=False)
    try:
        stage = HoldForApproval(service, hold_timeout_seconds=60)
        note_request(None)
        with pytest.raises(ResourceExhausted) as refused:
            await stage.hold(call(), STEVE, POLICY_INPUT, held_decision(), never)
        assert refused.value.reason == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        assert await service.visible_to(OLIVIA) == []  # nothing opened
        asking = dataclasses.replace(call(), metadata=(("x-labelgate-approval", "async"),))
        with pytest.raises(ApprovalPending):
            await stage.hold(asking, STEVE, POLICY_INPUT, held_decision(), never)
    finally:
        await service.close()


class _ClientStream:
    """A client stream's servicer context (no deadline; its messages read with ``read``) and
    the request iterator grpc hands its handler, over the same messages: whether the latter
    was used is noted (it must not be: an async generator in a reference cycle, holding the
    message it yielded last)."""

    def __init__(self, messages: AsyncIterator[bytes]) -> None:
        self._messages = messages
        self.iterator_used = False

    def time_remaining(self) -> None:
        return None

    async def read(self) -> Any:
        return await anext(self._messages, grpc.aio.EOF)

    def __aiter__(self) -> _ClientStream:
        return self

    async def __anext__(self) -> bytes:
        self.iterator_used = True
        return await anext(self._messages)


async def test_each_task_of_a_client_stream_sees_the_message_read_last() -> None:
    """A stream's reply is released (and may be held) in the handler's task while another task
    reads the requests: it is counted by the message read last, not refused as unmeasured."""
    first, second = b"a" * 300, b"b" * 700
    arrived, go_on = asyncio.Event(), asyncio.Event()

    async def caller() -> AsyncIterator[bytes]:
        yield first
        await go_on.wait()
        yield second

    stream = _ClientStream(caller())

    async def handler() -> list[int | None]:
        requests, _ = deadline._remember(stream, stream)  # type: ignore[arg-type]
        seen: list[int | None] = [request_bytes()]  # nothing read yet

        async def pump() -> None:
            async for request in requests:
                seen.append(request_bytes())  # the reader: the message it works on
                if request == first:
                    arrived.set()

        reading = asyncio.create_task(pump())
        await arrived.wait()
        seen.append(request_bytes())  # the handler: the message read last
        go_on.set()
        await reading
        seen.append(request_bytes())  # the stream ended: nothing kept
        return seen

    assert await asyncio.create_task(handler()) == [None, 300, 300, 700, None]
    assert not stream.iterator_used


async def test_a_task_started_while_a_message_is_read_sees_the_message_read_last() -> None:
    """A task started while the reader worked on a message (a copy of its context: on
    ModelStreamInfer, the upstream call opened with the first request) sees the message read
    last, and nothing once the handler ended, even one that never read the stream's end (a
    refused stream). The message itself was noted there: each stream's first request was
    kept, counted by nothing, for as long as its upstream call lived (review)."""
    first, second = b"a" * 300, b"b" * 700
    second_read, measured, handler_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[int | None] = []
    started: list[asyncio.Task[None]] = []

    async def caller() -> AsyncIterator[bytes]:
        yield first
        yield second
        await asyncio.Event().wait()  # the caller's side stays open

    async def opened_with_the_first() -> None:
        await second_read.wait()
        seen.append(request_bytes())  # the stream goes on: its message read last
        measured.set()
        await handler_ended.wait()
        seen.append(request_bytes())  # the handler ended: nothing

    async def handler(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            if request == first:
                started.append(asyncio.create_task(opened_with_the_first()))
            else:
                second_read.set()
                await measured.wait()
                break  # ends without reading the stream's end, as a refused stream does
        yield b"answer"

    stream = _ClientStream(caller())
    wrapped = deadline.DeadlineInterceptor().wrap(
        "/test.Streams/Chat", grpc.stream_stream_rpc_method_handler(handler)
    )
    serve: Any = wrapped.stream_stream  # as grpc calls it: grpc's request iterator, the context
    assert [answer async for answer in serve(stream, stream)] == [b"answer"]
    handler_ended.set()
    await started[0]
    assert seen == [700, None]
    assert not stream.iterator_used


# -- through a real gateway --------------------------------------------------------------------
PAD = 600 * KIB  # one call fits a requester's 1 MiB, two do not


@dataclasses.dataclass
class Gateway:
    grpc: str
    api: Api
    rest: str


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("held-bytes")
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with running(
        labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
    ):
        approvals = {
            "sqlite_file": str(folder / "approvals.db"),
            "hold_timeout_seconds": 60,
            "node_id": "held-bytes",
            "max_held_bytes_per_requester": 1024 * KIB,
            "max_held_bytes": 2048 * KIB,
        }
        config, address, admin = gateway_config(folder, backend, approvals)
        settings = yaml.safe_load(config.read_text())
        settings["rest_listen"] = rest = f"127.0.0.1:{free_port()}"
        config.write_text(yaml.safe_dump(settings))
        with running_gateway(config, address, folder / "gateway.log"):
            yield Gateway(address, Api(admin), f"http://{rest}")


def padded_call(address: str, bearer: str, **headers: str) -> Future:
    """A ModelInfer the policy holds (two customer ids) carrying a BYTES input of ``PAD``."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    ids = request.inputs.add()
    ids.name, ids.datatype = "customer_ids", "INT64"
    ids.shape.append(2)
    ids.contents.int64_contents.extend([1, 2])
    pad = request.inputs.add()
    pad.name, pad.datatype = "pad", "BYTES"
    pad.shape.append(1)
    pad.contents.bytes_contents.append(b"p" * PAD)
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    future: Future = stub.ModelInfer.future(
        request, metadata=[("authorization", f"Bearer {bearer}"), *headers.items()], timeout=50
    )
    future.add_done_callback(lambda _: channel.close())
    return future


def reason_of(error: grpc.RpcError) -> str:
    info = error_info(error)
    return info.reason if info is not None else ""


def held_of(gateway: Gateway, requester: str, bearer: str) -> list[str]:
    items = gateway.api.get("/api/v1/approvals", bearer).json()["items"]
    return [i["id"] for i in items if i["requester"] == dev_id(requester) and i["mode"] == "hold"]


def test_a_requester_past_their_held_bytes_is_refused_and_others_are_still_held(bounded: Gateway) -> None:
    steward, other, owner = person("steward"), person("steward"), person("owner")
    steward_token, owner_token = token(steward, "data-stewards"), token(owner, "data-owners")
    first = padded_call(bounded.grpc, steward_token)
    held = bounded.api.pending_of(steward, owner_token)["id"]

    second = padded_call(bounded.grpc, steward_token)
    with pytest.raises(grpc.RpcError) as refused:
        second.result(timeout=30)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(refused.value) == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
    assert held_of(bounded, steward, owner_token) == [held]  # nothing opened for it

    # Async mode holds nothing: still open to the same requester.
    queued = padded_call(bounded.grpc, steward_token, **{"x-labelgate-approval": "async"})
    with pytest.raises(grpc.RpcError) as answered:
        queued.result(timeout=30)
    assert reason_of(answered.value) == reasons.APPROVAL_PENDING
    # Another requester has bytes of their own.
    theirs = padded_call(bounded.grpc, token(other, "data-stewards"))
    their_held = bounded.api.pending_of(other, owner_token)["id"]

    # Decided: the bytes come back, and the requester may be held again.
    assert bounded.api.deny(held, owner_token, "no").status_code == 200
    with pytest.raises(grpc.RpcError) as denied:
        first.result(timeout=30)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    third = padded_call(bounded.grpc, steward_token)
    found: list[str] = []
    wait_until(lambda: bool(found.extend(held_of(bounded, steward, owner_token)) or found), 20, "held again")
    for future, approval in ((third, found[0]), (theirs, their_held)):
        assert bounded.api.deny(approval, owner_token, "no").status_code == 200
        with pytest.raises(grpc.RpcError) as ended:
            future.result(timeout=30)
        assert ended.value.code() is grpc.StatusCode.PERMISSION_DENIED


REST_BODY = json.dumps(
    {
        "inputs": [
            {"name": "customer_ids", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "pad", "datatype": "BYTES", "shape": [1], "data": ["p" * PAD]},
        ]
    }
).encode()


def rest_call(pool: ThreadPoolExecutor, gateway: Gateway, bearer: str) -> Future:
    """``padded_call``'s request over REST: the same message, the same bytes held."""
    url = f"{gateway.rest}/v2/models/customer-profile/infer"
    headers = {"authorization": f"Bearer {bearer}", "content-type": "application/json"}
    return pool.submit(httpx.post, url, content=REST_BODY, headers=headers, timeout=50)


def test_rest_and_grpc_calls_held_count_the_same_bytes_under_the_same_bounds(bounded: Gateway) -> None:
    """A REST call held gives its body's bytes back to the request-bytes budget: it must count
    under the approval bounds as the same call over gRPC does (REST noted nothing and was
    counted by its shapes, a few bytes: six 5 MiB calls of one steward were all held)."""
    steward, owner = person("steward"), person("owner")
    steward_token, owner_token = token(steward, "data-stewards"), token(owner, "data-owners")
    with ThreadPoolExecutor(4) as pool:
        # Held over REST: a second call of the steward does not fit, over REST or gRPC.
        first = rest_call(pool, bounded, steward_token)
        held = bounded.api.pending_of(steward, owner_token)["id"]
        refused = rest_call(pool, bounded, steward_token).result(timeout=30)
        assert refused.status_code == ResourceExhausted.http_status, refused.text
        assert refused.json()["reason"] == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        with pytest.raises(grpc.RpcError) as over_grpc:
            padded_call(bounded.grpc, steward_token).result(timeout=30)
        assert reason_of(over_grpc.value) == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        assert held_of(bounded, steward, owner_token) == [held]  # nothing opened for either
        assert bounded.api.deny(held, owner_token, "no").status_code == 200
        assert first.result(timeout=30).status_code == 403

        # Held over gRPC: the steward's REST call is refused as its gRPC call was.
        second = padded_call(bounded.grpc, steward_token)
        found: list[str] = []
        wait_until(lambda: bool(found.extend(held_of(bounded, steward, owner_token)) or found), 20, "held")
        again = rest_call(pool, bounded, steward_token).result(timeout=30)
        assert again.status_code == ResourceExhausted.http_status, again.text
        assert again.json()["reason"] == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        assert bounded.api.deny(found[0], owner_token, "no").status_code == 200
        with pytest.raises(grpc.RpcError) as denied:
            second.result(timeout=30)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
