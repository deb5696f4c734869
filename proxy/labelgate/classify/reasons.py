"""Stable reasons of the ``classify`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

DEFAULT_LABEL_INVALID = "DEFAULT_LABEL_INVALID"
FIELD_LABELS_INVALID = "FIELD_LABELS_INVALID"
DETECTORS_INVALID = "DETECTORS_INVALID"
CATALOG_INVALID = "CATALOG_INVALID"
BACKEND_LABELS_INVALID = "BACKEND_LABELS_INVALID"
PLACEHOLDER_KEY_INVALID = "PLACEHOLDER_KEY_INVALID"
MESSAGE_TOO_DEEP = "MESSAGE_TOO_DEEP"
MESSAGE_STRING_INVALID = "MESSAGE_STRING_INVALID"
# A typed reply holds more values than its classification may visit (limits.max_message_values).
MESSAGE_TOO_MANY_VALUES = "MESSAGE_TOO_MANY_VALUES"
OUTPUT_NAME_DETECTED = "OUTPUT_NAME_DETECTED"
# An output's shape, its dimensions read as digits, holds what a detector finds.
OUTPUT_SHAPE_DETECTED = "OUTPUT_SHAPE_DETECTED"
STREAM_HELD_TOO_LARGE = "STREAM_HELD_TOO_LARGE"
STREAM_OUTPUT_CHANGED = "STREAM_OUTPUT_CHANGED"
# A stream split a detected value across its messages: a routed one (classify/split_values.py),
# or a ModelStreamInfer reply's numbers right after binary bytes (classify/carried_forms.py).
STREAM_VALUE_SPLIT = "STREAM_VALUE_SPLIT"
