"""The bundle server's HTTP face (FastAPI): OPA's bundle, status and decision-log APIs.

- ``GET /bundles/{name}``: the tarball with ``ETag: "<revision>"`` (``"<revision>-<sequence>"``
  when signed: ``build.Bundle.etag``); ``304`` when ``If-None-Match`` matches. Every bundle
  reply carries ``Content-Type: application/vnd.openpolicyagent.bundles``: OPA turns long
  polling on when it sees that type (on a 200) and keeps it while 304s come back, and without
  ``long_polling_timeout_seconds`` in its config it just polls on its usual schedule. With
  ``Prefer: ...wait=N`` and a matching ETag the request is held until a new revision is
  published or N seconds pass (then ``304``).
- ``POST /status``, ``POST /logs``: OPA's reports and decision logs (``Content-Type:
  application/json``, gzip or plain), read strictly (``reports.py``) and stored under the
  posting credential's instance before the ``200`` (see ``fleet.py``).
- ``GET /fleet``, ``GET /fleet/{instance}/history``, ``GET /decisions/{decision_id}``,
  ``GET /status``: the views for people and for the gateway's audit; ``GET /healthz`` and
  ``GET /metrics`` without a token.
- ``GET /revisions`` (reader): the revisions the publish gate judged, with their impact
  reports, hold reasons and approvals; ``POST /revisions/{revision}/approval`` (publisher):
  ask the approvals service to release a held revision (see ``gate.py``).
- ``GET /decisions/inputs?since_seconds=N`` (reader): the distinct inputs of the decisions OPA
  logged here, with how often each was logged (``labelgate policy impact --from``).
- ``GET /fleet/page``: the fleet view as an HTML page (``templates/fleet.html``), guarded
  like the other reader routes: send ``Authorization: Bearer`` (a browser extension, or a
  reverse proxy that adds it); the token is never accepted in the URL, where it would end up
  in access logs and browser history.

Who may call what (``access.py``): instance credentials pull bundles and post; reader
credentials read the fleet, decisions and status; neither can do the other's part. Without
credentials the server does not start unless ``insecure_no_auth`` is set. Before anything
else, ``Host`` must name this server (DNS rebinding); ``POST`` bodies must be declared
``application/json`` (a page's no-CORS request cannot), and are bounded on the wire, after
gunzip, in depth and in events per batch.

Every error is an ``application/problem+json`` body (RFC 7807) with a stable ``reason``;
unexpected failures too (``500``, ``INTERNAL``), never a bare traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelgate.bundle import reasons
from labelgate.bundle.access import ANONYMOUS, NAME, Credentials, HostCheck, Principal, Role
from labelgate.bundle.build import Bundle
from labelgate.bundle.fleet import FleetStore, Retention, clean, iso
from labelgate.bundle.gate import PublishGate, kind_counts
from labelgate.bundle.publisher import Publisher
from labelgate.bundle.reports import DECISION_ID, decision_events, parse_json, status_report
from labelgate.bundle.revisions import RevisionRecord, RevisionStore
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import OpaValidator
from labelgate.digits import whole_number
from labelgate.errors import (
    BundleUnavailable,
    ConfigError,
    InvalidInput,
    LabelgateError,
    NotFound,
    ResourceExhausted,
)
from labelgate.logs import get_logger

log = get_logger(__name__)

BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
PROBLEM_MEDIA_TYPE = "application/problem+json"
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_DECISION_ID = DECISION_ID
_REVISION = re.compile(r"^[0-9a-f]{64}$")
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
# Routes anyone who can reach the server may call, whatever Host they name: no data behind them.
OPEN_PATHS = frozenset({"/healthz", "/metrics"})


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the problems a route answers: ``codes``, and any other error
    (``default``, e.g. 500). Declaring them also keeps FastAPI from documenting a 422 the server
    never sends (a request that fails validation is a 400 problem)."""
    entry = {
        "description": "A problem (RFC 7807)",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
    }
    return {**{code: entry for code in codes}, "default": entry}


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "reason"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "reason": {"type": "string"},
    },
}


class UnsupportedMediaType(LabelgateError):
    http_status = 415


