"""A real, throwaway PostgreSQL server for tests (Debian's ``postgresql`` package).

``running_postgres()`` runs ``initdb`` into a fresh temporary folder, starts ``postgres`` on a
free loopback port with its Unix socket in that folder, yields a ``PostgresServer``, and
stops it (fast shutdown) and deletes the folder afterwards. PostgreSQL refuses to run as
root, so under root (here and in CI) it runs as the ``postgres`` user via ``runuser``.
Durability is switched off (``fsync=off``): the data is thrown away anyway.

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

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:  # "the database system is starting up"
            return False

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


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    binaries = postgres_bin()
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="labelgate-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    try:
        prefix = _as_postgres_user(root)
        subprocess.run(
            [
                *prefix,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        args = [
            *prefix,
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=100",
        ]
        process = Process(args, root / "postgres.log")
        try:
            process.wait_for_port(port, timeout=60)
            server = PostgresServer(port=port, socket_dir=sockets, process=process)
            wait_until(server.accepts_connections, 60, "PostgreSQL to accept connections")
            yield server
        finally:
            process.signal(signal.SIGINT)  # fast shutdown: don't wait for clients to leave
            process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
