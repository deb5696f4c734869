"""Frames between the gateway and the audit writer: a 4-byte big-endian length, then JSON.

Requests ``{"id": n, "op": "append", "event": {...}}`` or ``{"id": n, "op": "stats"}``;
``id`` is the client's per-connection request counter and comes back in the reply, so many
appends can be in flight on one connection and be answered in any order. Replies
``{"id", "ok": true, "seq", "hash"}`` (sent only once the record is durable),
``{"id", "ok": true, "stats": {...}}`` or ``{"id", "ok": false, "reason", "message"}``.
A frame that cannot be parsed ends the connection: after a framing error nothing that
follows can be trusted to start at a frame boundary.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">I")
# Events are a few hundred bytes; the cap keeps a broken or hostile peer from making the
# writer allocate without bound.
MAX_FRAME = 256 * 1024
# What one receive may fill. A reused buffer, not asyncio's default of a fresh 256 KiB
# allocation (an mmap and munmap) for every read.
READ_CHUNK = 64 * 1024
# One encoder for every frame: ``json.dumps`` with options builds a new one each call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class FrameError(Exception):
    """The peer sent something that is not a frame."""


def encode(message: dict[str, Any]) -> bytes:
    """Raises ``ValueError`` (or ``TypeError``) for anything that is not plain, finite JSON."""
    body = _ENCODER.encode(message).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes is larger than {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes | bytearray) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FrameError(f"frame is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


class FrameProtocol(asyncio.BufferedProtocol):
    """Receives into one reusable buffer and hands each whole message to ``message_received``.

    Every message that one receive completes is handled in that same callback: no task,
    no coroutine per frame. A broken frame calls ``frame_error`` and reads nothing more.
    """

    def __init__(self) -> None:
        self._buffer = bytearray(READ_CHUNK)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes received
        self._broken = False

    def message_received(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def frame_error(self, error: FrameError) -> None:
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        # Only here may the buffer move: asyncio still holds the view it filled while it
        # calls buffer_updated.
        buffer, start, end = self._buffer, self._start, self._end
        if start:
            pending = end - start
            buffer[:pending] = buffer[start:end]
            self._start = 0
            self._end = end = pending
        needed = self._frame_end() - self._start
        if end == len(buffer) or needed > len(buffer):
            grown = bytearray(max(needed, len(buffer) + READ_CHUNK, READ_CHUNK))
            grown[:end] = buffer[:end]
            self._buffer = buffer = grown
        return memoryview(buffer)[end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        buffer = self._buffer
        while not self._broken and self._end - self._start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, self._start)
            if length > MAX_FRAME:
                self._fail(FrameError(f"frame of {length} bytes is larger than {MAX_FRAME}"))
                return
            stop = self._start + HEADER.size + length
            if stop > self._end:
                return
            body = buffer[self._start + HEADER.size : stop]
            self._start = stop
            try:
                message = decode(body)
            except FrameError as error:
                self._fail(error)
                return
            self.message_received(message)
        if self._start == self._end:
            self._start = self._end = 0

    def eof_received(self) -> bool:
        if self._end > self._start:
            self._fail(FrameError("connection closed inside a frame"))
        return False  # close the transport

    def _frame_end(self) -> int:
        """Where the frame being received ends (or its header, before that is complete)."""
        if self._end - self._start < HEADER.size:
            return self._start + HEADER.size
        length: int = HEADER.unpack_from(self._buffer, self._start)[0]
        return self._start + HEADER.size + min(length, MAX_FRAME)

    def _fail(self, error: FrameError) -> None:
        # After a framing error nothing that follows can be trusted to start at a boundary.
        self._broken = True
        self._start = self._end = 0
        self.frame_error(error)
