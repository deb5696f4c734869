"""Smoke test of `make bench`: the harness runs every scenario in a tiny mode and writes a
complete report. It checks the report's structure, never the speed."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import SCENARIO_NAMES
from bench.stack import FULL_VARIANTS, PROXY, RESPONSE_FREE_CEILING
from bench.targets import TARGETS
from tests.support.procs import REPO

pytestmark = pytest.mark.slow

GHZ = REPO / ".tools" / "bin" / "ghz"
CONCURRENCY = (1, 32)
ROWS = (1, 10)
MEASURED = ("datapath", "scaling", "engines", "detectors", "audit", "approvals")
CHARTED = ("datapath", "scaling", "engines", "detectors")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    if not GHZ.is_file():
        pytest.skip(f"ghz is not built at {GHZ}: run `make tools`")
    out = tmp_path_factory.mktemp("bench")
    args = [
        sys.executable, "-m", "bench",
        "--duration", "0.3",
        "--rows", ",".join(map(str, ROWS)),
        "--concurrency", ",".join(map(str, CONCURRENCY)),
        "--no-profile",
        "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return json.loads((out / "latest.json").read_text()), out, output


def test_every_scenario_is_reported(report: tuple[dict, Path, str]) -> None:
    doc, _, _ = report
    assert doc["schema"] == "labelgate.bench/v1"
    assert set(doc["scenarios"]) == set(SCENARIO_NAMES)
    for name in MEASURED:
        assert doc["scenarios"][name]["status"] == "ok", doc["scenarios"][name]["note"]
        assert doc["scenarios"][name]["figures"], name


def test_machine_and_versions_are_described(report: tuple[dict, Path, str]) -> None:
    machine = report[0]["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"]
    assert len(machine["git_commit"]) == 40
    for tool in ("opa", "regopy", "grpcio", "ghz"):
        assert machine["versions"][tool], tool
    assert machine["python"].count(".") == 2


def test_every_figure_has_a_baseline_and_a_ratio(report: tuple[dict, Path, str]) -> None:
    figures = [f for s in report[0]["scenarios"].values() for f in s["figures"]]
    ids = [f["id"] for f in figures]
    assert len(ids) == len(set(ids)), "figure ids must be unique"
    for figure in figures:
        value, baseline, ratio = figure["value"], figure["baseline"]["value"], figure["ratio"]
        assert figure["baseline"]["label"], figure["id"]
        assert math.isfinite(value) and math.isfinite(baseline) and baseline > 0, figure
        assert ratio is not None and ratio == pytest.approx(value / baseline, rel=1e-2, abs=1e-3), figure
        if "added" in figure:
            assert figure["added"] == pytest.approx(value - baseline, rel=1e-2, abs=1e-3), figure


def test_data_path_covers_every_configuration_and_concurrency(report: tuple[dict, Path, str]) -> None:
    datapath = report[0]["scenarios"]["datapath"]
    ids = {f["id"] for f in datapath["figures"]}
    for variant in (PROXY, *FULL_VARIANTS, RESPONSE_FREE_CEILING):
        for concurrency in CONCURRENCY:
            for measure in ("throughput", "p50_ms", "p90_ms", "p99_ms", "gateway_cpu_ms_per_call"):
                assert f"datapath.{variant.name}.c{concurrency}.{measure}" in ids
    for run in datapath["details"]["runs"]:
        # Every measured call succeeded: a refusing gateway would be measured as fast.
        assert run["ok"] > 0 and run["unexpected_errors"] == 0, run
        assert run["cpu_ms_per_call"]["client (ghz)"] > 0, run
        if run["config"] != "direct":
            assert run["cpu_ms_per_call"]["gateway"] > 0, run
    generator = report[0]["load_generator"]
    assert generator["tool"] == "ghz" and generator["python_client"]["calls"] > 0


def test_scaling_reports_each_size(report: tuple[dict, Path, str]) -> None:
    scaling = report[0]["scenarios"]["scaling"]
    ids = {f["id"] for f in scaling["figures"]}
    for rows in ROWS:
        expected = {"p50_ms", "added_us_per_row", "gateway_cpu_ms_per_call"}
        assert {f"scaling.rows{rows}.{measure}" for measure in expected} <= ids
    for key in ("linearity", "linearity_cpu"):
        assert set(scaling["details"][key]["per_row_us"]) == {str(rows) for rows in ROWS}
        assert scaling["details"][key]["verdict"] in ("linear or better", "super-linear")


def test_audit_compares_durable_auditing_with_auditing_off(report: tuple[dict, Path, str]) -> None:
    audit = report[0]["scenarios"]["audit"]
    figures = {f["id"]: f for f in audit["figures"]}
    for concurrency in CONCURRENCY:
        prefix = f"audit.durable.c{concurrency}"
        for measure in ("throughput", "throughput_cost", "p50_ms", "cpu_ms_per_call"):
            assert f"{prefix}.{measure}" in figures
        throughput, cost = figures[f"{prefix}.throughput"], figures[f"{prefix}.throughput_cost"]
        assert cost["value"] == pytest.approx(1 - throughput["ratio"], abs=1e-3)
        # Group commit counters, read from the writer around each measured run.
        writer = audit["details"]["writer"][f"c{concurrency}"]
        assert writer["fsyncs"] >= 1 and writer["records_per_fsync"] >= 1, writer
        assert writer["records_per_call"] >= 1, "every audited call must leave a durable record"
    assert audit["details"]["audit_log"]["fsync"] is True
    configs = {run["config"] for run in audit["details"]["runs"]}
    assert configs == {"audit_off", "audit_durable"}
    for run in audit["details"]["runs"]:
        assert run["ok"] > 0 and run["unexpected_errors"] == 0, run
        if run["config"] == "audit_durable":
            assert run["cpu_ms_per_call"]["audit-writer"] > 0, run
    # The CPU figure is the gateway's plus the writer's, each counted once (it once counted
    # the writer twice), against the gateway's alone with auditing off.
    for concurrency in CONCURRENCY:
        runs = [run for run in audit["details"]["runs"] if run["concurrency"] == concurrency]

        def mean_cpu(config: str, runs: list[dict] = runs) -> float:
            spent = [
                sum(run["cpu_ms_per_call"].get(who, 0.0) for who in ("gateway", "audit-writer"))
                for run in runs
                if run["config"] == config
            ]
            return sum(spent) / len(spent)

        cpu = figures[f"audit.durable.c{concurrency}.cpu_ms_per_call"]
        assert cpu["value"] == pytest.approx(mean_cpu("audit_durable"), abs=0.01)
        assert cpu["baseline"]["value"] == pytest.approx(mean_cpu("audit_off"), abs=0.01)


def test_approvals_time_grants_on_one_node_and_across_replicas(report: tuple[dict, Path, str]) -> None:
    approvals = report[0]["scenarios"]["approvals"]
    ids = {f["id"] for f in approvals["figures"]}
    holds = approvals["details"]["config"]["holds_per_setup"]
    for setup in ("one_node", "two_replicas"):
        assert {f"approvals.{setup}.grant_to_release_ms", f"approvals.{setup}.grant_to_release_p90_ms"} <= ids
        measured = approvals["details"]["setups"][setup]
        assert len(measured["grant_to_release_ms"]) == holds >= 3
        assert all(ms > 0 for ms in measured["grant_to_release_ms"])
        summary = measured["summary"]
        assert summary["grant_to_release_ms_p90"] >= summary["grant_to_release_ms_median"]
    assert "PostgreSQL" in approvals["details"]["setups"]["two_replicas"]["postgres"]


def test_targets_are_reported_per_figure(report: tuple[dict, Path, str]) -> None:
    rows = report[0]["targets"]
    assert len(rows) == sum(len(target.figure_ids) for target in TARGETS)
    for row in rows:
        assert row["status"] in ("pass", "miss"), row
        assert (row["gap"] == "") == (row["status"] == "pass"), row


def test_charts_and_summary(report: tuple[dict, Path, str]) -> None:
    doc, out, output = report
    assert "Targets (issue 8)" in output and "latest.json" in output
    if importlib.util.find_spec("matplotlib") is None:
        assert doc["charts"] == [] and "matplotlib" in doc["charts_note"]
        return
    assert sorted(doc["charts"]) == sorted(f"{name}.png" for name in CHARTED)
    for chart in doc["charts"]:
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
