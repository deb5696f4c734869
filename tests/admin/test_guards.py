"""``AdminGuard`` in process: what is read is counted, whatever the headers said."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request

from labelgate.admin.guards import AdminGuard
from labelgate.approvals.api import API_PREFIX, SUBJECT_STATE, install_problem_handlers
from labelgate.auth import Subject, reasons


async def test_the_limit_holds_while_reading_even_when_the_declared_length_lies() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    guarded = AdminGuard(app, max_body_bytes=1024, body_timeout_seconds=5)
    chunks = [b"a" * 600, b"b" * 600, b"c" * 600]
    sent: list[dict[str, Any]] = []
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        chunk = chunks[asked - 1] if asked <= len(chunks) else b""
        return {"type": "http.request", "body": chunk, "more_body": asked < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": [(b"content-length", b"10"), (b"content-type", b"application/octet-stream")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "root_path": "",
    }
    await guarded(scope, receive, send)
    assert sent[0]["status"] == 413
    assert asked == 2  # refused at the chunk that crossed the limit; the third was never asked for
    assert (b"connection", b"close") in sent[0]["headers"]


async def test_two_authorization_headers_are_refused_not_the_last_one_taken() -> None:
    """A dict of the headers keeps the last of two, so bob's request carrying alice's token
    second would be alice's: refused, as the gateway refuses it (``TOKEN_MALFORMED``)."""
    app = FastAPI()

    @app.get(API_PREFIX)
    async def who(request: Request) -> dict[str, str]:
        return {"subject": request.scope["state"][SUBJECT_STATE].id}

    async def authenticate(header: str | None) -> Subject:
        return Subject.proven("jwt", (header or "").removeprefix("Bearer "), issuer="idp")

    guarded = AdminGuard(app, max_body_bytes=1024, body_timeout_seconds=5, authenticate=authenticate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as client:
        assert (await client.get(API_PREFIX, headers={"authorization": "Bearer bob"})).json() == {
            "subject": "jwt:idp#bob"
        }
        reply = await client.get(
            API_PREFIX, headers=[("authorization", "Bearer bob"), ("Authorization", "Bearer alice")]
        )
    assert reply.status_code == 401
    assert reply.json()["reason"] == reasons.TOKEN_MALFORMED
    assert "alice" not in reply.text
