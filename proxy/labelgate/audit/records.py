"""Pure functions for audit records: event validation, canonical JSON and the hash chain.

A stored line is ``canonical_json({"seq", "prev", "hash", "event"}) + "\\n"`` where

    leaf  = SHA-256(0x00 || canonical_json({"event": event, "seq": seq}))
    hash  = SHA-256(0x01 || prev || leaf)          (prev and leaf as raw 32 bytes)

The leading byte separates the two kinds of hash input, so a leaf can never be passed off
as a chain link or the other way round; the leaf covers ``seq`` so a record cannot be
moved to another position without its hash changing. The first record's ``prev`` is
``GENESIS`` (64 zeros). Hashes are lowercase hex.

Canonical JSON is Python's ``json.dumps`` with sorted keys, no whitespace, UTF-8 (not
``\\uXXXX`` escapes) and no NaN/Infinity. Numbers keep their Python ``repr``; a verifier
in another language must format them the same way (events use integers where it matters).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from typing import Any

from labelgate.errors import LabelgateError

GENESIS = "0" * 64
LEAF_PREFIX = b"\x00"
CHAIN_PREFIX = b"\x01"
RECORD_KEYS = frozenset({"seq", "prev", "hash", "event"})

# The top-level fields the gateway may send. Anything else is refused: a new field is a
# deliberate change here, reviewed for what it could leak, not something that slips in.
EVENT_FIELDS = frozenset(
    {
        "time",  # RFC 3339 UTC string, set by the gateway when the call ended
        "event_id",  # UUID, unique per event: consumers de-duplicate on it
        "session_id",
        "request_id",
        "subject",  # {"id" (qualified: jwt:<iss>#<sub>, mtls:<name>, api_key:<id>), "name", "groups", "auth"}
        "peer",
        "service",
        "method",
        "model",
        "model_version",
        "phase",  # request | response | (empty for calls refused before a phase)
        "labels",  # the label set of the fields involved
        "masked",  # [{"path", "strategy", "label"?}]
        "decision",  # one of DECISIONS
        "reason",
        "engine",
        "policy_revision",
        "decision_id",  # OPA's decision_id
        "decision_inputs",  # [{"phase", "hash"}]: sha256 (hex) of each decision's input (the cache key)
        "approval_id",
        "approvers",
        "upstream_status",
        "latency_ms",
        "details",  # small extension map: names and counts only
    }
)
REQUIRED_FIELDS = ("time", "event_id", "decision")
DECISIONS = frozenset(
    {
        "allow",
        "mask",
        "deny",
        "error",
        "approval_required",
        "approval_held",
        "approval_granted",
        "approval_denied",
        "approval_expired",
    }
)

# A tripwire, not the guarantee: the gateway builds events from names, labels, paths and
# reasons only. A key that looks like it carries data (``value``, ``old_values``,
# ``fp32_contents``, ``payload``) means some code path started copying data into the
# record, and the writer refuses it rather than make a confidential value durable forever.
_DATA_KEY = re.compile(r"(?:^|_)(?:values?|contents|payload)$", re.IGNORECASE)
MAX_DEPTH = 6
MAX_STRING = 4096
MAX_ITEMS = 1024


class AuditEventInvalid(LabelgateError):
    """The writer refuses an event; nothing is written and the gateway must deny the call."""

    def __init__(self, message: str) -> None:
        super().__init__("AUDIT_EVENT_INVALID", message)


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(obj: Any) -> bytes:
    return _CANONICAL.encode(obj).encode("utf-8")


def leaf_hash(seq: int, event: dict[str, Any]) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical_json({"event": event, "seq": seq})).digest()


def chain_hash(prev_hex: str, leaf: bytes) -> str:
    return hashlib.sha256(CHAIN_PREFIX + bytes.fromhex(prev_hex) + leaf).hexdigest()


def record_hash(seq: int, prev_hex: str, event: dict[str, Any]) -> str:
    return chain_hash(prev_hex, leaf_hash(seq, event))


def make_line(seq: int, prev_hex: str, event: dict[str, Any]) -> tuple[bytes, str]:
    """The stored line (with its newline) and the record's chain hash.

    Byte for byte ``canonical_json({"seq", "prev", "hash", "event"}) + b"\\n"`` and
    ``record_hash``, with the event serialised once instead of twice: sorted keys put
    ``event`` first in both documents, and ``seq`` (an int) and the hex digests need no
    escaping, so both are the event's canonical bytes with fixed text around them.
    """
    body, number = canonical_json(event), str(seq).encode("ascii")
    leaf = hashlib.sha256(b"".join((LEAF_PREFIX, b'{"event":', body, b',"seq":', number, b"}"))).digest()
    digest = chain_hash(prev_hex, leaf)
    hashes = (b',"hash":"', digest.encode("ascii"), b'","prev":"', prev_hex.encode("ascii"), b'","seq":')
    return b"".join((b'{"event":', body, *hashes, number, b"}\n")), digest


_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_hex_digest(value: Any) -> bool:
    return isinstance(value, str) and _HEX_DIGEST.fullmatch(value) is not None


def validate_event(event: Any) -> dict[str, Any]:
    """Check an event's shape; return it unchanged or raise ``AuditEventInvalid``."""
    if not isinstance(event, dict):
        raise AuditEventInvalid(f"an event is a JSON object, not {type(event).__name__}")
    unknown = sorted(str(key) for key in event if key not in EVENT_FIELDS)
    if unknown:
        raise AuditEventInvalid(f"unknown event field(s): {', '.join(unknown)}")
    missing = [key for key in REQUIRED_FIELDS if event.get(key) in (None, "")]
    if missing:
        raise AuditEventInvalid(f"missing event field(s): {', '.join(missing)}")
    if not isinstance(event["time"], str):
        raise AuditEventInvalid("time must be an RFC 3339 string")
    try:
        uuid.UUID(str(event["event_id"]))
    except ValueError:
        raise AuditEventInvalid("event_id must be a UUID") from None
    if event["decision"] not in DECISIONS:
        raise AuditEventInvalid(
            f"decision {str(event['decision'])[:40]!r} is not one of {', '.join(sorted(DECISIONS))}"
        )
    if not _plainly_valid(event, 0):
        _check_value(event, "event", 0)  # finds what is wrong and says where, or accepts a subclass
    return event


