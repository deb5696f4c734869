"""Versioned store schemas (labelgate/migrations, yoyo): upgrades from today's schema keep
every row, on SQLite and on a real PostgreSQL.

"Today's schema" is made by the code that made it before versioning (the approvals
``create_schema``, kept in tests/approvals/legacy_schema.py) and filled through the service; the
decision-input store's pre-versioning DDL is frozen below. Then the store opens the way it
does now (migrations applied) and the same rows read back the same.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from labelgate.approvals import repository as repo
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.postgres import PostgresDatabase
from labelgate.approvals.service import ApprovalService
from labelgate.gateway.record import InputStore
from labelgate.migrations import applied, folder, upgrade_postgres, upgrade_sqlite
from tests.approvals import legacy_schema
from tests.approvals.test_notify import OWNER, draft
from tests.support.postgres import PostgresServer, running_postgres

# The decision-input store's DDL before versioning (gateway/record.py made it at open).
INPUTS_BEFORE = """
CREATE TABLE IF NOT EXISTS decision_inputs (
    hash TEXT PRIMARY KEY, phase TEXT NOT NULL, input TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS decision_inputs_last_seen ON decision_inputs (last_seen);
"""
# An approval store from before the columns of later releases and the group index table.
APPROVALS_OLDEST = """
CREATE TABLE approval_requests (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, mode TEXT NOT NULL, requester TEXT NOT NULL,
    requester_groups TEXT NOT NULL, method TEXT NOT NULL, model TEXT NOT NULL, phase TEXT NOT NULL,
    labels TEXT NOT NULL, fields TEXT NOT NULL, policy_reason TEXT NOT NULL, justification TEXT NOT NULL,
    approver_groups TEXT NOT NULL, min_approvals INTEGER NOT NULL, grant_ttl_seconds INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION, resolution TEXT NOT NULL, node_id TEXT NOT NULL,
    call_request_id TEXT NOT NULL, session_id TEXT NOT NULL, grant_id TEXT
);
"""
# The approval store's migrations, in order (labelgate/migrations/approvals).
APPROVALS_MIGRATIONS = ["0001_baseline", "0002_signed_out_sessions"]
LATER = '''"""A migration a later release might add (test only)."""

from yoyo import step

__depends__ = {"0001_baseline"}
steps = [step("ALTER TABLE approval_requests ADD COLUMN ticket TEXT")]
'''


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


async def _todays_store(db: SqliteDatabase | PostgresDatabase) -> list[str]:
    """A store made and filled by the pre-versioning code; the ids of its requests."""
    await db.start()
    async with db.transaction() as tx:
        await legacy_schema.create_schema(tx)
    service = ApprovalService(db, node_id="old", link_base="https://gw.example")
    pending = await service.open(draft())
    denied = await service.open(draft())
    await service.deny(OWNER, denied.id, "no ticket")
    await db.close()
    return [pending.id, denied.id]


async def _reopened(db: SqliteDatabase | PostgresDatabase, ids: list[str]) -> list[object]:
    service = ApprovalService(db, node_id="new", link_base="https://gw.example")
    await service.start(sweep=False, abandon_previous=False)
    try:
        return [await service.get(request_id) for request_id in ids]
    finally:
        await service.close()


async def _snapshot(db: SqliteDatabase | PostgresDatabase, ids: list[str]) -> list[object]:
    await db.start()
    try:
        async with db.transaction() as tx:
            return [await repo.get_request(tx, request_id) for request_id in ids]
    finally:
        await db.close()


async def test_sqlite_approval_store_upgrades_from_todays_schema_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    ids = await _todays_store(SqliteDatabase(path))
    before = await _snapshot(SqliteDatabase(path), ids)
    assert all(before) and before[1].state.value == "denied"  # type: ignore[union-attr]

    assert await _reopened(SqliteDatabase(path), ids) == before
    with sqlite3.connect(path) as conn:
        assert applied(conn) == APPROVALS_MIGRATIONS
        assert conn.execute("SELECT count(*) FROM approval_votes").fetchone()[0] == 1
    # Opening again applies nothing more.
    assert await _reopened(SqliteDatabase(path), ids) == before
    with sqlite3.connect(path) as conn:
        assert applied(conn) == APPROVALS_MIGRATIONS


async def test_postgres_approval_store_upgrades_from_todays_schema_keeping_its_rows(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.create_database()
    ids = await _todays_store(PostgresDatabase(dsn))
    before = await _snapshot(PostgresDatabase(dsn), ids)
    assert all(before)

    assert await _reopened(PostgresDatabase(dsn), ids) == before
    with psycopg.connect(dsn) as conn:
        assert applied(conn) == APPROVALS_MIGRATIONS
        assert conn.execute("SELECT count(*) FROM approval_votes").fetchone()[0] == 1  # type: ignore[index]
    assert upgrade_postgres(dsn, "approvals") == []


def test_a_later_migration_applies_once_after_the_baseline_on_postgres(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database()
    (tmp_path / "0099_ticket.py").write_text(LATER)
    assert upgrade_postgres(dsn, "approvals") == APPROVALS_MIGRATIONS
    assert upgrade_postgres(dsn, "approvals", extra=[tmp_path]) == ["0099_ticket"]
    assert upgrade_postgres(dsn, "approvals", extra=[tmp_path]) == []
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT ticket FROM approval_requests")


def test_the_oldest_sqlite_approval_store_gets_later_columns_and_its_group_index(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.executescript(APPROVALS_OLDEST)
    values = {
        "id": "r1", "state": "pending", "mode": "hold", "requester": "steve",
        "requester_groups": "[]", "method": "/m", "model": "customer-profile", "phase": "request",
        "labels": '["confidential"]', "fields": "[]", "policy_reason": "why", "justification": "",
        "approver_groups": json.dumps(["data-owners", "ciso"]), "min_approvals": 1,
        "grant_ttl_seconds": 900, "created_at": 1.0, "expires_at": 2.0, "resolved_at": None,
        "resolution": "", "node_id": "n", "call_request_id": "c", "session_id": "s", "grant_id": None,
    }  # fmt: skip
    conn.execute(
        f"INSERT INTO approval_requests ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608 - the fixed names above
        tuple(values.values()),
    )
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "0099_ticket.py").write_text(LATER)
    assert upgrade_sqlite(conn, "approvals", extra=[tmp_path / "later"]) == [
        *APPROVALS_MIGRATIONS,
        "0099_ticket",
    ]
    row = conn.execute(
        "SELECT id, digest, grant_scope, single_use, row_budget, ticket FROM approval_requests"
    ).fetchone()
    assert row == ("r1", "", "query", 0, None, None)
    assert conn.execute("SELECT rows_used FROM approval_grants").fetchall() == []
    groups = conn.execute("SELECT group_name FROM approval_request_groups ORDER BY 1").fetchall()
    assert groups == [("ciso",), ("data-owners",)]
    assert upgrade_sqlite(conn, "approvals", extra=[tmp_path / "later"]) == []
    conn.close()


def test_the_decision_input_store_upgrades_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "inputs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(INPUTS_BEFORE)
        conn.execute("INSERT INTO decision_inputs VALUES ('h1', 'request', '{\"a\": 1}', 1.0, 2.0, 3)")
    store = InputStore(path)
    try:
        assert applied(store._db) == ["0001_baseline"]
        rows = store._db.execute("SELECT hash, phase, input, seen FROM decision_inputs").fetchall()
        assert rows == [("h1", "request", '{"a": 1}', 3)]
    finally:
        store.close()
    InputStore(path).close()  # opening again: nothing pending, nothing lost
    with sqlite3.connect(path) as conn:
        assert applied(conn) == ["0001_baseline"]
        assert conn.execute("SELECT count(*) FROM decision_inputs").fetchone()[0] == 1


def test_unknown_store_is_refused() -> None:
    with pytest.raises(ValueError, match="no migrations"):
        folder("nope")
