"""The files of an audit log directory, written by exactly one writer.

    <log_dir>/audit-<first seq, 12 digits>.jsonl   records, append-only, rotated by size
    <log_dir>/checkpoints.jsonl                    signed checkpoints
    <log_dir>/committed                            the writer's committed mark (below)
    <log_dir>/.lock                                flock held by the running writer

The chain runs across segments: a new segment's first record links to the previous
segment's last hash, and its name says which seq it starts with. All methods here block
(write, fsync); the writer calls ``append`` on its event loop's thread, and what arrives
meanwhile waits in the socket buffers to form the next batch.

An append that fails (a write cut short by a full disk, a failed fsync) is cut back to
where its batch began before the writer refuses it: every append in it is refused, and a
whole line of it left behind would say a refused call was released.

The committed mark says how far the log is durable and acknowledged, for readers of a log
that is still being written (the export, ``export/tail.py``): complete lines past it may
be a batch whose fsync has not returned, and that batch is taken back if it fails. It is
one fixed-length line, ``v1 <seq, 20 digits> <that record's hash> <crc32, 8 hex digits>\n``
(the checksum over what precedes it), rewritten in place (``pwrite``) after each batch's
fsync returned and before its appends are answered, and on open once the recovered log is
synced. It is never fsynced itself: a crash can leave it behind the log (or unreadable until
the writer starts again), never ahead, since the records it names were durable before it
was written. A reader that catches a rewrite half done sees a checksum that does not match.

Recovery on open: a final line without its newline is a write the crash interrupted
(never acknowledged, since acknowledgement waits for fsync); it is cut off and reported.
A complete line that does not parse, or a log shorter than its last checkpoint, is not
something a crash produces: the writer refuses to start rather than extend, and sign,
a chain it cannot vouch for (``labelgate audit verify`` says what is wrong).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelgate.audit import reasons
from labelgate.audit.records import GENESIS, RECORD_KEYS, is_hex_digest, record_hash
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger

log = get_logger(__name__)

CHECKPOINTS_NAME = "checkpoints.jsonl"
COMMITTED_NAME = "committed"
SEGMENT_PATTERN = re.compile(r"^audit-(\d{12})\.jsonl$")


class AuditLogCorrupt(LabelgateError):
    """The log on disk is not one this writer may continue: operator attention needed."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__("AUDIT_LOG_CORRUPT", message + " (run `labelgate audit verify` on the directory)")


def segment_name(first_seq: int) -> str:
    return f"audit-{first_seq:012d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Segments sorted by the seq their name says they start with."""
    found = []
    for path in directory.iterdir():
        match = SEGMENT_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


