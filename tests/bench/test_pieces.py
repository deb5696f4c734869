"""The harness's pure pieces: target evaluation, linearity, ghz report parsing, profiles, flags."""

from __future__ import annotations

import pytest

from bench.__main__ import parse_args
from bench.approvals import _p90
from bench.audit import _combine, _figures, audit_writer, filesystem_of, writer_stats
from bench.datapath import linearity
from bench.figures import Figure, Target, evaluate
from bench.load import LoadRun, parse_report, steady_rate
from bench.procs import BenchError, enter_together
from bench.profile import stage_budget, stage_of, summarize


def _figure(value: float, baseline: float) -> Figure:
    return Figure("x.p50_ms", "p50", value, "ms", "direct", baseline, "lower", show_added=True)


def test_targets_pass_miss_and_missing() -> None:
    target = Target("t", "added p50", ("x.p50_ms", "y.p50_ms"), "added", "<=", 1.0, "ms", "why", hint="h")
    rows = evaluate((target,), {"x.p50_ms": _figure(3.5, 1.0)})
    assert rows[0]["status"] == "miss" and rows[0]["measured"] == 2.5
    assert rows[0]["gap"] == "over by 1.5 ms (2.5x the target)" and rows[0]["hint"] == "h"
    assert rows[1]["status"] == "not_available"
    assert evaluate((target,), {"x.p50_ms": _figure(1.5, 1.0)})[0]["status"] == "pass"


def test_ratio_targets_read_the_ratio() -> None:
    target = Target("t", "ratio", ("x.p50_ms",), "ratio", ">=", 0.5, "", "why")
    (row,) = evaluate((target,), {"x.p50_ms": _figure(1.0, 4.0)})
    assert row["measured"] == 0.25 and row["status"] == "miss"
    assert row["gap"] == "short by 0.25 (50% of the target)"


def test_a_zero_baseline_has_no_ratio() -> None:
    assert _figure(1.0, 0.0).ratio is None
    assert _figure(1.0, 0.0).to_json()["ratio"] is None


def test_linear_cost_is_linear_and_quadratic_is_not() -> None:
    linear = linearity({1: 5.0, 100: 5.5, 1000: 10.0, 10000: 55.0})
    assert linear["verdict"] == "linear or better"
    assert linear["slope_us_per_row"] == pytest.approx(5.0, rel=0.01)
    quadratic = linearity({1: 5.0, 100: 6.0, 1000: 105.0, 10000: 10005.0})
    assert quadratic["verdict"] == "super-linear"
    assert linearity({100: 1.0})["verdict"] == "not enough sizes"


def _ghz_report(codes: dict[str, int]) -> dict:
    return {
        "statusCodeDistribution": codes,
        "total": 2_000_000_000,
        "average": 1_500_000,
        "latencyDistribution": [
            {"percentage": 50, "latency": 1_000_000},
            {"percentage": 90, "latency": 2_000_000},
            {"percentage": 99, "latency": 3_000_000},
        ],
    }


def test_ghz_report_tolerates_only_calls_cut_off_at_the_end() -> None:
    def parse(codes: dict[str, int]):
        return parse_report(
            _ghz_report(codes),
            target="t",
            concurrency=4,
            elapsed=2.0,
            client_cpu_s=0.5,
            cpu_s={"gateway": 1.0},
        )

    run = parse({"OK": 100, "Unavailable": 4})
    assert run.unexpected_errors == 0 and run.calls_per_s == 50.0
    assert (run.p50_ms, run.p90_ms, run.p99_ms) == (1.0, 2.0, 3.0)
    assert run.cpu_ms_per_call() == {"client (ghz)": 5.0, "gateway": 10.0}
    assert parse({"OK": 100, "Unavailable": 6}).unexpected_errors == 2
    assert parse({"OK": 100, "PermissionDenied": 1}).unexpected_errors == 1


def test_steady_rate_ignores_the_ramp_and_the_cut_off() -> None:
    def detail(second: str, status: str = "OK") -> dict:
        return {"status": status, "timestamp": f"2026-11-28T10:55:{second}Z", "latency": 1}

    # Three calls ended 0.5 s apart (2 calls/s), the run went on; the cut-off call does not count.
    details = [
        detail("33.000000001"),
        detail("33.500000001"),
        detail("34.000000001"),
        detail("39", "Unavailable"),
    ]
    assert steady_rate(details) == pytest.approx(2.0)
    assert steady_rate(details[:1]) is None
    run = parse_report(
        {**_ghz_report({"OK": 3}), "details": details},
        target="t", concurrency=1, elapsed=6.0, client_cpu_s=0.1, cpu_s={},
    )  # fmt: skip
    assert run.calls_per_s == 2.0 and run.calls_per_s_wall == 1.5


