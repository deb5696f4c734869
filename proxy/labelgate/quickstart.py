"""`make run`: the demo backend and the gateway in front of it, plus calls to paste."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from labelgate.config import GatewaySettings, load_settings
from labelgate.errors import ConfigError


def _wait_for(address: str, process: subprocess.Popen, timeout: float = 20.0) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(
                "DEMO_BACKEND_EXITED", f"the demo backend exited with code {process.returncode}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.1)
    raise ConfigError(
        "DEMO_BACKEND_TIMEOUT", f"the demo backend did not listen on {address} in {timeout:.0f}s"
    )


def _command() -> str:
    local = Path(sys.executable).parent / "labelgate"
    on_path = shutil.which("labelgate")
    return "labelgate" if on_path and Path(on_path) == local else str(local)


def banner(settings: GatewaySettings) -> str:
    lg = _command()
    target = f"--target {settings.listen}"
    token = f'"$({lg} dev-token --sub {{sub}}{{groups}})"'

    def call(sub: str, groups: str = "", extra: str = "") -> str:
        flag = f" --groups {groups}" if groups else ""
        return f"  {lg} infer {target}{extra} --token {token.format(sub=sub, groups=flag)}"

    admin = f"http://{settings.admin_listen}" if settings.admin_listen else None
    lines = [
        "",
        f"labelgate is up: gateway {settings.listen} -> demo backend {settings.upstream.address}"
        f" (engine: {settings.engine})",
        "",
        "Try these (each persona of the default policy):",
        "  # no group: internal values redacted, confidential redacted, restricted emptied",
        call("alice"),
        "  # analysts: internal in clear, confidential shows the last 4 characters",
        call("ann", "analysts"),
        "  # data-stewards: confidential needs an approval from data-owners, so the call is refused",
        call("sam", "data-stewards"),
        "  # asking for a restricted output by name is refused outright",
        call("alice", extra=" --outputs account_secret"),
    ]
    if admin:
        lines += ["", f"Metrics: curl -s {admin}/metrics | grep labelgate_   Ready: curl -s {admin}/readyz"]
    lines += ["", "Ctrl-C stops both.", ""]
    return "\n".join(lines)


def run_quickstart(config: Path) -> None:
    from labelgate.gateway.server import run

    settings = load_settings(config)
    backend = subprocess.Popen(
        [sys.executable, "-m", "labelgate.cli", "demo-backend", "--listen", settings.upstream.address]
    )
    try:
        _wait_for(settings.upstream.address, backend)
        print(banner(settings), file=sys.stderr, flush=True)
        run(settings)
    except KeyboardInterrupt:
        pass
    finally:
        backend.terminate()
        try:
            backend.wait(timeout=5)
        except subprocess.TimeoutExpired:
            backend.kill()
