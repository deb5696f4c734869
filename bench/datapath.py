"""Scenarios 1 and 2: calls through the gateway against the same calls made directly.

1. ``datapath``: a 100-row ``customer-profile`` call as an ``analysts`` JWT persona, direct
   (the baseline), through the gateway with an allow-all policy and no labels (the pure
   proxy cost), and through the full path (default policy, masking) with the ``opa`` and
   ``embedded`` engines, each with and without the decision cache; at every concurrency.
2. ``scaling``: 1 to 10,000 rows per call, direct and through the full path (embedded,
   cache: what ``make run`` ships), at concurrency 1; the added latency per call and per row.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.figures import Figure, Scenario
from bench.load import GHZ_VERSION, LoadRun, python_client_probe
from bench.profile import profile_process, stage_budget
from bench.stack import (
    FULL_VARIANTS,
    PROXY,
    RESPONSE_FREE_CEILING,
    SCALING_VARIANT,
    Variant,
    describe,
    verify,
)

DIRECT = "direct"
FLOOR = "bare-proxy"
FSYNC_SAMPLES = 50
# py-spy the pure proxy and the shipped configuration: what any call costs, and what the work adds.
PROFILED = (PROXY, SCALING_VARIANT)
# Per-row cost may grow this much from one size to the next and still count as linear:
# one run on a shared machine is noisy, and a super-linear stage would grow far faster.
LINEAR_TOLERANCE = 1.25


def run_datapath(bench: Bench) -> Scenario:
    plan = bench.plan
    scenario = Scenario("datapath", f"Data path: {plan.datapath_rows}-row customer-profile call")
    # The ceiling last: what the shipped configuration would cost with a free response stage.
    variants = (PROXY, *FULL_VARIANTS, RESPONSE_FREE_CEILING)
    runs: list[dict[str, Any]] = []
    results: dict[tuple[str, int], LoadRun] = {}
    with bench.stack.backend() as (direct, backend):
        request = bench.request_file(plan.datapath_rows)
        watch = {"backend": backend.pid}
        for concurrency in plan.concurrency:
            results[DIRECT, concurrency] = run = bench.measure(
                direct, plan.datapath_rows, concurrency, plan.run_s, watch
            )
            runs.append({"config": DIRECT, **run.to_json()})
        scenario.details["load_generator"] = load_generator_check(
            bench, direct, request.read_bytes(), results
        )
        # The floor, in the same run: a bare pass-through proxy, and one fdatasync.
        with bench.stack.bare_proxy(direct) as (floor_address, floor):
            for concurrency in plan.concurrency:
                results[FLOOR, concurrency] = run = bench.measure(
                    floor_address,
                    plan.datapath_rows,
                    concurrency,
                    plan.run_s,
                    {**watch, "gateway": floor.pid},
                )
                runs.append({"config": FLOOR, **run.to_json()})
        fdatasync_ms = measure_fdatasync(bench.stack.work_dir)
        scenario.details["fdatasync_ms_median"] = round(fdatasync_ms, 3)
        for variant in variants:
            with _gateway(bench, variant, direct) as (address, watched):
                verify(variant, direct, address, request.read_bytes(), bench.metadata)
                for concurrency in plan.concurrency:
                    results[variant.name, concurrency] = run = bench.measure(
                        address, plan.datapath_rows, concurrency, plan.run_s, {**watch, **watched}
                    )
                    runs.append({"config": variant.name, **run.to_json()})
                if variant in PROFILED and plan.profile_s > 0:
                    profiles = bench.extras.setdefault("profiles", {})
                    profiles[variant.name] = profile = _profile(bench, variant, address, watched["gateway"])
                    if profile.get("status") == "ok":
                        # The profile runs at the highest concurrency: so does the CPU it shares out.
                        cpu_ms = gateway_cpu_ms(results[variant.name, max(plan.concurrency)])
                        profile["budget_us_per_call"] = stage_budget(profile, cpu_ms)
        if plan.drift_check:
            scenario.details["direct_drift"] = _drift(bench, direct, watch, results)
    scenario.details["configs"] = {
        DIRECT: "client -> demo backend",
        FLOOR: "client -> bare grpc.aio pass-through proxy -> demo backend",
    } | {v.name: describe(v) for v in variants}
    scenario.details["runs"] = runs
    scenario.details["load_generator"]["busiest_process"] = checks = bottleneck_check(runs)
    scenario.details["load_generator"]["client_was_busiest"] = [
        f"{row['config']} c={row['concurrency']}" for row in checks if row["busiest"] == "client (ghz)"
    ]
    for concurrency in plan.concurrency:
        scenario.figures += _compare(FLOOR, "bare pass-through proxy", concurrency, results)
    for variant in variants:
        for concurrency in plan.concurrency:
            scenario.figures += _compare(variant.name, variant.title, concurrency, results)
            scenario.figures += _against_floor(variant, concurrency, results, fdatasync_ms)
    scenario.note = errors_note(runs)
    return scenario


def measure_fdatasync(directory: Path, samples: int = FSYNC_SAMPLES) -> float:
    """Median ms of one fdatasync after a small append: what a durable audit record must wait for."""
    path = directory / "fdatasync.probe"
    times = []
    with path.open("ab") as handle:
        for _ in range(samples):
            handle.write(b"x" * 200)
            handle.flush()
            started = time.perf_counter()
            os.fdatasync(handle.fileno())
            times.append((time.perf_counter() - started) * 1000)
    path.unlink(missing_ok=True)
    return statistics.median(times)


def _against_floor(
    variant: Variant, concurrency: int, results: dict[tuple[str, int], LoadRun], fdatasync_ms: float
) -> list[Figure]:
    """The issue-12 targets: each path against the bare proxy measured in the same run."""
    run, floor, base = (
        results[variant.name, concurrency],
        results[FLOOR, concurrency],
        results[DIRECT, concurrency],
    )
    prefix = f"datapath.{variant.name}.c{concurrency}"
    where = f"{variant.title}, c={concurrency}"
    figures = [
        Figure(
            f"{prefix}.cpu_vs_floor",
            f"gateway CPU per call against the bare proxy's, {where}",
            gateway_cpu_ms(run),
            "CPU ms/call",
            f"bare proxy CPU per call, c={concurrency}",
            gateway_cpu_ms(floor),
            "lower",
        ),
        Figure(
            f"{prefix}.throughput_vs_floor",
            f"throughput against the bare proxy's, {where}",
            run.calls_per_s,
            "calls/s",
            f"bare proxy, c={concurrency}",
            floor.calls_per_s,
            "higher",
        ),
    ]
    if concurrency == 1:
        figures.append(
            Figure(
                f"{prefix}.added_p50_vs_floor",
                f"added p50 against the floor (bare proxy's added p50 + one fdatasync), {where}",
                run.p50_ms - base.p50_ms,
                "ms",
                "floor: bare proxy added p50 + fdatasync",
                (floor.p50_ms - base.p50_ms) + fdatasync_ms,
                "lower",
                show_added=True,
            )
        )
    return figures


def errors_note(runs: list[dict[str, Any]]) -> str:
    """Name the runs whose calls failed: their figures measure refusals, not work."""
    failed = [
        f"{run['config']} c={run['concurrency']}{' rows=' + str(run['rows']) if 'rows' in run else ''}: "
        f"{run['unexpected_errors']} errors {run['errors']}"
        for run in runs
        if run["unexpected_errors"]
    ]
    return ("calls failed in: " + "; ".join(failed)) if failed else ""


def _compare(
    name: str, title: str, concurrency: int, results: dict[tuple[str, int], LoadRun]
) -> list[Figure]:
    run, base = results[name, concurrency], results[DIRECT, concurrency]
    prefix = f"datapath.{name}.c{concurrency}"
    where = f"{title}, c={concurrency}"
    figures = [
        Figure(
            f"{prefix}.throughput",
            f"throughput, {where}",
            run.calls_per_s,
            "calls/s",
            f"direct, c={concurrency}",
            base.calls_per_s,
            "higher",
        )
    ]
    figures.append(gateway_cpu_figure(f"{prefix}.gateway_cpu_ms_per_call", where, run, base))
    for percentile in ("p50", "p90", "p99"):
        figures.append(
            Figure(
                f"{prefix}.{percentile}_ms",
                f"{percentile} latency, {where}",
                getattr(run, f"{percentile}_ms"),
                "ms",
                f"direct {percentile}, c={concurrency}",
                getattr(base, f"{percentile}_ms"),
                "lower",
                show_added=True,
            )
        )
    return figures


def gateway_cpu_figure(figure_id: str, where: str, run: LoadRun, direct: LoadRun) -> Figure:
    """CPU the gateway (and OPA, when it has one) spent per call, against the backend's own CPU
    per call when called directly: robust on a shared machine, where wall time is not."""
    return Figure(
        figure_id,
        f"gateway (+OPA) CPU per call, {where}",
        gateway_cpu_ms(run),
        "CPU ms/call",
        "backend CPU per call, direct",
        direct.cpu_ms_per_call().get("backend", 0.0),
        "lower",
    )


def gateway_cpu_ms(run: LoadRun) -> float:
    spent = run.cpu_ms_per_call()
    return spent.get("gateway", 0.0) + spent.get("opa", 0.0) + spent.get("audit-writer", 0.0)


@contextlib.contextmanager
def _gateway(bench: Bench, variant: Variant, upstream: str):
    """The gateway for ``variant`` (and OPA when it needs one); yields its address and pids."""
    with contextlib.ExitStack() as stack:
        watched: dict[str, int] = {}
        opa_url = None
        if variant.engine == "opa":
            opa_url, opa = stack.enter_context(bench.stack.opa(variant.policy_dir))
            watched["opa"] = opa.pid
        extra = None
        if variant.audit:
            from bench.audit import audit_writer  # bench.audit builds on this module

            socket_path, _, writer = stack.enter_context(audit_writer(bench.work_dir))
            extra = {"audit": {"socket": str(socket_path)}}
            watched["audit-writer"] = writer.pid
        address, gateway = stack.enter_context(bench.stack.gateway(variant, upstream, opa_url, extra=extra))
        watched["gateway"] = gateway.pid
        yield address, watched


def load_generator_check(
    bench: Bench, direct: str, request: bytes, results: dict[tuple[str, int], LoadRun]
) -> dict[str, Any]:
    """ghz against the leanest Python client, both on the direct backend at the highest concurrency."""
    concurrency = max(bench.plan.concurrency)
    ghz = results[DIRECT, concurrency]
    python = python_client_probe(
        direct, request, bench.metadata, concurrency=concurrency, seconds=max(1.0, bench.plan.run_s / 2)
    )
    ghz_cpu = ghz.cpu_ms_per_call()["client (ghz)"]
    return {
        "tool": "ghz",
        "version": GHZ_VERSION,
        "options": "--cpus=1, one connection, serialized request (-B), metadata file",
        "why": (
            "ghz (Go): not bound to one core by a GIL, one warm HTTP/2 connection, exact latency "
            "percentiles. Its CPU per call is measured in every run (wait4) and compared here with the "
            "leanest Python client, and busiest_process shows per run which process was the bottleneck: "
            "it must never be the client"
        ),
        "ghz": {
            "concurrency": concurrency,
            "calls_per_s": ghz.calls_per_s,
            "cpu_ms_per_call": ghz_cpu,
            "cpu_cores_used": ghz.cpu_cores_used()["client (ghz)"],
        },
        "python_client": python,
        "python_cpu_per_call_vs_ghz": round(python["cpu_ms_per_call"] / ghz_cpu, 2) if ghz_cpu else None,
    }


def bottleneck_check(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the busiest process: the client must never be it."""
    rows = []
    for run in runs:
        used = run["cpu_cores_used"]
        busiest = max(used, key=used.get)
        rows.append(
            {
                "config": run["config"],
                "concurrency": run["concurrency"],
                "busiest": busiest,
                "client_cores": used["client (ghz)"],
                "busiest_cores": used[busiest],
            }
        )
    return rows


