"""A method the gateway serves nowhere is refused with a labelgate status (gateway/unserved.py)."""

from __future__ import annotations

import grpc
import pytest

from labelgate.gateway.status import error_info
from tests.gateway.test_health import listen  # noqa: F401  (the in-process gateway fixture)


async def test_a_method_no_service_serves_is_unimplemented_with_a_reason(listen: str) -> None:  # noqa: F811
    """grpc's own answer is UNIMPLEMENTED "Method not found!" with no ErrorInfo (first-user
    review): every other refusal names its reason. Every call shape, nothing read; the
    caller's method name is not repeated."""
    method = "/acme.Secrets/Dump\x1b[2J"
    async with grpc.aio.insecure_channel(listen) as channel:
        calls = {
            "unary": lambda: channel.unary_unary(method)(b"x", timeout=10),
            "server stream": lambda: channel.unary_stream(method)(b"x", timeout=10).read(),
            "client stream": lambda: channel.stream_unary(method)(iter([b"x"] * 3), timeout=10),
            "bidi": lambda: channel.stream_stream(method)(iter([b"x"]), timeout=10).read(),
        }
        for shape, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            info = error_info(refused.value)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, shape
            assert info is not None and info.reason == "METHOD_NOT_SERVED", shape
            assert "Dump" not in (refused.value.details() or ""), shape
        # What the gateway serves still answers (health, a handler registered before this one).
        health = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert await health(b"", timeout=10) is not None
