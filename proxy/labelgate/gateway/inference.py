"""gRPC handlers for the Open Inference Protocol: the transport around the pipeline.

Each handler turns the RPC into a ``Call``, runs it through the pipeline, and turns any
``LabelgateError`` into a status with an ``ErrorInfo``. Health and metadata RPCs carry
no data labels but still pass authentication and policy.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import strip_caller_metadata
from labelgate.errors import LabelgateError
from labelgate.gateway import metrics
from labelgate.gateway.pipeline import Call, Pipeline, Target, infer_target
from labelgate.gateway.status import abort
from labelgate.gateway.upstream import Upstream, upstream_error
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
                try:
                    return await stub(
                        message,
                        metadata=self.upstream.metadata(forwardable(call.metadata)),
                        timeout=self.upstream.timeout(context),
                    )
                except grpc.aio.AioRpcError as error:
                    raise upstream_error(error) from None

            try:
                if name == "ModelInfer":
                    return await self.pipeline.model_infer(call, request, send)
                return await self._metadata_call(call, request, model_field, send)
            except LabelgateError as error:
                await abort(context, error)
                raise AssertionError("unreachable") from None

        return handle

    async def _metadata_call(
        self, call: Call, request: Message, model_field: str | None, send: Callable
    ) -> Message:
        async with self.pipeline.recording(call) as outcome:
            subject = outcome.subject = self.pipeline.authenticate(call)
            model = getattr(request, model_field) if model_field else ""
            target = Target(service=SERVICE, model=model)
            outcome.model = model
            await self.pipeline.decide(call, subject, target, "request", [], outcome)
            return await self.pipeline.forward(send, request, outcome)

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request and each response is decided and enforced on its own.

        A refusal of any message ends the whole stream with that status: the client
        sees nothing the policy did not release.
        """
        method = f"/{SERVICE}/{STREAM_METHOD}"
        call = make_call(context, method)
        metrics.ACTIVE_STREAMS.inc()
        upstream_call = None
        pump: asyncio.Task | None = None
        try:
            subject = self.pipeline.authenticate(call)
            upstream_call = self.upstream.stream_stream(
                method, _serialize, pb.ModelStreamInferResponse.FromString
            )(
                metadata=self.upstream.metadata(forwardable(call.metadata)),
                timeout=self.upstream.timeout(context),
            )
            targets: dict[str, Target] = {}

            async def forward_requests() -> None:
                async for request in requests:
                    target = infer_target(request, method)
                    async with self.pipeline.recording(call) as outcome:
                        outcome.subject, outcome.model = subject, target.model
                        await self.pipeline.check_request(call, subject, target, outcome)
                    targets[request.id] = target
                    await upstream_call.write(request)
                await upstream_call.done_writing()

            pump = asyncio.create_task(forward_requests())
            async for reply in _replies(upstream_call, pump):
                if reply.error_message:
                    yield reply
                    continue
                response = reply.infer_response
                target = targets.get(response.id) or Target(service=SERVICE, model=response.model_name)
                async with self.pipeline.recording(call) as outcome:
                    outcome.subject, outcome.model, outcome.upstream_status = subject, target.model, "OK"
                    await self.pipeline.release_inference(call, subject, target, response, outcome)
                yield reply
            await pump
        except LabelgateError as error:
            await abort(context, error)
        except grpc.aio.AioRpcError as error:
            await abort(context, upstream_error(error))
        finally:
            metrics.ACTIVE_STREAMS.dec()
            if pump is not None and not pump.done():
                pump.cancel()
            if upstream_call is not None:
                upstream_call.cancel()


async def _replies(upstream_call: Any, pump: asyncio.Task) -> AsyncIterator[Any]:
    """Upstream replies, surfacing a refusal raised while forwarding requests at once."""
    reader = upstream_call.__aiter__()
    while True:
        read = asyncio.ensure_future(reader.__anext__())
        done, _ = await asyncio.wait({read, pump}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done and pump.exception() is not None:
            read.cancel()
            raise pump.exception()  # type: ignore[misc]
        try:
            reply = await read
        except StopAsyncIteration:
            return
        yield reply


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
