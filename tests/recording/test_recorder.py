"""SessionRecorder over both real stores: files in a directory and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from labelgate.calls import CallRecord
from labelgate.errors import ResourceExhausted
from labelgate.gateway.record import Recorders
from labelgate.recording import RecordingSettings, SessionRecorder, build_session_recorder
from labelgate.recording import recorder as recorder_module
from labelgate.recording.entries import call_entry, encode_line, file_name
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.store import SessionStore
from tests.recording.conftest import Clock, key, make_call, make_outcome
from tests.support.postgres import PostgresServer

StoreFactory = Callable[[], SessionStore]


@pytest.fixture(params=["files", "postgres"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Makes stores that share one backing store, like several gateways would."""
    made: list[SessionStore] = []
    if request.param == "files":
        directory = tmp_path / "sessions"

        def factory() -> SessionStore:
            made.append(FileSessionStore(directory))
            return made[-1]
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        dsn = server.create_database()

        def factory() -> SessionStore:
            made.append(PostgresSessionStore(dsn))
            return made[-1]

    yield factory
    for store in made:
        await store.close()


def entry_size(clock: Clock) -> int:
    return len(
        encode_line(
            call_entry(CallRecord.of(make_call(), make_outcome(), None, clock()), record_input_values=False)
        )
    )


async def test_calls_are_recorded_in_order_under_their_sessions(new_store: StoreFactory) -> None:
    clock = Clock()
    recorder = SessionRecorder(new_store(), clock=clock)
    calls = [make_call(session) for session in ("s-a", "s-b", "s-a", "s-a", "s-b")]
    for call in calls:
        clock.advance(seconds=1)
        await recorder.record(CallRecord.of(call, make_outcome(), None, clock()))
    await recorder.flush()
    sessions = {info.session_id: info for info in await recorder.store.sessions()}
    assert {k: v.calls for k, v in sessions.items()} == {key("s-a"): 3, key("s-b"): 2}
    assert sessions[key("s-a")].started == "2026-01-01T09:00:01.000Z"
    assert sessions[key("s-a")].last == "2026-01-01T09:00:04.000Z"
    assert not sessions[key("s-a")].truncated and sessions[key("s-a")].bytes > 0
    entries = await recorder.store.entries(key("s-a"))
    assert [e["request_id"] for e in entries] == [c.request_id for c in calls if c.session_id == "s-a"]
    assert entries[0]["response"]["type"] == "inference.ModelInferResponse"
    assert await recorder.store.entries("nope") is None
    assert recorder.counts["stored"] == 5
    await recorder.close()


@pytest.mark.parametrize("flush_each", [False, True], ids=["one-batch", "batch-per-call"])
async def test_the_size_cap_records_every_released_call_then_refuses_the_sessions_next(
    new_store: StoreFactory, flush_each: bool
) -> None:
    """Review (thirteenth round): the store dropped the calls after its marker, though each was
    released: a caller past 16 MiB received clear values no replay would ever show. Every
    released call is stored now (after the marker), and the session's later calls are refused."""
    clock = Clock()
    cap = 2 * entry_size(clock) + 600  # room for the file header and two calls, not three
    recorder = SessionRecorder(new_store(), max_session_bytes=cap, clock=clock)
    calls = [make_call("big") for _ in range(5)]
    released = []
    for call in calls:
        clock.advance(minutes=1)
        try:
            await recorder.record(CallRecord.of(call, make_outcome(), None, clock()))
        except ResourceExhausted as refused:
            assert refused.reason == "RECORDING_SESSION_FULL" and "x-labelgate-session" in refused.message
            continue
        released.append(call.request_id)
        if flush_each:
            await recorder.flush()
    await recorder.record(CallRecord.of(make_call("small"), make_outcome(), None, clock()))
    await recorder.flush()
    entries = await recorder.store.entries(key("big"))
    # Queued together, all five were released before the store said the session was full;
    # written one by one, the fourth is refused once the third's write said so.
    assert len(released) == (3 if flush_each else 5)
    assert [e["kind"] for e in entries] == ["call", "call", "truncated"] + ["call"] * (len(released) - 2)
    assert [e["request_id"] for e in entries if e["kind"] == "call"] == released
    marker = entries[2]
    assert marker["request_id"] == calls[2].request_id and marker["limit_bytes"] == cap
    assert marker["time"] == "2026-01-01T09:03:00.000Z"
    over = len(released) - 3
    refused = {"refused_session_full": 2} if flush_each else {}
    assert recorder.counts == {
        "stored": 3,
        "truncated": 1,
        **({"stored_over_cap": over} if over else {}),
        **refused,
    }
    with pytest.raises(ResourceExhausted):  # the session stays full
        await recorder.record(CallRecord.of(make_call("big"), make_outcome(), None, clock()))
    sessions = {info.session_id: info for info in await recorder.store.sessions()}
    assert sessions[key("big")].truncated and sessions[key("big")].calls == len(released)
    assert not sessions[key("small")].truncated
    await recorder.close()


