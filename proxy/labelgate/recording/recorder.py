"""``SessionRecorder``: the record-stage plug-in that keeps every call of a session for replay.

``record`` builds the entry (pure, in the caller's task) and puts it on a bounded queue;
one writer task drains the queue in batches into the store (files in a worker thread,
PostgreSQL over its async driver). So a call never waits for a disk or a database.

**Every released call is recorded, or it is not released.** The queue is bounded in entries
(``queue_size``) and in bytes (``max_queue_bytes``: an entry holds the delivered reply, and
the request with ``record_input_values``, so 10,000 entries of a few MiB would be tens of
GB); when the store is down or slower than the traffic the queue fills, and a call that
finds no room is refused (RESOURCE_EXHAUSTED ``RECORDING_BACKLOG``, counted as
``refused_queue_full``, whichever bound it met) before anything is released. A store that
fails fast (a full disk, a database refusing connections) never fills the queue, so a
failed write is never the end of its entries: they stay in memory, counted against the
queue's room (entries and bytes), and are retried with backoff; and
while any entry is waiting for a retry (or the store cannot be opened) every new call is
refused with the same error (counted as ``refused_store_failing``) until a write succeeds.
The entries of calls released before the failure was seen are the unavoidable window
(the write is off the hot path by design): they are kept and retried, and if the gateway
stops before they are written they are logged and counted as ``lost``.

The room is reserved (``reserve``, which builds the entry and promises its own size) before
the durable audit record is written and filled after it (``record``), so the audit log does
not say "delivered" for a call the recorder then refused, and a call refused for want of an
audit record is never recorded as delivered.
An entry that cannot be built, or that the store rejects for what it holds (it cannot be
encoded, the database refuses its text), would fail on every retry and hold up every
later call: it is dropped, logged and counted as ``failed`` (``UNSTORABLE``).

**A session's size cap** (``max_session_bytes``) is kept by refusing the session's calls
once the store has said it is past it (RESOURCE_EXHAUSTED ``RECORDING_SESSION_FULL``, counted
as ``refused_session_full``): the store never drops an entry, so the call that takes the
session past the cap and those released before the store said so are recorded after its
marker (review: the store dropped them, and a caller received clear values that no replay
would ever show, call after call). A session passes its cap by at most what was queued for
it then (``max_queue_bytes``), and by one batch each time the recorder forgets that it is
full: after ``FULL_REMEMBERED_SECONDS`` (so that a session another gateway's sweeper deleted
is not refused for ever), and at a restart.

A periodic sweeper deletes sessions whose latest entry is older than the retention.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from labelgate.errors import ResourceExhausted
from labelgate.logs import get_logger
from labelgate.recording import reasons
from labelgate.recording.entries import Admission, call_entry, utc_now
from labelgate.recording.sealing import sealed
from labelgate.recording.settings import RecordingSettings
from labelgate.recording.store import SessionStore

if TYPE_CHECKING:
    from labelgate.calls import CallRecord

log = get_logger(__name__)
ENTRIES = Counter(
    "labelgate_recording_entries_total",
    "Session recording entries by result: stored, truncated (stored after the marker), "
    "stored_over_cap, refused_queue_full, refused_store_failing and refused_session_full "
    "(the call was refused), failed (could not "
    "be built or stored), lost (not written when the gateway stopped)",
    ["result"],
)
WRITE_FAILURES = Counter(
    "labelgate_recording_write_failures_total",
    "Appends to the session store that failed (their entries are kept and retried)",
)
SWEPT = Counter("labelgate_recording_sessions_swept_total", "Sessions deleted by the retention sweeper")
BATCH = 256
# What an entry counts against ``max_queue_bytes`` besides its messages' base64 text: the
# dicts, keys and short texts of any entry (about 2.5 KiB in CPython), and each item of the
# lists that grow with the call (a field's path and labels, a mask, a phase, an input).
ENTRY_BYTES = 4096
ITEM_BYTES = 512
RETRY_OPEN_SECONDS = 5.0
# Sessions known to be past their cap (``_full``): about 100 bytes each, each remembered this
# long; then the session's next batch is stored (over the cap) and the store says it again.
MAX_FULL_SESSIONS = 100_000
FULL_REMEMBERED_SECONDS = 300.0
RETRY_WRITE_SECONDS = 0.1  # the first retry of a failed write; doubled on each failure up to:
RETRY_WRITE_MAX_SECONDS = 5.0

Item = tuple[str, dict[str, Any], int]  # (recording key, entry, its ``entry_bytes``)


def entry_bytes(entry: dict[str, Any]) -> int:
    """What an entry holds in memory while it waits, counted cheaply: the base64 text of the
    reply (and request) it carries, which is nearly all of a large one, exactly (its length,
    no copy), and constants for the rest (``ENTRY_BYTES``, ``ITEM_BYTES``)."""
    size = ENTRY_BYTES
    for name in ("response", "request_message"):
        message = entry.get(name)
        if message is not None:
            size += len(message["base64"])
    decision, request = entry["decision"], entry.get("request") or {}
    items = (
        len(decision["fields"]) + len(decision["masked"]) + len(decision["phases"]) + len(decision["labels"])
    )
    items += len(request.get("inputs") or ()) + len(request.get("outputs") or ())
    return size + ITEM_BYTES * items


def entry_is_the_cause(failure: BaseException) -> bool:
    """Whether an append failed for what an entry holds, which no retry can change: it cannot
    be encoded (``UnicodeEncodeError`` is a ``ValueError``), or the database refuses its data
    (SQLSTATE class 22, e.g. a NUL in a ``jsonb`` text). Anything else is the store's failure."""
    if isinstance(failure, ValueError | TypeError):
        return True
    if any(kind.__name__ == "DataError" for kind in type(failure).__mro__):  # psycopg's, also client-side
        return True
    return str(getattr(failure, "sqlstate", None) or "").startswith("22")


