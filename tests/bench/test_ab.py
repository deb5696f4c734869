"""bench.ab's pure pieces: which arms a command line asks for, the CPU it sums per call
(over every gateway process), and the report's ratios to the floor of the same round."""

from __future__ import annotations

import argparse
import os

from bench.ab import FLOOR, arms_from, process_tree, report, summarize
from bench.load import parse_report
from tests.bench.test_pieces import _ghz_report


def test_the_arms_follow_the_flags() -> None:
    plain = argparse.Namespace(baseline_src=None, uvloop=False, workers=1)
    assert [arm.name for arm in arms_from(plain)] == ["current"]
    every = argparse.Namespace(baseline_src="/tmp/base/proxy", uvloop=True, workers=2)
    arms = arms_from(every)
    assert [arm.name for arm in arms] == ["baseline", "current", "uvloop", "workers2"]
    assert arms[0].env["PYTHONPATH"] == "/tmp/base/proxy"
    assert arms[-1].workers == 2


def test_the_current_arm_can_come_from_another_tree() -> None:
    both = argparse.Namespace(
        baseline_src="/tmp/base/proxy", current_src="/tmp/new/proxy", uvloop=True, workers=2
    )
    arms = arms_from(both)
    assert [arm.name for arm in arms] == ["baseline", "current", "uvloop", "workers2"]
    assert [arm.env["PYTHONPATH"] for arm in arms] == ["/tmp/base/proxy"] + ["/tmp/new/proxy"] * 3
    assert arms[1].command_prefix[-2:] == ["-m", "labelgate.cli"]


def test_cpu_per_call_sums_every_gateway_process() -> None:
    run = parse_report(
        _ghz_report({"OK": 10}),
        target="t", concurrency=1, elapsed=1.0, client_cpu_s=0.1,
        cpu_s={"gateway0": 0.02, "gateway1": 0.03, "backend": 0.5},
    )  # fmt: skip
    assert summarize(run)["cpu_ms"] == 5.0  # (20 + 30 ms) / 10 calls; the backend's is not the gateway's


def test_the_process_tree_starts_with_the_process_itself() -> None:
    assert process_tree(os.getpid())[0] == os.getpid()


def row(calls_per_s: float, p50_ms: float, cpu_ms: float) -> dict[str, float]:
    return {"calls_per_s": calls_per_s, "p50_ms": p50_ms, "cpu_ms": cpu_ms}


def test_the_report_divides_by_the_floor_of_the_same_round(capsys) -> None:
    runs = {
        FLOOR: {1: [row(100.0, 1.0, 1.0), row(50.0, 2.0, 2.0)]},
        "current": {1: [row(50.0, 3.0, 3.0), row(25.0, 4.0, 6.0)]},
    }
    report(runs, [1])
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    cells = [float(cell) for cell in next(line for line in lines if line[0] == "current")[1:]]
    assert cells == [1.0, 37.5, 0.5, 3.5, 4.5, 3.0]  # c, calls/s, x floor, p50, cpu, x floor
