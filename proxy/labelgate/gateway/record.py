"""Stage: record. Every call's outcome becomes a structured log line, metrics and, when
configured, a durable audit record written by the separate audit-writer process.

The pipeline awaits the recorders before it releases a response, so with auditing on a
caller never receives data whose audit record is not yet durable. Records carry names,
labels, paths and reasons, never a data value.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from labelgate.audit import AuditClient
from labelgate.calls import CallRecord
from labelgate.errors import LabelgateError
from labelgate.gateway import metrics
from labelgate.logs import get_logger
from labelgate.timestamps import format_time, utc_now

log = get_logger("labelgate.decision")


class Recorder(Protocol):
    async def record(self, entry: CallRecord) -> None: ...


def audit_event(entry: CallRecord) -> dict[str, Any]:
    """The audit record of one call (or one streamed message): names and labels only."""
    last = entry.last_decision
    call = entry.call
    return {
        "time": format_time(entry.time),
        "event_id": entry.event_id,
        "session_id": call.session_id,
        "request_id": call.request_id,
        "subject": entry.subject_json(),
        "peer": call.peer,
        "service": call.service,
        "method": call.method,
        "model": entry.model,
        "phase": last[0] if last else "",
        "labels": list(entry.labels),
        "masked": list(entry.masked),
        "decision": entry.outcome,
        "reason": entry.reason,
        "engine": last[1].engine if last else None,
        "policy_revision": last[1].revision if last else None,
        "decision_id": last[1].decision_id if last else None,
        "upstream_status": entry.upstream_status,
        "latency_ms": entry.latency_ms,
    }


class LogAndMetricsRecorder:
    async def record(self, entry: CallRecord) -> None:
        call = entry.call
        metrics.CALLS.labels(method=call.method, outcome=entry.outcome).inc()
        for masked in entry.masked:
            metrics.MASKED_FIELDS.labels(label=masked["label"]).inc()
        if entry.error_kind is not None:
            metrics.ERRORS.labels(kind=entry.error_kind).inc()
        last = entry.last_decision
        log.info(
            "call",
            method=call.method,
            peer=call.peer,
            session_id=call.session_id,
            request_id=call.request_id,
            subject=entry.subject.id if entry.subject else None,
            groups=list(entry.subject.groups) if entry.subject else None,
            outcome=entry.outcome,
            reason=entry.refusal,
            labels=list(entry.labels),
            masked=list(entry.masked),
            phases=[phase for phase, _ in entry.decisions],
            engine=last[1].engine if last else None,
            policy_revision=last[1].revision if last else None,
            decision_id=last[1].decision_id if last else None,
        )


class AuditRecorder:
    """Durable audit records; without a durable acknowledgement the call fails (closed).

    ``fail_open`` lets calls through when the writer is unreachable: an operator's
    explicit choice, logged at error level on every such call.
    """

    def __init__(self, client: AuditClient, fail_open: bool = False) -> None:
        self.client = client
        self.fail_open = fail_open

    async def record(self, entry: CallRecord) -> None:
        try:
            await self.client.append(audit_event(entry))
        except LabelgateError as failure:
            metrics.ERRORS.labels(kind=failure.reason).inc()
            if not self.fail_open:
                raise
            log.error(
                "audit record lost: fail_open is set", reason=failure.reason, request_id=entry.call.request_id
            )


class Recorders:
    """Several recorders in order; the first failure stops the call."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    async def record(self, entry: CallRecord) -> None:
        for recorder in self.recorders:
            await recorder.record(entry)


# Approval state changes as audit decisions (the approval service's event names).
_APPROVAL_DECISIONS = {
    "approval.requested": "approval_held",
    "approval.vote": "approval_held",
    "approval.vote_refused": "approval_held",
    "approval.granted": "approval_granted",
    "approval.grant_used": "approval_granted",
    "approval.denied": "approval_denied",
    "approval.grant_refused": "approval_denied",
    "approval.abandoned": "approval_denied",
    "approval.expired": "approval_expired",
}


def approval_audit_event(name: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The audit record of one approval state change; None for housekeeping events."""
    decision = _APPROVAL_DECISIONS.get(name)
    if decision is None:
        return None
    requester = payload.get("requester") or payload.get("subject")
    people = [p for p in (payload.get("approver"), payload.get("person")) if p]
    return {
        "time": format_time(utc_now()),
        "event_id": str(uuid.uuid4()),
        "session_id": payload.get("session_id"),
        "request_id": payload.get("request_id"),
        "subject": {"id": requester, "groups": payload.get("requester_groups") or [], "auth": "jwt"}
        if requester
        else None,
        "method": payload.get("method"),
        "model": payload.get("model"),
        "phase": payload.get("phase") or "",
        "labels": payload.get("labels") or [],
        "decision": decision,
        "reason": payload.get("reason") or payload.get("refusal") or payload.get("resolution"),
        "approval_id": payload.get("approval_id"),
        "approvers": people,
        "details": {"event": name, **({"verdict": payload["verdict"]} if "verdict" in payload else {})},
    }


def approval_audit_sink(client: AuditClient) -> Callable[[str, dict[str, Any]], None]:
    """Feed approval state changes to the audit writer.

    Approval events happen outside any one call's release path (an approver's click), so
    they are appended in the background; a failure is logged and counted, while the call
    a grant releases still writes its own audit record before anything is delivered.
    """
    pending: set[asyncio.Task] = set()

    async def append(event: dict[str, Any]) -> None:
        try:
            await client.append(event)
        except LabelgateError as failure:
            metrics.ERRORS.labels(kind=failure.reason).inc()
            log.error(
                "approval audit record lost", reason=failure.reason, approval_id=event.get("approval_id")
            )

    def sink(name: str, payload: dict[str, Any]) -> None:
        event = approval_audit_event(name, payload)
        if event is None:
            return
        task = asyncio.get_running_loop().create_task(append(event))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return sink
