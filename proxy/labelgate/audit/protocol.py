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


class FrameError(Exception):
    """The peer sent something that is not a frame."""


def encode(message: dict[str, Any]) -> bytes:
    """Raises ``ValueError`` (or ``TypeError``) for anything that is not plain, finite JSON."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes is larger than {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the connection between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise FrameError("connection closed inside a frame header") from None
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes is larger than {MAX_FRAME}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("connection closed inside a frame") from None
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FrameError(f"frame is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message
