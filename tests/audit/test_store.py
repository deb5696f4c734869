"""The log files themselves (``LogStore``): what an append that fails leaves behind."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from labelgate.audit import store as store_module
from labelgate.audit.records import GENESIS, make_line
from labelgate.audit.store import COMMITTED_NAME, Checkpoint, LogStore, list_segments, read_committed
from labelgate.audit.verify import verify_log
from tests.audit.conftest import make_event, read_records


def lines(first_seq: int, head: str, count: int) -> tuple[bytes, str]:
    data = []
    for seq in range(first_seq, first_seq + count):
        line, head = make_line(seq, head, make_event(session_id=f"s-{seq}"))
        data.append(line)
    return b"".join(data), head


def test_a_batch_whose_fsync_fails_is_taken_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every append of the batch is refused, so none of its lines may stay: written whole but
    not synced, they used to stay, complete, saying refused calls were released (and the
    next start cuts only a torn last line)."""
    store = LogStore(tmp_path / "log")
    store.open()
    first, head = lines(1, GENESIS, 2)
    store.append(first, 1)
    batch, _ = lines(3, head, 5)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "_sync", failing)
    with pytest.raises(OSError, match="Input/output"):
        store.append(batch, 3)
    monkeypatch.undo()
    store.close()
    [(_, segment)] = list_segments(tmp_path / "log")
    assert segment.read_bytes() == first
    assert [record["seq"] for record in read_records(tmp_path / "log")] == [1, 2]
    assert verify_log(tmp_path / "log").ok


def test_the_committed_mark_moves_only_when_published_and_a_failed_batch_never_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark is what the export may ship: a batch is in it only once the writer publishes
    it (after the sync, before the answers), never because its lines are in the file."""
    log_dir = tmp_path / "log"
    store = LogStore(log_dir)
    store.open()
    assert read_committed(log_dir) == Checkpoint(0, GENESIS)
    first, head = lines(1, GENESIS, 2)
    store.append(first, 1)
    assert read_committed(log_dir) == Checkpoint(0, GENESIS)  # written and synced, not yet answered
    store.publish_committed(2, head)
    assert read_committed(log_dir) == Checkpoint(2, head)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "_sync", failing)
    with pytest.raises(OSError, match="Input/output"):
        store.append(lines(3, head, 4)[0], 3)
    monkeypatch.undo()
    assert read_committed(log_dir) == Checkpoint(2, head)
    store.close()

    (log_dir / COMMITTED_NAME).write_bytes(b"an older, longer file " * 20)
    more, last = lines(3, head, 1)
    [(_, segment)] = list_segments(log_dir)
    with segment.open("ab") as handle:  # complete, and never synced by a writer: kept by recovery
        handle.write(more)
    store = LogStore(log_dir)
    store.open()  # publishes the end recovery kept, once that is synced
    assert read_committed(log_dir) == Checkpoint(3, last)
    store.close()


# Appends the batch in file argv[3] to the log in argv[2] under a file size limit of argv[1];
# exits 1 if the limit refused it (EFBIG: Python ignores SIGXFSZ).
_APPEND_UNDER_LIMIT = """
import errno, resource, sys
from pathlib import Path
from labelgate.audit.store import LogStore
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
store = LogStore(Path(sys.argv[2]))
store.open()
try:
    store.append(Path(sys.argv[3]).read_bytes(), 2)
except OSError as error:
    sys.exit(1 if error.errno == errno.EFBIG else 2)
"""


def test_a_batch_the_disk_cuts_short_leaves_none_of_its_lines(tmp_path: Path) -> None:
    """A real short write: a child process appends under ``RLIMIT_FSIZE`` (a full disk without
    root); the limit falls in the middle of the batch's fourth line, after three whole ones."""
    log_dir = tmp_path / "log"
    store = LogStore(log_dir)
    store.open()
    first, head = lines(1, GENESIS, 1)
    store.append(first, 1)
    store.close()
    batch, _ = lines(2, head, 6)
    (tmp_path / "batch").write_bytes(batch)
    limit = len(first) + len(b"".join(batch.splitlines(keepends=True)[:3])) + 100
    child = subprocess.run(
        [sys.executable, "-c", _APPEND_UNDER_LIMIT, str(limit), str(log_dir), str(tmp_path / "batch")],
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == 1, child.stderr  # refused for the limit
    assert [record["seq"] for record in read_records(log_dir)] == [1]
    assert verify_log(log_dir).ok


def test_a_last_line_nested_past_the_parsers_depth_is_a_corrupt_log_not_a_crash(tmp_path: Path) -> None:
    """The writer and the forwarder ended in an internal error (RecursionError) on such a
    log where ``audit verify`` reported it tampered: the same clear refusal as any bad line."""
    store = LogStore(tmp_path / "log")
    store.open()
    first, _ = lines(1, GENESIS, 2)
    store.append(first, 1)
    store.close()
    [(_, segment)] = list_segments(tmp_path / "log")
    with segment.open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n")
    assert store_module.parse_record(b"[" * 100_000) is None
    with pytest.raises(store_module.AuditLogCorrupt):
        LogStore(tmp_path / "log").open()


def test_a_last_line_with_a_number_past_the_digit_limit_is_a_corrupt_log_not_a_crash(tmp_path: Path) -> None:
    """json.loads raises a plain ValueError for an integer of more than 4,300 digits: the
    writer died at start-up with it instead of refusing the log (AUDIT_LOG_CORRUPT)."""
    store = LogStore(tmp_path / "log")
    store.open()
    first, _ = lines(1, GENESIS, 2)
    store.append(first, 1)
    store.close()
    [(_, segment)] = list_segments(tmp_path / "log")
    with segment.open("ab") as handle:
        zeros = b"0" * 64
        handle.write(
            b'{"event":{},"hash":"' + zeros + b'","prev":"' + zeros + b'","seq":' + b"9" * 5000 + b"}\n"
        )
    assert store_module.parse_record(segment.read_bytes().splitlines()[-1]) is None
    with pytest.raises(store_module.AuditLogCorrupt):
        LogStore(tmp_path / "log").open()
