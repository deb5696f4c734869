"""The server interceptors wrap each method's handler once and reuse the wrapper, yet a
handler that changes (a routed service makes one per call) is never served by a stale one."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from labelgate.approvals.deadline import DeadlineInterceptor, seconds_left
from labelgate.gateway.grpc_metrics import HANDLED, GrpcServerMetrics
from labelgate.gateway.metrics import OTHER_METHOD, serve_services


class _Context:
    """What the wrappers read of a grpc.aio servicer context."""

    def time_remaining(self) -> float | None:
        return 30.0

    def code(self) -> grpc.StatusCode | None:
        return None


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


def _handler(answer: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def behaviour(request: Any, context: Any) -> tuple[str, float | None]:
        return answer, seconds_left()

    return grpc.unary_unary_rpc_method_handler(behaviour)


@pytest.mark.parametrize("interceptor", [GrpcServerMetrics, DeadlineInterceptor])
async def test_a_method_keeps_its_wrapper_until_its_handler_changes(interceptor: type) -> None:
    chain = interceptor()
    method = "/test.Interceptors/Echo"
    first, second = _handler("first"), _handler("second")

    async def serve(handler: grpc.RpcMethodHandler[Any, Any]) -> tuple[Any, str]:
        async def continuation(_details: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return handler

        wrapped: Any = await chain.intercept_service(continuation, _Details(method))
        answer, left = await wrapped.unary_unary(b"", _Context())
        if interceptor is DeadlineInterceptor:  # each call's own deadline, through a reused wrapper
            assert left is not None and 0 < left <= 30
        return wrapped, answer

    one, answer_one = await serve(first)
    again, answer_again = await serve(first)
    other, answer_other = await serve(second)
    assert (answer_one, answer_again, answer_other) == ("first", "first", "second")
    assert again is one and other is not one


async def test_every_call_is_counted_through_a_reused_wrapper() -> None:
    chain = GrpcServerMetrics()
    method = "/test.Interceptors/Counted"

    async def continuation(_details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    handler = _handler("ok")
    serve_services(["test.Interceptors"])  # as a route's service is, at the gateway's start
    # No descriptor names this method, so it is counted as ``other`` (``method_labels``),
    # a series other tests here count into too.
    series = HANDLED.labels("unary", "test.Interceptors", OTHER_METHOD, "OK")
    before = series._value.get()
    for _ in range(3):
        wrapped: Any = await chain.intercept_service(continuation, _Details(method))
        await wrapped.unary_unary(b"", _Context())
    assert series._value.get() - before == 3
