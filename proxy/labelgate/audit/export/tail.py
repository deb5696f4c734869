"""Follow the audit log segments from a cursor, and keep the cursor on disk.

A ``Cursor`` names the last record a destination has received (``seq`` and its chain
``hash``) and where the next one starts (``segment``: the first seq of its file, ``offset``:
a byte offset in it). Reading from a cursor:

- takes complete lines only: a line without its newline is a write in progress (or a torn
  write the writer cuts off when it restarts) and is left for the next read;
- checks every record's own hash and that it links to the one before (``prev`` equals the
  cursor's hash), across files and across restarts of the forwarder. A link that does not
  hold means the log was edited, or rewritten behind the cursor, and the forwarder stops
  (``ExportLogBroken``) instead of shipping records it cannot vouch for;
- never skips: if the next record's file is gone (segments archived away while a
  destination was down) that is an ``ExportLogBroken`` too, with the missing range;
- takes only what the writer has committed: records up to its committed mark (``committed``
  beside the log: seq and hash, rewritten after each batch's fsync returned, before the
  batch is answered; ``store.py``). Complete lines past the mark may be a batch whose fsync
  is still running, which the writer takes back if it fails: shipped, they would say a
  refused call was released, and their seqs come back as other records after the restart.
  So whatever leaves is durable, with no fsync here. The record at the mark's seq must carry
  the mark's hash, or this is not the log the writer committed (``ExportLogBroken``). A mark
  that does not read whole (caught mid-rewrite) counts as none for that read. Without a
  mark (a log of a writer from before it), or when the mark is behind it (a log continued
  by such a writer), the last checkpoint counts instead: a writer checkpoints only records
  it has committed, so such a log is exported up to a checkpoint interval late.

All of this blocks; the forwarder runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labelgate.audit import reasons
from labelgate.audit.records import GENESIS, is_hex_digest
from labelgate.audit.store import (
    CHECKPOINTS_NAME,
    Checkpoint,
    list_segments,
    parse_record,
    read_committed,
    read_tail,
    segment_name,
)
from labelgate.durable import remove_leftovers, replace_durably
from labelgate.errors import ConfigError, LabelgateError

# One read takes at most this much of a segment; a batch never needs more.
READ_CHUNK = 1 << 20


class ExportLogBroken(LabelgateError):
    """The log cannot be followed from the cursor without skipping or trusting a broken link."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(
            "AUDIT_EXPORT_LOG_BROKEN",
            message + " (run `labelgate audit verify` on the log; the forwarder does not skip records)",
        )


@dataclass(frozen=True)
class Cursor:
    seq: int = 0  # the last record delivered (0: none yet)
    hash: str = GENESIS  # its chain hash: the next record's ``prev``
    segment: int | None = None  # first seq of the file holding the next record (None: find it)
    offset: int = 0  # byte offset of the next record in that file


@dataclass(frozen=True)
class LogRecord:
    seq: int
    hash: str
    event: dict[str, Any]
    after: Cursor  # the cursor once this record is delivered

    def document(self) -> dict[str, Any]:
        """The exported form: the event's fields plus its place in the chain."""
        return {**self.event, "seq": self.seq, "hash": self.hash}


def read_batch(
    log_dir: Path, cursor: Cursor, max_records: int, max_bytes: int = READ_CHUNK
) -> list[LogRecord]:
    """The committed records after ``cursor`` (at most ``max_records``), checked, each with its
    next cursor."""
    committed = committed_end(log_dir, cursor.seq)  # None: nothing new, but the cursor is still checked
    while True:
        segments = list_segments(log_dir)  # listed BEFORE reading: see _next_segment
        if not segments:
            return []
        if cursor.segment is None or not (log_dir / segment_name(cursor.segment)).exists():
            cursor = _locate(log_dir, segments, cursor)
            if cursor.segment is None:
                return []
        assert cursor.segment is not None
        records = _read_from(
            log_dir / segment_name(cursor.segment), cursor, max_records, max_bytes, committed
        )
        if records:
            return records
        if committed is None or cursor.seq >= committed.seq:
            return []  # the next record is not committed yet, wherever it is
        following = _next_segment(segments, cursor)
        if following is None:
            return []
        # A newer file existed before we read this one to its end: the writer had finished
        # with this one, so everything in it has been read. Move on.
        if following != cursor.seq + 1:
            raise ExportLogBroken(
                f"records {cursor.seq + 1}..{following - 1} are missing: {segment_name(cursor.segment)} "
                f"ends at seq {cursor.seq} and the next file starts at {following}"
            )
        cursor = Cursor(cursor.seq, cursor.hash, following, 0)


def committed_end(log_dir: Path, after_seq: int) -> Checkpoint | None:
    """How far the log is committed, when that is past record ``after_seq``; else None.

    The writer's committed mark; the last checkpoint when there is no mark (an older writer's
    log), when the mark is behind it, or when the mark does not read whole (mid-rewrite:
    the next read sees it whole). Either is read from the file each time, so a writer that
    restarts is followed at once."""
    try:
        mark = read_committed(log_dir)
    except (OSError, ValueError):
        mark = None
    if mark is not None and mark.seq > after_seq:
        return mark
    checkpoint = _last_checkpoint(log_dir)
    if checkpoint is not None and checkpoint.seq > after_seq:
        return checkpoint
    return None


def _last_checkpoint(log_dir: Path) -> Checkpoint | None:
    """The last whole checkpoint line's (seq, head), or None (no file, none yet, or not one the
    writer wrote: then nothing is taken from it)."""
    try:
        line, _, _ = read_tail(log_dir / CHECKPOINTS_NAME)
        checkpoint = json.loads(line) if line is not None else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(checkpoint, dict):
        return None
    seq, head = checkpoint.get("seq"), checkpoint.get("head")
    if type(seq) is not int or seq < 0 or not is_hex_digest(head):
        return None
    return Checkpoint(seq, str(head))


