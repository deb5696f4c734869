"""Triton's model extensions on the REST binding: the same calls as gRPC's, same pipeline.

- ``GET /v2/models/{m}[/versions/{v}]/config``: ``ModelConfig`` (the configuration itself);
- ``GET /v2/models/stats`` and ``GET /v2/models/{m}[/versions/{v}]/stats``: ``ModelStatistics``
  (``{"model_stats": [...]}``), narrowed like gRPC's (``gateway/repository.py``);
- ``POST /v2/repository/index`` (``{"ready": bool}``): the index as a JSON list, narrowed;
- ``POST /v2/repository/models/{m}/load`` and ``.../unload`` (``{"parameters": {...}}``):
  decided by policy before anything is sent (default: ``model-admins``); ``200`` with an
  empty body when done.

Each route makes the gRPC request, runs the call shape the gRPC transport runs, and writes the
reply the pipeline built as JSON (``labelgate.oip.extensions``). A body (index, load, unload) is
read only once the caller is authenticated: an unauthenticated request is refused (and
recorded) without its body being read or parsed, and a body refused is recorded too. As
rest.py's routes, each is served ``unless_hung_up`` (a body route once its body is read): a
caller that hangs up cancels its call, upstream too, and the call is recorded as cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.approvals.hold import note_request
from labelgate.calls import Call, Target
from labelgate.errors import LabelgateError
from labelgate.gateway.inference import SERVICE
from labelgate.gateway.repository import ModelDirectory, SendTo, usable_or_unknown
from labelgate.gateway.rest import RestGateway, bodiless, error_response, unless_hung_up
from labelgate.gateway.upstream import UpstreamEdge
from labelgate.oip import extensions as json_form

T = TypeVar("T")


class ExtensionRoutes:
    def __init__(self, gateway: RestGateway) -> None:
        self.gateway = gateway
        self.directory = ModelDirectory(gateway.pipeline, gateway.router)

    def routes(self) -> list[Route]:
        """Before the model routes: ``/v2/models/stats`` is not a model named ``stats``."""
        # Served ``unless_hung_up`` as rest.py's routes are: a caller who hangs up cancels its
        # call (upstream too), recorded as cancelled, not as delivered. The body routes start
        # the watch once their body is read (it reads what is left of the request).
        statistics = bodiless(self.statistics)
        routes = [
            Route("/v2/models/stats", statistics, methods=["GET"]),
            Route("/v2/repository/index", self.index, methods=["POST"]),
            Route("/v2/repository/models/{model}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.unload, methods=["POST"]),
        ]
        for path in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [
                Route(f"{path}/config", bodiless(self.config), methods=["GET"]),
                Route(f"{path}/stats", statistics, methods=["GET"]),
            ]
        return routes

    def _send_to(self, method: str, response_type: type[Message], call: Call) -> SendTo:
        async def send(upstream: UpstreamEdge, message: Message) -> Message:
            return await self.gateway.send_upstream(upstream, method, response_type, call, message)

        return send

    # -- routes ------------------------------------------------------------------------
    async def config(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version", "")
        message = ext.ModelConfigRequest(name=name, version=version)
        call = self.gateway._call(request, "ModelConfig")
        send = self.gateway._send("ModelConfig", ext.ModelConfigResponse, call, name)
        pipeline = self.gateway.pipeline

        async def run() -> Message:
            # As gRPC's: a hidden model's configuration is refused as an unknown model's is.
            gate = usable_or_unknown(pipeline, call, name)
            target = Target(service=SERVICE, model=name)
            note_request(message)  # what a hold for approval counts (``approvals/hold.py``)
            return await pipeline.unary_message(call, target, message, send, gate=gate)

        return await _answer(run, lambda reply: JSONResponse(json_form.config_json(reply)))

    async def statistics(self, request: Request) -> Response:
        name, version = request.path_params.get("model", ""), request.path_params.get("version", "")
        message = ext.ModelStatisticsRequest(name=name, version=version)
        call = self.gateway._call(request, "ModelStatistics")
        send_to = self._send_to("ModelStatistics", ext.ModelStatisticsResponse, call)
        note_request(message)  # this route's task runs the call
        return await _answer(
            lambda: self.directory.statistics(call, message, send_to),
            lambda reply: JSONResponse(json_form.message_json(reply)),
        )

    async def index(self, request: Request) -> Response:
        call = self.gateway._call(request, "RepositoryIndex")
        send_to = self._send_to("RepositoryIndex", ext.RepositoryIndexResponse, call)
        try:
            message = await self._parsed_body(request, call, json_form.index_request)
        except LabelgateError as error:
            return error_response(error)
        note_request(message)

        async def run() -> Message:
            return await self.directory.index(call, message, send_to)

        # The body is read: from here on a caller that hangs up cancels the call.
        answer = _answer(run, lambda reply: JSONResponse(json_form.index_json(reply)))
        return await unless_hung_up(request, answer)

    async def load(self, request: Request) -> Response:
        return await self._repository(request, "RepositoryModelLoad", ext.RepositoryModelLoadRequest)

    async def unload(self, request: Request) -> Response:
        return await self._repository(request, "RepositoryModelUnload", ext.RepositoryModelUnloadRequest)

    async def _repository(self, request: Request, method: str, request_type: type[Any]) -> Response:
        name = request.path_params["model"]
        response_type: type[Message] = getattr(ext, method + "Response")

        call = self.gateway._call(request, method)
        send = self.gateway._send(method, response_type, call, name)
        message: Any = request_type(model_name=name)

        def parse(body: bytes) -> None:
            json_form.repository_parameters(body, message.parameters)

        try:
            await self._parsed_body(request, call, parse)
        except LabelgateError as error:
            return error_response(error)
        note_request(message)

        async def run() -> Message:
            target = Target(service=SERVICE, model=name)
            return await self.gateway.pipeline.unary_message(call, target, message, send)

        # The body is read: from here on a caller that hangs up cancels the call.
        return await unless_hung_up(request, _answer(run, lambda _: Response(status_code=200)))

    async def _parsed_body(self, request: Request, call: Call, parse: Callable[[bytes], T]) -> T:
        """What ``parse`` makes of the body, read only once ``call``'s caller is authenticated;
        a refusal is recorded like any refused call's (``RestGateway.parsed_body``)."""
        target = Target(service=SERVICE, model=call_model(request))
        return await self.gateway.parsed_body(request, call, target, parse)


async def _answer(run: Callable[[], Awaitable[Any]], render: Callable[[Any], Response]) -> Response:
    try:
        reply = await run()
    except LabelgateError as error:
        return error_response(error)
    return render(reply)


def call_model(request: Request) -> str:
    return str(request.path_params.get("model", ""))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