def _profile(bench: Bench, variant: Variant, address: str, gateway_pid: int) -> dict[str, Any]:
    concurrency = max(bench.plan.concurrency)
    request = bench.request_file(bench.plan.datapath_rows)

    def load(seconds: float) -> None:
        bench.ghz.run(address, request, bench.metadata, concurrency=concurrency, seconds=seconds)

    raw = bench.plan.out_dir / f"profile-{variant.name}.txt"
    summary = profile_process(gateway_pid, bench.plan.profile_s, raw, load)
    return {"subject": f"{variant.title}, c={concurrency}, {bench.plan.datapath_rows} rows", **summary}


def _drift(
    bench: Bench, direct: str, watch: dict[str, int], results: dict[tuple[str, int], LoadRun]
) -> dict[str, Any]:
    """Direct calls again after all variants: how much the machine changed during the run."""
    drift = {}
    for concurrency in bench.plan.concurrency:
        again = bench.measure(direct, bench.plan.datapath_rows, concurrency, bench.plan.run_s, watch)
        before = results[DIRECT, concurrency].calls_per_s
        drift[f"c{concurrency}"] = {
            "before_calls_per_s": before,
            "after_calls_per_s": again.calls_per_s,
            "change": round(again.calls_per_s / before - 1, 4) if before else None,
        }
    return drift