# What ``_DATA_KEY`` said about each key seen so far: events use a small vocabulary of keys.
_data_key_seen: dict[str, bool] = {}
_DATA_KEY_SEEN_MAX = 4096


def _is_data_key(key: str) -> bool:
    known = _data_key_seen.get(key)
    if known is None:
        known = _DATA_KEY.search(key) is not None
        if len(_data_key_seen) < _DATA_KEY_SEEN_MAX:
            _data_key_seen[key] = known
    return known


def _plainly_valid(value: Any, depth: int) -> bool:
    """The common case fast: True only if ``_check_value`` would accept ``value``.

    No paths are built for messages here; anything unusual (a limit reached, a suspicious
    key, a type that is not exactly a JSON type) answers False, and ``_check_value`` decides.
    """
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_STRING
    if kind is dict:
        if len(value) > MAX_ITEMS:
            return False
        for key, item in value.items():
            if type(key) is not str or _is_data_key(key) or not _plainly_valid(item, depth + 1):
                return False
        return True
    if kind is list:
        if len(value) > MAX_ITEMS:
            return False
        for item in value:  # noqa: SIM110 - all() over a generator costs more on this path
            if not _plainly_valid(item, depth + 1):
                return False
        return True
    if value is None or kind is bool or kind is int:
        return True
    if kind is float:
        return math.isfinite(value)
    return False


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AuditEventInvalid(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditEventInvalid(f"{where} is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise AuditEventInvalid(f"{where} is longer than {MAX_STRING} characters")
        return
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise AuditEventInvalid(f"{where} has more than {MAX_ITEMS} items")
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise AuditEventInvalid(f"{where} has more than {MAX_ITEMS} keys")
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditEventInvalid(f"{where} has a non-string key")
            if _DATA_KEY.search(key):
                raise AuditEventInvalid(
                    f"{where}.{key}: a field named like a data value; audit events carry names, "
                    "labels, paths and reasons, never data"
                )
            _check_value(item, f"{where}.{key}", depth + 1)
        return
    raise AuditEventInvalid(f"{where} is a {type(value).__name__}, not a JSON value")
