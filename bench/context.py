"""What every scenario gets: the plan, a work folder, the load generator, the process stack."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.load import Ghz, LoadRun, ghz_binary
from bench.plan import Plan
from bench.procs import opa
from bench.stack import REPO, Stack, bearer_token, request_bytes

# At least this many calls per measurement, even when one call takes longer than the run
# (up to the plan's max_run_s).
MIN_CALLS = 5


@dataclass
class Bench:
    plan: Plan
    work_dir: Path
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the gateway profiles

    @cached_property
    def ghz(self) -> Ghz:
        return Ghz(ghz_binary(REPO), REPO / "proto", self.work_dir)

    @cached_property
    def stack(self) -> Stack:
        return Stack(self.work_dir, opa())

    @cached_property
    def metadata(self) -> dict[str, str]:
        return {"authorization": f"Bearer {bearer_token()}"}

    def request_file(self, rows: int) -> Path:
        path = self.work_dir / f"request-{rows}-rows.bin"
        if not path.is_file():
            path.write_bytes(request_bytes(rows))
        return path

    def measure(
        self,
        target: str,
        rows: int,
        concurrency: int,
        seconds: float,
        watch: dict[str, int],
        before_run: Callable[[], None] | None = None,
    ) -> LoadRun:
        """Warm up (one call per worker, then up to the plan's warm-up time), then measure for
        ``seconds``, stretched so that at least MIN_CALLS complete. ``before_run`` is called
        after the warm-up, right before the measured run (e.g. to read a process's counters)."""
        request = self.request_file(rows)
        warm = self.ghz.run(target, request, self.metadata, concurrency=concurrency, calls=concurrency)
        remaining = self.plan.warmup_s - warm.seconds
        if remaining > 0.2:
            self.ghz.run(target, request, self.metadata, concurrency=concurrency, seconds=remaining)
        # The first calls end one latency after the start: the run must outlast that, then
        # complete MIN_CALLS more. The warm-up's slowest call is a cautious latency estimate.
        latency = (warm.slowest_ms or warm.mean_ms or 1.0) / 1000
        needed = latency * (1 + MIN_CALLS / concurrency) * 1.2
        seconds = min(max(seconds, needed), max(seconds, self.plan.max_run_s))
        if before_run is not None:
            before_run()
        return self.ghz.run(
            target,
            request,
            self.metadata,
            concurrency=concurrency,
            seconds=math.ceil(seconds * 10) / 10,
            watch=watch,
        )
