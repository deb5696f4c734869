"""The admin listener: uvicorn on a thread and event loop of its own.

Nothing the admin web app does (parsing a request, rendering a page, waiting on a slow
client, computing metrics) runs on the gateway's event loop, so none of it can delay an
inference call there. What the app needs from the gateway's loop it asks for through
``bridge.LoopBridge`` (thread-safe).

Bounds before the app (``AdminHttp``, uvicorn's h11 protocol: its httptools one caps neither
the size nor the time of a request head): a head larger than ``MAX_HEAD_BYTES`` is refused
(431), one not complete ``HEAD_TIMEOUT_SECONDS`` after connecting or after its first byte too
(408); then the body guard (``guards.py``). At most ``admin.max_connections`` are open. The
health probes are served here and a pod is restarted when they fail, so a full listener does
not turn a new connection away while one of its connections is only waiting for a request head
(idle, or sending one slowly): it closes the one that has waited longest (408). Connections
that never finish a head cannot hold every slot, and a probe, which sends its head at once,
gets in. Only when every connection has a request under way is a new one refused (503).
Input that is not HTTP/1.1 (h11 refuses it: a garbled request line, a byte past ASCII in the
path) is refused 400 like the rest, not with uvicorn's plain text. Refusals are problem
documents with ``connection: close``, logged at most once per interval per kind.

The socket is bound here, not by uvicorn, so gateway workers can share the port
(SO_REUSEPORT); with ``admin.tls`` it speaks HTTPS (uvicorn wraps the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from labelgate.approvals.api import PROBLEM_TYPE
from labelgate.config import check_tls_pair
from labelgate.logs import get_logger

log = get_logger(__name__)
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
# A request line and headers larger than this are refused (431): cookies and a token fit.
MAX_HEAD_BYTES = 16 * 1024
# h11 checks its limit only while a head is incomplete: fed to it in pieces this large, a head
# that arrives whole is checked too (and so is at most MAX_HEAD_BYTES + HEAD_PIECE_BYTES).
HEAD_PIECE_BYTES = 4 * 1024
# A request head must be complete this long after connecting (or after its first byte): else 408.
HEAD_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
# A refused connection stays open, discarding input, until its client has sent nothing for
# LINGER_SECONDS (at most LINGER_MAX_SECONDS in all), so its answer is read, not reset: closing
# on unread input resets the connection, and the client's kernel drops the answer it holds.
# A fixed second was not enough for a client still sending a 10 MB body on a loaded machine.
LINGER_SECONDS = 1.0
LINGER_MAX_SECONDS = 10.0
# Refusals are logged at most once per this many seconds per kind, with the count in between.
LOG_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class ListenerRefusal:
    status: int
    title: str
    reason: str
    detail: str

    def response(self) -> bytes:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": self.title,
                "status": self.status,
                "detail": self.detail,
                "reason": self.reason,
            },
            separators=(",", ":"),
        ).encode()
        return b"".join(
            [
                f"HTTP/1.1 {self.status} {self.title.title()}\r\n".encode(),
                f"content-type: {PROBLEM_TYPE}\r\n".encode(),
                f"content-length: {len(body)}\r\n".encode(),
                b"connection: close\r\n\r\n",
                body,
            ]
        )


HEAD_TOO_LARGE = ListenerRefusal(
    431,
    "request header fields too large",
    "HEADERS_TOO_LARGE",
    f"a request's line and headers are limited to {MAX_HEAD_BYTES // 1024} KiB",
)
HEAD_TIMEOUT = ListenerRefusal(
    408, "request timeout", "REQUEST_TIMEOUT", "the request's head was not complete in time"
)
MADE_ROOM = ListenerRefusal(
    408,
    "request timeout",
    "REQUEST_TIMEOUT",
    "the listener is full and this connection had waited longest for a request head",
)
TOO_MANY_CONNECTIONS = ListenerRefusal(
    503,
    "service unavailable",
    "TOO_MANY_CONNECTIONS",
    "every connection the listener keeps (admin.max_connections) has a request under way",
)
NOT_HTTP = ListenerRefusal(400, "bad request", "REQUEST_INVALID", "the request is not valid HTTP/1.1")
# Numbers the starts of waits for a request head, so the longest wait is the smallest number.
_WAITS = itertools.count()
_last_logged: dict[str, float] = {}
_suppressed: dict[str, int] = {}


def _log_refusal(refusal: ListenerRefusal) -> None:
    """At most one line per interval per kind: refusals are what an attacker can repeat."""
    key = refusal.detail
    now = time.monotonic()
    if now - _last_logged.get(key, -LOG_INTERVAL_SECONDS) < LOG_INTERVAL_SECONDS:
        _suppressed[key] = _suppressed.get(key, 0) + 1
        return
    _last_logged[key] = now
    log.warning(
        "admin request refused",
        reason=refusal.reason,
        status=refusal.status,
        detail=refusal.detail,
        suppressed=_suppressed.pop(key, 0),
    )


class AdminHttp(H11Protocol):
    """uvicorn's h11 protocol with a head deadline, 431 for a head over the size h11 is given
    (``h11_max_incomplete_event_size``), and the connection cap described above (its limits
    set by ``_protocol``)."""

    max_connections: ClassVar[int] = 64
    head_timeout_seconds: ClassVar[float] = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._waiting_since = 0  # when it last began to wait for a request head (``_WAITS``)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._linger_ends = 0.0  # the loop time by which a lingering connection is closed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = next(_WAITS)
        if len(self.connections) > self.max_connections and not self._make_room():
            # Nothing read yet: answer and close at once, so refused connections never pile up.
            self._refused = True
            self.connections.discard(self)
            transport.write(TOO_MANY_CONNECTIONS.response())
            transport.close()
            _log_refusal(TOO_MANY_CONNECTIONS)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._keep_lingering()  # input is discarded
            return
        if self._waits_for_head() and self._head_timer is None:
            self._arm_head_timer()  # a head begins after an idle keep-alive wait
        while data and not self.transport.is_closing():
            if self._waits_for_head():
                piece, data = data[:HEAD_PIECE_BYTES], data[HEAD_PIECE_BYTES:]
            else:  # a body, or requests queued behind one
                piece, data = data, b""
                if self._queued_too_much(piece):
                    self._refuse(HEAD_TOO_LARGE)
                    return
            super().data_received(piece)
            if self._refused:
                return
        if not self._waits_for_head():
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = next(_WAITS)
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # Answered without the whole body read (a probe, a page): the connection serves
            # nothing more until the client ends a body it may never end, with no head timer
            # on it and not evictable, so it held a slot for good (review). It is closed.
            self._refused = True
            self._close_after_answer()

    def _queued_too_much(self, piece: bytes) -> bool:
        """Requests sent behind the one under way wait in h11's buffer, which parses a head
        that arrived whole without its size limit: what waits there is held to a head's."""
        if self.conn.their_state is not h11.DONE:
            return False  # a body under way: h11 reads it as it comes
        return len(self.conn.trailing_data[0]) + len(piece) > MAX_HEAD_BYTES

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its ``except h11.RemoteProtocolError``: h11 hints 431 when the
        # head outgrew the limit; uvicorn would answer 400 to it, in plain text.
        error = sys.exc_info()[1]
        if isinstance(error, h11.RemoteProtocolError) and error.error_status_hint == 431:
            self._refuse(HEAD_TOO_LARGE)
        elif self.cycle is not None and not self.cycle.response_complete:
            # A request's body that stops parsing: an answer now could cut into its response.
            self._refused = True
            self._disarm_head_timer()
            _log_refusal(NOT_HTTP)
            self.transport.close()
        else:
            self._refuse(NOT_HTTP)

    def _waits_for_head(self) -> bool:
        """Refused already (lingering), or between requests or inside a head: no request of
        its own under way."""
        if self._refused:
            return True
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_expired)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._waits_for_head() and not self._refused:
            self._refuse(HEAD_TIMEOUT)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head, a refused one
        first; False when every other connection has a request under way."""
        waiting = [
            other
            for other in self.connections
            if other is not self and isinstance(other, AdminHttp) and other._waits_for_head()
        ]
        if not waiting:
            return False
        victim = min(waiting, key=lambda other: (not other._refused, other._waiting_since))
        self.connections.discard(victim)  # its slot is free now, not once its close completes
        if not victim._refused:
            victim._refused = True
            victim._disarm_head_timer()
            if not victim.transport.is_closing():
                victim.transport.write(MADE_ROOM.response())
            _log_refusal(MADE_ROOM)
        victim.transport.close()
        return True

    def _refuse(self, refusal: ListenerRefusal) -> None:
        """Answer ``refusal`` (no response is under way when a head is refused), then linger a
        moment discarding input before closing: closing on unread input would reset the
        connection, and the client could lose the answer."""
        self._refused = True
        self._disarm_head_timer()
        self._unset_keepalive_if_required()
        _log_refusal(refusal)
        if self.transport.is_closing():
            return
        self.transport.write(refusal.response())
        self._close_after_answer()

    def _close_after_answer(self) -> None:
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self._linger_ends = self.loop.time() + LINGER_MAX_SECONDS
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _keep_lingering(self) -> None:
        """Input while lingering: the client is still sending, so the close waits until it
        has been quiet for ``LINGER_SECONDS``, never past ``LINGER_MAX_SECONDS``."""
        if self._linger is None or self.transport.is_closing():
            return
        self._linger.cancel()
        delay = min(LINGER_SECONDS, max(0.0, self._linger_ends - self.loop.time()))
        self._linger = self.loop.call_later(delay, self.transport.close)


def _protocol(max_connections: int, head_timeout_seconds: float) -> type[AdminHttp]:
    """``AdminHttp`` with these limits (uvicorn instantiates the class itself)."""
    limits = {"max_connections": max_connections, "head_timeout_seconds": head_timeout_seconds}
    return type("AdminHttpFor", (AdminHttp,), limits)


class _ThreadServer(uvicorn.Server):
    """uvicorn on a thread that is not the main one: the host process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class AdminListener:
    """``start()`` binds and serves ``app`` on its own thread; ``cleanup()`` stops it."""

    def __init__(
        self,
        app: Any,
        listen: str,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        max_connections: int = 64,
        head_timeout_seconds: float = HEAD_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.listen = listen
        self.tls = cert_file is not None and key_file is not None
        if cert_file is not None and key_file is not None:
            check_tls_pair(cert_file, key_file, "admin.tls")
        self._socket = bind(listen)
        self.port: int = self._socket.getsockname()[1]
        options: dict[str, Any] = {}
        if self.tls:
            options = {
                "ssl_certfile": str(cert_file),
                "ssl_keyfile": str(key_file),
            }
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            date_header=False,
            http=_protocol(max_connections, head_timeout_seconds),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            # ``AdminHttp`` keeps at most ``max_connections`` open, each with at most one request
            # running: this cap counts only requests still running after their client left.
            limit_concurrency=max_connections + 1,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            **options,
        )
        self._server = _ThreadServer(config)
        self._thread = threading.Thread(target=self._run, name="labelgate-admin", daemon=True)
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
            while not self._server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            if self._server.started:
                self._started.set()
            await task

        try:
            asyncio.run(serve())
        except BaseException as failure:
            self._failure = failure
            log.error("admin listener stopped", error_type=type(failure).__name__, error=str(failure))
        finally:
            # A listener that did not start says so only now, its failure recorded: start() must
            # not read "no failure" in between and report a time-out.
            self._started.set()

    async def start(self) -> AdminListener:
        """Start the thread; return once it serves (raising what stopped it, if anything did).
        A start that fails, times out or is cancelled stops the thread and closes the socket."""
        self._thread.start()
        try:
            await asyncio.to_thread(self._started.wait, START_TIMEOUT_SECONDS)
        except BaseException:  # cancelled: nothing may serve on after the caller gave up
            await self.cleanup()
            raise
        if self._failure is not None or not self._server.started:
            failure = self._failure
            await self.cleanup()
            raise RuntimeError(f"the admin listener did not start: {failure or 'timed out'}")
        return self

    async def cleanup(self) -> None:
        self._server.should_exit = True
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            self._server.force_exit = True
            await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_SECONDS)
        self._socket.close()
