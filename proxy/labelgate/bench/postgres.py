"""A throwaway PostgreSQL server for the approvals scenario (Debian's ``postgresql`` package).

The same start logic as the tests' ``tests/support/postgres.py``, kept here because the
installed package must not import the test suite: ``initdb`` into a fresh temporary
folder, ``postgres`` on a free loopback port with its Unix socket in that folder, stopped
(fast shutdown, SIGINT) and deleted afterwards. PostgreSQL refuses to run as root, so under
root it runs as the ``postgres`` user via ``runuser``.

Unlike the tests' server, durability stays on (fsync, synchronous_commit): the time from a
grant to a released call includes the commit of the vote, as in a real deployment.

Binaries: ``$LABELGATE_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labelgate.bench.procs import BenchError, Child, free_port

SUPERUSER = "labelgate"


def postgres_bin() -> Path:
    configured = os.environ.get("LABELGATE_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise BenchError(
            "BENCH_TOOL_MISSING", "PostgreSQL not found: apt-get install postgresql (or set LABELGATE_PG_BIN)"
        )
    return versions[-1].parent


@dataclass(frozen=True)
class Postgres:
    port: int
    child: Child

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def create_database(self) -> str:
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


def _accepts_connections(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:  # "the database system is starting up"
        return False


def _as_postgres_user(root: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    shutil.chown(root, "postgres", "postgres")
    for path in root.rglob("*"):
        shutil.chown(path, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def running_postgres(log_path: Path, timeout: float = 60.0) -> Iterator[Postgres]:
    binaries = postgres_bin()
    # Not the work folder: its parents may be private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="labelgate-bench-pg-"))
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
            raise BenchError("BENCH_POSTGRES", f"initdb failed ({done.returncode}): {done.stderr[-1000:]}")
        port = free_port()
        args = [
            *prefix,
            str(binaries / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=100",
        ]  # fmt: skip
        child = Child("postgres", args, log_path)
        try:
            child.wait_for_port(port, timeout)
            server = Postgres(port=port, child=child)
            deadline = time.monotonic() + timeout
            while not _accepts_connections(server.dsn()):
                if time.monotonic() > deadline:
                    raise BenchError("BENCH_PROCESS_TIMEOUT", f"PostgreSQL refused connections {timeout}s")
                time.sleep(0.1)
            yield server
        finally:
            child.stop(signal.SIGINT)  # fast shutdown: don't wait for clients to leave
    finally:
        shutil.rmtree(root, ignore_errors=True)
