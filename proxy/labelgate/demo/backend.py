"""The demo inference backend: a real Open Inference Protocol gRPC server with synthetic data.

``labelgate demo-backend --listen HOST:PORT`` runs it (``run``); tests and benchmarks can
also start it in process (``start`` / ``serve``). It serves:

- ``inference.GRPCInferenceService`` (Open Inference Protocol plus Triton's bidirectional
  ``ModelStreamInfer``) with the models ``customer-profile`` and ``sentiment``
  (``labelgate.demo.models``) and the test-support model ``_debug-metadata`` (below);
- Triton's model extensions: ``ModelConfig`` (the models' tensors and a ``max_rows``
  parameter), ``ModelStatistics`` (requests counted per model since start),
  ``RepositoryIndex``, ``RepositoryModelLoad`` / ``Unload`` (an unloaded model is listed
  ``UNAVAILABLE`` and every other call on it is ``NOT_FOUND`` until it is loaded again);
- ``labelgate.v1.demo.CustomerDirectory`` (``ListCustomers`` streams, ``GetCustomer``);
- ``grpc.health.v1.Health`` (SERVING) and server reflection.

Raw or typed outputs
--------------------
``tritonclient.grpc`` always sends its inputs in ``raw_input_contents`` and has no way to
ask for typed outputs (its ``InferRequestedOutput`` has no ``binary_data`` option; only the
HTTP client does), and Triton answers gRPC calls with ``raw_output_contents``. So, first
match wins:

1. request parameter ``binary_data_output`` (bool);
2. requested-output parameter ``binary_data`` (bool) on any requested output; requested
   outputs that disagree are refused (one response has one representation);
3. otherwise mirror the request: raw outputs when the inputs came in
   ``raw_input_contents`` (or there are no inputs), ``contents`` when they came typed.

Errors
------
Unknown model or version: ``NOT_FOUND``. Malformed input (missing or unknown input, wrong
datatype, shape or element count, bad raw bytes, more than ``MAX_ROWS`` rows, unknown
requested output): ``INVALID_ARGUMENT`` with a message naming the problem. On
``ModelStreamInfer`` a bad request gets a response with ``error_message`` (and an
``infer_response`` carrying only its ``id`` and ``model_name``) and the stream goes on.

What reached the backend (``_debug-metadata``)
----------------------------------------------
Gateway tests must prove that spoofed ``x-labelgate-*`` headers and the caller's
``authorization`` never reach the backend. The backend keeps the invocation metadata of
its last ``CALL_LOG_SIZE`` calls (every RPC of both services except health and
reflection; each request on a stream counts once). ``ModelInfer`` on model
``_debug-metadata`` (no inputs needed) returns BYTES outputs:

- ``key`` and ``value`` [K]: the metadata of this very call, in arrival order
  (``-bin`` values base64-encoded);
- ``recent`` [R]: one JSON object per earlier call, newest first:
  ``{"method": "ModelInfer", "model": "customer-profile", "metadata": [[key, value], ...]}``
  (``model`` is "" for calls without one).

Call it directly on the backend after a call through the gateway, and look at
``recent[0]``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import labelgate
from labelgate import logs
from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.demo import reasons
from labelgate.demo.data import customer
from labelgate.demo.models import (
    CUSTOMER_PROFILE,
    MAX_ROWS,
    PLATFORM,
    SENTIMENT,
    VERSION,
    DemoModel,
    TensorSpec,
)
from labelgate.demo.models import validate_inputs as validate_model_inputs
from labelgate.digits import whole_number
from labelgate.errors import ConfigError, InvalidInput, LabelgateError, NotFound
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_inputs, encode_outputs, uses_raw_inputs

SERVER_NAME = "labelgate-demo-backend"
DEBUG_MODEL = "_debug-metadata"
DEBUG_MODEL_VARIABLE = "LABELGATE_DEMO_DEBUG_MODEL"  # tests set it (tests/conftest.py)
CALL_LOG_SIZE = 64
# Large enough for MAX_ROWS customer rows in one message.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

log = logs.get_logger(__name__)


# --- what reached the backend ----------------------------------------------------------


@dataclass(frozen=True)
class SeenCall:
    method: str
    model: str
    metadata: tuple[tuple[str, str], ...]

    def as_json(self) -> str:
        return json.dumps(
            {"method": self.method, "model": self.model, "metadata": [list(m) for m in self.metadata]}
        )


def metadata_pairs(context: Context) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, value in context.invocation_metadata() or ():
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        pairs.append((key, text))
    return tuple(pairs)


@dataclass
class CallLog:
    """The invocation metadata of the last calls, newest last."""

    calls: collections.deque[SeenCall] = field(
        default_factory=lambda: collections.deque(maxlen=CALL_LOG_SIZE)
    )

    def record(self, method: str, context: Context, model: str = "") -> SeenCall:
        call = SeenCall(method, model, metadata_pairs(context))
        self.calls.append(call)
        return call

    def newest_first(self) -> list[SeenCall]:
        return list(reversed(self.calls))


def _debug_model(call_log: CallLog) -> DemoModel:
    def infer(inputs: dict[str, Tensor], outputs: Sequence[str]) -> list[Tensor]:
        # The newest entry is this very call (ModelInfer records before it infers).
        this_call, *earlier = call_log.newest_first()
        columns = {
            "key": [key.encode() for key, _ in this_call.metadata],
            "value": [value.encode() for _, value in this_call.metadata],
            "recent": [call.as_json().encode() for call in earlier],
        }
        return [Tensor(name, "BYTES", [len(columns[name])], columns[name]) for name in outputs]

    return DemoModel(
        name=DEBUG_MODEL,
        inputs=(),
        outputs=(TensorSpec("key", "BYTES"), TensorSpec("value", "BYTES"), TensorSpec("recent", "BYTES")),
        infer=infer,
    )


# --- inference service -----------------------------------------------------------------


def wants_raw_outputs(request: pb.ModelInferRequest) -> bool:
    """The raw-or-typed rule of the module docstring."""
    if "binary_data_output" in request.parameters:
        return _bool_parameter(
            request.parameters["binary_data_output"], "request parameter binary_data_output"
        )
    choices = {
        _bool_parameter(
            output.parameters["binary_data"], f"parameter binary_data of requested output '{output.name}'"
        )
        for output in request.outputs
        if "binary_data" in output.parameters
    }
    if len(choices) > 1:
        raise InvalidInput(
            reasons.MIXED_REPRESENTATION,
            "requested outputs disagree on binary_data; one response carries all outputs raw or all typed",
        )
    if choices:
        return choices.pop()
    return uses_raw_inputs(request) or not request.inputs


def _bool_parameter(parameter: pb.InferParameter, what: str) -> bool:
    if parameter.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidInput(reasons.BAD_PARAMETER, f"{what} must be a bool_param")
    return parameter.bool_param


Context = grpc.aio.ServicerContext[Any, Any]
# OIP datatype -> the model configuration's DataType.
CONFIG_TYPES = {"INT64": ext.TYPE_INT64, "FP32": ext.TYPE_FP32, "BYTES": ext.TYPE_STRING}


@dataclass
class ModelCounters:
    """What ModelStatistics reports for one model: requests that succeeded or failed, with
    their total time, and when the last one arrived (ms since the epoch)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    last_inference_ms: int = 0

    def statistics(self, name: str) -> ext.ModelStatistics:
        stats = ext.ModelStatistics(
            name=name,
            version=VERSION,
            last_inference=self.last_inference_ms,
            inference_count=self.success,
            execution_count=self.success,
        )
        stats.inference_stats.success.count, stats.inference_stats.success.ns = self.success, self.success_ns
        stats.inference_stats.fail.count, stats.inference_stats.fail.ns = self.fail, self.fail_ns
        return stats


