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

``truncated`` the explicit marker written once, before the call that takes the session past
              its size cap; that call is stored after it, and so is every call released
              before the recorder learned of the cap, while later calls of the session are
              refused (``RECORDING_SESSION_FULL``). Recordings written before that rule end
              at their marker: the calls after it were released unrecorded::

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
import math
import re
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from labelgate.policy.cache import cached_from
from labelgate.timestamps import format_time, parse_time, utc_now

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.calls import CallRecord

__all__ = ["format_time", "parse_time", "utc_now"]  # re-exported for the stores

FORMAT = 1
# What a store did with an entry: stored below the cap; stored after the marker it wrote, the
# entry taking the session past the cap; stored past the cap (released before the recorder
# knew of it). Every entry of a released call is stored: a store never drops one.
Admission = Literal["store", "truncate", "over"]


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


# What a marker means, as viewers say it: a marker's own ``note`` is not shown, because a
# recording written before entries were stored after markers has the old note ("every later
# call ... not recorded") above calls recorded since.
MARKER_MEANING = (
    "the calls listed after this mark were released before the gateway knew, and the session's "
    "later calls were refused; a recording made before 2026-12-07 may miss calls released after it"
)


def truncation_marker(entry: dict[str, Any], limit: int, recorded: int) -> dict[str, Any]:
    return {
        "kind": "truncated",
        "time": entry["time"],
        "session_id": entry["session_id"],
        "request_id": entry.get("request_id"),
        "limit_bytes": limit,
        "recorded_bytes": recorded,
        "note": "session size cap reached: this call and the calls released before the gateway knew are "
        "recorded after this marker; later calls of the session are refused",
    }


def admit(recorded: int, truncated: bool, size: int, limit: int) -> Admission:
    """What to do with an entry of ``size`` bytes for a session holding ``recorded`` bytes
    (``truncated``: its marker is written). The entry is stored whatever the answer: its call
    was released (a store that dropped it let a released call go unrecorded: review); the cap
    is kept by refusing the session's later calls (``SessionRecorder.reserve``), so a session
    passes it by what was in flight when the recorder learned of it. An entry that fits is
    below the cap whatever came before (the cap may have been raised since the marker).
    """
    if recorded + size <= limit:
        return "store"
    return "over" if truncated else "truncate"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_name(session_id: str) -> str:
    """A safe, unique file name for a client-chosen session id (any text up to 128 characters)."""
    slug = _UNSAFE.sub("_", session_id).strip("._")[:64] or "session"
    return f"{slug}-{hashlib.sha256(session_id.encode()).hexdigest()[:16]}.jsonl"


# What readers rely on in a stored entry, as its writers (``call_entry``, ``truncation_marker``)
# give it: a key maps to a type, a nested object's shape, or a one-item list (a list of such);
# a key ending in ``?`` may be missing or null (an older writer left it out). Keys not named
# here are let through. ``int`` means an integer that fits 64 bits (``bool`` is not one).
Shape: TypeAlias = "type | dict[str, Shape] | list[Shape]"
_MESSAGE: Shape = {"type": str, "base64": str, "bytes": int}
_CALL: Shape = {
    "time": str,
    "session_id": str,
    "request_id": str,
    "method": str,
    "client_session_id?": str,
    "peer?": str,
    "model?": str,
    "subject?": {"id": str, "name?": str, "groups": [str], "auth": str},
    "request?": {
        "model?": str,
        "model_version?": str,
        "inputs?": [{"name": str, "datatype": str, "shape": [int]}],
        "outputs?": [str],
    },
    "request_message?": _MESSAGE,
    "decision": {
        "outcome": str,
        "reason?": str,
        "labels?": [str],
        "masked?": [{"path": str, "strategy": str, "label?": str}],
        "fields?": [{"path": str, "labels": [str]}],
        "phases?": [
            {
                "phase": str,
                "allow": bool,
                "reason?": str,
                "engine?": str,
                "revision?": str,
                "decision_id?": str,
                "cached?": bool,
                "cached_from?": str,
            }
        ],
    },
    "upstream_status?": str,
    "latency_ms?": float,
    "response?": _MESSAGE,
}
_MARKER: Shape = {
    "time": str,
    "session_id": str,
    "request_id?": str,
    "limit_bytes": int,
    "recorded_bytes": int,
    "note?": str,
}
_SHAPES = {"call": _CALL, "truncated": _MARKER}
_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false"}
_INT_BOUND = 2**63


def checked(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` if it is a call, a marker or a reader's ``damaged`` entry of the shape readers
    rely on; otherwise a ``damaged`` entry saying what is wrong, so that one edited (or foreign)
    entry is shown as such and never stops the rest of the session from showing."""
    kind = entry.get("kind")
    if kind == "damaged":
        return entry
    shape = _SHAPES.get(kind) if isinstance(kind, str) else None
    problem = "not an entry of a known kind" if shape is None else _problem(entry, shape, "")
    if problem is None:
        return entry
    kept: dict[str, Any] = {
        key: entry[key] for key in ("time", "session_id", "request_id") if isinstance(entry.get(key), str)
    }
    seq = entry.get("seq")
    what = f"a {kind} entry" if shape is not None else "an entry"
    note = f"{what} not of the recorded shape ({problem}; edited?): not shown"
    return {**kept, "kind": "damaged", "line": seq if _is_int(seq) else "?", "note": note}


def _problem(value: Any, shape: Shape, where: str) -> str | None:
    """What in ``value`` (at ``where``) does not have ``shape``; None if nothing."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the entry'} is not an object"
        for key, inner in shape.items():
            name = key.removesuffix("?")
            path = f"{where}.{name}" if where else name
            if value.get(name) is None:
                if key.endswith("?"):
                    continue
                return f"{path} is missing"
            if found := _problem(value[name], inner, path):
                return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        for index, item in enumerate(value):
            if found := _problem(item, shape[0], f"{where}[{index}]"):
                return found
        return None
    if shape is int:
        fits = _is_int(value)
    elif shape is float:  # a JSON number: an integer too
        fits = _is_int(value) or (isinstance(value, float) and math.isfinite(value))
    else:
        fits = isinstance(value, shape)
    return None if fits else f"{where} is not {_TYPE_NAMES.get(shape, shape.__name__)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT_BOUND <= value < _INT_BOUND


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
