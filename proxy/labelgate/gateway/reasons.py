"""Stable reasons of the ``gateway`` package's errors (``LabelgateError.reason``).

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

BUNDLE_CATALOG_MISSING = "BUNDLE_CATALOG_MISSING"
# A held call's grant arrived after the catalog (or detectors) it was classified under were
# replaced: its decision under the new policy would read the old labels (``DecideStage._hold``).
CATALOG_CHANGED = "CATALOG_CHANGED"
CATALOG_MISSING = "CATALOG_MISSING"
DESCRIPTOR_SET_INVALID = "DESCRIPTOR_SET_INVALID"
DISCOVERY_TOO_MANY_MODELS = "DISCOVERY_TOO_MANY_MODELS"
# A REST call still running when a stop's grace ran out (503): the caller may retry elsewhere.
GATEWAY_STOPPING = "GATEWAY_STOPPING"
HASH_KEY_UNREADABLE = "HASH_KEY_UNREADABLE"
# The REST listener's own refusals, before a request reaches the app (rest_limits.py).
HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
INDEX_TOO_MANY_MODELS = "INDEX_TOO_MANY_MODELS"
# Anything but a LabelgateError reached a transport: a fixed status, never the text.
INTERNAL_ERROR = "INTERNAL_ERROR"
LISTEN_FAILED = "LISTEN_FAILED"
LISTEN_INVALID = "LISTEN_INVALID"
LISTEN_IN_USE = "LISTEN_IN_USE"
PATH_TOO_LONG = "PATH_TOO_LONG"
# A gRPC method the gateway serves nowhere (gateway/unserved.py).
METHOD_NOT_SERVED = "METHOD_NOT_SERVED"
# A gRPC request body that does not parse as its method's message (INVALID_ARGUMENT).
REQUEST_NOT_PARSED = "REQUEST_NOT_PARSED"
# The process holds limits.max_request_bytes_in_flight of requests already (gateway/inflight.py).
REQUEST_BYTES_EXHAUSTED = "REQUEST_BYTES_EXHAUSTED"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
# A REST request body whose Content-Type says it is neither JSON nor the binary tensor
# extension's bytes (HTTP 415): the binding reads every body as JSON.
REST_CONTENT_TYPE_UNSUPPORTED = "REST_CONTENT_TYPE_UNSUPPORTED"
# A REST request a browser sent for a page (an Origin header, a Sec-Fetch-Site of cross-site
# or same-site): refused (403) before anything of it is read (gateway/rest.py, NoBrowserPages).
REST_BROWSER_REQUEST_REFUSED = "REST_BROWSER_REQUEST_REFUSED"
REST_UPSTREAM_NO_STREAMS = "REST_UPSTREAM_NO_STREAMS"
REST_UPSTREAM_UNSUPPORTED = "REST_UPSTREAM_UNSUPPORTED"
ROUTE_INVALID = "ROUTE_INVALID"
SHARED_MEMORY_UNSUPPORTED = "SHARED_MEMORY_UNSUPPORTED"
STREAM_SPANS_UPSTREAMS = "STREAM_SPANS_UPSTREAMS"
# The process's split_values: hold streams hold limits.max_stream_held_bytes already
# (RESOURCE_EXHAUSTED; gateway/inflight.py): the stream whose hold would pass it ends.
STREAM_HELD_BYTES_EXHAUSTED = "STREAM_HELD_BYTES_EXHAUSTED"
# A ModelStreamInfer stream waited for its caller's next request longer than
# limits.stream_idle_seconds, with nothing of it unanswered (DEADLINE_EXCEEDED).
STREAM_IDLE = "STREAM_IDLE"
# The upstream ended a ModelStreamInfer stream with requests of the caller unanswered.
UPSTREAM_STREAM_ENDED = "UPSTREAM_STREAM_ENDED"
# The upstream's reply classifies to more fields than limits.max_fields, or to a path longer
# than limits.max_path_bytes (UNAVAILABLE / 502): the upstream's fault, where TOO_MANY_FIELDS
# and PATH_TOO_LONG are the caller's request's (INVALID_ARGUMENT / 400).
UPSTREAM_TOO_MANY_FIELDS = "UPSTREAM_TOO_MANY_FIELDS"
UPSTREAM_PATH_TOO_LONG = "UPSTREAM_PATH_TOO_LONG"
TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
# A gateway worker (``workers`` > 1) ended while starting without saying why (killed, a signal).
WORKER_EXITED = "WORKER_EXITED"
TOO_MANY_FIELDS = "TOO_MANY_FIELDS"
TOO_MANY_OUTPUTS = "TOO_MANY_OUTPUTS"
# The process has limits.max_open_streams streams open already (RESOURCE_EXHAUSTED).
TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
# The caller has limits.max_open_streams_per_caller streams open already (RESOURCE_EXHAUSTED).
CALLER_STREAMS_EXHAUSTED = "CALLER_STREAMS_EXHAUSTED"
