"""Input that is not HTTP/1.1 on the REST front gets the binding's own JSON error, not
uvicorn's plain text (review: ``GARBAGE`` or a path holding byte 0xff was answered
``400 ... Invalid HTTP request received.``), and the connection is closed. Raw sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from labelgate.gateway.server import Gateway
from tests.gateway.test_rest_limits import LONG, MAX_HEADER, answer_to, backend, serving  # noqa: F401  (backend: a fixture)

NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"GET /v2/health/\xff HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /v2/health/live HTTP/1.1\r\nhost x\r\n\r\n",
]


@pytest.fixture
async def gateway(backend: str) -> AsyncIterator[Gateway]:  # noqa: F811  (the fixture above)
    gateway = await serving(backend, {"max_header_bytes": MAX_HEADER, "max_connections": 16, **LONG})
    try:
        yield gateway
    finally:
        await gateway.stop(0)


@pytest.mark.parametrize("sent", NOT_HTTP, ids=["garbage", "path-byte-ff", "header-without-colon"])
async def test_input_that_is_not_http_gets_the_rest_error_body_and_a_close(
    gateway: Gateway, sent: bytes
) -> None:
    answer = await answer_to(gateway, sent)  # returns once the server has closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 400 "), answer
    assert b"content-type: application/json" in lines and b"connection: close" in lines, answer
    assert json.loads(body) == {
        "error": "the request is not valid HTTP/1.1",
        "reason": "REST_REQUEST_INVALID",
    }
