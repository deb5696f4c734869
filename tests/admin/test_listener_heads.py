"""The admin listener against clients that never finish a request head (review s12, finding 1),
over real sockets to a real ``AdminListener``: a head has a deadline (408) and a size limit
(431), and connections stuck in their heads cannot make the health probes answer 503.

Nothing here measures time: the head deadline is set short and the tests wait for the server
to answer and close; the size limit answers as soon as it is crossed.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from labelgate.admin import listener as listener_module
from labelgate.admin.listener import AdminListener

# Waits for an answer the server owes; reached only when it never comes (the bug).
ANSWER_WAIT_SECONDS = 20.0
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: a"


class App:
    """``/healthz`` answers at once; ``/hold`` answers once ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Semaphore(0)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            self.holding.release()
            await asyncio.to_thread(self.release.wait, ANSWER_WAIT_SECONDS)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def app() -> Iterator[App]:
    held = App()
    yield held
    held.release.set()


def serve(app: App, **limits: Any) -> Iterator[int]:
    listener = AdminListener(app, "127.0.0.1:0", **limits)
    asyncio.run(listener.start())
    try:
        yield listener.port
    finally:
        app.release.set()
        asyncio.run(listener.cleanup())


@pytest.fixture
def short_heads(app: App) -> Iterator[int]:
    yield from serve(app, head_timeout_seconds=0.2)


