"""A REST upstream's kept-alive connections: one the upstream drops just as it is reused
is replaced once, and a second failure is the caller's UNAVAILABLE. A raw HTTP/1.1 server
on loopback plays the upstream, so the drop happens exactly where the test puts it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from labelgate.config import UpstreamSettings
from labelgate.errors import LabelgateError
from labelgate.gateway.rest_upstream import RestUpstream

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class ScriptedServer:
    """Each connection gets the next script: for each request on it, answer (True) or close
    the connection without a word (False)."""

    def __init__(self, scripts: list[list[bool]]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            for answer in script:
                await reader.readuntil(b"\r\n\r\n")  # the requests here carry no body
                self.requests += 1
                if not answer:
                    return
                writer.write(OK)
                await writer.drain()
            await reader.read()  # keep the connection open until the client closes it
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[asyncio.Server] = []
    upstreams: list[RestUpstream] = []

    async def start(scripts: list[list[bool]]) -> tuple[ScriptedServer, RestUpstream]:
        scripted = ScriptedServer(scripts)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        upstream = RestUpstream(UpstreamSettings(address=f"127.0.0.1:{port}"), 1 << 20)
        upstreams.append(upstream)
        return scripted, upstream

    yield start
    for upstream in upstreams:
        await upstream.client.aclose()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_kept_alive_connection_dropped_on_reuse_is_replaced_once(serve: Any) -> None:
    # The first connection answers one request, then closes on the second without a word.
    scripted, upstream = await serve([[True, False], [True, True]])
    first = await upstream._exchange("GET", "/v2/health/ready", (), 5.0)
    second = await upstream._exchange("GET", "/v2/health/ready", (), 5.0)
    assert first[0] == second[0] == 200
    assert (scripted.connections, scripted.requests) == (2, 3)


async def test_a_second_drop_is_unavailable_and_nothing_is_sent_a_third_time(serve: Any) -> None:
    scripted, upstream = await serve([[False]])
    with pytest.raises(LabelgateError) as refused:
        await upstream._exchange("GET", "/v2/health/ready", (), 5.0)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert (scripted.connections, scripted.requests) == (2, 2)