# --- scenario 2 --------------------------------------------------------------------------


def run_scaling(bench: Bench) -> Scenario:
    plan = bench.plan
    variant = SCALING_VARIANT
    scenario = Scenario("scaling", f"Scaling with work: rows per call ({variant.title}, c=1)")
    runs: list[dict[str, Any]] = []
    pairs: dict[int, tuple[LoadRun, LoadRun]] = {}
    with bench.stack.backend() as (direct, backend), _gateway(bench, variant, direct) as (address, watched):
        verify(variant, direct, address, bench.request_file(min(plan.rows)).read_bytes(), bench.metadata)
        watch = {"backend": backend.pid}
        for rows in plan.rows:
            # Direct and gateway back to back per size, so drift on the machine hits both alike.
            base = bench.measure(direct, rows, 1, plan.scaling_run_s, watch)
            run = bench.measure(address, rows, 1, plan.scaling_run_s, {**watch, **watched})
            pairs[rows] = (base, run)
            runs += [{"config": DIRECT, "rows": rows, **base.to_json()}]
            runs += [{"config": variant.name, "rows": rows, **run.to_json()}]
    for rows, (base, run) in pairs.items():
        scenario.figures.append(
            Figure(
                f"scaling.rows{rows}.p50_ms",
                f"p50 latency per call, {rows} rows",
                run.p50_ms,
                "ms",
                f"direct p50, {rows} rows",
                base.p50_ms,
                "lower",
                show_added=True,
            )
        )
        scenario.figures.append(
            gateway_cpu_figure(f"scaling.rows{rows}.gateway_cpu_ms_per_call", f"{rows} rows", run, base)
        )
        scenario.figures.append(
            Figure(
                f"scaling.rows{rows}.added_us_per_row",
                f"added latency per row, {rows} rows",
                (run.p50_ms - base.p50_ms) * 1000 / rows,
                "µs/row",
                f"direct latency per row, {rows} rows",
                base.p50_ms * 1000 / rows,
                "lower",
            )
        )
    scenario.details["config"] = describe(variant)
    scenario.details["runs"] = runs
    scenario.note = errors_note(runs)
    scenario.details["linearity"] = linearity(
        {rows: run.p50_ms - base.p50_ms for rows, (base, run) in pairs.items()}
    )
    # The same on the gateway's CPU per call, which other load on the machine barely moves.
    scenario.details["linearity_cpu"] = linearity(
        {rows: gateway_cpu_ms(run) for rows, (_, run) in pairs.items()}
    )
    # Issue 12's per-row target reads the fitted slope, against what the backend itself spends
    # per row at the largest size (it builds the rows), from the same runs.
    gateway_line = scenario.details["linearity_cpu"]
    largest = max(pairs)
    backend_per_row = pairs[largest][0].cpu_ms_per_call().get("backend", 0.0) * 1000 / largest
    if "slope_us_per_row" in gateway_line:
        scenario.figures.append(
            Figure(
                "scaling.gateway_cpu_us_per_row",
                f"gateway CPU per extra row, fit over {', '.join(map(str, sorted(pairs)))} rows "
                f"({gateway_line['verdict']})",
                gateway_line["slope_us_per_row"],
                "µs/row",
                f"backend CPU per row, direct, {largest} rows",
                backend_per_row,
                "lower",
            )
        )
    return scenario


