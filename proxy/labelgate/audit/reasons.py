"""Stable reasons of the ``audit`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

AUDIT_EVENT_INVALID = "AUDIT_EVENT_INVALID"
AUDIT_EXPIRED = "AUDIT_EXPIRED"  # an append read by the writer after its deadline: not written
AUDIT_EXPORT_CURSOR_INVALID = "AUDIT_EXPORT_CURSOR_INVALID"
# audit forwarder --once: records left unexported, no committed mark vouching for them (exit 1).
AUDIT_EXPORT_INCOMPLETE = "AUDIT_EXPORT_INCOMPLETE"
# The log cannot be followed from the export cursor without skipping a record (exit 2).
AUDIT_EXPORT_LOG_BROKEN = "AUDIT_EXPORT_LOG_BROKEN"
AUDIT_FORWARDER_CONFIG = "AUDIT_FORWARDER_CONFIG"
AUDIT_KEY_EXISTS = "AUDIT_KEY_EXISTS"
AUDIT_KEY_INVALID = "AUDIT_KEY_INVALID"
AUDIT_LOG_LOCKED = "AUDIT_LOG_LOCKED"
AUDIT_LOG_MISSING = "AUDIT_LOG_MISSING"
AUDIT_SOCKET_INVALID = "AUDIT_SOCKET_INVALID"
AUDIT_SOCKET_IN_USE = "AUDIT_SOCKET_IN_USE"
AUDIT_WRITER_CONFIG = "AUDIT_WRITER_CONFIG"
