"""The admin HTTP listener: /healthz (alive), /readyz (can serve), /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


def _problem(status: int, title: str, detail: dict) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "checks": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


def build_admin_app(ready: ReadyCheck) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await ready()
        if all(checks.values()):
            return web.json_response({"status": "ready", "checks": checks})
        return _problem(503, "not ready", checks)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_admin(app: web.Application, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_port=True).start()
    return runner
