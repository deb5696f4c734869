"""The REST listener's own bounds (``rest`` settings, ``gateway/rest_limits.py``), with real
sockets against a gateway in this process: a head over the cap gets 431, a head or body not
finished in time 408, connections past the cap 503, and none of it touches gRPC. Limits are
small and deadlines short so each refusal comes at once; nothing here times anything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from tests.gateway.aio import infer
from tests.gateway.expected import customer_request
from tests.gateway.harness import run_backend
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
MAX_HEADER = 2048
SHORT = {"head_timeout_seconds": 0.3, "body_timeout_seconds": 0.3, "keep_alive_seconds": 0.3}
LONG = {"head_timeout_seconds": 120, "body_timeout_seconds": 120, "keep_alive_seconds": 120}
# A safety net so a broken bound fails the test instead of hanging it; never asserted on.
NEVER = 30.0


def bearer() -> str:
    return f"Bearer {mint_dev_token('ana', ['analysts'], 300, DEV_KEYS)}"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_backend(tmp_path_factory.mktemp("rest-limits-backend")) as (address, _):
        yield address


async def serving(backend: str, rest: dict[str, object]) -> Gateway:
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        rest_listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "rest-limits-test-hash-key-0123"},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        rest=rest,
    )
    gateway = Gateway(settings)
    await gateway.start()
    return gateway


@pytest.fixture
async def short(backend: str) -> AsyncIterator[Gateway]:
    gateway = await serving(backend, {"max_header_bytes": MAX_HEADER, "max_connections": 16, **SHORT})
    try:
        yield gateway
    finally:
        await gateway.stop(0)


@pytest.fixture
async def capped(backend: str) -> AsyncIterator[Gateway]:
    gateway = await serving(backend, {"max_header_bytes": MAX_HEADER, "max_connections": 3, **LONG})
    try:
        yield gateway
    finally:
        await gateway.stop(0)


def rest_port(gateway: Gateway) -> int:
    assert gateway.settings.rest_listen is not None
    return int(gateway.settings.rest_listen.rpartition(":")[2])


async def answer_to(gateway: Gateway, sent: bytes) -> bytes:
    """Everything the listener sends back to ``sent`` until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rest_port(gateway))
    try:
        writer.write(sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), NEVER)
    finally:
        writer.close()


def status_and_reason(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)["reason"]


async def grpc_serves(gateway: Gateway) -> None:
    reply = await infer(f"127.0.0.1:{gateway.port}", customer_request([1]), {"authorization": bearer()})
    assert reply.outputs


def padded_headers(total: int) -> bytes:
    line = b"x-pad: " + b"a" * 200 + b"\r\n"
    return line * (total // len(line) + 1)


async def test_an_unfinished_head_over_the_cap_gets_431(short: Gateway) -> None:
    sent = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + padded_headers(2 * MAX_HEADER)
    assert status_and_reason(await answer_to(short, sent)) == (431, "HEADERS_TOO_LARGE")
    await grpc_serves(short)


async def test_a_complete_head_over_the_cap_gets_431(short: Gateway) -> None:
    sent = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + padded_headers(MAX_HEADER) + b"\r\n"
    assert status_and_reason(await answer_to(short, sent)) == (431, "HEADERS_TOO_LARGE")


async def test_a_head_under_the_cap_is_served(short: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.get(
            f"http://{short.settings.rest_listen}/v2/health/live",
            headers={"authorization": bearer(), "x-pad": "a" * (MAX_HEADER // 2)},
        )
    assert reply.status_code == 200, reply.text


async def test_an_unfinished_head_gets_408(short: Gateway) -> None:
    sent = b"POST /v2/models/customer-profile/infer HTTP/1.1\r\nhost: x\r\n"
    assert status_and_reason(await answer_to(short, sent)) == (408, "REQUEST_TIMEOUT")
    await grpc_serves(short)


async def test_a_connection_that_sends_nothing_gets_408(short: Gateway) -> None:
    assert status_and_reason(await answer_to(short, b"")) == (408, "REQUEST_TIMEOUT")


async def test_an_unfinished_body_gets_408(short: Gateway) -> None:
    sent = (
        b"POST /v2/models/customer-profile/infer HTTP/1.1\r\nhost: x\r\n"
        + f"authorization: {bearer()}\r\ncontent-type: application/json\r\n".encode()
        + b"content-length: 100\r\n\r\n"
        + b'{"inputs": ['
    )
    assert status_and_reason(await answer_to(short, sent)) == (408, "REQUEST_TIMEOUT")
    await grpc_serves(short)


async def trickle(writer: asyncio.StreamWriter, closed: asyncio.Event) -> None:
    """One more body byte every so often (well inside every deadline) until the connection
    ends: each byte would reset a keep-alive timer, and none finishes the body."""
    while not closed.is_set():
        try:
            writer.write(b" ")
            await writer.drain()
        except ConnectionError:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), SHORT["body_timeout_seconds"] / 6)


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "authenticated"])
async def test_a_body_pipelined_behind_another_request_and_trickled_gets_408(
    short: Gateway, authenticated: bool
) -> None:
    """A request queued behind another on one connection had no body deadline once its turn
    came (it was armed at its head only when nothing was queued), and the keep-alive timer is
    reset by any byte: a byte now and then held the connection, and its slot, for good."""
    authorization = f"authorization: {bearer()}\r\n".encode() if authenticated else b""
    sent = (
        b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + authorization + b"\r\n"
        b"POST /v2/models/customer-profile/infer HTTP/1.1\r\nhost: x\r\n"
        + authorization
        + b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", rest_port(short))
    closed = asyncio.Event()
    trickling = asyncio.create_task(trickle(writer, closed))
    try:
        writer.write(sent)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), NEVER)  # until the listener closes
    finally:
        closed.set()
        await trickling
        writer.close()
    # The first request is answered (200, or 401 without a token); the queued one, whatever
    # the app made of it meanwhile, is cut off by its body's deadline.
    assert answer.startswith(b"HTTP/1.1 200" if authenticated else b"HTTP/1.1 401"), answer[:200]
    last = answer[answer.rindex(b"HTTP/1.1 ") :]
    assert status_and_reason(last) == (408, "REQUEST_TIMEOUT")
    await grpc_serves(short)


