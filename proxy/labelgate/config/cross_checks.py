"""The checks that span sections of ``GatewaySettings``: each section checks itself, and
these few need more than one (mTLS needs ``server_tls``, bundles need an in-process engine,
approvals need ``auth.jwt``, ...). Each is a small named function of the whole settings
that returns its problems; ``CROSS_SECTION_CHECKS`` lists them, and a validator of
``GatewaySettings`` runs them all so that every problem is reported at once.

Apart from the model so that it stays the model: these need ``GatewaySettings``' type only,
so the model imports them and not the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from labelgate.shown_urls import shown_url

if TYPE_CHECKING:
    from labelgate.config import GatewaySettings


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


def _route_upstreams_name_an_entry(settings: GatewaySettings) -> list[str]:
    # A routes[].upstream without a port names an entry of upstreams (sections.UPSTREAM_NAME).
    # One that named none was dialled as a host on gRPC's default port (443), at the first call.
    names = {entry.name for entry in settings.upstreams}
    return [
        f"routes[{index}].upstream: {route.upstream!r} is not HOST:PORT nor the name of an entry of upstreams"
        for index, route in enumerate(settings.routes)
        if route.upstream is not None and ":" not in route.upstream and route.upstream not in names
    ]


def _approvals_can_work(settings: GatewaySettings) -> list[str]:
    if "approvals" not in settings.model_fields_set:  # left out: holds are refused unless approvals work
        return []
    # With admin.approvals off the admin port serves no inbox: links must name the one that does.
    inbox_listen = settings.admin_listen if settings.admin.approvals else None
    return settings.approvals.problems(
        workers=settings.workers, has_jwt=settings.auth.jwt is not None, admin_listen=inbox_listen
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
CROSS_SECTION_CHECKS: tuple[Callable[[GatewaySettings], list[str]], ...] = (
    _client_certificates_can_arrive,
    _some_auth_method,
    _opa_settings_need_opa,
    _bundles_need_an_in_process_engine,
    _one_catalog_source,
    _workers_share_a_fixed_port,
    _admin_listens_apart,
    _upstream_names_unique,
    _route_prefixes_unique,
    _route_upstreams_name_an_entry,
    _approvals_can_work,
    _one_subject_claim_per_issuer,
    _postgres_dsns_parse,
    _numbers_are_finite,
)
