"""Following a real audit log (written by the real writer process) from a cursor."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from labelgate.audit import AuditClient, AuditUnavailable
from labelgate.audit.export.tail import (
    MARK_TORN_READS_TOLERATED,
    MARK_WARNING_SECONDS,
    CommittedMark,
    Cursor,
    CursorFile,
    ExportLogBroken,
    Leftover,
    LogRecord,
    end_cursor,
    left_behind,
    read_batch,
)
from labelgate.audit.store import CHECKPOINTS_NAME, COMMITTED_NAME, committed_line, list_segments
from labelgate.errors import ConfigError
from tests.audit.conftest import make_event, read_records, writer_args, writer_process
from tests.audit.test_export_cli import append, log_past_its_last_checkpoint
from tests.support.procs import Process


def write_log(tmp_path: Path, count: int, max_segment_bytes: int = 1500) -> tuple[Path, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--max-segment-bytes", str(max_segment_bytes)):
        ids = asyncio.run(append(sock, count))
    return log_dir, ids


def read_all(
    log_dir: Path, cursor: Cursor, batch: int = 4, marks: CommittedMark | None = None
) -> tuple[list[LogRecord], Cursor]:
    records: list[LogRecord] = []
    while chunk := read_batch(log_dir, cursor, batch, marks=marks):
        assert len(chunk) <= batch
        records += chunk
        cursor = chunk[-1].after
    return records, cursor


def test_reads_every_record_in_order_across_segments_and_resumes_from_a_saved_cursor(tmp_path: Path) -> None:
    log_dir, ids = write_log(tmp_path, 25)
    assert len(list_segments(log_dir)) > 3  # the chain really runs across files
    first, cursor = read_all(log_dir, Cursor(), batch=4)
    assert [r.event["event_id"] for r in first] == ids
    assert [r.seq for r in first] == list(range(1, 26))
    stored = read_records(log_dir)
    assert [r.document() for r in first] == [
        {**s["event"], "seq": s["seq"], "hash": s["hash"]} for s in stored
    ]

    state = CursorFile(tmp_path / "state" / "d.cursor.json")
    middle = first[10].after
    state.save(middle, destination="d")
    loaded = state.load()
    assert loaded is not None and loaded == middle
    rest, _ = read_all(log_dir, loaded)
    assert [r.seq for r in rest] == list(range(12, 26))
    # A cursor without a file position (e.g. written by hand) is located by scanning.
    located, _ = read_all(log_dir, Cursor(seq=middle.seq, hash=middle.hash))
    assert [r.seq for r in located] == list(range(12, 26))
    assert read_batch(log_dir, cursor, 10) == []
    assert end_cursor(log_dir) == cursor


def test_an_incomplete_last_line_waits_and_the_writer_recovery_keeps_the_cursor_valid(tmp_path: Path) -> None:
    sock = tmp_path / "w.sock"
    log_dir, _ = write_log(tmp_path, 3, max_segment_bytes=1 << 20)
    _, cursor = read_all(log_dir, Cursor())
    segment = list_segments(log_dir)[-1][1]
    with segment.open("ab") as handle:
        handle.write(b'{"seq":4,"prev":"torn wri')  # a write the crash interrupted
    assert read_batch(log_dir, cursor, 10) == []
    with writer_process(sock, log_dir):  # recovery cuts the torn line, then appends
        more = asyncio.run(append(sock, 2))
    after, _ = read_all(log_dir, cursor)
    assert [r.event["event_id"] for r in after] == more
    assert [r.seq for r in after] == [4, 5]


def test_an_edited_record_stops_the_export_at_that_record(tmp_path: Path) -> None:
    log_dir, _ = write_log(tmp_path, 6, max_segment_bytes=1 << 20)
    segment = list_segments(log_dir)[0][1]
    lines = segment.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[3])
    record["event"]["decision"] = "allow"
    lines[3] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    segment.write_bytes(b"".join(lines))
    good = read_batch(log_dir, Cursor(), 3)
    assert [r.seq for r in good] == [1, 2, 3]
    with pytest.raises(ExportLogBroken, match="byte") as caught:
        read_batch(log_dir, good[-1].after, 3)
    assert caught.value.reason == "AUDIT_EXPORT_LOG_BROKEN"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"model":"customer-profile"', b'"model":"\\ud800"'),
        (b'"latency_ms":1.25', b'"latency_ms":1e400'),
    ],
)
def test_a_record_no_record_can_hold_stops_the_export_without_a_crash(
    tmp_path: Path, old: bytes, new: bytes
) -> None:
    """Re-hashing such a line raised (UnicodeEncodeError, or ValueError for inf) out of the tail."""
    log_dir, _ = write_log(tmp_path, 6, max_segment_bytes=1 << 20)
    segment = list_segments(log_dir)[0][1]
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(old, new)
    segment.write_bytes(b"".join(lines))
    good = read_batch(log_dir, Cursor(), 10)
    assert [r.seq for r in good] == [1, 2, 3]
    with pytest.raises(ExportLogBroken, match="byte") as caught:
        read_batch(log_dir, good[-1].after, 3)
    assert caught.value.reason == "AUDIT_EXPORT_LOG_BROKEN"
    with pytest.raises(ExportLogBroken, match="not a valid record"):
        read_batch(log_dir, Cursor(seq=3, hash=good[-1].after.hash), 3)  # located by scanning


def test_a_removed_segment_is_a_gap_not_a_skip(tmp_path: Path) -> None:
    log_dir, _ = write_log(tmp_path, 20)
    segments = list_segments(log_dir)
    segments[1][1].unlink()
    first = read_batch(log_dir, Cursor(), 100)
    assert first and first[-1].seq == segments[1][0] - 1
    with pytest.raises(ExportLogBroken, match="missing"):
        read_batch(log_dir, first[-1].after, 100)
    segments[0][1].unlink()
    with pytest.raises(ExportLogBroken, match="not in the log"):
        read_batch(log_dir, Cursor(), 100)


def test_a_log_rewritten_behind_the_cursor_is_refused(tmp_path: Path) -> None:
    log_dir, _ = write_log(tmp_path, 5, max_segment_bytes=1 << 20)
    records, cursor = read_all(log_dir, Cursor())
    other = tmp_path / "other"
    other_log, _ = write_log(other, 5, max_segment_bytes=1 << 20)
    # Same seqs, different records: a cursor from the first log must not follow the second.
    with pytest.raises(ExportLogBroken, match="rewritten"):
        read_batch(other_log, Cursor(seq=cursor.seq, hash=cursor.hash), 10)
    with pytest.raises(ExportLogBroken):
        read_batch(
            other_log, Cursor(seq=3, hash=records[2].hash, segment=1, offset=records[2].after.offset), 10
        )
    longer = Cursor(seq=9, hash=cursor.hash, segment=1, offset=cursor.offset + 10_000)
    with pytest.raises(ExportLogBroken, match="shorter"):
        read_batch(log_dir, longer, 10)


def test_a_damaged_cursor_file_is_a_clear_error(tmp_path: Path) -> None:
    state = CursorFile(tmp_path / "c.json")
    assert state.load() is None
    state.path.write_text("{not json")
    with pytest.raises(ConfigError, match="export cursor"):
        state.load()
    state.path.write_text(json.dumps({"seq": 1, "hash": "nothex"}))
    with pytest.raises(ConfigError):
        state.load()


@pytest.mark.parametrize(
    "saved",
    [
        '{"seq": 1e400, "hash": "%s"}',  # infinity: int() of it raised OverflowError, "internal error"
        '{"seq": 0, "hash": "%s", "segment": 1e400, "offset": 0}',
        '{"seq": 0, "hash": "%s", "segment": 1, "offset": 1e400}',
        '{"seq": 1.5, "hash": "%s"}',  # int() would have cut it to 1
        '{"seq": "3", "hash": "%s"}',
        '{"seq": true, "hash": "%s"}',
        '{"seq": 0, "hash": "%s", "segment": "1"}',
        '["seq", "%s"]',
        "[" * 100_000 + "%s",  # deeper than the parser recurses
    ],
)
def test_a_cursor_whose_numbers_are_not_json_integers_is_a_clear_error(tmp_path: Path, saved: str) -> None:
    """The reviewer's ``1e400`` gave ``labelgate: internal error (OverflowError)``, exit 1."""
    state = CursorFile(tmp_path / "c.json")
    state.path.write_text(saved % ("0" * 64))
    with pytest.raises(ConfigError, match="export cursor") as refused:
        state.load()
    assert (refused.value.reason, refused.value.exit_code) == ("AUDIT_EXPORT_CURSOR_INVALID", 2)


