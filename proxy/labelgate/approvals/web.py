"""The web inbox: server-rendered pages (Jinja2) where approvers approve or deny in one click.

Signing in: the approver pastes a bearer token (the same JWT the gateway accepts) once; it
is verified, and the session cookie then holds a **derived session token**, never the
bearer token: the verified subject and an expiry (the token's, at most
``admin.session_max_seconds``; signed in with OpenID Connect, the ID token's, at most the
same), signed with HMAC-SHA256 under the session key (``ApprovalsContext.session_key``:
``admin.session_key[_file]``, shared by the replicas behind one inbox URL, else random per
process). The cookie is HttpOnly and SameSite=Strict;
over plain HTTP it is ``labelgate_session`` scoped to ``Path=/inbox``, and with HTTPS
(``admin.tls``, or an ``https://`` ``approvals.public_url`` behind a TLS proxy) it is
``__Host-labelgate_session`` with ``Secure`` and ``Path=/`` (the ``__Host-`` prefix demands
both; the API docs page is sandboxed into an opaque origin, so it still cannot use it).

CSRF: every form carries a token derived from the session (HMAC under the session key of
the cookie's value, so only someone holding the session can compute it); the sign-in form
uses a double-submit cookie. Forms are also refused when the browser says they came from
another origin. A vote or sign-out is checked against the session cookie before its body is
read; bodies are read with a bound (``MAX_FORM_BYTES``, 413 past it).

Signing out (a POST with the session's CSRF token) records, in the approval store every
gateway shares, that the subject's sessions issued at or before this one (its ``iat``, in
the signed cookie) are signed out, until the last of them could end: one row per subject,
however often it signs in and out. Every inbox route refuses such a session as it refuses an
expired one (``accept_session``, run before each of them), and a vote asks again in its own
transaction: a copy of the cookie taken before the sign-out (a shared machine, a proxy log)
no longer shows or grants anything, on any gateway; a session signed in later is not
touched. A cookie from before ``iat`` counts as issued at 0 (ended by any sign-out of its
subject). A store that cannot be read accepts no session (503).

Recorded sessions (``/inbox/sessions``, ``/inbox/sessions/{id}``) are
``labelgate.recording.web``, mounted here with the inbox's sign-in and layout: only
signed-in members of the viewer groups (``approvals.viewer_groups``, formerly
``admin_groups``) reach them (none configured: nobody may), and each recorded response is
shown as the policy's replay decision for that viewer allows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from labelgate.approvals import reasons, rules, signed
from labelgate.approvals.api import APPROVAL_ID, ApprovalsContext, context
from labelgate.approvals.model import RESOLVED, ApprovalRequest, State
from labelgate.approvals.oidc import CALLBACK_PATH as OIDC_CALLBACK
from labelgate.approvals.oidc import PENDING_SECONDS, OidcSignin, seal, unseal
from labelgate.auth import Subject
from labelgate.auth.subject import requester_ids
from labelgate.classify.labels import rank
from labelgate.digits import whole_number
from labelgate.errors import (
    InvalidInput,
    LabelgateError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from labelgate.expiry import earliest_expiry
from labelgate.logs import get_logger
from labelgate.recording.web import InboxHooks, sessions_router
from labelgate.untrusted_text import cleaned

log = get_logger(__name__)
HERE = Path(__file__).parent
SESSION_COOKIE = "labelgate_session"
SIGNIN_COOKIE = "labelgate_signin"
# With HTTPS: the browser accepts these only with Secure, Path=/ and no Domain.
SECURE_SESSION_COOKIE = "__Host-labelgate_session"
SECURE_SIGNIN_COOKIE = "__Host-labelgate_signin"
OIDC_COOKIE = "labelgate_oidc"
SECURE_OIDC_COOKIE = "__Host-labelgate_oidc"
COOKIE_PATH = "/inbox"
MAX_FORM_BYTES = 16 * 1024
MAX_COOKIE_BYTES = 3800
SESSION_FORMAT = "v1"
RECENT_LIMIT = 15
# Pending requests on one inbox page (``?limit=`` may ask for 1 to MAX_PAGE_SIZE).
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# How often an open inbox page asks whether its pending list changed (``/inbox/live``).
POLL_MILLISECONDS = 2000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; "
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


def by_sensitivity(labels: Any) -> list[str]:
    return sorted(labels, key=lambda label: (-rank(label), label))


def top_label(labels: Any) -> str:
    return by_sensitivity(labels)[0] if labels else "internal"


def fields_by_sensitivity(fields: Any) -> list[Any]:
    return sorted(fields, key=lambda f: (-rank(top_label(f.labels)), f.path))


templates.env.filters["duration"] = duration
templates.env.filters["clock_time"] = clock_time
templates.env.filters["by_sensitivity"] = by_sensitivity
templates.env.filters["top_label"] = top_label
templates.env.filters["fields_by_sensitivity"] = fields_by_sensitivity


# -- sessions and CSRF ------------------------------------------------------------------------
def issue_session(ctx: ApprovalsContext, person: Subject, expires_at: float) -> str:
    """A session token for ``person``: who they are, since when (``iat``: what a sign-out
    compares) and until when, signed. Not the bearer token. ``sid`` is random only so that no
    two sessions share a cookie (nor its CSRF tokens)."""
    claims = {
        "sub": person.to_policy(),
        "iat": time.time(),
        "exp": int(expires_at),
        "sid": secrets.token_urlsafe(12),
    }
    return signed.sign(ctx.session_key, b"session", SESSION_FORMAT, claims)


def session_until(ctx: ApprovalsContext, person: Subject, now: float) -> float:
    """When a session for ``person`` ends: ``admin.session_max_seconds`` from now, or when the
    credential they signed in with expires (a pasted bearer token's ``exp``, the ID token's),
    if sooner. The session carries the groups that credential named and is never checked
    against the provider again, so it must not vouch for them longer than the credential did."""
    until = now + ctx.session_max_seconds
    expires = earliest_expiry(person.attributes)  # an exp that cannot be read has passed
    if expires is not None and expires < until:
        until = now if expires <= now else float(expires)
    return until


@dataclasses.dataclass(frozen=True)
class InboxSession:
    """An open session cookie: who, when it was issued (what a sign-out compares; 0 for a
    cookie from before ``iat``), its end, and the cookie's value (CSRF tokens derive from it)."""

    person: Subject
    issued_at: float
    ends_at: int
    value: str


