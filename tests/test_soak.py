"""The soak drill's CI version: `python -m bench.soak --duration 60` against a real stack.

The whole drill runs in a child process (it starts the demo backend, the audit writer, a bundle
server, the gateway and the audit forwarder on loopback, and stops them all): the same command
`make soak` runs for ten minutes. The verdict is the drill's own; this test fails with the
drill's list of failures and its figures, so a red run says what grew or what broke.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.procs import REPO

DURATION_SECONDS = 60


def test_the_60_second_soak_passes(tmp_path: Path) -> None:
    figures_file = tmp_path / "soak.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--duration",
            str(DURATION_SECONDS),
            "--dir",
            str(tmp_path / "stack"),
            "--out",
            str(figures_file),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DURATION_SECONDS + 300,
        check=False,
    )
    assert figures_file.exists(), f"the soak produced no figures:\n{completed.stderr[-4000:]}"
    figures = json.loads(figures_file.read_text())
    summary = {key: value for key, value in figures.items() if key not in ("series", "timeline")}
    assert figures["verdict"] == "pass", json.dumps(summary, indent=2)
    assert completed.returncode == 0
    # The drill did what it says: every kind of call ran, the faults happened, and the checks
    # had material to work on.
    kinds = {key.split()[0] for key in figures["calls_by_kind_and_code"]}
    assert {"steward/held-approved", "steward/held-denied", "steward/async-approved"} <= kinds
    events = [event["event"] for event in figures["timeline"]]
    for event in (
        "bundle_server_stopped",
        "bundle_server_started",
        "policy_edit_published",
        "forwarder_receiver_down",
        "forwarder_receiver_up",
    ):
        assert event in events
    assert (
        figures["audit_records"] >= figures["calls"]
        and figures["forwarded_records"] >= figures["audit_records"]
    )
    assert figures["policy_edit_to_answer_s"] is not None


def test_the_soak_refuses_bad_arguments_in_one_line() -> None:
    for args in (["--duration", "5"], ["--kinds", "nobody/nothing"], ["--workers", "0"]):
        completed = subprocess.run(
            [sys.executable, "-m", "bench.soak", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 2, args
        assert "Traceback" not in completed.stderr and "error:" in completed.stderr
