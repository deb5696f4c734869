"""The standard gRPC server metrics, named as go-grpc-prometheus and its ports name them, so
the dashboards and alerts operators already have for gRPC services work on the gateway too:

- ``grpc_server_started_total{grpc_type, grpc_service, grpc_method}``
- ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}``
- ``grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}`` (histogram)
- ``grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method}`` (streamed replies)

Every RPC the gRPC listener serves is counted (inference, routed services, health,
reflection), refused ones too. A service is named only when the gateway serves it, a method
only when the gateway also has its descriptor: the methods of an opaque route are counted as
``other`` of their service, and calls to any service the gateway does not serve (the
catch-all ``UnservedMethods`` answers them) as service and method ``unserved``
(``method_labels``: the caller chooses those names, before authentication). The
labelgate-specific view of a call (outcome, model, the decision) stays in
``labelgate_calls_total`` and ``labelgate_call_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from labelgate.errors import drop_frames
from labelgate.gateway.metrics import child, method_labels
from labelgate.interceptors import Handler, WrappingInterceptor

_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
STARTED = Counter("grpc_server_started_total", "RPCs started on the server", _LABELS)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code", [*_LABELS, "grpc_code"]
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
MSG_SENT = Counter("grpc_server_msg_sent_total", "Messages sent by the server on streaming RPCs", _LABELS)


def _code_name(context: grpc.aio.ServicerContext[Any, Any], failed: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failed is not None and not isinstance(failed, grpc.aio.AbortError):
        # An exception the handler did not turn into a status: grpc answers UNKNOWN, or
        # CANCELLED when the caller went away.
        return "CANCELLED" if isinstance(failed, asyncio.CancelledError) else "UNKNOWN"
    return "OK"


class _Measured:
    """The labels of one method and the bookkeeping of one of its RPCs."""

    def __init__(self, grpc_type: str, full_method: str) -> None:
        service, method = method_labels(full_method)
        self.labels = (grpc_type, service, method)
        # The method's own series, found once (children are never removed).
        self._started = child(STARTED, *self.labels)
        self._seconds = child(HANDLING_SECONDS, *self.labels)

    def start(self) -> float:
        self._started.inc()
        return time.perf_counter()

    def finish(self, started: float, context: Any, failed: BaseException | None) -> None:
        child(HANDLED, *self.labels, _code_name(context, failed)).inc()
        self._seconds.observe(time.perf_counter() - started)


def _unary_response(measured: _Measured, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapped(request: Any, context: Any) -> Any:
        started = measured.start()
        try:
            reply = await behaviour(request, context)
        except BaseException as error:
            measured.finish(started, context, error)
            # The outermost frame of every call: the handler's frames are in a reference cycle
            # with grpc's abort error (``drop_frames``), so without this a refused call's
            # request lived until a collection (60 concurrent refused 15 MiB calls: 2.5 GB).
            drop_frames(error)
            request = None
            raise
        measured.finish(started, context, None)
        return reply

    return wrapped


def _streamed_response(measured: _Measured, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behaviour):  # writes with context.write: a coroutine
        return _unary_response(measured, behaviour)

    async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
        started = measured.start()
        try:
            # Closed with this one, in this task (``approvals.deadline._streaming``).
            async with contextlib.aclosing(behaviour(request, context)) as replies:
                async for reply in replies:
                    child(MSG_SENT, *measured.labels).inc()
                    yield reply
        except BaseException as error:
            measured.finish(started, context, error)
            drop_frames(error)  # see above
            request = None
            raise
        measured.finish(started, context, None)

    return wrapped


class GrpcServerMetrics(WrappingInterceptor):
    def wrap(self, method: str, handler: Handler) -> Handler:
        return _measured_handler(method, handler)


def _measured_handler(method: str, handler: Handler) -> Handler:
    serialize = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(_Measured("unary", method), handler.unary_unary), **serialize
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(_Measured("client_stream", method), handler.stream_unary), **serialize
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streamed_response(_Measured("server_stream", method), handler.unary_stream), **serialize
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _streamed_response(_Measured("bidi_stream", method), handler.stream_stream), **serialize
        )
    return handler
