"""Real processes on loopback for integration tests: free ports, start, wait, always clean up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child process whose output goes to a log file we can show when a test fails."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.args[0]} exited early:\n{self.output()}")
            return port_open(port)

        wait_until(ready, timeout, f"{' '.join(self.args[:2])} on port {port}")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running(args: list[str], log_path: Path, port: int | None = None, **kwargs) -> Iterator[Process]:
    process = Process(args, log_path, **kwargs)
    try:
        if port is not None:
            process.wait_for_port(port)
        yield process
    finally:
        process.stop()


def opa_binary() -> str:
    candidate = os.environ.get("LABELGATE_OPA") or str(REPO / ".tools" / "bin" / "opa")
    if not Path(candidate).exists():
        raise FileNotFoundError(f"opa not found at {candidate}: run `make tools`")
    return candidate


def labelgate_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "labelgate"), *args]
