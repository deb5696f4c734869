"""The bundle server's HTTP face (FastAPI): OPA's bundle, status and decision-log APIs.

- ``GET /bundles/{name}``: the tarball with ``ETag: "<revision>"``; ``304`` when
  ``If-None-Match`` matches. Every bundle reply carries ``Content-Type:
  application/vnd.openpolicyagent.bundles``: OPA turns long polling on when it sees that
  type (on a 200) and keeps it while 304s come back, and without ``long_polling_timeout_seconds``
  in its config it just polls on its usual schedule. With ``Prefer: ...wait=N`` and a
  matching ETag the request is held until a new revision is published or N seconds pass
  (then ``304``).
- ``POST /status``, ``POST /logs``: OPA's reports and decision logs (gzip or plain JSON),
  stored before the ``200`` (see ``fleet.py``).
- ``GET /fleet``, ``GET /decisions/{decision_id}``, ``GET /status``: the views for people
  and for the gateway's audit; ``GET /healthz`` and ``GET /metrics`` without a token.
- ``GET /fleet/page``: the fleet view as an HTML page (``templates/fleet.html``). It is
  guarded like every other route: with a token configured, send ``Authorization: Bearer``
  (a browser extension, or a reverse proxy that adds it); the token is never accepted in
  the URL, where it would end up in access logs and browser history.

Every error is an ``application/problem+json`` body with a stable ``reason``. A bearer
token, when configured, guards everything except health and metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelgate.bundle.fleet import FleetStore, iso
from labelgate.bundle.publisher import Publisher
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import OpaValidator
from labelgate.errors import (
    ConfigError,
    InvalidInput,
    LabelgateError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from labelgate.logs import get_logger

log = get_logger(__name__)

BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
PROBLEM_MEDIA_TYPE = "application/problem+json"
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_DECISION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"], default=True),
)
# The page has no script, form or image: inline styles are all it may load.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BundleUnavailable(LabelgateError):
    http_status = 503


@dataclass(frozen=True)
class ServerSettings:
    source: Path
    bundle_name: str = "labelgate"
    token: str | None = None
    state_dir: Path = Path(".labelgate/bundle-server")
    opa: str | None = None
    signer: Signer | None = None
    poll_interval: float = 0.5
    max_wait_seconds: int = 300
    max_upload_bytes: int = 16 * 1024 * 1024


def create_app(settings: ServerSettings) -> FastAPI:
    _check_settings(settings)
    registry = CollectorRegistry()
    publisher = Publisher(
        settings.source,
        OpaValidator(settings.opa),
        signer=settings.signer,
        poll_interval=settings.poll_interval,
        registry=registry,
    )
    fleet = FleetStore(settings.state_dir / "fleet.sqlite3")
    requests = Counter(
        "labelgate_bundle_http_requests",
        "Requests by route and status code.",
        ["route", "code"],
        registry=registry,
    )
    if settings.token is None:
        log.warning("bundle_server_auth_disabled", why="no token configured: any client may pull and post")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        log.info("bundle_server_started", bundle=settings.bundle_name, revision=_revision(publisher))
        try:
            yield
        finally:
            await publisher.stop()
            await asyncio.to_thread(fleet.close)

    app = FastAPI(
        lifespan=lifespan, title="labelgate bundle server", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.publisher = publisher
    app.state.fleet = fleet
    _install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(route=getattr(route, "path", "unmatched"), code=str(response.status_code)).inc()
        return response

    def authorized(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthenticated("BUNDLE_TOKEN_MISSING", "send Authorization: Bearer <token>")
        if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise Unauthenticated("BUNDLE_TOKEN_INVALID", "the bearer token is not valid")

    guarded = [Depends(authorized)]

    @app.get("/bundles/{name}", dependencies=guarded)
    async def get_bundle(name: str, request: Request) -> Response:
        if name != settings.bundle_name:
            raise NotFound("BUNDLE_NOT_FOUND", f"no bundle named {name!r}")
        wait = prefer_wait(request.headers.getlist("prefer"), settings.max_wait_seconds)
        bundle = publisher.current
        if bundle is None:
            raise BundleUnavailable(
                "BUNDLE_NOT_READY", "no source revision has passed validation yet (see GET /status)"
            )
        if etag_matches(request.headers.get("if-none-match", ""), bundle.revision):
            newer = await publisher.wait_for_change(bundle.revision, wait) if wait else None
            if newer is None:
                return Response(status_code=304, headers=_bundle_headers(bundle.etag))
            bundle = newer
        return Response(bundle.tarball, headers=_bundle_headers(bundle.etag))

    @app.post("/status", dependencies=guarded)
    async def post_status(request: Request) -> JSONResponse:
        report = await _read_json(request, settings.max_upload_bytes)
        instance = await asyncio.to_thread(fleet.record_status, report)
        return JSONResponse({"instance": instance})

    @app.post("/logs", dependencies=guarded)
    async def post_logs(request: Request) -> JSONResponse:
        events = await _read_json(request, settings.max_upload_bytes)
        stored = await asyncio.to_thread(fleet.store_decisions, events)
        return JSONResponse({"received": len(events), "stored": stored})

    @app.get("/status", dependencies=guarded)
    async def get_status() -> JSONResponse:
        return JSONResponse({"bundle": settings.bundle_name, **publisher.status()})

    @app.get("/fleet", dependencies=guarded)
    async def get_fleet() -> JSONResponse:
        revision = _revision(publisher)
        instances = await asyncio.to_thread(fleet.instances, settings.bundle_name, revision)
        return JSONResponse(
            {"bundle": {"name": settings.bundle_name, "revision": revision}, "instances": instances}
        )

    @app.get("/fleet/page", dependencies=guarded, response_class=HTMLResponse)
    async def get_fleet_page() -> HTMLResponse:
        revision = _revision(publisher)
        instances = await asyncio.to_thread(fleet.instances, settings.bundle_name, revision)
        page = _PAGES.get_template("fleet.html").render(
            bundle=settings.bundle_name,
            revision=revision,
            status=publisher.status(),
            instances=[fleet_row(item, settings.bundle_name, time.time()) for item in instances],
            now=iso(time.time()),
        )
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/decisions/{decision_id}", dependencies=guarded)
    async def get_decision(decision_id: str) -> JSONResponse:
        if not _DECISION_ID.match(decision_id):
            raise InvalidInput("DECISION_ID_INVALID", "a decision id is 1-128 of [A-Za-z0-9._:-]")
        found = await asyncio.to_thread(fleet.decision, decision_id)
        if found is None:
            raise NotFound("DECISION_NOT_FOUND", f"no decision log with id {decision_id}")
        return JSONResponse({"decision_id": decision_id, **found})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        revision = _revision(publisher)
        return JSONResponse({"ok": revision is not None, "revision": revision}, 200 if revision else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def fleet_row(instance: dict[str, Any], bundle_name: str, now: float) -> dict[str, Any]:
    """One instance of ``FleetStore.instances`` as the page shows it: ages instead of timestamps."""
    ours = (instance.get("bundles") or {}).get(bundle_name) or {}
    errors = ours.get("errors") or []
    logs = instance.get("decision_logs") or {}
    labels = instance.get("labels") or {}
    return {
        "id": instance["id"],
        "labels": sorted((str(k), str(v)) for k, v in labels.items() if k != "id"),
        "revision": instance.get("revision"),
        "up_to_date": instance.get("up_to_date", False),
        "last_checkin": instance.get("last_checkin"),
        "age": age(instance.get("last_checkin"), now),
        "reports": instance.get("status_reports", 0),
        "decisions": logs.get("count", 0),
        "decisions_last": logs.get("last_received"),
        "decisions_age": age(logs.get("last_received"), now),
        "plugin": (instance.get("plugins") or {}).get("bundle"),
        "bundle_error": ours.get("message")
        or "; ".join(str(e.get("message", e)) for e in errors[:3] if isinstance(e, dict)),
    }


def age(stamp: str | None, now: float) -> str:
    """``"12 s"``, ``"4 min"``, ``"3 h 05 min"``, ``"2 d 4 h"`` since an ``iso()`` timestamp."""
    if not stamp:
        return ""
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    seconds = max(0, int(now - then))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _check_settings(settings: ServerSettings) -> None:
    if not Path(settings.source).is_dir():
        raise ConfigError("BUNDLE_SOURCE_MISSING", f"policy source folder {settings.source} does not exist")
    if not _BUNDLE_NAME.match(settings.bundle_name):
        raise ConfigError("BUNDLE_NAME_INVALID", f"bundle name {settings.bundle_name!r}: use [A-Za-z0-9._-]")
    if settings.poll_interval <= 0 or settings.max_wait_seconds < 0:
        raise ConfigError("BUNDLE_SERVER_CONFIG_INVALID", "poll interval must be > 0, max wait >= 0")


def prefer_wait(values: list[str], maximum: int) -> int:
    """Seconds to hold a request, from ``Prefer`` (OPA: ``modes=snapshot,delta;wait=10``)."""
    wait = 0
    for value in values:
        for token in re.split(r"[,;]", value):
            key, _, raw = token.strip().partition("=")
            if key.strip().lower() != "wait":
                continue
            raw = raw.strip().strip('"')
            if not raw.isdigit():
                raise InvalidInput("PREFER_INVALID", f"Prefer wait must be whole seconds, got {raw!r}")
            wait = int(raw)
    return min(wait, maximum)


def etag_matches(header: str, revision: str) -> bool:
    for candidate in header.split(","):
        tag = candidate.strip()
        tag = tag.removeprefix("W/")
        if tag == "*" or tag.strip('"') == revision:
            return True
    return False


def _bundle_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Content-Type": BUNDLE_MEDIA_TYPE, "Cache-Control": "no-cache"}


def _revision(publisher: Publisher) -> str | None:
    return publisher.current.revision if publisher.current else None


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, gunzipped when ``Content-Encoding: gzip``; bounded before and after."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ResourceExhausted("BODY_TOO_LARGE", f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ResourceExhausted("BODY_TOO_LARGE", f"the body is over {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = bytearray(_gunzip(bytes(body), limit))
    elif encoding not in ("identity", ""):
        raise InvalidInput("CONTENT_ENCODING_UNSUPPORTED", f"Content-Encoding {encoding!r}: use gzip")
    try:
        return json.loads(body)
    except ValueError as error:
        raise InvalidInput("BODY_NOT_JSON", f"the body is not valid JSON: {error}") from error


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise InvalidInput(
            "BODY_NOT_GZIP", f"Content-Encoding is gzip but the body is not: {error}"
        ) from error
    if len(out) > limit:
        raise ResourceExhausted("BODY_TOO_LARGE", f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise InvalidInput("BODY_NOT_GZIP", "the gzip body is truncated")
    return out


def problem(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    return JSONResponse(body, status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LabelgateError)
    async def labelgate_error(_: Request, error: LabelgateError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": 'Bearer realm="labelgate-bundles"'} if error.http_status == 401 else None
        )
        if isinstance(error, BundleUnavailable):
            headers = {"Retry-After": "5"}
        return problem(error.http_status, error.reason, error.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, f"HTTP_{error.status_code}", str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem(400, "REQUEST_INVALID", "; ".join(str(e.get("msg")) for e in error.errors()))
