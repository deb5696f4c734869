"""``ModelStreamInfer``: a request held for an approver when the stream is refused for another
reason than its caller's leaving has its approval request closed with that reason.

Found by review (tenth round, left open): the refusal cancelled the held request's hold as a
caller's leaving does, so the approver's inbox and the audit log said "the caller went away
before a decision" of a caller still there, told of the refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.stage import (
    CALLER_WENT_AWAY,
    UPSTREAM_ENDED_BEFORE_DECISION,
    abandoned_because,
    stream_refused_before_decision,
)
from labelgate.audit.verify import verify_log
from labelgate.gateway.status import error_info
from tests.audit.conftest import writer_process
from tests.gateway.test_audit_trail import gateway, infer_request, session_records
from tests.gateway.test_stream_infer_admissions import INFER, answer, chat, decisions, open_stream, rest_of
from tests.support.grpc_servers import serving_services
from tests.support.procs import free_port, port_open, wait_until

# How the upstream ends the caller's stream once the second request is held, and the reason
# the caller is refused with.
ENDINGS = {
    # The upstream fails its stream (its status kept, its text not).
    "upstream_error": "UPSTREAM_INTERNAL",
    # A reply naming no request the stream sent: the gateway refuses it, ending the stream.
    "reply_refused": "UPSTREAM_MALFORMED",
}


@pytest.mark.parametrize("how", sorted(ENDINGS))
async def test_a_request_held_when_the_stream_is_refused_is_closed_with_the_refusal(
    tmp_path: Path, how: str
) -> None:
    """The first request is answered; the second (customer-profile, for a data steward) is held
    for an approver; then the stream is refused (``how``). The caller is told the refusal, and
    the held request's approval is closed naming it, and its own record ends with it: not as
    its caller's leaving, nor as the upstream's ending its stream."""
    socket, logs = tmp_path / "audit.sock", tmp_path / "audit"
    session = f"s-held-refused-{how}"
    refuse = asyncio.Event()

    async def answer_then_refuse(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        async for raw in requests:
            yield answer(pb.ModelInferRequest.FromString(raw))
            await refuse.wait()
            if how == "upstream_error":
                await context.abort(grpc.StatusCode.INTERNAL, "the upstream's own words")
            stray = pb.ModelInferResponse(model_name="chat", id="not-sent")
            yield pb.ModelStreamInferResponse(infer_response=stray).SerializeToString()
            await asyncio.Event().wait()

    services: dict[str, dict[str, Any]] = {
        INFER: {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(answer_then_refuse)}
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
                    refuse.set()
                    rest, ended = await rest_of(call)
                    await asyncio.to_thread(
                        wait_until,
                        lambda: bool(recorded("approval_denied")),
                        20,
                        "the approval request's close",
                    )
            records = session_records(logs, session)
    assert first.infer_response.id == "first"
    assert rest == []
    assert ended is not None
    info = error_info(ended)
    assert info is not None and info.reason == ENDINGS[how], ended
    (closed,) = [record for record in records if record["decision"] == "approval_denied"]
    assert closed["reason"] not in (CALLER_WENT_AWAY, UPSTREAM_ENDED_BEFORE_DECISION)
    # What the caller was told, in the gateway's words (never the upstream's).
    assert closed["reason"] == stream_refused_before_decision(info.reason, ended.details() or "")
    assert "the upstream's own words" not in closed["reason"]
    # The held request's own record says it ended with the refusal, not that its caller left.
    held_records = [record for record in records if record["model"] == "customer-profile"]
    held_records = [record for record in held_records if not record["decision"].startswith("approval_")]
    assert decisions(held_records) == [("request", "deny", ENDINGS[how])]
    assert held_records[-1]["upstream_status"] == ENDINGS[how]
    assert verify_log(logs).ok


def closed_because(*message: object) -> str:
    return abandoned_because(asyncio.CancelledError(*message))


def test_only_the_gateways_own_reasons_close_a_hold_as_other_than_the_callers_leaving() -> None:
    refused = stream_refused_before_decision("STREAM_VALUE_SPLIT", "split\x1b[2J\u202eacross replies")
    assert closed_because() == CALLER_WENT_AWAY  # a cancel, a deadline, a disconnect
    assert closed_because("the stream was refused before a decision (X: y)") == CALLER_WENT_AWAY
    assert closed_because(UPSTREAM_ENDED_BEFORE_DECISION) == UPSTREAM_ENDED_BEFORE_DECISION
    assert closed_because(refused) == refused
    assert refused == "the stream was refused before a decision (STREAM_VALUE_SPLIT: split [2Jacross replies)"
