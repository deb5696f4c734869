"""Stable reasons of the ``oip`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

CLASSIFICATION_UNSUPPORTED = "CLASSIFICATION_UNSUPPORTED"
REST_REQUEST_INVALID = "REST_REQUEST_INVALID"
# A request whose tensors, as the upstream would get them, exceed limits.max_message_bytes;
# or a gRPC request (routed or inference) whose parse would build more than that of
# messages' layouts (INVALID_ARGUMENT; gateway/wire_bounds.py).
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
# A BYTES output that is not UTF-8, asked for as JSON: the upstream's bytes (a 502).
REST_OUTPUT_NOT_TEXT = "REST_OUTPUT_NOT_TEXT"
REST_OUTPUT_NOT_JSON = "REST_OUTPUT_NOT_JSON"
# A REST upstream: an input its JSON cannot carry.
REST_UPSTREAM_INPUT_NOT_TEXT = "REST_UPSTREAM_INPUT_NOT_TEXT"
SHARED_MEMORY_UNSUPPORTED = "SHARED_MEMORY_UNSUPPORTED"
MALFORMED_TENSOR = "MALFORMED_TENSOR"
UPSTREAM_MALFORMED = "UPSTREAM_MALFORMED"
# A REST body's Content-Encoding other than identity, gzip or deflate (a 415).
REST_ENCODING_UNSUPPORTED = "REST_ENCODING_UNSUPPORTED"
# A REST body that claims gzip or deflate but does not inflate to exactly one stream.
REST_ENCODING_INVALID = "REST_ENCODING_INVALID"
REST_ROUTE_UNKNOWN = "REST_ROUTE_UNKNOWN"
REST_METHOD_NOT_ALLOWED = "REST_METHOD_NOT_ALLOWED"
# An inference request with more inputs than limits.max_inputs (INVALID_ARGUMENT / 400).
TOO_MANY_INPUTS = "TOO_MANY_INPUTS"
