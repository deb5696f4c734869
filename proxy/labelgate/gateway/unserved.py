"""Methods the gateway does not serve: refused with a labelgate status, not grpc's bare one.

grpc answers a method no handler serves with UNIMPLEMENTED "Method not found!" and no
``ErrorInfo``; every other refusal a caller sees carries a reason (``status``). This handler
goes last, after every service the gateway serves, and answers any method that reached it so.
The method's name is the caller's text and is not repeated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from labelgate.errors import Unimplemented
from labelgate.gateway import reasons
from labelgate.gateway.status import abort


class UnservedMethods(grpc.GenericRpcHandler):
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        # Streams of raw bytes: every call shape is one on the wire, and nothing is read.
        return grpc.stream_stream_rpc_method_handler(_refuse)


async def _refuse(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await abort(
        context,
        Unimplemented(
            reasons.METHOD_NOT_SERVED,
            "the gateway serves no such method: the Open Inference Protocol, gRPC health, "
            "server reflection and the services its routes name",
        ),
    )
