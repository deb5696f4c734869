"""The one configuration model of the gateway, ``GatewaySettings``, and its entry point,
``load_settings``.

Sources, strongest first: command-line flags, ``LABELGATE_*`` environment variables
(nested with ``__``, e.g. ``LABELGATE_POLICY__TIMEOUT_MS=100``; one that looks like a setting
but names none is refused), the YAML file (pydantic-settings' YAML source, reading with a
loader that refuses a key written twice and YAML aliases). Path settings are typed
``ConfigPath``: relative ones (from any source) are resolved against the config file's
folder when there is one, so a config works from any working directory.
``load_settings`` refuses a config that cannot work, listing every problem at once,
including settings that could never take effect: each section checks itself (its own
``model_validator``), and the few checks that span sections are the small named functions
in ``config.cross_checks.CROSS_SECTION_CHECKS``.

This module is the model and how it is loaded; the rest is beside it, one idea a module:
the sections (``sections``: the call's path; ``limits``: bounds;
``oversight``: audit, approvals, the admin listener), the checks across sections
(``cross_checks``), reading the YAML file and wording its errors
(``loading``), and the start-up checks that read the files a valid config names
(``startup_checks``). Every name other code takes from here stays importable from here
(``__all__``), so callers need not know the split.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from labelgate import reasons
from labelgate.auth.settings import AuthSettings
from labelgate.config.cross_checks import CROSS_SECTION_CHECKS
from labelgate.config.limits import LimitSettings, RestSettings
from labelgate.config.loading import (
    MAX_CONFIG_BYTES,
    ConfigFile,
    environment_problem,
    format_validation_error,
)
from labelgate.config.oversight import (
    COMMIT_DELAY_MS,
    AdminSettings,
    ApprovalEvent,
    ApprovalSettings,
    AuditSettings,
    OidcSettings,
    WebhookSettings,
)
from labelgate.config.sections import (
    ClassificationSettings,
    CustomDetector,
    DetectorSettings,
    Label,
    MaskingSettings,
    ParameterRelease,
    PolicySettings,
    ReleasedParameter,
    ReleaseSettings,
    RouteSettings,
    Section,
    ServerTlsSettings,
    UpstreamConnection,
    UpstreamSettings,
    host_port,
    refuse,
)
from labelgate.config.startup_checks import check_ca_file, check_tls_pair, startup_notes, startup_problems
from labelgate.config_paths import config_folder_context
from labelgate.errors import ConfigError
from labelgate.recording.settings import RecordingSettings
from labelgate.tracing import TracingSettings

# What other code takes from here: the model, its entry point, and what moved out of this
# module when it was split (re-exported, so no caller had to change).
__all__ = [
    "COMMAND_VARIABLES",
    "COMMIT_DELAY_MS",
    "MAX_CONFIG_BYTES",
    "AdminSettings",
    "ApprovalEvent",
    "ApprovalSettings",
    "AuditSettings",
    "ClassificationSettings",
    "CustomDetector",
    "DetectorSettings",
    "GatewaySettings",
    "Label",
    "LimitSettings",
    "MaskingSettings",
    "OidcSettings",
    "ParameterRelease",
    "PolicySettings",
    "ReleaseSettings",
    "ReleasedParameter",
    "RestSettings",
    "RouteSettings",
    "Section",
    "ServerTlsSettings",
    "UpstreamConnection",
    "UpstreamSettings",
    "WebhookSettings",
    "check_ca_file",
    "check_tls_pair",
    "format_validation_error",
    "load_settings",
    "misspelt_variables",
    "startup_notes",
    "startup_problems",
]


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "labelgate_config_file", default=None
)


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

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: host_port(v)))

    @field_validator("admin_listen", "rest_listen")
    @classmethod
    def _check_admin(cls, value: str | None) -> str | None:
        return None if value is None else host_port(value)

    @model_validator(mode="after")
    def _sections_agree(self) -> GatewaySettings:
        refuse([problem for check in CROSS_SECTION_CHECKS for problem in check(self)])
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
        return (init_settings, env_settings, ConfigFile(settings_cls, _config_file.get()))


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
        raise ConfigError(reasons.CONFIG_INVALID, environment_problem(error)) from None
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
