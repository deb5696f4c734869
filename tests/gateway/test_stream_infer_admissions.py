"""``ModelStreamInfer``: what the caller gets for a request whose admission does not end in a
release, and what the audit log says of it.

A request is written upstream inside its own record, before that record is durable, so its
reply can come back first: one refused for want of that record (AUDIT_UNAVAILABLE) still had
its reply released, recorded as released after the refusal (review). A request held for an
approver when the upstream ended its stream was dropped: the caller got OK, its record said
the caller had gone (``CancelledError``), and so did its approval request's close (review).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.stage import UPSTREAM_ENDED_BEFORE_DECISION
from labelgate.audit.verify import verify_log
from labelgate.gateway.status import error_info
from tests.audit.conftest import open_gate, stalling_writer_process, writer_process
from tests.gateway.test_audit_trail import gateway, infer_request, metadata, session_records
from tests.support.grpc_servers import serving_services
from tests.support.procs import free_port, port_open, wait_until

INFER = "inference.GRPCInferenceService"


def chat(caller_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="chat", id=caller_id)
    prompt = request.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    prompt.contents.bytes_contents.append(b"hi")
    return request


def answer(sent: pb.ModelInferRequest) -> bytes:
    """The reply to ``sent``, naming the id the gateway sent it under."""
    reply = pb.ModelInferResponse(model_name=sent.model_name, id=sent.id)
    text = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(sent.id.encode())
    return pb.ModelStreamInferResponse(infer_response=reply).SerializeToString()


def open_stream(channel: grpc.aio.Channel, session: str, persona: tuple[str, ...]) -> Any:
    stream = channel.stream_stream(
        f"/{INFER}/ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    return stream(metadata=metadata(*persona, session=session), timeout=60)


async def rest_of(call: Any) -> tuple[list[pb.ModelStreamInferResponse], grpc.aio.AioRpcError | None]:
    """The replies the caller still gets, and the error its stream ends with (None: OK)."""
    replies = []
    try:
        while (reply := await call.read()) is not grpc.aio.EOF:
            replies.append(reply)
    except grpc.aio.AioRpcError as error:
        return replies, error
    return replies, None


def decisions(records: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(record["phase"], record["decision"], record["reason"]) for record in records]


ALLOWED = "allowed; every field is visible"


async def test_no_reply_is_released_for_a_request_refused_for_want_of_its_record(tmp_path: Path) -> None:
    """The second request's admission record is written and its acknowledgement stalled past
    the gateway's audit deadline (1 s), so the request is refused (AUDIT_UNAVAILABLE) after it
    went upstream; its reply comes back meanwhile. The stall ends once the gateway has logged the
    refusal (its log line comes before the audit record): the old code then released the reply,
    its own record acknowledged in time. Now the reply waits for its request's admission, and
    the stream ends with the refusal.

    The reply is let back half a second after the stalled record is seen: that only puts the
    old code's race (its reply's release must begin before the refusal and its record be
    acknowledged after it) where the reviewer found it; what is asserted holds whenever the
    reply comes back."""
    socket, logs, gate = tmp_path / "audit.sock", tmp_path / "audit", tmp_path / "gate"
    session = "s-unrecorded"
    asked: list[str] = []  # the ids the gateway sent each request under
    answer_second = asyncio.Event()

    async def answer_each(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async for raw in requests:
            sent = pb.ModelInferRequest.FromString(raw)
            asked.append(sent.id)
            if len(asked) == 2:
                await answer_second.wait()
            yield answer(sent)
        await asyncio.Event().wait()

    services: dict[str, dict[str, Any]] = {
        INFER: {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(answer_each)}
    }
    with stalling_writer_process(socket, logs, gate):
        async with serving_services(services) as (upstream, _):
            with gateway(tmp_path, upstream, socket) as (target, gateway_process):
                async with grpc.aio.insecure_channel(target) as channel:
                    call = open_stream(channel, session, ("ann", "analysts"))
                    await call.write(chat("c1"))
                    first = await call.read()
                    await asyncio.to_thread(
                        wait_until, lambda: len(session_records(logs, session)) == 2, 20, "the first two"
                    )
                    os.mkfifo(gate)  # the next append stalls after its write
                    await call.write(chat("c2"))
                    await asyncio.to_thread(
                        wait_until,
                        lambda: len(asked) == 2 and len(session_records(logs, session)) == 3,
                        20,
                        "the second request upstream, its admission record written",
                    )
                    await asyncio.sleep(0.5)  # see the docstring: not what is asserted
                    answer_second.set()
                    await asyncio.to_thread(
                        wait_until,
                        lambda: '"reason":"AUDIT_UNAVAILABLE"' in gateway_process.output(),
                        20,
                        "the refusal for want of the admission's record",
                    )
                    await asyncio.to_thread(open_gate, gate)
                    rest, ended = await rest_of(call)
                await asyncio.to_thread(
                    wait_until, lambda: len(session_records(logs, session)) >= 4, 20, "the refusal's record"
                )
            records = session_records(logs, session)  # the gateway has stopped: all it wrote
    assert first.infer_response.id == "c1"
    assert [reply.infer_response.id for reply in rest] == [], "nothing released for the refused request"
    assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(ended)
    assert info is not None and info.reason == "AUDIT_UNAVAILABLE"
    assert decisions(records) == [
        ("request", "allow", ALLOWED),
        ("response", "allow", ALLOWED),
        ("request", "allow", ALLOWED),  # acknowledged too late: the refusal follows it
        ("request", "deny", "AUDIT_UNAVAILABLE"),
    ]
    assert verify_log(logs).ok


async def test_a_request_held_when_the_upstream_ends_its_stream_ends_with_it(tmp_path: Path) -> None:
    """The first request is answered; the second (customer-profile, for a data steward) is
    held for an approver; then the upstream ends its stream. The caller's stream ends with the
    upstream's (UPSTREAM_STREAM_ENDED, as for a request it left unanswered), and the held
    request's record and its approval request's close say so, not that the caller went away."""
    logs = tmp_path / "audit"  # where held_then_released has the writer keep the log
    session = "s-held-ended"
    end = asyncio.Event()
    asked: list[str] = []

    async def answer_then_end(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        async for raw in requests:
            sent = pb.ModelInferRequest.FromString(raw)
            asked.append(sent.model_name)
            yield answer(sent)
            await end.wait()
            return  # the upstream ends its stream (OK) while the caller's is open

    first, rest, ended, records = await held_then_released(tmp_path, session, answer_then_end, end)
    assert first.infer_response.id == "first"
    assert asked == ["chat"], "the held request never went upstream"
    assert rest == []
    assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE, ended
    info = error_info(ended)
    assert info is not None and info.reason == "UPSTREAM_STREAM_ENDED"
    (closed,) = [record for record in records if record["decision"] == "approval_denied"]
    assert closed["reason"] == UPSTREAM_ENDED_BEFORE_DECISION
    calls = [record for record in records if not record["decision"].startswith("approval_")]
    assert [(record["model"], *step) for record, step in zip(calls, decisions(calls), strict=True)] == [
        ("chat", "request", "allow", ALLOWED),
        ("chat", "response", "allow", ALLOWED),
        ("customer-profile", "request", "deny", "UPSTREAM_STREAM_ENDED"),
    ]
    assert calls[-1]["upstream_status"] == "UPSTREAM_STREAM_ENDED"
    assert verify_log(logs).ok


async def held_then_released(
    tmp_path: Path, session: str, upstream_stream: Any, release: asyncio.Event
) -> tuple[Any, list[Any], grpc.aio.AioRpcError | None, list[dict[str, Any]]]:
    """A stream whose first request (chat) is answered and whose second (customer-profile, for
    a data steward) is held for an approver; then ``release`` is set, for ``upstream_stream``
    (the upstream's handler) to end or fail its stream. What the caller got, and the session's
    records once the approval request is closed (the log is ``tmp_path / "audit"``)."""
    socket, logs = tmp_path / "audit.sock", tmp_path / "audit"
    services: dict[str, dict[str, Any]] = {
        INFER: {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(upstream_stream)}
    }
    admin = free_port()

    def recorded(decision: str) -> list[dict[str, Any]]:
        return [record for record in session_records(logs, session) if record["decision"] == decision]

    with writer_process(socket, logs):
        async with serving_services(services) as (upstream, _):
            with gateway(tmp_path, upstream, socket, admin_port=admin) as (target, _):
                await asyncio.to_thread(wait_until, lambda: port_open(admin), 20, "the admin listener")
                async with grpc.aio.insecure_channel(target) as channel:
                    call = open_stream(channel, session, ("sam", "data-stewards"))
                    await call.write(chat("first"))
                    first = await call.read()
                    held = infer_request([1, 2])
                    held.id = "held"
                    await call.write(held)
                    await asyncio.to_thread(
                        wait_until, lambda: bool(recorded("approval_held")), 20, "the hold"
                    )
                    release.set()
                    rest, ended = await rest_of(call)
                await asyncio.to_thread(
                    wait_until, lambda: bool(recorded("approval_denied")), 20, "the approval request's close"
                )
            return first, rest, ended, session_records(logs, session)
