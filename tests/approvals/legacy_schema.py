"""The approvals store's schema as the last gateway before versioned schemas made it
(``create_schema``), kept only so ``tests/test_migrations.py`` can build such a store and
upgrade it. The product makes its tables through ``labelgate/migrations/approvals``."""

from __future__ import annotations

import json
from collections.abc import Iterable

from labelgate.approvals.db import Tx


async def _insert_groups(tx: Tx, request_id: str, groups: Iterable[str]) -> None:
    for group in sorted(set(groups)):
        await tx.execute(
            "INSERT INTO approval_request_groups (request_id, group_name) VALUES (?, ?)", (request_id, group)
        )


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS approval_requests (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        mode TEXT NOT NULL,
        requester TEXT NOT NULL,
        requester_groups TEXT NOT NULL,
        method TEXT NOT NULL,
        model TEXT NOT NULL,
        phase TEXT NOT NULL,
        labels TEXT NOT NULL,
        fields TEXT NOT NULL,
        policy_reason TEXT NOT NULL,
        justification TEXT NOT NULL,
        approver_groups TEXT NOT NULL,
        min_approvals INTEGER NOT NULL,
        grant_ttl_seconds INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        resolved_at DOUBLE PRECISION,
        resolution TEXT NOT NULL,
        node_id TEXT NOT NULL,
        call_request_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        grant_id TEXT,
        digest TEXT NOT NULL DEFAULT '',
        query_summary TEXT NOT NULL DEFAULT '{}',
        grant_scope TEXT NOT NULL DEFAULT 'query',
        single_use INTEGER NOT NULL DEFAULT 0,
        row_budget INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS approval_requests_state ON approval_requests (state, expires_at)",
    "CREATE INDEX IF NOT EXISTS approval_requests_listing ON approval_requests (state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS approval_requests_requester ON approval_requests (requester, state)",
    """CREATE TABLE IF NOT EXISTS approval_request_groups (
        request_id TEXT NOT NULL REFERENCES approval_requests (id) ON DELETE CASCADE,
        group_name TEXT NOT NULL,
        PRIMARY KEY (group_name, request_id)
    )""",
    """CREATE TABLE IF NOT EXISTS approval_votes (
        request_id TEXT NOT NULL REFERENCES approval_requests (id) ON DELETE CASCADE,
        approver TEXT NOT NULL,
        approver_groups TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (request_id, approver)
    )""",
    """CREATE TABLE IF NOT EXISTS approval_grants (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        method TEXT NOT NULL,
        model TEXT NOT NULL,
        labels TEXT NOT NULL,
        approvers TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        digest TEXT NOT NULL DEFAULT '',
        scope TEXT NOT NULL DEFAULT 'query',
        single_use INTEGER NOT NULL DEFAULT 0,
        used_by TEXT,
        used_at DOUBLE PRECISION,
        row_budget INTEGER,
        rows_used INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS approval_grants_binding ON approval_grants (subject, method, model, labels)",
    # One row per call a budgeted grant released: what it was charged, so a call is charged
    # once (request and response phase) and the audit trail can be reconciled with the store.
    """CREATE TABLE IF NOT EXISTS approval_grant_charges (
        grant_id TEXT NOT NULL,
        call_request_id TEXT NOT NULL,
        rows_charged INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (grant_id, call_request_id)
    )""",
)
# Two replicas starting at once must not race on CREATE TABLE (PostgreSQL).
_SCHEMA_LOCK = 7_311_220_517


# Columns added after the first release: a store made by an older gateway gets them on start.
_ADDED_COLUMNS = {
    "approval_requests": (
        ("digest", "TEXT NOT NULL DEFAULT ''"),
        ("query_summary", "TEXT NOT NULL DEFAULT '{}'"),
        ("grant_scope", "TEXT NOT NULL DEFAULT 'query'"),
        ("single_use", "INTEGER NOT NULL DEFAULT 0"),
        ("row_budget", "INTEGER"),
    ),
    "approval_grants": (
        ("digest", "TEXT NOT NULL DEFAULT ''"),
        ("scope", "TEXT NOT NULL DEFAULT 'query'"),
        ("single_use", "INTEGER NOT NULL DEFAULT 0"),
        ("used_by", "TEXT"),
        ("used_at", "DOUBLE PRECISION"),
        ("row_budget", "INTEGER"),
        ("rows_used", "INTEGER NOT NULL DEFAULT 0"),
    ),
}


async def create_schema(tx: Tx) -> None:
    if tx.dialect == "postgres":
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
    for statement in SCHEMA:
        await tx.execute(statement)
    migrated = False
    for table, columns in _ADDED_COLUMNS.items():
        present = await _columns(tx, table)
        for name, definition in columns:
            if name not in present:
                await tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                migrated = True
    if migrated:  # requests made before approval_request_groups existed: index their groups
        rows = await tx.fetch(
            "SELECT id, approver_groups FROM approval_requests WHERE id NOT IN "
            "(SELECT request_id FROM approval_request_groups)"
        )
        for row in rows:
            await _insert_groups(tx, row["id"], json.loads(row["approver_groups"]))


async def _columns(tx: Tx, table: str) -> set[str]:
    if tx.dialect == "postgres":
        rows = await tx.fetch(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    else:
        rows = await tx.fetch(f"PRAGMA table_info({table})")
    return {row["name"] for row in rows}
