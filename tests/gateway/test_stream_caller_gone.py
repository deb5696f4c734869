"""A streamed call whose caller leaves (a cancel) or hits its deadline while the gateway is
sending it a reply has the stream's end recorded, once, after the releases.

Found by review: the handler is cancelled inside grpc's send, outside every handler of the
pipeline, and its generators were closed (GeneratorExit) without a record: the stream's last
record was the release of a reply the caller never got, OK.

The gateway's place is not left to timing: the caller reads nothing and grpc probes no
bandwidth (``NOT_READING``), so its stream's flow-control window stays at grpc's 64 KiB
lookahead and a 2 MB reply is never sent whole: the gateway waits in grpc's send for as long as
the caller is there. grpc sends the initial metadata in one batch with the first reply (the
gateway sends none before it), so the caller's having them (``in_send``) says the gateway is
there, its release durable before it. Each gateway is stopped (gracefully: it writes what it
has begun) before its records are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.audit.verify import verify_log
from tests.audit.conftest import writer_process
from tests.gateway.test_audit_trail import gateway, metadata, session_records
from tests.gateway.test_routes import (
    DIRECTORY,
    descriptor_set,
    directory_serving,
    gateway_with_routes,
    opaque_policy,
)
from tests.support.grpc_servers import serving_services
from tests.support.procs import wait_until

INFER = "inference.GRPCInferenceService"
BIG = "word " * 400_000  # 2 MB of plain text a reply: far past the window of a caller reading nothing
NOT_READING = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 64 << 20)]
GONE = ("error", "CancelledError")
# A caller's deadline: ample for the gateway to reach its first reply's send (a few records),
# the time the test waits for it to pass.
DEADLINE_SECONDS = 5.0


async def in_send(call: Any) -> None:
    """Once the gateway is sending the call's first reply (see the module's docstring)."""
    await call.initial_metadata()


async def leave(call: Any, how: str) -> grpc.StatusCode:
    """The caller leaves the way ``how`` says, while the gateway is sending it a reply."""
    await in_send(call)
    if how == "cancel":
        call.cancel()
    code: grpc.StatusCode = await call.code()
    return code


def ends_of(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(record["decision"], record["reason"]) for record in records]


def assert_ended_once_after_the_releases(records: list[dict[str, Any]], releases: int) -> None:
    """The stream's records: its admission and releases (all allowed), then its end, once."""
    ends = ends_of(records)
    assert ends[-1] == GONE, ends
    assert ends.count(GONE) == 1, ends
    assert {decision for decision, _ in ends[:-1]} == {"allow"}, ends
    assert len(ends) - 1 >= releases, ends


@pytest.mark.parametrize("how", ["cancel", "deadline"])
@pytest.mark.parametrize("route", ["typed", "opaque"])
async def test_a_routed_stream_left_while_a_reply_is_sent_records_its_end(
    tmp_path: Path, how: str, route: str
) -> None:
    socket, logs = tmp_path / "audit.sock", tmp_path / "audit"
    session = f"s-routed-{route}-{how}"

    async def many(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        for number in range(1, 41):
            yield demo_pb2.Customer(customer_id=number, notes=BIG).SerializeToString()
        await asyncio.Event().wait()

    extra: dict[str, Any] = {"audit": {"socket": str(socket), "timeout_seconds": 1.0}}
    if route == "typed":
        routes = [
            {
                "method_prefix": DIRECTORY,
                "descriptor_set": str(descriptor_set(tmp_path)),
                "split_values": "per_message",
            }
        ]
    else:  # bytes relayed, the policy allowing the method without labels: its end is recorded
        routes = [{"method_prefix": DIRECTORY}]
        extra["policy"] = {"dir": str(opaque_policy(tmp_path))}
    md = metadata("ann", "analysts", session=session)
    timeout = DEADLINE_SECONDS if how == "deadline" else 60
    with writer_process(socket, logs):
        async with directory_serving(many) as upstream:
            with gateway_with_routes(tmp_path, upstream, routes, extra) as target:
                async with grpc.aio.insecure_channel(target, options=NOT_READING) as channel:
                    call = demo_pb2_grpc.CustomerDirectoryStub(channel).ListCustomers(
                        demo_pb2.ListCustomersRequest(customer_ids=[1]), metadata=md, timeout=timeout
                    )
                    code = await leave(call, how)
                await asyncio.to_thread(
                    wait_until,
                    lambda: GONE in ends_of(session_records(logs, session)),
                    30,
                    "the stream's end",
                )
            records = session_records(logs, session)
    assert code == (grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED)
    # Each release is recorded (an opaque one too: ``release_opaque_reply``), then the end.
    assert_ended_once_after_the_releases(records, releases=1)
    assert verify_log(logs).ok


def chat(number: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="chat", id=f"c{number}")
    prompt = request.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    prompt.contents.bytes_contents.append(b"hi")
    request.outputs.add(name="text")
    return request


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_a_model_stream_infer_left_while_a_reply_is_sent_records_its_end(
    tmp_path: Path, how: str
) -> None:
    """Every request answered (nothing left unanswered to record), the caller gone in grpc's
    send of the first reply: the stream's end is one record of the stream, after the releases."""
    socket, logs = tmp_path / "audit.sock", tmp_path / "audit"
    session = f"s-msi-{how}"

    async def answer_each(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async for raw in requests:
            sent = pb.ModelInferRequest.FromString(raw)
            reply = pb.ModelInferResponse(model_name=sent.model_name, id=sent.id)
            text = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
            text.contents.bytes_contents.append(BIG.encode())
            yield pb.ModelStreamInferResponse(infer_response=reply).SerializeToString()
        await asyncio.Event().wait()

    services: dict[str, dict[str, Any]] = {
        INFER: {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(answer_each)}
    }
    timeout = DEADLINE_SECONDS if how == "deadline" else 60
    with writer_process(socket, logs):
        async with serving_services(services) as (upstream, _):
            with gateway(tmp_path, upstream, socket) as (target, _):
                async with grpc.aio.insecure_channel(target, options=NOT_READING) as channel:
                    stream = channel.stream_stream(
                        f"/{INFER}/ModelStreamInfer",
                        request_serializer=pb.ModelInferRequest.SerializeToString,
                        response_deserializer=pb.ModelStreamInferResponse.FromString,
                    )
                    call = stream(metadata=metadata("ann", "analysts", session=session), timeout=timeout)
                    await call.write(chat(1))
                    code = await leave(call, how)
                await asyncio.to_thread(
                    wait_until,
                    lambda: GONE in ends_of(session_records(logs, session)),
                    30,
                    "the stream's end",
                )
            records = session_records(logs, session)
    assert code == (grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED)
    assert_ended_once_after_the_releases(records, releases=1)
    phases = [record["phase"] for record in records[:-1]]
    assert phases == ["request", "response"], phases
    assert records[-1]["model"] == "", "a record of the stream, not of a request"
    assert verify_log(logs).ok
