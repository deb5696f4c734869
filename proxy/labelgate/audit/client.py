"""The gateway's side: ``await AuditClient(path).append(event)`` returns once the record is durable.

One Unix-socket connection per client, opened on first use and reopened after it breaks.
Concurrent appends share it: each request carries an id and a reader task hands every
reply to the request that is waiting for it, so the writer can batch them into one fsync.

Every failure to get a durable acknowledgement (no writer, connection lost, no answer
within ``timeout``, writer unable to write) raises ``AuditUnavailable`` with reason
``AUDIT_UNAVAILABLE``; the gateway then fails closed. An append is never re-sent after a
connection breaks: its record may already be durable, and a duplicate is worse than a
denied call. (A record can therefore exist for a call the gateway denied because the
acknowledgement came too late; an audit log may hold more than what was released, never
less.) An event the writer refuses raises ``AuditRejected`` with the writer's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from labelgate.audit import reasons
from labelgate.audit.protocol import FrameError, encode, read_frame
from labelgate.errors import LabelgateError


class AuditUnavailable(LabelgateError):
    """No durable acknowledgement: the call must be denied (fail closed)."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503

    def __init__(self, message: str) -> None:
        super().__init__("AUDIT_UNAVAILABLE", message)


class AuditRejected(LabelgateError):
    """The writer refused the event (e.g. ``AUDIT_EVENT_INVALID``): a gateway bug, deny the call."""

    code = grpc.StatusCode.INTERNAL
    http_status = 500


@dataclass(frozen=True)
class AuditReceipt:
    """Where the durable record sits in the chain."""

    seq: int
    hash: str


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "the audit writer closed the connection"
        try:
            while (message := await read_frame(reader)) is not None:
                future = self.waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
                if future is not None and not future.done():
                    future.set_result(message)
        except (FrameError, ConnectionError) as error:
            why = f"connection to the audit writer broke: {error}"
        finally:
            self.close(why)

    def close(self, why: str) -> None:
        self.closed = True
        self.writer.close()
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(AuditUnavailable(why))


class AuditClient:
    def __init__(self, socket_path: Path | str, timeout: float = 2.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def append(self, event: dict[str, Any]) -> AuditReceipt:
        """Return only when the event is durable in the log; raise ``AuditUnavailable`` otherwise."""
        reply = await self._request({"op": "append", "event": event})
        return AuditReceipt(seq=int(reply["seq"]), hash=str(reply["hash"]))

    async def stats(self) -> dict[str, Any]:
        """The writer's counters (records, fsyncs, batches, seq, head, ...)."""
        stats: dict[str, Any] = (await self._request({"op": "stats"}))["stats"]
        return stats

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close("client closed")
            connection.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection.task

    async def __aenter__(self) -> AuditClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        try:
            frame = encode({**message, "id": request_id})
        except (TypeError, ValueError) as error:
            raise AuditRejected(reasons.AUDIT_EVENT_INVALID, f"event is not plain JSON: {error}") from None
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._connect()
                if connection.closed:  # broke between connecting and now: nothing would answer
                    raise AuditUnavailable("connection to the audit writer broke")
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                connection.waiting[request_id] = future
                connection.writer.write(frame)
                await connection.writer.drain()
                reply = await future
        except TimeoutError:
            raise AuditUnavailable(f"no durable acknowledgement within {self.timeout}s") from None
        except ConnectionError as error:
            if connection is not None:
                connection.close(f"connection to the audit writer broke: {error}")
            raise AuditUnavailable(f"connection to the audit writer broke: {error}") from None
        finally:
            if connection is not None:
                connection.waiting.pop(request_id, None)
        if not reply.get("ok"):
            reason, text = str(reply.get("reason", "AUDIT_PROTOCOL")), str(reply.get("message", ""))
            if reason in ("AUDIT_UNAVAILABLE", "AUDIT_WRITE_FAILED"):
                raise AuditUnavailable(f"{text} ({reason})")
            raise AuditRejected(reason, text)
        return reply

    def _usable(self) -> _Connection | None:
        connection = self._connection
        if connection is None or connection.closed or connection.writer.is_closing():
            return None
        return connection

    async def _connect(self) -> _Connection:
        if (connection := self._usable()) is not None:
            return connection
        async with self._connect_lock:
            if (connection := self._usable()) is not None:
                return connection
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as error:
                raise AuditUnavailable(
                    f"cannot reach the audit writer at {self.socket_path}: {error.strerror or error}"
                ) from None
            self._connection = _Connection(reader, writer)
            return self._connection
