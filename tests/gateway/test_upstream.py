"""The upstream edge: what of the caller's metadata travels, and what an upstream error says."""

from __future__ import annotations

import grpc
import pytest

from labelgate.config import UpstreamSettings
from labelgate.gateway.upstream import Upstream, UpstreamStatus, upstream_error

CALLER = (
    ("authorization", "Bearer caller-token"),
    ("x-forwarded-user", "mallory"),
    ("x-remote-user", "mallory"),
    ("x-user-id", "42"),
    ("x-goog-api-key", "AIza-secret"),
    ("x-auth-token", "t0k3n"),
    ("authorization-bin", b"\x00secret"),
    ("x-labelgate-session", "s-1"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("X-Request-Id", "req-7"),
)


async def test_only_allow_listed_caller_metadata_travels_with_the_gateways_credential() -> None:
    upstream = Upstream(UpstreamSettings(token="gateway-own"), 1 << 20)
    try:
        sent = dict(upstream.metadata(CALLER))
    finally:
        await upstream.close()
    assert sent == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-request-id": "req-7",
        "authorization": "Bearer gateway-own",
    }


async def test_an_allow_list_cannot_let_credentials_through() -> None:
    settings = UpstreamSettings(forward_metadata=["authorization", "x-labelgate-session", "x-user-id"])
    upstream = Upstream(settings, 1 << 20)
    try:
        sent = dict(upstream.metadata(CALLER))
    finally:
        await upstream.close()
    assert sent == {"x-user-id": "42"}


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
def test_an_upstream_error_keeps_its_code_and_loses_its_text(code: grpc.StatusCode) -> None:
    error = upstream_error(FakeRpcError(code, "row for ssn 123-45-6789 not found"))
    assert isinstance(error, UpstreamStatus)
    assert error.code == code and error.reason == f"UPSTREAM_{code.name}"
    assert "123-45-6789" not in str(error) and "row for" not in error.message


def test_a_size_error_worded_by_an_upstream_says_only_the_gateways_words() -> None:
    text = "CLIENT: Received message larger than max (1 vs. 2) 4111 1111 1111 1111"
    error = upstream_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, text), 1024)
    assert "4111" not in error.message and "1024" in error.message