async def test_retention_sweep_deletes_idle_sessions_by_their_last_call(new_store: StoreFactory) -> None:
    clock = Clock()
    recorder = SessionRecorder(new_store(), retention_days=30, clock=clock)
    start = clock.now
    await recorder.record(CallRecord.of(make_call("old"), make_outcome(), None, clock()))
    await recorder.record(CallRecord.of(make_call("busy"), make_outcome(), None, clock()))
    clock.advance(days=20)
    await recorder.record(
        CallRecord.of(make_call("busy"), make_outcome(), None, clock())
    )  # busy was used since
    await recorder.flush()
    assert await recorder.sweep(start + timedelta(days=29)) == 0
    assert await recorder.sweep(start + timedelta(days=31)) == 1
    assert [info.session_id for info in await recorder.store.sessions()] == [key("busy")]
    assert await recorder.store.entries(key("old")) is None
    # A session recorded again after it was swept starts afresh.
    await recorder.record(CallRecord.of(make_call("old"), make_outcome(), None, clock()))
    await recorder.flush()
    assert len(await recorder.store.entries(key("old"))) == 1
    await recorder.close()


class ObservedStore:
    """A real store that signals when a sweep deleted something."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.swept = asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    async def sweep(self, cutoff):
        removed = await self.store.sweep(cutoff)
        if removed:
            self.swept.set()
        return removed


async def test_the_periodic_sweeper_runs_on_its_own(new_store: StoreFactory) -> None:
    clock = Clock()
    store = ObservedStore(new_store())
    recorder = SessionRecorder(store, retention_days=1, sweep_interval_seconds=0.05, clock=clock)
    await recorder.record(CallRecord.of(make_call("stale"), make_outcome(), None, clock()))
    await recorder.flush()
    assert len(await store.sessions()) == 1
    clock.advance(days=2)
    await asyncio.wait_for(store.swept.wait(), 20)
    assert await store.sessions() == []
    await recorder.close()


async def test_a_full_session_is_forgotten_after_a_while_and_its_next_call_recorded_over_the_cap(
    new_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (thirteenth round): a full session was remembered until this process's own sweep
    deleted something, so one another gateway's sweeper had deleted stayed refused. It is
    remembered for ``FULL_REMEMBERED_SECONDS``; then its next call is released, recorded over
    the cap, and the store says again that it is full."""
    clock = Clock()
    recorder = SessionRecorder(new_store(), max_session_bytes=2 * entry_size(clock) + 600, clock=clock)

    async def one() -> None:
        await recorder.record(CallRecord.of(make_call("big"), make_outcome(), None, clock()))
        await recorder.flush()

    for _ in range(3):
        await one()
    with pytest.raises(ResourceExhausted):
        await one()
    monkeypatch.setattr(recorder_module, "FULL_REMEMBERED_SECONDS", 0.0)
    await one()  # forgotten: released, and recorded
    assert recorder.counts["stored_over_cap"] == 1
    kinds = [e["kind"] for e in await recorder.store.entries(key("big"))]
    assert kinds == ["call", "call", "truncated", "call", "call"]
    monkeypatch.setattr(recorder_module, "FULL_REMEMBERED_SECONDS", 300.0)
    with pytest.raises(ResourceExhausted):  # learned again from that append
        await one()
    await recorder.close()


async def test_concurrent_writers_to_one_session_share_the_cap(new_store: StoreFactory) -> None:
    """Two gateways recording the same session: one marker, where the cap is passed, and every
    entry stored (each one's call was released)."""
    clock = Clock()
    cap = 10 * entry_size(clock)
    stores = [new_store(), new_store()]
    for store in stores:
        await store.open()
    entries = [
        call_entry(
            CallRecord.of(make_call("shared"), make_outcome(), None, clock()), record_input_values=False
        )
        for _ in range(40)
    ]

    async def gateway(store: SessionStore, mine: list[dict]) -> list[str]:
        results = []
        for entry in mine:
            results += await store.append("shared", [entry], cap)
        return results

    halves = await asyncio.gather(gateway(stores[0], entries[::2]), gateway(stores[1], entries[1::2]))
    results = halves[0] + halves[1]
    stored = await stores[0].entries("shared")
    kinds = [e["kind"] for e in stored]
    assert kinds.count("truncated") == 1 == results.count("truncate")
    assert kinds.count("call") == 40 and kinds.index("truncated") == results.count("store") >= 8
    info = (await stores[1].sessions())[0]
    assert info.calls == 40 and info.truncated


