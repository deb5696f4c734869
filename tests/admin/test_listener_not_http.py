"""Input that is not HTTP/1.1 on the admin listener gets a problem document like its other
refusals, not uvicorn's plain text (review: ``GARBAGE`` or a path holding byte 0xff was
answered ``400 ... Invalid HTTP request received.``), and the connection is closed. Raw
sockets to a real ``AdminListener``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.admin.test_listener_heads import App, connect, get, read_to_close, serve

NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz/\xff HTTP/1.1\r\nHost: admin\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost admin\r\n\r\n",
]


@pytest.fixture
def port() -> Iterator[int]:
    yield from serve(App())


@pytest.mark.parametrize("sent", NOT_HTTP, ids=["garbage", "path-byte-ff", "header-without-colon"])
def test_input_that_is_not_http_gets_a_problem_document_and_a_close(port: int, sent: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(sent)
        answer = read_to_close(sock)  # returns once the server has closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 400 "), answer
    assert b"content-type: application/problem+json" in lines and b"connection: close" in lines, answer
    problem = json.loads(body)
    assert (problem["status"], problem["reason"]) == (400, "REQUEST_INVALID"), problem
    assert get(port) == 200  # the listener serves on
