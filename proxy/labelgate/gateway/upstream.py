"""The edge toward the inference backend: one channel, the gateway's own credentials.

The caller's credentials never travel upstream; the gateway presents its own (TLS trust
and an optional bearer token from config), and says who asked in a signed subject
assertion (``labelgate.auth.assertion``: a short-lived JWT, audience = this upstream,
verifiable with the JWKS at the admin listener's ``/.well-known/jwks.json``). Deadlines
follow the caller's: the upstream call gets whatever time the caller has left, capped by
the configured timeout.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from labelgate import tracing
from labelgate.auth import strip_caller_metadata
from labelgate.auth.assertion import SubjectAsserter, SubjectAssertionSettings
from labelgate.calls import PROVEN
from labelgate.config import GatewaySettings, UpstreamSettings
from labelgate.errors import LabelgateError, NotFound, ResourceExhausted
from labelgate.gateway import metrics
from labelgate.gateway.discovery import DiscoveredRoutes, Discovery
from labelgate.logs import get_logger, text_digest
from labelgate.oip import reasons as oip_reasons

Metadata = Sequence[tuple[str, Any]]
# A request serializer or response deserializer, as grpc.aio's multicallables take them.
Codec = Callable[[Any], Any]
log = get_logger(__name__)


class UpstreamStatus(LabelgateError):
    """The upstream answered with an error status; the caller gets the same code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"UPSTREAM_{code.name}", message)
        self.code = code


@functools.cache
def shared_asserter(settings: SubjectAssertionSettings) -> SubjectAsserter | None:
    """One asserter (one key) per process and settings: every upstream signs with it and the
    admin listener publishes its JWKS."""
    return SubjectAsserter.from_settings(settings)


