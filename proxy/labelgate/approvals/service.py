"""The approval service: requests, votes, grants, expiry, and waking the calls that wait.

One instance per process (a gateway, or ``labelgate approvals-server``), all sharing one
store. Gateway side: ``open`` a request, ``wait`` for its outcome, ``find_grant`` for repeat
calls. Approver side: ``visible_to``, ``show``, ``approve``, ``deny``. A sweeper expires pending
requests on time and drops resolved ones after the retention period; when a gateway
starts, the held requests its previous run left behind are marked ``abandoned``.

A held call keeps its request in this process's memory until it is decided (about 2.5 times
its size, with what the gateway made of it), so held calls are bounded by the bytes of their
requests, in all and per requester (``max_held_bytes``, ``max_held_bytes_per_requester``), as
well as by the count of open requests: past a bound a call is refused with
RESOURCE_EXHAUSTED (``APPROVAL_HELD_BYTES_EXHAUSTED``) and can ask in async mode, which holds
nothing.

Every change goes through ``_announce``: one structured event (the audit hook) and the
webhook notifications.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from labelgate.approvals import events, reasons, rules
from labelgate.approvals import repository as repo
from labelgate.approvals.db import WAKE_ALL, Database, SqliteDatabase, Tx
from labelgate.approvals.errors import ApprovalsUnavailable
from labelgate.approvals.model import (
    RESOLVED,
    ApprovalRequest,
    Binding,
    FieldAtStake,
    Grant,
    Mode,
    Query,
    Requirement,
    State,
    Vote,
)
from labelgate.approvals.notify import WebhookNotifier
from labelgate.auth import Subject
from labelgate.config import ApprovalSettings
from labelgate.errors import InvalidInput, LabelgateError, NotFound, ResourceExhausted, Unauthenticated
from labelgate.logs import get_logger

log = get_logger(__name__)
TRANSITIONS = Counter("labelgate_approval_requests_total", "Approval requests by state reached", ["state"])
HELD = Gauge("labelgate_approval_held_calls", "Calls this process holds for an approval")
HELD_BYTES = Gauge(
    "labelgate_approval_held_bytes", "Bytes of the requests of the calls this process holds for an approval"
)
REFUSED = Counter(
    "labelgate_approval_requests_refused_total", "Approval requests refused before they opened", ["reason"]
)
# Waiters re-check the store at least this often when the store cannot wake them from
# another process (SQLite shared with a separate approvals-server) ...
LOCAL_RECHECK_SECONDS = 0.5
# ... and, as a safety net only, when it can (PostgreSQL NOTIFY is the main path).
NOTIFY_RECHECK_SECONDS = 15.0
PURGE_EVERY_SECONDS = 60.0
# A sign-out is remembered this long past the end of the sessions it ended: a gateway whose
# clock runs behind the sweeping one's still takes their cookies as unexpired until its own
# clock gets there. An hour: the clocks of gateways sharing a store must agree within it
# (docs/APPROVALS.md).
SIGNED_OUT_KEPT_PAST_END_SECONDS = 3600.0
# One page of an inbox or of the API's list (``limit`` may ask for fewer, never more).
LIST_LIMIT = 500
DEFAULT_PAGE = 100
# Open (pending) requests one requester may have at once, unless configured otherwise.
MAX_OPEN_PER_REQUESTER = 100
TOO_MANY_OPEN = reasons.APPROVAL_REQUESTS_EXHAUSTED
# Bytes of the requests of the calls held at once, in all and per requester, unless configured.
MAX_HELD_BYTES = 256 * 1024 * 1024
MAX_HELD_BYTES_PER_REQUESTER = 64 * 1024 * 1024
TOO_MANY_HELD_BYTES = reasons.APPROVAL_HELD_BYTES_EXHAUSTED


GRANT_SPENT = "GRANT_SPENT"
# How a caller asks without being held (the stage's MODE_HEADER; the stage imports this module).
ASYNC_HINT = "x-labelgate-approval: async"


class _NotReleased(Exception):
    """Rolls back every grant use of a call when one of its grants cannot release it."""

    def __init__(self, grant: Grant, refusal: str) -> None:
        super().__init__(refusal)
        self.grant = grant
        self.refusal = refusal


@dataclasses.dataclass(frozen=True)
class GrantUse:
    """What using a grant for one call did: released or not (``refusal``: GRANT_SPENT,
    GRANT_EXPIRED or APPROVAL_BUDGET_EXHAUSTED), and for a budgeted grant charged now, the
    rows charged and the grant as it stands after the charge."""

    released: bool
    refusal: str | None = None
    rows_charged: int | None = None
    grant: Grant | None = None


@dataclasses.dataclass(frozen=True)
class GrantsUse:
    """What using all the grants that release one call did (a call held for several
    requirements has one per round): every one used (``uses``, in the order given), or none
    (``refused``: the grant that could not release the call, ``refusal``: why)."""

    uses: tuple[GrantUse, ...] = ()
    refused: Grant | None = None
    refusal: str | None = None

    @property
    def released(self) -> bool:
        return self.refused is None


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


# What ``new_id("apr")`` makes: the only approval ids there are.
APPROVAL_ID = re.compile(r"apr-[0-9a-f]{16}")


@dataclasses.dataclass(frozen=True)
class Draft:
    """What the gateway knows about a held call when it asks for approval."""

    binding: Binding
    requester_groups: tuple[str, ...]
    phase: str
    fields: tuple[FieldAtStake, ...]
    requirement: Requirement
    justification: str
    mode: Mode
    expires_at: float
    call_request_id: str = ""
    session_id: str = ""
    query: Query = dataclasses.field(default_factory=Query)
    # What a held call keeps in memory while it waits: its request's size in bytes.
    held_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of requests, newest first; ``next`` is the cursor of the following page
    (None on the last one)."""

    items: list[ApprovalRequest]
    next: str | None = None


