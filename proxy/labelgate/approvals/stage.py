"""The gateway's "hold for approval" stage, backed by the approval service.

When a decision says ``require_approval``:

1. a live grant for exactly this subject (qualified id), method, model, label set and
   query (the request digest: same inputs and requested outputs; any query to the model
   when the policy's ``require_approval.grant_scope`` is ``model``) that satisfies the
   requirement lets the call through (repeat calls within ``grant_ttl_seconds``; a
   single-use grant only the call it is spent on; a grant with ``row_budget`` only while
   its budget covers the call's rows, charged once per call when it is released: a call
   over budget is asked for anew, or refused with APPROVAL_BUDGET_EXHAUSTED when it names
   the grant, or when it asks for more rows than any grant may release); with
   ``x-labelgate-approval-id`` the client names the grant's request, which must be its own,
   granted, and for exactly this call;
2. otherwise a request is opened (justification from ``x-labelgate-justification``) and
   - ``x-labelgate-approval: async``: the call ends at once with FAILED_PRECONDITION and an
     ErrorInfo carrying ``approval_id`` and ``link``;
   - by default the call is held until the request is granted, denied or expires. The window
     is the policy's ``require_approval.hold_seconds`` capped at ``approvals.hold_timeout_seconds``
     (that alone when the policy names none), cut short by the client's deadline: when the
     deadline ends the hold, the request is marked expired and the call ends with
     DEADLINE_EXCEEDED (APPROVAL_DEADLINE_EXCEEDED).
   The request carries what approvers see of the query: input names, datatypes and shapes
   (never values), the outputs named, the row count, and the fields and labels at stake.
   A requester with ``approvals.max_open_per_requester`` requests open is refused
   (RESOURCE_EXHAUSTED, APPROVAL_REQUESTS_EXHAUSTED), and so is a call whose request would
   take the bytes held past ``approvals.max_held_bytes`` or ``max_held_bytes_per_requester``
   (APPROVAL_HELD_BYTES_EXHAUSTED; async mode holds nothing), or whose size its transport
   did not note (``held_bytes``: never guessed).

Granted: the policy decides again with ``approval.state = granted`` and the grant's approvers
(with the groups they approved in). A call that needs several approvals (a confidential
field for a data owner, a restricted one for two of security) is held for one requirement at
a time: when the policy, deciding under the grant, asks for another requirement, the call is
held again for that one (step 1 or 2 again) and decided under the approvers of all its
grants together, which are used (spent, charged) only once the last one releases the call,
all in one transaction: when another call spent one of them first, none is spent or charged.
At most ``MAX_REQUIREMENTS`` rounds, each for a requirement no earlier round was held for (one
asked again is this grant falling short: asked for once more, then refused with the policy's
reason). That decision is returned. Otherwise a decision that
does not allow, whose reason says why; the pipeline turns it into PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labelgate import untrusted_text
from labelgate.approvals import deadline, events, reasons, rules
from labelgate.approvals.errors import ApprovalPending, HoldDeadlineExceeded
from labelgate.approvals.hold import Reevaluate, note_grants_used, request_bytes
from labelgate.approvals.model import (
    Binding,
    FieldAtStake,
    Grant,
    InputSummary,
    Query,
    Requirement,
    State,
    policy_approval,
)
from labelgate.approvals.service import APPROVAL_ID, ApprovalService, Draft, GrantsUse, GrantUse
from labelgate.auth.reasons import TOKEN_EXPIRED
from labelgate.auth.subject import requester_of
from labelgate.errors import InvalidInput, ResourceExhausted
from labelgate.expiry import credentials_live, earliest_expiry
from labelgate.logs import get_logger
from labelgate.policy.contract import ApprovalRequirement, Decision

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.calls import Call

log = get_logger(__name__)

MODE_HEADER = "x-labelgate-approval"
APPROVAL_ID_HEADER = "x-labelgate-approval-id"
JUSTIFICATION_HEADER = "x-labelgate-justification"
MAX_JUSTIFICATION_CHARS = 500
# Requirements one call is held for in turn, at most (the default tables have two).
MAX_REQUIREMENTS = 4


class StoppedWaiting(str):
    """Why the gateway itself stopped waiting for a held call's decision, named by the
    cancellation that ends its hold (``Task.cancel(msg)``, ``abandoned_because``): the approval
    request is closed with it. A ``ModelStreamInfer`` request is held inside its stream, which
    may end for a reason of its own (``gateway/stream_infer.py``)."""


# Why a held call's approval request is closed when the call stops waiting for it (its task
# cancelled): its caller left, or the gateway is stopping, unless the cancellation names a
# ``StoppedWaiting``: the upstream ended the stream the request was held in, or the stream was
# refused (both were closed as the caller's leaving: review, tenth round and after).
CALLER_WENT_AWAY = "the caller went away before a decision"
UPSTREAM_ENDED_BEFORE_DECISION = StoppedWaiting("the upstream ended the stream before a decision")


def stream_refused_before_decision(reason: str, message: str) -> StoppedWaiting:
    """The stream a request was held in was refused: its reason and message (the gateway's own
    words, as its caller is told them), cleaned as any text an approver reads."""
    return StoppedWaiting(
        untrusted_text.cleaned(f"the stream was refused before a decision ({reason}: {message})")
    )


@dataclasses.dataclass(frozen=True)
class Round:
    """What the rounds of one held call share: its options, binding and rows, and the grants
    of the requirements met so far, each with its requirement (used only when the call is
    released)."""

    options: Options
    binding: Binding
    rows: int
    earlier: tuple[tuple[Grant, Requirement], ...] = ()
    # When the first round's hold ends: later rounds end by then too, so a call is held no
    # longer than ``hold_timeout_seconds`` in all (each round took a fresh window: review s13).
    held_until: float | None = None

    def under(self, grant: Grant) -> dict[str, Any]:
        """The policy's ``approval`` with ``grant`` and the earlier rounds' grants."""
        return policy_approval([*(held for held, _ in self.earlier), grant])

    def taken(self, grant: Grant) -> bool:
        return any(held.id == grant.id for held, _ in self.earlier)

    def moves_on(self, again: Decision, requirement: Requirement) -> bool:
        """The policy, deciding under this round's grant, asks for a requirement no round
        has been held for: the next round. (The same one again: this grant is not enough.)"""
        asked = again.require_approval
        if asked is None or again.allow or len(self.earlier) + 1 >= MAX_REQUIREMENTS:
            return False
        seen = [requirement, *(needed for _, needed in self.earlier)]
        key = (tuple(asked.approver_groups), asked.min_approvals)
        return all(key != (needed.approver_groups, needed.min_approvals) for needed in seen)

    def then(self, grant: Grant, requirement: Requirement, held_until: float | None = None) -> Round:
        first = held_until if self.held_until is None else self.held_until
        return dataclasses.replace(self, earlier=(*self.earlier, (grant, requirement)), held_until=first)


@dataclasses.dataclass(frozen=True)
class Options:
    mode: str = "hold"
    approval_id: str | None = None
    justification: str = ""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


_OPTION_HEADERS = frozenset((MODE_HEADER, APPROVAL_ID_HEADER, JUSTIFICATION_HEADER))


def check_options(metadata: tuple[tuple[str, Any], ...]) -> None:
    """Refuse malformed approval options on every call that sends any (``read_options``), held
    or not: a caller who asked for ``async`` as ``sometimes`` learns it now, not once a call of
    theirs is first held."""
    if any(key.lower() in _OPTION_HEADERS for key, _ in metadata):
        read_options(metadata)


def read_options(metadata: tuple[tuple[str, Any], ...]) -> Options:
    values: dict[str, list[str]] = {}
    for key, value in metadata:
        if key.lower() in _OPTION_HEADERS:
            values.setdefault(key.lower(), []).append(_text(value).strip())
    for key, found in values.items():
        if len(found) > 1:
            raise InvalidInput(reasons.APPROVAL_OPTION_REPEATED, f"send {key} once, not {len(found)} times")
    mode = values.get(MODE_HEADER, ["hold"])[0].lower() or "hold"
    if mode not in ("hold", "wait", "async"):
        raise InvalidInput(
            reasons.APPROVAL_MODE_INVALID, f"{MODE_HEADER} must be 'async' or 'wait', not {mode!r}"
        )
    approval_id = values.get(APPROVAL_ID_HEADER, [None])[0] or None
    if approval_id is not None and not APPROVAL_ID.fullmatch(approval_id):
        raise InvalidInput(
            reasons.APPROVAL_ID_INVALID, f"{APPROVAL_ID_HEADER} is not an approval id (apr-...)"
        )
    # Control (C0 and C1), separator and format characters out: approvers read it in a terminal.
    justification = untrusted_text.cleaned(values.get(JUSTIFICATION_HEADER, [""])[0])[
        :MAX_JUSTIFICATION_CHARS
    ]
    return Options(
        mode="async" if mode == "async" else "hold", approval_id=approval_id, justification=justification
    )


def requirement_of(decision: Decision) -> Requirement:
    needed: ApprovalRequirement | None = decision.require_approval
    assert needed is not None, "hold() is only called for decisions that require approval"
    return Requirement(
        approver_groups=tuple(needed.approver_groups),
        min_approvals=needed.min_approvals,
        grant_ttl_seconds=needed.grant_ttl_seconds,
        reason=needed.reason,
        grant_scope="model" if needed.grant_scope == "model" else "query",
        single_use=needed.single_use,
        row_budget=needed.row_budget,
    )


def binding_of(subject: Subject, call: Call, policy_input: dict[str, Any]) -> Binding:
    request = policy_input["request"]
    return Binding(
        requester_of(subject),
        call.method,
        request["model"],
        tuple(policy_input["labels"]),
        request.get("digest", ""),
    )


def query_of(policy_input: dict[str, Any]) -> Query:
    """What approvers see of the query: names, datatypes and shapes, never values. Input and
    output names are the caller's text: cleaned as a justification is (a bidi override in a
    name would have the inbox show another name than the one sent)."""
    request = policy_input["request"]
    return Query(
        inputs=tuple(
            InputSummary(
                untrusted_text.cleaned(str(i["name"])),
                untrusted_text.cleaned(str(i["datatype"])),
                tuple(int(n) for n in i["shape"]),
            )
            for i in request.get("inputs", [])
        ),
        requested_outputs=tuple(
            untrusted_text.cleaned(str(name)) for name in request.get("requested_outputs", [])
        ),
    )


def fields_of(policy_input: dict[str, Any]) -> tuple[FieldAtStake, ...]:
    """The fields at stake, as approvers see them: a path holds the output name the caller
    chose, cleaned as ``query_of`` cleans it."""
    return tuple(
        FieldAtStake(untrusted_text.cleaned(str(f["path"])), tuple(f["labels"]))
        for f in policy_input["fields"]
    )


def held_bytes() -> int:
    """What holding this call keeps in memory: its request's size as its transport noted it
    (gRPC: the body it read; REST: the message it parsed from the body). A call whose
    transport noted nothing is not held (fail closed): its inputs' shapes say little of its
    size (a BYTES element of any length is one element), so a guess from them would let
    calls of megabytes be held as a few bytes each."""
    noted = request_bytes()
    if noted is None:
        log.error("a call to be held came with no request noted: refused")
        raise ResourceExhausted(
            reasons.APPROVAL_HELD_BYTES_EXHAUSTED,
            "the gateway cannot tell how many bytes this call's request keeps, so it does not hold "
            f"it: send {MODE_HEADER}: async, which holds nothing while approvers decide",
        )
    return noted


def grant_and_call(grant: Grant, call: Call, binding: Binding) -> dict[str, Any]:
    """What an audit event about a grant and the call it was asked to release names."""
    return {
        "approval_id": grant.request_id,
        "grant_id": grant.id,
        "method": call.method,
        "model": binding.model,
        "labels": list(binding.labels),
        "digest": binding.digest,
    }


def grant_used(
    grant: Grant, subject: Subject, call: Call, binding: Binding, use: GrantUse, rows: int
) -> None:
    """Audit a grant used by a call it releases (a named or earlier round's grant)."""
    events.record(
        "approval.grant_used",
        None,
        subject=subject.id,
        **grant_and_call(grant, call, binding),
        grant_scope=grant.scope,
        single_use=grant.single_use,
        request_id=call.request_id,
        **charge_fields(use, rows),
    )


def charge_fields(use: GrantUse, rows: int) -> dict[str, Any]:
    """What the audit trail records of a row-budget charge (nothing for unbudgeted grants)."""
    grant = use.grant
    if use.rows_charged is None or grant is None:
        return {}
    return {
        "rows": rows,
        "rows_charged": use.rows_charged,
        "rows_used": grant.rows_used,
        "row_budget": grant.row_budget,
    }


def refusal(decision: Decision, code: str, message: str) -> Decision:
    """A decision that does not allow: the pipeline answers PERMISSION_DENIED with ``message``."""
    return Decision(
        allow=False,
        reason=message,
        engine=decision.engine,
        revision=decision.revision,
        decision_id=decision.decision_id,
        fail_reason=code,
    )


class HoldForApproval:
    def __init__(
        self,
        service: ApprovalService,
        *,
        hold_timeout_seconds: float = 120.0,
        async_timeout_seconds: float = 900.0,
        min_hold_seconds: float = 1.0,
        deadline_margin_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.hold_timeout_seconds = hold_timeout_seconds
        self.async_timeout_seconds = async_timeout_seconds
        self.min_hold_seconds = min_hold_seconds
        self.deadline_margin_seconds = deadline_margin_seconds
        self.clock = clock

    def hold_window(self, decision: Decision) -> float:
        """How long a held call waits: the policy's ``hold_seconds``, never longer than the
        configured ``hold_timeout_seconds`` (the operator's ceiling), which applies alone when
        the policy names none."""
        needed = decision.require_approval
        if needed is not None and needed.hold_seconds is not None:
            return min(float(needed.hold_seconds), self.hold_timeout_seconds)
        return self.hold_timeout_seconds

    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        options = read_options(call.metadata)
        binding = binding_of(subject, call, policy_input)
        rows = rules.call_rows(query_of(policy_input).rows)
        return await self._hold(
            call, subject, policy_input, decision, reevaluate, Round(options, binding, rows)
        )

    async def _hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
        at: Round,
    ) -> Decision:
        """One round: the requirement ``decision`` asks for, met by a grant found or asked for."""
        options, binding, rows = at.options, at.binding, at.rows
        requirement = requirement_of(decision)
        grant: Grant | None = None
        if options.approval_id is not None:
            named = await self._named_grant(options.approval_id, binding, requirement, decision, call, rows)
            if isinstance(named, Decision):
                return named
            grant = named
        if grant is None or at.taken(grant):
            # (A named grant for another round's requirement: that round found or finds it.)
            grant = await self.service.find_grant(binding, requirement, call.request_id, rows)
        if grant is not None and at.taken(grant):
            grant = None
        if grant is not None:
            again = await reevaluate(at.under(grant))
            if again.require_approval is None:
                if not again.allow:
                    return again  # refused anyway: nothing released, nothing spent or charged
                # Spent and charged only now that the grants do release the call: all of
                # them, or (another call spent one first) none.
                if not self._credentials_live(subject):
                    return self._expired(decision)
                used = await self._use_all(at, grant, requirement, call, subject)
                if used.released:
                    grant_used(grant, subject, call, binding, used.uses[-1], rows)
                    return again
                if used.refused is not None and used.refused.id != grant.id:
                    return self._spent_first(decision, used)
                if options.approval_id is not None and used.refusal == reasons.APPROVAL_BUDGET_EXHAUSTED:
                    # Another call took the named grant's last rows a moment ago.
                    fresh = await self.service.get_grant(grant.id)
                    return self._over_budget(fresh or grant, binding, decision, call, rows)
                # A single-use grant (or a budget) another call spent a moment ago: ask again
                # (the earlier rounds' grants are still unspent, for the round that follows).
            elif at.moves_on(again, requirement):
                # This requirement is met; the policy asks for the next one: hold again.
                return await self._hold(
                    call, subject, policy_input, again, reevaluate, at.then(grant, requirement)
                )
            else:
                # The policy now asks for more than this grant gives: ask for a new approval.
                decision, requirement = again, requirement_of(again)
        if requirement.row_budget is not None and rows > requirement.row_budget:
            # No grant under this policy could ever release the call: do not ask approvers.
            return refusal(
                decision,
                reasons.APPROVAL_BUDGET_EXHAUSTED,
                f"this call asks for {rows} rows; a grant for it may release at most "
                f"{requirement.row_budget} rows in total (ask for fewer rows per call)",
            )
        return await self._ask(call, subject, policy_input, decision, requirement, reevaluate, at)

    def _credentials_live(self, subject: Subject) -> bool:
        """None of the caller's credentials has expired (``earliest_expiry``): checked again
        right before grants are spent, since deciding under them takes time (review, eighth
        round: a token expiring meanwhile had the grant spent and the call refused)."""
        return credentials_live(subject.attributes, self.clock())

    @staticmethod
    def _expired(decision: Decision) -> Decision:
        """The call's credential expired while it was held: nothing spent, the caller's
        TOKEN_EXPIRED (the pipeline checks the credentials again and says so)."""
        return refusal(decision, TOKEN_EXPIRED, "the token this call was made with expired while it was held")

    async def _use_all(
        self, at: Round, grant: Grant, requirement: Requirement, call: Call, subject: Subject
    ) -> GrantsUse:
        """Use (spend, charge) this round's grant and the earlier rounds' together, now that
        they release the call: all in one transaction, or none when another call spent one of
        them first (an approver's one-call grant is never used up by a call that is refused).
        The earlier rounds' uses are audited here, this round's by the caller."""
        used = await self.service.use_grants([*at.earlier, (grant, requirement)], call.request_id, at.rows)
        if used.released:
            for (held, _), use in zip(at.earlier, used.uses[:-1], strict=True):
                grant_used(held, subject, call, at.binding, use, at.rows)
            note_grants_used([(each.id, each.request_id) for each, _ in [*at.earlier, (grant, requirement)]])
        elif used.refusal == reasons.GRANT_EXPIRED and used.refused is not None:
            events.record(
                "approval.grant_refused",
                None,
                subject=subject.id,
                **grant_and_call(used.refused, call, at.binding),
                refusal="the grant expired before the call was released",
                expires_at=used.refused.expires_at,
                request_id=call.request_id,
            )
        return used

    @staticmethod
    def _spent_first(decision: Decision, used: GrantsUse) -> Decision:
        """Refused, none of the grants spent: another call spent one of them (or its budget)
        first, or one lapsed (``GRANT_EXPIRED``: an earlier round's grant, while a later round
        was held). Not held again: the window the call had is spent, and a call held anew for
        the lapsed requirement could lapse the next one in turn. Called again, the call finds
        the grants still live and is asked for the lapsed requirement only."""
        assert used.refused is not None
        if used.refusal == reasons.GRANT_EXPIRED:
            why = "its grant expired before the call's other approvals were granted"
        else:
            why = "another call used its grant first"
        return refusal(
            decision,
            used.refusal or "GRANT_NOT_APPLICABLE",
            f"approval {used.refused.request_id} was granted, but {why}; call again to ask anew",
        )

    def _over_budget(
        self, grant: Grant, binding: Binding, decision: Decision, call: Call, rows: int
    ) -> Decision:
        """The named grant's row budget cannot cover this call: refused, and audited."""
        why = rules.budget_shortfall(grant, rows, already_charged=False) or "the grant's row budget is spent"
        events.record(
            "approval.grant_refused",
            None,
            subject=binding.subject,
            **grant_and_call(grant, call, binding),
            refusal=why,
            rows=rows,
            rows_used=grant.rows_used,
            row_budget=grant.row_budget,
            request_id=call.request_id,
        )
        return refusal(
            decision,
            reasons.APPROVAL_BUDGET_EXHAUSTED,
            f"approval {grant.request_id} does not cover this call: {why}; ask for a new approval",
        )

    async def _named_grant(
        self,
        approval_id: str,
        binding: Binding,
        requirement: Requirement,
        decision: Decision,
        call: Call,
        rows: int,
    ) -> Grant | Decision | None:
        request = await self.service.get(approval_id)
        if request is None or request.requester != binding.subject:
            events.record(
                "approval.grant_refused",
                request,
                subject=binding.subject,
                method=call.method,
                model=binding.model,
                refusal="not the caller's approval",
                request_id=call.request_id,
            )
            return refusal(
                decision, "APPROVAL_NOT_YOURS", f"approval {approval_id} is not one of your approvals"
            )
        if request.state is State.PENDING:
            raise ApprovalPending(
                reasons.APPROVAL_PENDING,
                f"approval {approval_id} is still pending: {request.requirement.reason}",
                approval_id=approval_id,
                link=self.service.link(approval_id),
            )
        if request.state is not State.GRANTED or request.grant_id is None:
            return refusal(
                decision,
                f"APPROVAL_{request.state.value.upper()}",
                f"approval {approval_id} was {request.state.value}: {request.resolution}",
            )
        grant = await self.service.get_grant(request.grant_id)
        mismatch = "the grant no longer exists" if grant is None else None
        if grant is not None:
            # Checked against this round's requirement only when it is this round's grant: one
            # named for a later round's requirement (the last approval of a call held for
            # several) is checked against that one's, in that round (an unbudgeted data-owner
            # grant is not "wider" than a budgeted security requirement it was never for).
            mine = requirement if rules.grant_satisfies(grant, requirement) else None
            mismatch = rules.grant_mismatch(grant, binding, self.clock(), mine, call.request_id)
        if mismatch is not None:
            events.record(
                "approval.grant_refused",
                request,
                subject=binding.subject,
                method=call.method,
                model=binding.model,
                labels=list(binding.labels),
                digest=binding.digest,
                refusal=mismatch,
                request_id=call.request_id,
            )
            return refusal(
                decision,
                "GRANT_NOT_APPLICABLE",
                f"approval {approval_id} does not cover this call: {mismatch}",
            )
        assert grant is not None
        charged = await self.service.charged(grant, call.request_id)
        if rules.budget_shortfall(grant, rows, charged) is not None:
            return self._over_budget(grant, binding, decision, call, rows)
        return grant if rules.grant_satisfies(grant, requirement) else None

    async def _ask(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        requirement: Requirement,
        reevaluate: Reevaluate,
        at: Round,
    ) -> Decision:
        options, binding, rows = at.options, at.binding, at.rows
        now = self.clock()
        cut_by_deadline = cut_by_token = False
        if options.mode == "async":
            until = now + self.async_timeout_seconds
        else:
            until = now + self.hold_window(decision)
            if at.held_until is not None:
                until = min(until, at.held_until)
            left = deadline.seconds_left(now)
            if left is not None and now + left - self.deadline_margin_seconds < until:
                # Answer before the client gives up, so it learns why.
                until = now + left - self.deadline_margin_seconds
                cut_by_deadline = True
            expires = earliest_expiry(subject.attributes)
            if expires is not None and expires < until:
                # A grant after the caller's credential expired releases nothing (the pipeline
                # refuses it TOKEN_EXPIRED), so the hold, and its request to approvers, end then;
                # the caller is told its token expired, not its deadline.
                until = now if expires <= now else float(expires)
                cut_by_deadline, cut_by_token = False, True
            if until - now < self.min_hold_seconds:
                return refusal(
                    decision,
                    "APPROVAL_DEADLINE_TOO_SHORT",
                    f"held for approval ({requirement.reason}) but the call's deadline or its token's "
                    f"expiry leaves no time to wait; set a longer deadline, use a fresher token or send "
                    f"{MODE_HEADER}: async",
                )
        draft = Draft(
            binding=binding,
            requester_groups=subject.groups,
            phase=policy_input["phase"],
            fields=fields_of(policy_input),
            requirement=requirement,
            justification=options.justification,
            mode="async" if options.mode == "async" else "hold",
            expires_at=until,
            call_request_id=call.request_id,
            session_id=call.session_id,
            query=query_of(policy_input),
            held_bytes=held_bytes() if options.mode != "async" else 0,
        )
        request = await self.service.open(draft)
        link = self.service.link(request.id)
        if options.mode == "async":
            raise ApprovalPending(
                reasons.APPROVAL_PENDING,
                f"held for approval: {requirement.reason}; call again with {APPROVAL_ID_HEADER}: "
                f"{request.id} once it is granted ({link})",
                approval_id=request.id,
                link=link,
            )
        try:
            final = await self.service.wait(request.id, until)
        except asyncio.CancelledError as cancelled:
            # Nobody waits for this any more (``CALLER_WENT_AWAY``).
            await asyncio.shield(self.service.abandon(request.id, abandoned_because(cancelled)))
            raise
        if final.state is State.GRANTED and final.grant_id is not None:
            grant = await self.service.get_grant(final.grant_id)
            if grant is not None:
                again = await reevaluate(at.under(grant))
                if at.moves_on(again, requirement):
                    # Granted; the policy asks for the next requirement: hold again.
                    return await self._hold(
                        call, subject, policy_input, again, reevaluate, at.then(grant, requirement, until)
                    )
                if not again.allow:
                    return again
                # The held call is the grant's first use (a single-use grant is spent on it,
                # a budgeted one charged its rows), with the earlier rounds' grants: all or none.
                if not self._credentials_live(subject):
                    return self._expired(decision)
                used = await self._use_all(at, grant, requirement, call, subject)
                if not used.released:
                    return self._spent_first(decision, used)
                use = used.uses[-1]
                if use.rows_charged is not None:
                    events.record(
                        "approval.grant_used",
                        final,
                        grant_id=grant.id,
                        subject=subject.id,
                        **charge_fields(use, rows),
                    )
                return again
        if cut_by_token and final.state is State.EXPIRED:
            return refusal(
                decision,
                TOKEN_EXPIRED,
                f"approval {final.id} was not decided before the token this call was made with "
                "expired; it is expired (call again with a fresh token)",
            )
        if cut_by_deadline and final.state is State.EXPIRED:
            raise HoldDeadlineExceeded(
                reasons.APPROVAL_DEADLINE_EXCEEDED,
                f"approval {final.id} was not decided before the call's deadline; it is expired "
                f"(call again with a longer deadline, or send {MODE_HEADER}: async)",
                approval_id=final.id,
                link=link,
            )
        code = f"APPROVAL_{final.state.value.upper()}"
        return refusal(decision, code, f"approval {final.id} {final.state.value}: {final.resolution}")


def abandoned_because(cancelled: asyncio.CancelledError) -> str:
    """Why a held call's approval request is closed when ``cancelled`` ends its hold: the
    reason the cancellation names if it is the gateway's own (``StoppedWaiting``), else
    ``CALLER_WENT_AWAY``."""
    named = cancelled.args[0] if cancelled.args else None
    return str(named) if isinstance(named, StoppedWaiting) else CALLER_WENT_AWAY
