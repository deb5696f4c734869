"""The one configuration model of the gateway.

Sources, strongest first: command-line flags, ``LABELGATE_*`` environment variables
(nested with ``__``, e.g. ``LABELGATE_POLICY__TIMEOUT_MS=100``; one that looks like a setting
but names none is refused), the YAML file (pydantic-settings' YAML source, reading with a
loader that refuses a key written twice and YAML aliases). Path settings are typed
``ConfigPath``: relative ones (from any source) are resolved against the config file's
folder when there is one, so a config works from any working directory.
``load_settings`` refuses a config that cannot work, listing every problem at once,
including settings that could never take effect: each section checks itself (its own
``model_validator``), and the few checks that span sections are the small named functions
in ``_CROSS_SECTION_CHECKS``.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from labelgate import reasons
from labelgate.auth.assertion import SubjectAssertionSettings
from labelgate.auth.settings import AuthSettings
from labelgate.calls import INPUT_NAME_BYTES_KEPT, INPUTS_KEPT
from labelgate.classify.labels import LABELS
from labelgate.classify.parameters import FINAL_PARAMETER, FINAL_PARAMETER_TYPES, ParameterType
from labelgate.config_paths import ConfigPath, config_folder_context, from_config_file
from labelgate.digits import whole_number
from labelgate.errors import ConfigError
from labelgate.recording.settings import RecordingSettings
from labelgate.retry import RetrySettings
from labelgate.shown_urls import shown_url
from labelgate.tracing import TracingSettings

# The vocabulary is defined once (classify/labels.py); subscripting with the tuple spells it out.
Label = Literal[LABELS]  # type: ignore[valid-type]
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "labelgate_config_file", default=None
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _refuse(problems: list[str]) -> None:
    """A section's own check: every problem at once (``format_validation_error`` splits them)."""
    if problems:
        raise ValueError("; ".join(problems))


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    number = whole_number(port)
    if not sep or not host or number is None or not 0 <= number <= 65535:
        raise ValueError(f"{shown_url(value)!r} is not HOST:PORT")
    return value


def _http_url(value: str) -> str:
    """An http(s) URL a client can open: a scheme, a host and a port that fits (urllib and
    httpx refuse the rest only when the gateway first calls it)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:  # urllib's message may repeat the netloc: shown without userinfo
        raise ValueError(f"{shown_url(value)!r} is not a URL: {shown_url(value, str(error))}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise ValueError(f"{shown_url(value)!r} is not an http(s)://HOST[:PORT] URL")
    return value


class UpstreamSettings(Section):
    address: str = "127.0.0.1:8001"
    tls: bool = False
    ca_file: ConfigPath | None = None
    server_name: str | None = None
    # The gateway's own credential for the upstream; the caller's is never forwarded.
    token: SecretStr | None = None
    # A day at most: a call may stream a long generation, but never for ever (.inf was taken).
    timeout_seconds: float = Field(30.0, gt=0, le=86_400)
    # Caller metadata that travels upstream, by name (lower case); nothing else does.
    # Credentials and labelgate's own keys never travel, even if named here.
    forward_metadata: list[str] = ["traceparent", "tracestate", "x-request-id"]
    # A short-lived JWT about the caller, signed with the gateway's key, on every upstream call
    # (labelgate.auth.assertion); its JWKS is at the admin listener's /.well-known/jwks.json.
    subject_assertion: SubjectAssertionSettings = SubjectAssertionSettings()

    _check_address = field_validator("address")(classmethod(lambda cls, v: _host_port(v)))

    @model_validator(mode="after")
    def _tls_settings_need_tls(self) -> UpstreamSettings:
        if not self.tls and (self.ca_file or self.server_name):
            _refuse(["ca_file/server_name are set but tls is false"])
        return self


class UpstreamConnection(UpstreamSettings):
    """One of ``upstreams:``: a named inference service and the models it serves (fnmatch
    globs, first match in config order wins), or, with ``discover: true``, the READY models
    its repository index lists (``gateway/discovery.py``). Address, TLS, the gateway's own
    token, timeout and forwarded metadata are per upstream; the subject assertion is the
    gateway's one key, set in ``upstream.subject_assertion``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # Globs this entry routes; with discover, only which discovered names it may claim.
    models: list[str] = []
    # Ask the upstream's RepositoryIndex at start and every discover_interval_seconds. An
    # explicit glob entry always wins over a discovered name; a name two discovering
    # upstreams list is routed to neither.
    discover: bool = False
    discover_interval_seconds: float = Field(30.0, gt=0, le=86_400)
    # A failed refresh keeps the last good list until it is this old, then routes none of it.
    discover_max_stale_seconds: float = Field(120.0, gt=0, le=7 * 86_400)
    # How the gateway speaks to it: gRPC, or the KServe v2 REST binding (https when tls is set,
    # trusting ca_file); callers of either binding reach either kind (gateway/rest_upstream.py).
    protocol: Literal["grpc", "rest"] = "grpc"

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: list[str]) -> list[str]:
        if any(not glob.strip() for glob in value):
            raise ValueError("a model glob is empty")
        return value

    @model_validator(mode="after")
    def _models_or_discovery(self) -> UpstreamConnection:
        if not self.models and not self.discover:
            _refuse(["models: list the models this upstream serves, or set discover: true"])
        if self.discover and self.discover_max_stale_seconds < self.discover_interval_seconds:
            _refuse(["discover_max_stale_seconds: at least discover_interval_seconds"])
        return self

    @model_validator(mode="after")
    def _one_assertion_key(self) -> UpstreamConnection:
        if "subject_assertion" in self.model_fields_set:
            _refuse(
                ["subject_assertion: the gateway signs with one key; set it in upstream.subject_assertion"]
            )
        return self


class ServerTlsSettings(Section):
    """The gateway's own certificate. Client certificates are required when auth.mtls is set."""

    cert_file: ConfigPath
    key_file: ConfigPath


