"""A real, throwaway PostgreSQL server for tests and the benchmark (Debian's ``postgresql`` package).

``running_postgres()`` runs ``initdb`` into a fresh temporary folder, starts ``postgres`` on a
free loopback port with its Unix socket in that folder, yields a ``PostgresServer``, and
stops it (fast shutdown) and deletes the folder afterwards. PostgreSQL refuses to run as
root, so under root (here and in CI) it runs as the ``postgres`` user via ``runuser``.
Durability is off by default (``fsync=off``, the data is thrown away anyway); the benchmark
asks for ``durable=True``, so the time from a grant to a released call includes the commit
of the vote, as in a real deployment.

Binaries: ``$LABELGATE_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``.
Use ``server.create_database()`` for an empty database per test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import Process, free_port, wait_until

SUPERUSER = "labelgate"


def postgres_bin() -> Path:
    configured = os.environ.get("LABELGATE_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise FileNotFoundError("PostgreSQL not found: apt-get install postgresql (or set LABELGATE_PG_BIN)")
    return versions[-1].parent


@dataclass(frozen=True)
class PostgresServer:
    port: int
    socket_dir: Path
    process: Process

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), the postmaster and every backend, and return once
        none is left: a backend outlives its postmaster for a moment and answers its client
        meanwhile ("terminating connection due to unexpected postmaster exit" came only after
        it had served one more query, seen in CI)."""
        import psutil

        try:
            processes = [psutil.Process(self.process.popen.pid)]
            processes += processes[0].children(recursive=True)
        except psutil.NoSuchProcess:
            processes = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(processes, timeout=10)
        if alive:
            raise RuntimeError(f"PostgreSQL processes still alive after SIGKILL: {[p.pid for p in alive]}")
        self.process.popen.wait(timeout=10)

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:  # "the database system is starting up"
            return False

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


def _as_postgres_user(root: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    shutil.chown(root, "postgres", "postgres")
    for path in root.rglob("*"):
        shutil.chown(path, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--"]


# Safe only for data that is thrown away: a crash can lose or corrupt committed transactions.
_NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


@contextlib.contextmanager
def running_postgres(
    *, durable: bool = False, log_path: Path | None = None, timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """``durable`` keeps PostgreSQL's defaults (fsync, synchronous commit); ``log_path`` (default:
    inside the server's temporary folder, deleted with it) keeps the server's log."""
    binaries = postgres_bin()
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="labelgate-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    try:
        prefix = _as_postgres_user(root)
        initdb = [
            *prefix,
            str(binaries / "initdb"),
            "-D", str(data),
            "-U", SUPERUSER,
            "--auth=trust",
            "-E", "UTF8",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(initdb, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-1000:]}")
        port = free_port()
        settings = ["listen_addresses=127.0.0.1", "max_connections=100"]
        if not durable:
            settings += _NOT_DURABLE
        args = [
            *prefix,
            str(binaries / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(sockets),
            *(arg for setting in settings for arg in ("-c", setting)),
        ]  # fmt: skip
        process = Process(args, log_path or root / "postgres.log", name="postgres")
        try:
            process.wait_for_port(port, timeout)
            server = PostgresServer(port=port, socket_dir=sockets, process=process)
            wait_until(server.accepts_connections, timeout, "PostgreSQL to accept connections")
            yield server
        finally:
            process.stop(signal.SIGINT, grace=10.0)  # fast shutdown: don't wait for clients to leave
    finally:
        shutil.rmtree(root, ignore_errors=True)
