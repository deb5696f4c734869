"""Session recordings as files: ``<dir>/<safe name>-<hash>.jsonl``, one per session.

The first line names the session (its id may be any text a client chose; the file name is
a safe slug plus a hash of it). Appends take an exclusive ``flock`` on the file, so
several gateway processes (``workers > 1``) can share a directory: the size check and the
write are one step, and the sweeper takes the same lock before it deletes a file (an
append that opened the file just before the delete sees ``st_nlink == 0`` and starts a new
one). Every append reads the file's last line first (``_state``): a sealed entry's ``seq``
says the next position, and a session past its cap (or ending in its truncation marker) has
its marker already.
Writes are not fsynced: the audit log is the system of record; recordings are
evidence for replay and a power cut may lose their last moments.

A page of the session list (``sessions_page``) is ordered by the files' modification times,
most recently written first (a ``stat`` each, from the directory listing), and reads only the
files it shows: a directory of 300,000 sessions read every one in full for each listing
(review: 21.6 s for a 105 MB page). A file's modification time is when its latest entry was
written, so the order is that of the ``last`` times it shows, give or take the writer's batch.

All methods block; the async wrappers run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labelgate.recording.entries import (
    Admission,
    admit,
    encode_line,
    file_name,
    format_time,
    parse_time,
    session_header,
    truncation_marker,
)
from labelgate.recording.store import (
    Sealer,
    SessionInfo,
    SessionPage,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    page_size,
)

TAIL_BYTES = 64 * 1024
STATE_BYTES = 4096


class FileSessionStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    async def open(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True, mode=0o750)

    async def close(self) -> None:
        return None

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        return await asyncio.to_thread(self.append_blocking, session_id, entries, limit, seal)

    async def sessions(self) -> list[SessionInfo]:
        return await asyncio.to_thread(self.sessions_blocking)

    async def sessions_page(self, limit: int, cursor: str | None = None) -> SessionPage:
        return await asyncio.to_thread(self.sessions_page_blocking, limit, cursor)

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        return await asyncio.to_thread(self.entries_blocking, session_id)

    async def sweep(self, cutoff: datetime) -> int:
        return await asyncio.to_thread(self.sweep_blocking, cutoff)

    # -- blocking ------------------------------------------------------------------------
    def path(self, session_id: str) -> Path:
        return self.directory / file_name(session_id)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[int]:
        """An appendable fd of the session's current file, exclusively locked."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                break
            os.close(fd)  # the sweeper deleted it between our open and our lock: start afresh
        try:
            yield fd
        finally:
            os.close(fd)

    def append_blocking(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, seal: Sealer | None = None
    ) -> list[Admission]:
        results: list[Admission] = []
        path = self.path(session_id)
        with self._locked(path) as fd:
            size = before = os.fstat(fd).st_size
            lines: list[bytes] = []
            if size == 0:
                header = encode_line(session_header(session_id, entries[0]["time"]))
                lines.append(header)
                size = len(header)
                truncated, stored = False, 0
            else:
                # Once per append, as PostgreSQL reads its row. A session past its cap has its
                # marker: the entry written after it took the session past (a file that ends in
                # its marker was written before entries were stored after it).
                truncated, stored = _state(fd, size, count=seal is not None)
                truncated = truncated or size > limit
                if os.pread(fd, 1, size - 1) != b"\n":
                    lines.append(b"\n")  # a write torn by a crash: end that line, don't glue onto it
                    size += 1
            for entry in entries:
                position = stored + 1
                line = encode_line(seal(entry, position) if seal else entry)
                result = admit(size, truncated, len(line), limit)
                if result == "truncate":
                    # The marker first, then the entry: its call was released, so it is stored.
                    marker = truncation_marker(entry, limit, size)
                    marked = encode_line(seal(marker, position) if seal else marker)
                    lines.append(marked)
                    size += len(marked)
                    position += 1
                    line = encode_line(seal(entry, position) if seal else entry)
                    truncated = True
                lines.append(line)
                size += len(line)
                stored = position
                results.append(result)
            try:
                _write_all(fd, b"".join(lines))
            except OSError:
                # A disk that filled part-way: take back what was written, so that the retry
                # (the recorder keeps the entries) neither repeats lines nor leaves a torn one.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        return results

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.suffix == ".jsonl" and p.is_file())

    def sessions_blocking(self) -> list[SessionInfo]:
        found = []
        for path in self._files():
            with contextlib.suppress(OSError, ValueError, KeyError, RecursionError):
                found.append(_info(path))
        return sorted(found, key=lambda info: info.last, reverse=True)

    def sessions_page_blocking(self, limit: int, cursor: str | None = None) -> SessionPage:
        limit = page_size(limit)
        after = _position(cursor) if cursor else None
        # Newest first, by (modification time, file name): a stat per file, no file read.
        ordered = sorted(
            (position for position in self._positions() if after is None or position < after),
            reverse=True,
        )
        shown: list[SessionInfo] = []
        for index, (_, name) in enumerate(ordered):
            if len(shown) == limit:
                return SessionPage(shown, encode_cursor(*_cursor_parts(ordered[index - 1])))
            with contextlib.suppress(OSError, ValueError, KeyError, RecursionError):
                shown.append(_info(self.directory / name))  # gone or not a session: skipped
        return SessionPage(shown)

    def _positions(self) -> list[tuple[int, str]]:
        """(modification time in ns, file name) of each session file."""
        found = []
        try:
            listing = os.scandir(self.directory)
        except FileNotFoundError:
            return []
        with listing:
            for item in listing:
                try:
                    if item.name.endswith(".jsonl") and item.is_file():
                        found.append((item.stat().st_mtime_ns, item.name))
                except OSError:  # deleted by the sweeper since it was listed
                    continue
        return found

    def entries_blocking(self, session_id: str) -> list[dict[str, Any]] | None:
        try:
            data = self.path(session_id).read_bytes()
        except FileNotFoundError:
            return None
        entries = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = {"kind": "damaged", "line": number}  # a write torn by a crash, or edited
            if not isinstance(entry, dict):  # valid JSON no writer of ours wrote: edited
                entry = {"kind": "damaged", "line": number, "note": "not an entry (edited?)"}
            if entry.get("kind") != "session":
                entries.append(entry)
        return entries

    def sweep_blocking(self, cutoff: datetime) -> int:
        removed = 0
        for path in self._files():
            try:
                if parse_time(_last_time(path)) >= cutoff:
                    continue
                fd = os.open(path, os.O_RDONLY)
            except (OSError, ValueError, KeyError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Re-check under the lock: a call may have been appended since.
                if os.fstat(fd).st_nlink > 0 and parse_time(_last_time(path)) < cutoff:
                    path.unlink()
                    removed += 1
            except (OSError, ValueError, KeyError):
                pass
            finally:
                os.close(fd)
        return removed


def _cursor_parts(position: tuple[int, str]) -> tuple[str, str]:
    return str(position[0]), position[1]


def _position(cursor: str) -> tuple[int, str]:
    order, name = decode_cursor(cursor)
    if not (order.isascii() and order.isdigit()) or len(order) > 20:
        raise bad_cursor()
    return int(order), name  # only compared with the listing's positions, never opened


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tail_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        lines = handle.read().splitlines()
    return lines[-1] if lines else b""


def _object(line: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


# The end of a sealed entry's line (``encode_line`` sorts keys): ``"seq"`` comes after the
# ciphertext, followed only by the session id and the time.
_SEQ_AT_END = re.compile(rb'"seq":(\d+),"session_id":"(?:[^"\\]|\\.)*","time":"[^"\\]*"}\n\Z')


def _state(fd: int, size: int, *, count: bool) -> tuple[bool, int]:
    """Whether the session ends in its truncation marker (written before entries were stored
    after it), and (when ``count``: entries are being sealed at their position) how many
    entries it stores, the marker included.

    The last line tells both (a sealed entry's ``seq`` is its position), read from the file's
    last ``STATE_BYTES``: the header and a marker are shorter (a session id has at most 128
    characters), so a longer line is a call, whose ``seq`` is near its end. A torn last line,
    or, when counting, an entry without a ``seq`` (recorded in clear, or sealed before entries
    were numbered) means reading every line."""
    start = max(0, size - STATE_BYTES)
    tail = os.pread(fd, size - start, start)
    if tail.endswith(b"\n"):
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0 or start == 0:
            last = _object(tail[cut + 1 :]) or {}
            kind, seq = last.get("kind"), last.get("seq")
            if kind == "session":
                return False, 0
            marked = kind == "truncated"
            if kind is not None and not count:
                return marked, 0
            if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
                return marked, seq
        elif not count:
            return False, 0
        elif found := _SEQ_AT_END.search(tail):
            return False, int(found.group(1))
    with os.fdopen(os.dup(fd), "rb") as handle:  # the fd appends: its read offset is free
        handle.seek(0)
        handle.readline()  # the header
        markers, stored = _count(handle)
    return markers > 0, stored


# ``encode_line`` sorts keys, and ``kind`` is the first key of a marker, sealed or not.
_MARKER_START = b'{"kind":"truncated"'


def _count(lines: Iterable[bytes]) -> tuple[int, int]:
    """(truncation markers, stored entries) among ``lines``, the lines after the header."""
    markers = stored = 0
    for line in lines:
        if line.strip():
            stored += 1
            markers += line.startswith(_MARKER_START)
    return markers, stored


def _last_time(path: Path) -> str:
    """Time of the session's latest entry (the file's mtime if that line was torn by a crash)."""
    try:
        last = json.loads(_tail_line(path))
        return str(last.get("time") or last["started"])
    except (ValueError, KeyError, AttributeError, RecursionError):
        return format_time(datetime.fromtimestamp(path.stat().st_mtime, UTC))


def _info(path: Path) -> SessionInfo:
    """A session's summary; calls are the stored entries but the marker (or markers: a file
    written past its marker before the store checked for it on every append)."""
    with open(path, "rb") as handle:
        header = _object(handle.readline())
        if header is None or not isinstance(header.get("session_id"), str):
            raise ValueError(f"{path.name} does not start with a session header")
        markers, stored = _count(handle)
    return SessionInfo(
        session_id=header["session_id"],
        started=str(header["started"]),
        last=_last_time(path),
        calls=stored - markers,
        bytes=path.stat().st_size,
        truncated=markers > 0,
    )