@dataclass(frozen=True)
class ServerSettings:
    source: Path
    bundle_name: str = "labelgate"
    # Who may call: required unless insecure_no_auth (then every caller may do everything).
    credentials: Credentials | None = None
    insecure_no_auth: bool = False
    # Names a request's Host may carry (IP literals are always accepted; see access.py).
    allowed_hosts: tuple[str, ...] = ("localhost",)
    state_dir: Path = Path(".labelgate/bundle-server")
    opa: str | None = None
    signer: Signer | None = None
    poll_interval: float = 0.5
    max_wait_seconds: int = 300
    # Bytes of a POST body, on the wire and again after gunzip.
    max_upload_bytes: int = 8 * 1024 * 1024
    max_events_per_batch: int = 10_000
    max_json_depth: int = 64
    retention: Retention = field(default_factory=Retention)
    prune_interval: float = 300.0
    # The impact rule before publishing (None: every validated revision is published).
    publish_gate: PublishGate | None = None
    # Raises what gateways would refuse of a bundle's catalog (``bundle/cli.py`` passes theirs).
    catalog_check: Callable[[Bundle], None] | None = None


def create_app(settings: ServerSettings) -> FastAPI:
    _check_settings(settings)
    credentials = settings.credentials or Credentials()
    hosts = HostCheck.of(settings.allowed_hosts)
    registry = CollectorRegistry()
    revisions = (
        RevisionStore(settings.state_dir / "revisions.sqlite3") if settings.publish_gate is not None else None
    )
    publisher = Publisher(
        settings.source,
        OpaValidator(settings.opa),
        signer=settings.signer,
        poll_interval=settings.poll_interval,
        registry=registry,
        gate=settings.publish_gate,
        revisions=revisions,
        bundle_name=settings.bundle_name,
        catalog_check=settings.catalog_check,
    )
    fleet = FleetStore(settings.state_dir / "fleet.sqlite3", settings.retention)
    requests = Counter(
        "labelgate_bundle_http_requests",
        "Requests by route and status code.",
        ["route", "code"],
        registry=registry,
    )
    conflicts = Counter(
        "labelgate_bundle_decision_conflicts",
        "Decision-log events stored beside another version of the same decision (possible forgery).",
        registry=registry,
    )
    refused = Counter(
        "labelgate_bundle_refused",
        "Requests refused before reaching a route handler's work, by reason.",
        ["reason"],
        registry=registry,
    )
    if settings.insecure_no_auth:
        log.warning(
            "bundle_server_auth_disabled",
            why="--insecure-no-auth: any client that reaches the server may pull, post and read",
        )
    else:
        log.info(
            "bundle_server_credentials",
            instances=credentials.count("instance"),
            readers=credentials.count("reader"),
        )

    async def prune_forever() -> None:
        while True:
            try:
                removed = await asyncio.to_thread(fleet.prune)
                if any(removed.values()):
                    pruned = {k: str(v) for k, v in removed.items()}
                    log.info("bundle_server_pruned", **pruned)  # type: ignore[arg-type]  # log fields
            except Exception as error:  # keep pruning on the next round
                log.error("bundle_server_prune_failed", error=str(error))
            await asyncio.sleep(settings.prune_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        pruner = asyncio.create_task(prune_forever())
        log.info("bundle_server_started", bundle=settings.bundle_name, revision=_revision(publisher))
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await publisher.stop()
            await asyncio.to_thread(fleet.close)
            if revisions is not None:
                await asyncio.to_thread(revisions.close)

    app = FastAPI(
        lifespan=lifespan, title="labelgate bundle server", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.publisher = publisher
    app.state.fleet = fleet
    _install_error_handlers(app, refused)

    @app.middleware("http")
    async def host_and_count(request: Request, call_next: Any) -> Response:
        if request.url.path not in OPEN_PATHS and not hosts.allows(request.headers.get("host")):
            refused.labels(reason="HOST_NOT_ALLOWED").inc()
            response: Response = problem(
                421, "HOST_NOT_ALLOWED", "the Host header does not name this server (see --allowed-host)"
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(route=getattr(route, "path", "unmatched"), code=str(response.status_code)).inc()
        return response

    def role(needed: Role, what: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
        async def authorized(request: Request) -> Principal:
            if settings.insecure_no_auth:
                return ANONYMOUS
            return credentials.check(request.headers.get("authorization", ""), needed, what)

        return authorized

    as_instance = Depends(role("instance", "pull bundles or post reports"))
    as_reader = Depends(role("reader", "read the fleet, decisions or status"))
    as_publisher = Depends(role("publisher", "ask for a held revision's release"))

    async def recent_revisions() -> list[RevisionRecord]:
        return await asyncio.to_thread(revisions.recent) if revisions is not None else []

    @app.get("/bundles/{name}", operation_id="getBundle", responses=problems(400, 401, 403, 404, 421, 503))
    async def get_bundle(name: str, request: Request, _: Principal = as_instance) -> Response:
        if name != settings.bundle_name:
            raise NotFound(reasons.BUNDLE_NOT_FOUND, f"no bundle named {name!r}")
        wait = prefer_wait(request.headers.getlist("prefer"), settings.max_wait_seconds)
        bundle = publisher.current
        if bundle is None:
            raise BundleUnavailable(
                reasons.BUNDLE_NOT_READY, "no source revision has passed validation yet (see GET /status)"
            )
        if etag_matches(request.headers.get("if-none-match", ""), bundle.etag):
            newer = await publisher.wait_for_change(bundle.etag, wait) if wait else None
            if newer is None:
                return Response(status_code=304, headers=_bundle_headers(bundle.etag))
            bundle = newer
        return Response(bundle.tarball, headers=_bundle_headers(bundle.etag))

    @app.post("/status", operation_id="postStatus", responses=problems(400, 401, 403, 413, 415, 421))
    async def post_status(request: Request, who: Principal = as_instance) -> JSONResponse:
        body = await _read_body(request, settings.max_upload_bytes)
        report = await asyncio.to_thread(lambda: status_report(parse_json(body, settings.max_json_depth)))
        instance = who.name if who.authenticated else report.reported_id
        if not instance:
            raise InvalidInput(
                reasons.STATUS_REPORT_INVALID, "a status report needs labels.id (the OPA instance id)"
            )
        await asyncio.to_thread(fleet.record_status, report, instance, authenticated=who.authenticated)
        return JSONResponse({"instance": instance})

    @app.post("/logs", operation_id="postDecisionLogs", responses=problems(400, 401, 403, 413, 415, 421, 507))
    async def post_logs(request: Request, who: Principal = as_instance) -> JSONResponse:
        body = await _read_body(request, settings.max_upload_bytes)
        events = await asyncio.to_thread(
            lambda: decision_events(
                parse_json(body, settings.max_json_depth, settings.max_events_per_batch),
                settings.max_events_per_batch,
            )
        )
        owner = who.name if who.authenticated else None
        outcome = await asyncio.to_thread(
            fleet.store_decisions, events, owner, authenticated=who.authenticated
        )
        if outcome.conflicts:
            conflicts.inc(outcome.conflicts)
            log.warning(
                "decision_log_conflict",
                instance=owner or "(unauthenticated)",
                conflicts=str(outcome.conflicts),
                why="an event arrived for a decision already held with other content: both are kept",
            )
        return JSONResponse(outcome.as_dict())

    @app.get("/status", operation_id="getPublishStatus", responses=problems(401, 403, 421))
    async def get_status(_: Principal = as_reader) -> JSONResponse:
        return SafeJSONResponse({"bundle": settings.bundle_name, **publisher.status()})

    @app.get("/fleet", operation_id="getFleet", responses=problems(401, 403, 421))
    async def get_fleet(_: Principal = as_reader) -> JSONResponse:
        revision = _revision(publisher)
        instances = await asyncio.to_thread(fleet.instances, settings.bundle_name, revision)
        return SafeJSONResponse(
            {"bundle": {"name": settings.bundle_name, "revision": revision}, "instances": instances}
        )

    @app.get(
        "/fleet/page",
        response_class=HTMLResponse,
        operation_id="getFleetPage",
        responses=problems(401, 403, 421),
    )
    async def get_fleet_page(_: Principal = as_reader) -> HTMLResponse:
        revision = _revision(publisher)
        instances = await asyncio.to_thread(fleet.instances, settings.bundle_name, revision)
        judged = await recent_revisions()
        page = _PAGES.get_template("fleet.html").render(
            bundle=settings.bundle_name,
            revision=revision,
            gate=publisher.gate is not None,
            revisions=[revision_row(record) for record in judged],
            status=clean(publisher.status()),
            instances=[fleet_row(item, settings.bundle_name, time.time()) for item in instances],
            now=iso(time.time()),
        )
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get(
        "/fleet/{instance}/history", operation_id="getInstanceHistory", responses=problems(400, 401, 403, 421)
    )
    async def get_history(instance: str, limit: int = 100, _: Principal = as_reader) -> JSONResponse:
        if not NAME.match(instance) and not _DECISION_ID.match(instance):
            raise InvalidInput(reasons.INSTANCE_INVALID, "an instance name is 1-128 of [A-Za-z0-9._:-]")
        if not 1 <= limit <= 1000:
            raise InvalidInput(reasons.LIMIT_INVALID, "limit is 1-1000")
        history = await asyncio.to_thread(fleet.history, instance, limit)
        return SafeJSONResponse({"instance": instance, "reports": history})

    @app.get("/revisions", operation_id="getRevisions", responses=problems(401, 403, 421))
    async def get_revisions(_: Principal = as_reader) -> JSONResponse:
        judged = await recent_revisions()
        return SafeJSONResponse(
            {
                "gate": publisher.gate is not None,
                "serving": _revision(publisher),
                "revisions": [record.to_json() for record in judged],
            }
        )

    @app.post(
        "/revisions/{revision}/approval",
        operation_id="requestPublishApproval",
        status_code=202,
        responses=problems(400, 401, 403, 404, 409, 415, 421),
    )
    async def ask_release(revision: str, request: Request, who: Principal = as_publisher) -> JSONResponse:
        await _read_body(request, settings.max_upload_bytes)  # declared JSON: no page can post here
        if not _REVISION.match(revision):
            raise InvalidInput(reasons.REVISION_INVALID, "a revision is 64 lowercase hex digits")
        if not who.authenticated:
            raise InvalidInput(
                reasons.PUBLISHER_UNKNOWN, "without credentials no author is known: add publishers"
            )
        held = await publisher.request_release(revision, who.name)
        body = {"revision": revision, "author": who.name, "approval_id": held.approval_id}
        return JSONResponse({**body, "link": held.approval_link}, status_code=202)

    @app.get("/decisions/inputs", operation_id="getLoggedInputs", responses=problems(400, 401, 403, 421))
    async def get_logged_inputs(since_seconds: float | None = None, _: Principal = as_reader) -> JSONResponse:
        if since_seconds is not None and not since_seconds > 0:
            raise InvalidInput(reasons.SINCE_INVALID, "since_seconds must be > 0")
        found = await asyncio.to_thread(fleet.logged_inputs, since_seconds)
        return SafeJSONResponse({"inputs": [{"input": doc, "seen": seen} for doc, seen in found]})

    @app.get(
        "/decisions/{decision_id}", operation_id="getDecision", responses=problems(400, 401, 403, 404, 421)
    )
    async def get_decision(
        decision_id: str, instance: str | None = None, _: Principal = as_reader
    ) -> JSONResponse:
        if not _DECISION_ID.match(decision_id):
            raise InvalidInput(reasons.DECISION_ID_INVALID, "a decision id is 1-128 of [A-Za-z0-9._:-]")
        if instance is not None and not _DECISION_ID.match(instance):
            raise InvalidInput(reasons.INSTANCE_INVALID, "an instance name is 1-128 of [A-Za-z0-9._:-]")
        found = await asyncio.to_thread(fleet.decision, decision_id, instance)
        if found is None:
            raise NotFound(reasons.DECISION_NOT_FOUND, f"no decision log with id {decision_id}")
        return SafeJSONResponse({"decision_id": decision_id, **found})

    @app.get("/healthz", operation_id="healthz")
    async def healthz() -> JSONResponse:
        revision = _revision(publisher)
        return JSONResponse({"ok": revision is not None, "revision": revision}, 200 if revision else 503)

    @app.get("/metrics", operation_id="metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class SafeJSONResponse(JSONResponse):
    """A JSON reply that cannot fail on its content: what no writer accepts is cleaned first."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return super().render(clean(content))


def fleet_row(instance: dict[str, Any], bundle_name: str, now: float) -> dict[str, Any]:
    """One instance of ``FleetStore.instances`` as the page shows it: ages instead of timestamps."""
    ours = (instance.get("bundles") or {}).get(bundle_name) or {}
    errors = ours.get("errors") or []
    logs = instance.get("decision_logs") or {}
    labels = instance.get("labels") or {}
    return {
        "id": instance["id"],
        "authenticated": instance.get("authenticated", False),
        "reported_id": instance.get("reported_id") if instance.get("reported_id") != instance["id"] else None,
        "conflicts": logs.get("conflicts", 0),
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
        "bundle_error": _bundle_error(ours.get("message"), errors),
    }


def _bundle_error(message: str | None, errors: list[Any]) -> str | None:
    """What an OPA reported about our bundle, as people fix it: each error as
    ``file:line: message`` when OPA located it (its own summary, "2 errors occurred", names
    nothing), else its summary."""
    located = [
        f"{e['location']['file']}:{e['location']['row']}: {e.get('message', '')}"
        if isinstance(e.get("location"), dict) and e["location"].get("file")
        else str(e.get("message", ""))
        for e in errors[:5]
        if isinstance(e, dict)
    ]
    return "; ".join(located) if located else message


def revision_row(record: RevisionRecord) -> dict[str, Any]:
    """One judged revision as the page shows it: counts per change kind and the change groups."""
    report = record.report
    return {
        **record.to_json(),
        "kinds": sorted(kind_counts(report).items()),
        "changes": report.get("changes", []),
        "distinct": report.get("distinct", 0),
        "decisions": report.get("inputs", 0),
        "changed": report.get("changed", 0),
        "baseline": bool(report.get("baseline")),
        "error": report.get("error"),
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
        raise ConfigError(
            reasons.BUNDLE_SOURCE_MISSING, f"policy source folder {settings.source} does not exist"
        )
    if not _BUNDLE_NAME.match(settings.bundle_name):
        raise ConfigError(
            reasons.BUNDLE_NAME_INVALID, f"bundle name {settings.bundle_name!r}: use [A-Za-z0-9._-]"
        )
    if not all(  # NaN passes every comparison: a dead watcher, a pruner that never prunes
        math.isfinite(value)
        for value in (
            settings.poll_interval,
            settings.max_wait_seconds,
            settings.prune_interval,
            settings.retention.decisions_seconds,
            settings.retention.status_seconds,
        )
    ):
        raise ConfigError(
            reasons.BUNDLE_SERVER_CONFIG_INVALID, "intervals, waits and retention must be finite numbers"
        )
    if Path(settings.state_dir).exists() and not Path(settings.state_dir).is_dir():
        raise ConfigError(
            reasons.BUNDLE_SERVER_CONFIG_INVALID, f"state folder {settings.state_dir} is a file, not a folder"
        )
    if settings.poll_interval <= 0 or settings.max_wait_seconds < 0 or settings.prune_interval <= 0:
        raise ConfigError(
            reasons.BUNDLE_SERVER_CONFIG_INVALID, "poll and prune intervals must be > 0, max wait >= 0"
        )
    if min(settings.max_upload_bytes, settings.max_events_per_batch, settings.max_json_depth) < 1:
        raise ConfigError(reasons.BUNDLE_SERVER_CONFIG_INVALID, "upload, batch and depth limits must be >= 1")
    retention = settings.retention
    if (
        min(retention.decisions_seconds, retention.status_seconds) <= 0
        or retention.max_decisions_per_instance < 0
    ):
        raise ConfigError(
            reasons.BUNDLE_SERVER_CONFIG_INVALID, "retention must be > 0 (and the per-instance cap >= 0)"
        )
    if settings.insecure_no_auth and settings.credentials:
        raise ConfigError(
            reasons.BUNDLE_AUTH_CONFLICT, "credentials are configured and insecure_no_auth is set: choose one"
        )
    if not settings.insecure_no_auth and not settings.credentials:
        raise ConfigError(
            reasons.BUNDLE_AUTH_REQUIRED,
            "no credentials: give --tokens-file (or --token and --reader-token); "
            "--insecure-no-auth runs without any, for a throwaway demo on loopback only",
        )


def prefer_wait(values: list[str], maximum: int) -> int:
    """Seconds to hold a request, from ``Prefer`` (OPA: ``modes=snapshot,delta;wait=10``)."""
    wait = 0
    for value in values:
        for token in re.split(r"[,;]", value):
            key, _, raw = token.strip().partition("=")
            if key.strip().lower() != "wait":
                continue
            raw = raw.strip().strip('"')
            seconds = whole_number(raw)
            if seconds is None:
                raise InvalidInput(
                    reasons.PREFER_INVALID, f"Prefer wait must be whole seconds, got {raw[:40]!r}"
                )
            wait = seconds
    return min(wait, maximum)


def etag_matches(header: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (the bundle's, quoted or not)."""
    wanted = etag.strip('"')
    for candidate in header.split(","):
        tag = candidate.strip()
        tag = tag.removeprefix("W/")
        if tag == "*" or tag.strip('"') == wanted:
            return True
    return False


def _bundle_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Content-Type": BUNDLE_MEDIA_TYPE, "Cache-Control": "no-cache"}


def _revision(publisher: Publisher) -> str | None:
    return publisher.current.revision if publisher.current else None


def _require_json(request: Request) -> None:
    """``Content-Type: application/json`` (``charset=utf-8`` at most): a page's no-CORS POST cannot."""
    header = request.headers.get("content-type", "")
    media, _, params = header.partition(";")
    if media.strip().lower() != "application/json":
        raise UnsupportedMediaType(
            reasons.CONTENT_TYPE_UNSUPPORTED, f"send Content-Type: application/json, not {header[:80]!r}"
        )
    for param in filter(None, (p.strip() for p in params.split(";"))):
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(
                reasons.CONTENT_TYPE_UNSUPPORTED, f"unsupported media type parameter {param[:80]!r}"
            )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped when ``Content-Encoding: gzip`` (as OPA sends its logs); bounded
    before, while and after reading; declared as JSON before a byte of it is read."""
    _require_json(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise InvalidInput(
            reasons.CONTENT_ENCODING_UNSUPPORTED, f"Content-Encoding {encoding[:40]!r}: use gzip"
        )
    declared = request.headers.get("content-length")
    length = whole_number(declared) if declared else None
    if length is not None and length > limit:
        raise ResourceExhausted(reasons.BODY_TOO_LARGE, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ResourceExhausted(reasons.BODY_TOO_LARGE, f"the body is over {limit} bytes")
    if encoding == "gzip":
        return await asyncio.to_thread(_gunzip, bytes(body), limit)
    return bytes(body)


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise InvalidInput(
            reasons.BODY_NOT_GZIP, f"Content-Encoding is gzip but the body is not: {error}"
        ) from error
    if len(out) > limit:
        raise ResourceExhausted(reasons.BODY_TOO_LARGE, f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise InvalidInput(reasons.BODY_NOT_GZIP, "the gzip body is truncated")
    if inflater.unused_data:
        raise InvalidInput(
            reasons.BODY_NOT_GZIP, "data follows the gzip stream (one gzip member is expected)"
        )
    return out


def problem(status: int, reason: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    return JSONResponse(body, status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _install_error_handlers(app: FastAPI, refused: Counter) -> None:
    @app.exception_handler(LabelgateError)
    async def labelgate_error(_: Request, error: LabelgateError) -> JSONResponse:
        refused.labels(reason=error.reason).inc()
        headers = (
            {"WWW-Authenticate": 'Bearer realm="labelgate-bundles"'} if error.http_status == 401 else None
        )
        if isinstance(error, BundleUnavailable):
            headers = {"Retry-After": "5"}
        if error.http_status == 507:
            headers = {"Retry-After": "300"}
        return problem(error.http_status, error.reason, error.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, f"HTTP_{error.status_code}", str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem(400, "REQUEST_INVALID", "; ".join(str(e.get("msg")) for e in error.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("bundle_server_error", error=type(error).__name__, detail=str(error)[:500])
        return problem(500, "INTERNAL", "the bundle server failed on this request; see its log")
