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
- says when that fallback is in use (``CommittedMark``, one per forwarder run): no mark is
  warned once; a mark that cannot be read (EACCES, EIO, ...) when it first fails and again
  every ``MARK_WARNING_SECONDS`` while it does, with its path and errno; a mark that fails
  its checksum only after more than ``MARK_TORN_READS_TOLERATED`` reads in a row (one read
  that catches a rewrite is expected). Silently, a forwarder that could not read the mark
  stayed a checkpoint interval behind for good. ``left_behind`` counts the complete records
  the fallback held back, for ``--once`` to fail on rather than report everything delivered.

All of this blocks; the forwarder runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labelgate.audit import reasons
from labelgate.audit.records import GENESIS, is_hex_digest
from labelgate.audit.store import (
    CHECKPOINTS_NAME,
    COMMITTED_NAME,
    Checkpoint,
    list_segments,
    parse_record,
    read_committed,
    read_tail,
    segment_name,
)
from labelgate.durable import remove_leftovers, replace_durably
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger

log = get_logger(__name__)

# One read takes at most this much of a segment; a batch never needs more.
READ_CHUNK = 1 << 20
# A mark that cannot be read is warned when it first fails, then at most this often while it
# keeps failing: every poll (4 a second by default) would bury the rest of the log.
MARK_WARNING_SECONDS = 60.0
# Reads in a row that may find the mark failing its checksum before that is warned: one read
# catching the writer's rewrite in place is expected now and then, several in a row are not.
MARK_TORN_READS_TOLERATED = 5


