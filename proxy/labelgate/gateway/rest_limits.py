"""Bounds of the REST listener before a request reaches the app (``rest`` settings).

uvicorn's httptools protocol buffers a request's head without limit (llhttp has no cap and
httptools joins a header's pieces in memory), sets no deadline on a head or a body, and its
``limit_concurrency`` answers 503 only once a head is complete, so partial requests pile up
until the process has no file descriptors left (and gRPC with them). ``BoundedHttpTools``
keeps httptools' parser and uvicorn's request cycle and adds, per connection:

- a cap on the bytes of a request's head (request line and headers): 431;
- a deadline for a head (from connecting, or from its first byte) and for a body (from its
  head, or for a request pipelined behind another from its turn): 408; the app reading
  that body sees a disconnect;
- a cap on open connections, checked as each is accepted: 503 at once, before any byte is read;
- input that is not HTTP/1.1 (a request line that does not parse, a path that is not ASCII):
  400, where uvicorn would answer its own plain text.

Refusals are the binding's ``{"error", "reason"}`` JSON with ``connection: close``; the
connection then lingers briefly, discarding input, so the client can read the answer instead
of a reset. Refusals are logged at most once per interval per reason, with a count.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from labelgate.config import RestSettings
from labelgate.gateway import reasons
from labelgate.logs import get_logger
from labelgate.oip import reasons as oip_reasons

log = get_logger(__name__)

# How long a refused connection stays open, discarding input, so its answer is read, not reset.
LINGER_SECONDS = 1.0
# Refusals (and accept failures) are logged at most once per this many seconds per kind.
LOG_INTERVAL_SECONDS = 10.0
# The REST listener keeps at most this share of the process's open-file limit.
FD_SHARE = 0.5
# Pending connections shed per accept attempt when out of file descriptors.
SHED_BATCH = 1024
# The status line and separators of a head, beside its URL and header bytes.
_HEAD_OVERHEAD = 32


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    message: str

    def response(self) -> bytes:
        body = json.dumps({"error": self.message, "reason": self.reason}, separators=(",", ":")).encode()
        phrase = {
            400: "Bad Request",
            408: "Request Timeout",
            431: "Request Header Fields Too Large",
            503: "Service Unavailable",
        }
        return b"".join(
            [
                f"HTTP/1.1 {self.status} {phrase.get(self.status, '')}\r\n".encode(),
                b"content-type: application/json\r\n",
                f"content-length: {len(body)}\r\n".encode(),
                b"connection: close\r\n\r\n",
                body,
            ]
        )


HEAD_TOO_LARGE = Refusal(
    431, reasons.HEADERS_TOO_LARGE, "the request's head is larger than rest.max_header_bytes"
)
HEAD_TIMEOUT = Refusal(
    408, reasons.REQUEST_TIMEOUT, "the request's head was not complete within rest.head_timeout_seconds"
)
BODY_TIMEOUT = Refusal(
    408, reasons.REQUEST_TIMEOUT, "the request's body was not complete within rest.body_timeout_seconds"
)
TOO_MANY_CONNECTIONS = Refusal(
    503, reasons.TOO_MANY_CONNECTIONS, "the REST listener has rest.max_connections open"
)
NOT_HTTP = Refusal(400, oip_reasons.REST_REQUEST_INVALID, "the request is not valid HTTP/1.1")


@dataclass
class Throttle:
    """At most one log line per ``interval`` per key; the lines in between are counted."""

    interval: float = LOG_INTERVAL_SECONDS
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def admit(self, key: str) -> int | None:
        """None to stay quiet, else how many were suppressed since the last line."""
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


_REFUSALS = Throttle()


def _log_refusal(refusal: Refusal) -> None:
    suppressed = _REFUSALS.admit(refusal.message)
    if suppressed is not None:
        log.warning(
            "REST request refused", reason=refusal.reason, status=refusal.status, suppressed=suppressed
        )


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above (``settings`` set by ``protocol_for``)."""

    settings: ClassVar[RestSettings] = RestSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.settings.keep_alive_seconds  # type: ignore[assignment]
        self._refused = False
        self._awaiting_head = True  # between requests, or inside a head
        self._head_started = False  # a head's first byte has been parsed
        self._head_bytes = 0
        self._completed_in_chunk = False
        self._head_may_exceed = False  # this chunk could take the head past the cap
        # One deadline at a time, checked by one timer that is moved only when the deadline
        # comes earlier: arming and disarming per request costs no timer churn.
        self._deadline: float | None = None
        self._expired: Callable[[], None] = self._head_expired
        self._timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.settings.max_connections:
            # Nothing read yet: answer and close at once, so refused connections never pile up.
            self._refused = True
            transport.write(TOO_MANY_CONNECTIONS.response())
            transport.close()
            _log_refusal(TOO_MANY_CONNECTIONS)
            return
        self._arm(self.settings.head_timeout_seconds, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: input is discarded
        self._unset_keepalive_if_required()
        if self._awaiting_head and self._deadline is None:
            self._arm(self.settings.head_timeout_seconds, self._head_expired)
        head_open_before = self._awaiting_head and self._head_started
        self._completed_in_chunk = False
        # The exact size is summed at the head's end only when this chunk could exceed the cap.
        bound = (self._head_bytes if head_open_before else 0) + len(data)
        self._head_may_exceed = bound > self.settings.max_header_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._disarm()  # the connection is the WebSocket protocol's now
                self.handle_websocket_upgrade()
            elif _REFUSALS.admit("upgrade") is not None:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            # Also what a callback raises: uvicorn's UnicodeDecodeError for a path that is not
            # ASCII, or ``_Refused`` (a refusal already answered).
            if not self._refused:
                self._refuse(NOT_HTTP)
            return
        if self._awaiting_head and self._head_started:  # a head still incomplete
            if head_open_before:
                self._head_bytes += len(data)
            elif not self._completed_in_chunk:
                self._head_bytes = len(data)
            # else it began after another request in this chunk: counted from the next chunk on
            if self._head_bytes > self.settings.max_header_bytes:
                self._refuse(HEAD_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to input that does not parse is plain text; the binding's is JSON.
        self._refuse(NOT_HTTP)

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._disarm()
        self._awaiting_head = False
        self._head_started = False
        if self._head_may_exceed and self._head_size() > self.settings.max_header_bytes:
            self._refuse(HEAD_TOO_LARGE)
            raise _Refused
        super().on_headers_complete()
        if not self.pipeline:  # a queued request's body is not read until its turn
            self._arm(self.settings.body_timeout_seconds, self._body_expired)

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        # uvicorn has started the next queued request (unless it is closing). When that is the
        # last one parsed and its body is still coming, its deadline runs from its turn:
        # nothing else would end it (no head is open, and each byte resets the keep-alive).
        # An earlier queued request's body is complete: the parser is past it.
        cycle = self.cycle
        if queued and not self.pipeline and not self._refused and cycle is not None and cycle.more_body:
            self._arm(self.settings.body_timeout_seconds, self._body_expired)

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_head = True
        self._completed_in_chunk = True
        super().on_message_complete()

    def _head_size(self) -> int:
        """The head's size as parsed (whatever chunks it came in): its URL and headers."""
        return (
            _HEAD_OVERHEAD + len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        )

    # -- deadlines and refusals --------------------------------------------------------
    def _arm(self, seconds: float, expired: Callable[[], None]) -> None:
        self._deadline = self.loop.time() + seconds
        self._expired = expired
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)

    def _disarm(self) -> None:
        self._deadline = None  # the timer, if any, finds nothing to do

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:  # moved later since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)
            return
        self._deadline = None
        self._expired()

    def _head_expired(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits while the request before it is answered: it gets more time.
            self._arm(self.settings.head_timeout_seconds, self._head_expired)
            return
        self._refuse(HEAD_TIMEOUT)

    def _body_expired(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The app waiting for the body sees a disconnect; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(BODY_TIMEOUT, answer=True)
        else:
            self._refuse(BODY_TIMEOUT)

    def _refuse(self, refusal: Refusal, answer: bool = False) -> None:
        """Answer ``refusal`` if no other response is under way on this connection (else
        just close), then linger a moment discarding input before closing."""
        self._refused = True
        self._disarm()
        _log_refusal(refusal)
        transport = self.transport
        if transport.is_closing():
            return
        if not (answer or self.cycle is None or self.cycle.response_complete):
            transport.close()  # a response is being written: a second one would corrupt it
            return
        transport.write(refusal.response())
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused connection's input."""


def protocol_for(settings: RestSettings) -> type[BoundedHttpTools]:
    """A ``BoundedHttpTools`` bound to ``settings`` (uvicorn instantiates the class itself),
    its connection cap held under the process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = max(1, int(soft * FD_SHARE)) if soft != resource.RLIM_INFINITY else settings.max_connections
    if settings.max_connections > ceiling:
        log.warning(
            "rest.max_connections lowered to half the open-file limit",
            configured=settings.max_connections,
            open_file_limit=soft,
            used=ceiling,
        )
        settings = settings.model_copy(update={"max_connections": ceiling})
    return type("BoundedHttpToolsFor", (BoundedHttpTools,), {"settings": settings})


class SheddingSocket(socket.socket):
    """A listening socket that, out of file descriptors, sheds its pending connections.

    asyncio's accept loop, on ``EMFILE``, logs and schedules a retry for each of up to
    ``backlog`` attempts per loop turn, and every retry re-arms it: log lines and timers grow
    until the loop does little else (CPython 3.11; the reviewer saw 2.4 million lines in 45
    s). Here the one descriptor kept in reserve is freed, each pending connection accepted
    and closed at once (its client sees the connection end, not a hang), and the reserve
    taken again; asyncio sees an empty queue. Only without a reserve does asyncio's own path
    run (its log throttled by ``AcceptErrorThrottle``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reserve = _take_reserve()

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return super().accept()
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE) or self._reserve < 0:
                raise
        os.close(self._reserve)
        shed = 0
        try:
            while shed < SHED_BATCH:
                try:
                    conn, _ = super().accept()
                except OSError:  # the queue is empty (or another thread took the descriptor)
                    break
                conn.close()
                shed += 1
        finally:
            self._reserve = _take_reserve()
        suppressed = _REFUSALS.admit("shed")
        if suppressed is not None:
            log.error("REST connections shed: out of file descriptors", shed=shed, suppressed=suppressed)
        raise BlockingIOError(errno.EAGAIN, "pending connections shed")

    def close(self) -> None:
        if self._reserve >= 0:
            os.close(self._reserve)
            self._reserve = -1
        super().close()


def _take_reserve() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


async def listening_sockets(host: str, port: int) -> list[SheddingSocket]:
    """``host:port`` bound as asyncio's ``create_server`` binds it (every address the host
    resolves to, ``SO_REUSEADDR``, IPv6-only), as ``SheddingSocket``s, not yet listening."""
    loop = asyncio.get_running_loop()
    probe = await loop.create_server(asyncio.Protocol, host=host or None, port=port, start_serving=False)
    try:
        return [SheddingSocket(fileno=os.dup(sock.fileno())) for sock in probe.sockets]
    finally:
        probe.close()


class AcceptErrorThrottle(logging.Filter):
    """asyncio logs every failed ``accept()`` when the process is out of file descriptors, up
    to ``backlog`` lines per loop turn (2.4 million lines in 45 s were seen): at most one such
    line per interval passes, with the count of those dropped."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        suppressed = self.throttle.admit(self.MESSAGE)
        if suppressed is None:
            return False
        record.msg = f"{record.msg} ({suppressed} more since the last such line)"
        return True


def throttle_accept_errors() -> None:
    """Install ``AcceptErrorThrottle`` on asyncio's logger, once per process."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(existing, AcceptErrorThrottle) for existing in logger.filters):
        logger.addFilter(AcceptErrorThrottle())
