"""How long each measurement runs: the full bench, the quick one, or custom durations.

Full (``make bench``) aims at under 10 minutes and quick (``make bench-quick``) at under 2
on a two-core machine; ``--duration`` shrinks every measurement for smoke tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    mode: str
    out_dir: Path
    warmup_s: float  # per measured configuration, before its first run
    run_s: float  # each data-path measurement
    scaling_run_s: float  # each rows-per-call measurement
    max_run_s: float  # a run stretched to complete enough slow calls stops here
    rows: tuple[int, ...]  # the scaling scenario's rows per call
    datapath_rows: int
    concurrency: tuple[int, ...]
    engine_run_s: float  # each engine measurement of bench.policy_engines
    detector_s: float  # CPU seconds per detector case
    detector_bytes: int  # free text per detector case
    profile_s: float  # py-spy on the gateway; 0 turns profiling off
    drift_check: bool  # measure direct calls again at the end
    audit_rounds: int = 2  # off/on measurement pairs per concurrency, interleaved against drift
    approval_holds: int = 20  # held calls per approvals setup (one node, two replicas)
    charts: bool = True
    only: tuple[str, ...] = ()  # scenario names; empty means all

    def wants(self, scenario: str) -> bool:
        return not self.only or scenario in self.only


def full(out_dir: Path) -> Plan:
    return Plan(
        mode="full",
        out_dir=out_dir,
        warmup_s=2.0,
        run_s=8.0,
        scaling_run_s=5.0,
        max_run_s=20.0,
        rows=(1, 100, 1000, 10000),
        datapath_rows=100,
        concurrency=(1, 32),
        engine_run_s=2.0,
        detector_s=1.5,
        detector_bytes=1_000_000,
        profile_s=8.0,
        drift_check=True,
    )


def quick(out_dir: Path) -> Plan:
    return dataclasses.replace(
        full(out_dir),
        mode="quick",
        warmup_s=0.3,
        run_s=1.0,
        scaling_run_s=1.0,
        max_run_s=3.0,
        engine_run_s=0.5,
        detector_s=0.3,
        detector_bytes=200_000,
        profile_s=0.0,
        drift_check=False,
        audit_rounds=1,
        approval_holds=10,
    )


def custom(base: Plan, seconds: float) -> Plan:
    """Every measurement ``seconds`` long (warm-up a quarter of it): for smoke tests."""
    return dataclasses.replace(
        base,
        mode="custom",
        warmup_s=seconds / 4,
        run_s=seconds,
        scaling_run_s=seconds,
        max_run_s=seconds * 4,
        engine_run_s=seconds,
        detector_s=seconds,
        detector_bytes=min(base.detector_bytes, 100_000),
        profile_s=min(base.profile_s, seconds),
        audit_rounds=1,
        approval_holds=min(base.approval_holds, max(3, round(seconds * 10))),
    )