class UpstreamEdge:
    """What every upstream has, whatever it speaks: its name and address, the gateway's own
    credential, the metadata allow-list, the subject assertion and the deadline."""

    protocol = "grpc"

    def __init__(
        self,
        settings: UpstreamSettings,
        max_message_bytes: int,
        address: str | None = None,
        *,
        name: str = "default",
    ) -> None:
        self.settings = settings
        self.name = name
        self.max_message_bytes = max_message_bytes
        self.address = address or settings.address
        token = settings.token.get_secret_value() if settings.token else None
        self._credential: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._forward = frozenset(name.lower() for name in settings.forward_metadata)
        self.asserter = shared_asserter(settings.subject_assertion)
        # A caller's header of that name never travels, even if forward_metadata names it.
        self._assertion_header = self.asserter.header if self.asserter else None

    def metadata(self, caller: Metadata) -> tuple[tuple[str, Any], ...]:
        """What the upstream gets: the allow-listed part of the caller's metadata, then the
        gateway's own credential. An allow-list, because a deny-list misses the next header
        that carries an identity (``x-forwarded-user``, ``x-goog-api-key``, ...).

        A caller's text value that is not printable ASCII is left out: a REST caller's
        ``x-request-id`` of ``caf\\xe9`` arrives as latin-1 text, which grpc refuses to send
        (an ExecuteBatchError, after policy allowed the call) and httpx cannot encode, and a
        control character does not belong in a header anyway."""
        allowed = self._forward
        kept = [
            (k, v)
            for k, v in strip_caller_metadata(caller)
            if k in allowed
            and not k.startswith("x-labelgate-")
            and k != self._assertion_header
            and self._sendable(k, v)
        ]
        # Trace headers: the gateway's upstream span's; tracing off, a caller's W3C traceparent only.
        return (*tracing.outgoing(kept, allowed, upstream=self.name), *self._credential, *self._assertion())

    def _sendable(self, key: str, value: Any) -> bool:
        if key.endswith("-bin"):
            # Binary metadata travels as the bytes it came as; text under a -bin name (a REST
            # header) is a TypeError in grpc.
            if isinstance(value, bytes):
                return True
            why = "binary metadata sent as text"
        elif isinstance(value, str) and value.isascii() and value.isprintable():
            return True
        else:
            why = "not printable ASCII"
        # The name only: the value is the caller's and may be anything.
        log.warning("caller header not forwarded", why=why, upstream=self.name, header=key)
        return False

    def _assertion(self) -> tuple[tuple[str, str], ...]:
        """The signed subject assertion of the call being served (set by the authenticate
        stage in this task); none before authentication, e.g. a stream opened upstream first."""
        proven = PROVEN.get()
        if self.asserter is None or proven is None:
            return ()
        token = self.asserter.assertion(proven.subject, proven.request_id, self.address)
        return ((self.asserter.header, token),)

    def timeout(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        limit = self.settings.timeout_seconds
        return limit if remaining is None else max(0.0, min(limit, remaining))

    def observe(self, seconds: float, outcome: str) -> None:
        """One unary call's time, for ``labelgate_upstream_call_duration_seconds``."""
        metrics.child(metrics.UPSTREAM_SECONDS, self.name, self.protocol, outcome).observe(seconds)

    # What the transports call; each kind of upstream speaks them its own way.
    def unary_unary(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        raise NotImplementedError

    def unary_stream(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        raise NotImplementedError

    def stream_unary(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        raise NotImplementedError

    def stream_stream(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        raise NotImplementedError

    async def reachable(self, within: float = 1.0) -> bool:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Upstream(UpstreamEdge):
    """A gRPC upstream: one channel."""

    def __init__(
        self,
        settings: UpstreamSettings,
        max_message_bytes: int,
        address: str | None = None,
        *,
        name: str = "default",
    ) -> None:
        super().__init__(settings, max_message_bytes, address, name=name)
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if settings.tls:
            root = settings.ca_file.read_bytes() if settings.ca_file else None
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self.channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self.address, options=options)

    # grpc.aio does not fail a call whose response does not parse: it logs and hands back
    # None (grpc._common.deserialize). These wrappers turn that None into MalformedUpstream,
    # so a garbled upstream message is INTERNAL and never reaches the pipeline as a response.
    # They also serialize each request themselves (grpc's channel gets bytes), so a request
    # over the limit is refused by the gateway before grpc would refuse to send it.
    def unary_unary(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        return _CheckedUnary(
            self.channel.unary_unary(method, response_deserializer=deserialize),
            _Encoder(serialize, self.max_message_bytes),
            self,
        )

    def unary_stream(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        return _CheckedStreams(
            self.channel.unary_stream(method, response_deserializer=deserialize),
            _Encoder(serialize, self.max_message_bytes),
            client_streams=False,
        )

    def stream_unary(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        # A client stream, one reply: checked as a unary reply is.
        return _CheckedUnary(
            self.channel.stream_unary(method, response_deserializer=deserialize),
            _Encoder(serialize, self.max_message_bytes),
            self,
            client_streams=True,
        )

    def stream_stream(self, method: str, serialize: Codec | None, deserialize: Codec | None) -> Any:
        return _CheckedStreams(
            self.channel.stream_stream(method, response_deserializer=deserialize),
            _Encoder(serialize, self.max_message_bytes),
            client_streams=True,
        )

    async def reachable(self, within: float = 1.0) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.channel.channel_ready()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.channel.close()


class ModelNotRouted(NotFound):
    def __init__(self) -> None:
        # The text names neither the model's would-be upstream nor any other: which upstreams
        # exist is the operator's business, not the caller's.
        super().__init__("MODEL_NOT_ROUTED", "no upstream serves this model")


class Router:
    """Which upstream serves a call, by model: ``upstreams`` entries with globs (fnmatch,
    first match in config order), then the names discovering entries found in their
    repository index (``gateway/discovery.py``; a name two of them list is refused), then the
    default route (``upstream``, when the config has one). Calls that name no model
    (``ServerLive``, ``ServerReady``, ``ServerMetadata``) go to the default route, else to the
    first entry of ``upstreams``."""

    def __init__(
        self,
        routes: Sequence[tuple[UpstreamEdge, Sequence[str]]],
        default: UpstreamEdge | None,
        discoveries: Sequence[Discovery] = (),
    ) -> None:
        self.routes = [(upstream, tuple(globs)) for upstream, globs in routes]
        self.default = default
        self.discovered = DiscoveredRoutes(discoveries)
        if default is None and not self.routes and not discoveries:
            raise ValueError("a router needs at least one upstream")

    @classmethod
    def single(cls, upstream: UpstreamEdge) -> Router:
        return cls([], upstream)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, default: Upstream) -> Router:
        assertion = settings.upstream.subject_assertion
        limit = settings.limits.max_message_bytes
        # Imported here: the REST upstream builds on this module's errors and credentials.
        from labelgate.gateway.rest_upstream import RestUpstream

        routes: list[tuple[UpstreamEdge, Sequence[str]]] = []
        discoveries: list[Discovery] = []
        for entry in settings.upstreams:
            kind = RestUpstream if entry.protocol == "rest" else Upstream
            own = entry.model_copy(update={"subject_assertion": assertion})
            upstream = kind(own, limit, name=entry.name)
            if entry.discover:
                discoveries.append(
                    Discovery(
                        upstream,
                        allowed=entry.models,
                        interval=entry.discover_interval_seconds,
                        max_stale=entry.discover_max_stale_seconds,
                    )
                )
            else:
                routes.append((upstream, entry.models))
        return cls(routes, default if settings.default_route() else None, discoveries)

    def for_model(self, model: str) -> UpstreamEdge:
        for upstream, globs in self.routes:
            if any(fnmatch.fnmatchcase(model, glob) for glob in globs):
                return upstream
        listed, discovered = self.discovered.lookup(model)
        if discovered is not None:
            return discovered
        if listed or self.default is None:  # listed without an upstream: two claim it
            raise ModelNotRouted()
        return self.default

    def serves(self, upstream: UpstreamEdge, model: str) -> bool:
        try:
            return self.for_model(model) is upstream
        except ModelNotRouted:
            return False

    def for_server(self) -> UpstreamEdge:
        if self.default is not None:
            return self.default
        return self.routes[0][0] if self.routes else self.discovered.discoveries[0].upstream

    def by_name(self, name: str) -> UpstreamEdge | None:
        return next((upstream for upstream in self._entries() if upstream.name == name), None)

    def _entries(self) -> list[UpstreamEdge]:
        return [upstream for upstream, _ in self.routes] + [d.upstream for d in self.discovered.discoveries]

    def upstreams(self) -> list[UpstreamEdge]:
        """Every upstream once, the default first."""
        found = [self.default] if self.default is not None else []
        return found + self._entries()

    async def start(self) -> None:
        """Discovering entries ask their index now (before calls are served), then on their
        interval."""
        await self.discovered.start()

    async def refresh(self) -> None:
        """Every discovering entry asks its index now (the loop's work, driven explicitly)."""
        await self.discovered.refresh()

    async def ready(self) -> dict[str, bool]:
        """Reachability per upstream: ``upstream`` (the default route) and ``upstream:<name>``."""
        upstreams = self.upstreams()
        reached = await asyncio.gather(*(u.reachable() for u in upstreams))
        for upstream, ok in zip(upstreams, reached, strict=True):
            metrics.UPSTREAM_UP.labels(upstream=upstream.name).set(1 if ok else 0)
        return {
            ("upstream" if u is self.default else f"upstream:{u.name}"): ok
            for u, ok in zip(upstreams, reached, strict=True)
        }

    async def close(self) -> None:
        await self.discovered.stop()
        for upstream in self._entries():
            await upstream.close()


def upstream_error(
    error: grpc.aio.AioRpcError, max_message_bytes: int | None = None, asked: Any = None
) -> LabelgateError:
    """Map an upstream failure: its status code is kept, its text never travels on, and the
    reason is always ``UPSTREAM_<CODE>``, never read from that text (the upstream chooses it).

    The caller gets ``UPSTREAM_<CODE>`` and a message of the gateway's own, which may name
    the model the caller asked for (``asked``: the request sent, ``_failed_asking``); the log
    gets the code and a keyed digest of the upstream's text. A request too large to send is
    the gateway's own refusal, made before sending (``_Encoder``), and a reply that does not
    parse is found by parsing it (``_parsed``): neither is read from this status."""
    details = error.details() or ""
    code = error.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _LOCAL_SIZE_LIMIT in details:
        # grpc words it from the gateway's side ("CLIENT: ..."). Its text is not repeated: an
        # upstream could send the same words followed by anything. (The reason is the same
        # whoever wrote them: only this wording is chosen by the text.)
        limit = f" ({max_message_bytes} bytes)" if max_message_bytes else ""
        return UpstreamStatus(
            code, f"the upstream's response is larger than this gateway's limits.max_message_bytes{limit}"
        )
    log.warning("upstream error", code=code.name, text_digest=text_digest(details))
    return UpstreamStatus(code, _failed_asking(code, asked))


def _failed_asking(code: grpc.StatusCode, asked: Any) -> str:
    """The gateway's words for a failed call, naming what the caller asked for when the
    status is about it: a model the upstream does not know (NOT_FOUND), an inference request
    it would not take (INVALID_ARGUMENT: an input or output it has not). Only the caller's
    own strings, and only short printable ones: nothing of the upstream's text."""
    generic = f"the upstream failed with {code.name}"
    named = _model_asked(asked)
    if named is None:
        return generic
    model, is_infer = named
    if code == grpc.StatusCode.NOT_FOUND:
        return f"the upstream has no {model}"
    if code == grpc.StatusCode.INVALID_ARGUMENT and is_infer:
        return (
            f"the upstream refused this request's inputs or outputs for {model}"
            " (their names, datatypes or shapes)"
        )
    return generic


# Longer names are left out of a message rather than cut (a cut name would look like another).
_NAMED_AT_MOST = 128


def _model_asked(asked: Any) -> tuple[str, bool] | None:
    """(``model "NAME"`` with ``version "V"`` when one was asked for, whether the call is an
    inference) of an Open Inference request; None when there is none, or a name is too long
    or unprintable to repeat."""
    descriptor = getattr(asked, "DESCRIPTOR", None)
    if descriptor is None or not descriptor.full_name.startswith("inference."):
        return None  # bytes (an opaque route's), a stream, another service's message
    fields = descriptor.fields_by_name
    for name_field, version_field in (("model_name", "model_version"), ("name", "version")):
        if name_field in fields and version_field in fields:
            name, version = getattr(asked, name_field), getattr(asked, version_field)
            break
    else:
        return None
    if not (
        isinstance(name, str)
        and isinstance(version, str)
        and _repeatable(name)
        and _repeatable(version, True)
    ):
        return None
    # json.dumps quotes, and escapes a quote or a non-ASCII character: the name as sent.
    said = f"model {json.dumps(name)}" + (f" version {json.dumps(version)}" if version else "")
    return said, descriptor.full_name == "inference.ModelInferRequest"


def _repeatable(text: str, empty: bool = False) -> bool:
    return (bool(text) or empty) and len(text) <= _NAMED_AT_MOST and text.isprintable()


_LOCAL_SIZE_LIMIT = "CLIENT: Received message larger than max"


def request_too_large(limit: int) -> ResourceExhausted:
    """A request the gateway will not send: larger, serialized, than its own limit (grpc
    would refuse it too, ``grpc.max_send_message_length``)."""
    return ResourceExhausted(
        oip_reasons.REQUEST_TOO_LARGE,
        f"the request as sent upstream is larger than limits.max_message_bytes ({limit} bytes)",
    )


class MalformedUpstream(LabelgateError):
    code = grpc.StatusCode.INTERNAL
    http_status = 502  # the upstream's fault, as HTTP says it (REST binding)

    def __init__(self, message: str) -> None:
        super().__init__("UPSTREAM_MALFORMED", message)


def _parsed(message: Any) -> Any:
    if message is None:
        raise MalformedUpstream("the upstream sent a message that does not parse")
    return message


def client_failure(error: Exception, upstream: str | None = None) -> UpstreamStatus:
    """A failure grpc raised on the gateway's side without a status (``UsageError`` on a closed
    channel, ``ExecuteBatchError`` for metadata it will not send, a ``TypeError``...): still
    the caller's status, never a 500. Only its kind is logged; its text may quote metadata."""
    log.error("upstream call failed unexpectedly", upstream=upstream, error=type(error).__name__)
    return UpstreamStatus(grpc.StatusCode.UNAVAILABLE, "the upstream failed with UNAVAILABLE")


class _Encoder:
    """A request's bytes as the upstream gets them, refused when larger than the limit: the
    gateway's own fact (a REST body's JSON numbers grow when written as raw tensors), not a
    status an upstream could word the same way."""

    def __init__(self, serialize: Codec | None, limit: int) -> None:
        self._serialize = serialize
        self.limit = limit

    def __call__(self, message: Any) -> bytes:
        if self._serialize is None:
            data: bytes = message  # already bytes (an opaque call's)
        else:
            try:
                data = self._serialize(message)
            except Exception as error:  # as grpc's own serializer failing: the call fails
                raise client_failure(error) from None
        if len(data) > self.limit:
            raise request_too_large(self.limit)
        return data

    def stream(self, requests: AsyncIterator[Any] | None) -> _EncodedStream | None:
        return None if requests is None else _EncodedStream(requests, self)


class _EncodedStream:
    """A client stream's messages, encoded as grpc's request pump reads them. That pump
    swallows what its iterator raises and cancels the call: a refusal is kept here, so the
    call ends with it (``check``), not with the cancel."""

    def __init__(self, requests: AsyncIterator[Any], encode: _Encoder) -> None:
        self._requests = requests
        self._encode = encode
        self.refusal: LabelgateError | None = None

    async def messages(self) -> AsyncIterator[bytes]:
        async for request in self._requests:
            try:
                data = self._encode(request)
            except LabelgateError as error:
                self.refusal = error
                raise
            yield data

    def check(self) -> None:
        """Raise the refusal that cancelled the call, unless this task is being cancelled
        itself (then the cancellation is what it is)."""
        task = asyncio.current_task()
        if self.refusal is not None and not (task is not None and task.cancelling()):
            raise self.refusal


class _CheckedUnary:
    def __init__(
        self, multicallable: Any, encode: _Encoder, upstream: UpstreamEdge, *, client_streams: bool = False
    ) -> None:
        self._multicallable = multicallable
        self._encode = encode
        self._limit = encode.limit
        self._upstream = upstream
        self._client_streams = client_streams

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        # A single request too large is refused here: nothing is sent, nothing is timed.
        sent = self._encode.stream(request) if self._client_streams else None
        outgoing = sent.messages() if sent is not None else self._encode(request)
        started = time.perf_counter()
        try:
            reply = _parsed(await self._multicallable(outgoing, **kwargs))
        except asyncio.CancelledError:
            if sent is not None:
                sent.check()
            raise
        except grpc.aio.AioRpcError as error:
            self._upstream.observe(time.perf_counter() - started, error.code().name)
            raise upstream_error(error, self._limit, None if self._client_streams else request) from None
        except MalformedUpstream:
            self._upstream.observe(time.perf_counter() - started, "MALFORMED")
            raise
        except LabelgateError:
            raise  # already the caller's status
        except Exception as error:
            self._upstream.observe(time.perf_counter() - started, "UNAVAILABLE")
            raise client_failure(error, self._upstream.name) from None
        self._upstream.observe(time.perf_counter() - started, "ok")
        return reply


class _CheckedStreams:
    def __init__(self, multicallable: Any, encode: _Encoder, *, client_streams: bool) -> None:
        self._multicallable = multicallable
        self._encode = encode
        self._client_streams = client_streams

    def __call__(self, request: Any = None, **kwargs: Any) -> _CheckedStreamCall:
        # A client stream: its iterator's messages (none: written with ``write``); else the
        # one request, refused here if too large.
        sent = self._encode.stream(request) if self._client_streams else None
        outgoing: bytes | AsyncIterator[bytes] | None = None
        if not self._client_streams:
            outgoing = self._encode(request)
        elif sent is not None:
            outgoing = sent.messages()
        try:
            call = self._multicallable(outgoing, **kwargs)
        except LabelgateError:
            raise
        except Exception as error:  # e.g. UsageError: the channel is closed
            raise client_failure(error) from None
        return _CheckedStreamCall(call, self._encode, sent)


class _CheckedStreamCall:
    """The upstream stream call (write, done_writing, cancel, ...) with checked replies."""

    def __init__(self, call: Any, encode: _Encoder, sent: _EncodedStream | None = None) -> None:
        self._call = call
        self._encode = encode
        self._limit = encode.limit
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._replies()

    async def write(self, message: Any) -> None:
        data = self._encode(message)  # too large: refused, and the call is left to its owner
        try:
            await self._call.write(data)
        except grpc.aio.AioRpcError as error:
            raise upstream_error(error, self._limit) from None
        except LabelgateError:
            raise
        except Exception as error:  # e.g. UsageError: written after done_writing or cancel
            raise client_failure(error) from None

    async def _replies(self) -> AsyncIterator[Any]:
        try:
            async for reply in self._call:
                yield _parsed(reply)
        except asyncio.CancelledError:
            if self._sent is not None:
                self._sent.check()
            raise
        except grpc.aio.AioRpcError as error:
            raise upstream_error(error, self._limit) from None
        except LabelgateError:
            raise  # MalformedUpstream
        except Exception as error:
            raise client_failure(error) from None
