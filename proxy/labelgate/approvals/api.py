"""The approvals REST API (FastAPI): list pending, show one, approve, deny with a reason.

Approvers send ``Authorization: Bearer <jwt>``, verified with the gateway's own JWT
configuration; the service checks group membership and separation of duties. Every
error is an RFC 9457 problem response (``application/problem+json``) with a stable
``reason``; no traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelgate.approvals.model import RESOLVED, ApprovalRequest, State
from labelgate.approvals.service import ApprovalService
from labelgate.auth import Authenticator, Subject
from labelgate.auth import reasons as auth_reasons
from labelgate.errors import LabelgateError, Unauthenticated
from labelgate.logs import get_logger
from labelgate.untrusted_text import cleaned

log = get_logger(__name__)
PROBLEM_TYPE = "application/problem+json"
APPROVAL_ID = r"^apr-[0-9a-f]{16}$"


@dataclasses.dataclass
class ApprovalsContext:
    """What the API and the inbox need, kept on ``app.state.approvals``.

    ``service`` is the approval service or, when the web app runs on an event loop of its own
    (the gateway's admin listener), a stand-in that runs each call on the service's loop
    (``labelgate.admin.bridge``). ``session_key`` signs the inbox's session cookies (which
    never hold the bearer token); ``secure`` makes them ``__Host-`` + ``Secure`` (HTTPS).
    """

    service: ApprovalService
    authenticator: Authenticator
    session_key: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    secure: bool = False
    session_max_seconds: int = 8 * 3600
    # OpenID Connect sign-in for the inbox (``admin.oidc``); None: approvers paste a token.
    oidc: Any = None
    # Where the provider sends approvers back; None: this listener as the browser reached it.
    oidc_redirect_url: str | None = None

    def identify(self, token: str) -> Subject:
        if self.authenticator.jwt is None:
            raise Unauthenticated(
                auth_reasons.AUTH_METHOD_NOT_ENABLED,
                "approvers sign in with a JWT, and auth.jwt is not configured",
            )
        return self.authenticator.authenticate([("authorization", f"Bearer {token}")], None)

    async def identify_off_loop(self, token: str) -> Subject:
        """``identify`` in a worker thread: signature checks stay off the event loop, and a
        verifier that wants an early key refresh finds no loop to start it on (it is the
        gateway's job, on the gateway's loop)."""
        return await asyncio.to_thread(self.identify, token)


def context(request: Request) -> ApprovalsContext:
    approvals: ApprovalsContext = request.app.state.approvals
    return approvals


# Where ``authenticate_first`` (the admin app's guard) leaves the subject it verified.
SUBJECT_STATE = "labelgate_subject"
API_PREFIX = "/api/v1/approvals"
_bearer = HTTPBearer(auto_error=False, description="A JWT the gateway accepts (auth.jwt)")


async def approver(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Subject:
    verified = getattr(request.state, SUBJECT_STATE, None)
    if isinstance(verified, Subject):
        return verified
    if credentials is None:
        raise Unauthenticated(auth_reasons.NO_CREDENTIALS, "send Authorization: Bearer <token>")
    return await context(request).identify_off_loop(credentials.credentials)


async def authenticate_request(ctx: ApprovalsContext, authorization: str | None) -> Subject:
    """The API's caller from an ``Authorization`` header, before anything of the body is read."""
    if not authorization:
        raise Unauthenticated(auth_reasons.NO_CREDENTIALS, "send Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(auth_reasons.NO_CREDENTIALS, "send Authorization: Bearer <token>")
    return await ctx.identify_off_loop(token.strip())


Approver = Annotated[Subject, Depends(approver)]
ApprovalIdPath = Annotated[str, Path(pattern=APPROVAL_ID, description="The approval id (apr-...)")]


# -- wire models (they make the published OpenAPI schema) ----------------------------------
class FieldOut(BaseModel):
    path: str
    labels: list[str]


class VoteOut(BaseModel):
    approver: str
    groups: list[str]
    verdict: Literal["approve", "deny"]
    reason: str
    at: datetime


class InputOut(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class QueryOut(BaseModel):
    """What the held call asked (no values) and how many rows it would release."""

    inputs: list[InputOut]
    requested_outputs: list[str] = Field(description="Outputs the caller named; empty: all")
    rows: int | None = Field(description="Rows asked for (first dimension of the inputs)")


class ApprovalOut(BaseModel):
    id: str
    state: State
    mode: Literal["hold", "async"]
    requester: str
    requester_groups: list[str]
    method: str
    model: str
    phase: str
    labels: list[str]
    fields: list[FieldOut]
    policy_reason: str
    justification: str
    approver_groups: list[str]
    min_approvals: int
    approvals: int = Field(description="Distinct people who approved so far")
    grant_ttl_seconds: int
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    resolution: str
    grant_id: str | None
    votes: list[VoteOut]
    link: str = Field(description="The request's page in the web inbox")
    query: QueryOut
    digest: str = Field(description="The request digest the grant is bound to (grant_scope query)")
    grant_scope: Literal["query", "model"] = Field(description="What a grant releases: query or model")
    single_use: bool = Field(description="The grant releases one call")
    row_budget: int | None = Field(
        None, description="The grant releases at most this many rows in total (none: no budget)"
    )


class ApprovalList(BaseModel):
    items: list[ApprovalOut]
    next: str | None = Field(None, description="Cursor of the next page (pass as ?cursor=); none: last page")


# Reasons are kept as the justification is: control characters (C0, C1) and line separators
# become a space, format characters (bidi overrides, zero-width ones) are dropped (text.cleaned).
_CLEANED = " Control and format characters are removed."


class ApproveIn(BaseModel):
    reason: str = Field("", max_length=1000, description="Why (recorded with the approval)." + _CLEANED)


class DenyIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000, description="Why (the caller sees it)." + _CLEANED)


class ProblemDetails(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    reason: str


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def approval_out(request: ApprovalRequest, link: str) -> ApprovalOut:
    data = request.to_json()
    return ApprovalOut(
        **{k: v for k, v in data.items() if k not in ("created_at", "expires_at", "resolved_at", "votes")},
        approvals=len({v.approver for v in request.votes if v.verdict == "approve"}),
        created_at=_time(request.created_at),
        expires_at=_time(request.expires_at),
        resolved_at=_time(request.resolved_at) if request.resolved_at is not None else None,
        votes=[VoteOut(**{**v.to_json(), "at": _time(v.at)}) for v in request.votes],
        link=link,
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDetails, "content": {PROBLEM_TYPE: {}}} for code in (400, 401, 403, 404, 409, 503)
}
# Every other error (405, 408, 413, 500) is a problem too. Declaring it also keeps FastAPI from
# documenting a 422 the API never sends: a request that fails validation is a 400 problem.
_ERRORS["default"] = {"model": ProblemDetails, "content": {PROBLEM_TYPE: {}}, "description": "A problem"}
router = APIRouter(prefix=API_PREFIX, tags=["approvals"], responses=_ERRORS)


@router.get(
    "",
    response_model=ApprovalList,
    summary="List approval requests you may see",
    operation_id="listApprovals",
)
async def list_approvals(
    request: Request,
    person: Approver,
    state: Annotated[Literal["pending", "resolved", "all"], Query(description="Which requests")] = "pending",
    limit: Annotated[int, Query(ge=1, le=500, description="Page size, newest first")] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="From a previous page's next")] = None,
) -> ApprovalList:
    states = {"pending": [State.PENDING], "resolved": sorted(RESOLVED), "all": list(State)}[state]
    ctx = context(request)
    page = await ctx.service.page(person, states, limit=limit, cursor=cursor)
    return ApprovalList(items=[approval_out(r, ctx.service.link(r.id)) for r in page.items], next=page.next)


