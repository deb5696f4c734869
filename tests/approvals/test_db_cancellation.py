"""A SQLite transaction interrupted at any await still ends: the store stays usable.

Cancelling the task that awaits a statement does not stop the statement on the store's
thread: a BEGIN still begins, a COMMIT still commits. A transaction nobody ended would keep
the connection inside it (every later BEGIN failing) and the file's write lock held (other
workers and ``approvals-server`` unable to write) until a restart. Cancellation is routine:
a held call's re-check is cancelled when its caller hangs up.

Each test stalls one statement on the store thread (a ``threading.Event``, not timing) and
cancels its caller while it runs there.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from labelgate.approvals import reasons
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.errors import ApprovalsUnavailable
from labelgate.approvals.service import ApprovalService

NO_SUCH_REQUEST = "apr-0000000000000000"


class Stall:
    """The first statement starting with ``prefix`` waits on the store thread until released."""

    def __init__(self, store: SqliteDatabase, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        execute = store._execute

        def stalling_execute(sql: str, params: tuple[Any, ...]) -> int:
            if sql.startswith(prefix) and not self.entered.is_set():
                self.entered.set()
                self.release.wait(10)
            return execute(sql, params)

        monkeypatch.setattr(store, "_execute", stalling_execute)

    async def reached(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 5), "the statement never ran"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "approvals.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase(path)
    await db.start()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE notes (text TEXT NOT NULL)")
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def releases() -> Iterator[list[Stall]]:
    """Stalls still holding the store thread when a test fails are let go."""
    stalls: list[Stall] = []
    yield stalls
    for stall in stalls:
        stall.release.set()


async def write(store: SqliteDatabase, text: str) -> None:
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO notes (text) VALUES (?)", (text,))
        tx.changed(text)


async def notes(store: SqliteDatabase) -> list[str]:
    async with store.transaction() as tx:
        return [row["text"] for row in await tx.fetch("SELECT text FROM notes ORDER BY rowid")]


def another_process_can_write(path: Path) -> None:
    other = sqlite3.connect(str(path), isolation_level=None, timeout=1)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" while the store holds the lock
        other.execute("ROLLBACK")
    finally:
        other.close()


async def assert_store_usable(store: SqliteDatabase, path: Path, kept: list[str]) -> None:
    assert await notes(store) == kept
    assert store._conn is not None and not store._conn.in_transaction
    another_process_can_write(path)
    await write(store, "after")
    assert await notes(store) == [*kept, "after"]


@pytest.mark.parametrize(
    ("stage", "kept"),
    [("BEGIN", []), ("INSERT", []), ("COMMIT", ["cancelled"])],
    ids=["at-begin", "at-a-statement", "at-commit"],
)
async def test_a_transaction_cancelled_at_any_await_is_ended(
    store: SqliteDatabase,
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    releases: list[Stall],
    stage: str,
    kept: list[str],
) -> None:
    heard: list[str] = []
    store.on_change(heard.append)
    stall = Stall(store, stage, monkeypatch)
    releases.append(stall)
    writer = asyncio.create_task(write(store, "cancelled"))
    await stall.reached()

    writer.cancel()  # the caller hangs up while the statement runs on the store thread
    done, _ = await asyncio.wait([writer], timeout=5)
    assert writer in done, "a cancelled caller waited on the store thread"
    with pytest.raises(asyncio.CancelledError):
        await writer
    stall.release.set()  # the statement finishes, unseen by its cancelled caller

    await assert_store_usable(store, path, kept)
    # Told of what was committed, even to a caller cancelled during its COMMIT; nothing else.
    assert heard == [*kept, "after"]


async def test_a_second_cancellation_does_not_withdraw_the_rollback(
    store: SqliteDatabase, path: Path, monkeypatch: pytest.MonkeyPatch, releases: list[Stall]
) -> None:
    stall = Stall(store, "INSERT", monkeypatch)
    releases.append(stall)
    writer = asyncio.create_task(write(store, "cancelled"))
    await stall.reached()

    writer.cancel()
    for _ in range(3):  # the writer handles the first cancellation (it queues its rollback) ...
        await asyncio.sleep(0)
    writer.cancel()  # ... and is cancelled again while that rollback waits behind the statement
    with pytest.raises(asyncio.CancelledError):
        await writer
    stall.release.set()

    await assert_store_usable(store, path, [])


async def test_a_failed_commit_is_rolled_back(
    store: SqliteDatabase, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execute = store._execute
    failed: list[str] = []

    def failing_commit(sql: str, params: tuple[Any, ...]) -> int:
        if sql == "COMMIT" and not failed:
            failed.append(sql)
            raise sqlite3.OperationalError("disk I/O error")
        return execute(sql, params)

    monkeypatch.setattr(store, "_execute", failing_commit)
    with pytest.raises(ApprovalsUnavailable) as refused:
        await write(store, "lost")
    assert refused.value.reason == reasons.APPROVALS_STORE_ERROR

    await assert_store_usable(store, path, [])


async def test_a_transaction_left_open_is_rolled_back_before_the_next(
    store: SqliteDatabase, path: Path
) -> None:
    # Defence in depth: however a transaction came to be left open, the next one ends it.
    await store._run(store._execute, "BEGIN IMMEDIATE", ())
    await store._run(store._execute, "INSERT INTO notes (text) VALUES ('half-done')", ())

    await assert_store_usable(store, path, [])


async def test_a_held_calls_cancelled_recheck_leaves_the_approvals_service_ready(
    path: Path, monkeypatch: pytest.MonkeyPatch, releases: list[Stall]
) -> None:
    service = ApprovalService(SqliteDatabase(path), node_id="n1", link_base="http://inbox.test")
    await service.start(sweep=False)
    try:
        assert isinstance(service.db, SqliteDatabase)
        stall = Stall(service.db, "BEGIN", monkeypatch)
        releases.append(stall)
        recheck = asyncio.create_task(service.get(NO_SUCH_REQUEST))  # what wait() does every 0.5 s
        await stall.reached()
        recheck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await recheck
        stall.release.set()

        assert await service.get(NO_SUCH_REQUEST) is None
        assert await service.healthy()
        another_process_can_write(path)
    finally:
        await service.close()