class PolicySettings(Section):
    dir: ConfigPath = Path("rego")
    opa_url: str = "http://127.0.0.1:8181"
    opa_token: SecretStr | None = None
    opa_ca_file: ConfigPath | None = None
    timeout_ms: int = Field(250, gt=0, le=60_000)
    # engine opa: retries of a refused or dropped connection (labelgate/retry.py), never past
    # timeout_ms; unset: one retry at once.
    opa_retry: RetrySettings | None = None
    _check_opa_url = field_validator("opa_url")(classmethod(lambda cls, v: _http_url(v)))
    # Any engine: a decision not made by then is a deny (POLICY_TIMEOUT), so a costly input
    # never holds a call, or a worker thread's queue, for long.
    decision_deadline_ms: int = Field(5_000, gt=0, le=60_000)
    cache: bool = True
    # The decision cache's bounds: entries, and the bytes of their keys (each key is the
    # decision-relevant input, ~1 KB for the default pack and up to ~70 KB for a call naming
    # 64 long outputs); the least recently used entries go first. docs/OPERATING.md.
    cache_max_entries: int = Field(10_000, ge=1)
    cache_max_bytes: int = Field(64 * 2**20, ge=1)
    # Follow a bundle server (engine embedded): policy and catalog both come from its bundle.
    bundle_url: str | None = Field(None, pattern=r"^https?://[^\s/]+")
    bundle_name: str = Field("labelgate", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    bundle_token: SecretStr | None = None
    # Set: only bundles signed with the matching private key load (unsigned ones are refused).
    bundle_public_key_file: ConfigPath | None = None
    bundle_signing_alg: Literal["RS256", "ES256"] = "RS256"
    bundle_wait_seconds: int = Field(20, ge=0, le=300)
    # How long start waits for the first good bundle before giving up (the gateway does not start).
    bundle_start_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # Backoff after a failed poll (labelgate/retry.py; attempts are unlimited, the client follows for good).
    bundle_retry: RetrySettings | None = None
    # With a public key: where the newest signed revision's sequence is kept, so a restarted
    # gateway still refuses older signed bundles replayed to it (policy/bundle_mark.py).
    bundle_state_file: ConfigPath | None = None
    # Engine embedded: every revision must first pass `opa check` (policy/opa_check.py). auto:
    # when $LABELGATE_OPA or `opa` on PATH is there (else skipped, said once); required: no
    # start without it; off: never.
    opa_check: Literal["auto", "required", "off"] = "auto"

    @model_validator(mode="after")
    def _bundle_settings_need_a_bundle(self) -> PolicySettings:
        bundle_only = {
            "bundle_name",
            "bundle_token",
            "bundle_public_key_file",
            "bundle_signing_alg",
            "bundle_wait_seconds",
            "bundle_start_timeout_seconds",
            "bundle_retry",
            "bundle_state_file",
        }
        unused = sorted(bundle_only & self.model_fields_set)
        if self.bundle_url is None and unused:
            _refuse([f"policy.{', policy.'.join(unused)} set but policy.bundle_url is not"])
        if self.bundle_state_file is not None and self.bundle_public_key_file is None:
            _refuse(["policy.bundle_state_file orders signed bundles: set policy.bundle_public_key_file"])
        if self.bundle_url is not None and "dir" in self.model_fields_set:
            _refuse(["policy.dir and policy.bundle_url are both set: the bundle replaces the folder"])
        return self


class CustomDetector(Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    pattern: str
    label: Label = "confidential"


class DetectorSettings(Section):
    disabled: list[str] = []
    labels: dict[str, Label] = {}
    custom: list[CustomDetector] = []

    @model_validator(mode="after")
    def _detectors_exist_and_compile(self) -> DetectorSettings:
        from labelgate.classify.detectors import BUILTIN_LABELS, CustomPattern, DetectorSet

        known = sorted(BUILTIN_LABELS)
        problems = [
            f"{where}: unknown built-in detector {name!r} (one of {known})"
            for where, names in (("disabled", self.disabled), ("labels", list(self.labels)))
            for name in names
            if name not in BUILTIN_LABELS
        ]
        if not problems:
            try:  # the gateway's own construction: a custom regex that does not compile, ...
                DetectorSet({}, [CustomPattern(c.name, c.pattern, c.label) for c in self.custom])
            except ConfigError as error:
                problems.append(f"custom: {error.message}")
        _refuse(problems)
        return self


class ClassificationSettings(Section):
    # The catalog also holds the default label of unlabelled fields (internal out of the box).
    catalog_file: ConfigPath = Path("rego/labelgate/catalog/data.json")
    detectors: DetectorSettings = DetectorSettings()


class MaskingSettings(Section):
    # Key of the `hash` strategy: stable across gateways so hashed values still join.
    hash_key: SecretStr | None = None
    hash_key_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _one_usable_key(self) -> MaskingSettings:
        problems = []
        if self.hash_key is not None and len(self.hash_key.get_secret_value()) < 16:
            problems.append("masking.hash_key must be at least 16 bytes")
        if self.hash_key is not None and self.hash_key_file is not None:
            problems.append("masking.hash_key and masking.hash_key_file are both set: choose one")
        _refuse(problems)
        return self


class RouteSettings(Section):
    """A non-inference gRPC service routed by method name."""

    method_prefix: str = Field(pattern=r"^/[\w.]+/")
    upstream: str | None = None
    descriptor_set: ConfigPath | None = None
    # Required when the descriptors name a server-streaming method: "hold" for token streams
    # (string fields are pieces of one text: each message is held until no detected value can
    # straddle it and the next, and a value split across messages ends the stream,
    # classify/split_values.py); "per_message" for record streams (each message whole).
    split_values: Literal["hold", "per_message"] | None = None

    @model_validator(mode="after")
    def _not_a_built_in_service(self) -> RouteSettings:
        if self.method_prefix.startswith(("/grpc.health.v1.Health/", "/grpc.reflection.")):
            _refuse(["health and reflection are the gateway's own services; a route there never runs"])
        if self.method_prefix.startswith("/inference.GRPCInferenceService/"):
            _refuse(["the Open Inference Protocol is built in; do not route it"])
        return self


# The audit commit delay's default (AuditSettings.commit_delay_ms): off. Measured on the bench
# machine it saves throughput at saturation (c=32) and costs it at moderate load (c=4);
# docs/OPERATING.md has the figures. An opt-in for gateways that run saturated.
COMMIT_DELAY_MS = 0.0


class AuditSettings(Section):
    """Durable audit records through the audit-writer process (unset: structured logs only)."""

    socket: ConfigPath | None = None
    timeout_seconds: float = Field(2.0, gt=0, le=60)
    # Group commit across calls (PostgreSQL's commit_delay / commit_siblings): with at least
    # commit_siblings other calls in flight, a record may wait this long for theirs so that one
    # write and one fsync serve them all (0, the default: never wait). A lone call never waits.
    commit_delay_ms: float = Field(COMMIT_DELAY_MS, ge=0, le=50)
    commit_siblings: int = Field(2, ge=1, le=10_000)
    # Let calls through when the writer is unreachable. Loud on purpose: records are lost.
    fail_open: bool = False
    # Every distinct decision input (names, labels, paths, subject; never a data value), kept
    # once by its hash in this SQLite file for ``labelgate policy impact`` (unset: not kept).
    inputs_file: ConfigPath | None = None
    inputs_retention_days: int = Field(30, ge=1, le=3650)
    # The inputs' text is kept within this many bytes: past it, the least recently seen go first
    # (counted as labelgate_errors_total{kind="INPUT_STORE_TRIMMED"}). A caller can make every
    # call, refused ones too, a new input of up to ~80 KiB. The file adds SQLite's overhead.
    inputs_max_bytes: int = Field(1 << 30, ge=1 << 20, le=1 << 40)

    @model_validator(mode="after")
    def _commit_delay_within_the_deadline(self) -> AuditSettings:
        if self.commit_delay_ms / 1000 > self.timeout_seconds / 2:
            _refuse(["audit.commit_delay_ms must be at most half of audit.timeout_seconds"])
        return self

    @model_validator(mode="after")
    def _fail_open_needs_a_writer(self) -> AuditSettings:
        if self.fail_open and self.socket is None:
            _refuse(["audit.fail_open is set but audit.socket is not: there is no writer to fail open from"])
        return self


class LimitSettings(Section):
    """Bounds checked before policy runs, so no caller or upstream can make a decision costly."""

    # grpc takes a C int: 2 GiB and above fail at start (OverflowError).
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
        "each); lower it where no reply is that large",
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
    # A ModelStreamInfer stream waiting for its caller's next request, with none of its
    # requests unanswered, ends after this long (DEADLINE_EXCEEDED, STREAM_IDLE): its upstream
    # stream, and upstream.timeout_seconds, only start with its first request.
    stream_idle_seconds: float = Field(300.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _one_message_fits_in_flight(self) -> LimitSettings:
        if self.max_request_bytes_in_flight < self.max_message_bytes:
            _refuse(
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


class ReleasedParameter(Section):
    """A released parameter name: the label it carries, and the value types it may hold (the
    ``InferParameter`` choices). A value of another type is dropped, as an unreleased name is."""

    label: Label
    types: list[ParameterType] = Field(min_length=1)

    @field_validator("types")
    @classmethod
    def _each_type_once(cls, types: list[ParameterType]) -> list[ParameterType]:
        if len(set(types)) != len(types):
            raise ValueError(f"each type once: {types}")
        return types


def _release_form(value: Any) -> str:
    # Anything but a mapping is read as a label, so a null or a number is told the labels it
    # may be (a mapping gets the typed form's own errors).
    return "typed" if isinstance(value, dict | ReleasedParameter) else "label"


# ``name: label`` or ``name: {label, types}``, told apart by form so that a mistake in either is
# reported against that form alone.
ParameterRelease = Annotated[
    Annotated[Label, Tag("label")] | Annotated[ReleasedParameter, Tag("typed")],
    Discriminator(_release_form),
]


class ReleaseSettings(Section):
    """What of an upstream reply's side channels may reach a caller, besides its outputs."""

    # Reply and output parameters released, each with the label it carries (string values,
    # and numbers as their digits, are also scanned by the detectors); every other parameter
    # is dropped. ``name: label`` releases a value of any type; ``name: {label, types}`` only
    # those types (a REST upstream's whole numbers arrive as int64). The final flag
    # (``triton_final_response``) is released as a bool only, whatever the form.
    parameters: dict[str, ParameterRelease] = {
        FINAL_PARAMETER: ReleasedParameter(label="public", types=list(FINAL_PARAMETER_TYPES))
    }

    @field_validator("parameters")
    @classmethod
    def _final_flag_is_a_bool(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        final = parameters.get(FINAL_PARAMETER)
        if isinstance(final, ReleasedParameter) and set(final.types) != set(FINAL_PARAMETER_TYPES):
            raise ValueError(
                f"{FINAL_PARAMETER} is Triton's final-response flag, a bool: release it as "
                f"`{FINAL_PARAMETER}: <label>` or with types [bool] (it is only ever released as a bool)"
            )
        return parameters


ApprovalEvent = Literal["requested", "granted", "denied", "expired", "abandoned"]


class WebhookSettings(Section):
    """Where approval notifications go. ``slack``: text + blocks with the deep link (Slack
    incoming webhooks, Mattermost); ``generic``: the request as JSON."""

    url: str = Field(pattern=r"^https?://[^\s/]+")
    format: Literal["slack", "generic"] = "generic"
    events: list[ApprovalEvent] = ["requested"]
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_seconds: float = Field(0.5, gt=0, le=60)
    # The one retry policy (labelgate/retry.py); set, it replaces max_attempts and backoff_seconds.
    retry: RetrySettings | None = None


class ApprovalSettings(Section):
    """Just-in-time approvals: calls the policy holds wait here for approvers."""

    # false: a call the policy holds is refused at once (reason APPROVAL_REQUIRED).
    enabled: bool = True
    store: Literal["sqlite", "postgres"] = "sqlite"
    # None: an in-memory database, lost on restart (one gateway process only).
    sqlite_file: ConfigPath | None = None
    postgres_dsn: SecretStr | None = None
    hold_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # How long a request made with `x-labelgate-approval: async` stays open (nobody is held).
    async_timeout_seconds: float = Field(900.0, gt=0, le=7 * 86400)
    # A held call whose client deadline leaves less than this is refused at once (use async mode).
    min_hold_seconds: float = Field(1.0, ge=0, le=60)
    # Resolve a held call this long before the client's deadline, so the caller sees why.
    deadline_margin_seconds: float = Field(0.25, ge=0, le=10)
    # Decided requests are purged this long after they end; a granted one is kept while its
    # grant lives (a grant counts only in the groups its request asked for).
    retention_seconds: int = Field(7 * 86400, ge=0)
    sweep_interval_seconds: float = Field(1.0, gt=0, le=60)
    # Base URL of the web inbox in links (notifications, async answers); default: the admin listener.
    public_url: str | None = Field(None, pattern=r"^https?://[^\s/]+")
    # Names this gateway in held requests, so a restart can mark the calls it lost as abandoned.
    node_id: str | None = Field(None, min_length=1, max_length=200)
    # Viewer groups: may see every request and the recorded sessions, and never vote (neither
    # approve nor deny); only the approver groups the policy names vote.
    viewer_groups: list[str] = []
    # The former name of viewer_groups (same meaning, merged with it; both read the union).
    admin_groups: list[str] = []
    webhooks: list[WebhookSettings] = []
    # Pending requests one requester (qualified subject id) may have open at once; the next
    # call that would open one is refused with RESOURCE_EXHAUSTED (APPROVAL_REQUESTS_EXHAUSTED).
    max_open_per_requester: int = Field(100, ge=1, le=100_000)
    max_held_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="Bytes of the requests of all the calls one gateway process holds for approval "
        "at once (a held call keeps its request in memory, about 2.5 times its size with what the "
        "gateway made of it, until it is decided; held in its response phase, the upstream's reply "
        "too, which counts with it). A call that would hold more is refused with "
        "RESOURCE_EXHAUSTED (APPROVAL_HELD_BYTES_EXHAUSTED); `x-labelgate-approval: async` holds nothing",
    )
    max_held_bytes_per_requester: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="As max_held_bytes, for the calls of one requester (qualified subject id) in "
        "one gateway process; past it: RESOURCE_EXHAUSTED (APPROVAL_HELD_BYTES_EXHAUSTED)",
    )

    @model_validator(mode="after")
    def _one_set_of_viewers(self) -> ApprovalSettings:
        viewers = sorted(set(self.viewer_groups) | set(self.admin_groups))
        self.viewer_groups = viewers
        self.admin_groups = list(viewers)
        return self

    def usable(self, *, workers: int, has_jwt: bool, admin_listen: str | None) -> bool:
        return self.enabled and not self.problems(workers=workers, has_jwt=has_jwt, admin_listen=admin_listen)

    def problems(self, *, workers: int, has_jwt: bool, admin_listen: str | None) -> list[str]:
        found: list[str] = []
        if not self.enabled:
            return found
        if self.store == "postgres" and self.postgres_dsn is None:
            found.append("approvals.store is postgres but approvals.postgres_dsn is not set")
        if self.store == "sqlite" and self.postgres_dsn is not None:
            found.append("approvals.postgres_dsn is set but approvals.store is sqlite: it is never used")
        if self.store == "sqlite" and self.sqlite_file is None and workers > 1:
            found.append("approvals: workers > 1 need a shared store (sqlite_file or postgres), not memory")
        if not has_jwt:
            found.append("approvals need auth.jwt: approvers sign in with the gateway's JWT configuration")
        if self.public_url is None and admin_listen is None:
            found.append("approvals need approvals.public_url or admin_listen for the inbox links")
        return found


class OidcSettings(Section):
    """Inbox sign-in with OpenID Connect (authorization code + PKCE, ``approvals/oidc.py``).

    The approver becomes ``jwt:<issuer>#<sub>``: the same person as their API bearer token
    when the identity provider issues both, which is why ``subject_claim`` must be
    ``auth.jwt.subject_claim`` when both name one issuer (``_one_subject_claim_per_issuer``).
    Set, it replaces the token-paste sign-in.
    """

    # The provider's issuer URL (https; http only on loopback, for tests); discovery is read
    # from <issuer>/.well-known/openid-configuration and must name the same issuer.
    issuer: str = Field(pattern=r"^https?://[^\s#]+$")
    client_id: str = Field(min_length=1, max_length=500)
    # A confidential client's secret (client_secret_basic); unset: a public client (PKCE only).
    client_secret: SecretStr | None = None
    client_secret_file: ConfigPath | None = None
    # Where the provider sends approvers back; default: <approvals.public_url>/inbox/oidc/callback,
    # else the admin listener's own address as the browser reached it.
    redirect_url: str | None = Field(None, pattern=r"^https?://[^\s#]+/inbox/oidc/callback$")
    scopes: list[str] = ["openid", "groups"]
    # Where the approver's groups are: a claim name, or a dotted path into nested claims.
    groups_claim: str = Field(
        "groups",
        min_length=1,
        description="Claim name or dotted path; a list of group names taken as they are, or one "
        "string, which is one group name (never split). A name that is empty, starts or ends with "
        "a space, or holds other whitespace or invisible characters refuses the sign-in "
        "(OIDC_BAD_GROUPS)",
    )
    subject_claim: str = Field(
        "sub",
        min_length=1,
        description="The claim naming the approver; with auth.jwt's issuer, it must be "
        "auth.jwt.subject_claim (one person, one id)",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    leeway_seconds: int = Field(30, ge=0, le=300)

    @model_validator(mode="after")
    def _coherent(self) -> OidcSettings:
        from urllib.parse import urlsplit

        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError("admin.oidc.client_secret and client_secret_file are both set: choose one")
        parts = urlsplit(self.issuer)
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("admin.oidc.issuer must be https (http only for loopback)")
        if "openid" not in self.scopes:
            raise ValueError("admin.oidc: scopes must include openid")
        return self


class AdminSettings(Section):
    """The admin listener (``admin_listen``): health, metrics, the approvals API and inbox.

    It runs on an event loop (and thread) of its own, so nothing sent to it delays inference.
    """

    # Request bodies larger than this are refused (413) while they are read, never buffered.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # A body not complete by then is refused (408): a slow sender holds no connection for long.
    body_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Connections (and requests in progress) beyond this get 503 at once.
    max_connections: int = Field(64, ge=1, le=10_000)
    # HTTPS for the listener: then session cookies are ``__Host-`` + Secure and HSTS is sent.
    tls: ServerTlsSettings | None = None
    # Swagger UI and ReDoc at /api-docs/ (local, pinned assets). Off unless asked for.
    api_docs: bool = False
    # Inbox sign-ins last as long as the token did, at most this.
    session_max_seconds: int = Field(8 * 3600, ge=60, le=7 * 86400)
    # The key that signs inbox session cookies (32+ bytes). Share it (file or env) between the
    # replicas behind one inbox URL; unset: a random key per process (a restart signs everyone out).
    session_key_file: ConfigPath | None = None
    session_key: SecretStr | None = None
    # Approvers sign in to the inbox with OpenID Connect (then the token-paste form is off).
    oidc: OidcSettings | None = None

    @model_validator(mode="after")
    def _one_key(self) -> AdminSettings:
        if self.session_key is not None and self.session_key_file is not None:
            raise ValueError("admin.session_key and admin.session_key_file are both set: choose one")
        if self.session_key is not None and len(self.session_key.get_secret_value()) < 32:
            raise ValueError("admin.session_key must be at least 32 bytes")
        return self


class _ValidatedInConfigFolder(BaseModel):
    """Validation with the config file's folder in the validation context, so ``ConfigPath``
    settings resolve against it. ``BaseSettings.__init__`` merges its sources and hands the
    values to ``BaseModel.__init__``, which takes no context; this class sits between the
    two (``GatewaySettings``' bases) to add it, as pydantic's docs do for init context."""

    def __init__(self, /, **data: Any) -> None:
        config_file = _config_file.get()
        context = config_folder_context(config_file.parent if config_file is not None else None)
        self.__pydantic_validator__.validate_python(data, self_instance=self, context=context)


class GatewaySettings(BaseSettings, _ValidatedInConfigFolder):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_", env_nested_delimiter="__", extra="forbid")

    listen: str = "127.0.0.1:8443"
    # The Open Inference Protocol's REST binding (KServe v2), the same pipeline as gRPC; off unless set.
    rest_listen: str | None = None
    admin_listen: str | None = "127.0.0.1:9090"
    admin: AdminSettings = AdminSettings()
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The default route: every call when ``upstreams`` is empty; with ``upstreams``, the models
    # no entry serves, only when ``upstream`` is set explicitly (else MODEL_NOT_ROUTED).
    upstream: UpstreamSettings = UpstreamSettings()
    upstreams: list[UpstreamConnection] = []
    _default_route: bool = PrivateAttr(default=True)
    server_tls: ServerTlsSettings | None = None
    # embedded: regopy in process; wasm: OPA's Wasm target in process (wasmtime); opa: OPA over HTTP.
    engine: Literal["embedded", "wasm", "opa"] = "embedded"
    policy: PolicySettings = PolicySettings()
    classification: ClassificationSettings = ClassificationSettings()
    masking: MaskingSettings = MaskingSettings()
    auth: AuthSettings = AuthSettings()
    routes: list[RouteSettings] = []
    limits: LimitSettings = LimitSettings()
    rest: RestSettings = RestSettings()
    release: ReleaseSettings = ReleaseSettings()
    audit: AuditSettings = AuditSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    recording: RecordingSettings = RecordingSettings()
    # OpenTelemetry spans per pipeline stage over OTLP (labelgate/tracing.py); off unless an endpoint is set.
    tracing: TracingSettings = TracingSettings()

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _host_port(v)))

    @field_validator("admin_listen", "rest_listen")
    @classmethod
    def _check_admin(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value)

    @model_validator(mode="after")
    def _sections_agree(self) -> GatewaySettings:
        _refuse([problem for check in _CROSS_SECTION_CHECKS for problem in check(self)])
        return self

    @model_validator(mode="after")
    def _fix_default_route(self) -> GatewaySettings:
        self._default_route = not self.upstreams or "upstream" in self.model_fields_set
        return self

    def default_route(self) -> bool:
        """Whether ``upstream`` serves the models no entry of ``upstreams`` names: always
        without ``upstreams``, else only when the config set ``upstream`` itself (fixed at
        validation, so a later ``model_copy`` of the section does not turn it on)."""
        return self._default_route

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFile(settings_cls, _config_file.get()))


def _client_certificates_can_arrive(settings: GatewaySettings) -> list[str]:
    if settings.auth.mtls is not None and settings.server_tls is None:
        return ["auth.mtls is set but server_tls is not: no client certificate can arrive"]
    return []


def _some_auth_method(settings: GatewaySettings) -> list[str]:
    # The gateway's requirement, not the auth section's: tools build an empty AuthSettings.
    if not settings.auth.enabled():
        return ["auth: no method (jwt, mtls, api_keys) is configured, so every call would be refused"]
    return []


def _opa_settings_need_opa(settings: GatewaySettings) -> list[str]:
    if (
        settings.engine != "opa"
        and {"opa_url", "opa_token", "opa_ca_file"} & settings.policy.model_fields_set
    ):
        return [f"policy.opa_* is set but engine is {settings.engine!r}: it would never be used"]
    return []


def _bundles_need_an_in_process_engine(settings: GatewaySettings) -> list[str]:
    if settings.policy.bundle_url is not None and settings.engine not in ("embedded", "wasm"):
        return ["policy.bundle_url needs engine 'embedded' or 'wasm' (an OPA engine pulls its own bundles)"]
    return []


def _one_catalog_source(settings: GatewaySettings) -> list[str]:
    if settings.policy.bundle_url is not None and "catalog_file" in settings.classification.model_fields_set:
        return [
            "classification.catalog_file is set but policy.bundle_url is too: the catalog comes "
            "from the bundle (data.labelgate.catalog)"
        ]
    return []


def _workers_share_a_fixed_port(settings: GatewaySettings) -> list[str]:
    if settings.workers > 1 and settings.listen.endswith(":0"):
        return ["workers > 1 needs a fixed listen port (SO_REUSEPORT shares one port)"]
    return []


def _admin_listens_apart(settings: GatewaySettings) -> list[str]:
    found = []
    if settings.admin_listen and settings.admin_listen == settings.listen:
        found.append("admin_listen must differ from listen")
    if settings.rest_listen and settings.rest_listen in (settings.listen, settings.admin_listen):
        found.append("rest_listen must differ from listen and admin_listen")
    return found


def _upstream_names_unique(settings: GatewaySettings) -> list[str]:
    names = [entry.name for entry in settings.upstreams]
    return ["upstreams: a name appears twice"] if len(set(names)) != len(names) else []


def _route_prefixes_unique(settings: GatewaySettings) -> list[str]:
    prefixes = [route.method_prefix for route in settings.routes]
    return ["routes: a method_prefix appears twice"] if len(set(prefixes)) != len(prefixes) else []


def _approvals_can_work(settings: GatewaySettings) -> list[str]:
    if "approvals" not in settings.model_fields_set:  # left out: holds are refused unless approvals work
        return []
    return settings.approvals.problems(
        workers=settings.workers, has_jwt=settings.auth.jwt is not None, admin_listen=settings.admin_listen
    )


def _one_subject_claim_per_issuer(settings: GatewaySettings) -> list[str]:
    # The inbox names an approver jwt:<issuer>#<admin.oidc.subject_claim>, the gateway names a
    # caller jwt:<issuer>#<auth.jwt.subject_claim>. From one issuer with two claims (email and
    # sub), one person is two ids that share no name, and approves their own held call.
    oidc, jwt = settings.admin.oidc, settings.auth.jwt
    if oidc is None or jwt is None or jwt.issuer is None:
        return []
    if oidc.issuer.rstrip("/") != jwt.issuer.rstrip("/") or oidc.subject_claim == jwt.subject_claim:
        return []
    return [
        f"admin.oidc.subject_claim {oidc.subject_claim!r} differs from auth.jwt.subject_claim "
        f"{jwt.subject_claim!r} for the same issuer {shown_url(jwt.issuer)!r}: the same person "
        "would get two ids, one signing in to the inbox and one calling the gateway, and could "
        "approve their own request. Set both to the same claim"
    ]


def _postgres_dsns_parse(settings: GatewaySettings) -> list[str]:
    # Parsed here, not at the first connection: a DSN that can never work must stop start-up.
    # The message never repeats the DSN (it may hold a password).
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return []
    found = []
    for where, dsn in (
        ("recording.postgres_dsn", settings.recording.postgres_dsn),
        ("approvals.postgres_dsn", settings.approvals.postgres_dsn),
    ):
        if dsn is None:
            continue
        try:
            conninfo_to_dict(dsn.get_secret_value())
        except Exception:  # psycopg raises ProgrammingError and others
            found.append(f"{where}: not a PostgreSQL DSN (postgresql://USER@HOST/DB or host=... dbname=...)")
    return found


def _numbers_are_finite(settings: GatewaySettings) -> list[str]:
    # YAML's .inf is a float pydantic takes wherever a setting has no upper bound, in every
    # section (those defined beside their modules too): a timeout or interval of infinity
    # never ends, or overflows where it becomes a deadline.
    def walk(value: object, where: str) -> list[str]:
        if isinstance(value, float):
            return [] if math.isfinite(value) else [f"{where}: must be a finite number"]
        if isinstance(value, BaseModel):
            return [
                found
                for name in type(value).model_fields
                for found in walk(getattr(value, name), f"{where}.{name}")
            ]
        if isinstance(value, (list, tuple)):
            return [found for index, item in enumerate(value) for found in walk(item, f"{where}[{index}]")]
        if isinstance(value, dict):
            return [found for key, item in value.items() for found in walk(item, f"{where}.{key}")]
        return []

    return [found for name in type(settings).model_fields for found in walk(getattr(settings, name), name)]


# The checks that need more than one section; each section checks itself.
_CROSS_SECTION_CHECKS: tuple[Callable[[GatewaySettings], list[str]], ...] = (
    _client_certificates_can_arrive,
    _some_auth_method,
    _opa_settings_need_opa,
    _bundles_need_an_in_process_engine,
    _one_catalog_source,
    _workers_share_a_fixed_port,
    _admin_listens_apart,
    _upstream_names_unique,
    _route_prefixes_unique,
    _approvals_can_work,
    _one_subject_claim_per_issuer,
    _postgres_dsns_parse,
    _numbers_are_finite,
)


# A config is a few kilobytes (the examples in deploy/ are 1.5-15 KB); a file past this is a
# mistake, and PyYAML's pure-Python loader takes seconds per megabyte.
MAX_CONFIG_BYTES = 1 << 20


class _Refused(yaml.YAMLError):
    """What ``_ConfigLoader`` refuses in otherwise valid YAML; its message names the line."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (what pydantic-settings reads with), refusing two things YAML
    allows: a mapping key written twice, of which PyYAML keeps the last and drops the first
    without a word (a second ``recording:`` section silently dropped the first one's encryption
    key), and anchors and aliases. An alias shares one node however often it is used: nine
    levels of nine aliases load in microseconds, then every copy of them (``from_config_file``,
    pydantic's validation) builds billions of values. Refusing them, rather than bounding
    copies, keeps every later step linear in the file's size; a configuration is short enough
    to write out, and no configuration labelgate ships uses them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                "accepted in a configuration: write the value out where it is used"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<``: explicit keys override merged ones, by YAML's design
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the constructor itself refuses it
            if first is not key_node:
                shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
                raise _Refused(
                    f"the key {shown} appears twice in one mapping (lines {first.start_mark.line + 1} "
                    f"and {key_node.start_mark.line + 1}): YAML keeps only the last, so the settings "
                    "of the first would be ignored"
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


class _ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source over the file ``load_settings`` names, failing closed:
    the library skips a missing file and lets parse errors through; here each is a
    ConfigError with the file's name. It reads with ``_ConfigLoader``, at most
    ``MAX_CONFIG_BYTES``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        if path is not None:
            try:
                path.open("rb").close()
            except OSError as error:
                raise ConfigError(
                    reasons.CONFIG_UNREADABLE, f"cannot read {path}: {error.strerror}"
                ) from None
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            with file_path.open("rb") as file:
                raw = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(
                reasons.CONFIG_UNREADABLE, f"cannot read {file_path}: {error.strerror}"
            ) from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                reasons.CONFIG_INVALID,
                f"{file_path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration",
            )
        try:
            loader = _ConfigLoader(raw.decode("utf-8"))
            loader.name = str(file_path)  # its error marks name the file
            try:
                data: object = loader.get_single_data() or {}
            finally:
                loader.dispose()
        except _Refused as error:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} is not valid YAML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                reasons.CONFIG_INVALID, f"{file_path} is not UTF-8 text (byte {error.start})"
            ) from None
        except RecursionError:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} is nested too deeply") from None
        if not isinstance(data, dict):
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} must hold a mapping at the top level")
        # Marked, so its relative paths (only these) resolve against its folder (config_paths).
        marked: dict[str, Any] = from_config_file(data)
        return marked


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"].removeprefix("Value error, ")
        for part in message.split("; "):
            lines.append(f"  - {where}: {part}")
    return "\n".join(lines)


def _environment_problem(error: SettingsError) -> str:
    """Name the LABELGATE_* variable pydantic-settings could not parse (it names the field)."""
    import json
    import os
    import re

    field = re.search(r'field "([^"]+)"', str(error))
    prefix = f"LABELGATE_{field.group(1)}".upper() if field else "LABELGATE_"
    unparsed = []
    for name, value in sorted(os.environ.items()):
        if name.upper() == prefix or name.upper().startswith(prefix + "__"):
            try:
                json.loads(value)
            except ValueError:
                unparsed.append(name)
    named = ", ".join(unparsed) or f"{prefix}*"
    return f'{named}: a list or object setting takes a JSON value, e.g. ["a", "b"]'


# LABELGATE_* variables labelgate's commands and tools read that are not settings (options'
# envvar=, the opa binary, test switches): never taken for a misspelt setting.
COMMAND_VARIABLES = frozenset(
    {
        "LABELGATE_APPROVALS_URL",
        "LABELGATE_BUNDLE_ALLOWED_HOSTS",
        "LABELGATE_BUNDLE_READER_TOKEN",
        "LABELGATE_BUNDLE_TOKEN",
        "LABELGATE_BUNDLE_TOKENS_FILE",
        "LABELGATE_DEBUG",
        "LABELGATE_DEMO_DEBUG_MODEL",
        "LABELGATE_DEV_KEYS",
        "LABELGATE_NATIVE",
        "LABELGATE_NO_REGO_PRELOAD",
        "LABELGATE_OPA",
        "LABELGATE_TOKEN",
    }
)


def misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """``LABELGATE_*`` variables that look like settings but name none. pydantic-settings reads
    only the names of fields, so ``LABELGATE_RECORDNG__ENCRYPTION_KEY_FILE`` was ignored without
    a word (recordings written in clear) while a typo inside a section is refused. A name with
    ``__`` is the nested settings syntax; a name without one is refused only when it is close
    to a setting's (``LABELGATE_WORKRS``): other tools' variables, and the ``LABELGATE_PORT``
    and ``LABELGATE_SERVICE_HOST`` a Kubernetes Service named labelgate adds, pass."""
    import difflib

    fields = list(GatewaySettings.model_fields)
    found = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads them case-insensitively
        if not upper.startswith("LABELGATE_") or upper in COMMAND_VARIABLES:
            continue
        rest = upper.removeprefix("LABELGATE_").lower()
        head = rest.split("__")[0]
        if head in fields:
            continue
        close = difflib.get_close_matches(head, fields, n=1, cutoff=0.8)
        if "__" in rest or close:
            meant = (
                f"; did you mean LABELGATE_{close[0].upper()}{rest[len(head) :].upper()}?" if close else ""
            )
            found.append(f"{name}: no setting is called {head!r}{meant}")
    return found


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Load and validate; raise ConfigError listing every problem."""
    import os

    misspelt = misspelt_variables(os.environ)
    if misspelt:
        count = len(misspelt)
        listed = "\n".join(f"  - {problem}" for problem in misspelt)
        raise ConfigError(
            reasons.CONFIG_INVALID,
            f"the environment has {count} problem{'s' if count != 1 else ''}:\n{listed}",
        )
    token = _config_file.set(config_file.resolve() if config_file else None)
    try:
        return GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as error:  # a LABELGATE_* list/object value that is not JSON
        raise ConfigError(reasons.CONFIG_INVALID, _environment_problem(error)) from None
    except ValidationError as error:
        # One line per problem: a validator that finds several reports them as one error.
        listed = format_validation_error(error)
        count = listed.count("\n") + 1
        raise ConfigError(
            reasons.CONFIG_INVALID,
            f"the configuration has {count} problem{'s' if count != 1 else ''}:\n{listed}",
        ) from None
    finally:
        _config_file.reset(token)


class _EncryptedKey(Exception):
    """OpenSSL asked for a password: neither gRPC nor uvicorn can give it one."""


def _no_password() -> bytes:
    raise _EncryptedKey  # else OpenSSL would prompt on the terminal


def check_tls_pair(cert_file: Path, key_file: Path, what: str) -> None:
    """A listener's certificate and key load, and belong together; else ``ConfigError``
    (``TLS_FILE_UNREADABLE``) naming the file. OpenSSL's ``load_cert_chain`` is what uvicorn
    calls for ``admin.tls``; gRPC's BoringSSL refuses the same files, but says only that it
    could not bind. Here, below both listeners, so that start and ``--check-config`` share it."""
    import ssl

    try:
        cert_file.read_bytes()
        key_file.read_bytes()
    except OSError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: cannot read {error.filename}: {error.strerror}"
        ) from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=_no_password)
        return
    except _EncryptedKey:
        problem = f"key_file {key_file} is an encrypted private key: give the listener an unencrypted one"
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            problem = f"the private key in {key_file} is not the one of the certificate in {cert_file}"
        elif not _holds_certificates(cert_file):
            problem = f"cert_file {cert_file} holds no PEM certificate"
        else:
            problem = f"key_file {key_file} holds no PEM private key"
            if error.reason:
                problem += f" ({error.reason})"
    raise ConfigError(reasons.TLS_FILE_UNREADABLE, f"{what}: {problem}")


