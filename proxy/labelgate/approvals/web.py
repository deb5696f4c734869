"""The web inbox: server-rendered pages (Jinja2) where approvers approve or deny in one click.

Signing in: the approver pastes a bearer token (the same JWT the gateway accepts) once; it
is verified and kept in an HttpOnly, SameSite=Strict cookie scoped to ``/inbox`` that ends
when the token does. Any replica can verify it, so there is no server-side session.

CSRF: every form carries a token derived from the session (HMAC keyed by the bearer token,
so only someone holding the session can compute it); the sign-in form uses a double-submit
cookie. Forms are also refused when the browser says they came from another origin.

Recorded sessions (``/inbox/sessions``, ``/inbox/sessions/{id}``): the timeline of a
session, call by call, with the response exactly as delivered. They live under ``/inbox``
because that is where the session cookie is sent. Only signed-in members of
``approvals.admin_groups`` may see them (no admin group configured: nobody may); the store
is ``app.state.session_store`` (a ``labelgate.recording.SessionStore``), set by whoever
builds the app from ``settings.recording``; without one the pages say recording is off.
"""

from __future__ import annotations

import hashlib
import hmac
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
from labelgate.errors import InvalidInput, LabelgateError, NotFound, PermissionDenied, Unauthenticated
from labelgate.logs import get_logger

log = get_logger(__name__)
HERE = Path(__file__).parent
SESSION_COOKIE = "labelgate_session"
SIGNIN_COOKIE = "labelgate_signin"
COOKIE_PATH = "/inbox"
MAX_FORM_BYTES = 16 * 1024
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
_RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}


def by_sensitivity(labels: Any) -> list[str]:
    return sorted(labels, key=lambda label: (-_RANK.get(label, 99), label))


def top_label(labels: Any) -> str:
    return by_sensitivity(labels)[0] if labels else "internal"


def fields_by_sensitivity(fields: Any) -> list[Any]:
    return sorted(fields, key=lambda f: (-_RANK.get(top_label(f.labels), 99), f.path))


templates.env.filters["duration"] = duration
templates.env.filters["clock_time"] = clock_time
templates.env.filters["by_sensitivity"] = by_sensitivity
templates.env.filters["top_label"] = top_label
templates.env.filters["fields_by_sensitivity"] = fields_by_sensitivity


# -- sessions and CSRF ------------------------------------------------------------------------
def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"labelgate-inbox-csrf", hashlib.sha256).hexdigest()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _session(request: Request) -> tuple[Subject, str] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return context(request).identify(token), token
    except Unauthenticated:
        return None  # expired or revoked: sign in again


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidInput("FORM_EXPECTED", "send the form as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("FORM_TOO_LARGE", "the form is too large")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise PermissionDenied("CROSS_ORIGIN_FORM", "this form was sent from another site")


def _check_csrf(request: Request, form: dict[str, str], session_token: str) -> None:
    _same_origin(request)
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(session_token)):
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
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=COOKIE_PATH,
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
        csrf=csrf_token(session[1]) if session else "",
    )


# -- pages ------------------------------------------------------------------------------------
def _view(request: ApprovalRequest, person: Subject, ctx: ApprovalsContext, now: float) -> dict[str, Any]:
    approvals = [v for v in request.votes if v.verdict == "approve"]
    admins = ctx.service.admin_groups
    return {
        "r": request,
        "approvals": len({v.approver for v in approvals}),
        "mine": request.requester == person.id,
        "can_approve": rules.vote_refusal(person, request, "approve", admins, now) is None,
        "can_deny": rules.vote_refusal(person, request, "deny", admins, now) is None,
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
        csrf=csrf_token(token),
        flash=message,
        pending=[_view(r, person, ctx, now) for r in pending],
        recent=[_view(r, person, ctx, now) for r in recent],
    )


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await _form(request)
    _same_origin(request)
    next_url = _safe_next(form.get("next"))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        return _signin_page(request, next_url, "The sign-in form expired; please try again.", 403)
    token = form.get("token", "").strip().removeprefix("Bearer ").strip()
    try:
        person = context(request).identify(token)
    except LabelgateError as error:
        return _signin_page(request, next_url, f"That token was refused: {error.message}.", 401)
    exp = person.attributes.get("exp")
    max_age = max(1, int(exp - time.time())) if isinstance(exp, int | float) else 3600
    response = _redirect(next_url)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=COOKIE_PATH,
        max_age=max_age,
    )
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await _form(request)
    session = _session(request)
    if session is not None:
        _check_csrf(request, form, session[1])
    response = _redirect(f"{COOKIE_PATH}?flash=signed-out")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
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
        csrf=csrf_token(token),
        item=_view(found, person, ctx, time.time()),
    )


async def _vote(request: Request, approval_id: str, verdict: str) -> Response:
    form = await _form(request)
    session = _session(request)
    if session is None:
        raise Unauthenticated("SESSION_EXPIRED", "your session has ended: sign in again")
    person, token = session
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


# -- recorded sessions (admins and auditors only) ---------------------------------------------
def _auditor(request: Request, next_url: str) -> tuple[Subject, str] | Response:
    """The signed-in person if they may read recordings, the sign-in page if nobody is signed in."""
    session = _session(request)
    if session is None:
        return _signin_page(request, next_url)
    person, _ = session
    admins = context(request).service.admin_groups
    if not admins:
        raise PermissionDenied(
            "SESSIONS_NO_ADMIN_GROUP",
            "recorded sessions are shown only to approvals.admin_groups, and none is set",
        )
    if not set(person.groups) & set(admins):
        log.warning("session page refused", subject=person.id, reason="not in an admin group")
        raise PermissionDenied(
            "SESSIONS_ADMIN_ONLY", f"recorded sessions are shown only to members of {', '.join(admins)}"
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
    return _page(request, "sessions.html", person=person, csrf=csrf_token(token), sessions=rows)


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
        csrf=csrf_token(token),
        session_id=session_id,
        items=timeline(entries),
    )


def mount_inbox(app: FastAPI) -> None:
    app.include_router(sessions_router)
    app.include_router(router)
    app.mount(f"{COOKIE_PATH}/static", StaticFiles(directory=str(HERE / "static")), name="inbox-static")