@dataclass(frozen=True)
class Repair:
    """A torn final line that recovery cut off."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True)
class Checkpoint:
    """A place in the chain, record ``seq`` and its hash: a checkpoint's, or the committed mark's."""

    seq: int
    head: str


def committed_line(seq: int, head: str) -> bytes:
    """The committed mark's one line: always ``COMMITTED_LENGTH`` bytes, so a rewrite in place
    replaces all of it."""
    body = b"v1 %020d %s" % (seq, head.encode("ascii"))
    return body + b" %08x\n" % zlib.crc32(body)


COMMITTED_LENGTH = len(committed_line(0, GENESIS))
_COMMITTED_PATTERN = re.compile(rb"(v1 ([0-9]{20}) ([0-9a-f]{64})) ([0-9a-f]{8})\n")


def parse_committed(data: bytes) -> Checkpoint | None:
    """The mark's (seq, head), or None for anything but one whole line the writer wrote (a
    read that caught a rewrite half done, a file just created, or garbage)."""
    match = _COMMITTED_PATTERN.fullmatch(data)
    if match is None or zlib.crc32(match.group(1)) != int(match.group(4), 16):
        return None
    return Checkpoint(int(match.group(2)), match.group(3).decode("ascii"))


def read_committed(directory: Path) -> Checkpoint | None:
    """The committed mark of the log in ``directory``: None if there is no such file (a log
    of a writer from before the mark); raises ``ValueError`` if it does not read whole."""
    try:
        fd = os.open(directory / COMMITTED_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, COMMITTED_LENGTH + 1, 0)
    finally:
        os.close(fd)
    mark = parse_committed(data)
    if mark is None:
        raise ValueError(f"{COMMITTED_NAME} does not hold one whole mark")
    return mark


def read_tail(path: Path) -> tuple[bytes | None, int, int]:
    """(last complete line without newline or None, end offset of complete lines, file size)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        buffer, position = b"", size
        while True:
            last_newline = buffer.rfind(b"\n")
            if last_newline >= 0:
                previous = buffer.rfind(b"\n", 0, last_newline)
                if previous >= 0 or position == 0:
                    return buffer[previous + 1 : last_newline], position + last_newline + 1, size
            elif position == 0:
                return None, 0, size
            step = min(1 << 16, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer


def parse_record(line: bytes) -> dict[str, Any] | None:
    """A structurally valid record whose hash matches its own contents, else None."""
    try:
        record = json.loads(line)
    # ValueError: not JSON, or an integer past Python's digit limit; RecursionError: nested
    # past the parser's depth.
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        return None
    seq, prev, digest, event = record["seq"], record["prev"], record["hash"], record["event"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(event, dict):
        return None
    if not (is_hex_digest(prev) and is_hex_digest(digest)):
        return None
    try:
        if record_hash(seq, prev, event) != digest:
            return None
    except ValueError:  # a lone surrogate (UnicodeEncodeError) or a number out of range (inf)
        return None
    return record


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):  # the usual case: one call, no view
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


# fdatasync where the platform has it: the file's size is metadata it still syncs.
_sync = getattr(os, "fdatasync", None) or os.fsync


def _sync_directory(directory: Path) -> None:
    """Make a newly created file's name durable, not only its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogStore:
    def __init__(self, directory: Path, max_segment_bytes: int = 64 << 20, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.max_segment_bytes = max_segment_bytes
        self.fsync = fsync
        self.fsyncs = 0
        self.recovered_seq = 0
        self.recovered_hash = GENESIS
        self.last_checkpoint: Checkpoint | None = None
        self.repairs: list[Repair] = []
        self._head_segment: Path | None = None  # the file holding the recovered last record
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment: Path | None = None  # the file ``_fd`` appends to
        self._size = 0
        self._checkpoint_fd: int | None = None
        self._committed_fd: int | None = None

    # -- open and recover ------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._lock()
        segments = list_segments(self.directory)
        if segments:
            self._repair_tail(segments[-1][1])
            self._recover_head(segments)
            _, current = segments[-1]
            self._fd = os.open(current, os.O_WRONLY | os.O_APPEND)
            self._segment = current
            self._size = os.fstat(self._fd).st_size
        checkpoints = self.directory / CHECKPOINTS_NAME
        if checkpoints.exists():
            self._repair_tail(checkpoints)
            self.last_checkpoint = self._last_checkpoint(checkpoints)
            self._check_against_checkpoint(segments)
        self._checkpoint_fd = os.open(checkpoints, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._publish_recovered_end()
        _sync_directory(self.directory)

    def _publish_recovered_end(self) -> None:
        """Mark everything recovery kept as committed, once it is durable: a writer killed
        during a batch's fsync leaves that batch's complete lines, which recovery keeps."""
        if self.fsync and self._head_segment is not None:
            fd = os.open(self._head_segment, os.O_RDONLY)
            try:
                _sync(fd)
            finally:
                os.close(fd)
        self._committed_fd = os.open(self.directory / COMMITTED_NAME, os.O_WRONLY | os.O_CREAT, 0o640)
        os.ftruncate(self._committed_fd, COMMITTED_LENGTH)  # whatever an older file held past it
        self.publish_committed(self.recovered_seq, self.recovered_hash)

    def _lock(self) -> None:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                reasons.AUDIT_LOG_LOCKED,
                f"another audit writer is using {self.directory}: one writer per log",
            ) from None
        self._lock_fd = fd

    def _repair_tail(self, path: Path) -> None:
        _, complete_end, size = read_tail(path)
        if complete_end == size:
            return
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, complete_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.repairs.append(Repair(path, complete_end, size - complete_end))

    def _recover_head(self, segments: list[tuple[int, Path]]) -> None:
        for first_seq, path in reversed(segments):
            line, _, _ = read_tail(path)
            if line is None:
                continue  # a segment created just before a crash, nothing in it yet
            record = parse_record(line)
            if record is None or record["seq"] < first_seq:
                raise AuditLogCorrupt(f"the last record of {path} is not a valid record")
            self.recovered_seq, self.recovered_hash = record["seq"], record["hash"]
            self._head_segment = path
            return

    def _last_checkpoint(self, path: Path) -> Checkpoint | None:
        line, _, _ = read_tail(path)
        if line is None:
            return None
        try:
            checkpoint = json.loads(line)
            return Checkpoint(int(checkpoint["seq"]), str(checkpoint["head"]))
        # OverflowError: a seq of 1e400; RecursionError: nested past the parser's depth.
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            raise AuditLogCorrupt(f"the last checkpoint in {path} does not parse") from None

    def _check_against_checkpoint(self, segments: list[tuple[int, Path]]) -> None:
        checkpoint = self.last_checkpoint
        if checkpoint is None:
            return
        if checkpoint.seq > self.recovered_seq:
            raise AuditLogCorrupt(
                f"the last checkpoint covers {checkpoint.seq} records but the log ends at seq "
                f"{self.recovered_seq}: records are missing"
            )
        if self.find_hash(checkpoint.seq, segments) != checkpoint.head:
            raise AuditLogCorrupt(f"record {checkpoint.seq} does not match the last checkpoint's head")

    def find_hash(self, seq: int, segments: list[tuple[int, Path]]) -> str | None:
        """The stored hash of record ``seq``: a scan of one segment, for startup checks only."""
        candidates = [path for first, path in segments if first <= seq]
        if not candidates:
            return None
        with open(candidates[-1], "rb") as handle:
            for line in handle:
                record = parse_record(line)
                if record is not None and record["seq"] == seq:
                    return str(record["hash"])
        return None

    # -- write -------------------------------------------------------------------------
    def append(self, data: bytes, first_seq: int) -> None:
        """Write whole lines for records ``first_seq``.. and make them durable (blocking)."""
        if self._fd is None or self._size >= self.max_segment_bytes:
            self._start_segment(first_seq)
        fd, before = self._fd, self._size
        assert fd is not None
        try:
            _write_all(fd, data)
            if self.fsync:
                _sync(fd)
        except BaseException:
            # Every append of the batch is refused: a write cut short (a full disk) or an fsync
            # that failed leaves whole lines that would say refused calls were released, and
            # recovery cuts only a torn last line. Take the batch back, as if never written.
            self._take_back(fd, before)
            raise
        self._size = before + len(data)
        if self.fsync:
            self.fsyncs += 1

    def publish_committed(self, seq: int, head: str) -> None:
        """Say that the log is durable and acknowledged up to record ``seq`` (hash ``head``).

        Called after the batch's ``append`` returned, before its appends are answered. One
        ``pwrite`` and no fsync (the writer's cost per batch stays one sync): lost in a crash,
        the mark is only behind, and the writer publishes its recovered end when it starts.
        """
        assert self._committed_fd is not None
        line = committed_line(seq, head)
        if os.pwrite(self._committed_fd, line, 0) != len(line):
            raise OSError(errno.EIO, f"{COMMITTED_NAME}: a short write")

    def _take_back(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            if self.fsync:
                _sync(fd)
        except OSError as error:
            # The writer stops either way (the append's own error goes on up), and the next start
            # cuts only a torn last line: say where the refused records begin.
            log.error(
                "audit_take_back_failed",
                error=str(error),
                file=str(self._segment),
                offset=size,
                hint="the records past this offset were never acknowledged",
            )

    def _start_segment(self, first_seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
        self._segment = self.directory / segment_name(first_seq)
        self._fd = os.open(self._segment, flags, 0o640)
        self._size = 0
        _sync_directory(self.directory)

    def append_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        assert self._checkpoint_fd is not None
        line = json.dumps(checkpoint, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
        _write_all(self._checkpoint_fd, line)
        if self.fsync:
            _sync(self._checkpoint_fd)
        self.last_checkpoint = Checkpoint(checkpoint["seq"], checkpoint["head"])

    def close(self) -> None:
        for fd in (self._fd, self._checkpoint_fd, self._committed_fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._checkpoint_fd = self._committed_fd = self._lock_fd = None
