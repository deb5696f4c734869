"""Versioned database schemas (yoyo-migrations) for the raw-SQL stores.

Each store has a folder of numbered migrations here (``approvals/``: the approval store, on
SQLite or PostgreSQL; ``inputs/``: the decision-input store, SQLite). A store applies what is
pending when it opens, under yoyo's lock (two replicas starting at once apply each migration
once), and yoyo records each applied migration in ``_yoyo_migration`` in the store's own
database. ``0001_baseline`` of a store is the schema as it was before versioning, written to
adopt a database made by an older labelgate as it is (tables created only when missing,
columns added only when missing), so an upgrade keeps every row.

A change to a schema is a new file with the next number; a released migration never changes.
The runner is synchronous (yoyo is): stores call it from their own worker thread or before
serving, never on the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.backends.core.sqlite3 import SQLiteBackend
from yoyo.connections import parse_uri

STORES = ("approvals", "inputs")
_TABLE = "_yoyo_migration"
_PG_LOCK = 7_311_220_518  # pg_advisory_lock key of schema migrations (any store)


def folder(store: str) -> Path:
    if store not in STORES:
        raise ValueError(f"no migrations for store {store!r}")
    return Path(str(resources.files(__name__).joinpath(store)))


class _GivenSqlite(SQLiteBackend):  # type: ignore[misc]
    """yoyo's SQLite backend on a connection the store already holds (also ``:memory:``)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._given = connection
        super().__init__(parse_uri("sqlite:///labelgate-store"), _TABLE)

    def connect(self, dburi: Any) -> sqlite3.Connection:
        return self._given

    def copy(self) -> _GivenSqlite:
        # yoyo runs each migration on a copy it closes afterwards: the same borrowed
        # connection (an in-memory store has no other), left open.
        return _GivenSqlite(self._given)

    def __exit__(self, *exc_info: object) -> None:
        # SQLiteBackend.__exit__ restores sqlite3's converters, then closes the connection.
        self.driver.converters = self._saved_converters
        self.driver.adapters = self._saved_adapters


class _DsnPostgres(PostgresqlPsycopgBackend):  # type: ignore[misc]
    """yoyo's psycopg 3 backend on a libpq DSN as the store takes it (URL or key=value)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        super().__init__(parse_uri("postgresql+psycopg://labelgate-store/db"), _TABLE)

    def connect(self, dburi: Any) -> Any:
        import psycopg

        self.schema = None  # the DSN's search_path, like the store's own connection
        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)

    def copy(self) -> _DsnPostgres:
        return _DsnPostgres(self._dsn)


def _apply(backend: Any, store: str, extra: Sequence[Path]) -> list[str]:
    """Under the caller's exclusive lock: any yoyo lock row left now is a crashed run's."""
    backend.init_database()
    backend.break_lock()
    migrations = read_migrations(str(folder(store)), *map(str, extra))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [migration.id for migration in pending]


@contextlib.contextmanager
def _file_lock(connection: sqlite3.Connection) -> Iterator[None]:
    """Processes opening one SQLite file migrate one at a time (released if one crashes)."""
    rows = connection.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    if not path:  # in memory: this connection is the only one
        yield
        return
    with open(f"{path}-migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_sqlite(connection: sqlite3.Connection, store: str, extra: Sequence[Path] = ()) -> list[str]:
    """Apply the store's pending migrations on ``connection``; the ids applied, in order."""
    with _file_lock(connection):
        return _apply(_GivenSqlite(connection), store, extra)


def upgrade_postgres(dsn: str, store: str, extra: Sequence[Path] = ()) -> list[str]:
    """Apply the store's pending migrations on the PostgreSQL database at ``dsn``."""
    backend = _DsnPostgres(dsn)
    connection = backend.connection
    try:
        # Replicas starting at once migrate one at a time; a session lock ends with its session.
        connection.execute("SELECT pg_advisory_lock(%s)", (_PG_LOCK,))
        return _apply(backend, store, extra)
    finally:
        connection.close()


def applied(connection: Any) -> list[str]:
    """The migration ids recorded in a store's database (any DB-API connection)."""
    rows = connection.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc").fetchall()
    return [row[0] for row in rows]
