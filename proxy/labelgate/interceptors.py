"""A gRPC server interceptor that wraps each method's handler once, not on every call.

grpc asks a server interceptor for the handler on every call; a service's handler is the
same object each time, so its wrapper can be too. Subclasses say how to wrap a handler;
this keeps the wrapper per method while grpc hands back the same handler object (a changed
handler is wrapped afresh, never served by an old wrapper).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only
# Methods whose wrapper is remembered; past this many (a route's opaque methods are named by
# callers) a handler is wrapped afresh on each call instead.
MAX_REMEMBERED = 512


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}  # method -> (handler, its wrapper)

    def wrap(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(method, handler)
        if known is not None or len(self._wrapped) < MAX_REMEMBERED:
            self._wrapped[method] = (handler, wrapped)
        return wrapped
