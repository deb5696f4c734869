"""Run the scenarios in order, write latest.json and the charts, print the summary.

``SCENARIOS`` is the whole list: a scenario is one function ``Bench -> Scenario``. One that
fails is reported as failed (with the error) and the others still run; the exit code is
then 1, after the report is written.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from rich.console import Console

from bench import charts, report
from bench.approvals import run_approvals
from bench.audit import run_audit
from bench.context import Bench
from bench.datapath import run_datapath, run_scaling
from bench.detectors import run_detectors
from bench.engines import run_engines
from bench.figures import Scenario
from bench.machine import describe_machine
from bench.plan import Plan
from bench.policy_replay import run_policy_replay
from bench.rest_overhead import run_rest_overhead
from labelgate.errors import LabelgateError
from tests.support.procs import REPO, opa_binary

SCENARIOS: tuple[tuple[str, Callable[[Bench], Scenario]], ...] = (
    ("datapath", run_datapath),
    ("scaling", run_scaling),
    ("engines", run_engines),
    ("policy_replay", run_policy_replay),
    ("detectors", run_detectors),
    ("audit", run_audit),
    ("approvals", run_approvals),
    ("rest_overhead", run_rest_overhead),
)
SCENARIO_NAMES = tuple(name for name, _ in SCENARIOS)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run(plan: Plan, command: str, console: Console | None = None) -> tuple[dict[str, Any], int]:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = 160  # a log file or CI: wide enough for the tables
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = plan.out_dir / "work"  # process logs, configs, ghz reports of the last run
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir()
    bench = Bench(plan, work_dir)
    started_at, began = _now(), time.monotonic()
    machine = describe_machine(REPO, _opa_or_none())
    scenarios = [_run_one(name, function, bench, console) for name, function in SCENARIOS]
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta = {
        "mode": plan.mode,
        "command": command,
        "started_at": started_at,
        "finished_at": _now(),
        "seconds": round(time.monotonic() - began, 1),
        "work_dir": str(work_dir),
    }
    doc = report.build(meta=meta, machine=machine, scenarios=scenarios, extras=bench.extras)
    doc["charts"], doc["charts_note"] = charts.write_charts(doc, plan.out_dir) if plan.charts else ([], "off")
    path = report.write(doc, plan.out_dir)
    report.print_summary(doc, console)
    console.print(f"Wrote {path} and {len(doc['charts'])} chart(s) in {plan.out_dir}")
    failed = [s.name for s in scenarios if s.status == "failed"]
    if failed:
        console.print(f"[red]failed scenarios: {', '.join(failed)} (logs in {work_dir})[/]")
    return doc, 1 if failed else 0


def _opa_or_none() -> str | None:
    try:
        return opa_binary()
    except FileNotFoundError:
        return None  # the scenarios that need it fail and say so; the report still describes the rest


def _run_one(name: str, function: Callable[[Bench], Scenario], bench: Bench, console: Console) -> Scenario:
    if not bench.plan.wants(name):
        return Scenario(name, name, status="skipped", note="not selected (--only)")
    console.log(f"scenario {name} ...")
    began = time.monotonic()
    try:
        scenario = function(bench)
    except (LabelgateError, OSError, RuntimeError, ValueError, KeyError) as error:
        console.log(f"[red]scenario {name} failed:[/] {error}")
        traceback.print_exc(file=sys.stderr)
        scenario = Scenario(name, name, status="failed", note=f"{type(error).__name__}: {error}")
    scenario.seconds = time.monotonic() - began
    console.log(f"scenario {name}: {scenario.status} in {scenario.seconds:.1f} s")
    return scenario