def model_config(model: DemoModel) -> ext.ModelConfig:
    def tensors(specs: Sequence[TensorSpec], kind: type) -> list[Any]:
        return [kind(name=s.name, data_type=CONFIG_TYPES[s.datatype], dims=[-1]) for s in specs]

    config = ext.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend=PLATFORM,
        max_batch_size=0,  # inputs are [N]; the demo models take no batch dimension
        input=tensors(model.inputs, ext.ModelInput),
        output=tensors(model.outputs, ext.ModelOutput),
    )
    config.instance_group.add(name=model.name, kind=ext.ModelInstanceGroup.KIND_CPU, count=1)
    config.parameters["max_rows"].string_value = str(MAX_ROWS)
    return config


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: dict[str, DemoModel], call_log: CallLog) -> None:
        self.models = models
        self.call_log = call_log
        self.unloaded: set[str] = set()
        self.counters: dict[str, ModelCounters] = {name: ModelCounters() for name in models}

    def model(self, name: str, version: str | None) -> DemoModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models))
            raise NotFound(reasons.UNKNOWN_MODEL, f"no model named '{name}'; this server has: {known}")
        if name in self.unloaded:
            raise NotFound(
                reasons.MODEL_UNLOADED, f"model '{name}' is unloaded; load it with RepositoryModelLoad"
            )
        if version not in (None, "", VERSION):
            raise NotFound(
                reasons.UNKNOWN_VERSION, f"model '{name}' has no version '{version}'; versions: {VERSION}"
            )
        return model

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One request, counted in its model's statistics (a request for no known model is not)."""
        counters = self.counters.get(request.model_name)
        started = time.perf_counter_ns()
        try:
            response = self._infer(request)
        except LabelgateError:
            if counters is not None:
                counters.fail += 1
                counters.fail_ns += time.perf_counter_ns() - started
            raise
        if counters is not None:
            counters.success += 1
            counters.success_ns += time.perf_counter_ns() - started
            counters.last_inference_ms = time.time_ns() // 1_000_000
        return response

    def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        model = self.model(
            request.model_name, request.model_version if request.HasField("model_version") else None
        )
        inputs = validate_model_inputs(model, decode_inputs(request))
        known = model.output_names()
        names = [output.name for output in request.outputs] or known
        unknown = [name for name in names if name not in known]
        if unknown:
            raise InvalidInput(
                reasons.UNKNOWN_OUTPUT,
                f"model '{model.name}' has no output '{unknown[0]}'; its outputs: {', '.join(known)}",
            )
        if len(set(names)) != len(names):
            raise InvalidInput(reasons.DUPLICATE_OUTPUT, "an output is requested more than once")
        raw = wants_raw_outputs(request)
        response = pb.ModelInferResponse(model_name=model.name, model_version=VERSION, id=request.id)
        encode_outputs(response, model.infer(inputs, names), raw=raw)
        return response

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        self.call_log.record("ServerLive", context)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        self.call_log.record("ServerReady", context)
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        self.call_log.record("ServerMetadata", context)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=labelgate.__version__, extensions=[])

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        self.call_log.record("ModelReady", context, request.name)
        try:
            self.model(request.name, request.version if request.HasField("version") else None)
        except LabelgateError as error:
            await context.abort(error.code, error.message)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        self.call_log.record("ModelMetadata", context, request.name)
        try:
            model = self.model(request.name, request.version if request.HasField("version") else None)
        except LabelgateError as error:
            await context.abort(error.code, error.message)
        tensor_metadata = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[VERSION],
            platform=PLATFORM,
            inputs=[tensor_metadata(name=s.name, datatype=s.datatype, shape=[-1]) for s in model.inputs],
            outputs=[tensor_metadata(name=s.name, datatype=s.datatype, shape=[-1]) for s in model.outputs],
        )

    async def ModelConfig(self, request: ext.ModelConfigRequest, context: Context) -> ext.ModelConfigResponse:
        self.call_log.record("ModelConfig", context, request.name)
        try:
            model = self.model(request.name, request.version or None)
        except LabelgateError as error:
            await context.abort(error.code, error.message)
        return ext.ModelConfigResponse(config=model_config(model))

    async def ModelStatistics(
        self, request: ext.ModelStatisticsRequest, context: Context
    ) -> ext.ModelStatisticsResponse:
        self.call_log.record("ModelStatistics", context, request.name)
        if request.name:
            try:
                self.model(request.name, request.version or None)
            except LabelgateError as error:
                await context.abort(error.code, error.message)
        names = [request.name] if request.name else sorted(set(self.models) - self.unloaded)
        return ext.ModelStatisticsResponse(model_stats=[self.counters[n].statistics(n) for n in names])

    async def RepositoryIndex(
        self, request: ext.RepositoryIndexRequest, context: Context
    ) -> ext.RepositoryIndexResponse:
        self.call_log.record("RepositoryIndex", context)
        index = ext.RepositoryIndexResponse()
        for name in sorted(self.models):
            if name not in self.unloaded:
                index.models.add(name=name, version=VERSION, state="READY")
            elif not request.ready:
                index.models.add(name=name, version=VERSION, state="UNAVAILABLE", reason="unloaded")
        return index

    async def RepositoryModelLoad(
        self, request: ext.RepositoryModelLoadRequest, context: Context
    ) -> ext.RepositoryModelLoadResponse:
        self.call_log.record("RepositoryModelLoad", context, request.model_name)
        if request.model_name not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model named '{request.model_name}' to load")
        self.unloaded.discard(request.model_name)
        return ext.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: ext.RepositoryModelUnloadRequest, context: Context
    ) -> ext.RepositoryModelUnloadResponse:
        self.call_log.record("RepositoryModelUnload", context, request.model_name)
        if request.model_name not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model named '{request.model_name}' to unload")
        self.unloaded.add(request.model_name)
        return ext.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        self.call_log.record("ModelInfer", context, request.model_name)
        try:
            return self.infer(request)
        except LabelgateError as error:
            await context.abort(error.code, error.message)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            self.call_log.record("ModelStreamInfer", context, request.model_name)
            try:
                yield pb.ModelStreamInferResponse(infer_response=self.infer(request))
            except LabelgateError as error:
                echo = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                yield pb.ModelStreamInferResponse(error_message=error.message, infer_response=echo)


