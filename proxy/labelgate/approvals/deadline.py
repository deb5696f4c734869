"""The caller's gRPC deadline, as the approval stage needs it: a held call never outlives it.

gRPC consumes ``grpc-timeout`` itself; only the servicer context knows the time left, and
the pipeline's ``Call`` does not carry it. ``DeadlineInterceptor`` (installed on the
gateway's server) records the absolute deadline in a context variable before each handler
runs; the handler's task, and everything it awaits, reads it with ``seconds_left()``.

It also notes the call's request (``hold.note_request``): the body as it came for a unary
call; for a client stream a holder of the message read last (``LastRead``: each message
replaces the one before as it is read, ``read_noted``, and the holder is emptied when the
handler ends), so that a held call is counted by the bytes it pins (``ApprovalService``'s
held-bytes bounds; a call with nothing noted is not held).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from labelgate.approvals.hold import LastRead, note_request
from labelgate.deadlines import reset_deadline, seconds_left, set_deadline
from labelgate.interceptors import Handler, WrappingInterceptor

__all__ = [
    "DeadlineInterceptor",
    "NotedReads",
    "note_request",
    "read_noted",
    "reset_deadline",
    "seconds_left",
    "set_deadline",
]


def _remember(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, LastRead | None]:
    """Note the deadline and the request; what the handler gets in place of ``request``, and
    a client stream's ``LastRead`` (emptied when the handler ends: ``_forget``)."""
    set_deadline(context.time_remaining(), late_reply_dropped=True)
    if isinstance(request, bytes | Message):
        note_request(request)
        return request, None
    if hasattr(request, "__aiter__"):  # a client stream
        # The handler's task, and each task it starts (a copy of its context), sees the
        # holder of the message read last, never a message itself: a reply is released, and
        # may be held, in a task that reads nothing, and a task started while a message was
        # noted kept that message for as long as it lived (the upstream call's, opened with
        # the first request: each stream's first request kept, uncounted, to its end).
        last = LastRead()
        note_request(last)
        _last_read.set(last)
        # grpc's request iterator is left unstarted (``read_noted``).
        return NotedReads(context), last
    return request, None


def _forget(last: LastRead | None) -> None:
    """The handler ended: its stream's last message is kept by nothing of it (the copies of its
    context in tasks that outlive it hold the emptied holder only)."""
    if last is not None:
        last.message = None


# The current client stream's holder of its last message (``_remember``), for ``read_noted``.
_last_read: contextvars.ContextVar[LastRead | None] = contextvars.ContextVar(
    "labelgate_stream_last_read", default=None
)


async def read_noted(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """A client stream's next message (``grpc.aio.EOF`` at its end), read with
    ``context.read()`` and noted as the stream's last read: it replaces the one before, and
    is kept until the next is read or the handler ends (as the stream's lease of the request
    bytes keeps its size, ``gateway/inflight.py``).

    Never through the request iterator grpc hands the handler: that is an async generator in
    a reference cycle with its owner, holding the message it yielded last; a stream refused
    after a read never resumes it, so the refused message stayed in memory until the cyclic
    collector ran (rarely: ``gateway/heap.py``): 15.6 MiB a refused stream, a completed one
    its last message too (review). Outside the interceptor (no stream noted), only read."""
    message = await context.read()
    last = _last_read.get()
    if last is not None:
        last.message = message if isinstance(message, bytes | Message) else None
    return message


class NotedReads:
    """A client stream's messages (``read_noted``), for a handler that iterates the request it
    is handed. An iterator, not an async generator: it holds no message, and one a refused
    stream leaves unfinished is not left for the event loop to close."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def __aiter__(self) -> NotedReads:
        return self

    async def __anext__(self) -> Any:
        message = await read_noted(self._context)
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        noted, last = _remember(request, context)
        try:
            return await behavior(noted, context)
        finally:
            _forget(last)

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
        noted, last = _remember(request, context)
        try:
            # Closed with this one, in this task: a generator left to the garbage collector is
            # closed later from another task, in another context, where what it holds (a call's
            # lease of request bytes, ``gateway/inflight.py``) could not be given back.
            async with contextlib.aclosing(behavior(noted, context)) as items:
                async for item in items:
                    yield item
        finally:
            _forget(last)

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
