"""The Open Inference Protocol's REST binding (KServe v2): one more transport of the pipeline.

Each route turns the HTTP request into the gRPC message the pipeline knows
(``labelgate.oip.rest``), runs the same call shape the gRPC transport runs (``infer``,
``unary_message``) with the same authentication (the ``Authorization`` header and API
keys arrive as metadata), and turns the reply the pipeline built back into JSON (and
Triton's binary tensors). The upstream is the same gRPC channel. Errors are the binding's
``{"error": ...}`` with the stable reason beside it; a body is read and parsed only once
its caller is authenticated, and every refusal is recorded. Anything that is not a
``LabelgateError`` is a fixed 500 of that same form (``LastResort``), never its text.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import grpc
import uvicorn
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.deadline import note_request, seconds_left, set_deadline
from labelgate.calls import Call, Target, rest_peer
from labelgate.config import RestSettings
from labelgate.digits import whole_number
from labelgate.errors import (
    InvalidInput,
    LabelgateError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Stopping,
    Unsupported,
)
from labelgate.gateway import inflight, reasons
from labelgate.gateway.bounds import check_request_inputs
from labelgate.gateway.inference import SERVICE, client_session_id, shared_memory_refusal
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.repository import ABOUT_ONE_MODEL, usable_or_unknown
from labelgate.gateway.rest_limits import listening_sockets, protocol_for, throttle_accept_errors
from labelgate.gateway.upstream import Router, Upstream, UpstreamEdge, UpstreamStatus
from labelgate.logs import get_logger
from labelgate.oip import reasons as oip_reasons
from labelgate.oip import rest

log = get_logger(__name__)
Reply = TypeVar("Reply", bound=Message)
T = TypeVar("T")

# The HTTP status of a gRPC status code, for errors the upstream or the gateway raised.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def error_response(error: LabelgateError) -> Response:
    # An upstream's status keeps its code; the gateway's own errors know their HTTP status.
    status = _HTTP_STATUS.get(error.code, 502) if isinstance(error, UpstreamStatus) else error.http_status
    body = {"error": error.message, "reason": error.reason, **{k: str(v) for k, v in error.details.items()}}
    # ASCII-escaped: a message quoting a caller's text with a lone surrogate still encodes
    # (JSONResponse's UTF-8 would raise on it).
    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json")


class EncodingUnsupported(Unsupported):
    http_status = 415


class MethodNotAllowed(InvalidInput):
    http_status = 405


async def route_refusal(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no route; a route without that method), in the binding's
    error form rather than its ``text/plain``. Nothing of the request is read: not its body,
    not its caller (the path is not logged either: it is the caller's text)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    error: LabelgateError
    if status == 405:
        error = MethodNotAllowed(oip_reasons.REST_METHOD_NOT_ALLOWED, "this route does not take that method")
    else:
        error = NotFound(oip_reasons.REST_ROUTE_UNKNOWN, "no such route in the REST binding")
    log.info("REST request refused", reason=error.reason, method=request.method[:16])
    response = error_response(error)
    allow = exc.headers.get("Allow") if isinstance(exc, HTTPException) and exc.headers else None
    if allow is not None:
        response.headers["Allow"] = allow
    return response


class LastResort:
    """Any exception a route lets through becomes a fixed 500 in the binding's error form, and
    only its type is logged. Starlette's own handler would answer ``text/plain`` and re-raise,
    and the server would log the traceback, whose text may quote a caller's or an upstream's
    data. A pure ASGI middleware, inside Starlette's: the exception stops here. So does the
    cancellation of a request's task (uvicorn's, past a stop's grace): one line, and a 503
    ``GATEWAY_STOPPING`` the caller may retry elsewhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: AsgiMessage) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            # uvicorn cancels the request's task when a stop's grace runs out (nothing else
            # cancels it); the call was cancelled on the way (held calls abandoned, every call
            # recorded). Nothing needs the cancellation to go on: uvicorn never reads the task's
            # result, and the gateway's stop waits only for the task to end. Re-raised, it would
            # reach uvicorn's ``run_asgi``, which logs it with a traceback and answers its own
            # text/plain 500. Ended here, the caller is told the gateway stopped (503).
            # A CancelledError while the task is not being cancelled (another task's, re-raised
            # by its result) is an unexpected error like any other: the fixed 500.
            task = asyncio.current_task()
            task_cancelled = task is not None and task.cancelling() > 0
            if task is not None and task_cancelled:
                task.uncancel()  # handled here, as a structured block would count it
            log.warning("REST request cancelled", task_cancelled=task_cancelled, response_started=started)
            stopping = Stopping(reasons.GATEWAY_STOPPING, "the gateway stopped while the call ran; retry")
            await self._answer(scope, receive, send, started, stopping if task_cancelled else None)
        except Exception as error:
            log.error("unexpected error in a REST route", error_type=type(error).__name__)
            await self._answer(scope, receive, send, started)

    @staticmethod
    async def _answer(
        scope: Scope, receive: Receive, send: Send, started: bool, error: LabelgateError | None = None
    ) -> None:
        """``error``, or a fixed 500, unless a response is under way (then the connection ends)."""
        if scope["type"] != "http" or started:
            return
        if error is None:
            error = LabelgateError(reasons.INTERNAL_ERROR, "internal error in the gateway")
        try:
            await error_response(error)(scope, receive, send)
        except asyncio.CancelledError:  # cancelled again while answering: nobody to tell
            log.warning("REST request cancelled while answering")


