"""``SessionRecorder``: the record-stage plug-in that keeps every call of a session for replay.

``record`` builds the entry (pure, in the caller's task) and puts it on a bounded queue;
one writer task drains the queue in batches into the store (files in a worker thread,
PostgreSQL over its async driver). So a call never waits for a disk or a database.

**Every released call is recorded, or it is not released.** The queue is bounded; when the
store is down or slower than the traffic the queue fills, and a call that finds no room is
refused (RESOURCE_EXHAUSTED ``RECORDING_BACKLOG``, counted as ``refused_queue_full``)
before anything is released. The room is reserved (``reserve``) before the durable audit
record is written and filled after it (``record``), so the audit log never says "delivered"
for a call the recorder then refused, and a call refused for want of an audit record is
never recorded as delivered. An entry that cannot be built (a bug, never the caller's
input) is dropped, logged and counted as ``failed``: by then the audit record is durable.

A periodic sweeper deletes sessions whose latest entry is older than the retention.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from labelgate.errors import ResourceExhausted
from labelgate.logs import get_logger
from labelgate.recording import reasons
from labelgate.recording.entries import call_entry, utc_now
from labelgate.recording.sealing import sealed
from labelgate.recording.settings import RecordingSettings
from labelgate.recording.store import SessionStore

if TYPE_CHECKING:
    from labelgate.calls import CallRecord

log = get_logger(__name__)
ENTRIES = Counter(
    "labelgate_recording_entries_total",
    "Session recording entries by result: stored, truncated (the marker), dropped_cap, "
    "refused_queue_full (the call was refused), failed",
    ["result"],
)
SWEPT = Counter("labelgate_recording_sessions_swept_total", "Sessions deleted by the retention sweeper")
BATCH = 256
RETRY_OPEN_SECONDS = 5.0


class SessionRecorder:
    def __init__(
        self,
        store: SessionStore,
        *,
        max_session_bytes: int = 16 << 20,
        retention_days: float = 30.0,
        record_input_values: bool = False,
        queue_size: int = 10_000,
        sweep_interval_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.max_session_bytes = max_session_bytes
        self.retention = timedelta(days=retention_days)
        self.record_input_values = record_input_values
        self.sweep_interval_seconds = sweep_interval_seconds
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._warned_no_request = False
        self._reserved = 0  # room promised by ``reserve`` to calls whose ``record`` is still to come

    # -- the Recorder protocol -------------------------------------------------------------
    def reserve(self) -> None:
        """Promise room on the queue for one call's entry, or refuse the call (fail closed)."""
        if self._queue.maxsize and self._queue.qsize() + self._reserved >= self._queue.maxsize:
            self._count("refused_queue_full")
            log.warning("recording_queue_full", queued=self._queue.qsize(), reserved=self._reserved)
            raise ResourceExhausted(
                reasons.RECORDING_BACKLOG,
                "the session recorder is behind (its store is down or slow); the call was not released",
            )
        self._reserved += 1

    def unreserve(self) -> None:
        """Give back a reservation whose call ended before ``record`` (an earlier recorder failed)."""
        self._reserved = max(0, self._reserved - 1)

    async def record(self, record: CallRecord) -> None:
        call = record.call
        if self._reserved == 0:
            self.reserve()  # used directly, without a reservation: the same rule, no room no release
        self._reserved -= 1
        try:
            entry = call_entry(record, record_input_values=self.record_input_values)
        except Exception as failure:
            self._count("failed")
            log.error("recording_entry_failed", request_id=call.request_id, error_type=type(failure).__name__)
            return
        if self.record_input_values and "request_message" not in entry and not self._warned_no_request:
            self._warned_no_request = True
            log.warning("recording_input_values_unavailable", hint="Outcome.request is not set")
        self.start()
        # Keyed by the recording key (subject + session id), never by the client's id alone.
        # The room was reserved (or checked just above, with no await since), so this fits.
        self._queue.put_nowait((entry["session_id"], entry))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and the sweeper (idempotent; ``record`` calls it too)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._write_loop(), name="recording-writer"),
                asyncio.create_task(self._sweep_loop(), name="recording-sweeper"),
            ]

    async def flush(self) -> None:
        """Wait until everything recorded so far has been written (or counted as failed)."""
        if self._tasks:
            await self._queue.join()

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Write what is queued (for at most ``drain_seconds``), stop the tasks, close the store."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.store.close()

    # -- retention --------------------------------------------------------------------------
    async def sweep(self, now: datetime | None = None) -> int:
        """Delete the sessions idle for longer than the retention period; how many."""
        removed = await self.store.sweep((now or self.clock()) - self.retention)
        if removed:
            SWEPT.inc(removed)
            log.info("recording_sessions_swept", sessions=removed)
        return removed

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_seconds)
            try:
                await self.sweep()
            except Exception as failure:
                log.error("recording_sweep_failed", error_type=type(failure).__name__, error=str(failure))

    # -- writing ------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        await self._open_store()
        while True:
            items = [await self._queue.get()]
            while len(items) < BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._write(items)
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _open_store(self) -> None:
        while True:
            try:
                await self.store.open()
                return
            except Exception as failure:
                log.error(
                    "recording_store_unavailable", error_type=type(failure).__name__, error=str(failure)
                )
                await asyncio.sleep(RETRY_OPEN_SECONDS)

    async def _write(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        by_session: dict[str, list[dict[str, Any]]] = {}
        for session_id, entry in items:
            by_session.setdefault(session_id, []).append(entry)
        for session_id, entries in by_session.items():
            try:
                results = await self.store.append(session_id, entries, self.max_session_bytes)
            except Exception as failure:
                self._count("failed", len(entries))
                log.error(
                    "recording_write_failed",
                    session_id=session_id,
                    entries=len(entries),
                    error_type=type(failure).__name__,
                    error=str(failure),
                )
                continue
            for result in results:
                self._count({"store": "stored", "truncate": "truncated", "drop": "dropped_cap"}[result])
            if "truncate" in results:
                log.warning(
                    "recording_session_truncated", session_id=session_id, limit=self.max_session_bytes
                )

    def _count(self, result: str, amount: int = 1) -> None:
        self.counts[result] += amount
        ENTRIES.labels(result=result).inc(amount)


def build_session_recorder(settings: RecordingSettings) -> SessionRecorder | None:
    """The recorder the ``recording`` config section asks for; None when recording is off."""
    store: SessionStore
    if settings.postgres_dsn is not None:
        from labelgate.recording.postgres import PostgresSessionStore

        store = PostgresSessionStore(settings.postgres_dsn.get_secret_value())
    elif settings.dir is not None:
        from labelgate.recording.files import FileSessionStore

        store = FileSessionStore(settings.dir)
    else:
        return None
    if settings.encryption_key_file is None:
        log.warning("recording_not_encrypted", note="recording.encryption_key_file is not set")
    store = sealed(store, settings.encryption_key_file, settings.decryption_key_files)
    return SessionRecorder(
        store,
        max_session_bytes=settings.max_session_bytes,
        retention_days=settings.retention_days,
        record_input_values=settings.record_input_values,
        queue_size=settings.queue_size,
        sweep_interval_seconds=settings.sweep_interval_seconds,
    )