# --- customer directory ----------------------------------------------------------------


def customer_message(customer_id: int) -> demo_pb2.Customer:
    row = customer(customer_id)
    return demo_pb2.Customer(
        customer_id=row.customer_id,
        segment=row.segment,
        name=row.name,
        email=row.email,
        ssn=row.ssn,
        card_number=row.card_number,
        notes=row.notes,
        account_secret=row.account_secret,
    )


def _check_ids(ids: Sequence[int]) -> None:
    if len(ids) > MAX_ROWS:
        raise InvalidInput(reasons.TOO_MANY_ROWS, f"{len(ids)} customer ids; at most {MAX_ROWS} per call")
    negative = [i for i in ids if i < 0]
    if negative:
        raise InvalidInput(reasons.BAD_VALUE, f"customer ids are non-negative; got {negative[0]}")


class DirectoryService(demo_pb2_grpc.CustomerDirectoryServicer):
    def __init__(self, call_log: CallLog) -> None:
        self.call_log = call_log

    async def ListCustomers(
        self, request: demo_pb2.ListCustomersRequest, context: Context
    ) -> AsyncIterator[demo_pb2.Customer]:
        self.call_log.record("ListCustomers", context)
        try:
            _check_ids(request.customer_ids)
        except LabelgateError as error:
            await context.abort(error.code, error.message)
        for customer_id in request.customer_ids:
            yield customer_message(customer_id)

    async def GetCustomer(self, request: demo_pb2.GetCustomerRequest, context: Context) -> demo_pb2.Customer:
        self.call_log.record("GetCustomer", context)
        try:
            _check_ids([request.customer_id])
        except LabelgateError as error:
            await context.abort(error.code, error.message)
        return customer_message(request.customer_id)


