"""Prometheus metrics of the gateway (served by the admin listener at /metrics).

No ``*_created`` series: they double every counter and histogram for a timestamp nobody
graphs (``disable_created_metrics``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from google.protobuf import descriptor_pool
from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

from labelgate import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

CALLS = Counter(
    "labelgate_calls_total",
    "Calls by method, outcome and the gRPC status code returned",
    ["method", "outcome", "code"],
)
CALL_SECONDS = Histogram(
    "labelgate_call_duration_seconds",
    "End-to-end time of a call in the gateway, from its arrival to its record",
    ["method", "model", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
DECISION_SECONDS = Histogram(
    "labelgate_decision_seconds",
    "Time to a policy decision",
    ["engine", "phase"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
MASKED_FIELDS = Counter("labelgate_masked_fields_total", "Masked fields by their label", ["label"])
ACTIVE_STREAMS = Gauge("labelgate_active_streams", "Streaming calls in progress")
REQUEST_BYTES_IN_FLIGHT = Gauge(
    "labelgate_request_bytes_in_flight",
    "Request bytes the calls in progress hold (limits.max_request_bytes_in_flight)",
)
STREAM_HELD_BYTES = Gauge(
    "labelgate_stream_held_bytes",
    "Bytes the split_values: hold streams in progress hold (limits.max_stream_held_bytes)",
)
REQUESTS_SHED = Counter(
    "labelgate_requests_shed_total",
    "Requests refused at once, before anything was read, by the bound they met "
    "(request_bytes: limits.max_request_bytes_in_flight; open_streams: limits.max_open_streams; "
    "open_streams_per_caller: limits.max_open_streams_per_caller; "
    "health_watches: limits.max_health_watches; reflection_streams: limits.max_reflection_streams), "
    "and hold streams ended when what they hold would pass it "
    "(stream_held_bytes: limits.max_stream_held_bytes)",
    ["bound"],
)
EVENT_LOOP_LAG = Gauge(
    "labelgate_event_loop_lag_seconds",
    "How late the event loop last ran a timer (a blocked loop delays every call)",
)
ERRORS = Counter("labelgate_errors_total", "Errors by kind", ["kind"])
# Per upstream (``default`` is the ``upstream:`` route, others their ``upstreams:`` name).
UPSTREAM_UP = Gauge(
    "labelgate_upstream_up", "1 when the upstream answered the last readiness probe, else 0", ["upstream"]
)
UPSTREAM_SECONDS = Histogram(
    "labelgate_upstream_call_duration_seconds",
    "Time of a unary call to an upstream, by upstream and outcome (ok, or the status code)",
    ["upstream", "protocol", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BUILD = Info("labelgate_build", "The running labelgate build")
BUILD.info({"version": __version__})


Metric = TypeVar("Metric", bound=MetricWrapperBase)
# (metric, label values) -> its child. ``labels()`` validates and locks on every call; a
# child never changes once made (nothing here removes one), so each is looked up once.
_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
# Label values come from bounded sets (``method_labels``, outcomes, codes, the models' own
# bound), but past this many the lookup is simply not remembered rather than grow without end.
_MAX_CHILDREN = 8192


def child(metric: Metric, *values: str) -> Metric:
    """``metric.labels(*values)`` (positional, in the metric's label order), remembered."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*values)
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = found
    return cast(Metric, found)


# -- method labels -------------------------------------------------------------------------
# The caller names the service and the method, before anything authenticates it: as a label
# value each name would be a new series in every family that has a method label (dozens per
# name, kept until the process ends). So a service is named only when the gateway serves it --
# its own (the Open Inference Protocol, health, reflection) and its routes', all from code and
# configuration (``serve_services``, at start) -- and every call to any other service is one
# ``UNSERVED`` label value, service and method alike. Of a served service, a method is named
# only when the gateway has its descriptor (in this process's descriptor pool, loaded at
# start); any other (an opaque route serves every method name under its prefix) is
# ``OTHER_METHOD`` of its service. The log line and the audit record keep the name.
OTHER_METHOD = "other"
UNKNOWN = "unknown"
UNSERVED = "unserved"
# Longer names (configured ones, or a descriptor's) are not label values either.
MAX_LABEL_CHARS = 128
_SERVED: set[str] = set()  # from code and configuration: bounded by them
_DESCRIBED: dict[str, tuple[str, str]] = {}  # method -> its labels; bounded by the pool


def serve_services(services: Iterable[str]) -> None:
    """Name the services the gateway serves as label values (the gateway's own and its
    routes'; called at start, before the first call)."""
    _SERVED.update(name for name in services if 0 < len(name) <= MAX_LABEL_CHARS)


def method_labels(full_method: str) -> tuple[str, str]:
    """The (service, method) label values of ``/package.Service/Method``."""
    found = _DESCRIBED.get(full_method)
    if found is not None:
        return found
    parts = full_method.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return UNKNOWN, UNKNOWN
    service, method = parts[1], parts[2]
    if service not in _SERVED:
        return UNSERVED, UNSERVED
    if len(method) <= MAX_LABEL_CHARS and _described(service, method):
        _DESCRIBED[full_method] = (service, method)
        return service, method
    return service, OTHER_METHOD


def method_label(full_method: str) -> str:
    """``method_labels`` as one ``/service/method`` value (``labelgate_calls_total``)."""
    service, method = method_labels(full_method)
    return full_method if full_method in _DESCRIBED else f"/{service}/{method}"


def _described(service: str, method: str) -> bool:
    try:
        found = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return False
    return method in found.methods_by_name


async def watch_loop_lag(interval: float = 1.0) -> None:
    """Sleep ``interval`` seconds, again and again; the overshoot is the event loop's lag (what
    a call arriving then would wait before the loop even looks at it)."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval)
        EVENT_LOOP_LAG.set(max(0.0, time.monotonic() - started - interval))
