"""Stable reasons of the ``enforce`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

MASK_INVALID = "MASK_INVALID"
HASH_KEY_INVALID = "HASH_KEY_INVALID"
UPSTREAM_STREAM_ERROR = "UPSTREAM_STREAM_ERROR"
# A routed reply that protobuf cannot encode: a proto2 required field left unset, by the
# upstream or by a mask no valid value can stand for.
MESSAGE_REQUIRED_MISSING = "MESSAGE_REQUIRED_MISSING"
MASKED_REQUIRED_FIELD = "MASKED_REQUIRED_FIELD"