# --- server ----------------------------------------------------------------------------


@dataclass
class DemoServer:
    server: grpc.aio.Server
    port: int
    call_log: CallLog

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.server.stop(grace)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    port = whole_number(port_text)
    if not sep or not host or port is None or port > 65535:
        raise ConfigError(
            reasons.INVALID_LISTEN_ADDRESS,
            f"--listen must be HOST:PORT (e.g. 127.0.0.1:8001), got '{listen}'",
        )
    return host, port


async def start(listen: str, debug_model: bool | None = None) -> DemoServer:
    """Start the backend on ``listen`` (port 0 picks a free port) and return it running.

    ``debug_model``: also serve ``_debug-metadata``. It echoes the metadata of recent calls,
    other callers' included (their subject assertions: found by review in the quickstart), so
    it is for tests only; None: as ``LABELGATE_DEMO_DEBUG_MODEL`` says (off unless set)."""
    host, _ = parse_listen(listen)
    call_log = CallLog()
    if debug_model is None:
        debug_model = os.environ.get(DEBUG_MODEL_VARIABLE, "").lower() in ("1", "true", "yes")
    served = (CUSTOMER_PROFILE, SENTIMENT, *((_debug_model(call_log),) if debug_model else ()))
    models = {model.name: model for model in served}
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Without this a second server on the same port starts fine and silently shares traffic.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(models, call_log), server)
    demo_pb2_grpc.add_CustomerDirectoryServicer_to_server(DirectoryService(call_log), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    services = [
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        demo_pb2.DESCRIPTOR.services_by_name["CustomerDirectory"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as error:
        raise ConfigError(reasons.LISTEN_FAILED, f"cannot listen on {listen}: {error}") from None
    if port == 0:
        raise ConfigError(reasons.LISTEN_FAILED, f"cannot listen on {listen}")
    await server.start()
    log.info("demo_backend_started", host=host, port=port, models=sorted(models))
    return DemoServer(server, port, call_log)


async def serve(listen: str) -> grpc.aio.Server:
    """Start the backend in the running event loop; the caller stops the returned server."""
    return (await start(listen)).server


async def _run_until_signalled(listen: str, debug_model: bool) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the port opens: whoever sees the port may signal us at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    backend = await start(listen, debug_model)
    await stopping.wait()
    log.info("demo_backend_stopping", port=backend.port)
    await backend.stop(grace=1.0)


def run(listen: str, debug_model: bool = False) -> None:
    """Serve until SIGTERM or SIGINT (blocking); the ``labelgate demo-backend`` command."""
    logs.configure()
    asyncio.run(_run_until_signalled(listen, debug_model))