def encode_cursor(request: ApprovalRequest) -> str:
    raw = f"{request.created_at!r}|{request.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> repo.PageCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created, _, request_id = raw.partition("|")
        cursor = repo.PageCursor(float(created), request_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(reasons.CURSOR_INVALID, "the page cursor is not one this server gave") from None
    # Only what encode_cursor writes: an approval id and a finite time (a NUL, say, would
    # reach the store's SQL and read as a store failure, not as the caller's mistake).
    if not APPROVAL_ID.fullmatch(request_id) or not math.isfinite(cursor.created_at):
        raise InvalidInput(reasons.CURSOR_INVALID, "the page cursor is not one this server gave")
    return cursor


def open_database(settings: ApprovalSettings) -> Database:
    if settings.store == "postgres":
        # Imported here: psycopg is needed only by gateways that share a PostgreSQL store.
        from labelgate.approvals.postgres import PostgresDatabase

        assert settings.postgres_dsn is not None  # the config refuses postgres without a DSN
        return PostgresDatabase(settings.postgres_dsn.get_secret_value())
    return SqliteDatabase(settings.sqlite_file)


def _refused(
    request: ApprovalRequest, draft: Draft, reason: str, message: str, **details: Any
) -> ResourceExhausted:
    """A request not opened (a bound reached): counted, joined to the audit trail, and the
    caller's error."""
    REFUSED.labels(reason=reason).inc()
    events.record(
        "approval.refused",
        None,
        requester=request.requester,
        method=request.binding.method,
        model=request.binding.model,
        refusal=reason,
        request_id=draft.call_request_id,
        **details,
    )
    return ResourceExhausted(reason, message)


class ApprovalService:
    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        link_base: str,
        retention_seconds: float = 7 * 86400,
        sweep_interval_seconds: float = 1.0,
        admin_groups: Iterable[str] = (),
        notifier: WebhookNotifier | None = None,
        max_open_per_requester: int = MAX_OPEN_PER_REQUESTER,
        max_held_bytes: int = MAX_HELD_BYTES,
        max_held_bytes_per_requester: int = MAX_HELD_BYTES_PER_REQUESTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.link_base = link_base.rstrip("/")
        self.retention_seconds = retention_seconds
        self.sweep_interval_seconds = sweep_interval_seconds
        self.admin_groups = tuple(admin_groups)
        self.notifier = notifier
        self.max_open_per_requester = max_open_per_requester
        self.max_held_bytes = max_held_bytes
        self.max_held_bytes_per_requester = max_held_bytes_per_requester
        self.clock = clock
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._held: set[str] = set()
        # Bytes held (this process's memory): by request id (with its requester), by requester.
        self._held_bytes: dict[str, tuple[str, int]] = {}
        self._held_bytes_of: dict[str, int] = {}
        self._held_bytes_total = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._started_at = 0.0

    @classmethod
    def from_settings(cls, settings: ApprovalSettings, *, node_id: str, link_base: str) -> ApprovalService:
        return cls(
            open_database(settings),
            node_id=settings.node_id or node_id,
            link_base=settings.public_url or link_base,
            retention_seconds=settings.retention_seconds,
            sweep_interval_seconds=settings.sweep_interval_seconds,
            admin_groups=settings.admin_groups,
            notifier=WebhookNotifier(settings.webhooks) if settings.webhooks else None,
            max_open_per_requester=settings.max_open_per_requester,
            max_held_bytes=settings.max_held_bytes,
            max_held_bytes_per_requester=settings.max_held_bytes_per_requester,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, *, sweep: bool = True, abandon_previous: bool = True) -> None:
        self._started_at = self.clock()
        await self.db.start()
        await self.db.migrate()  # versioned schema: labelgate/migrations/approvals
        self.db.on_change(self._wake)
        if abandon_previous:
            await self._abandon_previous_run()
        if sweep:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for request_id in sorted(self._held):
            with contextlib.suppress(LabelgateError):
                await self.abandon(request_id, "the gateway holding the call shut down")
        if self.notifier is not None:
            await self.notifier.close()
        await self.db.close()

    async def healthy(self) -> bool:
        try:
            async with self.db.transaction() as tx:
                await tx.fetch("SELECT 1 AS ok")
        except LabelgateError:
            return False
        return True

    def link(self, request_id: str) -> str:
        return f"{self.link_base}/inbox/{request_id}"

    # -- gateway side ---------------------------------------------------------------------
    async def open(self, draft: Draft) -> ApprovalRequest:
        request = ApprovalRequest(
            id=new_id("apr"),
            state=State.PENDING,
            mode=draft.mode,
            binding=draft.binding,
            requester_groups=draft.requester_groups,
            phase=draft.phase,
            fields=draft.fields,
            requirement=draft.requirement,
            justification=draft.justification,
            created_at=self.clock(),
            expires_at=draft.expires_at,
            node_id=self.node_id,
            call_request_id=draft.call_request_id,
            session_id=draft.session_id,
            query=draft.query,
        )
        if draft.mode == "hold":
            # Taken before the store is awaited, so calls arriving together cannot all fit.
            self._take_held_bytes(request, draft)
        try:
            async with self.db.transaction() as tx:
                await repo.lock_requester(tx, request.requester)
                open_now = await repo.open_count(tx, request.requester)
                if open_now >= self.max_open_per_requester:
                    refused = True
                else:
                    refused = False
                    await repo.insert_request(tx, request)
        except BaseException:
            self._release_held_bytes(request.id)
            raise
        if refused:
            self._release_held_bytes(request.id)
            raise _refused(
                request,
                draft,
                TOO_MANY_OPEN,
                f"you have {open_now} approval requests open (at most {self.max_open_per_requester}): "
                "wait for some to be decided or to expire before asking again",
                open_requests=open_now,
            )
        if draft.mode == "hold":
            self._held.add(request.id)
            HELD.inc()
        self._announce("approval.requested", request, link=self.link(request.id))
        return request

    async def wait(self, request_id: str, until: float) -> ApprovalRequest:
        """Until the request is resolved; at ``until`` it expires (unless a grant won the race)."""
        event = asyncio.Event()
        self._waiters.setdefault(request_id, set()).add(event)
        recheck = NOTIFY_RECHECK_SECONDS if self.db.wakes_other_processes else LOCAL_RECHECK_SECONDS
        try:
            while True:
                event.clear()  # before reading: a change after the read still wakes us
                request = await self.get(request_id)
                if request is None:
                    raise ApprovalsUnavailable(
                        reasons.APPROVAL_VANISHED, f"approval {request_id} disappeared"
                    )
                if request.state in RESOLVED:
                    return request
                left = until - self.clock()
                if left <= 0:
                    await self.expire(request_id, "no decision before the call's time ran out")
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, recheck))
        finally:
            waiters = self._waiters.get(request_id, set())
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(request_id, None)
            if request_id in self._held:
                self._held.discard(request_id)
                HELD.dec()
            self._release_held_bytes(request_id)

    def _take_held_bytes(self, request: ApprovalRequest, draft: Draft) -> None:
        """Count a held call's request against the bounds, or refuse it (nothing opened)."""
        size, requester = draft.held_bytes, request.requester
        total = self._held_bytes_total
        mine = self._held_bytes_of.get(requester, 0)
        if size + total > self.max_held_bytes:
            why = (
                f"the calls held for approval in this gateway already keep {total} bytes of requests "
                f"(at most {self.max_held_bytes} with this call's {size})"
            )
        elif size + mine > self.max_held_bytes_per_requester:
            why = (
                f"your calls held for approval already keep {mine} bytes of requests "
                f"(at most {self.max_held_bytes_per_requester} with this call's {size})"
            )
        else:
            self._held_bytes[request.id] = (requester, size)
            self._held_bytes_of[requester] = mine + size
            self._held_bytes_total += size
            HELD_BYTES.inc(size)
            return
        raise _refused(
            request,
            draft,
            TOO_MANY_HELD_BYTES,
            f"{why}: call again later, or send {ASYNC_HINT}, which holds nothing while approvers decide",
            held_bytes=size,
        )

    def _release_held_bytes(self, request_id: str) -> None:
        taken = self._held_bytes.pop(request_id, None)
        if taken is None:
            return
        requester, size = taken
        left = self._held_bytes_of[requester] - size
        if left:
            self._held_bytes_of[requester] = left
        else:
            del self._held_bytes_of[requester]
        self._held_bytes_total -= size
        HELD_BYTES.dec(size)

    async def expire(self, request_id: str, why: str) -> None:
        await self._resolve(request_id, State.EXPIRED, why)

    async def abandon(self, request_id: str, why: str) -> None:
        await self._resolve(request_id, State.ABANDONED, why)

    async def get(self, request_id: str) -> ApprovalRequest | None:
        async with self.db.transaction() as tx:
            return await repo.get_request(tx, request_id)

    async def get_grant(self, grant_id: str) -> Grant | None:
        async with self.db.transaction() as tx:
            return await repo.get_grant(tx, grant_id)

    async def find_grant(
        self, binding: Binding, requirement: Requirement, call_request_id: str = "", rows: int = 1
    ) -> Grant | None:
        """A live grant for exactly this binding (subject, method, model, labels and, unless
        it covers the model, the query), approved by enough of the right people, not spent
        on another call, and with a row budget (if any) that still covers ``rows``."""
        now = self.clock()
        async with self.db.transaction() as tx:
            grants = await repo.live_grants(tx, binding, now)
            charged = {
                grant.id
                for grant in grants
                if grant.row_budget is not None
                and await repo.charged_rows(tx, grant.id, call_request_id) is not None
            }
        for grant in grants:
            mismatch = rules.grant_mismatch(grant, binding, now, requirement, call_request_id)
            if (
                mismatch is None
                and rules.grant_satisfies(grant, requirement)
                and rules.budget_shortfall(grant, rows, grant.id in charged) is None
            ):
                return grant
        return None

    async def charged(self, grant: Grant, call_request_id: str) -> bool:
        """Whether a budgeted ``grant`` has already been charged for this call."""
        if grant.row_budget is None:
            return False
        async with self.db.transaction() as tx:
            return await repo.charged_rows(tx, grant.id, call_request_id) is not None

    async def use_grant(
        self, grant: Grant, requirement: Requirement | None, call_request_id: str, rows: int = 1
    ) -> GrantUse:
        """Record that ``grant`` alone releases this call (``use_grants`` with one grant)."""
        used = await self.use_grants([(grant, requirement)], call_request_id, rows)
        return used.uses[0] if used.released else GrantUse(released=False, refusal=used.refusal)

    async def use_grants(
        self, grants: Sequence[tuple[Grant, Requirement | None]], call_request_id: str, rows: int = 1
    ) -> GrantsUse:
        """Record that ``grants`` (each with the requirement it met) release this call, all in
        one transaction. A single-use grant (or one the policy now wants single-use) is spent
        on the first call that uses it; a budgeted grant is charged ``rows`` once per call (the
        response phase of a call already charged is not charged again). All or nothing: when
        another call spent one of them, or its budget, first, the transaction rolls back and
        none is spent or charged (a call held for two requirements that is not released must
        not use up the one-call grant of the other). Rows are locked in the order of the grant
        ids, so two replicas using overlapping grants queue rather than deadlock.

        A grant that has lapsed since it was found (an earlier round's, while a later round
        was held) releases nothing: refused with ``GRANT_EXPIRED``, none used. Checked before
        anything is spent, and for grants that spend nothing too."""
        now = self.clock()
        for grant, needed in grants:
            if rules.grant_lapsed(grant, needed, now) is not None:
                return GrantsUse(refused=grant, refusal=reasons.GRANT_EXPIRED)
        if not any(rules.spends(grant, needed) or grant.row_budget is not None for grant, needed in grants):
            return GrantsUse(uses=tuple(GrantUse(released=True) for _ in grants))
        # A call always has a request id; never let an empty one match another's mark.
        call = call_request_id or new_id("call")
        uses: dict[int, GrantUse] = {}
        try:
            async with self.db.transaction() as tx:
                for at in sorted(range(len(grants)), key=lambda i: grants[i][0].id):
                    grant, needed = grants[at]
                    uses[at] = await self._use_in(tx, grant, needed, call, rows, now)
        except _NotReleased as short:
            return GrantsUse(refused=short.grant, refusal=short.refusal)
        return GrantsUse(uses=tuple(uses[at] for at in range(len(grants))))

    async def _use_in(
        self, tx: Tx, grant: Grant, requirement: Requirement | None, call: str, rows: int, now: float
    ) -> GrantUse:
        """One grant's use inside ``use_grants``' transaction; ``_NotReleased`` rolls it all back."""
        if rules.spends(grant, requirement) and not await repo.spend_grant(tx, grant.id, call, now):
            raise _NotReleased(grant, GRANT_SPENT)
        if grant.row_budget is None or await repo.charged_rows(tx, grant.id, call) is not None:
            return GrantUse(released=True)
        if not await repo.charge_grant(tx, grant.id, call, rows, now):
            raise _NotReleased(grant, reasons.APPROVAL_BUDGET_EXHAUSTED)
        charged = await repo.get_grant(tx, grant.id)
        assert charged is not None
        return GrantUse(released=True, rows_charged=rows, grant=charged)

    # -- approver side --------------------------------------------------------------------
    def _viewer(self, viewer: Subject) -> repo.Viewer:
        return repo.Viewer(viewer.id, viewer.groups, rules.is_viewer(viewer, self.admin_groups))

    async def page(
        self,
        viewer: Subject,
        states: Sequence[State] = (State.PENDING,),
        *,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> Page:
        """One page of the requests in ``states`` that ``viewer`` may see, newest first:
        their own requests and those naming one of their groups as approvers (viewer groups:
        all). Filtered in SQL, so nobody's requests hide anybody else's."""
        limit = max(1, min(limit, LIST_LIMIT))
        after = decode_cursor(cursor) if cursor else None
        async with self.db.transaction() as tx:
            found = await repo.list_requests(tx, states, limit + 1, self._viewer(viewer), after)
        # The SQL filter and may_view say the same; the check stays as the one definition.
        items = [r for r in found[:limit] if rules.may_view(viewer, r, self.admin_groups)]
        more = len(found) > limit
        return Page(items, encode_cursor(found[limit - 1]) if more else None)

    async def visible_to(
        self, viewer: Subject, states: Sequence[State] = (State.PENDING,), *, limit: int = LIST_LIMIT
    ) -> list[ApprovalRequest]:
        """The first ``limit`` requests in ``states`` that ``viewer`` may see, newest first."""
        return (await self.page(viewer, states, limit=limit)).items

    async def show(self, viewer: Subject, request_id: str) -> ApprovalRequest:
        request = await self.get(request_id)
        if request is None or not rules.may_view(viewer, request, self.admin_groups):
            # The same answer whether it does not exist or is not theirs to see.
            raise NotFound(reasons.APPROVAL_NOT_FOUND, f"no approval {request_id} that you may see")
        return request

    async def approve(
        self, approver: Subject, request_id: str, reason: str = "", *, session_issued_at: float | None = None
    ) -> ApprovalRequest:
        return await self._vote(approver, request_id, "approve", reason, session_issued_at)

    async def deny(
        self, approver: Subject, request_id: str, reason: str, *, session_issued_at: float | None = None
    ) -> ApprovalRequest:
        return await self._vote(approver, request_id, "deny", reason, session_issued_at)

    async def _vote(
        self, person: Subject, request_id: str, verdict: str, reason: str, session_issued_at: float | None
    ) -> ApprovalRequest:
        """``session_issued_at``: the vote comes from ``person``'s inbox session issued then,
        checked not signed out in the vote's own transaction (a sign-out while its form was
        still arriving ends it too)."""
        now = self.clock()
        refusal: LabelgateError | None = None
        async with self.db.transaction() as tx:
            if session_issued_at is not None and await repo.signed_out(tx, person.id, session_issued_at):
                raise Unauthenticated(reasons.SESSION_EXPIRED, "your session has ended: sign in again")
            request = await repo.get_request(tx, request_id, for_update=True)
            if request is None or not rules.may_view(person, request, self.admin_groups):
                raise NotFound(reasons.APPROVAL_NOT_FOUND, f"no approval {request_id} that you may see")
            refusal = rules.vote_refusal(person, request, verdict, self.admin_groups, now)
            # In the groups the request asked for only (never all of the approver's).
            groups = rules.voting_groups(person, request)
            vote = Vote(approver=person.id, groups=groups, verdict=verdict, reason=reason, at=now)  # type: ignore[arg-type]
            if refusal is None:
                await repo.insert_vote(tx, request_id, vote)
                await self._settle(tx, dataclasses.replace(request, votes=(*request.votes, vote)), now)
            elif request.pending and request.expires_at <= now:  # late vote: record the expiry now
                await repo.resolve(tx, request_id, State.EXPIRED, "no decision before it expired", now)
            final = await repo.get_request(tx, request_id)
        assert final is not None
        if refusal is not None:
            if final.state is State.EXPIRED and request.pending:
                self._announce("approval.expired", final)
            events.record(
                "approval.vote_refused", final, person=person.id, verdict=verdict, refusal=refusal.reason
            )
            raise refusal
        events.record(
            "approval.vote",
            final,
            approver=person.id,
            groups=list(vote.groups),
            verdict=verdict,
            reason=reason,
            at=now,
        )
        if final.state in RESOLVED:
            self._announce(f"approval.{final.state.value}", final)
        return final

    async def _settle(self, tx: Tx, request: ApprovalRequest, now: float) -> None:
        """Resolve the request if its votes now decide it; a grant is made in the same transaction."""
        result = rules.outcome(request)
        if result is State.DENIED:
            denial = next(v for v in request.votes if v.verdict == "deny")
            why = f"denied by {denial.approver}: {denial.reason or 'no reason given'}"
            await repo.resolve(tx, request.id, State.DENIED, why, now)
        elif result is State.GRANTED:
            people = rules.counted_approvers(request.votes, request.requirement, request.requester)
            grant = Grant(
                id=new_id("grant"),
                request_id=request.id,
                binding=request.binding,
                approvers=tuple(sorted(people.items())),
                created_at=now,
                expires_at=now + request.requirement.grant_ttl_seconds,
                scope=request.requirement.grant_scope,
                single_use=request.requirement.single_use,
                row_budget=request.requirement.row_budget,
            )
            await repo.insert_grant(tx, grant)
            why = f"approved by {', '.join(sorted(people))}"
            await repo.resolve(tx, request.id, State.GRANTED, why, now, grant_id=grant.id)

    # -- inbox sessions -----------------------------------------------------------------------
    async def sign_out_session(self, subject_id: str, issued_at: float, ends_at: float) -> None:
        """Refuse ``subject_id``'s inbox sessions issued at or before ``issued_at`` (the one
        signing out and any older one) from now until ``ends_at``, on every process sharing
        this store (the cookie itself cannot be taken back from its copies). One row per
        subject, however often it signs out."""
        async with self.db.transaction() as tx:
            await repo.sign_out_sessions(tx, subject_id, issued_at, ends_at)

    async def session_signed_out(self, subject_id: str, issued_at: float) -> bool:
        """Whether ``subject_id``'s inbox session issued at ``issued_at`` was signed out (it, or
        one issued later). A store that cannot be read raises (``ApprovalsUnavailable``): the
        caller refuses the session, never guesses."""
        async with self.db.transaction() as tx:
            return await repo.signed_out(tx, subject_id, issued_at)

    # -- expiry, retention, restarts ----------------------------------------------------------
    async def _resolve(self, request_id: str, state: State, why: str) -> None:
        async with self.db.transaction() as tx:
            changed = await repo.resolve(tx, request_id, state, why, self.clock())
            final = await repo.get_request(tx, request_id) if changed else None
        if final is not None:
            self._announce(f"approval.{state.value}", final)

    async def _resolve_many(self, where: str, params: Sequence[object], state: State, why: str) -> int:
        now = self.clock()
        resolved = []
        async with self.db.transaction() as tx:
            for request_id in await repo.pending_ids(tx, where, params):
                if await repo.resolve(tx, request_id, state, why, now):
                    resolved.append(await repo.get_request(tx, request_id))
        for request in resolved:
            if request is not None:
                self._announce(f"approval.{state.value}", request)
        return len(resolved)

    async def _abandon_previous_run(self) -> None:
        count = await self._resolve_many(
            "mode = ? AND node_id = ? AND created_at < ?",
            ("hold", self.node_id, self._started_at),
            State.ABANDONED,
            "the gateway holding the call restarted; the caller saw UNAVAILABLE",
        )
        if count:
            log.warning("held approvals abandoned by a restart", count=count, node_id=self.node_id)

    async def sweep(self, *, purge: bool = True) -> None:
        now = self.clock()
        await self._resolve_many("expires_at <= ?", (now,), State.EXPIRED, "no decision before it expired")
        if purge:
            async with self.db.transaction() as tx:
                purged = await repo.purge(tx, now - self.retention_seconds)
                await repo.prune_signed_out(tx, now - SIGNED_OUT_KEPT_PAST_END_SECONDS)
            if purged:
                events.record("approval.purged", None, approval_ids=purged, count=len(purged))

    async def _sweep_forever(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(self.sweep_interval_seconds)
            try:
                due = self.clock() - last_purge >= PURGE_EVERY_SECONDS
                await self.sweep(purge=due)
                if due:
                    last_purge = self.clock()
            except Exception as error:  # the store may be briefly unreachable; try again
                log.warning("approval sweep failed", error=str(error))

    # -- notifications --------------------------------------------------------------------
    def _wake(self, request_id: str) -> None:
        targets = self._waiters.values() if request_id == WAKE_ALL else [self._waiters.get(request_id, set())]
        for waiters in targets:
            for event in waiters:
                event.set()

    def _announce(self, event: str, request: ApprovalRequest, **fields: object) -> None:
        TRANSITIONS.labels(state=request.state.value).inc()
        events.record(event, request, resolution=request.resolution or None, **fields)
        if self.notifier is not None:
            self.notifier.notify(request, self.link(request.id))