@pytest.fixture
def four_slots(app: App) -> Iterator[int]:
    # The default head deadline (10 s) never expires during these tests: what frees a slot is
    # the listener making room, not a timer.
    yield from serve(app, max_connections=4)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_SECONDS)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed it: with its 408 when the close came after the head bytes were read,
    with a reset when they were still unread (closed at once: nothing lingers)."""
    try:
        answer = read_to_close(sock)
    except ConnectionResetError:
        return True
    return answer == b"" or status_of(answer) == 408


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def problem_of(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def get(port: int, path: str = "/healthz") -> int:
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        return status_of(read_to_close(sock))


def test_a_head_that_never_finishes_is_answered_408_and_closed(short_heads: int) -> None:
    with connect(short_heads) as sock:
        sock.sendall(PARTIAL_HEAD)
        answer = read_to_close(sock)  # before the fix: no answer, ever
    assert status_of(answer) == 408
    assert problem_of(answer)["reason"] == "REQUEST_TIMEOUT"
    with connect(short_heads) as sock:  # a connection that sends nothing at all, too
        assert status_of(read_to_close(sock)) == 408
    assert get(short_heads) == 200


def test_an_endless_header_block_is_refused_431(short_heads: int) -> None:
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with connect(short_heads) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n")
        # Header lines until the server answers; before the fix it takes all 64 MiB and says nothing.
        while sent < 64 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(line * 8)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(line) * 8
        answer = read_to_close(sock)
    assert status_of(answer) == 431, answer[:200]
    assert problem_of(answer)["reason"] == "HEADERS_TOO_LARGE"


def test_a_large_head_that_arrives_whole_is_refused_431_too(short_heads: int) -> None:
    # h11 alone checks its limit only on a head still incomplete: 60 KB sent at once slipped by.
    path = "/ssn-123-45-6789/" + "z" * 60000
    with connect(short_heads) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 999999999\r\n\r\n".encode())
        answer = read_to_close(sock)
    assert status_of(answer) == 431, answer[:200]


def test_a_head_within_the_limit_is_served(short_heads: int) -> None:
    with connect(short_heads) as sock:
        cookie = "c=" + "a" * 12000
        sock.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: admin\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
        )
        assert status_of(read_to_close(sock)) == 200


def test_unfinished_heads_do_not_make_the_probes_answer_503(four_slots: int) -> None:
    stuck = [connect(four_slots) for _ in range(4)]
    try:
        for sock in stuck:
            sock.sendall(PARTIAL_HEAD)
        # Every slot is held by a head that never finishes: a probe still gets in, closing the
        # connection that waited longest (its slot is free again once the probe is answered).
        assert [get(four_slots, path) for path in ("/healthz", "/readyz", "/healthz")] == [200, 200, 200]
        assert closed_by_server(stuck[0])
        more = [connect(four_slots) for _ in range(8)]  # still more of them
        stuck.extend(more)
        for sock in more:
            sock.sendall(PARTIAL_HEAD)
        assert get(four_slots) == 200
        # Past four, each newcomer closed the oldest waiting connection, and so did the probe:
        # the three older ones, then the first five new ones.
        assert all(closed_by_server(sock) for sock in [*stuck[1:4], *more[:5]])
    finally:
        for sock in stuck:
            sock.close()


def test_a_full_listener_still_refuses_503_when_every_slot_has_a_request(app: App, four_slots: int) -> None:
    held = [connect(four_slots) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"GET /hold HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        for _ in held:
            assert app.holding.acquire(timeout=ANSWER_WAIT_SECONDS)
        with connect(four_slots) as sock:
            answer = read_to_close(sock)
        assert status_of(answer) == 503
        assert problem_of(answer)["reason"] == "TOO_MANY_CONNECTIONS"
        app.release.set()
        assert [status_of(read_to_close(sock)) for sock in held] == [200] * 4
    finally:
        for sock in held:
            sock.close()
    assert get(four_slots) == 200


def test_a_body_left_unfinished_after_its_answer_does_not_hold_a_slot(four_slots: int) -> None:
    """Answered without its body read, a connection waited for the rest of a body that never
    came: no head timer, not evictable, so four of them made the probes answer 503 for good."""
    stuck = [connect(four_slots) for _ in range(4)]
    try:
        for sock in stuck:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000\r\n\r\nx")
        # Each is answered, then closed: the rest of its body is never waited for.
        assert [status_of(read_to_close(sock)) for sock in stuck] == [200] * 4
        assert [get(four_slots, path) for path in ("/healthz", "/readyz")] == [200, 200]
    finally:
        for sock in stuck:
            sock.close()


def test_a_large_head_queued_behind_a_request_is_refused_431(short_heads: int) -> None:
    queued = "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Pad: " + "a" * 100_000 + "\r\n\r\n"
    with connect(short_heads) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n{queued}".encode())
        answers = read_to_close(sock)
    assert b" 431 " in answers, answers[:300]  # the queued head is refused, whole or not


def test_small_requests_queued_behind_one_are_served(short_heads: int) -> None:
    request = "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"
    with connect(short_heads) as sock:
        sock.sendall((request * 3 + request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")).encode())
        answers = read_to_close(sock)
    assert answers.count(b"HTTP/1.1 200") == 4


def answer_then_keep_sending(port: int, seconds: float) -> tuple[bool, bytes]:
    """A request answered before its 10 MB body is read; the client goes on sending pieces of
    it for ``seconds`` after the answer arrived, then reads: (whether the server hung up while
    it sent, what it read; empty when the connection was reset)."""
    with connect(port) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 10000000\r\n\r\n")
        select.select([sock], [], [], ANSWER_WAIT_SECONDS)  # the answer is waiting in our buffer
        until = time.monotonic() + seconds
        try:
            while time.monotonic() < until:
                sock.sendall(b"x" * 1024)
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return True, b""
        try:
            return False, read_to_close(sock)
        except ConnectionResetError:
            return False, b""


def test_a_client_still_sending_when_answered_reads_its_answer(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending a large body when the listener answered without it kept sending past a
    fixed one-second linger; the close reset the connection and the client's kernel dropped the
    answer it had already received (a flaky 411 in test_listener on a loaded machine). The
    listener now lingers until the client has been quiet for the linger time."""
    # The client pauses 0.05 s between pieces: only a stall of a whole second on a loaded
    # machine would look like a client that stopped sending.
    monkeypatch.setattr(listener_module, "LINGER_SECONDS", 1.0)
    for port in serve(app):
        hung_up, answer = answer_then_keep_sending(port, seconds=2.0)
        assert not hung_up and answer and status_of(answer) == 200


def test_a_client_that_never_stops_sending_is_closed_at_the_longest_linger(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener_module, "LINGER_SECONDS", 0.5)
    monkeypatch.setattr(listener_module, "LINGER_MAX_SECONDS", 1.0)
    for port in serve(app):
        hung_up, _ = answer_then_keep_sending(port, seconds=ANSWER_WAIT_SECONDS)
        assert hung_up
