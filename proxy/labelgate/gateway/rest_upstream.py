"""An upstream that speaks the Open Inference Protocol's REST binding (KServe v2), not gRPC.

``upstreams:`` entries with ``protocol: rest``. The transports do not change: they hand this
upstream the same gRPC request messages they hand a gRPC one (``unary_unary``), and it
translates each to its REST call and the reply back to the gRPC message the pipeline
classifies (the pure conversions are ``labelgate.oip.rest``). So gRPC and REST callers both
reach it, through the one pipeline.

Like a gRPC upstream it is untrusted: its error bodies go nowhere (the caller gets the
gateway's own text and ``UPSTREAM_<CODE>``, the log a keyed digest), its response headers
are read only for the binary extension's header length and never forwarded, and a body larger
than ``limits.max_message_bytes`` fails the call (it is not read past the limit). A body is
never decompressed: one with a ``Content-Encoding`` other than ``identity`` (which is all the
gateway asks for) fails the call, so a small body cannot inflate past the limit. The
gateway's own credential (``token``), the allow-listed caller metadata and the signed
subject assertion travel as HTTP headers; TLS trusts the entry's ``ca_file``.

``ModelStreamInfer`` becomes one REST call per streamed request (``rest_streams.py``);
any other RPC the binding lacks is refused (UNIMPLEMENTED, ``REST_UPSTREAM_UNSUPPORTED``,
``REST_UPSTREAM_NO_STREAMS``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import grpc
import httpx
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.config import UpstreamSettings
from labelgate.digits import whole_number
from labelgate.errors import InvalidInput, LabelgateError
from labelgate.gateway import reasons
from labelgate.gateway.rest_streams import RestStream
from labelgate.gateway.upstream import (
    MalformedUpstream,
    Metadata,
    UpstreamEdge,
    UpstreamStatus,
)
from labelgate.logs import get_logger, text_digest
from labelgate.oip import rest
from labelgate.oip import tensors as oip

log = get_logger(__name__)
_SERVICE = "/inference.GRPCInferenceService/"

# httpcore asks ``import sniffio`` (asyncio or trio?) several times per request; without
# sniffio installed each failed import searches all of sys.path again (~40 us apiece, measured
# by profiling bench/rest_overhead.py). None in sys.modules makes that import fail at once
# (the import system's documented negative entry), which httpcore reads as asyncio.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

# An upstream's HTTP status as the gRPC code the caller gets (KServe v2's meanings).
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# A health or readiness answer of "no" is a reply (live/ready false), not an error.
_NOT_READY = frozenset({500, 502, 503, 504})


class RestUnsupported(LabelgateError):
    code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 501


def http_code(status: int) -> grpc.StatusCode:
    return _CODES.get(status, grpc.StatusCode.UNKNOWN)


def _tls(settings: UpstreamSettings) -> ssl.SSLContext | bool:
    if not settings.tls:
        return False
    if settings.ca_file is None:
        return True  # the system's trust store
    return ssl.create_default_context(cafile=str(settings.ca_file))


def _path(kind: str, name: str, version: str) -> str:
    """``/v2/models/{name}[/versions/{version}]`` with both escaped (a model name is data)."""
    path = f"/v2/models/{quote(name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return f"{path}/{kind}" if kind else path


class RestUpstream(UpstreamEdge):
    protocol = "rest"

    def __init__(
        self,
        settings: UpstreamSettings,
        max_message_bytes: int,
        address: str | None = None,
        *,
        name: str = "default",
    ) -> None:
        super().__init__(settings, max_message_bytes, address, name=name)
        scheme = "https" if settings.tls else "http"
        self.client = httpx.AsyncClient(
            base_url=f"{scheme}://{self.address}",
            verify=_tls(settings),
            trust_env=False,  # no proxy or .netrc from the environment: the config says where
            follow_redirects=False,  # a redirect is the upstream's answer, not a new address
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        # The certificate's name when it is not the address's host (like grpc's override).
        self._extensions = {"sni_hostname": settings.server_name} if settings.server_name else {}

    # -- what the transports call --------------------------------------------------------
    def unary_unary(
        self, method: str, serialize: Callable[..., Any] | None, deserialize: Callable[..., Any] | None
    ) -> Any:
        name = method.removeprefix(_SERVICE) if method.startswith(_SERVICE) else ""
        call = self._calls().get(name)
        if call is None:
            return _refuse(
                reasons.REST_UPSTREAM_UNSUPPORTED,
                "this model's upstream speaks the KServe v2 REST binding, which has no such call",
            )
        return _Timed(self, call)

    def unary_stream(
        self, method: str, serialize: Callable[..., Any] | None, deserialize: Callable[..., Any] | None
    ) -> Any:
        return self.unary_unary(method, serialize, deserialize)

    def stream_stream(
        self, method: str, serialize: Callable[..., Any] | None, deserialize: Callable[..., Any] | None
    ) -> Any:
        if method == f"{_SERVICE}ModelStreamInfer":  # one REST call per streamed request
            infer = _Timed(self, self._infer)

            def open_stream(*, metadata: Metadata = (), timeout: float | None = None, **_: Any) -> RestStream:
                return RestStream(
                    infer, metadata, self.settings.timeout_seconds if timeout is None else timeout
                )

            return open_stream

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RestUnsupported(
                reasons.REST_UPSTREAM_NO_STREAMS,
                "this upstream speaks the KServe v2 REST binding, which has no such stream",
            )

        return refuse

    def _calls(self) -> dict[str, Callable[[Any, Metadata, float], Awaitable[Message]]]:
        return {
            "ModelInfer": self._infer,
            "ModelMetadata": self._model_metadata,
            "ServerMetadata": self._server_metadata,
            "ModelReady": self._model_ready,
            "ServerReady": self._health("ready", pb.ServerReadyResponse),
            "ServerLive": self._health("live", pb.ServerLiveResponse),
            "RepositoryIndex": self._repository_index,
        }

    # -- the calls ----------------------------------------------------------------------------
    async def _infer(self, request: Any, metadata: Metadata, seconds: float) -> Message:
        body = rest.upstream_infer_body(request)
        path = _path("infer", request.model_name, request.model_version)
        status, content, header_length = await self._exchange("POST", path, metadata, seconds, body)
        self._check(status, content)
        # Outputs in the representation the caller used for its inputs (as the demo backend
        # and Triton do), so a gRPC client reading raw outputs gets raw outputs.
        raw = oip.uses_raw_inputs(request) or not request.inputs
        return _parsed(lambda: rest.upstream_infer_reply(content, header_length, raw))

    async def _model_metadata(self, request: Any, metadata: Metadata, seconds: float) -> Message:
        path = _path("", request.name, request.version)
        status, content, _ = await self._exchange("GET", path, metadata, seconds)
        self._check(status, content)
        return _parsed(lambda: rest.upstream_metadata(content, pb.ModelMetadataResponse))

    async def _server_metadata(self, request: Any, metadata: Metadata, seconds: float) -> Message:
        status, content, _ = await self._exchange("GET", "/v2", metadata, seconds)
        self._check(status, content)
        return _parsed(lambda: rest.upstream_metadata(content, pb.ServerMetadataResponse))

    async def _repository_index(self, request: Any, metadata: Metadata, seconds: float) -> Message:
        # KServe v2's repository extension (Triton, MLServer): model discovery and the index.
        body = b'{"ready": true}' if request.ready else b"{}"
        status, content, _ = await self._exchange("POST", "/v2/repository/index", metadata, seconds, body)
        self._check(status, content)
        return _parsed(lambda: rest.upstream_index(content))

    async def _model_ready(self, request: Any, metadata: Metadata, seconds: float) -> Message:
        path = _path("ready", request.name, request.version)
        return pb.ModelReadyResponse(ready=await self._yes_or_no(path, metadata, seconds))

    def _health(
        self, which: str, response_type: type[Message]
    ) -> Callable[[Any, Metadata, float], Awaitable[Message]]:
        async def health(request: Any, metadata: Metadata, seconds: float) -> Message:
            state = await self._yes_or_no(f"/v2/health/{which}", metadata, seconds)
            return response_type(**{which: state})

        return health

    async def _yes_or_no(self, path: str, metadata: Metadata, seconds: float) -> bool:
        status, content, _ = await self._exchange("GET", path, metadata, seconds)
        if status in _NOT_READY:
            return False
        self._check(status, content)
        return True

    # -- HTTP ---------------------------------------------------------------------------------
    def headers(self, metadata: Metadata) -> dict[str, str]:
        """The upstream call's headers: what ``metadata`` lets through (``UpstreamEdge``, which
        also leaves out caller values that are not printable ASCII, such as a latin-1
        ``x-request-id`` httpx could not encode), text values only (binary ``-bin`` metadata
        has no HTTP form here)."""
        return {
            key: value
            for key, value in self.metadata(metadata)
            if isinstance(value, str) and not key.endswith("-bin")
        }

    async def _exchange(
        self, method: str, path: str, metadata: Metadata, seconds: float, body: bytes | None = None
    ) -> tuple[int, bytes, str | None]:
        """(status, body read up to the limit, the binary extension's header length)."""
        headers = self.headers(metadata)
        # Uncompressed: what is read is what counts against the limit (no small body that
        # inflates to a large one in one chunk).
        headers["accept-encoding"] = "identity"
        if body is not None:
            headers["content-type"] = "application/json"
        seconds = max(seconds, 0.001)
        try:  # every failure in here is a status: nothing else may escape as a 500
            request = self.client.build_request(
                method, path, content=body, headers=headers, timeout=seconds, extensions=self._extensions
            )
            # httpx's timeout bounds each connect, read and write apart: an upstream sending a
            # byte now and then kept a call for minutes. The whole exchange is bounded too.
            async with asyncio.timeout(seconds):
                try:
                    response = await self.client.send(request, stream=True)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    # No answer at all, typically a kept-alive connection the upstream closed
                    # just as it was reused (MLServer after an error reply). Once more on a
                    # fresh one; a second failure is the caller's UNAVAILABLE.
                    log.info(
                        "upstream dropped the connection before answering; sent once more", upstream=self.name
                    )
                    response = await self.client.send(request, stream=True)
                try:
                    content = await self._bounded(response)
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError):
            raise UpstreamStatus(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the upstream did not answer in time"
            ) from None
        except httpx.HTTPError as error:
            # The exception's text may quote the upstream; only its kind is logged.
            log.warning("upstream unreachable", upstream=self.name, error=type(error).__name__)
            raise UpstreamStatus(
                grpc.StatusCode.UNAVAILABLE, "the upstream failed with UNAVAILABLE"
            ) from None
        except LabelgateError:
            raise  # already a status (too large, compressed)
        except Exception as error:
            # Not expected (a header httpx cannot encode, a bug): still the caller's status, and
            # only the kind is logged, since the text may quote a header or the upstream.
            log.error("upstream call failed unexpectedly", upstream=self.name, error=type(error).__name__)
            raise UpstreamStatus(
                grpc.StatusCode.UNAVAILABLE, "the upstream failed with UNAVAILABLE"
            ) from None
        return response.status_code, content, response.headers.get(rest.HEADER_LENGTH)

    async def _bounded(self, response: httpx.Response) -> bytes:
        # Asked for identity: a compressed body is refused, never inflated (a few hundred
        # bytes of brotli can decode to hundreds of MiB before any limit could see them).
        encodings = response.headers.get("content-encoding", "").lower().split(",")
        if any(encoding.strip() not in ("", "identity") for encoding in encodings):
            log.warning("upstream reply refused: compressed", upstream=self.name)
            raise MalformedUpstream(
                "the upstream sent a compressed reply, which this gateway did not ask for"
            )
        limit = self.max_message_bytes
        declared = response.headers.get("content-length")
        length = None if declared is None else whole_number(declared)
        if length is not None and length > limit:
            raise self._too_large()
        chunks, size = [], 0
        async for chunk in response.aiter_raw():  # the bytes as sent, bounded as they arrive
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> UpstreamStatus:
        return UpstreamStatus(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the upstream's response is larger than this gateway's limits.max_message_bytes "
            f"({self.max_message_bytes} bytes)",
        )

    def _check(self, status: int, content: bytes) -> None:
        if 200 <= status < 300:
            return
        code = http_code(status)
        log.warning(
            "upstream error",
            upstream=self.name,
            http_status=status,
            text_digest=text_digest(content.decode("latin-1")),
        )
        raise UpstreamStatus(code, f"the upstream failed with {code.name}")

    async def reachable(self, within: float = 1.0) -> bool:
        """Ready by the binding's own readiness endpoint, asked with the gateway's credential."""
        try:
            request = self.client.build_request(
                "GET",
                "/v2/health/ready",
                headers=self.headers(()),
                timeout=within,
                extensions=self._extensions,
            )
            async with asyncio.timeout(within):  # a head sent a byte at a time (``_exchange``)
                response = await self.client.send(request, stream=True)  # its body is never read
                await response.aclose()
        except (httpx.HTTPError, TimeoutError):
            return False
        return response.status_code == 200

    async def close(self) -> None:
        await self.client.aclose()


