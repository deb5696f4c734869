"""gRPC handlers for the Open Inference Protocol: the transport around the pipeline.

Each handler turns the RPC into a ``Call``, runs it through the pipeline, and turns any
``LabelgateError`` into a status with an ``ErrorInfo`` (``status.refusals``). Health and
metadata RPCs are admitted on the method and their replies classified as messages (the
catalog labels the OIP metadata messages), like any routed service.

Triton's model extensions the same way: ``ModelConfig`` and ``ModelStatistics`` are
classified messages; ``RepositoryModelLoad`` / ``Unload`` are decided in the request phase
(the default policy: ``model-admins`` only) before anything is sent; ``RepositoryIndex`` and
statistics of every model ask every upstream and are narrowed to the models the caller may
use (``gateway/repository.py``).

A request is parsed only once its caller is authenticated, and only within what its parse may
cost, known from its wire bytes (``gateway/wire_bounds.py``): parsed first, 16 MiB of empty
``inputs`` cost an anonymous caller's ModelInfer 1.6 s of the event loop and 704 MiB (review).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.deadline import read_noted
from labelgate.auth import Subject
from labelgate.calls import Call, Target, transport_peer, uuid4_hex
from labelgate.enforce import replies
from labelgate.errors import InvalidInput, LabelgateError, Unsupported
from labelgate.gateway import inflight, reasons, wire_bounds
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.repository import ABOUT_ONE_MODEL, ModelDirectory, SendTo, usable_or_unknown
from labelgate.gateway.status import refusals
from labelgate.gateway.upstream import Router, Upstream, UpstreamEdge
from labelgate.logs import get_logger
from labelgate.oip import reasons as oip_reasons
from labelgate.oip.rest import SHARED_MEMORY

SERVICE = "inference.GRPCInferenceService"
SESSION_HEADER = "x-labelgate-session"
log = get_logger(__name__)
M = TypeVar("M", bound=Message)

# method -> (request type, response type, model name field of the request or None)
UNARY_METHODS: dict[str, tuple[type[Message], type[Message], str | None]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse, None),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse, None),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse, None),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse, "name"),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse, "name"),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse, "model_name"),
    "ModelConfig": (ext.ModelConfigRequest, ext.ModelConfigResponse, "name"),
    # Policy decides these on the method before the upstream sees them (model_admin_methods).
    "RepositoryModelLoad": (ext.RepositoryModelLoadRequest, ext.RepositoryModelLoadResponse, "model_name"),
    "RepositoryModelUnload": (
        ext.RepositoryModelUnloadRequest,
        ext.RepositoryModelUnloadResponse,
        "model_name",
    ),
}
# About many models at once: fanned out, merged and narrowed per caller (ModelDirectory).
DIRECTORY_METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "RepositoryIndex": (ext.RepositoryIndexRequest, ext.RepositoryIndexResponse),
    "ModelStatistics": (ext.ModelStatisticsRequest, ext.ModelStatisticsResponse),
}
# A gateway cannot see what a client put in shared memory, so it cannot classify it: these are
# refused (recorded, after authentication), never sent upstream.
# Triton's shared-memory RPCs, served by name only (their messages are never parsed).
SHARED_MEMORY_METHODS = tuple(
    f"{kind}SharedMemory{action}"
    for kind in ("System", "Cuda")
    for action in ("Status", "Register", "Unregister")
)
STREAM_METHOD = "ModelStreamInfer"
# Replies whose size grows with the rows: serialized without upb's growing buffer.
_SERIALIZERS: dict[str, Callable[[Any], bytes]] = {"ModelInfer": replies.serialized_infer_response}


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
    return text or connection_session_id(peer)


@functools.lru_cache(maxsize=4096)
def connection_session_id(peer: str) -> str:
    """The session of a client that names none: one per connection (remembered: a
    connection's calls come one after another)."""
    return f"conn-{uuid.uuid5(uuid.NAMESPACE_URL, peer).hex[:16]}"


def make_call(context: grpc.aio.ServicerContext[Any, Any], method: str) -> Call:
    metadata = tuple(context.invocation_metadata() or ())
    peer = transport_peer(context.peer() or "")
    return Call(
        method=method,
        peer=peer,
        metadata=metadata,
        auth_context={k: list(v) for k, v in (context.auth_context() or {}).items()},
        session_id=client_session_id(metadata, peer),
        request_id=uuid4_hex(),
    )


def shared_memory_refusal() -> Unsupported:
    return Unsupported(
        reasons.SHARED_MEMORY_UNSUPPORTED,
        "a gateway cannot inspect shared memory, so it cannot classify what is there; "
        "send the tensors in the request",
    )


async def authenticated(pipeline: Pipeline, call: Call, body: bytes, model_field: int | None) -> Subject:
    """The caller, authenticated before anything of its request is parsed: an anonymous caller
    learns nothing of how its body parses, and spends nothing on it. The pipeline authenticates
    an admitted call again (a verified token is cached), inside its own record.

    A refusal is recorded and traced as the pipeline records any call it refuses: authenticated
    again inside the call's record (its span holds the authenticate stage), under the model
    the body names in its first field (``model_field``), read without parsing it."""
    try:
        return pipeline.authenticate(call)
    except LabelgateError as error:
        refused = error
    async with pipeline.recording(call, unparsed_target(call, body, model_field)):
        pipeline.authenticate(call)  # refused again, now inside the call's record
        raise refused  # had it passed this time, the first verdict stands
    raise refused


def unparsed_target(call: Call, body: bytes, model_field: int | None) -> Target:
    """What the refusal of a request that was not parsed is recorded under: the model its
    first field names (``wire_bounds.leading_text``), as its parse would have named it."""
    model = wire_bounds.leading_text(body, model_field) if model_field is not None else ""
    return Target(service=call.service, model=model)


def model_field_number(message_type: type[Message], name: str | None) -> int | None:
    field = message_type.DESCRIPTOR.fields_by_name.get(name) if name else None
    return field.number if field is not None else None


@functools.lru_cache(maxsize=8)
def infer_bounds(max_inputs: int, max_requested_outputs: int) -> wire_bounds.MessageBounds:
    """What a ``ModelInferRequest``'s walk knows besides its values: a tensor's contents are
    its data (a legitimate tensor holds millions of elements, bounded by its bytes), and its
    inputs and requested outputs are refused past their own limits with the reasons the
    pipeline gives once they are parsed (``bounds.check_target``): 16 MiB of empty inputs is
    TOO_MANY_INPUTS, as before, not MESSAGE_TOO_MANY_VALUES."""

    def too_many_inputs() -> LabelgateError:
        return InvalidInput(
            oip_reasons.TOO_MANY_INPUTS,
            f"the request has more than {max_inputs} inputs; at most {max_inputs} (limits.max_inputs)",
        )

    def too_many_outputs() -> LabelgateError:
        return InvalidInput(
            reasons.TOO_MANY_OUTPUTS,
            f"the request names more than {max_requested_outputs} outputs; at most "
            f"{max_requested_outputs} (limits.max_requested_outputs)",
        )

    fields = pb.ModelInferRequest.DESCRIPTOR.fields_by_name
    return wire_bounds.MessageBounds(
        copied=frozenset({pb.InferTensorContents.DESCRIPTOR.full_name}),
        elements={
            fields["inputs"].number: wire_bounds.ElementBound(max_inputs, too_many_inputs),
            fields["outputs"].number: wire_bounds.ElementBound(max_requested_outputs, too_many_outputs),
        },
    )


async def request_parsed(pipeline: Pipeline, message_type: type[M], body: bytes) -> M:
    """``body`` parsed as ``message_type`` within ``limits.max_message_values`` (and, for an
    inference request, ``infer_bounds``), and what its parse builds within
    ``limits.max_message_bytes``: refused unparsed past them, walked off the event loop when
    it may be large, and what it builds charged to the call's lease (``wire_bounds.parsed``)."""
    limits = pipeline.limits
    bounds = (
        infer_bounds(limits.max_inputs, limits.max_requested_outputs)
        if message_type is pb.ModelInferRequest
        else wire_bounds.MessageBounds()
    )
    return await wire_bounds.parsed(
        message_type, body, limits.max_message_values, bounds, max_parsed_bytes=limits.max_message_bytes
    )


async def parsed_for(
    pipeline: Pipeline,
    call: Call,
    subject: Subject,
    message_type: type[M],
    body: bytes,
    model_field: int | None,
) -> M:
    """A unary request's body, parsed once its caller is authenticated (``authenticated``):
    handlers take bytes, since a deserializer grpc runs would parse before anyone is known,
    and fail the call with its own UNKNOWN status and text, no reason, no record. A refusal
    is recorded under the caller (and ``unparsed_target``)."""
    try:
        return await request_parsed(pipeline, message_type, body)
    except LabelgateError as error:
        await pipeline.record_failure(call, subject, unparsed_target(call, body, model_field), error)
        raise


@contextlib.asynccontextmanager
async def serving(
    pipeline: Pipeline, context: grpc.aio.ServicerContext[Any, Any], size: int = 0
) -> AsyncIterator[None]:
    """A call's refusals turned into its status, and its request's ``size`` bytes held
    while it runs (a stream's messages are held as they are read, ``EachParsed``)."""
    async with refusals(context):
        with pipeline.request_bytes.call(size):
            yield


class EachParsed(Generic[M]):
    """A client stream's messages, each read as the handler asks for it, counted, and parsed
    (``parse``) once the stream's caller is authenticated (``stream_infer`` reads none before):
    a refusal reaches the handler's own ``refusals`` (and its record) like any other. Each
    message's bytes replace the last one's in its call's lease (``gateway/inflight.py``).

    Read with ``context.read()`` (``approvals.deadline.read_noted``), never through the request
    iterator grpc hands the handler: that iterator is an async generator in a reference cycle
    with its owner, holding the message it yielded last, and a refused stream never resumes it:
    one caller refusing a 15 MiB message a stream grew a gateway by as much each time, until the
    rare collection (``heap.py``; review), a completed stream's last message the same. Here a
    message is referenced only while it is read and parsed, and by the stream's ``LastRead``
    (counted in its lease). An iterator, not an async generator: one left unfinished by a
    refused stream holds nothing and is not left for the event loop to close."""

    __slots__ = ("_context", "_parse")

    def __init__(
        self, context: grpc.aio.ServicerContext[Any, Any], parse: Callable[[bytes], Awaitable[M]]
    ) -> None:
        self._context, self._parse = context, parse

    def __aiter__(self) -> EachParsed[M]:
        return self

    async def __anext__(self) -> M:
        body = await read_noted(self._context)
        if body is grpc.aio.EOF:
            # The caller half-closed: nothing holds its last message any more (``read_noted``
            # emptied the stream's LastRead), so its lease holds nothing either; else a caller
            # waiting on slow replies kept its last message counted until the stream's end.
            inflight.message_read(0)
            raise StopAsyncIteration
        inflight.message_read(len(body))
        return await self._parse(body)


CLASSIFICATION = "classification"


def check_no_shared_memory(request: pb.ModelInferRequest) -> None:
    """Refuse an inference request that points at shared memory (its tensors are not in it)
    or asks for the classification extension."""
    maps = [
        request.parameters,
        *(t.parameters for t in request.inputs),
        *(o.parameters for o in request.outputs),
    ]
    # Most requests carry no parameters at all: an empty map names nothing to look at.
    if any(name in SHARED_MEMORY for parameters in maps if parameters for name in parameters):
        raise shared_memory_refusal()
    # Nor the classification extension (tritonclient's class_count): an upstream that applies
    # it changes an output's datatype and values from what the catalog labels. REST refuses it
    # as it parses; gRPC passed it on (found by review).
    for output in request.outputs:
        if output.parameters and output.parameters.get(CLASSIFICATION) is not None:
            choice = output.parameters[CLASSIFICATION]
            if getattr(choice, choice.WhichOneof("parameter_choice") or "int64_param"):
                raise Unsupported(
                    oip_reasons.CLASSIFICATION_UNSUPPORTED, "the classification extension is not supported"
                )


class InferenceProxy:
    """Adapts the OIP RPCs (and Triton's extensions) to the pipeline's call shapes, routing
    each call to its upstream by model; owns no stage of its own."""

    def __init__(self, pipeline: Pipeline, upstreams: Upstream | Router) -> None:
        self.pipeline = pipeline
        self.router = upstreams if isinstance(upstreams, Router) else Router.single(upstreams)
        self.directory = ModelDirectory(pipeline, self.router)
        self._stubs: dict[tuple[int, str], Any] = {}

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            # Bytes in: the handler parses them once the caller is authenticated (parsed_for).
            name: grpc.unary_unary_rpc_method_handler(
                self._unary(name, request_type, response_type, model_field),
                response_serializer=_SERIALIZERS.get(name, response_type.SerializeToString),
            )
            for name, (request_type, response_type, model_field) in UNARY_METHODS.items()
        }
        for name, (request_type, response_type) in DIRECTORY_METHODS.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._directory(name, request_type, response_type),
                response_serializer=response_type.SerializeToString,
            )
        for name in SHARED_MEMORY_METHODS:
            # Bytes in: nothing of the request is read, and nothing is ever sent back.
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._refuse_shared_memory(name))
        handlers[STREAM_METHOD] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            request_deserializer=None,  # bytes: parsed as they are read (EachParsed)
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return handlers

    def stub(self, upstream: UpstreamEdge, name: str, response_type: type[Message]) -> Any:
        key = (id(upstream), name)
        found = self._stubs.get(key)
        if found is None:
            found = self._stubs[key] = upstream.unary_unary(
                f"/{SERVICE}/{name}", _serialize, response_type.FromString
            )
        return found

    def _unary(
        self, name: str, request_type: type[Message], response_type: type[Message], model_field: str | None
    ) -> Callable[..., Any]:
        method = f"/{SERVICE}/{name}"
        model_number = model_field_number(request_type, model_field)

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            async with serving(self.pipeline, context, len(body)):
                return await serve(body, make_call(context, method), context)
            raise AssertionError("unreachable: refusals() aborts the call")

        async def serve(body: bytes, call: Call, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            # The model routes the call and names it, but only an authenticated caller's
            # request is parsed to find it.
            subject = await authenticated(self.pipeline, call, body, model_number)
            request = await parsed_for(self.pipeline, call, subject, request_type, body, model_number)
            model = getattr(request, model_field) if model_field else ""

            async def send(message: Message) -> Message:
                upstream = self.router.for_model(model) if model_field else self.router.for_server()
                reply: Message = await self.stub(upstream, name, response_type)(
                    message,
                    metadata=upstream.metadata(call.metadata),
                    timeout=upstream.timeout(context),
                )
                return reply

            if name == "ModelInfer":
                # Checked once the caller is authenticated, inside the call's record.
                return await self.pipeline.infer(
                    call,
                    request,  # type: ignore[arg-type]
                    send,
                    check_no_shared_memory,
                )
            # A hidden model's configuration, metadata or readiness is refused as an unknown
            # model's is.
            gate = usable_or_unknown(self.pipeline, call, model) if name in ABOUT_ONE_MODEL else None
            return await self.pipeline.unary_message(
                call, Target(service=SERVICE, model=model), request, send, gate=gate
            )

        return handle

    def send_to(
        self, name: str, response_type: type[Message], call: Call, context: grpc.aio.ServicerContext[Any, Any]
    ) -> SendTo:
        async def send(upstream: UpstreamEdge, message: Message) -> Message:
            reply: Message = await self.stub(upstream, name, response_type)(
                message,
                metadata=upstream.metadata(call.metadata),
                timeout=upstream.timeout(context),
            )
            return reply

        return send

    def _directory(
        self, name: str, request_type: type[Message], response_type: type[Message]
    ) -> Callable[..., Any]:
        method = f"/{SERVICE}/{name}"
        model_number = model_field_number(request_type, "name")  # ModelStatistics's

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            call = make_call(context, method)
            send_to = self.send_to(name, response_type, call, context)
            async with serving(self.pipeline, context, len(body)):
                subject = await authenticated(self.pipeline, call, body, model_number)
                request = await parsed_for(self.pipeline, call, subject, request_type, body, model_number)
                if isinstance(request, ext.RepositoryIndexRequest):
                    return await self.directory.index(call, request, send_to)
                assert isinstance(request, ext.ModelStatisticsRequest)
                return await self.directory.statistics(call, request, send_to)
            raise AssertionError("unreachable: refusals() aborts the call")

        return handle

    def _refuse_shared_memory(self, name: str) -> Callable[..., Any]:
        method = f"/{SERVICE}/{name}"

        async def refuse(message: bytes) -> Message:
            raise shared_memory_refusal()

        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            async with serving(self.pipeline, context, len(request)):
                # Authenticated, decided and recorded like any call; never sent upstream.
                return await self.pipeline.unary_message(
                    make_call(context, method),
                    Target(service=SERVICE),
                    request,  # type: ignore[arg-type]
                    refuse,  # type: ignore[arg-type]
                )
            raise AssertionError("unreachable: refusals() aborts the call")

        return handle

    async def model_stream_infer(
        self, _bodies: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request and each reply is decided and enforced on its own; a refusal of any
        message ends the whole stream with that status. The upstream stream opens on the first
        admitted request, to the upstream its model routes to."""
        method = f"/{SERVICE}/{STREAM_METHOD}"
        call = make_call(context, method)
        upstream_call = RoutedStream(self.router, method, call, context)
        # ``_bodies`` (grpc's request iterator) is left unstarted: read with context.read.
        requests = EachParsed(context, functools.partial(request_parsed, self.pipeline, pb.ModelInferRequest))
        try:
            async with serving(self.pipeline, context):
                # Counted from here to its end; refused at once past the bound (``streams.OpenStreams``).
                with self.pipeline.open_streams.opened():
                    replies = self.pipeline.stream_infer(call, requests, upstream_call)
                    async with contextlib.aclosing(replies):  # closed in this task, with this one
                        async for reply in replies:
                            yield reply
        finally:
            upstream_call.cancel()


class RoutedStream:
    """The upstream side of ``ModelStreamInfer``, opened on the first request to the upstream
    its model routes to (so after the caller was authenticated: it carries the subject
    assertion). One stream has one upstream: a request for a model another upstream serves
    is refused (FAILED_PRECONDITION, ``STREAM_SPANS_UPSTREAMS``)."""

    def __init__(
        self, router: Router, method: str, call: Call, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.router, self.method, self.call, self.context = router, method, call, context
        self.upstream: UpstreamEdge | None = None
        self._stream: Any = None
        self._opened = asyncio.Event()

    async def write(self, request: pb.ModelInferRequest) -> None:
        check_no_shared_memory(request)
        upstream = self.router.for_model(request.model_name)
        if self._stream is None:
            self.upstream = upstream
            self._stream = upstream.stream_stream(
                self.method, _serialize, pb.ModelStreamInferResponse.FromString
            )(metadata=upstream.metadata(self.call.metadata), timeout=upstream.timeout(self.context))
            self._opened.set()
        elif upstream is not self.upstream:
            raise Unsupported(
                reasons.STREAM_SPANS_UPSTREAMS,
                "this stream's models are served by different upstreams; "
                "open one stream per model, or use ModelInfer",
            )
        await self._stream.write(request)

    async def done_writing(self) -> None:
        if self._stream is None:
            self._opened.set()  # no request: the stream ends with no reply
            return
        await self._stream.done_writing()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._replies()

    async def _replies(self) -> AsyncIterator[Any]:
        await self._opened.wait()
        if self._stream is None:
            return
        async for reply in self._stream:
            yield reply

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.cancel()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
