"""``AdminGuard`` in process: what is read is counted, whatever the headers said."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from labelgate.admin.guards import LOGGED_PATH, AdminGuard
from labelgate.approvals.api import API_PREFIX, SUBJECT_STATE, install_problem_handlers
from labelgate.auth import Subject, reasons
from labelgate.untrusted_text import bounded


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


async def test_a_refused_requests_path_is_logged_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """The path is an unauthenticated caller's (percent-decoded) text: a 60 KB one holding an
    SSN became a 60 KB log line (review s12, finding 6)."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/{rest:path}")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    guarded = AdminGuard(app, max_body_bytes=1024, body_timeout_seconds=5)
    path = "/ssn-123-45-6789/" + "z" * 60000
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"a" * 2048, "more_body": False}

    def scope(length: str) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-length", length.encode())],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("t", 80),
            "client": ("c", 1),
            "root_path": "",
        }

    with caplog.at_level(logging.WARNING, logger="labelgate.admin.guards"):
        await guarded(scope("999999999"), receive, send)  # refused from the headers
        await guarded(scope("10"), receive, send)  # refused while reading: the length lied
    assert [message["status"] for message in sent if message["type"] == "http.response.start"] == [413, 413]
    refused = [record for record in caplog.records if record.getMessage() == "admin body refused"]
    assert len(refused) == 2
    for record in refused:
        assert record.path == bounded(path, LOGGED_PATH)  # type: ignore[attr-defined]
        assert len(record.path) < 100 and "123-45-6789" not in record.path  # type: ignore[attr-defined]
    short = bounded("/inbox/apr-1/approve", LOGGED_PATH)
    assert short == "/inbox/apr-1/approve"  # a path of ordinary length is logged as it is