class _Timed:
    """One call kind, called like a grpc.aio stub (``metadata=``, ``timeout=``) and timed."""

    def __init__(
        self, upstream: RestUpstream, call: Callable[[Any, Metadata, float], Awaitable[Message]]
    ) -> None:
        self._upstream = upstream
        self._call = call

    async def __call__(
        self,
        request: Any,
        *,
        metadata: Metadata = (),
        timeout: float | None = None,  # noqa: ASYNC109 - a grpc.aio stub's keyword
        **_: Any,
    ) -> Message:
        started = time.perf_counter()
        limit = self._upstream.settings.timeout_seconds if timeout is None else timeout
        try:
            reply = await self._call(request, metadata, limit)
        except LabelgateError as error:
            outcome = "MALFORMED" if isinstance(error, MalformedUpstream) else error.code.name
            self._upstream.observe(time.perf_counter() - started, outcome)
            raise
        self._upstream.observe(time.perf_counter() - started, "ok")
        return reply


def _refuse(reason: str, message: str) -> Callable[..., Awaitable[Message]]:
    async def refuse(*args: Any, **kwargs: Any) -> Message:
        raise RestUnsupported(reason, message)

    return refuse


def _parsed(parse: Callable[[], Message]) -> Message:
    try:
        return parse()
    except InvalidInput as error:
        # The upstream's reply is broken, not the caller's request: INTERNAL, nothing of it kept.
        raise MalformedUpstream("the upstream sent a reply that does not parse") from error
    except Exception as error:
        # Anything else the parser lets through is a malformed reply too, in the same fixed
        # text: the exception's own may quote the reply (grpc would send it to the caller).
        log.warning("upstream reply did not parse", error_type=type(error).__name__)
        raise MalformedUpstream("the upstream sent a reply that does not parse") from None
