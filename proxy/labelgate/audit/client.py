"""The gateway's side: ``await AuditClient(path).append(event)`` returns once the record is durable.

One Unix-socket connection per client, opened on first use and reopened after it breaks.
Concurrent appends share it: each request carries an id and the connection's protocol
hands every reply to the future of the request waiting for it, so the writer can batch
them into one fsync. Per append: one encode, one future, no task, no timer of its own (the
connection's one timer serves every deadline); the frames queued in one turn of the event
loop leave in one write.

Commit delay (PostgreSQL's ``commit_delay`` and ``commit_siblings``): when at least
``commit_siblings`` other calls are in flight, an append may wait up to ``commit_delay``
seconds for theirs, so that one write, one fsync and one read of the acknowledgements serve
them all. Under load calls finish one at a time, each record otherwise alone in its fsync.
The wait ends as soon as every call in flight has its record queued or sent (nothing more
is coming), and a lone call never waits. While records wait the event loop serves the other
calls, so a saturated gateway loses no throughput to it; one that is not saturated does (a
waiting record is a caller waiting), which is why the gateway leaves it off unless configured
(``audit.commit_delay_ms``; docs/OPERATING.md has the measurements).

Every failure to get a durable acknowledgement (no writer, connection lost, no answer
within ``timeout``, writer unable to write) raises ``AuditUnavailable`` with reason
``AUDIT_UNAVAILABLE``; the gateway then fails closed. An append is never re-sent after a
connection breaks: its record may already be durable, and a duplicate is worse than a
denied call. Each append carries its deadline as wall-clock time (``not_after``, ns): a
writer that reads it later (it was stopped, or its socket's backlog was long) refuses it
unwritten (``AUDIT_EXPIRED``), so a call the gateway denied for want of an acknowledgement
is not left in the log as released. What is left is an append the writer read in time but
acknowledged late (a slow fsync); the gateway then records the refusal after it
(``Pipeline.recording``), so the call's last record says what the caller got. That record is
appended ``after_unacknowledged``: without a deadline for the writer (written whenever the
writer gets to it, it is still true, and the writer keeps the order it reads in, so it lands
after the release), and waited for up to ``follow_up_timeout``. An event the writer refuses
raises ``AuditRejected`` with the writer's reason.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from labelgate.audit import reasons
from labelgate.audit.protocol import FrameError, FrameProtocol, decode, encode
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


# The writer's acknowledgement of an append, byte for byte as it writes them (JSON numbers
# have no leading zeros; the length limit keeps the ints small). Anything else is parsed as
# JSON: a match here gives exactly what ``json.loads`` would.
_ACKNOWLEDGEMENT = re.compile(
    rb'\{"id":([1-9][0-9]{0,17}),"ok":true,"seq":([1-9][0-9]{0,17}),"hash":"([0-9a-f]{64})"\}'
)
# asyncio runs a timer once its time is less than the clock plus this: deadlines are kept alike.
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
# How long a refusal's record that follows an unacknowledged one is waited for, at least: it
# waits behind the slow fsync that left the release unacknowledged (docs/RELIABILITY.md).
FOLLOW_UP_SECONDS = 30.0


def _decode_reply(body: bytes | bytearray) -> dict[str, Any]:
    match = _ACKNOWLEDGEMENT.fullmatch(body)
    if match is None:
        return decode(body)
    request_id, seq, digest = match.groups()
    return {"id": int(request_id), "ok": True, "seq": int(seq), "hash": digest.decode("ascii")}


class _Connection(FrameProtocol):
    """The client's end: each reply resolves the future of the request with its id.

    Replies are matched in the protocol's callback, so a reply costs no task wake-up of
    its own; only the caller awaiting that future resumes. Deadlines wait in a queue in the
    order they fall, served by one timer set for the earliest one still waiting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self._writable: asyncio.Future[None] | None = None  # set while the kernel buffer is full
        self._outbox: list[bytes] = []
        self._flush_due = False  # a flush is scheduled for this turn of the loop
        self._held: asyncio.TimerHandle | None = None  # the flush of frames waiting for company
        self._deadlines: deque[tuple[float, int, float]] = deque()  # (when, request id, timeout)
        self._timer: asyncio.TimerHandle | None = None
        self._decode = _decode_reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def message_received(self, message: dict[str, Any]) -> None:
        future = self.waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    def frame_error(self, error: FrameError) -> None:
        self.close(f"connection to the audit writer broke: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.close("the audit writer closed the connection")
        else:
            self.close(f"connection to the audit writer broke: {exc}")

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def send(self, frame: bytes, loop: asyncio.AbstractEventLoop, hold: float = 0.0, group: int = 0) -> None:
        """Queue a frame; every frame queued in one turn of the event loop goes in one write.

        ``hold`` > 0: the frame may wait up to that long for others, unless ``group`` requests
        are unanswered by then, queued or sent (see the module's docstring)."""
        outbox = self._outbox
        outbox.append(frame)
        if self._flush_due:
            return
        # Sent requests still waiting for their fsync count too: their calls have nothing more
        # to add, so once every call in flight has one queued or sent, waiting gains nothing.
        if hold > 0 and len(self.waiting) < group:
            if self._held is None:
                self._held = loop.call_later(hold, self._flush)
            return
        self._flush_due = True
        loop.call_soon(self._flush)

    def expire_at(self, when: float, request_id: int, timeout: float) -> bool:
        """Fail request ``request_id`` at ``when`` unless answered; False if ``when`` is out of order
        (earlier than a deadline already queued: the caller then sets a timer of its own)."""
        deadlines, waiting = self._deadlines, self.waiting
        while deadlines and deadlines[0][1] not in waiting:  # answered: its deadline is moot
            deadlines.popleft()
        if deadlines and when < deadlines[-1][0]:
            return False
        deadlines.append((when, request_id, timeout))
        if self._timer is None:
            self._timer = self.loop.call_at(when, self._expire_due)
        return True

    def _expire_due(self) -> None:
        self._timer = None
        deadlines, waiting = self._deadlines, self.waiting
        due = self.loop.time() + _CLOCK_RESOLUTION
        while deadlines:
            when, request_id, timeout = deadlines[0]
            future = waiting.get(request_id)
            if future is not None:
                if when >= due:
                    self._timer = self.loop.call_at(when, self._expire_due)
                    return
                _expire(future, timeout)
            deadlines.popleft()

    def _flush(self) -> None:
        self._flush_due = False
        if self._held is not None:
            self._held.cancel()
            self._held = None
        frames, self._outbox = self._outbox, []
        if not frames:
            return
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.write(b"".join(frames))  # else close() has failed their requests

    @property
    def paused(self) -> bool:
        return self._writable is not None

    async def writable(self) -> None:
        """Return once the writer takes more bytes (a writer that stopped reading: wait)."""
        while (writable := self._writable) is not None and not self.closed:
            await asyncio.shield(writable)

    def close(self, why: str) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._deadlines.clear()
        if self.transport is not None:
            self.transport.close()
        self.resume_writing()
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(AuditUnavailable(why))


def _expire(future: asyncio.Future[dict[str, Any]], timeout: float) -> None:
    if not future.done():
        future.set_exception(AuditUnavailable(f"no durable acknowledgement within {timeout}s"))


class AuditClient:
    """``commit_delay`` (seconds; 0: off), ``commit_siblings`` and ``in_flight`` (how many
    calls are in flight, this one included) set the commit delay of the module's docstring."""

    def __init__(
        self,
        socket_path: Path | str,
        timeout: float = 2.0,
        *,
        commit_delay: float = 0.0,
        commit_siblings: int = 2,
        in_flight: Callable[[], int] | None = None,
        follow_up_timeout: float | None = None,
    ) -> None:
        if not 0 <= commit_delay <= timeout / 2:
            raise ValueError("commit_delay must be at least 0 and at most half the timeout")
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self.follow_up_timeout = max(
            timeout, FOLLOW_UP_SECONDS if follow_up_timeout is None else follow_up_timeout
        )
        self.commit_delay = commit_delay if in_flight is not None else 0.0
        self.commit_siblings = commit_siblings
        self._in_flight = in_flight
        self._connection: _Connection | None = None
        self._closed = False  # by close(): no new connection after it
        self._connect_lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def append(self, event: dict[str, Any], *, after_unacknowledged: bool = False) -> AuditReceipt:
        """Return only when the event is durable in the log; raise ``AuditUnavailable`` otherwise.

        ``after_unacknowledged``: the record of a call refused because its own record went
        unacknowledged (see the module's docstring): no deadline for the writer, and waited
        for up to ``follow_up_timeout``."""
        if after_unacknowledged:
            reply = await self._request("append", event, wait=self.follow_up_timeout, writer_deadline=False)
        else:
            reply = await self._request("append", event, self.commit_delay)
        return AuditReceipt(seq=int(reply["seq"]), hash=str(reply["hash"]))

    async def stats(self) -> dict[str, Any]:
        """The writer's counters (records, fsyncs, batches, seq, head, ...)."""
        stats: dict[str, Any] = (await self._request("stats", None))["stats"]
        return stats

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    async def close(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close("client closed")

    async def __aenter__(self) -> AuditClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _request(
        self,
        op: str,
        event: dict[str, Any] | None,
        delay: float = 0.0,
        *,
        wait: float | None = None,
        writer_deadline: bool = True,
    ) -> dict[str, Any]:
        """``wait``: how long until ``AuditUnavailable`` (the client's ``timeout`` unless given);
        ``writer_deadline``: the writer refuses the append unwritten if it reads it later."""
        timeout = self.timeout if wait is None else wait
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "op": op}
        if event is not None:
            message["event"] = event
            if writer_deadline:
                message["not_after"] = time.time_ns() + int(timeout * 1e9)
        try:
            frame = encode(message)
        except (TypeError, ValueError) as error:
            raise AuditRejected(reasons.AUDIT_EVENT_INVALID, f"event is not plain JSON: {error}") from None
        if self._closed:
            raise AuditUnavailable("the audit client is closed")
        loop = asyncio.get_running_loop()
        # One deadline for connecting, sending and the durable acknowledgement together.
        deadline = loop.time() + timeout
        connection = self._usable()
        try:
            if connection is None or connection.paused:
                async with asyncio.timeout_at(deadline):
                    connection = connection or await self._connect()
                    await connection.writable()
        except TimeoutError:
            raise AuditUnavailable(f"no durable acknowledgement within {timeout}s") from None
        if connection.closed:  # broke between connecting and now: nothing would answer
            raise AuditUnavailable("connection to the audit writer broke")
        assert connection.transport is not None
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        connection.waiting[request_id] = future
        timer = None
        # A longer deadline gets a timer of its own: queued, it would be out of order with the
        # shorter ones after it, and they would each need one.
        shared = loop is connection.loop and timeout == self.timeout
        if not shared or not connection.expire_at(deadline, request_id, timeout):
            timer = loop.call_at(deadline, _expire, future, timeout)
        try:
            connection.send(frame, loop, *self._holding(delay))
            reply = await future
        finally:
            if timer is not None:
                timer.cancel()
            connection.waiting.pop(request_id, None)
        if not reply.get("ok"):
            reason, text = str(reply.get("reason", "AUDIT_PROTOCOL")), str(reply.get("message", ""))
            if reason in ("AUDIT_UNAVAILABLE", "AUDIT_WRITE_FAILED", reasons.AUDIT_EXPIRED):
                raise AuditUnavailable(f"{text} ({reason})")
            raise AuditRejected(reason, text)
        return reply

    def _holding(self, delay: float) -> tuple[float, int]:
        """(how long this frame may wait for others, how many calls could join it)."""
        if delay <= 0 or self._in_flight is None:
            return 0.0, 0
        calls = self._in_flight()
        # This call and at least commit_siblings others.
        return (delay, calls) if calls > self.commit_siblings else (0.0, 0)

    def _usable(self) -> _Connection | None:
        connection = self._connection
        if connection is None or connection.closed or connection.transport is None:
            return None
        if connection.transport.is_closing():
            return None
        return connection

    async def _connect(self) -> _Connection:
        if (connection := self._usable()) is not None:
            return connection
        async with self._connect_lock:
            if (connection := self._usable()) is not None:
                return connection
            try:
                _, connection = await asyncio.get_running_loop().create_unix_connection(
                    _Connection, self.socket_path
                )
            except OSError as error:
                raise AuditUnavailable(
                    f"cannot reach the audit writer at {self.socket_path}: {error.strerror or error}"
                ) from None
            self._connection = connection
            return connection
