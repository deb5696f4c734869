"""``latest.json`` and the summary table printed at the end of a run.

The document (``SCHEMA``) holds the machine description, every scenario with its figures
(value, baseline, ratio) and raw runs, the targets table with pass/miss per figure, the
gateway profile and the chart file names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.figures import Figure, Scenario, evaluate
from bench.stack import SCALING_VARIANT
from bench.targets import TARGETS

SCHEMA = "labelgate.bench/v1"
_PROFILED_TARGETS = {"added_p50_full_c1", "throughput_ratio_full_c32"}
# The profile that explains the full-path targets: the configuration `make run` ships.
PROFILE_FOR_TARGETS = SCALING_VARIANT.name


def build(
    *,
    meta: dict[str, Any],
    machine: dict[str, Any],
    scenarios: list[Scenario],
    extras: dict[str, Any],
) -> dict[str, Any]:
    figures: dict[str, Figure] = {f.id: f for s in scenarios for f in s.figures}
    targets = evaluate(TARGETS, figures)
    profiles: dict[str, Any] = extras.get("profiles") or {}
    stages = _stage_text(profiles.get(PROFILE_FOR_TARGETS))
    for row in targets:
        if row["status"] == "miss" and row["target_id"] in _PROFILED_TARGETS and stages:
            row["hint"] = f"{row['hint']}; gateway CPU by stage (py-spy): {stages}"
    datapath = next((s for s in scenarios if s.name == "datapath"), None)
    return {
        "schema": SCHEMA,
        **meta,
        "machine": machine,
        "load_generator": datapath.details.get("load_generator") if datapath else None,
        "scenarios": {s.name: s.to_json() for s in scenarios},
        "targets": targets,
        "profiles": profiles
        or {"status": "not_available", "note": "profiling runs in the full bench (or with --profile)"},
    }


def _stage_text(profile: dict[str, Any] | None, limit: int = 5) -> str:
    if not profile or profile.get("status") != "ok":
        return ""
    return ", ".join(f"{s['name']} {s['share']:.0%}" for s in profile["stages"][:limit])


def write(doc: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "latest.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path


# --- the printed summary -------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def _signed(value: float | None) -> str:
    return "-" if value is None else ("+" if value >= 0 else "-") + _num(abs(value))


def print_summary(doc: dict[str, Any], console: Console) -> None:
    machine = doc["machine"]
    console.rule(f"labelgate bench ({doc['mode']}) - {doc['finished_at']}")
    console.print(
        f"{machine['cpu_model']}, {machine['cores']} cores, load {machine['load_average_at_start']}, "
        f"python {machine['python']}, commit {str(machine['git_commit'])[:12]}"
        f"{' (dirty)' if machine['git_dirty'] else ''}; {doc['seconds']:.0f} s"
    )
    scenarios = doc["scenarios"]
    for name, scenario in scenarios.items():
        if scenario["status"] != "ok":
            console.print(f"[bold]{scenario['title']}[/]: [yellow]{scenario['status']}[/] {scenario['note']}")
            continue
        if scenario["note"]:
            console.print(f"[yellow]{scenario['title']}: {scenario['note']}[/]")
        if name == "datapath":
            console.print(_datapath_table(scenario))
        else:
            console.print(_figure_table(scenario))
        if name == "scaling":
            for key, what in (("linearity", "added p50 latency"), ("linearity_cpu", "gateway CPU")):
                linear = scenario["details"][key]
                per_row = ", ".join(f"{rows}: {us:.3g}" for rows, us in linear.get("per_row_us", {}).items())
                console.print(
                    f"  {what}: {linear['verdict']}; per row (µs) {per_row}; fit "
                    f"{linear.get('slope_us_per_row')} µs/row + {linear.get('intercept_ms')} ms, "
                    f"r² {linear.get('r2')}"
                )
    generator = doc.get("load_generator")
    if generator:
        ghz, python = generator["ghz"], generator["python_client"]
        console.print(
            f"Load generator: ghz {generator['version']} used {ghz['cpu_ms_per_call']} ms CPU per call "
            f"({ghz['cpu_cores_used']} cores) at c={ghz['concurrency']} against the direct backend; a Python "
            f"grpc.aio client used {python['cpu_ms_per_call']} ms "
            f"({generator['python_cpu_per_call_vs_ghz']}x as much)."
        )
    for profile in (doc.get("profiles") or {}).values():
        if isinstance(profile, dict) and profile.get("status") == "ok":
            console.print(f"Gateway CPU by stage ({profile['subject']}): {_stage_text(profile, 8)}")
            budget = profile.get("budget_us_per_call")
            if budget:
                cells = ", ".join(f"{stage} {us:.0f}" for stage, us in budget.items())
                console.print(f"  CPU µs per call: {cells}")
    console.print(_targets_table(doc["targets"]))
    notes = {
        row["figure"]: row["hint"] for row in doc["targets"] if row["status"] == "miss" and row.get("hint")
    }
    for figure, hint in notes.items():
        console.print(f"[red]miss[/] {figure}: {hint}")


def _datapath_table(scenario: dict[str, Any]) -> Table:
    table = Table(title=scenario["title"], title_justify="left")
    columns = (
        "config", "c", "calls/s", "x direct", "p50 ms", "+p50 ms", "p90 ms", "p99 ms", "+p99 ms",
        "CPU ms/call", "x backend", "errors",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "config" else "right")
    figures = {f["id"]: f for f in scenario["figures"]}
    runs = scenario["details"]["runs"]
    for run in runs:
        if run["config"] == "direct":
            table.add_row(
                "direct", str(run["concurrency"]), _num(run["calls_per_s"]), "1",
                _num(run["p50_ms"]), "", _num(run["p90_ms"]), _num(run["p99_ms"]), "",
                _num(run["cpu_ms_per_call"]["backend"]), "1", str(run["unexpected_errors"]),
            )  # fmt: skip
            continue
        prefix = f"datapath.{run['config']}.c{run['concurrency']}"
        throughput, p50, p99, cpu = (
            figures[f"{prefix}.{k}"] for k in ("throughput", "p50_ms", "p99_ms", "gateway_cpu_ms_per_call")
        )
        table.add_row(
            run["config"], str(run["concurrency"]), _num(throughput["value"]), _num(throughput["ratio"], 2),
            _num(p50["value"]), _signed(p50["added"]), _num(figures[f"{prefix}.p90_ms"]["value"]),
            _num(p99["value"]), _signed(p99["added"]), _num(cpu["value"]), _num(cpu["ratio"], 3),
            str(run["unexpected_errors"]),
        )  # fmt: skip
    return table


def _figure_table(scenario: dict[str, Any]) -> Table:
    table = Table(title=scenario["title"], title_justify="left")
    for column in ("figure", "value", "unit", "baseline", "ratio"):
        table.add_column(column, justify="left" if column in ("figure", "unit") else "right")
    for figure in scenario["figures"]:
        added = f" ({_signed(figure['added'])})" if "added" in figure else ""
        table.add_row(
            figure["label"],
            _num(figure["value"]) + added,
            figure["unit"],
            f"{_num(figure['baseline']['value'])} ({figure['baseline']['label']})",
            _num(figure["ratio"], 3),
        )
    return table


def _targets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets (issue 8): measured, not asserted", title_justify="left")
    for column in ("figure", "subject", "target", "measured", "result", "gap"):
        table.add_column(column, justify="right" if column == "measured" else "left")
    colour = {"pass": "green", "miss": "red", "not_available": "yellow"}
    for row in rows:
        status = row["status"]
        table.add_row(
            row["figure"],
            row.get("subject", row["figure_id"]),
            row["target"],
            _num(row["measured"]),
            f"[{colour[status]}]{status}[/]",
            row.get("gap", ""),
        )
    return table
