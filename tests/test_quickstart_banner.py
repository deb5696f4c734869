"""The quickstart banner's approvals commands reach the admin listener the config names.

They once left out ``--url`` and so worked only when the admin listener was on the default
127.0.0.1:9090 (the review ran one on 19090: the printed commands failed). Here the admin
address is a stub API on a free port, and the printed ``approvals list`` is run as printed.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from labelgate.config import load_settings
from labelgate.quickstart import banner
from tests.test_quickstart import quickstart_config, run_shell


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