def read_session(ctx: ApprovalsContext, value: str | None, now: float | None = None) -> InboxSession | None:
    """A session token this server (or a replica with the same key) issued and that has not
    expired; None for anything else. Whether it was signed out is the store's
    (``accept_session``)."""
    claims = signed.verify(ctx.session_key, b"session", SESSION_FORMAT, value, MAX_COOKIE_BYTES)
    if claims is None or not isinstance(claims.get("exp"), int) or value is None:
        return None
    # Issued before ``iat`` was: as if at 0, so any sign-out of its subject ends it.
    issued_at = claims.get("iat", 0.0)
    if isinstance(issued_at, bool) or not isinstance(issued_at, int | float) or not math.isfinite(issued_at):
        return None
    try:
        if claims["exp"] <= (time.time() if now is None else now):
            return None
        sub = claims["sub"]
        person = Subject(
            id=sub["id"], groups=tuple(sub["groups"]), auth=sub["auth"], attributes=sub["attributes"]
        )
    except (ValueError, KeyError, TypeError):
        return None
    return InboxSession(person, float(issued_at), claims["exp"], value)


def open_session(ctx: ApprovalsContext, value: str | None, now: float | None = None) -> Subject | None:
    """The subject of ``read_session``'s session; None for anything else."""
    session = read_session(ctx, value, now)
    return None if session is None else session.person


def csrf_token(ctx: ApprovalsContext, session_value: str) -> str:
    return signed.mac(ctx.session_key, b"labelgate-inbox-csrf", session_value).hex()


def _secure(request: Request) -> bool:
    return context(request).secure


def _cookie_names(request: Request) -> tuple[str, str, str]:
    """(session cookie, sign-in cookie, cookie path) for this server."""
    if _secure(request):
        return SECURE_SESSION_COOKIE, SECURE_SIGNIN_COOKIE, "/"
    return SESSION_COOKIE, SIGNIN_COOKIE, COOKIE_PATH


# Where ``accept_session`` leaves the session it accepted for the rest of the request.
_ACCEPTED = "labelgate_inbox_session"


