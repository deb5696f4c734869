"""Child processes for the benchmark: start on loopback, wait for the port, read CPU time, stop.

Every process the harness starts is stopped by the harness, by its own pid (the process
group it leads), whatever happens in between. Output goes to a log file in the run's
work folder so a process that dies early can say why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from labelgate.errors import LabelgateError

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(LabelgateError):
    """The harness cannot measure: a tool is missing, a process died, a check failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (``/proc/<pid>/stat``), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing paren are fixed.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def labelgate_command(*args: str) -> list[str]:
    """The ``labelgate`` CLI of this interpreter's environment (``python -m`` if not installed)."""
    script = Path(sys.executable).parent / "labelgate"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "labelgate.cli", *args]


def tool(path: Path, name: str, how: str) -> str:
    """The path of a required binary, or a BenchError that says how to get it."""
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise BenchError("BENCH_TOOL_MISSING", f"{name} not found at {path} or on PATH: {how}")


class Child:
    """One started process, logging to ``log_path``."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(
                    "BENCH_PROCESS_EXITED",
                    f"{self.name} exited with code {self.popen.returncode} before listening:\n{self.tail()}",
                )
            if port_open(port):
                return
            time.sleep(0.05)
        raise BenchError("BENCH_PROCESS_TIMEOUT", f"{self.name} did not listen on port {port} in {timeout}s")

    def stop(self, first_signal: int = signal.SIGTERM) -> None:
        """``first_signal``, then SIGKILL after 10 s (PostgreSQL wants SIGINT: fast shutdown)."""
        if self.alive():
            self._signal(first_signal)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()

    def _signal(self, sig: int) -> None:
        # The child leads its own process group (start_new_session): signal the group it owns.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


@contextlib.contextmanager
def running(name: str, args: list[str], log_path: Path, port: int, timeout: float = 30.0) -> Iterator[Child]:
    """Start a process, wait until it listens on ``port``, and always stop it afterwards."""
    child = Child(name, args, log_path)
    try:
        child.wait_for_port(port, timeout)
        yield child
    finally:
        child.stop()


def enter_together(stack: contextlib.ExitStack, *managers: AbstractContextManager[Any]) -> list[Any]:
    """Enter the managers in parallel threads; each one entered is exited by ``stack``."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    values, failure = [], None
    for manager, future in zip(managers, futures, strict=True):
        error = future.exception()
        if error is not None:
            failure = failure or error
            continue
        stack.push(manager.__exit__)
        values.append(future.result())
    if failure is not None:
        raise failure
    return values
