# ruff: noqa: S105 - these name refusals; none of them is a secret
"""Stable reasons of the ``admin`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

OIDC_SECRET_EMPTY = "OIDC_SECRET_EMPTY"
OIDC_SECRET_UNREADABLE = "OIDC_SECRET_UNREADABLE"
SESSION_KEY_TOO_SHORT = "SESSION_KEY_TOO_SHORT"
SESSION_KEY_UNREADABLE = "SESSION_KEY_UNREADABLE"
