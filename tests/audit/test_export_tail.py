"""Following a real audit log (written by the real writer process) from a cursor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from labelgate.audit import AuditClient
from labelgate.audit.export.tail import Cursor, CursorFile, ExportLogBroken, end_cursor, read_batch
from labelgate.audit.store import list_segments
from labelgate.errors import ConfigError
from tests.audit.conftest import make_event, read_records, writer_process


async def append(sock: Path, count: int) -> list[str]:
    async with AuditClient(sock, timeout=10) as client:
        events = [make_event() for _ in range(count)]
        for event in events:
            await client.append(event)
    return [event["event_id"] for event in events]


def write_log(tmp_path: Path, count: int, max_segment_bytes: int = 1500) -> tuple[Path, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--max-segment-bytes", str(max_segment_bytes)):
        ids = asyncio.run(append(sock, count))
    return log_dir, ids


def read_all(log_dir: Path, cursor: Cursor, batch: int = 4) -> tuple[list, Cursor]:
    records = []
    while chunk := read_batch(log_dir, cursor, batch):
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
    assert loaded == middle
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