class SessionRecorder:
    def __init__(
        self,
        store: SessionStore,
        *,
        max_session_bytes: int = 16 << 20,
        retention_days: float = 30.0,
        record_input_values: bool = False,
        queue_size: int = 10_000,
        max_queue_bytes: int = 256 << 20,
        sweep_interval_seconds: float = 3600.0,
        retry_seconds: float = RETRY_WRITE_SECONDS,
        retry_max_seconds: float = RETRY_WRITE_MAX_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.max_session_bytes = max_session_bytes
        self.retention = timedelta(days=retention_days)
        self.record_input_values = record_input_values
        self.sweep_interval_seconds = sweep_interval_seconds
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = max(retry_max_seconds, retry_seconds)
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._queue: asyncio.Queue[Item] = asyncio.Queue(queue_size)
        self.max_queue_bytes = max_queue_bytes
        # ``entry_bytes`` of the entries queued or in ``_unwritten``: counted when an entry is
        # queued, given back when it is settled (written, or dropped as unstorable).
        self._bytes = 0
        # Reservations whose ``record`` is still to come: the entry built for each (None: it
        # could not be built) and its size, which counts against the room meanwhile.
        self._prepared: dict[int, tuple[dict[str, Any] | None, int]] = {}
        self._reserved_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._warned_no_request = False
        self._reserved = 0  # room promised by ``reserve`` to calls whose ``record`` is still to come
        # Taken off the queue and not written yet: the batch being written, then the entries
        # whose write failed, kept (in order) for the next retry. They count against the room.
        self._unwritten: list[Item] = []
        # The store's latest failure while it is failing (entries kept for a retry, or the
        # store cannot be opened): new calls are refused until a write succeeds.
        self._failure: Exception | None = None
        # Sessions (recording keys) the store said are past their cap, and when (monotonic):
        # their calls are refused. Bounded in count and time: one forgotten is learned again
        # at its next append (stored over the cap).
        self._full: dict[str, float] = {}

    @property
    def failing(self) -> bool:
        """Whether the store is failing: entries wait for a retry, new calls are refused."""
        return self._failure is not None

    @property
    def unwritten(self) -> int:
        """Entries recorded and not written yet (queued, being written, or kept for a retry)."""
        return self._queue.qsize() + len(self._unwritten)

    @property
    def queued_bytes(self) -> int:
        """What the unwritten entries count against ``max_queue_bytes`` (``entry_bytes``)."""
        return self._bytes

    # -- the Recorder protocol -------------------------------------------------------------
    def reserve(self, record: CallRecord) -> None:
        """Promise room on the queue for ``record``'s entry, or refuse the call (fail closed).
        The entry is built here, so the room promised is its own size; ``record`` queues it."""
        if self._failure is not None:
            self._count("refused_store_failing")
            log.warning(
                "recording_store_failing",
                unwritten=self.unwritten,
                error_type=type(self._failure).__name__,
            )
            raise ResourceExhausted(
                reasons.RECORDING_BACKLOG,
                "the session recorder cannot write to its store; the call was not released",
            )
        queue = self._queue  # (the hot path: no property call)
        if queue.maxsize and queue.qsize() + len(self._unwritten) + self._reserved >= queue.maxsize:
            raise self._queue_full("entries")
        entry: dict[str, Any] | None
        try:
            entry = call_entry(record, record_input_values=self.record_input_values)
            size = entry_bytes(entry)
        except Exception as failure:  # queued as nothing: ``record`` says so, the call goes on
            log.error(
                "recording_entry_failed", request_id=record.call.request_id, error_type=type(failure).__name__
            )
            entry, size = None, 0
        if self._full and entry is not None and self._known_full(entry["session_id"]):
            self._count("refused_session_full")
            raise ResourceExhausted(
                reasons.RECORDING_SESSION_FULL,
                f"this session's recording has reached its size cap ({self.max_session_bytes} bytes, "
                "recording.max_session_bytes); the call was not released: continue in a new session "
                "(x-labelgate-session)",
            )
        # An entry alone is always taken: a bound below one reply must not refuse every such
        # call while the store is idle.
        held = self._bytes + self._reserved_bytes
        if held and held + size > self.max_queue_bytes:
            raise self._queue_full("bytes", size)
        self._reserved += 1
        self._reserved_bytes += size
        self._prepared[id(record)] = (entry, size)

    def _queue_full(self, bound: str, size: int | None = None) -> ResourceExhausted:
        self._count("refused_queue_full")
        log.warning(
            "recording_queue_full",
            bound=bound,
            queued=self.unwritten,
            reserved=self._reserved,
            queued_bytes=self._bytes,
            max_queue_bytes=self.max_queue_bytes,
            entry_bytes=size,
        )
        return ResourceExhausted(
            reasons.RECORDING_BACKLOG,
            "the session recorder is behind (its store is down or slow); the call was not released",
        )

    def unreserve(self, record: CallRecord) -> None:
        """Give back a reservation whose call ended before ``record`` (an earlier recorder failed)."""
        prepared = self._prepared.pop(id(record), None)
        if prepared is not None:
            self._reserved -= 1
            self._reserved_bytes -= prepared[1]

    async def record(self, record: CallRecord) -> None:
        if id(record) not in self._prepared:
            self.reserve(record)  # used directly, without a reservation: the same rule, no room no release
        entry, size = self._prepared.pop(id(record))
        self._reserved -= 1
        self._reserved_bytes -= size
        if entry is None:
            self._count("failed")
            return
        if self.record_input_values and "request_message" not in entry and not self._warned_no_request:
            self._warned_no_request = True
            log.warning("recording_input_values_unavailable", hint="Outcome.request is not set")
        self.start()
        # Keyed by the recording key (subject + session id), never by the client's id alone.
        # The room (entries and bytes) was reserved, and entries kept for a retry count
        # against it, so this fits.
        self._queue.put_nowait((entry["session_id"], entry, size))
        self._bytes += size

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and the sweeper (idempotent; ``record`` calls it too)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._write_loop(), name="recording-writer"),
                asyncio.create_task(self._sweep_loop(), name="recording-sweeper"),
            ]

    async def flush(self) -> None:
        """Wait until everything recorded so far has been written (or dropped as unstorable);
        while the store fails, that is once it works again."""
        if self._tasks:
            await self._queue.join()

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Write what is queued (for at most ``drain_seconds``), stop the tasks, close the store;
        entries still unwritten then are logged and counted as lost."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._report_lost()
        await self.store.close()

    def _report_lost(self) -> None:
        lost = self._unwritten
        self._unwritten = []
        while not self._queue.empty():
            lost.append(self._queue.get_nowait())
        for _ in lost:
            self._queue.task_done()
        self._bytes = 0
        if not lost:
            return
        self._count("lost", len(lost))
        failure = self._failure
        log.error(
            "recording_entries_lost",
            entries=len(lost),
            sessions=len({session_id for session_id, _, _ in lost}),
            error_type=type(failure).__name__ if failure is not None else None,
            error=str(failure) if failure is not None else "not written before the gateway stopped",
        )

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
        delay = self.retry_seconds
        while True:
            if self._unwritten:  # kept after a failed write: back off, then retry them first
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.retry_max_seconds)
            else:
                self._unwritten.append(await self._queue.get())
            taken = 0
            while taken < BATCH and not self._queue.empty():
                self._unwritten.append(self._queue.get_nowait())
                taken += 1
            batch = self._unwritten
            self._unwritten = await self._write(batch)
            if not self._unwritten:
                delay = self.retry_seconds
                if self._failure is not None:
                    log.info("recording_store_recovered", written=len(batch))
                    self._failure = None
            # Settled entries give their bytes back; those kept for a retry still hold theirs.
            self._bytes -= sum(size for _, _, size in batch) - sum(size for _, _, size in self._unwritten)
            # After ``_unwritten`` is updated, so a ``flush`` that returns finds the room free.
            for _ in range(len(batch) - len(self._unwritten)):
                self._queue.task_done()

    async def _open_store(self) -> None:
        while True:
            try:
                await self.store.open()
                self._failure = None
                return
            except Exception as failure:
                self._failure = failure  # entries wait on the queue; new calls are refused
                log.error(
                    "recording_store_unavailable", error_type=type(failure).__name__, error=str(failure)
                )
                await asyncio.sleep(RETRY_OPEN_SECONDS)

    async def _write(self, items: list[Item]) -> list[Item]:
        """Append ``items`` session by session; those to retry (their store failed), in order."""
        by_session: dict[str, list[Item]] = {}
        for item in items:
            by_session.setdefault(item[0], []).append(item)
        kept: list[Item] = []
        for session_id, session_items in by_session.items():
            settled = await self._append(session_id, [entry for _, entry, _ in session_items])
            kept += session_items[settled:]
        return kept

    async def _append(self, session_id: str, entries: list[dict[str, Any]]) -> int:
        """Append ``entries`` in order; how many of them (from the first) are settled: written,
        or dropped because the store can never hold them. The rest are to be retried."""
        try:
            results = await self.store.append(session_id, entries, self.max_session_bytes)
        except Exception as failure:
            if not entry_is_the_cause(failure):
                self._write_failed(session_id, len(entries), failure)
                return 0
            if len(entries) == 1:
                self._count("failed")
                log.error(
                    "recording_entry_unstorable",
                    session_id=session_id,
                    request_id=entries[0].get("request_id"),
                    error_type=type(failure).__name__,
                    error=str(failure),
                )
                return 1
            # One entry spoils the batch: find it, one entry at a time, and keep the others.
            for settled, entry in enumerate(entries):
                if await self._append(session_id, [entry]) == 0:
                    return settled
            return len(entries)
        for result in results:
            self._count({"store": "stored", "truncate": "truncated", "over": "stored_over_cap"}[result])
        if results[-1] != "store":
            self._session_full(session_id, results)
        elif self._full:
            self._full.pop(session_id, None)  # below its cap again (the cap was raised)
        return len(entries)

    def _known_full(self, session_id: str) -> bool:
        learned = self._full.get(session_id)
        if learned is None:
            return False
        if time.monotonic() - learned < FULL_REMEMBERED_SECONDS:
            return True
        del self._full[session_id]  # the store says again whether it is (a sweeper may have deleted it)
        return False

    def _session_full(self, session_id: str, results: list[Admission]) -> None:
        self._full.pop(session_id, None)  # the newest last: the oldest goes first
        if len(self._full) >= MAX_FULL_SESSIONS:
            del self._full[next(iter(self._full))]
        self._full[session_id] = time.monotonic()
        if "truncate" in results:
            log.warning("recording_session_truncated", session_id=session_id, limit=self.max_session_bytes)

    def _write_failed(self, session_id: str, entries: int, failure: Exception) -> None:
        self._failure = failure
        WRITE_FAILURES.inc()
        log.error(
            "recording_write_failed",
            session_id=session_id,
            entries=entries,
            unwritten=self.unwritten,
            error_type=type(failure).__name__,
            error=str(failure),
            note="kept for a retry; new calls are refused until a write succeeds",
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
        max_queue_bytes=settings.max_queue_bytes,
        sweep_interval_seconds=settings.sweep_interval_seconds,
    )