async def test_file_appends_from_threads_share_the_cap(tmp_path: Path) -> None:
    clock = Clock()
    cap = 10 * entry_size(clock)
    entries = [
        call_entry(
            CallRecord.of(make_call("shared"), make_outcome(), None, clock()), record_input_values=False
        )
        for _ in range(40)
    ]
    stores = [FileSessionStore(tmp_path), FileSessionStore(tmp_path)]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda i: stores[i % 2].append_blocking("shared", [entries[i]], cap)[0], range(40))
        )
    lines = [json.loads(line) for line in (tmp_path / file_name("shared")).read_text().splitlines()]
    assert [line["kind"] for line in lines].count("session") == 1
    kinds = [line["kind"] for line in lines]
    assert kinds.count("truncated") == 1 == results.count("truncate")
    assert kinds.count("call") == 40 and kinds.index("truncated") == 1 + results.count("store")


async def test_an_entry_that_cannot_be_built_is_counted_never_raised(tmp_path: Path) -> None:
    """(A store that fails is another matter: ``test_store_failing.py``.)"""
    clock = Clock()
    recorder = SessionRecorder(FileSessionStore(tmp_path / "sessions"), clock=clock)
    await recorder.record(CallRecord.of(make_call("fine"), make_outcome(), None, clock()))
    not_a_message = make_outcome()
    not_a_message.delivered = object()  # type: ignore[assignment]
    await recorder.record(CallRecord.of(make_call("fine"), not_a_message, None, clock()))
    await recorder.flush()
    assert recorder.counts == {"failed": 1, "stored": 1}
    assert [info.session_id for info in await recorder.store.sessions()] == [key("fine")]
    await recorder.close()


async def test_a_full_queue_refuses_the_call_instead_of_releasing_it_unrecorded(tmp_path: Path) -> None:
    clock = Clock()
    recorder = SessionRecorder(FileSessionStore(tmp_path), queue_size=2, clock=clock)
    refused = 0
    for _ in range(5):  # no await yields in between: the writer task cannot drain yet
        try:
            await recorder.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
        except ResourceExhausted as error:
            assert error.reason == "RECORDING_BACKLOG"
            refused += 1
    assert refused == 3 and recorder.counts["refused_queue_full"] == 3
    await recorder.flush()
    assert recorder.counts["stored"] == 2
    await recorder.close()


