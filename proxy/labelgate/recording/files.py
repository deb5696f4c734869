"""Session recordings as files: ``<dir>/<safe name>-<hash>.jsonl``, one per session.

The first line names the session (its id may be any text a client chose; the file name is
a safe slug plus a hash of it). Appends take an exclusive ``flock`` on the file, so
several gateway processes (``workers > 1``) can share a directory: the size check and the
write are one step, and the sweeper takes the same lock before it deletes a file (an
append that opened the file just before the delete sees ``st_nlink == 0`` and starts a new
one). Writes are not fsynced: the audit log is the system of record; recordings are
evidence for replay and a power cut may lose their last moments.

All methods block; the async wrappers run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
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
from labelgate.recording.store import SessionInfo

TAIL_BYTES = 64 * 1024


class FileSessionStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    async def open(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True, mode=0o750)

    async def close(self) -> None:
        return None

    async def append(self, session_id: str, entries: Sequence[dict[str, Any]], limit: int) -> list[Admission]:
        return await asyncio.to_thread(self.append_blocking, session_id, entries, limit)

    async def sessions(self) -> list[SessionInfo]:
        return await asyncio.to_thread(self.sessions_blocking)

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
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int
    ) -> list[Admission]:
        results: list[Admission] = []
        path = self.path(session_id)
        with self._locked(path) as fd:
            size = before = os.fstat(fd).st_size
            lines: list[bytes] = []
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                lines.append(b"\n")  # a write torn by a crash: end that line, don't glue onto it
            if size == 0:
                header = encode_line(session_header(session_id, entries[0]["time"]))
                lines.append(header)
                size = len(header)
            truncated = None  # looked up only when an entry would not fit
            for entry in entries:
                line = encode_line(entry)
                if truncated is None and size + len(line) > limit:
                    truncated = _ends_with_marker(path)
                result = admit(size, bool(truncated), len(line), limit)
                if result == "store":
                    lines.append(line)
                    size += len(line)
                elif result == "truncate":
                    lines.append(encode_line(truncation_marker(entry, limit, size)))
                    truncated = True
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
                entry = {"kind": "damaged", "line": number}  # a write torn by a crash
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


def _ends_with_marker(path: Path) -> bool:
    with contextlib.suppress(ValueError, AttributeError):
        return bool(json.loads(_tail_line(path)).get("kind") == "truncated")
    return False


def _last_time(path: Path) -> str:
    """Time of the session's latest entry (the file's mtime if that line was torn by a crash)."""
    try:
        last = json.loads(_tail_line(path))
        return str(last.get("time") or last["started"])
    except (ValueError, KeyError, AttributeError):
        return format_time(datetime.fromtimestamp(path.stat().st_mtime, UTC))


def _info(path: Path) -> SessionInfo:
    with open(path, "rb") as handle:
        header = json.loads(handle.readline())
        lines = 0
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    truncated = _ends_with_marker(path)
    return SessionInfo(
        session_id=header["session_id"],
        started=header["started"],
        last=_last_time(path),
        calls=lines - (1 if truncated else 0),
        bytes=path.stat().st_size,
        truncated=truncated,
    )
