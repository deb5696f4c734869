"""The admin listener against hostile clients (issue 19, findings 4 and 6), over real sockets
to a real ``labelgate serve``: authentication before any body is read, a body limit enforced
while reading (413), a body deadline (408), and inference that does not notice any of it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from tests.admin.conftest import Admin
from tests.approvals.conftest import grpc_infer, person, token

APPROVAL = "/api/v1/approvals/apr-0123456789abcdef/deny"
TEN_MB = 10 * 1024 * 1024
PROBE = Path(__file__).with_name("latency_probe.py")


def connect(admin: Admin, timeout: float = 10) -> http.client.HTTPConnection:
    where = urlsplit(admin.base)
    return http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)


def answer(response: http.client.HTTPResponse) -> tuple[int, dict]:
    body = response.read()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, {"text": body.decode(errors="replace")}


def declared_only(admin: Admin, path: str, length: int, headers: dict[str, str]) -> tuple[int, dict]:
    """Headers announcing ``length`` bytes, and not one byte of the body: what comes back."""
    conn = connect(admin)
    conn.putrequest("POST", path)
    for key, value in {"content-type": "application/json", "content-length": str(length), **headers}.items():
        conn.putheader(key, value)
    conn.endheaders()
    try:
        return answer(conn.getresponse())
    finally:
        conn.close()


def chunked(admin: Admin, path: str, total: int, headers: dict[str, str]) -> tuple[int, dict, int]:
    """A chunked body of ``total`` bytes, sent until the server answers or hangs up;
    (status, body, bytes sent before it did)."""
    conn = connect(admin)
    conn.putrequest("POST", path)
    for key, value in {"transfer-encoding": "chunked", **headers}.items():
        conn.putheader(key, value)
    conn.endheaders()
    sent = 0
    chunk = b"x" * 16384
    try:
        while sent < total:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: exactly what should happen
    try:
        status, body = answer(conn.getresponse())
    finally:
        conn.close()
    return status, body, sent


def test_the_api_authenticates_before_it_reads_a_body(admin: Admin) -> None:
    # Today's bug: a malformed body earned "400 JSON decode error" before any token was asked for.
    conn = connect(admin)
    conn.request("POST", APPROVAL, body=b"{not json", headers={"content-type": "application/json"})
    status, body = answer(conn.getresponse())
    assert (status, body["reason"]) == (401, "NO_CREDENTIALS"), body
    # 10 MB announced without a token: refused from the headers alone, nothing read.
    status, body = declared_only(admin, APPROVAL, TEN_MB, {})
    assert (status, body["reason"]) == (401, "NO_CREDENTIALS")
    status, body = declared_only(admin, APPROVAL, TEN_MB, {"authorization": "Bearer not-a-token"})
    assert status == 401 and body["reason"] != "BODY_TOO_LARGE"
    status, body, _ = chunked(admin, APPROVAL, TEN_MB, {})
    assert status == 401


def test_an_approver_gets_413_for_a_large_body_and_400_only_after_signing_in(admin: Admin) -> None:
    bearer = {"authorization": f"Bearer {token(person('olivia'), 'data-owners')}"}
    status, body = declared_only(admin, APPROVAL, TEN_MB, bearer)
    assert (status, body["reason"]) == (413, "BODY_TOO_LARGE")
    status, body = declared_only(admin, APPROVAL, 64 * 1024 + 1, bearer)
    assert (status, body["reason"]) == (413, "BODY_TOO_LARGE")
    # A body that does not say how long it is never gets parsed at all.
    status, body, _ = chunked(admin, APPROVAL, TEN_MB, bearer)
    assert (status, body["reason"]) == (411, "LENGTH_REQUIRED")
    conn = connect(admin)
    conn.request("POST", APPROVAL, body=b"{not json", headers={"content-type": "application/json", **bearer})
    status, body = answer(conn.getresponse())
    assert status == 400  # authenticated, then parsed


def test_the_inbox_bounds_its_forms_and_checks_the_session_first(admin: Admin) -> None:
    status, body = declared_only(admin, "/inbox/apr-0123456789abcdef/approve", TEN_MB, {})
    assert status == 413
    conn = connect(admin)
    conn.request(
        "POST",
        "/inbox/apr-0123456789abcdef/approve",
        body=b"csrf=x&" + b"a" * 1000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    status, body = answer(conn.getresponse())
    assert status == 401 and "SESSION_EXPIRED" in body["text"]
    # The sign-in form: its double-submit cookie is checked before its body is read, and a
    # body past the form's bound is refused while it streams.
    with httpx.Client(base_url=admin.base, timeout=10) as client:
        client.get("/inbox")
        signin_cookie = client.cookies.get("labelgate_signin")
    assert signin_cookie
    status, body, _ = chunked(
        admin,
        "/inbox/signin",
        TEN_MB,
        {"cookie": f"labelgate_signin={signin_cookie}", "content-type": "application/x-www-form-urlencoded"},
    )
    assert status == 411
    conn = connect(admin)
    conn.request(
        "POST",
        "/inbox/signin",
        body=b"token=" + b"a" * (17 * 1024),  # under the listener's limit, over the form's
        headers={
            "cookie": f"labelgate_signin={signin_cookie}",
            "content-type": "application/x-www-form-urlencoded",
        },
    )
    status, body = answer(conn.getresponse())
    assert status == 413 and "FORM_TOO_LARGE" in body["text"]


def test_a_slow_body_is_cut_off_at_the_deadline(admin: Admin) -> None:
    bearer = f"Bearer {token(person('olivia'), 'data-owners')}"
    with socket.create_connection((urlsplit(admin.base).hostname, urlsplit(admin.base).port), 30) as sock:
        sock.sendall(
            f"POST {APPROVAL} HTTP/1.1\r\nhost: admin\r\nauthorization: {bearer}\r\n"
            'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"reason"'.encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:  # bounded by the socket timeout
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


# -- inference while the admin listener is abused ------------------------------------------------
def latencies(admin: Admin, count: int, warmup: int = 5) -> list[float]:
    spec = {"url": admin.grpc, "token": token(person("ana"), "analysts"), "count": count, "warmup": warmup}
    done = subprocess.run(
        [sys.executable, str(PROBE)], input=json.dumps(spec), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


PAUSE_SECONDS = 0.05


def attackers(admin: Admin, stop: threading.Event, done: list[str]) -> list[threading.Thread]:
    """Clients that abuse the admin listener until ``stop`` (each loop bounded too), each
    pausing ``PAUSE_SECONDS`` between attempts: a steady attack, not a flood that would only
    measure how busy this machine's two cores are. ``done`` collects one name per attempt."""
    signin = httpx.get(f"{admin.base}/inbox", timeout=10).cookies.get("labelgate_signin", "")
    approver = {"authorization": f"Bearer {token(person('olivia'), 'data-owners')}"}
    big_json = b'{"reason": "' + b"x" * TEN_MB + b'"}'

    def until_stopped(action: Callable[[], object], limit: int = 500) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(limit):
                if stop.is_set():
                    return
                with contextlib.suppress(OSError, http.client.HTTPException):
                    action()
                done.append(getattr(action, "__name__", "attack"))
                stop.wait(PAUSE_SECONDS)

        return loop

    def huge_unauthenticated() -> None:  # the attack: 10 MB, no token, read in full before
        conn = connect(admin)
        try:
            conn.request("POST", APPROVAL, body=big_json, headers={"content-type": "application/json"})
            conn.getresponse().read()
        finally:
            conn.close()

    def slow_body() -> None:
        where = urlsplit(admin.base)
        with socket.create_connection((where.hostname, where.port), 10) as sock:
            sock.sendall(
                f"POST {APPROVAL} HTTP/1.1\r\nhost: a\r\nauthorization: {approver['authorization']}\r\n"
                "content-type: application/json\r\ncontent-length: 65000\r\n\r\n".encode()
            )
            for _ in range(40):
                if stop.is_set():
                    return
                sock.sendall(b" ")
                time.sleep(0.05)

    actions = [
        huge_unauthenticated,
        huge_unauthenticated,
        lambda: chunked(admin, APPROVAL, TEN_MB, approver),
        lambda: chunked(
            admin,
            "/inbox/signin",
            TEN_MB,
            {"cookie": f"labelgate_signin={signin}", "content-type": "application/x-www-form-urlencoded"},
        ),
        slow_body,
        slow_body,
    ]
    return [threading.Thread(target=until_stopped(action), daemon=True) for action in actions]


