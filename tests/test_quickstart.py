"""`make run` as a user meets it: the quickstart starts, and the calls it prints work."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from tests.support.procs import REPO, Process, free_port, labelgate_command, wait_until


def quickstart_config(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "deploy/quickstart/labelgate.yaml").read_text())
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["rest_listen"] = f"127.0.0.1:{free_port()}"
    config["admin_listen"] = f"127.0.0.1:{free_port()}"
    config["upstream"]["address"] = f"127.0.0.1:{free_port()}"
    for entry in config.get("upstreams", []):  # the second demo backend, routed by model
        entry["address"] = f"127.0.0.1:{free_port()}"
    config["policy"]["dir"] = str(REPO / "rego")
    config["auth"]["jwt"]["dev_keys_dir"] = str(REPO / "deploy/quickstart/dev-keys")
    config["classification"]["catalog_file"] = str(REPO / "rego/labelgate/catalog/data.json")
    config["audit"]["socket"] = str(tmp_path / "state/audit.sock")
    config["approvals"]["sqlite_file"] = str(tmp_path / "state/approvals.db")
    config["recording"]["dir"] = str(tmp_path / "state/sessions")
    path = tmp_path / "labelgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def printed_call(banner: str, comment: str) -> str:
    lines = banner.splitlines()
    index = next(i for i, line in enumerate(lines) if comment in line)
    return lines[index + 1].strip()


def run_shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_quickstart_prints_calls_that_work(tmp_path: Path) -> None:
    config = quickstart_config(tmp_path)
    process = Process(labelgate_command("quickstart", "--config", str(config)), tmp_path / "quickstart.log")
    try:
        wait_until(
            lambda: "Ctrl-C stops" in process.output() or not process.alive(), 60, "the quickstart banner"
        )
        banner = process.output()
        assert process.alive(), banner

        analyst = printed_call(banner, "# analysts:")
        done = run_shell(analyst.replace(" infer ", " infer --json --ids 1 ", 1))
        assert done.returncode == 0, done.stderr
        delivered = {o["name"]: o["data"] for o in json.loads(done.stdout)["outputs"]}
        assert delivered["name"] != ["[REDACTED]"] and delivered["ssn"][0].startswith("*******")
        assert delivered["account_secret"] == [""]

        over_rest = run_shell(printed_call(banner, "# the same call over REST"))
        assert over_rest.returncode == 0, over_rest.stderr
        outputs = {o["name"]: o["data"] for o in json.loads(over_rest.stdout)["outputs"]}
        assert outputs["ssn"][0].startswith("*******") and outputs["account_secret"] == [""]

        routed = run_shell(printed_call(banner, "# sentiment goes to the second upstream"))
        assert routed.returncode == 0, routed.stderr
        assert json.loads(routed.stdout)["model_name"] == "sentiment", routed.stdout

        refused = run_shell(printed_call(banner, "# asking for a restricted output"))
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr

        checkpoints = tmp_path / "state/audit/checkpoints.jsonl"
        wait_until(lambda: checkpoints.exists() and checkpoints.stat().st_size > 0, 20, "a signed checkpoint")
        audit_line = next(line for line in banner.splitlines() if line.startswith("Audit log:"))
        verified = run_shell(audit_line.removeprefix("Audit log:").strip())
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # At least gRPC, REST, sentiment and the refusal (`labelgate infer` may also ask metadata).
        counted = re.search(r"(\d+) record\(s\) verified", verified.stdout)
        assert counted is not None and int(counted.group(1)) >= 4, verified.stdout
        sessions = run_shell(next(line for line in banner.splitlines() if line.startswith("Sessions:"))[9:])
        assert sessions.returncode == 0 and "conn-" in sessions.stdout
        # The printed `sessions show` opens what this gateway sealed (review: every call DAMAGED).
        session = re.search(r"conn-[0-9a-f]{8}", sessions.stdout)
        assert session is not None, sessions.stdout
        show = next(line.strip() for line in banner.splitlines() if " sessions show " in line)
        shown = run_shell(f"COLUMNS=200 {show.replace('SESSION_ID', session.group(0))}")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "ModelInfer" in shown.stdout and "DAMAGED" not in shown.stdout, shown.stdout
        assert shlex.split(analyst)[0].endswith("labelgate")
        # The full JSON log is in the state folder; the terminal has a short line per call.
        logged = [json.loads(line) for line in (tmp_path / "state/gateway.log").read_text().splitlines()]
        assert any(entry.get("event") == "call" and entry.get("reason") for entry in logged)
        terminal = process.output()
        assert re.search(r"\d\d:\d\d:\d\d deny +ModelInfer customer-profile subject=", terminal), terminal
        assert '"event"' not in terminal.split("Ctrl-C stops", 1)[1], "JSON log lines on the terminal"
    finally:
        process.stop()
    assert "Traceback" not in process.output()


def test_a_gateway_that_fails_to_start_says_why_and_never_that_it_is_up(tmp_path: Path) -> None:
    config_file = quickstart_config(tmp_path)
    config = yaml.safe_load(config_file.read_text())
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "x.rego").write_text("package labelgate.decision\nthis is not rego {\n")
    config["policy"]["dir"] = str(rego)
    config_file.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        labelgate_command("quickstart", "--config", str(config_file)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    terminal = done.stdout + done.stderr
    assert done.returncode == 2, terminal
    assert "labelgate is up" not in terminal and "Try these" not in terminal
    last = terminal.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith("(POLICY_COMPILE_FAILED)"), terminal
    assert "Traceback" not in terminal
