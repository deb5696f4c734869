"""Pure functions for session recordings: entries, their size, the cap, decoding for display.

Every stored line (file) or row (PostgreSQL) is one JSON object with a ``kind``:

``session``   (files only, first line) ``{"kind", "format", "session_id", "started"}``
``call``      one call, or one message of a stream::

    {"kind": "call", "time", "session_id" (the recording key, ``recording_key``),
     "client_session_id" (what the client sent), "request_id", "method", "peer",
     "subject": {"id", "groups", "auth"} | null, "model",
     "request": {"model", "model_version", "inputs": [{"name", "datatype", "shape"}], "outputs"},
     "request_message": {"type", "base64"}          (only with record_input_values)
     "decision": {"outcome", "reason", "labels", "masked": [{"path", "strategy", "label"}],
                  "fields": [{"path", "labels"}]   (the response phase's, as classified then)
                  "phases": [{"phase", "allow", "reason", "engine", "revision", "decision_id",
                              "cached", "cached_from"}]},
     "upstream_status", "latency_ms",
     "response": {"type": "inference.ModelInferResponse", "base64", "bytes"} | null}

``truncated`` the explicit marker written once, when the next call would take the session
              past its size cap; nothing of the session is recorded after it::

    {"kind": "truncated", "time", "session_id", "limit_bytes", "recorded_bytes", "request_id"}

With ``recording.encryption_key_file`` every line but the header is an envelope instead:
``kind``, ``time``, ``session_id``, ``request_id``, ``seq`` (the entry's position in the
session) in clear and the entry sealed (``sealing.py``).

``response`` is the protobuf message exactly as the caller received it (after masking),
``SerializeToString`` and base64, with its full type name so it can be parsed back; a call
that ended in an error delivered none (``CallRecord.delivered``). ``phases`` lists each
decision made for the call, in order (a held call's, then the one made under its approval);
a decision served from the decision cache has no ``decision_id`` of its own, ``cached`` and
``cached_from``, the id of the evaluation it came from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Literal

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from labelgate.policy.cache import cached_from
from labelgate.timestamps import format_time, parse_time, utc_now

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.calls import CallRecord

__all__ = ["format_time", "parse_time", "utc_now"]  # re-exported for the stores

FORMAT = 1
Admission = Literal["store", "truncate", "drop"]


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


def qualified_subject(subject: Subject | None, peer: str) -> str:
    """Who made a call, qualified by how it was proven, so that names from different methods
    (a JWT ``sub``, an API key id, a certificate name) or issuers never coincide. A call that was
    not authenticated belongs to its connection (``peer``) only."""
    if subject is None:
        return f"unauthenticated:{peer}"
    if subject.id.startswith(f"{subject.auth}:"):  # already qualified (``auth.subject.qualified_id``)
        return subject.id
    if subject.auth == "jwt":
        return f"jwt:{subject.attributes.get('iss', '')}#{subject.id}"
    return f"{subject.auth}:{subject.id}"


KEY_DIGEST_CHARS = 32


def recording_key(subject: Subject | None, peer: str, session_id: str) -> str:
    """The key a call is recorded under: the client's session id, then ``~`` and a digest of the
    qualified subject and that id.

    The client chooses the session id, never the key: the same id sent by two subjects gives two
    keys, so a caller can never append to (or fill the size cap of) another subject's session.
    The digest has a fixed length, so a key splits one way only (``session~digest``), and no
    session id one subject can send yields another subject's key (short of a 128-bit collision)."""
    material = json.dumps([qualified_subject(subject, peer), session_id], ensure_ascii=False).encode()
    return f"{session_id}~{hashlib.sha256(material).hexdigest()[:KEY_DIGEST_CHARS]}"


def call_entry(entry: CallRecord, *, record_input_values: bool) -> dict[str, Any]:
    """The recording of one call (or one streamed message), under its ``recording_key``."""
    call = entry.call
    line: dict[str, Any] = {
        "kind": "call",
        "time": format_time(entry.time),
        "session_id": recording_key(entry.subject, call.peer, call.session_id),
        "client_session_id": call.session_id,
        "request_id": call.request_id,
        "method": call.method,
        "peer": call.peer,
        "subject": entry.subject_json(),
        "model": entry.model,
        "request": entry.request_summary,
        "decision": {
            "outcome": entry.outcome,
            "reason": entry.reason,
            "labels": list(entry.labels),
            "masked": list(entry.masked),
            "fields": response_fields(entry),
            "phases": [
                {
                    "phase": phase,
                    "allow": decision.allow,
                    "reason": decision.reason,
                    "engine": decision.engine,
                    "revision": decision.revision,
                    "decision_id": decision.decision_id,
                    "cached": decision.cached,
                    "cached_from": cached_from(decision),
                }
                for phase, decision in entry.decisions
            ],
        },
        "upstream_status": entry.upstream_status,
        "response": encode_message(entry.delivered) if entry.delivered is not None else None,
    }
    # The pipeline exposes the request only if it chooses to (``Outcome.request``); the
    # summary above never holds values.
    if record_input_values and entry.request is not None:
        line["request_message"] = encode_message(entry.request)
    return line


def response_fields(entry: CallRecord) -> list[dict[str, Any]]:
    """Path and labels of each field the response-phase decision saw: a replay is decided on
    these (with what the recorded response classifies as now), so labels that only the call
    knew (a backend's ``labelgate.labels``, which is not delivered) still govern its replay."""
    for phase, _, policy_input in reversed(entry.decision_inputs):
        if phase == "response":
            return [{"path": f["path"], "labels": list(f["labels"])} for f in policy_input.get("fields", [])]
    return []


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
