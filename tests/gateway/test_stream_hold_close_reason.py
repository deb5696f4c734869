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
from tests.gateway.test_stream_infer_admissions import answer, decisions, held_then_released

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
    logs = tmp_path / "audit"  # where held_then_released has the writer keep the log
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

    first, rest, ended, records = await held_then_released(tmp_path, session, answer_then_refuse, refuse)
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
