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
from collections.abc import Callable
from typing import Any

from labelgate.audit.records import JsonEncoder

HEADER = struct.Struct(">I")
# Events are a few hundred bytes; the cap keeps a broken or hostile peer from making the
# writer allocate without bound.
MAX_FRAME = 256 * 1024
# What one receive may fill. A reused buffer, not asyncio's default of a fresh 256 KiB
# allocation (an mmap and munmap) for every read.
READ_CHUNK = 64 * 1024
# One encoder for every frame: ``json.dumps`` with options builds a new one each call.
_ENCODER = JsonEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()  # what json.loads uses


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
        if body[:2] == b'{"':
            # What ``json.loads(body)`` does, without its guess at the encoding: a body that
            # starts like this is UTF-8 by that guess.
            message = _DECODER.decode(body.decode("utf-8", "surrogatepass"))
        else:
            message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FrameError(f"frame is not JSON: {error}") from None
    except ValueError:  # an integer past Python's digit limit (sys.get_int_max_str_digits)
        raise FrameError("frame is not JSON this side can read: a number of too many digits") from None
    except RecursionError:
        raise FrameError("frame is not JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


class FrameProtocol(asyncio.BufferedProtocol):
    """Receives into one reusable buffer and hands each whole message to ``message_received``.

    Every message that one receive completes is handled in that same callback: no task,
    no coroutine per frame; then ``read_done`` is called (also when handling one failed).
    A broken frame calls ``frame_error`` and reads nothing more.
    """

    def __init__(self) -> None:
        self._buffer = bytearray(READ_CHUNK)
        self._view = memoryview(self._buffer)  # of the whole buffer, made once per buffer
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes received
        self._broken = False
        # How a frame's body becomes a message: a subclass may put an exact shortcut first.
        self._decode: Callable[[bytearray], dict[str, Any]] = decode

    def message_received(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def frame_error(self, error: FrameError) -> None:
        raise NotImplementedError

    def read_done(self) -> None:
        """After each receive, once the messages it completed have been handled."""

    def get_buffer(self, sizehint: int) -> memoryview:
        # Only here may the buffer move: asyncio still holds the view it filled while it
        # calls buffer_updated.
        buffer, start, end = self._buffer, self._start, self._end
        if not end:  # everything received so far is parsed (the usual case)
            return self._view
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
            self._view = memoryview(grown)
        return self._view[end:]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._parse(nbytes)
        finally:
            self.read_done()

    def _parse(self, nbytes: int) -> None:
        self._end = end = self._end + nbytes
        buffer, start, size = self._buffer, self._start, HEADER.size
        while not self._broken and end - start >= size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                self._fail(FrameError(f"frame of {length} bytes is larger than {MAX_FRAME}"))
                return
            stop = start + size + length
            if stop > end:
                return
            body = buffer[start + size : stop]
            self._start = start = stop
            try:
                message = self._decode(body)
            except FrameError as error:
                self._fail(error)
                return
            self.message_received(message)
        if start == end:
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
