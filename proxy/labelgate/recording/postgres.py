"""Session recordings in PostgreSQL, for gateways that share them (psycopg 3, async).

Two tables (created if missing): ``labelgate_recording_sessions`` (one row per session:
first and last time, entry count, bytes, truncated) and ``labelgate_recording_entries``
(one row per entry, ``jsonb``, deleted with their session). An append locks the
session's row (``SELECT ... FOR UPDATE``) so the size check and the insert are one step
across gateways. The sweeper deletes sessions by ``last_at``; the index makes that cheap.
A page of the session list is ordered and cut in SQL (``last_at, session_id`` descending,
``LIMIT``), on an index of those columns.

One connection, used by the recorder's single writer task (and by the sweeper, under the
same lock); after a connection error it is reopened on the next use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from labelgate.recording.entries import (
    Admission,
    admit,
    encode_line,
    format_time,
    parse_time,
    truncation_marker,
)
from labelgate.recording.store import (
    Sealer,
    SessionInfo,
    SessionPage,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    page_size,
)

_COLUMNS = "session_id, started_at, last_at, calls, bytes, truncated"

SCHEMA = """
CREATE TABLE IF NOT EXISTS labelgate_recording_sessions (
    session_id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    entries integer NOT NULL DEFAULT 0,
    calls integer NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    truncated boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS labelgate_recording_sessions_last_at ON labelgate_recording_sessions (last_at);
CREATE INDEX IF NOT EXISTS labelgate_recording_sessions_page
    ON labelgate_recording_sessions (last_at DESC, session_id DESC);
CREATE TABLE IF NOT EXISTS labelgate_recording_entries (
    session_id text NOT NULL REFERENCES labelgate_recording_sessions (session_id) ON DELETE CASCADE,
    seq integer NOT NULL,
    at timestamptz NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"""


class PostgresSessionStore:
    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
        return self._conn

    async def open(self) -> None:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                # Several gateways may start at once: serialise the CREATE IF NOT EXISTS.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('labelgate_recording_schema'))")
                await conn.execute(SCHEMA)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                row = await self._locked_row(conn, session_id, entries[0]["time"])
                count, calls, size, truncated = row
                results: list[Admission] = []
                rows: list[tuple[Any, ...]] = []
                last = entries[0]["time"]
                for entry in entries:
                    position = count + 1  # the row's seq, under the row's lock
                    stored = seal(entry, position) if seal else entry
                    length = len(encode_line(stored))
                    result = admit(size, truncated, length, limit)
                    results.append(result)
                    if result == "truncate":
                        # The marker first, then the entry: its call was released, so it is stored.
                        marker = truncation_marker(entry, limit, size)
                        marked = seal(marker, position) if seal else marker
                        rows.append((session_id, position, parse_time(marked["time"]), Jsonb(marked)))
                        size += len(encode_line(marked))
                        position += 1
                        stored = seal(entry, position) if seal else entry
                        length = len(encode_line(stored))
                        truncated = True
                    size += length
                    calls += 1
                    count = position
                    rows.append((session_id, count, parse_time(stored["time"]), Jsonb(stored)))
                    last = stored["time"]
                if rows:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(
                            "INSERT INTO labelgate_recording_entries (session_id, seq, at, entry) "
                            "VALUES (%s, %s, %s, %s)",
                            rows,
                        )
                    await conn.execute(
                        "UPDATE labelgate_recording_sessions SET entries = %s, calls = %s, bytes = %s, "
                        "truncated = %s, last_at = greatest(last_at, %s) WHERE session_id = %s",
                        (count, calls, size, truncated, parse_time(last), session_id),
                    )
                return results

    async def _locked_row(
        self, conn: psycopg.AsyncConnection, session_id: str, time: str
    ) -> tuple[int, int, int, bool]:
        at = parse_time(time)
        for _ in range(3):  # the sweeper may delete the row between the insert and the lock
            await conn.execute(
                "INSERT INTO labelgate_recording_sessions (session_id, started_at, last_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (session_id) DO NOTHING",
                (session_id, at, at),
            )
            cursor = await conn.execute(
                "SELECT entries, calls, bytes, truncated FROM labelgate_recording_sessions "
                "WHERE session_id = %s FOR UPDATE",
                (session_id,),
            )
            row = await cursor.fetchone()
            if row is not None:
                return int(row[0]), int(row[1]), int(row[2]), bool(row[3])
        raise psycopg.OperationalError(f"session row for {session_id!r} keeps disappearing")

    async def sessions(self) -> list[SessionInfo]:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM labelgate_recording_sessions "  # noqa: S608
                "ORDER BY last_at DESC, session_id DESC"
            )
            return [_info(row) for row in await cursor.fetchall()]

    async def sessions_page(self, limit: int, cursor: str | None = None) -> SessionPage:
        limit = page_size(limit)
        after = _position(cursor) if cursor else None
        where, params = "", list[Any]([limit + 1])
        if after is not None:
            where = "WHERE (last_at, session_id) < (%s, %s) "
            params = [after[0], after[1], limit + 1]
        async with self._lock:
            conn = await self._connection()
            found = await conn.execute(
                f"SELECT {_COLUMNS} FROM labelgate_recording_sessions {where}"  # noqa: S608
                "ORDER BY last_at DESC, session_id DESC LIMIT %s",
                params,
            )
            rows = await found.fetchall()
        shown = rows[:limit]
        more = len(rows) > limit
        last = shown[-1] if shown else None
        following = encode_cursor(last[2].isoformat(), last[0]) if more and last is not None else None
        return SessionPage([_info(row) for row in shown], following)

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(
                "SELECT 1 FROM labelgate_recording_sessions WHERE session_id = %s", (session_id,)
            )
            if await cursor.fetchone() is None:
                return None
            cursor = await conn.execute(
                "SELECT seq, entry FROM labelgate_recording_entries WHERE session_id = %s ORDER BY seq",
                (session_id,),
            )
            # A row that is not an object was not written by a store: damaged, like a torn line.
            return [
                entry if isinstance(entry, dict) else {"kind": "damaged", "line": seq}
                for seq, entry in await cursor.fetchall()
            ]

    async def sweep(self, cutoff: datetime) -> int:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(
                "DELETE FROM labelgate_recording_sessions WHERE last_at < %s", (cutoff,)
            )
            return cursor.rowcount


def _info(row: Any) -> SessionInfo:
    session_id, started, last, calls, size, truncated = row
    return SessionInfo(
        session_id, format_time(started), format_time(last), int(calls), int(size), bool(truncated)
    )


def _position(cursor: str) -> tuple[datetime, str]:
    """(last_at, session_id) of the last session a page showed: exact to the microsecond,
    since the column is (the listing shows milliseconds)."""
    order, session_id = decode_cursor(cursor)
    try:
        at = datetime.fromisoformat(order)
    except ValueError:
        raise bad_cursor() from None
    if at.tzinfo is None:
        raise bad_cursor()
    return at, session_id
