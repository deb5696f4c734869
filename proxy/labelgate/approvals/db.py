"""The approval store's connection: one small interface over SQLite and PostgreSQL.

SQL is written once with ``?`` placeholders (PostgreSQL gets ``%s``). A transaction calls
``tx.changed(request_id)`` for every request it changes; once it commits, everyone who
subscribed with ``on_change`` hears of it:

- SQLite (one node): in this process right away. Another process on the same file (e.g.
  ``labelgate approvals-server``) is only seen by the waiters' fallback re-check, so
  ``wakes_other_processes`` is false.
- PostgreSQL (several gateways): ``NOTIFY labelgate_approvals, '<id>'`` inside the
  transaction, delivered on commit to every replica's ``LISTEN`` connection, so a call held
  on replica A wakes when an approver acts through replica B.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from labelgate.approvals import reasons
from labelgate.approvals.errors import ApprovalsUnavailable
from labelgate.logs import get_logger
from labelgate.migrations import upgrade_sqlite

log = get_logger(__name__)
CHANNEL = "labelgate_approvals"
# A change notice that wakes every waiter (after missed notifications) to re-check.
WAKE_ALL = "*"
T = TypeVar("T")
Row = dict[str, Any]
Params = Sequence[Any]
ChangeCallback = Callable[[str], None]


class Tx(Protocol):
    dialect: str

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Params = ()) -> int: ...

    def changed(self, request_id: str) -> None: ...


class Database(Protocol):
    dialect: str
    wakes_other_processes: bool

    async def start(self) -> None: ...

    async def migrate(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    def on_change(self, callback: ChangeCallback) -> None: ...


class _Subscribers:
    def __init__(self) -> None:
        self._callbacks: list[ChangeCallback] = []

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    def publish(self, request_id: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(request_id)
            except Exception:
                log.exception("approval change callback failed")


class _SqliteTx:
    dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.changed_ids: list[str] = []

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._db._run(self._db._fetch, sql, tuple(params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._db._run(self._db._execute, sql, tuple(params))

    def changed(self, request_id: str) -> None:
        self.changed_ids.append(request_id)


class SqliteDatabase(_Subscribers):
    """SQLite on one thread of its own, so the event loop never blocks on disk."""

    dialect = "sqlite"
    wakes_other_processes = False

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="labelgate-approvals-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as error:
            # The driver's text may name files and tables: logged, not sent to callers.
            log.error("approval store error", store="sqlite", error=str(error))
            raise ApprovalsUnavailable(
                reasons.APPROVALS_STORE_ERROR, "the approval store (SQLite) failed"
            ) from None

    def _connect(self) -> None:
        target = str(self.path) if self.path is not None else ":memory:"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        if self.path is not None:  # WAL: readers (another process's API) don't block writers
            conn.execute("PRAGMA journal_mode = WAL")
        self._conn = conn

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        assert self._conn is not None
        return [dict(row) for row in self._conn.execute(sql, params).fetchall()]

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        assert self._conn is not None
        return self._conn.execute(sql, params).rowcount

    async def start(self) -> None:
        await self._run(self._connect)

    async def migrate(self) -> None:
        """The versioned schema (labelgate/migrations/approvals), on this store's own thread."""
        await self._run(lambda: upgrade_sqlite(self._conn, "approvals") if self._conn else None)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        if self._conn is None:
            raise ApprovalsUnavailable(reasons.APPROVALS_STORE_CLOSED, "the approval store is not open")
        async with self._lock:
            # IMMEDIATE takes the write lock now: two processes on one file serialise cleanly.
            await self._run(self._execute, "BEGIN IMMEDIATE", ())
            tx = _SqliteTx(self)
            try:
                yield tx
            except BaseException:
                await self._run(self._execute, "ROLLBACK", ())
                raise
            await self._run(self._execute, "COMMIT", ())
        for request_id in tx.changed_ids:
            self.publish(request_id)


def postgres_sql(sql: str) -> str:
    return sql.replace("?", "%s")