def test_loading_a_cursor_removes_what_a_forwarder_killed_mid_save_left(tmp_path: Path) -> None:
    state = CursorFile(tmp_path / "dest.cursor.json")
    state.save(Cursor())
    (tmp_path / ".dest.cursor.json.x9y8.tmp").write_text('{"seq": 4')
    assert state.load() == Cursor()
    assert [p.name for p in tmp_path.iterdir()] == ["dest.cursor.json"]


# The writer with a disk whose next fdatasync hangs and then fails: while the FIFO ``argv[1]``
# exists, the sync blocks until the test has opened the FIFO and closed it again
# (``failing_sync_gate``), then fails with EIO, as a dying disk's does. The write before it
# went through, so the batch's lines are complete in the file while the sync hangs.
_FAILING_SYNC = """
import errno, os, runpy, sys
from labelgate.audit import store
gate, real_sync = sys.argv[1], store._sync
def failing_sync(fd):
    if not os.path.exists(gate):
        return real_sync(fd)
    with open(gate, "rb") as fifo:
        fifo.read()
    os.unlink(gate)
    raise OSError(errno.EIO, "Input/output error (injected)")
store._sync = failing_sync
sys.argv = ["labelgate.audit", *sys.argv[2:]]
runpy.run_module("labelgate.audit", run_name="__main__")
"""