def _next_segment(segments: list[tuple[int, Path]], cursor: Cursor) -> int | None:
    later = [first for first, _ in segments if cursor.segment is not None and first > cursor.segment]
    return min(later) if later else None


def _locate(log_dir: Path, segments: list[tuple[int, Path]], cursor: Cursor) -> Cursor:
    """Find the file and offset of record ``cursor.seq + 1`` by scanning (first read, or a stale cursor)."""
    wanted = cursor.seq + 1
    candidates = [first for first, _ in segments if first <= wanted]
    if not candidates:
        raise ExportLogBroken(
            f"record {wanted} is not in the log: the oldest file starts at seq {segments[0][0]}"
        )
    first = max(candidates)
    offset, seen = 0, cursor.seq < first  # the cursor's own record is in this file unless it precedes it
    with open(log_dir / segment_name(first), "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            record = parse_record(line)
            if record is None:
                raise ExportLogBroken(f"{segment_name(first)} at byte {offset}: not a valid record")
            if record["seq"] >= wanted:
                break
            if record["seq"] == cursor.seq and cursor.seq > 0 and record["hash"] != cursor.hash:
                raise ExportLogBroken(
                    f"record {cursor.seq} is not the one last delivered (hash differs): the log was "
                    "rewritten behind the export cursor"
                )
            seen = seen or record["seq"] == cursor.seq
            offset += len(line)
    if not seen:
        raise ExportLogBroken(f"the log ends before record {cursor.seq}, which was already delivered")
    return Cursor(cursor.seq, cursor.hash, first, offset)


def _read_from(
    path: Path, cursor: Cursor, max_records: int, max_bytes: int, committed: Checkpoint | None
) -> list[LogRecord]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        if os.fstat(fd).st_size < cursor.offset:
            raise ExportLogBroken(
                f"{path.name} is shorter than the export cursor (byte {cursor.offset}, after seq "
                f"{cursor.seq}): the log was cut or rewritten behind it"
            )
        if committed is None or cursor.seq >= committed.seq:
            return []
        os.lseek(fd, cursor.offset, os.SEEK_SET)
        data = os.read(fd, max_bytes)
        complete = data[: data.rfind(b"\n") + 1]
        if not complete and len(data) == max_bytes:
            raise ExportLogBroken(
                f"{path.name} at byte {cursor.offset}: a line longer than {max_bytes} bytes"
            )
    finally:
        os.close(fd)
    records: list[LogRecord] = []
    seq, prev, offset = cursor.seq, cursor.hash, cursor.offset
    for line in complete.splitlines(keepends=True):
        if len(records) >= max_records or seq >= committed.seq:
            break  # past the committed mark: maybe a batch whose fsync has not returned yet
        record = parse_record(line)
        problem = _problem(record, seq, prev, committed)
        if problem is not None:
            if records:
                break  # deliver what is good first; the next read starts at the bad record
            raise ExportLogBroken(f"{path.name} at byte {offset}: {problem}")
        assert record is not None
        seq, prev, offset = record["seq"], record["hash"], offset + len(line)
        records.append(LogRecord(seq, prev, record["event"], Cursor(seq, prev, cursor.segment, offset)))
    return records


def _problem(record: dict[str, Any] | None, seq: int, prev: str, committed: Checkpoint) -> str | None:
    if record is None:
        return "not a valid record (its hash does not match its contents)"
    if record["seq"] != seq + 1:
        return f"expected seq {seq + 1}, found {record['seq']}"
    if record["prev"] != prev:
        return f"record {record['seq']} does not link to record {seq}"
    if record["seq"] == committed.seq and record["hash"] != committed.head:
        return f"record {committed.seq} is not the record the writer committed (its hash differs)"
    return None


def end_cursor(log_dir: Path) -> Cursor:
    """A cursor after the last committed record: for a new destination that wants only what comes next."""
    cursor = Cursor()
    while batch := read_batch(log_dir, cursor, 10_000, 16 * READ_CHUNK):
        cursor = batch[-1].after
    return cursor


def _exact_int(value: Any, name: str) -> int:
    """A JSON integer as saved: not a float (``1e400`` is infinity, ``int`` of it overflows),
    a string or a boolean that ``int`` would also take."""
    if type(value) is not int:
        raise TypeError(f"{name} is not an integer")
    return value


class CursorFile:
    """One destination's cursor, replaced atomically (write, fsync, rename, fsync the directory).
    Its forwarder is its sole writer."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Cursor | None:
        """The saved cursor, or None; first removes what a forwarder killed mid-save left."""
        remove_leftovers(self.path)
        try:
            raw = json.loads(self.path.read_text())
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            segment = raw.get("segment")
            cursor = Cursor(
                seq=_exact_int(raw["seq"], "seq"),
                hash=str(raw["hash"]),
                segment=None if segment is None else _exact_int(segment, "segment"),
                offset=_exact_int(raw.get("offset", 0), "offset"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            raise ConfigError(
                reasons.AUDIT_EXPORT_CURSOR_INVALID, f"cannot read the export cursor {self.path}: {error}"
            ) from None
        if cursor.seq < 0 or cursor.offset < 0 or not is_hex_digest(cursor.hash):
            raise ConfigError(
                reasons.AUDIT_EXPORT_CURSOR_INVALID, f"the export cursor {self.path} is not valid"
            )
        return cursor

    def save(self, cursor: Cursor, **extra: Any) -> None:
        data = json.dumps({**asdict(cursor), **extra}, sort_keys=True).encode() + b"\n"
        replace_durably(self.path, data)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
