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
from concurrent.futures import Future, ThreadPoolExecutor
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
        self.committed = False  # set on the store thread once its COMMIT has gone through

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
        # One thread, so jobs run in the order queued (``_settle_soon`` relies on it).
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

    def _begin(self) -> None:
        assert self._conn is not None
        if self._conn.in_transaction:
            # Not expected (every transaction is ended on this thread); were one left open all
            # the same, ending it here keeps the store usable instead of failing every BEGIN.
            log.warning("approval store connection was left in a transaction: rolled back", store="sqlite")
            self._execute("ROLLBACK", ())
        # IMMEDIATE takes the write lock now: two processes on one file serialise cleanly.
        self._execute("BEGIN IMMEDIATE", ())

    def _commit(self, tx: _SqliteTx) -> None:
        self._execute("COMMIT", ())
        tx.committed = True

    def _settle(self, tx: _SqliteTx, loop: asyncio.AbstractEventLoop) -> None:
        """Ends a transaction that did not finish normally, on the store thread.

        It runs after every statement the transaction left there: cancelling an await does not
        stop the statement it waited for (a BEGIN still begins, a COMMIT still commits).
        """
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._execute("ROLLBACK", ())
            elif tx.committed:  # the caller was cancelled as its COMMIT went through
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                    loop.call_soon_threadsafe(self._publish_all, tx.changed_ids)
        except sqlite3.Error as error:
            log.error("approval store rollback failed", store="sqlite", error=str(error))

    def _settle_soon(self, tx: _SqliteTx) -> Future[None] | None:
        """Queues ``_settle`` on the store thread at once, where no cancellation can withdraw it
        (unlike a ROLLBACK awaited through ``_run``). The one thread runs jobs in the order
        queued: after whatever this transaction left running there, before the next
        transaction's BEGIN. Whichever await was interrupted (BEGIN, a statement, COMMIT), the
        connection leaves the transaction, and the file's write lock goes with it."""
        try:
            return self._executor.submit(self._settle, tx, asyncio.get_running_loop())
        except RuntimeError:  # closed meanwhile: the connection went, and its transaction with it
            return None

    def _publish_all(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self.publish(request_id)

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
        tx = _SqliteTx(self)
        async with self._lock:
            try:
                await self._run(self._begin)
                yield tx
                await self._run(self._commit, tx)
            except BaseException as error:
                settled = self._settle_soon(tx)
                if settled is not None and isinstance(error, Exception):
                    # An error waits for its rollback; a cancelled caller is not kept waiting.
                    await asyncio.wait([asyncio.wrap_future(settled)])
                raise
        self._publish_all(tx.changed_ids)


def postgres_sql(sql: str) -> str:
    return sql.replace("?", "%s")
