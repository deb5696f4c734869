"""OpenTelemetry tracing: a span per pipeline stage, W3C trace context in and out.

Off unless ``tracing.endpoint`` is set; then every call is one span (``labelgate.call``,
the child of the caller's ``traceparent`` when it sent one) with a child span per stage
(``authenticate``, ``admit``, ``decide``, ``hold``, ``upstream``, ``classify``, ``enforce``,
``record``), exported over OTLP. The upstream gets the ``traceparent`` of the gateway's own
``upstream`` span, never the caller's header, so its spans hang under the gateway's.

Attributes name things, never data: method, model, phase, outcome, reason, labels. A value
a caller or an upstream sent never becomes an attribute, so a trace store is no place a
masked value can leak to; the method and model a caller named are bounded as a record bounds
them (``untrusted_text.bounded``).

A caller's ``tracestate`` is never adopted: the call span is the child of the caller's trace
id and span id only, with an empty trace state (W3C lets an intermediary drop it). Its vendor
text is anyone's, sent before authentication, and OpenTelemetry would copy it onto every span
exported and into the ``tracestate`` the upstream gets; parsed, a malformed one is logged
verbatim too. OpenTelemetry's trace-context loggers are held to errors for the same reason (a
malformed ``traceparent`` is quoted in their warnings).

Tracing off, the upstream gets the caller's ``traceparent`` (when ``forward_metadata`` names
it) only if it is one W3C version-00 header: anything else is text a caller chose, and is
dropped with a log line naming the header, never its value. A caller's ``tracestate`` is
never forwarded, tracing on or off (``forward_metadata`` refuses to name it).

Zero cost when off: ``stage()`` hands back one shared no-op context manager and nothing
from the SDK is imported.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labelgate.logs import get_logger
from labelgate.shown_urls import credentials_problem, shown_url
from labelgate.untrusted_text import bounded

# W3C trace context headers (gRPC metadata keys and HTTP header names, lower case).
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
# OpenTelemetry's loggers that quote (or count) what a caller's trace headers held.
_TRACE_CONTEXT_LOGGERS = ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext")
# W3C Trace Context's traceparent, version 00 (the one version defined): lower-case hex, the
# all-zero trace id and parent id invalid, nothing after the flags.
_W3C_TRACEPARENT = re.compile(r"00-(?!0{32}-)[0-9a-f]{32}-(?!0{16}-)[0-9a-f]{16}-[0-9a-f]{2}")
_NOTHING = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on; None is off
log = get_logger(__name__)


class TracingSettings(BaseModel):
    """``tracing:`` in the gateway's configuration; no ``endpoint`` means tracing is off."""

    model_config = ConfigDict(extra="forbid")

    # OTLP receiver: ``host:port`` (protocol grpc) or ``http(s)://host:port`` (protocol http,
    # ``/v1/traces`` is added when the URL has no path).
    endpoint: str | None = Field(None, min_length=1)
    protocol: Literal["grpc", "http"] = "grpc"
    service_name: str = Field("labelgate", min_length=1, max_length=128)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_parses(cls, value: str | None) -> str | None:
        # The exporter parses it only at start (a ValueError there); refuse it with the config.
        if value is None:
            return None
        url = value if "://" in value else f"grpc://{value}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            # urllib's message may repeat the netloc: it is shown without the userinfo too.
            shown, why = shown_url(value), shown_url(value, str(error))
            raise ValueError(f"{shown!r} is not HOST:PORT or an http(s) URL: {why}") from None
        if not parts.hostname or port == 0 or parts.scheme not in ("grpc", "http", "https"):
            raise ValueError(f"{shown_url(value)!r} is not HOST:PORT or an http(s) URL")
        return value

    @model_validator(mode="after")
    def _grpc_endpoint_without_credentials(self) -> TracingSettings:
        # The gRPC exporter hands the whole netloc, userinfo and all, to the channel as its
        # target: they are never sent as credentials, and its export warnings quote the target.
        # Over http they are used (the exporter's HTTP session sends them as basic auth), so
        # they are kept there; nothing labelgate writes quotes the endpoint but through
        # shown_url, and the exporter's own lines name no URL.
        if self.protocol == "grpc" and self.endpoint is not None:
            problem = credentials_problem(
                self.endpoint, why="the OTLP gRPC exporter never sends them (protocol http does)"
            )
            if problem:
                raise ValueError(f"endpoint {problem}")
        return self

    # Share of new traces kept; a caller's sampled flag is honoured (parent-based).
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    # How often finished spans are sent in a batch.
    export_interval_ms: int = Field(1000, ge=10, le=60_000)


