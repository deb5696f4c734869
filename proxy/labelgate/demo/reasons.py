"""Stable reasons of the ``demo`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

BAD_PARAMETER = "BAD_PARAMETER"
BAD_VALUE = "BAD_VALUE"
DUPLICATE_OUTPUT = "DUPLICATE_OUTPUT"
INVALID_LISTEN_ADDRESS = "INVALID_LISTEN_ADDRESS"
LISTEN_FAILED = "LISTEN_FAILED"
MISSING_INPUT = "MISSING_INPUT"
MIXED_REPRESENTATION = "MIXED_REPRESENTATION"
MODEL_UNLOADED = "MODEL_UNLOADED"
TOO_MANY_ROWS = "TOO_MANY_ROWS"
UNKNOWN_INPUT = "UNKNOWN_INPUT"
UNKNOWN_MODEL = "UNKNOWN_MODEL"
UNKNOWN_OUTPUT = "UNKNOWN_OUTPUT"
UNKNOWN_VERSION = "UNKNOWN_VERSION"
WRONG_DATATYPE = "WRONG_DATATYPE"
WRONG_SHAPE = "WRONG_SHAPE"
