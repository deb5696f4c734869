"""gRPC services of generic handlers served on loopback for a test: their address."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc


@contextlib.asynccontextmanager
async def serving_services(
    services: Mapping[str, Mapping[str, Any]],
) -> AsyncIterator[tuple[str, grpc.aio.Server]]:
    """``services`` (service name -> method name -> rpc method handler) on a free loopback
    port, stopped when the block ends: the address, and the server (for a test that stops it
    first)."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, dict(handlers)) for name, handlers in services.items()]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def serving_grpc(
    service: str, handlers: Mapping[str, Any]
) -> AsyncIterator[tuple[str, grpc.aio.Server]]:
    """``handlers`` (method name -> rpc method handler) as ``service`` (``serving_services``)."""
    async with serving_services({service: handlers}) as served:
        yield served