@contextlib.contextmanager
def failing_sync_writer(sock: Path, log_dir: Path, gate: Path) -> Iterator[Process]:
    extra = ("--checkpoint-seconds", "3600")  # no checkpoint sync runs into the failing one
    args = [sys.executable, "-c", _FAILING_SYNC, str(gate), *writer_args(sock, log_dir, *extra)[3:]]
    process = Process(args, log_dir.parent / "failing-writer.log", name="audit writer, failing disk")
    try:
        process.wait_for_socket(sock, timeout=20)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def failing_sync_gate(gate: Path, process: Process) -> Iterator[None]:
    """Held while the writer hangs in its fdatasync; leaving it makes that sync fail.

    Opening the FIFO for writing succeeds only once the writer has it open for reading (it is
    inside the sync): from then on it reads until this end is closed, so the block runs while
    the writer is certainly stuck in the sync, with the batch written and not acknowledged."""
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:  # ENXIO: no reader yet, the writer has not reached the sync
            if error.errno != errno.ENXIO or not process.alive():
                raise
            time.sleep(0.01)  # polls for the writer's arrival; the order is the FIFO's
    try:
        yield
    finally:
        os.close(fd)


def run_forwarder_once(log_dir: Path, state: Path, out: Path) -> tuple[int, str]:
    args = [sys.executable, "-m", "labelgate.audit.export", "--log-dir", str(log_dir)]
    args += ["--state-dir", str(state), "--once", "--jsonl-dir", str(out)]
    process = Process(args, state.parent / "forwarder.log", name="audit forwarder")
    try:
        return process.popen.wait(timeout=60), process.output()
    finally:
        process.stop()


