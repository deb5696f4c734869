"""The web inbox: server-rendered pages (Jinja2) where approvers approve or deny in one click.

Signing in: the approver pastes a bearer token (the same JWT the gateway accepts) once; it
is verified, and the session cookie then holds a **derived session token**, never the
bearer token: the verified subject and an expiry (the token's, at most
``admin.session_max_seconds``), signed with HMAC-SHA256 under the session key
(``ApprovalsContext.session_key``: ``admin.session_key[_file]``, shared by the replicas
behind one inbox URL, else random per process). The cookie is HttpOnly and SameSite=Strict;
over plain HTTP it is ``labelgate_session`` scoped to ``Path=/inbox``, and with HTTPS
(``admin.tls``, or an ``https://`` ``approvals.public_url`` behind a TLS proxy) it is
``__Host-labelgate_session`` with ``Secure`` and ``Path=/`` (the ``__Host-`` prefix demands
both; the API docs page is sandboxed into an opaque origin, so it still cannot use it).

CSRF: every form carries a token derived from the session (HMAC under the session key of
the cookie's value, so only someone holding the session can compute it); the sign-in form
uses a double-submit cookie. Forms are also refused when the browser says they came from
another origin. A vote or sign-out is checked against the session cookie before its body is
read; bodies are read with a bound (``MAX_FORM_BYTES``, 413 past it).

Recorded sessions (``/inbox/sessions``, ``/inbox/sessions/{id}``): the timeline of a
session, call by call, with the response exactly as delivered. They live under ``/inbox``
because that is where the session cookie is sent. Only signed-in members of the viewer
groups (``approvals.viewer_groups``, formerly ``admin_groups``) may see them (none
configured: nobody may); the store
is ``app.state.session_store`` (a ``labelgate.recording.SessionStore``), set by whoever
builds the app from ``settings.recording``; without one the pages say recording is off.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from labelgate.approvals import rules
from labelgate.approvals.api import APPROVAL_ID, ApprovalsContext, context
from labelgate.approvals.model import RESOLVED, ApprovalRequest, State
from labelgate.auth import Subject
from labelgate.classify.labels import LABEL_RANK
from labelgate.errors import (
    InvalidInput,
    LabelgateError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from labelgate.logs import get_logger

log = get_logger(__name__)
HERE = Path(__file__).parent
SESSION_COOKIE = "labelgate_session"
SIGNIN_COOKIE = "labelgate_signin"
# With HTTPS: the browser accepts these only with Secure, Path=/ and no Domain.
SECURE_SESSION_COOKIE = "__Host-labelgate_session"
SECURE_SIGNIN_COOKIE = "__Host-labelgate_signin"
COOKIE_PATH = "/inbox"
MAX_FORM_BYTES = 16 * 1024
MAX_COOKIE_BYTES = 3800
SESSION_FORMAT = "v1"
RECENT_LIMIT = 15
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # A page of another browsing context group (the sandboxed API docs, anything that opened
    # the inbox in a window) gets no handle on an inbox window.
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_FLASH = {
    "approved": "You approved {id}.",
    "granted": "You approved {id}: it is granted and the held call is released.",
    "denied": "You denied {id}; the caller is refused with your reason.",
    "signed-out": "You are signed out.",
}

_APPROVAL_ID = re.compile(APPROVAL_ID)
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/inbox", include_in_schema=False)
# Included before ``router``, whose ``/inbox/{approval_id}`` would otherwise take ``/inbox/sessions``.
sessions_router = APIRouter(prefix="/inbox/sessions", include_in_schema=False)
MAX_SESSION_ID = 256


# -- formatting for the templates -------------------------------------------------------------
def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 600 else f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def clock_time(timestamp: float | None) -> str:
    return "" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


# Most sensitive first; a label the inbox does not know sorts first (it is treated as the most sensitive).
_RANK = collections.defaultdict(lambda: len(LABEL_RANK), LABEL_RANK)


def by_sensitivity(labels: Any) -> list[str]:
    return sorted(labels, key=lambda label: (-_RANK[label], label))


def top_label(labels: Any) -> str:
    return by_sensitivity(labels)[0] if labels else "internal"


def fields_by_sensitivity(fields: Any) -> list[Any]:
    return sorted(fields, key=lambda f: (-_RANK[top_label(f.labels)], f.path))


templates.env.filters["duration"] = duration
templates.env.filters["clock_time"] = clock_time
templates.env.filters["by_sensitivity"] = by_sensitivity
templates.env.filters["top_label"] = top_label
templates.env.filters["fields_by_sensitivity"] = fields_by_sensitivity


# -- sessions and CSRF ------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: bytes, data: str) -> bytes:
    return hmac.new(key, purpose + b"\0" + data.encode(), hashlib.sha256).digest()


def issue_session(ctx: ApprovalsContext, person: Subject, expires_at: float) -> str:
    """A session token for ``person``: who they are and until when, signed. Not the bearer token."""
    claims = {
        "sub": person.to_policy(),
        "exp": int(expires_at),
        "sid": secrets.token_urlsafe(12),
    }
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    body = f"{SESSION_FORMAT}.{payload}"
    return f"{body}.{_b64(_mac(ctx.session_key, b'session', body))}"


def open_session(ctx: ApprovalsContext, value: str | None, now: float | None = None) -> Subject | None:
    """The subject of a session token this server (or a replica with the same key) issued and
    that has not expired; None for anything else."""
    if not value or len(value) > MAX_COOKIE_BYTES:
        return None
    body, _, mac = value.rpartition(".")
    if not body.startswith(SESSION_FORMAT + "."):
        return None
    try:
        if not hmac.compare_digest(_unb64(mac), _mac(ctx.session_key, b"session", body)):
            return None
        claims = json.loads(_unb64(body.partition(".")[2]))
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return None
        if claims["exp"] <= (time.time() if now is None else now):
            return None
        sub = claims["sub"]
        return Subject(
            id=sub["id"], groups=tuple(sub["groups"]), auth=sub["auth"], attributes=sub["attributes"]
        )
    except (ValueError, KeyError, TypeError):
        return None


def csrf_token(ctx: ApprovalsContext, session_value: str) -> str:
    return _mac(ctx.session_key, b"labelgate-inbox-csrf", session_value).hex()


def _secure(request: Request) -> bool:
    return context(request).secure


def _cookie_names(request: Request) -> tuple[str, str, str]:
    """(session cookie, sign-in cookie, cookie path) for this server."""
    if _secure(request):
        return SECURE_SESSION_COOKIE, SECURE_SIGNIN_COOKIE, "/"
    return SESSION_COOKIE, SIGNIN_COOKIE, COOKIE_PATH


def _session(request: Request) -> tuple[Subject, str] | None:
    value = request.cookies.get(_cookie_names(request)[0])
    person = open_session(context(request), value)
    return (person, value) if person is not None and value else None


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form, read with a bound: past ``MAX_FORM_BYTES`` it is refused unread."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidInput("FORM_EXPECTED", "send the form as application/x-www-form-urlencoded")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise ResourceExhausted("FORM_TOO_LARGE", f"the form is larger than {MAX_FORM_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ResourceExhausted("FORM_TOO_LARGE", f"the form is larger than {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    fields = parse_qs(b"".join(chunks).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise PermissionDenied("CROSS_ORIGIN_FORM", "this form was sent from another site")


def _check_csrf(request: Request, form: dict[str, str], session_token: str) -> None:
    _same_origin(request)
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(context(request), session_token)):
        raise PermissionDenied(
            "CSRF_TOKEN_INVALID", "the form's CSRF token is missing or wrong: reload the page"
        )


def _safe_next(target: str | None) -> str:
    # Only our own pages: no scheme, no host, no "//" tricks.
    if target and target.startswith(COOKIE_PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return COOKIE_PATH


def _page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"now": time.time(), **values}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _signin_page(request: Request, next_url: str, error: str = "", status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = _page(request, "signin.html", status, next=next_url, csrf=nonce, error=error)
    _, signin_cookie, path = _cookie_names(request)
    response.set_cookie(
        signin_cookie,
        nonce,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=path,
        max_age=3600,
    )
    return response


def _redirect(target: str) -> RedirectResponse:
    response = RedirectResponse(target, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def render_error(request: Request, status: int, detail: str, reason: str) -> Response:
    session = _session(request)
    return _page(
        request,
        "error.html",
        status,
        code=status,
        detail=detail,
        reason=reason,
        person=session[0] if session else None,
        csrf=csrf_token(context(request), session[1]) if session else "",
    )


# -- pages ------------------------------------------------------------------------------------
def _view(request: ApprovalRequest, person: Subject, ctx: ApprovalsContext, now: float) -> dict[str, Any]:
    approvals = [v for v in request.votes if v.verdict == "approve"]
    viewers = ctx.service.admin_groups  # the viewer groups: they see, they never vote
    return {
        "r": request,
        "approvals": len({v.approver for v in approvals}),
        "mine": request.requester == person.id,
        "can_approve": rules.vote_refusal(person, request, "approve", viewers, now) is None,
        "can_deny": rules.vote_refusal(person, request, "deny", viewers, now) is None,
        "voted": any(v.approver == person.id for v in request.votes),
        "age": now - request.created_at,
        "left": request.expires_at - now,
    }


@router.get("", response_class=HTMLResponse)
async def inbox(request: Request, flash: str = "", id: str = "") -> Response:
    session = _session(request)
    if session is None:
        return _signin_page(request, COOKIE_PATH)
    person, token = session
    ctx = context(request)
    now = time.time()
    pending = sorted(await ctx.service.visible_to(person, [State.PENDING]), key=lambda r: r.expires_at)
    recent = (await ctx.service.visible_to(person, sorted(RESOLVED)))[:RECENT_LIMIT]
    message = _FLASH.get(flash, "").format(id=id if len(id) < 40 else "")
    return _page(
        request,
        "inbox.html",
        person=person,
        csrf=csrf_token(context(request), token),
        flash=message,
        pending=[_view(r, person, ctx, now) for r in pending],
        recent=[_view(r, person, ctx, now) for r in recent],
    )


@router.post("/signin")
async def signin(request: Request) -> Response:
    session_cookie, signin_cookie, path = _cookie_names(request)
    # The sign-in form's own cookie first: a post without it is refused before its body is read.
    expected = request.cookies.get(signin_cookie, "")
    if not expected:
        return _signin_page(request, COOKIE_PATH, "The sign-in form expired; please try again.", 403)
    form = await _form(request)
    _same_origin(request)
    next_url = _safe_next(form.get("next"))
    if not hmac.compare_digest(form.get("csrf", ""), expected):
        return _signin_page(request, next_url, "The sign-in form expired; please try again.", 403)
    token = form.get("token", "").strip().removeprefix("Bearer ").strip()
    ctx = context(request)
    try:
        person = await ctx.identify_off_loop(token)
    except LabelgateError as error:
        return _signin_page(request, next_url, f"That token was refused: {error.message}.", 401)
    now = time.time()
    exp = person.attributes.get("exp")
    until = now + ctx.session_max_seconds
    if isinstance(exp, int | float):
        until = min(until, float(exp))
    value = issue_session(ctx, person, until)
    if len(value) > MAX_COOKIE_BYTES:
        return _signin_page(
            request, next_url, "That token names too many groups to keep in a session cookie.", 400
        )
    response = _redirect(next_url)
    response.set_cookie(
        session_cookie,
        value,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=path,
        max_age=max(1, int(until - now)),
    )
    response.delete_cookie(
        signin_cookie, path=path, secure=_secure(request), httponly=True, samesite="strict"
    )
    log.info("inbox sign-in", subject=person.id, until=int(until))
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = _session(request)
    if session is not None:  # checked first: without a session the body is never read
        _check_csrf(request, await _form(request), session[1])
    session_cookie, _, path = _cookie_names(request)
    response = _redirect(f"{COOKIE_PATH}?flash=signed-out")
    response.delete_cookie(
        session_cookie, path=path, secure=_secure(request), httponly=True, samesite="strict"
    )
    return response


@router.get("/{approval_id}", response_class=HTMLResponse)
async def detail(request: Request, approval_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _signin_page(request, f"{COOKIE_PATH}/{quote(approval_id)}")
    person, token = session
    ctx = context(request)
    found = await ctx.service.show(person, approval_id)
    return _page(
        request,
        "detail.html",
        person=person,
        csrf=csrf_token(context(request), token),
        item=_view(found, person, ctx, time.time()),
    )


async def _vote(request: Request, approval_id: str, verdict: str) -> Response:
    session = _session(request)  # before the body is read
    if session is None:
        raise Unauthenticated("SESSION_EXPIRED", "your session has ended: sign in again")
    person, token = session
    form = await _form(request)
    _check_csrf(request, form, token)
    if not _APPROVAL_ID.match(approval_id):
        raise InvalidInput("APPROVAL_ID_INVALID", "that is not an approval id")
    service = context(request).service
    reason = form.get("reason", "").strip()[:1000]
    if verdict == "approve":
        result = await service.approve(person, approval_id, reason)
        flash = "granted" if result.state is State.GRANTED else "approved"
    else:
        await service.deny(person, approval_id, reason or "denied in the web inbox (no reason given)")
        flash = "denied"
    return _redirect(f"{COOKIE_PATH}?flash={flash}&id={quote(approval_id)}")


@router.post("/{approval_id}/approve")
async def approve(request: Request, approval_id: str) -> Response:
    return await _vote(request, approval_id, "approve")


@router.post("/{approval_id}/deny")
async def deny(request: Request, approval_id: str) -> Response:
    return await _vote(request, approval_id, "deny")


# -- recorded sessions (viewer groups only) ---------------------------------------------------
def _auditor(request: Request, next_url: str) -> tuple[Subject, str] | Response:
    """The signed-in person if they may read recordings, the sign-in page if nobody is signed in."""
    session = _session(request)
    if session is None:
        return _signin_page(request, next_url)
    person, _ = session
    viewers = context(request).service.admin_groups
    if not viewers:
        raise PermissionDenied(
            "SESSIONS_NO_ADMIN_GROUP",
            "recorded sessions are shown only to approvals.viewer_groups, and none is set",
        )
    if not set(person.groups) & set(viewers):
        log.warning("session page refused", subject=person.id, reason="not in a viewer group")
        raise PermissionDenied(
            "SESSIONS_ADMIN_ONLY", f"recorded sessions are shown only to members of {', '.join(viewers)}"
        )
    return session


_TENSOR_OF_PATH = re.compile(r"^outputs\.([^.\[{]+)")


def timeline(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored entries as the session page shows them: calls numbered, markers and torn lines kept."""
    items: list[dict[str, Any]] = []
    number = 0
    for entry in entries:
        kind = entry.get("kind")
        if kind == "call":
            number += 1
            items.append({"kind": "call", "number": number, **_call(entry)})
        elif kind == "truncated":
            items.append({"kind": "truncated", **entry})
        elif kind != "session":
            items.append({"kind": "damaged", "line": entry.get("line", "?")})
    return items


