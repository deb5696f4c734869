"""Stage: record. Every call's outcome becomes a structured log line and metrics.

The durable, tamper-evident audit log plugs in behind the same ``Recorder`` interface.
Records carry names, labels, paths and reasons, never a data value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from labelgate.errors import LabelgateError
from labelgate.gateway import metrics
from labelgate.logs import get_logger

if TYPE_CHECKING:
    from labelgate.gateway.pipeline import Call, Outcome

log = get_logger("labelgate.decision")


class Recorder(Protocol):
    def record(self, call: Call, outcome: Outcome, error: BaseException | None) -> None: ...


def outcome_name(outcome: Outcome, error: BaseException | None) -> str:
    if error is None:
        return "mask" if outcome.masked else "allow"
    if isinstance(error, LabelgateError):
        return "approval_required" if error.reason == "APPROVAL_REQUIRED" else "deny"
    return "error"


class LogAndMetricsRecorder:
    def record(self, call: Call, outcome: Outcome, error: BaseException | None) -> None:
        result = outcome_name(outcome, error)
        metrics.CALLS.labels(method=call.method, outcome=result).inc()
        for masked in outcome.masked:
            metrics.MASKED_FIELDS.labels(label=masked["label"]).inc()
        last = outcome.decisions[-1][1] if outcome.decisions else None
        reason = (
            error.reason if isinstance(error, LabelgateError) else type(error).__name__ if error else None
        )
        if error is not None and not isinstance(error, LabelgateError):
            metrics.ERRORS.labels(kind=type(error).__name__).inc()
        log.info(
            "call",
            method=call.method,
            peer=call.peer,
            session_id=call.session_id,
            request_id=call.request_id,
            subject=outcome.subject.id if outcome.subject else None,
            groups=list(outcome.subject.groups) if outcome.subject else None,
            outcome=result,
            reason=reason,
            labels=sorted(outcome.labels),
            masked=outcome.masked,
            phases=[phase for phase, _ in outcome.decisions],
            engine=last.engine if last else None,
            policy_revision=last.revision if last else None,
            decision_id=last.decision_id if last else None,
        )
