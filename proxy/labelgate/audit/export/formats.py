"""Pure encodings of exported records: JSON lines, RFC 5424 syslog messages, RFC 6587 framing.

An exported record (``LogRecord.document()``) is the audit event's own fields plus ``seq``
and ``hash`` (its place in the chain). The event's field set is closed and reviewed
(``labelgate.audit.records.EVENT_FIELDS``), so flattening cannot collide.

Syslog (RFC 5424)::

    <PRI>1 TIMESTAMP HOSTNAME labelgate - DECISION [labelgate@32473 event_id=".." seq=".." ...] {json}

- PRI: facility (default 13, "log audit") * 8 + a severity from the decision: allow 6
  (informational), mask and approvals held/granted 5 (notice), deny/approval denied or
  expired 4 (warning), error 3 (error).
- TIMESTAMP: the event's own time (when the call ended), not the time of export, so a
  backlog delivered late still sorts where it happened.
- MSGID: the decision, so a SIEM can route on it without parsing the body.
- STRUCTURED-DATA: the keys a SIEM correlates on (event_id first: de-duplicate on it).
  ``32473`` is the private enterprise number RFC 5612 reserves for documentation; an
  operator with their own PEN sets ``--sd-id name@PEN``. Values are caller text (a model
  name, a reason): besides RFC 5424's ``\\"``, ``\\\\`` and ``\\]``, every control character
  (C0, DEL, C1) and U+2028/U+2029 becomes ``\\uXXXX``, so no value can end a line and a
  receiver that splits on line breaks never reads a forged second record. (RFC 5424 keeps a
  backslash before any other character, so such a value reads as the escape's text; the
  JSON in MSG holds the exact value.)
- MSG: the exported record as JSON with every non-ASCII character and every control
  character escaped (``json_line``). Pure ASCII is a valid MSG-ANY without a BOM, which
  some collectors mishandle. The header fields are printable ASCII without spaces, and
  TIMESTAMP the event's time only when it is one whole RFC 3339 timestamp.

A message therefore holds no control character and no Unicode line separator anywhere.

RFC 6587 octet counting (TCP): ``LEN SP MSG`` with LEN the byte length of MSG, so messages
may contain newlines and a receiver never has to guess where one ends. UDP (RFC 5426): one
message per datagram; a message above the datagram limit is replaced by a compact one
(the correlation keys and ``"truncated": true``) rather than cut mid-JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_FACILITY = 13  # log audit
DEFAULT_SD_ID = "labelgate@32473"
APP_NAME = "labelgate"
SEVERITY = {
    "allow": 6,
    "mask": 5,
    "approval_required": 5,
    "approval_held": 5,
    "approval_granted": 5,
    "deny": 4,
    "approval_denied": 4,
    "approval_expired": 4,
    "error": 3,
}
# Correlation keys carried in the structured data, in this order.
SD_KEYS = ("event_id", "seq", "hash", "session_id", "request_id", "subject", "model", "decision", "reason")
# Matched whole (fullmatch): "$" also matches before a final newline.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII)
_SD_ID = re.compile(r"[!-~]{1,32}")
# What PARAM-VALUE escaping replaces: RFC 5424's three, and every character that could end a
# line for some receiver (C0, DEL, C1 with NEL, U+2028/U+2029) or not encode (a lone surrogate).
_SD_ESCAPED = re.compile(r'[\\"\]]|[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]')


def json_line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def check_sd_id(sd_id: str) -> str:
    """An SD-ID: 1-32 printable ASCII characters without ``=``, space, ``]`` or ``"``."""
    if not _SD_ID.fullmatch(sd_id) or any(c in sd_id for c in '= ]"'):
        raise ValueError(f"{sd_id!r} is not a valid RFC 5424 SD-ID (e.g. labelgate@32473)")
    return sd_id


def header_field(value: str, limit: int) -> str:
    """A header field of printable ASCII (no spaces), at most ``limit`` characters; ``-`` if empty."""
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or "-"


def sd_escape(value: str) -> str:
    """PARAM-VALUE escaping: backslash before ``"``, ``\\`` and ``]`` (RFC 5424 section 6.3.3),
    and ``\\uXXXX`` for a control character, a Unicode line separator or a lone surrogate."""
    return _SD_ESCAPED.sub(_sd_escaped, value)


def _sd_escaped(found: re.Match[str]) -> str:
    char = found.group()
    return "\\" + char if char in '\\"]' else f"\\u{ord(char):04x}"


def _sd_value(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if key == "subject" and isinstance(value, dict):
        value = value.get("id")
    if value is None or value == "":
        return None
    return str(value)[:256]


def syslog_message(
    document: dict[str, Any],
    *,
    hostname: str,
    facility: int = DEFAULT_FACILITY,
    sd_id: str = DEFAULT_SD_ID,
    max_bytes: int | None = None,
) -> bytes:
    """One RFC 5424 message for an exported record (without any transport framing)."""
    decision = str(document.get("decision", ""))
    pri = facility * 8 + SEVERITY.get(decision, 5)
    time = str(document.get("time", ""))
    timestamp = time if _TIMESTAMP.fullmatch(time) else "-"
    params = " ".join(
        f'{key}="{sd_escape(value)}"' for key in SD_KEYS if (value := _sd_value(document, key)) is not None
    )
    structured = f"[{sd_id} {params}]" if params else "-"
    head = (
        f"<{pri}>1 {timestamp} {header_field(hostname, 255)} {APP_NAME} - "
        f"{header_field(decision, 32)} {structured} "
    ).encode()
    body = json_line(document)[:-1]
    if max_bytes is not None and len(head) + len(body) > max_bytes:
        kept = ("event_id", "seq", "hash", "decision")
        compact: dict[str, Any] = {key: document[key] for key in kept if key in document}
        body = json_line({**compact, "truncated": True})[:-1]
    return head + body


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 section 3.4.1 framing for syslog over TCP."""
    return str(len(message)).encode("ascii") + b" " + message
