"""Pure functions for session recordings: entries, their size, the cap, decoding for display.

Every stored line (file) or row (PostgreSQL) is one JSON object with a ``kind``:

``session``   (files only, first line) ``{"kind", "format", "session_id", "started"}``
``call``      one call, or one message of a stream::

    {"kind": "call", "time", "session_id", "request_id", "method", "peer",
     "subject": {"id", "groups", "auth"} | null, "model",
     "request": {"model", "model_version", "inputs": [{"name", "datatype", "shape"}], "outputs"},
     "request_message": {"type", "base64"}          (only with record_input_values)
     "decision": {"outcome", "reason", "labels", "masked": [{"path", "strategy", "label"}],
                  "phases": [{"phase", "allow", "reason", "engine", "revision", "decision_id"}]},
     "upstream_status", "latency_ms",
     "response": {"type": "inference.ModelInferResponse", "base64", "bytes"} | null}

``truncated`` the explicit marker written once, when the next call would take the session
              past its size cap; nothing of the session is recorded after it::

    {"kind": "truncated", "time", "session_id", "limit_bytes", "recorded_bytes", "request_id"}

``response`` is the protobuf message exactly as the caller received it (after masking),
``SerializeToString`` and base64, with its full type name so it can be parsed back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from labelgate.errors import LabelgateError

if TYPE_CHECKING:
    from labelgate.gateway.calls import Call, Outcome

FORMAT = 1
Admission = Literal["store", "truncate", "drop"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def encode_line(entry: dict[str, Any]) -> bytes:
    """The stored form of an entry; its length is what counts against the session's cap."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_message(message: Message) -> dict[str, Any]:
    data = message.SerializeToString()
    return {
        "type": message.DESCRIPTOR.full_name,
        "base64": base64.b64encode(data).decode("ascii"),
        "bytes": len(data),
    }


def _reason(outcome: Outcome, error: BaseException | None) -> str | None:
    if error is not None:
        return error.reason if isinstance(error, LabelgateError) else type(error).__name__
    return outcome.decisions[-1][1].reason if outcome.decisions else None


def call_entry(
    call: Call, outcome: Outcome, error: BaseException | None, *, now: datetime, record_input_values: bool
) -> dict[str, Any]:
    """The recording of one call (or one streamed message)."""
    from labelgate.gateway.record import outcome_name

    subject = outcome.subject
    entry: dict[str, Any] = {
        "kind": "call",
        "time": format_time(now),
        "session_id": call.session_id,
        "request_id": call.request_id,
        "method": call.method,
        "peer": call.peer,
        "subject": {"id": subject.id, "groups": list(subject.groups), "auth": subject.auth}
        if subject
        else None,
        "model": outcome.model,
        "request": outcome.request_summary,
        "decision": {
            "outcome": outcome_name(outcome, error),
            "reason": _reason(outcome, error),
            "labels": sorted(outcome.labels),
            "masked": list(outcome.masked),
            "phases": [
                {
                    "phase": phase,
                    "allow": decision.allow,
                    "reason": decision.reason,
                    "engine": decision.engine,
                    "revision": decision.revision,
                    "decision_id": decision.decision_id,
                }
                for phase, decision in outcome.decisions
            ],
        },
        "upstream_status": outcome.upstream_status,
        "response": encode_message(outcome.delivered) if outcome.delivered is not None else None,
    }
    if record_input_values:
        # The pipeline exposes the request only if it chooses to (``Outcome.request``); the
        # summary above never holds values.
        request = getattr(outcome, "request", None)
        if isinstance(request, Message):
            entry["request_message"] = encode_message(request)
    return entry


def session_header(session_id: str, started: str) -> dict[str, Any]:
    return {"kind": "session", "format": FORMAT, "session_id": session_id, "started": started}


def truncation_marker(entry: dict[str, Any], limit: int, recorded: int) -> dict[str, Any]:
    return {
        "kind": "truncated",
        "time": entry["time"],
        "session_id": entry["session_id"],
        "request_id": entry.get("request_id"),
        "limit_bytes": limit,
        "recorded_bytes": recorded,
        "note": "session size cap reached: this call and every later call of the session are not recorded",
    }


def admit(recorded: int, truncated: bool, size: int, limit: int) -> Admission:
    """What to do with an entry of ``size`` bytes for a session holding ``recorded`` bytes.

    The marker itself may take a session past the cap by its own (small) length, so it is
    always written and the cap is never exceeded by a call.
    """
    if truncated:
        return "drop"
    if recorded + size <= limit:
        return "store"
    return "truncate"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_name(session_id: str) -> str:
    """A safe, unique file name for a client-chosen session id (any text up to 128 characters)."""
    slug = _UNSAFE.sub("_", session_id).strip("._")[:64] or "session"
    return f"{slug}-{hashlib.sha256(session_id.encode()).hexdigest()[:16]}.jsonl"


def decode_message(stored: dict[str, Any] | None) -> Message | None:
    """Parse a stored message back; None when there is none or its type is not known here."""
    if not stored:
        return None
    import labelgate._proto.inference.open_inference_pb2  # noqa: F401 - registers the inference types

    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(stored["type"])
    except KeyError:
        return None
    message = message_factory.GetMessageClass(descriptor)()
    try:
        message.ParseFromString(base64.b64decode(stored["base64"], validate=True))
    except (DecodeError, ValueError):
        return None
    return message
