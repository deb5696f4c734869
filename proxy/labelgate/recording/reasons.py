"""Stable reasons of the ``recording`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

RECORDING_BACKLOG = "RECORDING_BACKLOG"
RECORDING_KEY_INVALID = "RECORDING_KEY_INVALID"
RECORDING_KEY_UNREADABLE = "RECORDING_KEY_UNREADABLE"
RECORDING_SESSION_FULL = "RECORDING_SESSION_FULL"
SESSIONS_CURSOR_INVALID = "SESSIONS_CURSOR_INVALID"
SESSIONS_NOT_RECORDED = "SESSIONS_NOT_RECORDED"
SESSIONS_NO_POLICY = "SESSIONS_NO_POLICY"
# The sessions CLI could not read its store (a folder it may not read, PostgreSQL down).
SESSIONS_UNREADABLE = "SESSIONS_UNREADABLE"
SESSION_ID_INVALID = "SESSION_ID_INVALID"
SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