class ExportLogBroken(LabelgateError):
    """The log cannot be followed from the cursor without skipping or trusting a broken link."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(
            reasons.AUDIT_EXPORT_LOG_BROKEN,
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
    log_dir: Path,
    cursor: Cursor,
    max_records: int,
    max_bytes: int = READ_CHUNK,
    marks: CommittedMark | None = None,
) -> list[LogRecord]:
    """The committed records after ``cursor`` (at most ``max_records``), checked, each with its
    next cursor. ``marks`` reads the committed mark (a forwarder keeps one for its run, so its
    warnings are per run; without it, a reader for this call alone)."""
    marks = marks if marks is not None else CommittedMark(log_dir)
    committed = committed_end(marks, cursor.seq)  # None: nothing new, but the cursor is still checked
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


@dataclass(frozen=True)
class MarkRead:
    """One read of the committed mark: the mark, or why there is none to go by."""

    mark: Checkpoint | None
    why_none: str = ""  # with no mark: what an operator is told records were left for
    torn: bool = False  # it failed its checksum: maybe a read that caught the writer's rewrite


class CommittedMark:
    """Reads the writer's committed mark for one forwarder run, and warns when it cannot.

    Every read falls back to the last checkpoint without the mark (``committed_end``); what
    is warned (see the module's docstring) is kept here, so a forwarder's destinations,
    which poll from their own threads, share one reader and one set of warnings."""

    def __init__(self, log_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.log_dir = log_dir
        self.path = log_dir / COMMITTED_NAME
        self._clock = clock
        self._lock = threading.Lock()
        self._warned_at: dict[str, float] = {}  # errno name, or "missing" / "invalid" -> when
        self._invalid_reads = 0  # reads in a row that failed the checksum

    def read(self) -> MarkRead:
        try:
            mark = read_committed(self.log_dir)
        except ValueError:
            return self._invalid()
        except OSError as error:
            return self._unreadable(error)
        if mark is None:
            return self._missing()
        with self._lock:
            self._invalid_reads = 0
        return MarkRead(mark)

    def read_settled(self) -> MarkRead:
        """A read that does not stop at one caught mid-rewrite: up to as many reads as are
        tolerated before a warning, for a decision a single torn read must not make."""
        for _ in range(MARK_TORN_READS_TOLERATED):
            result = self.read()
            if not result.torn:
                return result
        return self.read()

    def _missing(self) -> MarkRead:
        with self._lock:
            self._invalid_reads = 0
            first = "missing" not in self._warned_at
            self._warned_at.setdefault("missing", self._clock())
        if first:  # once per run: a log of an older writer stays one, polls need not repeat it
            log.warning(
                "audit_export_committed_mark_missing",
                path=str(self.path),
                meaning="a log of a writer from before the committed mark: records are exported "
                "up to the last checkpoint only, so up to a checkpoint interval late",
            )
        return MarkRead(
            None,
            f"the log has no committed mark ({self.path}: a log of a writer from before it), so only "
            "records up to its last checkpoint count as committed; a current writer started on the log "
            "creates the mark",
        )

    def _unreadable(self, error: OSError) -> MarkRead:
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        reason = error.strerror or str(error)
        with self._lock:
            self._invalid_reads = 0
            warn = self._due(code)
        if warn:
            log.warning(
                "audit_export_committed_mark_unreadable",
                path=str(self.path),
                errno=code,
                error=reason,
                meaning="records are exported up to the last checkpoint only, so up to a checkpoint "
                "interval late, until the forwarder can read the mark",
            )
        return MarkRead(
            None,
            f"the committed mark {self.path} cannot be read ({code}: {reason}), so only records up to "
            "the last checkpoint count as committed; let the forwarder read it",
        )

    def _invalid(self) -> MarkRead:
        with self._lock:
            self._invalid_reads += 1
            reads = self._invalid_reads
            warn = reads > MARK_TORN_READS_TOLERATED and self._due("invalid")
        if warn:
            log.warning(
                "audit_export_committed_mark_invalid",
                path=str(self.path),
                reads_in_a_row=reads,
                meaning="the mark does not hold one whole line the writer wrote; records are exported "
                "up to the last checkpoint only until it does",
            )
        return MarkRead(
            None,
            f"the committed mark {self.path} does not hold one whole mark ({reads} reads in a row), "
            "so only records up to the last checkpoint count as committed",
            torn=True,
        )

    def _due(self, key: str) -> bool:
        """Whether a warning of ``key`` is due now (and if so, it is taken as given). Held lock."""
        now = self._clock()
        last = self._warned_at.get(key)
        if last is not None and now - last < MARK_WARNING_SECONDS:
            return False
        self._warned_at[key] = now
        return True


def committed_end(marks: CommittedMark, after_seq: int) -> Checkpoint | None:
    """How far the log is committed, when that is past record ``after_seq``; else None.

    The writer's committed mark; the last checkpoint when there is no mark (an older writer's
    log), when the mark is behind it, or when the mark does not read whole (mid-rewrite:
    the next read sees it whole; or it cannot be read at all: ``marks`` warns). Either is
    read from the file each time, so a writer that restarts is followed at once."""
    mark = marks.read().mark
    if mark is not None and mark.seq > after_seq:
        return mark
    checkpoint = _last_checkpoint(marks.log_dir)
    if checkpoint is not None and checkpoint.seq > after_seq:
        return checkpoint
    return None


@dataclass(frozen=True)
class Leftover:
    """Complete records in the log past the export cursor that no committed mark vouched for."""

    records: int
    after_seq: int  # the cursor's seq: where the fallback's bound stopped the export
    why: str


def left_behind(log_dir: Path, cursor: Cursor, marks: CommittedMark) -> Leftover | None:
    """With the export caught up to ``cursor``: the complete records past it that were not
    exported because the last checkpoint stood in for the mark, or None.

    A mark that reads, and is not behind the last checkpoint, is the writer's own word: lines
    past it are a batch whose sync has not returned, rightly not exported, and nothing is left."""
    result = marks.read_settled()
    checkpoint = _last_checkpoint(log_dir)
    if result.mark is not None:
        if checkpoint is None or result.mark.seq >= checkpoint.seq:
            return None
        why = (
            f"the committed mark (seq {result.mark.seq}) is behind the last checkpoint (seq "
            f"{checkpoint.seq}): a writer from before the mark continued the log, or a crash left the "
            "mark behind; only records up to the checkpoint count as committed until a current writer "
            "starts on the log"
        )
    else:
        why = result.why_none
    records = _complete_lines_after(log_dir, cursor)
    return Leftover(records, cursor.seq, why) if records else None


def _complete_lines_after(log_dir: Path, cursor: Cursor) -> int:
    """How many complete lines the segments hold after ``cursor``'s record."""
    segments = list_segments(log_dir)
    if not segments:
        return 0
    if cursor.segment is None or not (log_dir / segment_name(cursor.segment)).exists():
        cursor = _locate(log_dir, segments, cursor)
    count = 0
    for first, path in segments:
        if cursor.segment is None or first < cursor.segment:
            continue
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
            handle.seek(cursor.offset if first == cursor.segment else 0)
            while chunk := handle.read(READ_CHUNK):
                count += chunk.count(b"\n")  # a line without its newline is not complete
    return count


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


def end_cursor(log_dir: Path, marks: CommittedMark | None = None) -> Cursor:
    """A cursor after the last committed record: for a new destination that wants only what comes next."""
    cursor = Cursor()
    marks = marks if marks is not None else CommittedMark(log_dir)
    while batch := read_batch(log_dir, cursor, 10_000, 16 * READ_CHUNK, marks):
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