class BrowserRefused(PermissionDenied):
    """A request a browser sent for a page (``NoBrowserPages``)."""


# What a browser says of a request another site's page made it send (Fetch Metadata).
_OTHER_SITES = frozenset({b"cross-site", b"same-site"})


def sent_for_a_page(headers: list[tuple[bytes, bytes]]) -> bool:
    """A request a browser sent for a web page: it has an ``Origin`` header (any value,
    ``null`` too), or ``Sec-Fetch-Site`` says another site (or a sibling subdomain) made it.
    Browsers add both to cross-origin POSTs and page code cannot remove them; curl,
    ``tritonclient.http`` and other HTTP clients send neither."""
    for name, value in headers:
        if name == b"origin" or (name == b"sec-fetch-site" and value.strip().lower() in _OTHER_SITES):
            return True
    return False


class NoBrowserPages:
    """Refuse (403 ``REST_BROWSER_REQUEST_REFUSED``) every request of the data-path REST app a
    browser sent for a page, before anything of it is read. The binding reads ``text/plain``
    and form bodies as JSON (``check_content_type``: what ``curl -d`` and tritonclient's aio
    client send), so a page on any site could POST an inference, or a model load, as a CORS
    "simple" request, with no preflight; a browser holding a client certificate (mTLS) or a
    session for the gateway's host would attach it. No page is served here: the approvals
    inbox and the admin API are other apps on other listeners."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sent_for_a_page(scope["headers"]):
            refused = BrowserRefused(
                reasons.REST_BROWSER_REQUEST_REFUSED,
                "the REST binding takes no requests from web pages: one with an Origin header, "
                "or a Sec-Fetch-Site of cross-site or same-site, is refused; call it from a "
                "program (curl, tritonclient), not a browser",
            )
            log.info("REST request refused", reason=refused.reason, method=scope["method"][:16])
            await error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HeldRequestBytes:
    """Each request's body, as it is read, holds its bytes of the process's budget until the
    response is sent (``gateway/inflight.py``; ``RestGateway._body`` counts them)."""

    def __init__(self, app: ASGIApp, budget: inflight.RequestBytes) -> None:
        self.app, self.budget = app, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.budget.call():
            await self.app(scope, receive, send)


class RestGateway:
    def __init__(self, pipeline: Pipeline, upstreams: Upstream | Router, max_body_bytes: int) -> None:
        self.pipeline = pipeline
        # Calls route by model like gRPC's (``Router``); server-wide calls go to its default.
        self.router = upstreams if isinstance(upstreams, Router) else Router.single(upstreams)
        self.max_body_bytes = max_body_bytes
        self._stubs: dict[tuple[int, str], Any] = {}

    def app(self) -> Starlette:
        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        routes = [
            Route("/v2", bodiless(self.server_metadata), methods=["GET"]),
            Route(
                "/v2/health/live",
                bodiless(self.health("ServerLive", pb.ServerLiveRequest, "live")),
                methods=["GET"],
            ),
            Route(
                "/v2/health/ready",
                bodiless(self.health("ServerReady", pb.ServerReadyRequest, "ready")),
                methods=["GET"],
            ),
        ]
        # Triton's model extensions, before the model routes (``/v2/models/stats``). Imported
        # here because that module builds on this one.
        from labelgate.gateway.rest_extensions import ExtensionRoutes

        routes += ExtensionRoutes(self).routes()
        for path in (model, versioned):
            routes += [
                Route(path, bodiless(self.model_metadata), methods=["GET"]),
                Route(f"{path}/ready", bodiless(self.model_ready), methods=["GET"]),
                Route(f"{path}/infer", self.infer, methods=["POST"]),
            ]
        routes += self.shared_memory_routes()
        app = Starlette(
            routes=routes,
            middleware=[
                Middleware(LastResort),
                Middleware(NoBrowserPages),
                Middleware(HeldRequestBytes, self.pipeline.request_bytes),
            ],
            exception_handlers={404: route_refusal, 405: route_refusal},
        )
        # A trailing slash is an unknown route (404), not a redirect built from the caller's
        # Host header (a 307 asks the client to send its body again, wherever that points).
        app.router.redirect_slashes = False
        return app

    def shared_memory_routes(self) -> list[Route]:
        """Triton's shared-memory extension (every URL ``tritonclient.http`` uses), refused as
        gRPC refuses it: authenticated and recorded, its body never read, nothing sent upstream."""
        routes = []
        for kind, url in (("System", "systemsharedmemory"), ("Cuda", "cudasharedmemory")):
            routes += [
                Route(f"/v2/{url}/status", self.shared_memory(f"{kind}SharedMemoryStatus"), methods=["GET"]),
                Route(
                    f"/v2/{url}/region/{{region}}/status",
                    self.shared_memory(f"{kind}SharedMemoryStatus"),
                    methods=["GET"],
                ),
                Route(
                    f"/v2/{url}/region/{{region}}/register",
                    self.shared_memory(f"{kind}SharedMemoryRegister"),
                    methods=["POST"],
                ),
                Route(
                    f"/v2/{url}/unregister",
                    self.shared_memory(f"{kind}SharedMemoryUnregister"),
                    methods=["POST"],
                ),
                Route(
                    f"/v2/{url}/region/{{region}}/unregister",
                    self.shared_memory(f"{kind}SharedMemoryUnregister"),
                    methods=["POST"],
                ),
            ]
        return routes

    # -- the call shapes ---------------------------------------------------------------
    def _call(self, request: Request, method: str) -> Call:
        metadata = tuple((key.lower(), value) for key, value in request.headers.items())
        client = request.client
        peer = rest_peer(client.host, client.port) if client else "rest"
        return Call(
            method=f"/{SERVICE}/{method}",
            peer=peer,
            metadata=metadata,
            auth_context={},
            session_id=client_session_id(metadata, peer),
            request_id=uuid.uuid4().hex,
        )

    def _send(
        self, method: str, response_type: type[Message], call: Call, model: str | None = None
    ) -> Callable[[Message], Awaitable[Message]]:
        async def send(message: Message) -> Message:
            # Routed when sent: after authentication and the request phase, like gRPC's.
            upstream = self.router.for_server() if model is None else self.router.for_model(model)
            return await self.send_upstream(upstream, method, response_type, call, message)

        return send

    async def send_upstream(
        self, upstream: UpstreamEdge, method: str, response_type: type[Message], call: Call, message: Message
    ) -> Message:
        """One unary call to ``upstream``, within the caller's deadline (the ``timeout``
        parameter) and the upstream's own timeout."""
        key = (id(upstream), method)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = upstream.unary_unary(
                f"/{SERVICE}/{method}", _serialize, response_type.FromString
            )
        timeout = _within_deadline(upstream.settings.timeout_seconds)
        if timeout <= 0:  # a grpc.aio call with timeout 0 was seen to succeed: refuse here
            raise UpstreamStatus(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the caller's deadline passed before the upstream was asked",
            )
        reply: Message = await stub(message, metadata=upstream.metadata(call.metadata), timeout=timeout)
        return reply

    async def _unary(
        self, request: Request, method: str, message: Message, response_type: type[Reply], model: str = ""
    ) -> Reply:
        call = self._call(request, method)
        target = Target(service=SERVICE, model=model)
        send = self._send(method, response_type, call, model or None)
        note_request(message)  # what a hold for approval counts (``approvals/hold.py``)
        # As gRPC's: a hidden model's metadata or readiness is refused as an unknown model's is.
        gate = usable_or_unknown(self.pipeline, call, model) if method in ABOUT_ONE_MODEL else None
        # The reply is built from the upstream's, parsed as response_type.
        return cast(Reply, await self.pipeline.unary_message(call, target, message, send, gate=gate))

    # -- routes ------------------------------------------------------------------------
    def shared_memory(self, method: str) -> Callable[..., Any]:
        async def refuse(message: Message) -> Message:
            raise shared_memory_refusal()

        async def route(request: Request) -> Response:
            call = self._call(request, method)
            message = pb.ServerLiveRequest()
            note_request(message)
            try:
                # As gRPC's: authenticated, decided and recorded like any call (never sent).
                await self.pipeline.unary_message(call, Target(service=SERVICE), message, refuse)
            except LabelgateError as error:
                return error_response(error)
            raise AssertionError("unreachable: a shared-memory call is always refused")

        return route

    async def server_metadata(self, request: Request) -> Response:
        try:
            reply = await self._unary(
                request, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse
            )
        except LabelgateError as error:
            return error_response(error)
        return JSONResponse(rest.message_json(reply))

    def health(self, method: str, request_type: type[Message], field: str) -> Callable[..., Any]:
        response_type = getattr(pb, method + "Response")

        async def route(request: Request) -> Response:
            try:
                reply = await self._unary(request, method, request_type(), response_type)
            except LabelgateError as error:
                return error_response(error)
            state = bool(getattr(reply, field))
            return JSONResponse({field: state}, status_code=200 if state else 503)

        return route

    async def model_metadata(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version", "")
        message = pb.ModelMetadataRequest(name=name, version=version)
        try:
            reply = await self._unary(request, "ModelMetadata", message, pb.ModelMetadataResponse, name)
        except LabelgateError as error:
            return error_response(error)
        return JSONResponse(rest.message_json(reply))

    async def model_ready(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version", "")
        message = pb.ModelReadyRequest(name=name, version=version)
        try:
            reply = await self._unary(request, "ModelReady", message, pb.ModelReadyResponse, name)
        except LabelgateError as error:
            return error_response(error)
        return JSONResponse({"ready": reply.ready}, status_code=200 if reply.ready else 503)

    async def infer(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version", "")
        call = self._call(request, "ModelInfer")
        limit, limits = self.max_body_bytes, self.pipeline.limits
        length = request.headers.get(rest.HEADER_LENGTH)

        def parse(body: bytes) -> tuple[pb.ModelInferRequest, rest.ReplyFormat]:
            parsed = rest.infer_request(
                name, version, body, length, max_raw_bytes=limit, max_inputs=limits.max_inputs
            )
            # Here, not only in the pipeline's admit: refused as it is parsed, the call's record
            # holds nothing of its inputs (the pipeline's summary is made before its bounds).
            check_request_inputs(parsed[0], limits)
            return parsed

        try:
            message, reply_format = await self.parsed_body(
                request, call, Target(service=SERVICE, model=name), parse
            )
        except LabelgateError as error:
            return error_response(error)
        deadline = client_deadline(message)
        if deadline is not None:  # this request's own task (and the call's, a copy of its context)
            set_deadline(deadline)
        # A call held for approval gives its body's bytes back to limits.max_request_bytes_in_flight
        # and is counted under approvals.max_held_bytes by what it keeps: the message parsed from
        # the body (gRPC's: the body, the same size for the same message). Noted here, so the
        # call's task has it too; the body itself is not kept.
        note_request(message)
        # The body is read: from here on a caller that hangs up cancels the call.
        return await unless_hung_up(request, self._infer(call, name, message, reply_format))

    async def _infer(
        self, call: Call, name: str, message: pb.ModelInferRequest, reply_format: rest.ReplyFormat
    ) -> Response:
        try:
            content, header_length = await self.pipeline.infer_as(
                call,
                message,
                self._send("ModelInfer", pb.ModelInferResponse, call, name),
                lambda reply: rest.infer_response(reply, reply_format),
            )
        except LabelgateError as error:
            return error_response(error)
        headers = {rest.HEADER_LENGTH: str(header_length)} if header_length is not None else {}
        media = "application/octet-stream" if header_length is not None else "application/json"
        return Response(content, headers=headers, media_type=media)

    async def parsed_body(
        self, request: Request, call: Call, target: Target, parse: Callable[[bytes], T]
    ) -> T:
        """What ``parse`` makes of the body, read only once ``call``'s caller is authenticated:
        an anonymous caller learns nothing of how its body would parse. Every refusal (of the
        caller, of a body too large, malformed or naming shared memory) is recorded like any
        refused call's."""
        subject = None
        try:
            subject = self.pipeline.authenticate(call)
            body = await self._body(request)
            if len(body) < _PARSED_ON_THE_LOOP_BYTES:
                return parse(body)
            # Parsing JSON tensors costs ~70 ms a MiB: on the loop, a large body would stall
            # every other call (gRPC's included) for as long.
            return await asyncio.to_thread(parse, body)
        except LabelgateError as error:
            await self.pipeline.record_failure(call, subject, target, error)
            raise

    async def _body(self, request: Request) -> bytes:
        """The body, read no further than the limit (a declared length is checked first), and
        inflated (``Content-Encoding`` gzip or deflate) no further than the limit either.
        A body said to be of a type this binding does not read is refused unread."""
        check_content_type(request.headers.getlist("content-type"))
        coding = content_coding(request.headers.getlist("content-encoding"))
        declared = request.headers.get("content-length")
        length = None if declared is None else whole_number(declared)
        if length is not None and length > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            inflight.message_read(size)
            chunks.append(chunk)
        body = b"".join(chunks)
        if coding is None:
            return body
        inflated = inflate(body, coding, self.max_body_bytes)
        inflight.message_read(len(inflated))
        return inflated


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# What the route of a caller who hung up answers: nobody reads it (nginx's "client closed").
_HUNG_UP = 499


async def unless_hung_up(request: Request, work: Coroutine[Any, Any, Response]) -> Response:
    """``work`` (a call in the pipeline) in a task of its own, cancelled if the caller hangs
    up first, as grpc cancels a gRPC call's task: a held call is then abandoned, not left
    pending for a grant to run it upstream for nobody (``approvals/stage.py``), and a call
    in flight is recorded as cancelled, not as delivered. Only once the request's body is
    read: the watcher reads what is left of it (just the disconnect). It stops before the
    response starts, so a streaming response's own disconnect listener is undisturbed."""
    serving = asyncio.create_task(work)  # the context is copied: the caller's deadline too
    gone = asyncio.create_task(_hung_up(request.receive))
    try:
        await asyncio.wait((serving, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # this route's own task: the server is stopping
        serving.cancel()
        await asyncio.wait((serving,))  # its cancellation runs to the end (the hold abandoned)
        raise
    finally:
        gone.cancel()
    if serving.done():
        return serving.result()
    serving.cancel()
    # Its cancellation runs to the end (the hold abandoned, the call recorded) before the
    # route returns; how it ended goes nowhere: nobody is there to be told.
    await asyncio.wait((serving,))
    if not serving.cancelled():
        serving.exception()
    return Response(status_code=_HUNG_UP)


async def _hung_up(receive: Receive) -> None:
    """Returns when the client disconnects (ASGI ``http.disconnect``), and only then; whatever
    else it reads (a body no route reads) is dropped."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception as error:  # not a hang-up: the call goes on, unwatched
        log.warning("cannot watch a REST caller for a hang-up", error_type=type(error).__name__)
        await asyncio.get_running_loop().create_future()


def bodiless(route: Handler) -> Handler:
    """A route that reads no body, served ``unless_hung_up``."""

    async def served(request: Request) -> Response:
        return await unless_hung_up(request, route(request))

    return served


# Bodies from this size on are parsed in a worker thread (``RestGateway.parsed_body``).
_PARSED_ON_THE_LOOP_BYTES = 256 * 1024

# zlib's window bits of each content coding: gzip's header and trailer, deflate's zlib
# wrapper (RFC 9110; what tritonclient.http sends for "deflate": ``zlib.compress``).
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def content_coding(headers: list[str]) -> str | None:
    """The one coding a body is in (None: as it is), or refused: a coding the gateway cannot
    undo would reach the parser as bytes it misreads, or be passed on unread."""
    codings = [part.strip().lower() for header in headers for part in header.split(",")]
    codings = [coding for coding in codings if coding not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return codings[0]
    raise EncodingUnsupported(
        oip_reasons.REST_ENCODING_UNSUPPORTED,
        "the body's Content-Encoding is not one the gateway reads (gzip, deflate or identity)",
    )


# What a body may say it is, all read as JSON (the binary extension's tensors follow the
# JSON header, ``Inference-Header-Content-Length``). Beside JSON: what clients send for it
# unasked, kept working: tritonclient.http's aio client (aiohttp) labels its bytes
# application/octet-stream and its JSON text text/plain; ``curl -d`` (the README's examples)
# says application/x-www-form-urlencoded. tritonclient.http's other client sends none.
_READ_AS_JSON = frozenset(
    {"application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)


def check_content_type(headers: list[str]) -> None:
    """Refuse (415) a body whose Content-Type is given and is none of ``_READ_AS_JSON`` nor
    a ``+json`` type: an XML or form-data body is not parsed as if it were JSON. No
    Content-Type is accepted. The caller's header is not repeated."""
    for header in headers:
        media = header.partition(";")[0].strip().lower()
        if media not in _READ_AS_JSON and not (media.startswith("application/") and media.endswith("+json")):
            raise EncodingUnsupported(
                reasons.REST_CONTENT_TYPE_UNSUPPORTED,
                "this binding reads request bodies as JSON (and the binary tensor extension):"
                " send Content-Type: application/json or application/octet-stream",
            )


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` inflated, never past ``limit`` bytes (a few compressed bytes can claim
    gigabytes): at most limit + 1 bytes are made, and one more than the limit is refused."""
    inflater = zlib.decompressobj(_CODINGS[coding])
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise _not_inflated(coding) from None
    if len(plain) > limit:
        raise _too_large(limit)
    # Not all of it (truncated), or more after it (another stream, trailing bytes): refused
    # rather than half read.
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise _not_inflated(coding)
    return plain


def _not_inflated(coding: str) -> InvalidInput:
    return InvalidInput(
        oip_reasons.REST_ENCODING_INVALID, f"the body is not one complete {coding} stream", coding=coding
    )


def client_deadline(message: pb.ModelInferRequest) -> float | None:
    """The caller's deadline in seconds, from the request parameter ``timeout`` (microseconds),
    which is what ``tritonclient.http`` sends for ``infer(timeout=...)``. HTTP has no deadline
    header of its own; gRPC callers' ``grpc-timeout`` is read by ``DeadlineInterceptor``. It
    bounds an approval hold and the upstream call like a gRPC deadline (the parameter still
    travels upstream, where Triton applies it to its queue)."""
    parameter = message.parameters.get("timeout")
    if parameter is None or parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        return None
    micros = parameter.int64_param or parameter.uint64_param
    return micros / 1_000_000 if micros > 0 else None


def _within_deadline(limit: float) -> float:
    left = seconds_left()
    return limit if left is None else max(0.0, min(limit, left))


def _too_large(limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        oip_reasons.REQUEST_TOO_LARGE, f"the body is larger than limits.max_message_bytes ({limit})"
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def start_rest(
    gateway: RestGateway, listen: str, settings: RestSettings | None = None
) -> tuple[uvicorn.Server, Any]:
    """Serve the REST binding on ``listen`` (HOST:PORT) in this event loop; returns the server
    and its serving task once it is listening. ``settings`` bound what a client can hold
    before its request reaches the app (``rest_limits``; the defaults when not given)."""
    host, _, port = listen.rpartition(":")
    throttle_accept_errors()
    config = uvicorn.Config(
        gateway.app(),
        host=host,
        port=int(port),
        # httptools (a dependency: never the slower pure-Python h11 by accident), with the
        # header cap, deadlines and connection cap uvicorn's own protocol lacks. Not uvicorn's
        # ``limit_concurrency``: it answers only complete heads and logs every refusal.
        http=protocol_for(settings or RestSettings()),
        log_config=None,
        access_log=False,  # every call is logged once, by the record stage
        lifespan="off",
        # The caller's address is the socket's: a loopback client's X-Forwarded-For must not
        # rewrite the peer the audit record and the session id are made from. (Off, this is
        # also one ASGI layer less per request.)
        proxy_headers=False,
        server_header=False,  # says nothing about what serves it
        date_header=False,
    )
    server = uvicorn.Server(config)
    sockets: list[socket.socket] = list(await listening_sockets(host.strip("[]"), int(port)))
    task = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the REST listener stopped before it started")
        await asyncio.sleep(0.01)
    return server, task