def _holds_certificates(path: Path) -> bool:
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        return False
    return True


def check_ca_file(path: Path, what: str) -> None:
    """A file of trusted certificates loads as the REST upstream and the OPA client load theirs
    (``ssl.create_default_context``); else ``ConfigError`` (``TLS_FILE_UNREADABLE``). A gRPC
    channel hands the same bytes to BoringSSL, which refuses them only at the first call."""
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: {path} holds no PEM certificate ({error.reason or error})"
        ) from None
    except OSError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: cannot read {path}: {error.strerror}"
        ) from None


def _descriptor_set(path: Path) -> None:
    """A route's descriptors parse as a FileDescriptorSet (``protoc --descriptor_set_out``).
    Serve's loader (``gateway.routes.load_descriptor_set``) also adds them to the process's
    descriptor pool; that one sits above this module and is not called from here."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    try:
        descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except DecodeError as error:
        raise ValueError(f"{path} is not a FileDescriptorSet: {error}") from None


def _compile_policy(settings: GatewaySettings) -> None:
    """The policy folder compiled by the engine serve runs, as serve compiles it at start (the
    embedded engine's child-process compile and ``opa check``; the wasm engine's ``opa build``)."""
    import asyncio

    from labelgate.policy.embedded import EmbeddedEngine
    from labelgate.policy.wasm import WasmEngine

    engine = (
        WasmEngine(settings.policy.dir, watch_interval=None)
        if settings.engine == "wasm"
        else EmbeddedEngine(settings.policy.dir, watch_interval=None, opa_check=settings.policy.opa_check)
    )

    async def start_and_close() -> None:
        try:
            await engine.start()
        finally:
            await engine.close()

    asyncio.run(start_and_close())


def startup_problems(settings: GatewaySettings) -> list[str]:
    """What would still stop a gateway with these (valid) settings from starting, found without
    the network (``labelgate serve --check-config``): every file it reads at start must be there
    and load (catalog, JWKS, keys, hash key; the policy folder compiled by its engine; TLS
    certificates with their keys, trusted certificates and descriptor sets parsed), and the
    folders it writes state into must be writable. [] when none. Called outside an event loop:
    the policy engine starts in one of its own."""
    import os

    from labelgate.auth import Authenticator
    from labelgate.classify.catalog import Catalog
    from labelgate.errors import LabelgateError
    from labelgate.policy.source import BundleKey, PolicySource

    problems: list[str] = []

    def attempt(where: str, action: Any) -> bool:
        """Run ``action``; True when it raised nothing, else its problem is listed."""
        try:
            action()
            return True
        except LabelgateError as error:  # its message may name where itself
            message = error.message
            said = message if message.startswith(f"{where}: ") else f"{where}: {message}"
            problems.append(f"{said} ({error.reason})")
        except OSError as error:  # strerror, not Python's "[Errno 2] ...: 'path'"
            said = f"{where}: cannot read {error.filename}: {error.strerror}"
            problems.append(f"{said} ({reasons.CONFIG_UNREADABLE})")
        except ValueError as error:
            problems.append(f"{where}: {error} ({reasons.CONFIG_INVALID})")
        except RecursionError:
            problems.append(f"{where}: a file it names is nested too deeply ({reasons.CONFIG_INVALID})")
        return False

    def readable(path: Path) -> None:
        path.read_bytes()

    def hash_key(path: Path) -> None:
        if len(path.read_bytes().strip()) < 16:
            raise ValueError(f"{path} holds fewer than 16 bytes")

    def session_key(path: Path) -> None:
        if len(path.read_bytes().strip()) < 32:
            raise ValueError(f"{path} holds fewer than 32 bytes")

    def policy_dir(path: Path) -> None:
        if not any(name.endswith(".rego") for name, _ in PolicySource.from_dir(path).modules):
            raise ValueError(f"policy folder {path} holds no .rego module")

    def writable_folder(path: Path) -> None:
        folder = path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{path} cannot be created: {folder} is not a writable folder")

    if settings.policy.bundle_url is None:
        attempt(
            "classification.catalog_file", lambda: Catalog.from_file(settings.classification.catalog_file)
        )
    checker = True
    if settings.engine == "embedded":
        from labelgate.policy.opa_check import OpaChecker

        checker = attempt("policy.opa_check", lambda: OpaChecker(settings.policy.opa_check))
    in_process = settings.policy.bundle_url is None and settings.engine in ("embedded", "wasm")
    # Compiled as serve compiles it, once the folder holds modules and opa_check can run.
    if in_process and attempt("policy.dir", lambda: policy_dir(settings.policy.dir)) and checker:
        attempt("policy.dir", lambda: _compile_policy(settings))
    if settings.policy.bundle_public_key_file is not None:
        key_file = settings.policy.bundle_public_key_file
        attempt(
            "policy.bundle_public_key_file",
            lambda: BundleKey.from_file(key_file, settings.policy.bundle_signing_alg),
        )
    files = {
        "upstream.ca_file": settings.upstream.ca_file,
        "policy.opa_ca_file": settings.policy.opa_ca_file,
        "server_tls.cert_file": settings.server_tls.cert_file if settings.server_tls else None,
        "server_tls.key_file": settings.server_tls.key_file if settings.server_tls else None,
        "admin.tls.cert_file": settings.admin.tls.cert_file if settings.admin.tls else None,
        "admin.tls.key_file": settings.admin.tls.key_file if settings.admin.tls else None,
        "auth.mtls.ca_file": settings.auth.mtls.ca_file if settings.auth.mtls else None,
        **{f"routes[{i}].descriptor_set": r.descriptor_set for i, r in enumerate(settings.routes)},
        **{f"upstreams[{i}].ca_file": u.ca_file for i, u in enumerate(settings.upstreams)},
    }
    read = {
        where
        for where, path in files.items()
        if path is not None and attempt(where, lambda path=path: readable(path))
    }
    # Then what each file that could be read holds, loaded as serve loads it.
    for where, tls in (("server_tls", settings.server_tls), ("admin.tls", settings.admin.tls)):
        if tls is not None and {f"{where}.cert_file", f"{where}.key_file"} <= read:
            attempt(where, lambda tls=tls, where=where: check_tls_pair(tls.cert_file, tls.key_file, where))
    for where, path in files.items():
        if path is None or where not in read:
            continue
        if where.endswith("ca_file"):
            attempt(where, lambda path=path, where=where: check_ca_file(path, where))
        elif where.endswith("descriptor_set"):
            attempt(where, lambda path=path: _descriptor_set(path))
    if settings.masking.hash_key_file is not None:
        attempt("masking.hash_key_file", lambda: hash_key(settings.masking.hash_key_file))
    if settings.admin.session_key_file is not None:
        key_file = settings.admin.session_key_file
        attempt("admin.session_key_file", lambda: session_key(key_file))
    attempt("auth", lambda: Authenticator(settings.auth))
    if settings.audit.socket is not None and len(os.fsencode(settings.audit.socket)) > 107:
        problems.append(f"audit.socket: the path is longer than 107 bytes: {settings.audit.socket}")
    approvals = settings.approvals
    if approvals.enabled and approvals.store == "sqlite" and approvals.sqlite_file is not None:
        attempt("approvals.sqlite_file", lambda: writable_folder(approvals.sqlite_file.parent))
    if settings.audit.inputs_file is not None:
        inputs_file = settings.audit.inputs_file
        attempt("audit.inputs_file", lambda: writable_folder(inputs_file.parent))
    recording = settings.recording
    if recording.dir is not None:
        attempt("recording.dir", lambda: writable_folder(recording.dir))
    if recording.enabled and recording.encryption_key_file is not None:
        # What serve reads them with (``RecordingKeys.from_files``), each named on its own.
        from labelgate.recording.sealing import read_key

        attempt("recording.encryption_key_file", lambda: read_key(recording.encryption_key_file))
        for index, path in enumerate(recording.decryption_key_files):
            attempt(f"recording.decryption_key_files[{index}]", lambda path=path: read_key(path))
    return problems