@router.get(
    "/{approval_id}",
    response_model=ApprovalOut,
    summary="Show one approval request",
    operation_id="getApproval",
)
async def show_approval(request: Request, person: Approver, approval_id: ApprovalIdPath) -> ApprovalOut:
    service = context(request).service
    return approval_out(await service.show(person, approval_id), service.link(approval_id))


@router.post(
    "/{approval_id}/approve",
    response_model=ApprovalOut,
    summary="Approve (one vote)",
    operation_id="approveApproval",
)
async def approve(
    request: Request, person: Approver, approval_id: ApprovalIdPath, body: ApproveIn | None = None
) -> ApprovalOut:
    service = context(request).service
    result = await service.approve(person, approval_id, cleaned((body or ApproveIn()).reason))
    return approval_out(result, service.link(approval_id))


@router.post(
    "/{approval_id}/deny",
    response_model=ApprovalOut,
    summary="Deny, with a reason",
    operation_id="denyApproval",
)
async def deny(request: Request, person: Approver, approval_id: ApprovalIdPath, body: DenyIn) -> ApprovalOut:
    service = context(request).service
    return approval_out(
        await service.deny(person, approval_id, cleaned(body.reason)), service.link(approval_id)
    )


# -- problems ---------------------------------------------------------------------------------
def problem(
    status: int, title: str, detail: str, reason: str, headers: dict[str, str] | None = None
) -> Response:
    body = ProblemDetails(title=title, status=status, detail=detail, reason=reason).model_dump()
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


_TITLES = {
    400: "bad request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    408: "request timeout",
    409: "conflict",
    413: "content too large",
    500: "internal error",
    503: "unavailable",
}


def _wants_html(request: Request) -> bool:
    return request.url.path.startswith("/inbox")


def install_problem_handlers(app: FastAPI, render_html_error: Any = None) -> None:
    """Every error becomes a problem response (or, under /inbox, an error page)."""

    def respond(
        request: Request, status: int, detail: str, reason: str, headers: dict[str, str] | None = None
    ) -> Response:
        if status in (408, 413):  # a body left unread: close rather than drain it for keep-alive
            headers = {**(headers or {}), "Connection": "close"}
        if render_html_error is not None and _wants_html(request):
            page: Response = render_html_error(request, status, detail, reason)
            if status in (408, 413):
                page.headers["Connection"] = "close"
            return page
        return problem(status, _TITLES.get(status, "error"), detail, reason, headers)

    @app.exception_handler(LabelgateError)
    async def labelgate_error(request: Request, error: LabelgateError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None
        return respond(request, error.http_status, error.message, error.reason, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        # Where and what rule, never the offending value.
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return respond(request, 400, "; ".join(parts), "INVALID_REQUEST")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        reason = {
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            408: "BODY_TIMEOUT",
            413: "BODY_TOO_LARGE",
        }.get(error.status_code, "HTTP_ERROR")
        return respond(request, error.status_code, str(error.detail), reason)

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> Response:
        log.error("admin request failed", path=request.url.path, error_type=type(error).__name__)
        return respond(request, 500, "the server could not complete the request", "INTERNAL")
