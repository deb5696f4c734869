"""Every state change of an approval, as one structured event: the audit trail's hook.

``record(event, request, **fields)`` writes a ``labelgate.approvals`` log line and hands the
same payload to every sink registered with ``add_sink`` (the audit writer plugs in there).
Events carry names, labels, paths, people and reasons, never a data value.

The texts a caller chose (method, model, input and output names, field paths, ids) are
bounded as the call log bounds them (``untrusted_text.bounded``: past 1,024 characters, a
length and a digest), and the lists of them (fields, inputs, requested outputs) are cut to
their first within ``LISTED_CHARS`` characters, the others counted (``fields_omitted``, ...):
a held call may name thousands of fields at paths of up to 64 KiB, and one event was once
hundreds of KB of log line.

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
from labelgate.untrusted_text import bounded

log = get_logger("labelgate.approvals")
Sink = Callable[[str, dict[str, Any]], None]
_sinks: list[Sink] = []
# Characters of bounded texts one list keeps (each list of an event: fields, inputs, outputs).
LISTED_CHARS = 16 * 1024


def add_sink(sink: Sink) -> None:
    _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def _first_within(items: list[Any], sizes: list[int]) -> list[Any]:
    """The first of ``items`` whose sizes add up to at most ``LISTED_CHARS``."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > LISTED_CHARS:
            return items[:count]
    return items


def summary(request: ApprovalRequest) -> dict[str, Any]:
    paths = [bounded(f.path) for f in request.fields]
    fields = _first_within(paths, [len(path) for path in paths])
    inputs = [{**i.to_json(), "name": bounded(i.name)} for i in request.query.inputs]
    inputs = _first_within(inputs, [len(i["name"]) + 16 * len(i["shape"]) + 32 for i in inputs])
    outputs = [bounded(name) for name in request.query.requested_outputs]
    outputs = _first_within(outputs, [len(name) for name in outputs])
    omitted = {
        "fields_omitted": len(paths) - len(fields),
        "inputs_omitted": len(request.query.inputs) - len(inputs),
        "requested_outputs_omitted": len(request.query.requested_outputs) - len(outputs),
    }
    return {
        "approval_id": request.id,
        "state": request.state.value,
        "mode": request.mode,
        "requester": bounded(request.requester),
        "requester_groups": [bounded(group) for group in request.requester_groups],
        "method": bounded(request.binding.method),
        "model": bounded(request.binding.model),
        "phase": request.phase,
        "labels": list(request.binding.labels),
        "fields": fields,
        "digest": request.binding.digest,
        "query": {"inputs": inputs, "requested_outputs": outputs, "rows": request.query.rows},
        "grant_scope": request.requirement.grant_scope,
        "single_use": request.requirement.single_use,
        "row_budget": request.requirement.row_budget,
        "approver_groups": list(request.requirement.approver_groups),
        "min_approvals": request.requirement.min_approvals,
        "justification": bounded(request.justification),
        "node_id": request.node_id,
        "request_id": bounded(request.call_request_id),
        "session_id": bounded(request.session_id),
        "expires_at": request.expires_at,
        **{key: count for key, count in omitted.items() if count},
    }


def record(event: str, request: ApprovalRequest | None, **fields: Any) -> None:
    payload = {**(summary(request) if request is not None else {}), **fields}
    log.info(event, **payload)
    for sink in list(_sinks):
        try:
            sink(event, payload)
        except Exception:  # a broken sink must not break approvals; it is logged
            log.exception("approval event sink failed", sink=repr(sink))
