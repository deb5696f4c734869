"""The admin web app: /healthz (alive), /readyz (can serve; a problem response on 503),
/metrics (Prometheus), and, when given an approvals context (the gateway gives one when
approvals are on and ``admin.approvals`` lets its listener serve them), the approvals REST API
(/api/v1/approvals, OpenAPI at /api/v1/openapi.json) and the web inbox (/inbox); the API docs
at /api-docs/ when ``admin.api_docs`` is set (``docs.py``). Without them, their paths answer
404 like any other unknown path.

It is served by ``listener.AdminListener`` on a thread and event loop of its own, behind
``guards.AdminGuard`` (authentication before any body, a body limit while reading, a body
deadline, HSTS with TLS); what it needs from the gateway's loop goes through ``bridge.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from labelgate.admin import reasons
from labelgate.admin.docs import mount_docs
from labelgate.admin.guards import AdminGuard
from labelgate.admin.listener import AdminListener
from labelgate.approvals.api import (
    PROBLEM_TYPE,
    ApprovalsContext,
    authenticate_request,
    install_problem_handlers,
)
from labelgate.approvals.api import router as approvals_router
from labelgate.approvals.oidc import CALLBACK_PATH as OIDC_CALLBACK_PATH
from labelgate.approvals.oidc import OidcSignin
from labelgate.approvals.web import mount_inbox, render_error
from labelgate.auth import Authenticator, Subject
from labelgate.config import AdminSettings, GatewaySettings, OidcSettings
from labelgate.errors import ConfigError

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


def _problem(status: int, title: str, detail: dict[str, bool]) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "checks": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE)


def build_admin_app(
    ready: ReadyCheck,
    approvals: ApprovalsContext | None = None,
    *,
    title: str = "labelgate admin",
    settings: AdminSettings | None = None,
) -> FastAPI:
    """The admin app; the approvals API and inbox only when given their context (whether this
    listener serves them, ``admin.approvals``, is its caller's to decide: the gateway withholds
    the context when it is off, ``approvals serve`` always gives it)."""
    settings = settings or AdminSettings()
    app = FastAPI(
        title=title,
        description="Health, metrics and just-in-time approvals of a labelgate gateway.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # never the CDN-loading defaults: see docs.py
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await ready()
        if all(checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return _problem(503, "not ready", checks)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    if approvals is not None:
        app.state.approvals = approvals
        app.include_router(approvals_router)
        mount_inbox(app)
    if settings.api_docs:
        mount_docs(app, title)
    install_problem_handlers(app, render_error if approvals is not None else None)

    async def authenticate(header: str | None) -> Subject:
        assert approvals is not None
        return await authenticate_request(approvals, header)

    app.add_middleware(
        AdminGuard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        hsts=settings.tls is not None,
        authenticate=authenticate if approvals is not None else None,
    )
    return app


JWKS_PATH = "/.well-known/jwks.json"


def add_jwks_route(app: FastAPI, jwks: dict[str, Any]) -> None:
    """Publish the public keys that verify the gateway's subject assertions (the JWT it adds
    to every upstream call, ``labelgate.auth.assertion``): public, cacheable for a few minutes."""

    @app.get(JWKS_PATH, include_in_schema=False)
    async def published_jwks() -> Response:
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=300"})


def admin_approvals_context(
    service: Any, authenticator: Authenticator, settings: GatewaySettings
) -> ApprovalsContext:
    """The approvals API's and inbox's context for a listener with ``settings.admin``: session
    cookies signed with the configured key (or a random one), ``Secure`` + ``__Host-`` when the
    inbox is reached over HTTPS (``admin.tls``, or an ``https://`` ``approvals.public_url``)."""
    admin = settings.admin
    secure = admin.tls is not None or (settings.approvals.public_url or "").startswith("https://")
    key = session_key(admin)
    extra: dict[str, Any] = {"session_key": key} if key is not None else {}
    if admin.oidc is not None:
        extra["oidc"] = OidcSignin(admin.oidc, oidc_client_secret(admin.oidc))
        public = settings.approvals.public_url
        extra["oidc_redirect_url"] = admin.oidc.redirect_url or (
            public.rstrip("/") + OIDC_CALLBACK_PATH if public else None
        )
    return ApprovalsContext(
        service, authenticator, secure=secure, session_max_seconds=admin.session_max_seconds, **extra
    )


def oidc_client_secret(settings: OidcSettings) -> str | None:
    """The inbox's OpenID Connect client secret (inline or from a file); None: a public client."""
    if settings.client_secret is not None:
        return settings.client_secret.get_secret_value()
    if settings.client_secret_file is None:
        return None
    try:
        secret = settings.client_secret_file.read_text().strip()
    except OSError as error:
        raise ConfigError(
            reasons.OIDC_SECRET_UNREADABLE, f"cannot read admin.oidc.client_secret_file: {error}"
        ) from None
    if not secret:
        raise ConfigError(reasons.OIDC_SECRET_EMPTY, "admin.oidc.client_secret_file is empty")
    return secret


def session_key(settings: AdminSettings) -> bytes | None:
    """The inbox's cookie-signing key from the settings; None: make a random one per process."""
    if settings.session_key is not None:
        return settings.session_key.get_secret_value().encode()
    if settings.session_key_file is not None:
        try:
            key = settings.session_key_file.read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                reasons.SESSION_KEY_UNREADABLE, f"cannot read admin.session_key_file: {error}"
            ) from None
        if len(key) < 32:
            raise ConfigError(
                reasons.SESSION_KEY_TOO_SHORT, "admin.session_key_file must hold at least 32 bytes"
            )
        return key
    return None


async def start_admin(app: FastAPI, listen: str, settings: AdminSettings | None = None) -> AdminListener:
    """Serve ``app`` on ``listen`` from a thread and event loop of its own."""
    settings = settings or AdminSettings()
    tls = settings.tls
    listener = AdminListener(
        app,
        listen,
        cert_file=Path(tls.cert_file) if tls else None,
        key_file=Path(tls.key_file) if tls else None,
        max_connections=settings.max_connections,
    )
    return await listener.start()
