"""Prometheus metrics of the gateway (served by the admin listener at /metrics).

No ``*_created`` series: they double every counter and histogram for a timestamp nobody
graphs (``disable_created_metrics``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar, cast

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
# Label values come from bounded sets (methods, outcomes, codes, the models' own bound), but
# past this many the lookup is simply not remembered rather than grow without end.
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


async def watch_loop_lag(interval: float = 1.0) -> None:
    """Sleep ``interval`` seconds, again and again; the overshoot is the event loop's lag (what
    a call arriving then would wait before the loop even looks at it)."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval)
        EVENT_LOOP_LAG.set(max(0.0, time.monotonic() - started - interval))
