"""The quickstart banner's commands work as printed, pasted in the user's own shell.

The approvals commands once left out ``--url`` and so worked only when the admin listener was
on the default 127.0.0.1:9090 (the review ran one on 19090: the printed commands failed). Here
the admin address is a stub API on a free port, and the printed ``approvals list`` is run as
printed. The commands name the environment's ``labelgate`` whatever PATH says, and the printed
``sessions show`` opens the sessions the quickstart sealed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from labelgate.config import load_settings
from labelgate.quickstart import banner, with_generated_keys
from tests.support.procs import REPO, VENV_BIN
from tests.test_quickstart import printed_call, quickstart_config, run_shell


@pytest.fixture
def admin_api() -> Iterator[tuple[str, list[str]]]:
    """``HOST:PORT`` of a stub approvals API (no requests pending) and the paths it was asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            raw = json.dumps({"items": []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_printed_approvals_commands_name_the_admin_listener(
    tmp_path: Path, admin_api: tuple[str, list[str]]
) -> None:
    address, asked = admin_api
    config_file = quickstart_config(tmp_path)
    config = yaml.safe_load(config_file.read_text())
    config["admin_listen"] = address
    config_file.write_text(yaml.safe_dump(config))
    printed = banner(load_settings(config_file))

    commands = [line.strip() for line in printed.splitlines() if " approvals " in line]
    assert len(commands) == 2, printed
    for command in commands:
        words = shlex.split(command)
        assert words[words.index("--url") + 1] == f"http://{address}", command

    listed = run_shell(commands[0])  # approvals list, as a user pastes it
    assert listed.returncode == 0, listed.stderr
    assert "no pending approval requests" in listed.stdout
    assert asked == ["/api/v1/approvals?state=pending"]


def shell_without_the_venv(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell as the user's own: no ``.venv/bin`` on PATH (``make run`` puts it
    there for its own recipe only), wide enough that tables do not wrap."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)
    environment = {**os.environ, "PATH": path, "COLUMNS": "200"}
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=cwd, env=environment
    )


@pytest.mark.parametrize("where", ["repository", "elsewhere"])
def test_the_printed_commands_name_the_venv_labelgate_whatever_path_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Review (docs): `make run` puts .venv/bin on PATH, so the banner printed bare `labelgate`,
    and pasted in the user's shell it was "labelgate: command not found". The command is the
    environment's own script: relative to the working directory under it, else absolute."""
    settings = load_settings(quickstart_config(tmp_path))
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    cwd = REPO if where == "repository" else tmp_path
    monkeypatch.chdir(cwd)
    printed = banner(settings)

    script = VENV_BIN / "labelgate"
    expected = str(script.relative_to(cwd)) if script.is_relative_to(cwd) else str(script)
    if where == "repository" and VENV_BIN == REPO / ".venv" / "bin":
        assert expected == ".venv/bin/labelgate"  # what README promises
    analyst = printed_call(printed, "# analysts:")
    assert shlex.split(analyst)[0] == expected, analyst
    minting = re.search(r'"\$\((.*? dev-token [^)]*)\)"', analyst)
    assert minting is not None and minting.group(1).startswith(f"{expected} dev-token"), analyst
    minted = shell_without_the_venv(minting.group(1), cwd)  # as the user pastes it
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.count(".") == 2  # a JWT


def record_sealed_call(sessions: Path, key_file: Path) -> None:
    """One call recorded in session ``session-a`` as the quickstart's gateway records it:
    sealed with its recording key."""
    from labelgate.calls import CallRecord
    from labelgate.recording import SessionRecorder
    from labelgate.recording.files import FileSessionStore
    from labelgate.recording.sealing import sealed
    from tests.recording.conftest import Clock, delivered_response, make_call, make_outcome

    async def run() -> None:
        recorder = SessionRecorder(sealed(FileSessionStore(sessions), key_file), clock=Clock())
        outcome = make_outcome(delivered_response("123-45-6789", "a note"))
        await recorder.record(CallRecord.of(make_call("session-a"), outcome, None, Clock()()))
        await recorder.close()

    sessions.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def test_the_printed_sessions_show_opens_what_the_quickstart_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (docs): the sessions the quickstart recorded (sealed with the key it generates in
    its state folder, which its config does not name) showed as DAMAGED to `sessions show
    --config`; the banner printed no `show` at all. The printed command opens them."""
    config = quickstart_config(tmp_path)
    settings = with_generated_keys(load_settings(config))  # as run_quickstart starts
    key_file = settings.recording.encryption_key_file
    assert settings.recording.dir is not None and key_file is not None
    record_sealed_call(settings.recording.dir, key_file)
    monkeypatch.chdir(REPO)
    printed = banner(settings, config)

    (show,) = [line.strip() for line in printed.splitlines() if " sessions show " in line]
    assert "SESSION_ID" in show and "--config" in show and "--token" in show, show
    shown = shell_without_the_venv(show.replace("SESSION_ID", "session-a"), REPO)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "ModelInfer" in shown.stdout and "MASK" in shown.stdout, shown.stdout
    assert "DAMAGED" not in shown.stdout and "no key is configured" not in shown.stderr, (
        shown.stdout + shown.stderr
    )
    assert "123-45-6789" not in shown.stdout  # shown through policy, to an auditor
