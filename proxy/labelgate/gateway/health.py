"""The gRPC health service (``grpc.health.v1.Health``) behind the gateway's own handlers.

grpc_health's servicer, registered as it ships, takes any request grpc hands it: a
``HealthCheckRequest`` of 15 MiB (an unknown field), from a caller with no credentials, was
kept for as long as its ``Watch`` stream stayed open, counted by no bound (12 such streams:
+555 MiB). Here a request is bytes in: larger than a health request ever needs, it is refused
before it is parsed; otherwise it holds its bytes of the request budget while the call runs,
and a ``Watch`` counts as an open stream of its own kind (``limits.max_health_watches``):
probes are not authenticated and not recorded, as before, so counted with the callers'
streams, an anonymous client holding 1,024 Watch streams left no stream to anyone else.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from labelgate.errors import InvalidInput
from labelgate.gateway import reasons
from labelgate.gateway.inference import serving
from labelgate.gateway.pipeline import Pipeline
from labelgate.oip import reasons as oip_reasons

SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# A request names one service: far less than this.
MAX_REQUEST_BYTES = 4096


def _parsed(body: bytes) -> health_pb2.HealthCheckRequest:
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidInput(
            oip_reasons.REQUEST_TOO_LARGE,
            f"a health request of {len(body)} bytes; at most {MAX_REQUEST_BYTES}",
        )
    try:
        return health_pb2.HealthCheckRequest.FromString(body)
    except DecodeError:
        raise InvalidInput(
            reasons.REQUEST_NOT_PARSED, "the request is not a valid grpc.health.v1.HealthCheckRequest message"
        ) from None


def health_handlers(servicer: health.aio.HealthServicer, pipeline: Pipeline) -> grpc.GenericRpcHandler:
    """``servicer``'s Check and Watch, each request bounded and counted first."""

    async def check(
        body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        async with serving(pipeline, context, len(body)):
            request = _parsed(body)
            return await servicer.Check(request, context)
        raise AssertionError("unreachable: refusals() aborts the call")

    async def watch(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with serving(pipeline, context, len(body)):
            request = _parsed(body)
            with pipeline.health_watches.opened():
                await servicer.Watch(request, context)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, response_serializer=health_pb2.HealthCheckResponse.SerializeToString
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, response_serializer=health_pb2.HealthCheckResponse.SerializeToString
            ),
        },
    )
