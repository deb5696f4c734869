"""Approval state changes as audit records, for every process that serves approvals (the
gateway, ``labelgate approvals serve``): each vote, grant, denial and expiry joins the audit
trail beside the calls they hold and release."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from labelgate.audit import AuditClient
from labelgate.background import BackgroundTasks
from labelgate.errors import LabelgateError
from labelgate.logs import get_logger
from labelgate.timestamps import format_time, utc_now

log = get_logger(__name__)


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


# Carried into an approval record's details when the event has them: the verdict of a vote,
# and a row-budget charge (rows asked, charged, used so far, the budget) or refusal.
_AUDITED_DETAILS = ("verdict", "grant_id", "rows", "rows_charged", "rows_used", "row_budget")


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
        "details": {
            "event": name,
            **{key: payload[key] for key in _AUDITED_DETAILS if payload.get(key) is not None},
        },
    }


class ApprovalAuditSink:
    """Feed approval state changes to the audit writer.

    Approval events happen outside any one call's release path (an approver's click), so
    they are appended in the background; a record that could not be appended is logged
    (``approval audit record lost``, with its reason) and handed to ``on_lost``: the gateway
    counts it in ``labelgate_errors_total``, ``labelgate approvals serve`` gives none and
    only logs it. The call a grant releases still writes its own audit record before
    anything is delivered.
    """

    def __init__(self, client: AuditClient, on_lost: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.on_lost = on_lost  # called with the failure's reason; None: the log line alone
        self._pending = BackgroundTasks()

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        event = approval_audit_event(name, payload)
        if event is None:
            return
        self._pending.start(self._append(event))

    async def drain(self, seconds: float) -> None:
        """Wait, at most ``seconds``, for the events still being appended."""
        await self._pending.wait(seconds)

    async def _append(self, event: dict[str, Any]) -> None:
        try:
            await self.client.append(event)
        except LabelgateError as failure:
            if self.on_lost is not None:
                self.on_lost(failure.reason)
            log.error(
                "approval audit record lost", reason=failure.reason, approval_id=event.get("approval_id")
            )
