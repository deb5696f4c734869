"""gRPC handlers for the Open Inference Protocol: the transport around the pipeline.

Each handler turns the RPC into a ``Call``, runs it through the pipeline, and turns any
``LabelgateError`` into a status with an ``ErrorInfo`` (``status.refusals``). Health and
metadata RPCs are admitted on the method and their replies classified as messages (the
catalog labels the OIP metadata messages), like any routed service.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import Call, Target
from labelgate.gateway import metrics
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


MAX_SESSION_ID = 128
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def client_session_id(metadata: tuple[tuple[str, object], ...], peer: str) -> str:
    """The session the client names (``x-labelgate-session``: printable text, at most 128
    characters), else one per connection. It is only a name the client chose: what the call is
    recorded under is this bound to the verified caller (``recording.entries.recording_key``),
    so naming another subject's session never reaches that subject's recording."""
    named = next((value for key, value in metadata if key == SESSION_HEADER), None)
    if isinstance(named, bytes):
        named = named.decode("utf-8", errors="replace")
    text = _NOT_PRINTABLE.sub(" ", str(named)).strip()[:MAX_SESSION_ID] if named is not None else ""
    return text or f"conn-{uuid.uuid5(uuid.NAMESPACE_URL, peer).hex[:16]}"


def make_call(context: grpc.aio.ServicerContext, method: str) -> Call:
    metadata = tuple(context.invocation_metadata() or ())
    peer = context.peer() or ""
    return Call(
        method=method,
        peer=peer,
        metadata=metadata,
        auth_context={k: list(v) for k, v in (context.auth_context() or {}).items()},
        session_id=client_session_id(metadata, peer),
        request_id=uuid.uuid4().hex,
    )


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
                    metadata=self.upstream.metadata(call.metadata),
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
                    metadata=self.upstream.metadata(call.metadata),
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