class _Audit:
    """An audit recorder that keeps what it made durable, or fails like a writer that is gone."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.durable: list[CallRecord] = []

    async def record(self, entry: CallRecord) -> None:
        if self.fail:
            raise ResourceExhausted("AUDIT_UNAVAILABLE", "no writer")
        self.durable.append(entry)


async def test_room_is_reserved_before_the_audit_record_so_no_delivery_is_audited_then_refused(
    tmp_path: Path,
) -> None:
    clock = Clock()
    sessions = SessionRecorder(FileSessionStore(tmp_path), queue_size=1, clock=clock)
    audit = _Audit()
    recorders = Recorders(audit, sessions)
    await recorders.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
    with pytest.raises(ResourceExhausted):  # the queue is full: refused before the audit write
        await recorders.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
    assert len(audit.durable) == 1
    await sessions.flush()
    # A call whose audit record fails gives its reservation back.
    failing = Recorders(_Audit(fail=True), sessions)
    with pytest.raises(ResourceExhausted):
        await failing.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
    await recorders.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
    assert len(audit.durable) == 2
    await sessions.close()


async def test_settings_choose_the_store(tmp_path: Path) -> None:
    assert build_session_recorder(RecordingSettings()) is None
    files = build_session_recorder(RecordingSettings(dir=tmp_path, retention_days=7, max_session_bytes=8192))
    assert isinstance(files, SessionRecorder) and isinstance(files.store, FileSessionStore)
    assert files.retention == timedelta(days=7) and files.max_session_bytes == 8192
    database = build_session_recorder(RecordingSettings(postgres_dsn="postgresql://x@127.0.0.1:1/db"))
    assert database is not None and isinstance(database.store, PostgresSessionStore)
    with pytest.raises(ValueError, match="choose one store"):
        RecordingSettings(dir=tmp_path, postgres_dsn="postgresql://x@127.0.0.1:1/db")
    with pytest.raises(ValueError):
        RecordingSettings(dir=tmp_path, unknown=1)


async def test_a_line_torn_by_a_crash_is_skipped_not_glued_to(tmp_path: Path) -> None:
    clock = Clock()
    recorder = SessionRecorder(FileSessionStore(tmp_path), clock=clock)
    first, second = make_call("s"), make_call("s")
    await recorder.record(CallRecord.of(first, make_outcome(), None, clock()))
    await recorder.flush()
    with (tmp_path / file_name(key("s"))).open("ab") as handle:
        handle.write(b'{"kind":"call","time":"2026-01-01T09:00:00.000Z","sess')  # the crash
    clock.advance(days=3)
    await recorder.record(CallRecord.of(second, make_outcome(), None, clock()))
    await recorder.flush()
    entries = await recorder.store.entries(key("s"))
    assert [e["kind"] for e in entries] == ["call", "damaged", "call"]
    assert [entries[0]["request_id"], entries[2]["request_id"]] == [first.request_id, second.request_id]
    assert (await recorder.store.sessions())[0].last == "2026-01-04T09:00:00.000Z"
    await recorder.close()


def padded_call(number: int, pad: int) -> dict:
    return {"kind": "call", "time": f"2026-01-01T09:00:0{number}.000Z", "session_id": "s~x",
            "request_id": f"req-{number}", "pad": "x" * pad}  # fmt: skip


async def test_a_store_keeps_every_entry_past_the_marker_even_one_that_would_fit(
    new_store: StoreFactory,
) -> None:
    """The marker is written before the call that takes the session past its cap; that call and
    later ones (released before the recorder knew) are stored after it, a smaller one too,
    never dropped, and both stores count calls alike."""
    store = new_store()
    await store.open()
    results = []
    for number, pad in ((1, 3000), (2, 2000), (3, 100)):  # three calls, three batches
        results += await store.append("s~x", [padded_call(number, pad)], 4096)
    assert results == ["store", "truncate", "over"]
    found = await store.entries("s~x")
    assert [(e["kind"], e["request_id"]) for e in found] == [
        ("call", "req-1"),
        ("truncated", "req-2"),
        ("call", "req-2"),
        ("call", "req-3"),
    ]
    (info,) = await store.sessions()
    assert (info.calls, info.truncated) == (3, True)
    # The cap raised since (review): below it again, an entry is stored as any other, in both
    # stores (PostgreSQL's row keeps its marker's flag).
    assert await store.append("s~x", [padded_call(4, 100)], 1 << 20) == ["store"]


async def test_a_file_written_past_its_marker_before_is_listed_as_truncated(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    store.append_blocking("s~x", [padded_call(1, 3000)], 4096)
    store.append_blocking("s~x", [padded_call(2, 2000)], 4096)
    with (tmp_path / file_name("s~x")).open("ab") as handle:  # what the file store once did
        handle.write(encode_line(padded_call(3, 10)))
    (info,) = await store.sessions()
    assert (info.calls, info.truncated) == (3, True)
    # The cap raised since (review): below it again, an entry is stored as any other, in both
    # stores (PostgreSQL's row keeps its marker's flag).
    assert await store.append("s~x", [padded_call(4, 100)], 1 << 20) == ["store"]


async def test_lines_that_are_not_objects_read_as_damaged(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    store.append_blocking("s~x", [padded_call(1, 10)], 4096)
    with (tmp_path / file_name("s~x")).open("ab") as handle:
        handle.write(b"[]\n5\n")
    assert [e["kind"] for e in await store.entries("s~x")] == ["call", "damaged", "damaged"]
    (tmp_path / "other-0.jsonl").write_text('["not", "a", "header"]\n')
    assert [info.session_id for info in await store.sessions()] == ["s~x"]


async def test_a_last_line_nested_past_the_parsers_depth_leaves_the_session_listed(tmp_path: Path) -> None:
    """A session whose last line was nested 100,000 deep vanished from the list (and from
    lookups by prefix): its time is the file's then, as for a torn line."""
    store = FileSessionStore(tmp_path)
    store.append_blocking("s~x", [padded_call(1, 10)], 4096)
    with (tmp_path / file_name("s~x")).open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n")
    assert [info.session_id for info in await store.sessions()] == ["s~x"]
    assert [e["kind"] for e in await store.entries("s~x")] == ["call", "damaged"]
