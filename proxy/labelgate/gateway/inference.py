"""gRPC handlers for the Open Inference Protocol: the transport around the pipeline.

Each handler turns the RPC into a ``Call``, runs it through the pipeline, and turns any
``LabelgateError`` into a status with an ``ErrorInfo`` (``status.refusals``). Health and
metadata RPCs are admitted on the method and their replies classified as messages (the
catalog labels the OIP metadata messages), like any routed service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import strip_caller_metadata
from labelgate.gateway import metrics
from labelgate.gateway.calls import Call, Target
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.status import refusals
from labelgate.gateway.upstream import Upstream
from labelgate.logs import get_logger

SERVICE = "inference.GRPCInferenceService"
SESSION_HEADER = "x-labelgate-session"
log = get_logger(__name__)

# method -> (request type, response type, model name field of the request or None)
UNARY_METHODS: dict[str, tuple[type[Message], type[Message], str | None]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse, None),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse, None),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse, None),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse, "name"),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse, "name"),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse, "model_name"),
}
STREAM_METHOD = "ModelStreamInfer"


def make_call(context: grpc.aio.ServicerContext, method: str) -> Call:
    metadata = tuple(context.invocation_metadata() or ())
    session = next((value for key, value in metadata if key == SESSION_HEADER), None)
    peer = context.peer() or ""
    return Call(
        method=method,
        peer=peer,
        metadata=metadata,
        auth_context={k: list(v) for k, v in (context.auth_context() or {}).items()},
        # One session per connection unless the client names one.
        session_id=str(session)[:128] if session else f"conn-{uuid.uuid5(uuid.NAMESPACE_URL, peer).hex[:16]}",
        request_id=uuid.uuid4().hex,
    )


def forwardable(metadata: tuple[tuple[str, Any], ...]) -> list[tuple[str, Any]]:
    """Caller metadata that may travel upstream: no credentials, nothing of labelgate's."""
    return [(k, v) for k, v in strip_caller_metadata(metadata) if not k.startswith("x-labelgate-")]


class InferenceProxy:
    """Adapts the OIP RPCs to the pipeline's call shapes; owns no stage of its own."""

    def __init__(self, pipeline: Pipeline, upstream: Upstream) -> None:
        self.pipeline = pipeline
        self.upstream = upstream

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._unary(name, response_type, model_field),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
            for name, (request_type, response_type, model_field) in UNARY_METHODS.items()
        }
        handlers[STREAM_METHOD] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return handlers

    def _unary(self, name: str, response_type: type[Message], model_field: str | None) -> Callable:
        method = f"/{SERVICE}/{name}"
        stub = self.upstream.unary_unary(method, _serialize, response_type.FromString)

        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            call = make_call(context, method)

            async def send(message: Message) -> Message:
                return await stub(
                    message,
                    metadata=self.upstream.metadata(forwardable(call.metadata)),
                    timeout=self.upstream.timeout(context),
                )

            async with refusals(context):
                if name == "ModelInfer":
                    return await self.pipeline.infer(call, request, send)
                target = Target(service=SERVICE, model=getattr(request, model_field) if model_field else "")
                return await self.pipeline.unary_message(call, target, request, send)
            raise AssertionError("unreachable: refusals() aborts the call")

        return handle

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request and each reply is decided and enforced on its own; a refusal of any
        message ends the whole stream with that status."""
        method = f"/{SERVICE}/{STREAM_METHOD}"
        call = make_call(context, method)
        metrics.ACTIVE_STREAMS.inc()
        upstream_call = None
        try:
            async with refusals(context):
                upstream_call = self.upstream.stream_stream(
                    method, _serialize, pb.ModelStreamInferResponse.FromString
                )(
                    metadata=self.upstream.metadata(forwardable(call.metadata)),
                    timeout=self.upstream.timeout(context),
                )
                async for reply in self.pipeline.stream_infer(call, requests, upstream_call):
                    yield reply
        finally:
            metrics.ACTIVE_STREAMS.dec()
            if upstream_call is not None:
                upstream_call.cancel()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
