"""Every state change of an approval, as one structured event: the audit trail's hook.

``record(event, request, **fields)`` writes a ``labelgate.approvals`` log line and hands the
same payload to every sink registered with ``add_sink`` (the audit writer plugs in there).
Events carry names, labels, paths, people and reasons, never a data value.

Events: ``approval.requested``, ``approval.vote`` (one approver approved or denied),
``approval.granted``, ``approval.denied``, ``approval.expired``, ``approval.abandoned``,
``approval.grant_used``, ``approval.grant_refused``, ``approval.purged``, ``approval.refused``
(a request not opened: its requester has too many open).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labelgate.approvals.model import ApprovalRequest
from labelgate.logs import get_logger

log = get_logger("labelgate.approvals")
Sink = Callable[[str, dict[str, Any]], None]
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def summary(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "approval_id": request.id,
        "state": request.state.value,
        "mode": request.mode,
        "requester": request.requester,
        "requester_groups": list(request.requester_groups),
        "method": request.binding.method,
        "model": request.binding.model,
        "phase": request.phase,
        "labels": list(request.binding.labels),
        "fields": [f.path for f in request.fields],
        "digest": request.binding.digest,
        "query": request.query.to_json(),
        "grant_scope": request.requirement.grant_scope,
        "single_use": request.requirement.single_use,
        "row_budget": request.requirement.row_budget,
        "approver_groups": list(request.requirement.approver_groups),
        "min_approvals": request.requirement.min_approvals,
        "justification": request.justification,
        "node_id": request.node_id,
        "request_id": request.call_request_id,
        "session_id": request.session_id,
        "expires_at": request.expires_at,
    }


def record(event: str, request: ApprovalRequest | None, **fields: Any) -> None:
    payload = {**(summary(request) if request is not None else {}), **fields}
    log.info(event, **payload)
    for sink in list(_sinks):
        try:
            sink(event, payload)
        except Exception:  # a broken sink must not break approvals; it is logged
            log.exception("approval event sink failed", sink=repr(sink))
