"""The caller's gRPC deadline, as the approval stage needs it: a held call never outlives it.

gRPC consumes ``grpc-timeout`` itself; only the servicer context knows the time left, and
the pipeline's ``Call`` does not carry it. ``DeadlineInterceptor`` (installed on the
gateway's server) records the absolute deadline in a context variable before each handler
runs; the handler's task, and everything it awaits, reads it with ``seconds_left()``.

It also notes the call's request (``hold.note_request``): the body as it came for a unary
call, each message of a stream as the handler reads it (and, for the stream's other tasks,
the message it read last), so that a held call is counted by the bytes it pins
(``ApprovalService``'s held-bytes bounds; a call with nothing noted is not held).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from labelgate.approvals.hold import LastRead, note_request
from labelgate.deadlines import reset_deadline, seconds_left, set_deadline
from labelgate.interceptors import Handler, WrappingInterceptor

__all__ = ["DeadlineInterceptor", "note_request", "reset_deadline", "seconds_left", "set_deadline"]


def _remember(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """Note the deadline and the request; what the handler gets in place of ``request``."""
    set_deadline(context.time_remaining(), late_reply_dropped=True)
    if isinstance(request, bytes | Message):
        note_request(request)
        return request
    if hasattr(request, "__aiter__"):  # a client stream
        # The handler's task (and each task it starts, a copy of its context) sees the last
        # message read: a reply is released, and may be held, in a task that reads nothing.
        last = LastRead()
        note_request(last)
        return _each_noted(request, last)
    return request


async def _each_noted(requests: AsyncIterator[Any], last: LastRead) -> AsyncIterator[Any]:
    # Runs in the task that reads the stream, which is the one that holds the message while
    # it works on it; once the next is asked for, that task sees the last read too. Nothing is
    # kept past the next message read (which replaces it) or the stream's end.
    try:
        async for request in requests:
            last.message = request if isinstance(request, bytes | Message) else None
            note_request(last.message)
            yield request
            note_request(last)
    finally:
        last.message = None


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await behavior(_remember(request, context), context)

    return wrapped


def _wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
    # A streaming handler is either an async generator or a coroutine that writes to the context;
    # a synchronous handler (run in a thread by grpc) is left as it is.
    if inspect.isasyncgenfunction(behavior):
        return _streaming(behavior)
    if inspect.iscoroutinefunction(behavior):
        return _unary(behavior)
    return behavior


def _streaming(behavior: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        # Closed with this one, in this task: a generator left to the garbage collector is
        # closed later from another task, in another context, where what it holds (a call's
        # lease of request bytes, ``gateway/inflight.py``) could not be given back.
        async with contextlib.aclosing(behavior(_remember(request, context), context)) as items:
            async for item in items:
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