def exported(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(out.glob("export-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_batch_whose_sync_fails_is_never_exported_and_the_export_goes_on_after_the_restart(
    tmp_path: Path,
) -> None:
    """The reviewer's race: the forwarder read the complete lines of a batch while the writer's
    fdatasync ran; the sync failed, the writer took the batch back and refused its call, and
    the SIEM held an ``allow`` record of a refused call. After the restart the same seq was
    another record, and the forwarder stopped for good ("shorter than the export cursor")."""
    sock, log_dir, gate = tmp_path / "w.sock", tmp_path / "log", tmp_path / "gate"
    state, out = tmp_path / "state", tmp_path / "out"
    refused_call = make_event(decision="allow", reason="released?", request_id="call-A")
    with failing_sync_writer(sock, log_dir, gate) as writer:
        first = asyncio.run(append(sock, 2))
        os.mkfifo(gate)  # the next fdatasync hangs, then fails

        async def refused_append() -> None:
            async with AuditClient(sock, timeout=60) as client:
                with pytest.raises(AuditUnavailable, match="AUDIT_WRITE_FAILED"):
                    await client.append(refused_call)

        with ThreadPoolExecutor(1) as pool:
            appending = pool.submit(asyncio.run, refused_append())
            with failing_sync_gate(gate, writer):
                assert refused_call["event_id"].encode() in list_segments(log_dir)[-1][1].read_bytes()
                during = read_batch(log_dir, Cursor(), 10)
                status, output = run_forwarder_once(log_dir, state, out)
                assert status == 0, output
            appending.result(timeout=60)
        assert writer.popen.wait(timeout=20) != 0  # a writer that cannot write stops
    assert [r.event["event_id"] for r in during] == first  # not the batch awaiting its sync
    assert [d["event_id"] for d in exported(out)] == first
    assert refused_call["event_id"] not in {r["event"]["event_id"] for r in read_records(log_dir)}

    with writer_process(sock, log_dir):
        after = asyncio.run(append(sock, 2))
    records, _ = read_all(log_dir, during[-1].after)
    assert [(r.seq, r.event["event_id"]) for r in records] == [(3, after[0]), (4, after[1])]
    status, output = run_forwarder_once(log_dir, state, out)
    assert status == 0, output  # the forwarder goes on: nothing it sent was taken back
    assert [(d["seq"], d["event_id"]) for d in exported(out)] == list(enumerate(first + after, start=1))


def test_the_export_stops_at_the_committed_mark_and_waits_out_one_read_mid_rewrite(tmp_path: Path) -> None:
    log_dir, ids = write_log(tmp_path, 5, max_segment_bytes=1 << 20)
    (log_dir / CHECKPOINTS_NAME).unlink()  # the mark alone says what is committed
    mark = log_dir / COMMITTED_NAME
    hashes = [record["hash"] for record in read_records(log_dir)]
    mark.write_bytes(committed_line(3, hashes[2]))
    records, cursor = read_all(log_dir, Cursor())
    assert [r.event["event_id"] for r in records] == ids[:3]
    assert end_cursor(log_dir) == cursor

    old, new = committed_line(3, hashes[2]), committed_line(5, hashes[4])
    for torn in (new[:40] + old[40:], old[:40] + new[40:], b"", new[:-1]):
        mark.write_bytes(torn)  # a read that caught the writer's rewrite half done
        assert read_batch(log_dir, cursor, 10) == []
    mark.write_bytes(committed_line(5, hashes[3]))  # whole, but not this log's record 5
    with pytest.raises(ExportLogBroken, match="not the record the writer committed"):
        read_all(log_dir, cursor)
    mark.write_bytes(new)
    rest, _ = read_all(log_dir, cursor)
    assert [r.event["event_id"] for r in rest] == ids[3:]


def test_a_log_without_the_committed_mark_is_exported_up_to_its_last_checkpoint(tmp_path: Path) -> None:
    """A log an older writer wrote (or continued: then its checkpoints pass a mark left behind)."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--checkpoint-every", "4"):
        ids = asyncio.run(append(sock, 6))
    (log_dir / COMMITTED_NAME).unlink()
    checkpoints = (log_dir / CHECKPOINTS_NAME).read_bytes()
    assert [json.loads(line)["seq"] for line in checkpoints.splitlines()] == [4, 6]  # every 4, and at stop
    (log_dir / CHECKPOINTS_NAME).write_bytes(checkpoints.splitlines(keepends=True)[0])
    records, cursor = read_all(log_dir, Cursor())
    assert [r.event["event_id"] for r in records] == ids[:4]
    (log_dir / CHECKPOINTS_NAME).write_bytes(b"")
    assert read_batch(log_dir, Cursor(), 10) == []  # no checkpoint yet: nothing is known committed

    (log_dir / COMMITTED_NAME).write_bytes(committed_line(records[1].seq, records[1].hash))  # behind
    (log_dir / CHECKPOINTS_NAME).write_bytes(checkpoints)
    rest, cursor = read_all(log_dir, cursor)
    assert [r.event["event_id"] for r in rest] == ids[4:]

    with writer_process(sock, log_dir):  # today's writer on that log: the mark from its start
        more = asyncio.run(append(sock, 1))
    last, _ = read_all(log_dir, cursor)
    assert [r.event["event_id"] for r in last] == more


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == event]


def test_a_committed_mark_that_cannot_be_read_is_warned_with_its_errno_and_the_checkpoint_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's forwarder could not read ``committed`` (EACCES): it exported up to the last
    checkpoint, silently, for good. A directory in its place fails the same way (EISDIR), as
    root too."""
    log_dir, ids, _ = log_past_its_last_checkpoint(tmp_path)
    mark = log_dir / COMMITTED_NAME
    mark.mkdir()
    now = [1000.0]
    marks = CommittedMark(log_dir, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="labelgate.audit.export.tail"):
        records, cursor = read_all(log_dir, Cursor(), batch=1, marks=marks)  # a read per record
        assert [r.event["event_id"] for r in records] == ids[:4]
        (warning,) = logged(caplog, "audit_export_committed_mark_unreadable")  # once a while, not per read
        assert (warning.path, warning.errno, warning.levelno) == (str(mark), "EISDIR", logging.WARNING)  # type: ignore[attr-defined]
        now[0] += MARK_WARNING_SECONDS  # still unreadable a while later: said again
        assert read_batch(log_dir, cursor, 10, marks=marks) == []
        assert len(logged(caplog, "audit_export_committed_mark_unreadable")) == 2
        left = left_behind(log_dir, cursor, marks)
    assert left is not None and (left.records, left.after_seq) == (2, 4)
    assert str(mark) in left.why and "EISDIR" in left.why


def test_a_log_without_the_mark_is_named_once_per_run_and_its_records_past_the_checkpoint_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_dir, ids, _ = log_past_its_last_checkpoint(tmp_path)
    marks = CommittedMark(log_dir)
    with caplog.at_level(logging.WARNING, logger="labelgate.audit.export.tail"):
        for _ in range(20):  # polls
            records, cursor = read_all(log_dir, Cursor(), marks=marks)
        assert [r.event["event_id"] for r in records] == ids[:4]
        (warning,) = logged(caplog, "audit_export_committed_mark_missing")
        assert warning.path == str(log_dir / COMMITTED_NAME)  # type: ignore[attr-defined]
        left = left_behind(log_dir, cursor, marks)
        assert left is not None and (left.records, left.after_seq) == (2, 4)
        assert "no committed mark" in left.why
        assert left_behind(log_dir, Cursor(), marks) == Leftover(6, 0, left.why)  # nothing delivered yet
        assert len(logged(caplog, "audit_export_committed_mark_missing")) == 1
        assert logged(caplog, "audit_export_committed_mark_unreadable") == []


def test_a_mark_that_keeps_failing_its_checksum_is_warned_and_one_torn_read_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_dir, ids, _ = log_past_its_last_checkpoint(tmp_path)
    mark = log_dir / COMMITTED_NAME
    hashes = [record["hash"] for record in read_records(log_dir)]
    whole = committed_line(6, hashes[5])
    marks = CommittedMark(log_dir)
    with caplog.at_level(logging.WARNING, logger="labelgate.audit.export.tail"):
        mark.write_bytes(whole[:40] + committed_line(5, hashes[4])[40:])  # one read mid-rewrite
        records, cursor = read_all(log_dir, Cursor(), batch=10, marks=marks)
        assert [r.seq for r in records] == [1, 2, 3, 4]  # the checkpoint stood in for that read
        mark.write_bytes(whole)
        records, cursor = read_all(log_dir, cursor, marks=marks)
        assert [r.event["event_id"] for r in records] == ids[4:]
        assert logged(caplog, "audit_export_committed_mark_invalid") == []

        mark.write_bytes(b"v1 garbage\n")  # a mark that never reads whole
        for _ in range(MARK_TORN_READS_TOLERATED):
            assert read_batch(log_dir, Cursor(), 10, marks=marks) != []
        assert logged(caplog, "audit_export_committed_mark_invalid") == []
        read_batch(log_dir, Cursor(), 10, marks=marks)
        (warning,) = logged(caplog, "audit_export_committed_mark_invalid")
        assert warning.path == str(mark)  # type: ignore[attr-defined]


def test_lines_past_a_mark_that_reads_are_not_left_behind_but_lines_past_a_checkpoint_ahead_of_it_are(
    tmp_path: Path,
) -> None:
    """Past a whole mark: a batch whose sync has not returned (never exported, rightly). A mark
    behind the last checkpoint: a log an older writer continued, or a mark a crash left behind."""
    log_dir, _, _ = log_past_its_last_checkpoint(tmp_path)
    mark = log_dir / COMMITTED_NAME
    records = read_records(log_dir)
    mark.write_bytes(committed_line(5, records[4]["hash"]))
    marks = CommittedMark(log_dir)
    exported, cursor = read_all(log_dir, Cursor(), marks=marks)
    assert [r.seq for r in exported] == [1, 2, 3, 4, 5]
    assert left_behind(log_dir, cursor, marks) is None
    mark.write_bytes(committed_line(2, records[1]["hash"]))
    left = left_behind(log_dir, exported[3].after, marks)
    assert left is not None and (left.records, left.after_seq) == (2, 4)
    assert "behind the last checkpoint" in left.why