def linearity(cost_ms: dict[int, float]) -> dict[str, Any]:
    """Least-squares line through a per-call cost (ms; added latency or gateway CPU) against
    rows, and the per-row cost step by step.

    The cost is "linear or better" when the per-row cost does not grow by more than
    LINEAR_TOLERANCE from one size to the next, among sizes of 100 rows or more (below that,
    per-call fixed costs dominate and per-row cost falls steeply, as it should).
    """
    sizes = sorted(cost_ms)
    if len(sizes) < 2:
        return {"verdict": "not enough sizes"}
    n = len(sizes)
    mean_x = sum(sizes) / n
    mean_y = sum(cost_ms[x] for x in sizes) / n
    sxx = sum((x - mean_x) ** 2 for x in sizes)
    sxy = sum((x - mean_x) * (cost_ms[x] - mean_y) for x in sizes)
    slope = sxy / sxx if sxx else 0.0
    intercept = mean_y - slope * mean_x
    ss_tot = sum((cost_ms[x] - mean_y) ** 2 for x in sizes)
    ss_res = sum((cost_ms[x] - (intercept + slope * x)) ** 2 for x in sizes)
    per_row = {x: cost_ms[x] * 1000 / x for x in sizes}
    steps = [
        {
            "from_rows": a,
            "to_rows": b,
            "per_row_growth": round(per_row[b] / per_row[a], 3) if per_row[a] > 0 else None,
        }
        for a, b in itertools.pairwise(sizes)
        if a >= 100
    ]
    worse = [s for s in steps if s["per_row_growth"] is not None and s["per_row_growth"] > LINEAR_TOLERANCE]
    return {
        "slope_us_per_row": round(slope * 1000, 3),
        "intercept_ms": round(intercept, 3),
        "r2": round(1 - ss_res / ss_tot, 4) if ss_tot else None,
        "per_row_us": {str(x): round(v, 3) for x, v in per_row.items()},
        "steps": steps,
        "verdict": "super-linear" if worse else "linear or better",
        "tolerance": LINEAR_TOLERANCE,
    }