def _call(entry: dict[str, Any]) -> dict[str, Any]:
    decision = entry.get("decision") or {}
    masked = decision.get("masked") or []
    summary = entry.get("request") or {}
    return {
        "e": entry,
        "decision": decision,
        "masked": masked,
        "inputs": summary.get("inputs") or [],
        "outputs_asked": summary.get("outputs") or [],
        "response": _response(entry.get("response"), masked),
    }


def _response(stored: dict[str, Any] | None, masked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The delivered response decoded: tensor tables for inference, protobuf text otherwise."""
    # Imported here, not at the top: the replay code pulls in numpy and rich, which the
    # gateway's admin app (it imports this module) should not pay for unless a page is shown.
    from google.protobuf import text_format

    from labelgate.oip.tensors import decode_outputs
    from labelgate.recording.entries import decode_message
    from labelgate.recording.replay import human_bytes

    if not stored:
        return None
    view: dict[str, Any] = {"type": stored.get("type"), "size": human_bytes(stored.get("bytes", 0))}
    message = decode_message(stored)
    if message is None:
        return {**view, "note": "type not known here, not decoded"}
    if message.DESCRIPTOR.full_name != "inference.ModelInferResponse":
        return {**view, "text": text_format.MessageToString(message, as_utf8=True)}
    try:
        tensors = decode_outputs(message)
    except LabelgateError as error:
        return {**view, "note": f"outputs do not decode ({error.reason})"}
    strategies: dict[str, set[str]] = {}
    for item in masked:
        if match := _TENSOR_OF_PATH.match(item.get("path", "")):
            strategies.setdefault(match.group(1), set()).add(item.get("strategy", "?"))
    groups: dict[int, list[Any]] = {}  # a table per element count: one column per tensor, a row per element
    for tensor in tensors:
        groups.setdefault(len(tensor.values), []).append(tensor)
    tables = []
    for count, members in groups.items():
        columns = [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": t.shape,
                "masked": sorted(strategies.get(t.name, ())),
            }
            for t in members
        ]
        rows = [[_cell(t.values[row], t.datatype) for t in members] for row in range(count)]
        tables.append({"columns": columns, "rows": rows})
    return {**view, "tables": tables}


def _cell(value: Any, datatype: str) -> str:
    """A delivered element as text: the CLI replay's rendering, but bytes that are not UTF-8 as hex."""
    from labelgate.recording.replay import _cell as replay_cell

    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + value.hex()
    return replay_cell(value, datatype)


def _session_store(request: Request) -> Any:
    store = getattr(request.app.state, "session_store", None)
    if store is None:
        raise NotFound("SESSIONS_NOT_RECORDED", "this server has no session recording store (recording: ...)")
    return store


@sessions_router.get("", response_class=HTMLResponse)
async def sessions_list(request: Request) -> Response:
    from labelgate.recording.replay import human_bytes

    allowed = _auditor(request, f"{COOKIE_PATH}/sessions")
    if isinstance(allowed, Response):
        return allowed
    person, token = allowed
    found = sorted(await _session_store(request).sessions(), key=lambda info: info.last, reverse=True)
    log.info("sessions listed", subject=person.id, count=len(found))
    rows = [
        {"info": info, "size": human_bytes(info.bytes), "href": quote(info.session_id, safe="")}
        for info in found
    ]
    return _page(
        request, "sessions.html", person=person, csrf=csrf_token(context(request), token), sessions=rows
    )


@sessions_router.get("/{session_id:path}", response_class=HTMLResponse)
async def session_page(request: Request, session_id: str) -> Response:
    if not session_id or len(session_id) > MAX_SESSION_ID:
        raise InvalidInput("SESSION_ID_INVALID", f"a session id is 1 to {MAX_SESSION_ID} characters")
    allowed = _auditor(request, f"{COOKIE_PATH}/sessions/{quote(session_id, safe='')}")
    if isinstance(allowed, Response):
        return allowed
    person, token = allowed
    entries = await _session_store(request).entries(session_id)
    if entries is None:
        raise NotFound("SESSION_NOT_FOUND", "no recorded session has that id")
    log.info("session viewed", subject=person.id, session=session_id)
    return _page(
        request,
        "session.html",
        person=person,
        csrf=csrf_token(context(request), token),
        session_id=session_id,
        items=timeline(entries),
    )


def mount_inbox(app: FastAPI) -> None:
    app.include_router(sessions_router)
    app.include_router(router)
    app.mount(f"{COOKIE_PATH}/static", StaticFiles(directory=str(HERE / "static")), name="inbox-static")