async def accept_session(request: Request) -> None:
    """Before every inbox route (``mount_inbox``): the session cookie is accepted when it is
    signed, unexpired and not signed out (it, or a later session of its subject), as the shared
    store says. Once per request, so the synchronous readers (``_session``: the error page,
    the session pages' hook) see the same answer. A store that cannot be read raises
    ``ApprovalsUnavailable`` (503): no session is accepted unchecked."""
    ctx = context(request)
    session = read_session(ctx, request.cookies.get(_cookie_names(request)[0]))
    if session is not None and not await ctx.service.session_signed_out(session.person.id, session.issued_at):
        setattr(request.state, _ACCEPTED, session)


def _accepted(request: Request) -> InboxSession | None:
    """The session ``accept_session`` accepted; None when it did not (or did not run)."""
    session = getattr(request.state, _ACCEPTED, None)
    return session if isinstance(session, InboxSession) else None


def _session(request: Request) -> tuple[Subject, str] | None:
    session = _accepted(request)
    return None if session is None else (session.person, session.value)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form, read with a bound: past ``MAX_FORM_BYTES`` it is refused unread."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidInput(reasons.FORM_EXPECTED, "send the form as application/x-www-form-urlencoded")
    declared = request.headers.get("content-length", "")
    length = whole_number(declared)
    if length is not None and length > MAX_FORM_BYTES:
        raise ResourceExhausted(reasons.FORM_TOO_LARGE, f"the form is larger than {MAX_FORM_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ResourceExhausted(reasons.FORM_TOO_LARGE, f"the form is larger than {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    fields = parse_qs(b"".join(chunks).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise PermissionDenied(reasons.CROSS_ORIGIN_FORM, "this form was sent from another site")


def _check_csrf(request: Request, form: dict[str, str], session_token: str) -> None:
    _same_origin(request)
    if not signed.same(form.get("csrf", ""), csrf_token(context(request), session_token)):
        raise PermissionDenied(
            reasons.CSRF_TOKEN_INVALID, "the form's CSRF token is missing or wrong: reload the page"
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
    if context(request).oidc is not None:  # the provider's login, never a pasted token
        oidc_url = f"{COOKIE_PATH}/oidc/login?next={quote(_safe_next(next_url), safe='')}"
        return _page(request, "signin.html", status, next=next_url, oidc_url=oidc_url, error=error)
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
        "mine": person.id in requester_ids(request.requester),
        "can_approve": rules.vote_refusal(person, request, "approve", viewers, now) is None,
        "can_deny": rules.vote_refusal(person, request, "deny", viewers, now) is None,
        "voted": any(v.approver == person.id for v in request.votes),
        "age": now - request.created_at,
        "left": request.expires_at - now,
    }


def _page_query(cursor: str, limit: int) -> str:
    query = {"cursor": cursor} if cursor else {}
    if limit != PAGE_SIZE:
        query["limit"] = str(limit)
    return urlencode(query)


async def _pending_page(
    request: Request, person: Subject, cursor: str, limit: int
) -> tuple[list[dict[str, Any]], str | None, str]:
    """One page of the pending requests the person may see, the next page's cursor, and a
    signature that changes when the page would.

    Within the page the requests are in the order they arrived, oldest first, which is the
    order ``static/inbox.js`` keeps: it adds a new request at the end and never moves a card
    that is shown. Not by expiry: a requester picks their deadline, and an order they pick
    would move their card into the place of one the approver is about to approve."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(reasons.LIMIT_INVALID, f"limit must be 1 to {MAX_PAGE_SIZE}")
    ctx = context(request)
    page = await ctx.service.page(person, [State.PENDING], limit=limit, cursor=cursor or None)
    now = time.time()
    pending = sorted(page.items, key=lambda r: (r.created_at, r.id))
    signature = hashlib.sha256(
        json.dumps([(r.id, r.state.value, len(r.votes)) for r in pending]).encode()
    ).hexdigest()[:32]
    return [_view(r, person, ctx, now) for r in pending], page.next, signature


@router.get("", response_class=HTMLResponse)
async def inbox(
    request: Request, flash: str = "", id: str = "", cursor: str = "", limit: int = PAGE_SIZE
) -> Response:
    session = _session(request)
    if session is None:
        return _signin_page(request, COOKIE_PATH)
    person, token = session
    ctx = context(request)
    pending, next_cursor, signature = await _pending_page(request, person, cursor, limit)
    now = time.time()
    recent = (
        []
        if cursor
        else (await ctx.service.page(person, sorted(RESOLVED), limit=RECENT_LIMIT, cursor=None)).items
    )
    message = _FLASH.get(flash, "").format(id=id if len(id) < 40 else "")
    return _page(
        request,
        "inbox.html",
        person=person,
        csrf=csrf_token(context(request), token),
        flash=message,
        pending=pending,
        recent=[_view(r, person, ctx, now) for r in recent],
        signature=signature,
        live_url=f"{COOKIE_PATH}/live?{_page_query(cursor, limit)}",
        poll_ms=POLL_MILLISECONDS,
        next_url=f"{COOKIE_PATH}?{_page_query(next_cursor, limit)}" if next_cursor else "",
    )


@router.get("/live")
async def live(request: Request, cursor: str = "", limit: int = PAGE_SIZE) -> Response:
    """What the inbox page polls (``static/inbox.js``): the pending list's signature and, so
    the page needs no second request, its HTML (rendered here with the page's own escaping)."""
    session = _session(request)
    if session is None:
        raise Unauthenticated(reasons.SESSION_EXPIRED, "your session has ended: sign in again")
    person, token = session
    pending, _, signature = await _pending_page(request, person, cursor, limit)
    html = templates.env.get_template("_pending.html").render(
        pending=pending, csrf=csrf_token(context(request), token), now=time.time()
    )
    response = JSONResponse({"signature": signature, "count": len(pending), "html": html})
    response.headers.update(SECURITY_HEADERS)
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    if context(request).oidc is not None:
        raise PermissionDenied(
            reasons.TOKEN_SIGNIN_DISABLED,
            "this inbox signs approvers in with OpenID Connect, not pasted tokens",
        )
    _, signin_cookie, path = _cookie_names(request)
    # The sign-in form's own cookie first: a post without it is refused before its body is read.
    expected = request.cookies.get(signin_cookie, "")
    if not expected:
        return _signin_page(request, COOKIE_PATH, "The sign-in form expired; please try again.", 403)
    form = await _form(request)
    _same_origin(request)
    next_url = _safe_next(form.get("next"))
    if not signed.same(form.get("csrf", ""), expected):
        return _signin_page(request, next_url, "The sign-in form expired; please try again.", 403)
    token = form.get("token", "").strip().removeprefix("Bearer ").strip()
    ctx = context(request)
    try:
        person = await ctx.identify_off_loop(token)
    except LabelgateError as error:
        return _signin_page(request, next_url, f"That token was refused: {error.message}.", 401)
    now = time.time()
    until = session_until(ctx, person, now)
    value = issue_session(ctx, person, until)
    if len(value) > MAX_COOKIE_BYTES:
        return _signin_page(
            request, next_url, "That token names too many groups to keep in a session cookie.", 400
        )
    response = _redirect(next_url)
    _start_session(request, response, value, until - now)
    response.delete_cookie(
        signin_cookie, path=path, secure=_secure(request), httponly=True, samesite="strict"
    )
    log.info("inbox sign-in", subject=person.id, until=int(until))
    return response


def _start_session(request: Request, response: Response, value: str, seconds: float) -> None:
    session_cookie, _, path = _cookie_names(request)
    response.set_cookie(
        session_cookie,
        value,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=path,
        max_age=max(1, int(seconds)),
    )


# -- OpenID Connect sign-in (admin.oidc) ------------------------------------------------------
def _oidc_cookie(request: Request) -> tuple[str, str]:
    _, _, path = _cookie_names(request)
    return (SECURE_OIDC_COOKIE if _secure(request) else OIDC_COOKIE), path


def _oidc(request: Request) -> OidcSignin:
    signin = context(request).oidc
    if signin is None:
        raise NotFound(reasons.OIDC_NOT_CONFIGURED, "this inbox has no OpenID Connect sign-in (admin.oidc)")
    return signin  # type: ignore[no-any-return]


@router.get("/oidc/login")
async def oidc_login(request: Request, next: str = COOKIE_PATH) -> Response:
    signin = _oidc(request)
    ctx = context(request)
    redirect_uri = ctx.oidc_redirect_url or f"{request.url.scheme}://{request.url.netloc}{OIDC_CALLBACK}"
    url, pending = await signin.begin(redirect_uri, _safe_next(next))
    response = _redirect(url)
    name, path = _oidc_cookie(request)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation that must carry it.
    response.set_cookie(
        name,
        seal(ctx.session_key, pending),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path=path,
        max_age=PENDING_SECONDS,
    )
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    signin = _oidc(request)
    ctx = context(request)
    name, path = _oidc_cookie(request)
    pending = unseal(ctx.session_key, request.cookies.get(name))
    params = {key: value for key, value in request.query_params.items() if len(value) <= 4096}
    person = await signin.finish(pending, params)
    assert pending is not None  # finish refuses a missing pending login
    now = time.time()
    until = session_until(ctx, person, now)
    if until <= now:  # within the provider's clock leeway, but already over
        raise Unauthenticated(
            reasons.OIDC_ID_TOKEN_INVALID,
            "the identity provider's ID token has already expired: sign in again",
        )
    value = issue_session(ctx, person, until)
    if len(value) > MAX_COOKIE_BYTES:
        raise InvalidInput(
            reasons.SESSION_TOO_LARGE, "you belong to too many groups to keep in a session cookie"
        )
    # A page, not a redirect: the browser withholds SameSite=Strict cookies on a redirect chain
    # that began at another site, so the inbox would not see the session just set.
    response = _page(request, "signed_in.html", next=pending.next_url, person=None)
    _start_session(request, response, value, until - now)
    response.delete_cookie(name, path=path, secure=_secure(request), httponly=True, samesite="lax")
    log.info("inbox sign-in", subject=person.id, via="oidc", until=int(until))
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = _accepted(request)
    if session is not None:  # checked first: without a session the body is never read
        _check_csrf(request, await _form(request), session.value)
        # This session and the subject's older ones, until the last of them could end: none
        # outlives its issue plus ``admin.session_max_seconds``, and each was issued by this
        # one's ``iat`` (a cookie from before ``iat``: by now). Past it they are refused as
        # expired anyway.
        ctx = context(request)
        latest_issue = session.issued_at or time.time()
        until = max(latest_issue + ctx.session_max_seconds, session.ends_at)
        await ctx.service.sign_out_session(session.person.id, session.issued_at, until)
        log.info("inbox sign-out", subject=session.person.id, until=int(until))
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
    if not _APPROVAL_ID.fullmatch(approval_id):
        # Not one the service ever made (a NUL would reach the store's SQL as a store failure).
        raise NotFound(reasons.APPROVAL_NOT_FOUND, "no approval by that id that you may see")
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
    session = _accepted(request)  # before the body is read
    if session is None:
        raise Unauthenticated(reasons.SESSION_EXPIRED, "your session has ended: sign in again")
    person, token = session.person, session.value
    form = await _form(request)
    _check_csrf(request, form, token)
    if not _APPROVAL_ID.fullmatch(approval_id):
        raise InvalidInput(reasons.APPROVAL_ID_INVALID, "that is not an approval id")
    service = context(request).service
    reason = cleaned(form.get("reason", ""))[:1000]  # as the REST API keeps a reason
    if verdict == "approve":
        # The session is asked again in the vote's transaction: the form may arrive slowly.
        result = await service.approve(person, approval_id, reason, session_issued_at=session.issued_at)
        flash = "granted" if result.state is State.GRANTED else "approved"
    else:
        await service.deny(
            person,
            approval_id,
            reason or "denied in the web inbox (no reason given)",
            session_issued_at=session.issued_at,
        )
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
            reasons.SESSIONS_NO_ADMIN_GROUP,
            "recorded sessions are shown only to approvals.viewer_groups, and none is set",
        )
    if not set(person.groups) & set(viewers):
        log.warning("session page refused", subject=person.id, reason="not in a viewer group")
        raise PermissionDenied(
            reasons.SESSIONS_ADMIN_ONLY,
            f"recorded sessions are shown only to members of {', '.join(viewers)}",
        )
    return session


def _session_page(request: Request, name: str, person: Subject, token: str, **values: Any) -> Response:
    """A session page (``labelgate.recording.web``) in the inbox's layout."""
    return _page(request, name, person=person, csrf=csrf_token(context(request), token), **values)


def mount_inbox(app: FastAPI) -> None:
    # The session pages first: ``/inbox/{approval_id}`` would otherwise take ``/inbox/sessions``.
    # Every route checks the session cookie against the signed-out sessions before it runs.
    checked = [Depends(accept_session)]
    app.include_router(
        sessions_router(InboxHooks(viewer=_auditor, render=_session_page)), dependencies=checked
    )
    app.include_router(router, dependencies=checked)
    app.mount(f"{COOKIE_PATH}/static", StaticFiles(directory=str(HERE / "static")), name="inbox-static")