def enabled() -> bool:
    return _tracer is not None


def configure(settings: TracingSettings) -> Callable[[], None]:
    """Start exporting spans (when an endpoint is set); returns what flushes and stops it."""
    global _tracer
    if settings.endpoint is None:
        return lambda: None
    for name in _TRACE_CONTEXT_LOGGERS:
        # Their warnings name a caller's malformed header, per call and before authentication.
        logging.getLogger(name).setLevel(logging.ERROR)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(_exporter(settings), schedule_delay_millis=settings.export_interval_ms)
    )
    # The provider is ours, not the process-wide global: a library's spans do not ride along.
    _tracer = provider.get_tracer("labelgate")

    def shutdown() -> None:
        global _tracer
        _tracer = None
        provider.shutdown()  # flushes what is still batched

    return shutdown


def _exporter(settings: TracingSettings) -> Any:
    endpoint = settings.endpoint or ""
    if settings.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if endpoint.count("/") <= 2:  # scheme://host:port with no path
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    secure = endpoint.startswith("https://")
    return GrpcExporter(endpoint=endpoint, insecure=not secure)


def call_span(
    method: str, model: str, metadata: Sequence[tuple[str, Any]]
) -> contextlib.AbstractContextManager[Any]:
    """The span of one call (or streamed message), the child of the caller's ``traceparent``
    (its trace state empty, see the module's docstring). ``method`` is the caller's text: it is
    bounded here (``model`` arrives bounded)."""
    if _tracer is None:
        return _NOTHING
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # The traceparent alone: its trace id and span id, never the caller's tracestate.
    carrier = {k: v for k, v in metadata if k == "traceparent" and isinstance(v, str)}
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        "labelgate.call",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.method": bounded(method), "labelgate.model": bounded(model)},
        # An exception's text may quote what a caller or upstream sent: the outcome and the
        # stable reason are set instead (``annotate``).
        record_exception=False,
        set_status_on_exception=False,
    )


def stage(name: str, **attributes: str) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current call for one stage; attributes are names, never values."""
    if _tracer is None:
        return _NOTHING
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    )


def annotate(**attributes: str | Sequence[str]) -> None:
    """Attributes on the current span (the call's outcome, reason, labels)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})


def outgoing(
    metadata: Sequence[tuple[str, Any]], allowed: frozenset[str], *, upstream: str
) -> tuple[tuple[str, Any], ...]:
    """The upstream's metadata (the allow-listed part of the caller's) with the caller's trace
    headers replaced by the current span's (the gateway's ``upstream`` span), for the trace
    headers the allow-list forwards; tracing off, with the caller's ``traceparent`` only when
    it is W3C's (``upstream`` names the upstream in the line saying it was not)."""
    if _tracer is None:
        return _callers_traceparent_only(metadata, upstream)
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    kept = [(k, v) for k, v in metadata if k not in TRACE_HEADERS]
    return (*kept, *((k, v) for k, v in carrier.items() if k in allowed))


def _callers_traceparent_only(
    metadata: Sequence[tuple[str, Any]], upstream: str
) -> tuple[tuple[str, Any], ...]:
    """Tracing off: the caller's ``tracestate`` never travels (free text, unvetted, into the
    upstream's logs), and its ``traceparent`` only as one well-formed W3C header (which lets
    the caller join the upstream's traces, as W3C means it to, and carries nothing else)."""
    parents = [value for key, value in metadata if key == "traceparent"]
    if not parents and not any(key == "tracestate" for key, _ in metadata):
        return tuple(metadata)  # the common call: nothing to look at
    valid = len(parents) == 1 and isinstance(parents[0], str) and _W3C_TRACEPARENT.fullmatch(parents[0])
    if parents and not valid:
        why = "not a W3C traceparent" if len(parents) == 1 else "more than one traceparent"
        # The name only: the value is the caller's and may be anything.
        log.warning("caller header not forwarded", why=why, upstream=upstream, header="traceparent")
    return tuple(
        (key, value)
        for key, value in metadata
        if key not in TRACE_HEADERS or (key == "traceparent" and valid)
    )
