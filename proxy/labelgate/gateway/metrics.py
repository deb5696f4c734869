"""Prometheus metrics of the gateway (served by the admin listener at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("labelgate_calls_total", "Calls by method and outcome", ["method", "outcome"])
DECISION_SECONDS = Histogram(
    "labelgate_decision_seconds",
    "Time to a policy decision",
    ["engine", "phase"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
MASKED_FIELDS = Counter("labelgate_masked_fields_total", "Masked fields by their label", ["label"])
ACTIVE_STREAMS = Gauge("labelgate_active_streams", "Streaming calls in progress")
ERRORS = Counter("labelgate_errors_total", "Errors by kind", ["kind"])
