"""Scenarios 5 and 6, until the features they measure land.

Each is one function with the same signature as the others (``Bench -> Scenario``):
replacing the body with the measurement is all it takes to add it. Their figure ids are
already named by the targets (``labelgate.bench.targets``), so the targets table picks the
numbers up as soon as they exist.
"""

from __future__ import annotations

from labelgate.bench.context import Bench
from labelgate.bench.figures import Scenario, not_available


def run_audit(bench: Bench) -> Scenario:
    """To come: throughput with durable auditing against auditing off (figure
    ``audit.durable.c32.throughput``: value with auditing, baseline without, ratio)."""
    return not_available(
        "audit",
        "Audit durability: throughput with durable auditing against auditing off",
        "not available yet: the gateway does not write durable audit records yet (audit issue)",
    )


def run_approvals(bench: Bench) -> Scenario:
    """To come: time from grant to released call, on one node and across two replicas
    (figures ``approvals.one_node.grant_to_release_ms`` and ``approvals.two_replicas...``)."""
    return not_available(
        "approvals",
        "Approvals: time from grant to released call, one node and two replicas",
        "not available yet: approval holds are not implemented yet (approvals issue)",
    )
