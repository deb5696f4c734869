"""The approval store as it was before versioning (SQLite and PostgreSQL).

Adopts any older store as it is: tables and indexes only when missing, the columns later
releases added only when missing, and requests made before ``approval_request_groups``
existed get their group rows. Frozen: a schema change is a new migration.
"""

import json
import sqlite3
from typing import Any

from yoyo import step

TABLES = (
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
    """CREATE TABLE IF NOT EXISTS approval_grant_charges (
        grant_id TEXT NOT NULL,
        call_request_id TEXT NOT NULL,
        rows_charged INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (grant_id, call_request_id)
    )""",
)
ADDED_COLUMNS = {
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
INDEXES = (
    "CREATE INDEX IF NOT EXISTS approval_requests_state ON approval_requests (state, expires_at)",
    "CREATE INDEX IF NOT EXISTS approval_requests_listing ON approval_requests (state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS approval_requests_requester ON approval_requests (requester, state)",
    "CREATE INDEX IF NOT EXISTS approval_grants_binding ON approval_grants (subject, method, model, labels)",
)


def _columns(cursor: Any, sqlite: bool, table: str) -> set[str]:
    if sqlite:
        cursor.execute(f"PRAGMA table_info({table})")
        return {row[1] for row in cursor.fetchall()}
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cursor.fetchall()}


def adopt(conn: Any) -> None:
    sqlite = isinstance(conn, sqlite3.Connection)
    insert_group = (
        "INSERT INTO approval_request_groups (request_id, group_name) VALUES (?, ?)"
        if sqlite
        else "INSERT INTO approval_request_groups (request_id, group_name) VALUES (%s, %s)"
    )
    cursor = conn.cursor()
    for statement in TABLES:
        cursor.execute(statement)
    added = False
    for table, columns in ADDED_COLUMNS.items():
        present = _columns(cursor, sqlite, table)
        for name, definition in columns:
            if name not in present:
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                added = True
    for statement in INDEXES:
        cursor.execute(statement)
    if added:  # requests made before approval_request_groups existed: index their groups
        cursor.execute(
            "SELECT id, approver_groups FROM approval_requests WHERE id NOT IN "
            "(SELECT request_id FROM approval_request_groups)"
        )
        for request_id, groups in cursor.fetchall():
            for group in sorted(set(json.loads(groups))):
                cursor.execute(insert_group, (request_id, group))


steps = [step(adopt)]