async def test_connections_past_the_cap_get_503_and_grpc_still_serves(capped: Gateway) -> None:
    port = rest_port(capped)
    held = []
    try:
        for _ in range(3):  # each holds an unfinished head: counted from the moment it is accepted
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v2/models/customer-profile/infer HTTP/1.1\r\nhost: x\r\n")
            await writer.drain()
            held.append(writer)
        # Accepted in order: the fourth finds three open and is answered before sending a byte.
        assert status_and_reason(await answer_to(capped, b"")) == (503, "TOO_MANY_CONNECTIONS")
        await grpc_serves(capped)
    finally:
        for writer in held:
            writer.close()
    # Once they are gone (noticed by the server in its own time), REST serves again.
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                reply = await client.get(
                    f"http://{capped.settings.rest_listen}/v2/health/live",
                    headers={"authorization": bearer()},
                )
            except httpx.TransportError:
                reply = None
            if reply is not None and reply.status_code == 200:
                break
            await asyncio.sleep(0.05)
    assert reply is not None and reply.status_code == 200


# A child process with a small open-file limit: a listening socket as start_rest binds it, every
# descriptor taken, one connection pending. Its stdout: what the client saw, then the count of
# asyncio's accept-failure log lines.
OUT_OF_FDS = r"""
import asyncio, logging, os, resource, socket, sys
from labelgate.gateway.rest_limits import listening_sockets, throttle_accept_errors

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
lines = []
class Count(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("asyncio").addHandler(Count())
throttle_accept_errors()

async def main():
    loop = asyncio.get_running_loop()
    [sock] = await listening_sockets("127.0.0.1", 0)
    server = await loop.create_server(asyncio.Protocol, sock=sock, backlog=2048)
    client = socket.socket()
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    client.setblocking(False)
    try:
        client.connect(server.sockets[0].getsockname())
    except BlockingIOError:
        pass
    for _ in range(2000):  # loop turns, each one a chance to accept
        await asyncio.sleep(0)
    await asyncio.sleep(1.5)  # past asyncio's one-second accept retry
    client.settimeout(5)
    try:
        seen = "closed" if client.recv(1) == b"" else "data"
    except OSError as error:
        seen = "reset" if isinstance(error, ConnectionResetError) else "pending"
    print(seen, sum("out of system resource" in line for line in lines), flush=True)
    os._exit(0)

asyncio.run(main())
"""


def test_out_of_file_descriptors_the_listener_sheds_without_flooding_the_log() -> None:
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FDS],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "proxy"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen, accept_errors = done.stdout.split()
    assert seen in ("closed", "reset")  # shed, not left waiting
    assert int(accept_errors) <= 1
