"""The settings sections on a call's path: where it goes (``upstream``, ``upstreams``,
``routes``, the gateway's own ``server_tls``), how it is decided (``policy``), what is
detected and masked in it (``classification``, ``masking``) and what of a reply's side
channels is released (``release``); with ``Section``, the base every section shares, and
the small checks the sections use (``refuse``, ``host_port``).

Each section checks itself (its own validators) and knows nothing of the others: what
spans sections is in ``cross_checks``. The model that holds them all is
``config.GatewaySettings``; the bounds (``limits``, ``rest``) are in ``limits``, and
audit, approvals and the admin listener in ``oversight``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from labelgate.auth.assertion import SubjectAssertionSettings
from labelgate.classify.labels import LABELS
from labelgate.classify.parameters import FINAL_PARAMETER, FINAL_PARAMETER_TYPES, ParameterType
from labelgate.config_paths import ConfigPath
from labelgate.digits import whole_number
from labelgate.errors import ConfigError
from labelgate.retry import RetrySettings
from labelgate.shown_urls import credentials_problem, shown_url

# The vocabulary is defined once (classify/labels.py); subscripting with the tuple spells it out.
Label = Literal[LABELS]  # type: ignore[valid-type]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def refuse(problems: list[str]) -> None:
    """A section's own check: every problem at once (``format_validation_error`` splits them)."""
    if problems:
        raise ValueError("; ".join(problems))


def host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    number = whole_number(port)
    if not sep or not host or number is None or not 0 <= number <= 65535:
        raise ValueError(f"{shown_url(value)!r} is not HOST:PORT")
    return value


def without_credentials(value: str | None, *, why: str) -> str | None:
    """A URL setting whose userinfo nothing it names checks: refused (``why`` says so), since a
    password written there would only travel to log lines, links and ids."""
    problem = None if value is None else credentials_problem(value, why=why)
    if problem is not None:
        raise ValueError(problem)
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


def _opa_url(value: str) -> str:
    # aiohttp would send them as basic auth, which OPA never checks (it takes a bearer token),
    # and with opa_token set it refuses every request: they could only end up in logs.
    without_credentials(value, why="OPA checks only a bearer token (policy.opa_token)")
    return _http_url(value)


_UPSTREAM_CREDENTIAL = "the gateway's credential for an upstream is its token (a bearer token)"
# What ``upstreams[].name`` may be. A ``routes[].upstream`` of this form (no port, no "@")
# names an entry (``cross_checks``); any other is an address.
UPSTREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def upstream_address(value: str) -> str:
    """Every setting that names an upstream by address (``upstream.address``,
    ``upstreams[].address``, ``routes[].upstream``): HOST:PORT, with no userinfo."""
    # HOST:PORT has no userinfo; host_port alone took "user:pw@host:port" (its host is what
    # precedes the last colon). A gRPC channel never sends it; httpx would send it to a REST
    # upstream as basic auth in place of the configured token's bearer header (no document
    # or test names that a feature); and the address is the audience of every subject
    # assertion sent upstream, so the password would travel in each. Everything before the
    # last "@" is userinfo here: a URL's reading of it (shown_url's) stops at a "/", "?" or
    # "#", which a password may hold ("u:p/w@host:1" passed, and was quoted whole).
    _, at, host = value.rpartition("@")
    without_credentials(f"user@{host}" if at else value, why=_UPSTREAM_CREDENTIAL)
    return host_port(value)


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
    # Credentials and labelgate's own keys never travel, even if named here; a traceparent
    # only as a W3C one, and a tracestate never (labelgate/tracing.py).
    forward_metadata: list[str] = ["traceparent", "x-request-id"]
    # A short-lived JWT about the caller, signed with the gateway's key, on every upstream call
    # (labelgate.auth.assertion); its JWKS is at the admin listener's /.well-known/jwks.json.
    subject_assertion: SubjectAssertionSettings = SubjectAssertionSettings()

    _check_address = field_validator("address")(classmethod(lambda cls, v: upstream_address(v)))

    @field_validator("forward_metadata")
    @classmethod
    def _never_a_tracestate(cls, names: list[str]) -> list[str]:
        # Refused rather than ignored: listed (it was in the default once), the operator
        # expects it to travel, and it never does.
        if any(name.lower() == "tracestate" for name in names):
            raise ValueError(
                "tracestate is never forwarded (a caller's is free text that would reach the "
                "upstream and its logs unvetted, docs/OPERATING.md, Tracing): remove it"
            )
        return names

    @model_validator(mode="after")
    def _tls_settings_need_tls(self) -> UpstreamSettings:
        if not self.tls and (self.ca_file or self.server_name):
            refuse(["ca_file/server_name are set but tls is false"])
        return self


class UpstreamConnection(UpstreamSettings):
    """One of ``upstreams:``: a named inference service and the models it serves (fnmatch
    globs, first match in config order wins), or, with ``discover: true``, the READY models
    its repository index lists (``gateway/discovery.py``). Address, TLS, the gateway's own
    token, timeout and forwarded metadata are per upstream; the subject assertion is the
    gateway's one key, set in ``upstream.subject_assertion``."""

    name: str = Field(pattern=UPSTREAM_NAME)
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
            refuse(["models: list the models this upstream serves, or set discover: true"])
        if self.discover and self.discover_max_stale_seconds < self.discover_interval_seconds:
            refuse(["discover_max_stale_seconds: at least discover_interval_seconds"])
        return self

    @model_validator(mode="after")
    def _one_assertion_key(self) -> UpstreamConnection:
        if "subject_assertion" in self.model_fields_set:
            refuse(
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
    _check_opa_url = field_validator("opa_url")(classmethod(lambda cls, v: _opa_url(v)))
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
    _check_bundle_url = field_validator("bundle_url")(
        classmethod(
            lambda cls, v: without_credentials(
                v, why="a bundle server checks only a bearer token (policy.bundle_token)"
            )
        )
    )
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
            refuse([f"policy.{', policy.'.join(unused)} set but policy.bundle_url is not"])
        if self.bundle_state_file is not None and self.bundle_public_key_file is None:
            refuse(["policy.bundle_state_file orders signed bundles: set policy.bundle_public_key_file"])
        if self.bundle_url is not None and "dir" in self.model_fields_set:
            refuse(["policy.dir and policy.bundle_url are both set: the bundle replaces the folder"])
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
        refuse(problems)
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
        refuse(problems)
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

    @field_validator("upstream")
    @classmethod
    def _name_or_address(cls, value: str | None) -> str | None:
        # Unchecked, "user:pw@host:port" was dialled, and its password put in every subject
        # assertion's audience and in every line that names the upstream.
        if value is None or re.fullmatch(UPSTREAM_NAME, value):
            return value  # an entry of upstreams: that one exists is checked across sections
        return upstream_address(value)

    @model_validator(mode="after")
    def _not_a_built_in_service(self) -> RouteSettings:
        if self.method_prefix.startswith(("/grpc.health.v1.Health/", "/grpc.reflection.")):
            refuse(["health and reflection are the gateway's own services; a route there never runs"])
        if self.method_prefix.startswith("/inference.GRPCInferenceService/"):
            refuse(["the Open Inference Protocol is built in; do not route it"])
        return self


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
