"""The admin listener: uvicorn on a thread and event loop of its own.

Nothing the admin web app does (parsing a request, rendering a page, waiting on a slow
client, computing metrics) runs on the gateway's event loop, so none of it can delay an
inference call there. What the app needs from the gateway's loop it asks for through
``bridge.LoopBridge`` (thread-safe). Bounds: ``admin.max_connections`` (503 past it),
uvicorn's header limits, and the body guard (``guards.py``).

The socket is bound here, not by uvicorn, so gateway workers can share the port
(SO_REUSEPORT); with ``admin.tls`` it speaks HTTPS (uvicorn wraps the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from labelgate.logs import get_logger

log = get_logger(__name__)
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0


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
    ) -> None:
        self.app = app
        self.listen = listen
        self.tls = cert_file is not None and key_file is not None
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
            limit_concurrency=max_connections,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=16 * 1024,
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
            self._started.set()
            await task

        try:
            asyncio.run(serve())
        except BaseException as failure:
            self._failure = failure
            log.error("admin listener stopped", error_type=type(failure).__name__, error=str(failure))
        finally:
            self._started.set()

    async def start(self) -> AdminListener:
        """Start the thread; return once it serves (raising what stopped it, if anything did)."""
        self._thread.start()
        started = await asyncio.to_thread(self._started.wait, START_TIMEOUT_SECONDS)
        if self._failure is not None or not self._server.started:
            self._socket.close()
            raise RuntimeError(f"the admin listener did not start: {self._failure or 'timed out'}")
        if not started:  # pragma: no cover - covered by the check above
            raise RuntimeError("the admin listener did not start in time")
        return self

    async def cleanup(self) -> None:
        self._server.should_exit = True
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            self._server.force_exit = True
            await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_SECONDS)
        self._socket.close()
