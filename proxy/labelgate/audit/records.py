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
from collections.abc import Callable, Iterable
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
        "decision_id",  # OPA's decision_id of the last decision; null when it was cached:
        "cached",  # true (present only then): the last decision was served by the decision cache,
        "cached_from",  # and this is the decision_id of the evaluation it was stored from
        # [{"phase", "hash", "superseded"?}]: sha256 (hex) of each decision's input (the cache
        # key), in order; "superseded": true on one a later decision of its phase replaced
        "decision_inputs",
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


_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_BuiltEncoder = tuple[dict[int, Any], Callable[[Any, int], Any]]


class JsonEncoder:
    """``json.JSONEncoder(**options).encode``, without building the C encoder on every call.

    ``JSONEncoder.encode`` builds one per call because the C encoder's ``markers`` dict (its
    check for circular references) must start empty. Here each built C encoder keeps its
    own dict and serves one caller at a time (idle ones wait in a list: ``pop`` and
    ``append`` are atomic, so threads never share one); an encode that fails half-way
    leaves entries in the dict, so it is cleared then. Same output, same errors.
    """

    def __init__(self, **options: Any) -> None:
        self._reference = json.JSONEncoder(**options)
        reference = self._reference
        self._idle: list[_BuiltEncoder] = []
        # The cases in which JSONEncoder.encode itself uses the C encoder, and only if it is
        # built here as this Python builds it (its arguments are not a public interface).
        self._fast = _C_MAKE_ENCODER is not None and reference.indent is None and reference.check_circular
        if self._fast:
            probe = {"b": [1, 2.5, None, True, "é"], "a": {}}
            try:
                self._fast = "".join(self._build()[1](probe, 0)) == reference.encode(probe)
            except Exception:
                self._fast = False

    def _build(self) -> _BuiltEncoder:
        reference, markers = self._reference, dict[int, Any]()
        strings = json.encoder.encode_basestring
        if reference.ensure_ascii:
            strings = json.encoder.encode_basestring_ascii
        encoder = _C_MAKE_ENCODER(
            markers,
            reference.default,
            strings,
            reference.indent,
            reference.key_separator,
            reference.item_separator,
            reference.sort_keys,
            reference.skipkeys,
            reference.allow_nan,
        )
        return markers, encoder

    def encode(self, obj: Any) -> str:
        try:
            built = self._idle.pop()
        except IndexError:
            if not self._fast:
                return self._reference.encode(obj)
            built = self._build()
        try:
            return "".join(built[1](obj, 0))
        except BaseException:
            built[0].clear()
            raise
        finally:
            self._idle.append(built)


_CANONICAL = JsonEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
    if type(event) is not dict or not _plainly_valid_event(event):
        _validate_exactly(event)  # finds what is wrong and says where, or accepts an unusual event
    valid: dict[str, Any] = event
    return valid


def _validate_exactly(event: Any) -> None:
    """The reference: every rule in order, with a message saying which one an event breaks."""
    if not isinstance(event, dict):
        raise AuditEventInvalid(f"an event is a JSON object, not {type(event).__name__}")
    unknown = sorted(_printable(str(key)) for key in event if key not in EVENT_FIELDS)
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
    # Checked as a string first: a list or object (unhashable) must be refused, not raise.
    if not isinstance(event["decision"], str) or event["decision"] not in DECISIONS:
        raise AuditEventInvalid(
            f"decision {str(event['decision'])[:40]!r} is not one of {', '.join(sorted(DECISIONS))}"
        )
    _check_value(event, "event", 0)


# The usual spelling of a UUID: ``uuid.UUID`` accepts every string this matches (and more:
# braces, ``urn:uuid:``, no dashes, ...; those take the reference path).
_PLAIN_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# No event field is named like a data value, so the event's own keys need no such check.
_FIELDS_ARE_PLAIN = not any(_DATA_KEY.search(field) for field in EVENT_FIELDS)


def _plainly_valid_event(event: dict[str, Any]) -> bool:
    """The common case fast: True only if ``_validate_exactly`` would accept ``event``.

    Anything unusual (a limit reached, a suspicious key, a type that is not exactly a JSON
    type, an unusual UUID spelling) answers False, and the reference decides.
    """
    if not _FIELDS_ARE_PLAIN or not EVENT_FIELDS.issuperset(event):
        return False
    time, event_id, decision = event.get("time"), event.get("event_id"), event.get("decision")
    if type(time) is not str or not time or type(decision) is not str or decision not in DECISIONS:
        return False
    if type(event_id) is not str or _PLAIN_UUID.fullmatch(event_id) is None:
        return False
    for key in event:
        if type(key) is not str:
            return False
    return _plain_values(event.values(), 1)


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


def _plain_values(values: Iterable[Any], depth: int) -> bool:
    """True only if ``_check_value`` accepts each of ``values``, all sitting at ``depth``.

    Scalars are judged here, without a call each; only containers recurse.
    """
    if depth > MAX_DEPTH:
        return False
    for value in values:
        kind = type(value)
        if kind is str:
            if len(value) > MAX_STRING or not (value.isascii() or _encodes(value)):
                return False
        elif value is None or kind is bool or kind is int:
            pass
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif kind is dict:
            if not _plain_dict(value, depth):
                return False
        elif kind is list:
            if len(value) > MAX_ITEMS or not _plain_values(value, depth + 1):
                return False
        else:
            return False
    return True


def _plain_dict(value: dict[Any, Any], depth: int) -> bool:
    if len(value) > MAX_ITEMS:
        return False
    for key in value:
        if type(key) is not str or len(key) > MAX_STRING:
            return False
        if _data_key_seen.get(key) is not False and _is_data_key(key):
            return False
        if not (key.isascii() or _encodes(key)):
            return False
    return _plain_values(value.values(), depth + 1)


def _encodes(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a lone surrogate (JSON ``"\\ud800"``) does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` as it may go into an error message (a reply that must itself encode)."""
    return text if _encodes(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


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
        if not _encodes(value):
            raise AuditEventInvalid(f"{where} is not valid Unicode text (a lone surrogate)")
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
            if len(key) > MAX_STRING:  # not quoted: the message would be as long
                raise AuditEventInvalid(f"{where} has a key longer than {MAX_STRING} characters")
            if not _encodes(key):
                raise AuditEventInvalid(
                    f"{where} has a key that is not valid Unicode text (a lone surrogate)"
                )
            if _DATA_KEY.search(key):
                raise AuditEventInvalid(
                    f"{where}.{key}: a field named like a data value; audit events carry names, "
                    "labels, paths and reasons, never data"
                )
            _check_value(item, f"{where}.{key}", depth + 1)
        return
    raise AuditEventInvalid(f"{where} is a {type(value).__name__}, not a JSON value")
