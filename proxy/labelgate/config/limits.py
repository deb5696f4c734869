"""The bounds sections: ``limits`` (what one call, stream or reply may hold, checked before
policy runs, and what all calls in progress may hold at once) and ``rest`` (what a client of
the REST listener may hold before its request reaches the app).

Apart from the other sections because they are one idea, what a caller or an upstream can
make the gateway spend, and long: each bound says what it was measured against.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from labelgate.calls import INPUT_NAME_BYTES_KEPT, INPUTS_KEPT
from labelgate.config.sections import Section, refuse


class LimitSettings(Section):
    """Bounds checked before policy runs, so no caller or upstream can make a decision costly."""

    # grpc takes a C int: 2 GiB and above fail at start (OverflowError). It also bounds what a
    # request's parse builds, estimated from its wire bytes before the parse (gateway/
    # wire_bounds.py; INVALID_ARGUMENT, REQUEST_TOO_LARGE), charged to the in-flight bound.
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=2**31 - 1)
    # The default pack's decision grows faster than linearly in its fields on the embedded
    # engine (256 fields: ~0.3 s, 512: ~1.3 s, 4096: minutes and gigabytes, measured on
    # regopy 1.5.2): these bounds keep one call's decision cheap.
    max_requested_outputs: int = Field(64, ge=1, le=100_000)
    max_inputs: int = Field(
        1024,
        ge=1,
        le=INPUTS_KEPT,
        description="Input tensors an inference request may have (ModelInfer, each ModelStreamInfer "
        "message, REST .../infer); more are refused before anything is built from them "
        "(INVALID_ARGUMENT / 400, TOO_MANY_INPUTS). Each input's name, datatype and shape is "
        "copied into the policy input of both phases, the decision cache's key, the request "
        "digest and the call's record: unbounded, one 15 MiB request of 270,000 empty inputs held "
        "the event loop 2.6 s and made a 138 MB recording entry. Models take a few, rarely a few "
        "hundred; the upper bound (16,384) is what the gateway copies of a request before its "
        "bounds are checked",
    )
    max_fields: int = Field(512, ge=1, le=1_000_000)
    # Also bounds each requested output's and each input's name (PATH_TOO_LONG).
    max_path_bytes: int = Field(512, ge=16, le=INPUT_NAME_BYTES_KEPT)
    # Streamed (decoupled) text is held back this many bytes per element, so a value split
    # across replies is scanned whole; at least the longest detector match.
    stream_carry_bytes: int = Field(256, ge=64, le=65_536)
    # A repository index or statistics reply is narrowed by one policy decision per model it
    # lists; more distinct models than this fail the call (RESOURCE_EXHAUSTED).
    max_index_models: int = Field(1024, ge=1, le=100_000)
    max_message_values: int = Field(
        100_000,
        ge=64,
        le=10_000_000,
        description="Values a typed reply (model metadata, config and statistics, a routed "
        "service's messages) may hold: it is classified a value at a time on the gateway's event "
        "loop, so one large reply stalls every call of the worker. Each present field, repeated "
        "element and map entry counts one, and a field read as characters, a map or an Any "
        "walked apart a few dozen more; text scanned one a 128 bytes (decoded text 4 times as "
        "much) and each detection two (classify/messages.py), all counted as the walk goes, a "
        "split_values: hold route's walk too; past the limit the reply is refused (UNAVAILABLE / "
        "502, MESSAGE_TOO_MANY_VALUES). Measured at 1-4 "
        "us a value (8 when every value is a detected card), so the default bounds a reply to "
        "0.1-0.4 s of classification, 0.8 s at worst (a 15 MiB reply of 720,000 outputs took 10 s "
        "unbounded). It is sized for statistics of max_index_models models (about 100 values "
        "each); lower it where no reply is that large. It also bounds a request's values "
        "(routed services' and the inference protocol's, where a tensor's contents count one), "
        "counted from its wire bytes after authentication and before it is parsed "
        "(INVALID_ARGUMENT, MESSAGE_TOO_MANY_VALUES): routes whose requests carry more packed "
        "varints or sub-messages need a higher limit",
    )
    # Request bytes all calls in progress may hold at once, per process (gateway/inflight.py):
    # a call pins about four times its request, so this bounds most of what callers can make
    # the gateway hold. Past it a request is refused at once (RESOURCE_EXHAUSTED /
    # 503, REQUEST_BYTES_EXHAUSTED). Calls held for approval count under approvals.max_held_bytes.
    max_request_bytes_in_flight: int = Field(128 * 1024 * 1024, ge=1024, le=2**40)
    # What the streams of split_values: hold routes hold at once, per process, while a value
    # may still straddle their messages (each stream alone is bounded by max_message_bytes):
    # messages as the hold counts them (serialized, parsed, their text; binary is held to the
    # stream's end). Past it the stream that would pass it ends (RESOURCE_EXHAUSTED,
    # STREAM_HELD_BYTES_EXHAUSTED), nothing of what it holds released. Sized for a 2-core,
    # 4 GiB host: held bytes cost 1.6 to 2 times as much resident memory (docs/OPERATING.md).
    max_stream_held_bytes: int = Field(256 * 1024 * 1024, ge=1024, le=2**40)
    # Streams (ModelStreamInfer and routed streaming methods) open at once, per process: each
    # holds memory however little it sends. Past it a stream is refused at once
    # (RESOURCE_EXHAUSTED, TOO_MANY_STREAMS), before anything is opened upstream.
    max_open_streams: int = Field(1024, ge=1, le=1_000_000)
    # Of those, the streams one authenticated caller (qualified subject id) may have open at
    # once, so that one caller cannot take them all; past it a stream is refused once its
    # caller is authenticated (RESOURCE_EXHAUSTED, CALLER_STREAMS_EXHAUSTED; recorded).
    max_open_streams_per_caller: int = Field(256, ge=1, le=1_000_000)
    # grpc.health.v1 Watch streams open at once, per process: probes are not authenticated,
    # so they are counted apart from max_open_streams and cannot take the callers' streams.
    # Past it a Watch is refused at once (RESOURCE_EXHAUSTED, TOO_MANY_STREAMS).
    max_health_watches: int = Field(64, ge=1, le=1_000_000)
    # grpc.reflection ServerReflectionInfo streams open at once, per process: reflection is
    # not authenticated either (grpcurl and IDEs list and describe services with it), so its
    # streams are counted apart, as health watches are. An operator's tool holds one or a few
    # for a moment; unbounded, 40 anonymous streams holding one 15 MiB request each took a
    # gateway from 720 MiB to 2.9 GiB. Past it a stream is refused at once
    # (RESOURCE_EXHAUSTED, TOO_MANY_STREAMS).
    max_reflection_streams: int = Field(16, ge=1, le=1_000_000)
    grpc_request_compression: bool = Field(
        False,
        description="Accept gzip- and deflate-compressed gRPC requests (tritonclient's "
        "compression_algorithm). Off, a compressed request is refused from its headers by grpc "
        "(UNIMPLEMENTED, \"Compression algorithm 'gzip' is disabled\"), before it is read, "
        "authenticated or recorded. On, grpc inflates every compressed request, up to "
        "max_message_bytes, before any bound of the gateway sees it or its caller is "
        "authenticated: measured, ~15 KB of gzip on the wire made 15 MiB and 43 ms of CPU, from "
        "anyone who can reach the port, and an anonymous flood of them took a health check from "
        "1.5 ms to 4.4 s. Turn it on only where no untrusted client reaches the gRPC listener (a "
        "network policy, mTLS), with max_message_bytes lowered to what the clients send. Replies "
        "are not compressed either way, and the REST listener, which this does not change, "
        "inflates a body only once its caller is authenticated, within max_message_bytes",
    )
    # A ModelStreamInfer stream waiting for its caller's next request, with none of its
    # requests unanswered, ends after this long (DEADLINE_EXCEEDED, STREAM_IDLE): its upstream
    # stream, and upstream.timeout_seconds, only start with its first request.
    stream_idle_seconds: float = Field(300.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _one_message_fits_in_flight(self) -> LimitSettings:
        if self.max_request_bytes_in_flight < self.max_message_bytes:
            refuse(
                [
                    "max_request_bytes_in_flight is below max_message_bytes: "
                    "a request of the largest size would always be refused"
                ]
            )
        return self


class RestSettings(Section):
    """Bounds of the REST listener (``rest_listen``) before a request reaches the app: what an
    unauthenticated client can hold of the gateway's memory, time and file descriptors."""

    # A request line and header block larger than this is refused (431) and the connection closed.
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # A request's head must be complete this long after its first byte (or after connecting): else 408.
    head_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Its body, this long after its head: else 408 (the app sees a disconnect).
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    # An idle keep-alive connection is closed after this.
    keep_alive_seconds: float = Field(5.0, gt=0, le=300)
    # Connections beyond this get 503 at once (also held to half the open-file limit at start).
    max_connections: int = Field(1024, ge=1, le=100_000)