def test_inference_keeps_its_latency_while_the_admin_listener_is_abused(admin: Admin) -> None:
    assert grpc_infer(admin.grpc, token(person("ana"), "analysts")).code == "OK"
    gateway = psutil.Process(admin.process.pid)
    before = latencies(admin, 60)
    rss_before = gateway.memory_info().rss
    stop = threading.Event()
    done: list[str] = []
    threads = attackers(admin, stop, done)
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the attack is under way before the timed calls start
        during = latencies(admin, 60, warmup=0)
        rss_during = gateway.memory_info().rss
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    after = latencies(admin, 60)
    baseline = statistics.median(before + after)
    ratio = statistics.median(during) / baseline
    worst = sorted(during)[int(len(during) * 0.9)] / sorted(before + after)[int(len(before + after) * 0.9)]
    print(
        f"inference p50 {baseline:.2f} ms -> {statistics.median(during):.2f} ms (x{ratio:.2f}); "
        f"p90 x{worst:.2f}; {len(done)} attacks"
    )
    assert len(done) >= 30, "the attack must have been under way during the timed calls"
    assert ratio < 1.6, (before, during, after)
    assert worst < 4.0, (before, during, after)  # a stall (the issue: x30) is far beyond
    # Nothing of the bodies was buffered: memory stayed where it was (the issue saw +200 MB).
    assert rss_during - rss_before < 40 * 1024 * 1024
