"""Real processes on loopback, for the tests and the benchmark harness (``bench/``) alike.

Free ports, start a child in its own process group with its output in a log file, wait
until it listens (a TCP port or a Unix socket), read its CPU time, and always stop it, by
its own pid. Also where the tools are: ``REPO``, the ``labelgate`` command of this
interpreter's environment, and the ``opa`` binary.

This is development support, never shipped: the installed package knows nothing of the
repository it was built from.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PINNED_OPA = REPO / ".tools" / "bin" / "opa"  # what `make tools` installs
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SIGTERM = signal.SIGTERM  # Process.signal hides the module inside the class body


# Ports are chosen below the kernel's ephemeral range (net.ipv4.ip_local_port_range), which
# it never hands out by itself: between a test choosing a port and its server binding it, an
# outgoing connection or another bind to port 0 cannot take it (CI saw that race: a port
# from bind(0), free when chosen, was in use a moment later).
_LOWEST_PORT = 20_000
_handed_out: set[int] = set()  # each port once per process, so two servers never share one


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the kernel's ephemeral range when that
    leaves room (else one the kernel picks)."""
    top = _ephemeral_start()
    if top - _LOWEST_PORT >= 1_000:
        for _ in range(1_000):
            port = random.randrange(_LOWEST_PORT, top)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _handed_out.add(port)
    return int(port)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def socket_accepts(path: Path) -> bool:
    """A Unix socket at ``path`` accepts connections."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(str(path)) == 0


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process, in seconds: the larger of two lower bounds. ``/proc/<pid>/stat``
    counts user + system time of every thread, exited ones too, but in clock ticks (10 ms: a
    writer busy 8 ms in a short run read 0, CI); the scheduler's nanoseconds of each live
    thread (``/proc/<pid>/task/*/schedstat``) miss only threads that have exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing paren are fixed.
    fields = stat.rpartition(")")[2].split()
    ticks = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return max(ticks, _scheduled_seconds(pid))


def _scheduled_seconds(pid: int) -> float:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0
    for task in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


class Process:
    """A child process whose output goes to a log file we can show when something fails.

    It leads its own process group (``start_new_session``), and every signal goes to that
    group, by its pid. ``name`` (default: the program) is what errors call it.
    """

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        name: str | None = None,
        cwd: Path | None = REPO,
    ) -> None:
        self.args = args
        self.name = name or Path(args[0]).name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def _ready(self, check: Callable[[], bool], where: str) -> Callable[[], bool]:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with code {self.popen.returncode} before listening on {where}:\n"
                    f"{self.tail()}"
                )
            return check()

        return ready

    def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        wait_until(
            self._ready(lambda: port_open(port), f"port {port}"), timeout, f"{self.name} on port {port}"
        )

    def wait_for_socket(self, path: Path, timeout: float = 20.0) -> None:
        wait_until(self._ready(lambda: socket_accepts(path), str(path)), timeout, f"{self.name} on {path}")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Stopped (SIGSTOP) inside the block and continued after it, whatever the block raised:
        it still holds its sockets and accepts connections, but answers nothing."""
        self.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal(signal.SIGCONT)

    def stop(self, first_signal: int = _SIGTERM, grace: float = 5.0) -> None:
        """``first_signal`` (PostgreSQL wants SIGINT: fast shutdown), then SIGKILL after ``grace`` s."""
        if self.alive():
            self.signal(first_signal)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running(
    args: list[str], log_path: Path, port: int | None = None, *, timeout: float = 20.0, **kwargs
) -> Iterator[Process]:
    """Start a process, wait until it listens on ``port`` (if given), and always stop it."""
    process = Process(args, log_path, **kwargs)
    try:
        if port is not None:
            process.wait_for_port(port, timeout)
        yield process
    finally:
        process.stop()


def opa_binary() -> str:
    """``$LABELGATE_OPA`` (the Makefile exports it), else the pinned ``.tools/bin/opa``, else
    ``opa`` on PATH."""
    configured = os.environ.get("LABELGATE_OPA")
    if configured:
        if not Path(configured).exists():
            raise FileNotFoundError(f"opa not found at {configured} ($LABELGATE_OPA): run `make tools`")
        return configured
    if PINNED_OPA.is_file():
        return str(PINNED_OPA)
    found = shutil.which("opa")
    if found is None:
        raise FileNotFoundError(f"opa not found at {PINNED_OPA} or on PATH: run `make tools`")
    return found


def labelgate_command(*args: str) -> list[str]:
    """The ``labelgate`` CLI of this interpreter's environment (``python -m`` if not installed)."""
    script = VENV_BIN / "labelgate"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "labelgate.cli", *args]
