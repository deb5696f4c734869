"""The approval store on PostgreSQL, for several gateways sharing one set of requests.

One connection runs the statements (approvals are few; a lock serialises them), a second
one ``LISTEN``s. Every transaction that changes a request sends ``pg_notify`` with its id,
which PostgreSQL delivers on commit to every listening replica: a held call wakes within a
moment of a grant made anywhere, without polling. If the listening connection drops, it
reconnects with backoff and then wakes every waiter (``"*"``) to re-check, since
notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg.rows import dict_row

from labelgate.approvals import reasons
from labelgate.approvals.db import CHANNEL, WAKE_ALL, Params, Row, _Subscribers, postgres_sql
from labelgate.approvals.errors import ApprovalsUnavailable
from labelgate.logs import get_logger
from labelgate.migrations import upgrade_postgres

log = get_logger(__name__)


class _PostgresTx:
    dialect = "postgres"

    def __init__(self, conn: psycopg.AsyncConnection[Row]) -> None:
        self._conn = conn
        self.pending: list[str] = []

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = await self._conn.execute(postgres_sql(sql), tuple(params))
        return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._conn.execute(postgres_sql(sql), tuple(params))
        return cursor.rowcount

    def changed(self, request_id: str) -> None:
        # Queued with the transaction: delivered on commit, dropped on rollback.
        self.pending.append(request_id)


class PostgresDatabase(_Subscribers):
    dialect = "postgres"
    wakes_other_processes = True

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Row] | None = None
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def _connect(self) -> psycopg.AsyncConnection[Row]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=int(self._connect_timeout)
            )
        except psycopg.Error as error:
            # The driver's text names hosts, ports, users and databases: logged here, never
            # sent to a caller or an approver.
            log.error("approval store unreachable", store="postgres", error=str(error))
            raise ApprovalsUnavailable(
                reasons.APPROVALS_STORE_UNREACHABLE, "cannot reach the approval store (PostgreSQL)"
            ) from None

    async def start(self) -> None:
        self._conn = await self._connect()
        self._listener = asyncio.create_task(self._listen())

    async def migrate(self) -> None:
        """The versioned schema (labelgate/migrations/approvals), in a worker thread (yoyo is sync)."""
        try:
            await asyncio.to_thread(upgrade_postgres, self._dsn, "approvals")
        except psycopg.Error as error:
            raise ApprovalsUnavailable(
                reasons.APPROVALS_STORE_ERROR, f"approval store (PostgreSQL) schema: {error}"
            ) from None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTx]:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await self._connect()
            tx = _PostgresTx(self._conn)
            try:
                async with self._conn.transaction():
                    yield tx
                    for request_id in dict.fromkeys(tx.pending):
                        await self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request_id))
            except psycopg.Error as error:
                log.error("approval store error", store="postgres", error=str(error))
                raise ApprovalsUnavailable(
                    reasons.APPROVALS_STORE_ERROR, "the approval store (PostgreSQL) failed"
                ) from None
        for request_id in dict.fromkeys(tx.pending):  # this process hears it at once
            self.publish(request_id)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self.listening.is_set():  # a reconnect: wake everyone to re-check
                        self.publish(WAKE_ALL)
                    self.listening.set()
                    backoff = 0.2
                    async for notice in conn.notifies():
                        self.publish(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("approvals listener lost its connection", error=str(error), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
