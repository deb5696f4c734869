"""Stable reasons of the ``enforce`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

MASK_INVALID = "MASK_INVALID"
HASH_KEY_INVALID = "HASH_KEY_INVALID"
UPSTREAM_STREAM_ERROR = "UPSTREAM_STREAM_ERROR"