def test_profile_samples_are_charged_to_the_innermost_labelgate_stage() -> None:
    raw = "\n".join(
        [
            "run (labelgate/cli.py:1);handle (labelgate/gateway/pipeline.py:2);"
            "scan (labelgate/classify/detectors.py:3);checksum (stdnum/luhn.py:4) 6",
            "run (labelgate/cli.py:1);apply (labelgate/enforce/masking.py:5) 3",
            "_run (asyncio/events.py:80);_invoke (grpc/aio/_call.py:9) 1",
        ]
    )
    summary = summarize(raw)
    assert summary["samples"] == 10
    assert summary["stages"][0] == {"name": "classify", "share": 0.6}
    assert {s["name"] for s in summary["stages"]} == {
        "classify",
        "enforce (masking)",
        "grpc transport (serialization, HTTP/2)",
    }
    assert not any("cli.py" in entry["name"] for entry in summary["top_labelgate_inclusive"])
    assert stage_of(["_run (asyncio/events.py:80)"]) == "event loop"
    # The per-call budget shares the measured CPU out by stage; unnamed stages are glue.
    budget = stage_budget(summary, cpu_ms_per_call=2.0)
    assert list(budget) == ["authenticate", "decide", "classify", "enforce", "codec", "record", "glue"]
    assert (budget["classify"], budget["enforce"], budget["glue"]) == (1200.0, 600.0, 200.0)
    assert budget["authenticate"] == budget["codec"] == 0.0


def test_flags(tmp_path) -> None:
    plan = parse_args(["--quick", "--out", str(tmp_path), "--rows", "1,10", "--only", "detectors"])
    assert plan.mode == "quick" and plan.rows == (1, 10) and plan.wants("detectors")
    assert not plan.wants("datapath")
    assert parse_args(["--duration", "1", "--out", str(tmp_path)]).run_s == 1.0
    for bad in (["--rows", "0"], ["--rows", "a"], ["--only", "nope"], ["--duration", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def _run(calls_per_s: float, ok: int = 10) -> LoadRun:
    return parse_report(
        {**_ghz_report({"OK": ok}), "total": int(ok / calls_per_s * 1e9)},
        target="t", concurrency=1, elapsed=1.0, client_cpu_s=0.1, cpu_s={"gateway": 0.05},
    )  # fmt: skip


def test_audit_cost_is_the_share_of_throughput_lost() -> None:
    off, on = [_run(100.0), _run(120.0)], [_run(88.0), _run(88.0)]
    figures = {f.id.rpartition(".")[2]: f for f in _figures(32, off, on)}
    assert figures["throughput"].value == 88.0 and figures["throughput"].baseline == 110.0
    assert figures["throughput_cost"].value == pytest.approx(0.2)
    assert figures["throughput_cost"].ratio == pytest.approx(0.2)  # baseline 1.0: reads the same
    assert figures["p50_ms"].show_added


def test_writer_counters_combine_into_records_per_fsync() -> None:
    parts = [
        {"calls_ok": 90, "records": 100, "fsyncs": 10, "batches": 10, "largest_batch_so_far": 20},
        {"calls_ok": 100, "records": 100, "fsyncs": 0, "batches": 5, "largest_batch_so_far": 31},
    ]
    combined = _combine(parts)
    assert combined["records_per_fsync"] == 20.0 and combined["records_per_batch"] == pytest.approx(13.33)
    assert combined["records_per_call"] == pytest.approx(1.053) and combined["largest_batch_so_far"] == 31
    assert _combine([{**parts[1], "calls_ok": 0}])["records_per_fsync"] is None


def test_p90_of_few_samples() -> None:
    assert _p90([5.0]) == 5.0
    assert _p90([float(x) for x in range(1, 11)]) == pytest.approx(9.1)


def test_filesystem_of_names_the_mount(tmp_path) -> None:
    assert filesystem_of(tmp_path) != "unknown"
    assert filesystem_of(tmp_path).endswith(")")


def test_audit_writer_starts_answers_stats_and_stops(tmp_path) -> None:
    with audit_writer(tmp_path) as (socket_path, log_dir, child):
        stats = writer_stats(socket_path)
        assert stats["records"] == 0 and stats["fsync"] is True
        assert log_dir.is_dir() and child.alive()
    assert not child.alive() and not socket_path.exists()
    with pytest.raises(BenchError, match="audit writer"):
        writer_stats(socket_path)


def test_enter_together_exits_what_it_entered_when_one_fails() -> None:
    import contextlib

    exited: list[str] = []

    @contextlib.contextmanager
    def good(name: str):
        try:
            yield name
        finally:
            exited.append(name)

    @contextlib.contextmanager
    def bad():
        raise BenchError("BENCH_PROCESS_EXITED", "did not start")
        yield

    with contextlib.ExitStack() as stack:
        assert enter_together(stack, good("a"), good("b")) == ["a", "b"]
        assert exited == []
    assert sorted(exited) == ["a", "b"]
    exited.clear()
    with pytest.raises(BenchError, match="did not start"), contextlib.ExitStack() as stack:
        enter_together(stack, good("a"), bad(), good("c"))
    assert sorted(exited) == ["a", "c"]
