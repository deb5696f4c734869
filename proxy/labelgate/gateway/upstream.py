"""The edge toward the inference backend: one channel, the gateway's own credentials.

The caller's credentials never travel upstream; the gateway presents its own (TLS trust
and an optional bearer token from config). Deadlines follow the caller's: the upstream
call gets whatever time the caller has left, capped by the configured timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from labelgate.config import UpstreamSettings
from labelgate.errors import LabelgateError

Metadata = Sequence[tuple[str, Any]]


class UpstreamStatus(LabelgateError):
    """The upstream answered with an error status; the caller gets the same code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"UPSTREAM_{code.name}", message)
        self.code = code


class Upstream:
    def __init__(
        self, settings: UpstreamSettings, max_message_bytes: int, address: str | None = None
    ) -> None:
        self.settings = settings
        self.address = address or settings.address
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if settings.tls:
            root = settings.ca_file.read_bytes() if settings.ca_file else None
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self.channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self.address, options=options)
        token = settings.token.get_secret_value() if settings.token else None
        self._credential: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def metadata(self, forwarded: Metadata) -> tuple[tuple[str, Any], ...]:
        return (*forwarded, *self._credential)

    def timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        limit = self.settings.timeout_seconds
        return limit if remaining is None else max(0.0, min(limit, remaining))

    def unary_unary(self, method: str, serialize: Callable | None, deserialize: Callable | None) -> Any:
        return self.channel.unary_unary(
            method, request_serializer=serialize, response_deserializer=deserialize
        )

    def unary_stream(self, method: str, serialize: Callable | None, deserialize: Callable | None) -> Any:
        return self.channel.unary_stream(
            method, request_serializer=serialize, response_deserializer=deserialize
        )

    def stream_stream(self, method: str, serialize: Callable | None, deserialize: Callable | None) -> Any:
        return self.channel.stream_stream(
            method, request_serializer=serialize, response_deserializer=deserialize
        )

    async def reachable(self, within: float = 1.0) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.channel.channel_ready()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.channel.close()


def upstream_error(error: grpc.aio.AioRpcError) -> LabelgateError:
    """Map an upstream failure: its status is kept; a garbled message is INTERNAL."""
    if error.code() == grpc.StatusCode.INTERNAL and "deserializ" in (error.details() or "").lower():
        return MalformedUpstream("the upstream sent a message that does not parse")
    return UpstreamStatus(error.code(), error.details() or error.code().name)


class MalformedUpstream(LabelgateError):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__("UPSTREAM_MALFORMED", message)
