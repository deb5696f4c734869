"""The caller's gRPC deadline, as the approval stage needs it: a held call never outlives it.

gRPC consumes ``grpc-timeout`` itself; only the servicer context knows the time left, and
the pipeline's ``Call`` does not carry it. ``DeadlineInterceptor`` (installed on the
gateway's server) records the absolute deadline in a context variable before each handler
runs; the handler's task, and everything it awaits, reads it with ``seconds_left()``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from labelgate.deadlines import reset_deadline, seconds_left, set_deadline
from labelgate.interceptors import Handler, WrappingInterceptor

__all__ = ["DeadlineInterceptor", "reset_deadline", "seconds_left", "set_deadline"]


def _remember(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    set_deadline(context.time_remaining())


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _remember(context)
        return await behavior(request, context)

    return wrapped


def _wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
    # A streaming handler is either an async generator or a coroutine that writes to the context;
    # a synchronous handler (run in a thread by grpc) is left as it is.
    if inspect.isasyncgenfunction(behavior):
        return _streaming(behavior)
    if inspect.iscoroutinefunction(behavior):
        return _unary(behavior)
    return behavior


def _streaming(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        _remember(context)
        async for item in behavior(request, context):
            yield item

    return wrapped


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class DeadlineInterceptor(WrappingInterceptor):
    def wrap(self, method: str, handler: Handler) -> Handler:
        replacements = {
            kind: _wrap(getattr(handler, kind)) for kind in _KINDS if getattr(handler, kind) is not None
        }
        # grpc's method handlers are namedtuples; the stubs declare only their fields.
        wrapped: Handler = handler._replace(**replacements)  # type: ignore[attr-defined]
        return wrapped
