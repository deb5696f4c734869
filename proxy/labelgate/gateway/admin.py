"""The admin HTTP listener (FastAPI on uvicorn, inside the gateway's event loop).

/healthz (alive), /readyz (can serve; a problem response on 503), /metrics (Prometheus),
and, when approvals are on, the approvals REST API (/api/v1/approvals, OpenAPI at
/api/v1/openapi.json) and the web inbox (/inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from labelgate.approvals.api import ApprovalsContext, install_problem_handlers
from labelgate.approvals.api import router as approvals_router
from labelgate.approvals.web import mount_inbox, render_error

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


def _problem(status: int, title: str, detail: dict) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "checks": detail}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def build_admin_app(
    ready: ReadyCheck, approvals: ApprovalsContext | None = None, *, title: str = "labelgate admin"
) -> FastAPI:
    app = FastAPI(
        title=title,
        description="Health, metrics and just-in-time approvals of a labelgate gateway.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await ready()
        if all(checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return _problem(503, "not ready", checks)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    if approvals is not None:
        app.state.approvals = approvals
        app.include_router(approvals_router)
        mount_inbox(app)
    install_problem_handlers(app, render_error if approvals is not None else None)
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside someone else's event loop: the host process owns the signals."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class AdminServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task, sock: socket.socket) -> None:
        self._server = server
        self._task = task
        self._socket = sock
        self.port = sock.getsockname()[1]

    async def cleanup(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=5)
        self._socket.close()


async def start_admin(app: FastAPI, listen: str) -> AdminServer:
    host, _, port = listen.rpartition(":")
    # Bound here (not by uvicorn) so that gateway workers can share the port (SO_REUSEPORT).
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the admin listener stopped before it started")
        await asyncio.sleep(0.01)
    return AdminServer(server, task, sock)
