"""Stage: decide, and hold for approval, for both phases of every call.

``DecideStage.decide`` bounds a phase's fields, asks the policy engine (within the decision
deadline, a cached decision without one) and, when the decision asks for an approval, holds
the call for an approver (``approvals.hold``), deciding again under each approval offered.
What it decides joins the call's record (``Outcome``): each decision, its input (kept by hash
so it can be replayed), the labels, the grants it was released under. A phase the policy does
not allow raises the refusal the caller gets; nothing is released on a failure (fail closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from labelgate import tracing
from labelgate.approvals.hold import ApprovalStage, grants_noted
from labelgate.auth import Subject
from labelgate.auth import reasons as auth_reasons
from labelgate.calls import Call, CallsInFlight, Outcome, Target
from labelgate.classify import Field, to_policy_fields
from labelgate.config import LimitSettings
from labelgate.errors import PermissionDenied, PolicyUnavailable
from labelgate.gateway import inflight, metrics
from labelgate.gateway import reasons as gateway_reasons
from labelgate.gateway.bounds import check_fields, check_reply_fields
from labelgate.gateway.classify_stage import ClassifierStage
from labelgate.gateway.credential_expiry import is_valid, still_valid
from labelgate.policy import reasons as policy_reasons
from labelgate.policy.cache import CachingEngine, cache_keys
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.engine import PolicyEngine

# Fail-closed decisions whose cause is the engine being unreachable, not the policy saying no.
_UNAVAILABLE_REASONS = frozenset({policy_reasons.POLICY_UNAVAILABLE, policy_reasons.POLICY_TIMEOUT})
_EXPIRED_WHILE_HELD = "the token this call was made with expired while it was held for approval"


class DecideStage:
    """Decides each phase of a call, holding it for an approver when the policy asks for one.

    ``classifier`` is only read: a hold releases nothing classified under a catalog that has
    since been replaced. ``in_flight`` is the pipeline's count, which a held call leaves."""

    def __init__(
        self,
        *,
        engine: PolicyEngine,
        classifier: ClassifierStage,
        approvals: ApprovalStage,
        limits: LimitSettings,
        in_flight: CallsInFlight,
        decision_deadline_seconds: float,
    ) -> None:
        self.engine = engine
        self.classifier = classifier
        self.approvals = approvals
        self.limits = limits
        self.in_flight = in_flight
        self.decision_deadline_seconds = decision_deadline_seconds

    async def decide(
        self, call: Call, subject: Subject, target: Target, phase: str, fields: list[Field], outcome: Outcome
    ) -> Decision:
        # The response phase's fields are the upstream's reply: its excess is not the caller's fault.
        (check_reply_fields if phase == "response" else check_fields)(fields, self.limits)
        # The catalog and detectors ``fields`` were worked out with (nothing awaited since).
        classified_by = self.classifier.classifier

        def policy_input(approval: dict[str, Any] | None) -> dict[str, Any]:
            return build_input(
                phase=phase,
                subject=subject.to_policy(),
                request=target.to_policy(call),
                fields=to_policy_fields(fields),
                approval=approval,
                time_ns=time.time_ns(),
            )

        first = policy_input(None)
        memo, key = cache_keys(first)  # one marshal for both: the cache's key and the store's
        if key is not None:  # kept by hash so the decision can be replayed (policy impact)
            outcome.decision_inputs.append((phase, key.hex(), first))
        started = time.perf_counter()
        with tracing.stage("decide", **{"labelgate.phase": phase}):
            decision = await self.decide_within_deadline(first, memo)
        metrics.child(metrics.DECISION_SECONDS, self.engine.name, phase).observe(
            time.perf_counter() - started
        )
        if decision.require_approval is not None and not decision.allow:
            decision = await self._hold(
                call, subject, phase, first, key is not None, decision, policy_input, outcome, classified_by
            )
        else:
            outcome.decisions.append((phase, decision))
            outcome.labels.update(first["labels"])
        if not decision.allow:
            raise _refusal(decision)
        return decision

    async def _hold(
        self,
        call: Call,
        subject: Subject,
        phase: str,
        first: dict[str, Any],
        first_kept: bool,
        held: Decision,
        policy_input: Callable[[dict[str, Any] | None], dict[str, Any]],
        outcome: Outcome,
        classified_by: object,
    ) -> Decision:
        """Hold the call for an approver (``approvals.hold``); the decision to enforce.

        The record holds the decision that held the call and its labels from the start (a
        call can end inside the hold: pending, expired, cut by its deadline, cancelled). Each
        decision made again under an approval joins it, with its input; when the hold releases
        on one of them, the inputs of this phase before it are marked superseded."""
        outcome.decisions.append((phase, held))
        outcome.labels.update(first["labels"])
        start = len(outcome.decision_inputs) - (1 if first_kept else 0)
        redecided: list[tuple[Decision, int]] = []  # each, with how many inputs came before it

        async def again(approval: dict[str, Any]) -> Decision:
            if self.classifier.classifier is not classified_by:
                # A hold lasts minutes: a bundle or catalog file activated meanwhile would have
                # the new policy decide on the old catalog's labels, and the masks it names
                # applied to the old classification. Refused (the grant is left unspent): the
                # caller calls again, classified and decided under what is in force.
                refused = Decision.deny(
                    gateway_reasons.CATALOG_CHANGED,
                    "the classification catalog changed while the call was held: call again",
                )
                outcome.decisions.append((phase, refused))
                return refused
            if not is_valid(subject):
                # A hold lasts minutes, longer than a token may: an approval granted after the
                # caller's credential expired releases nothing. Refused here, before the stage
                # spends or charges the grant (it is left for the caller's next call, with a
                # fresh token); ``still_valid`` below makes it the caller's TOKEN_EXPIRED.
                expired = Decision.deny(auth_reasons.TOKEN_EXPIRED, _EXPIRED_WHILE_HELD)
                outcome.decisions.append((phase, expired))
                return expired
            redo = policy_input(approval)
            memo, key = cache_keys(redo)
            before = len(outcome.decision_inputs)
            if key is not None:
                outcome.decision_inputs.append((phase, key.hex(), redo))
            decision = await self.decide_within_deadline(redo, memo)
            outcome.decisions.append((phase, decision))
            redecided.append((decision, before))
            return decision

        # A call held for an approver writes its record minutes from now, if ever: it does
        # not count as in flight meanwhile, or every other record would wait for it. Its
        # request's bytes count under the approval service's own bound from here on.
        aside = inflight.set_aside()
        self.in_flight.count -= 1
        try:
            with tracing.stage("hold"), grants_noted() as grants:
                decision = await self.approvals.hold(call, subject, first, held, again)
        finally:
            self.in_flight.count += 1
            inflight.take_back(aside)  # counted here again while it goes on (or ends)
        if decision.allow or decision.fail_reason == auth_reasons.TOKEN_EXPIRED:
            # Nothing goes upstream (a request phase) or to the caller (a response phase) once
            # the first of the caller's credentials has expired, granted or not: ``again`` saw
            # it at the grant, and it may have expired since (the grant's use is awaited).
            still_valid(subject, _EXPIRED_WHILE_HELD)
        if decision.allow:  # both phases may be released under one grant: named once
            outcome.released_under += tuple(grant for grant in grants if grant not in outcome.released_under)
        enforced = next((before for made, before in redecided if made is decision), None)
        if enforced is not None:
            outcome.superseded_inputs += tuple(range(start, enforced))
        if outcome.decisions[-1][1] is not decision:  # the approval stage's own refusal
            outcome.decisions.append((phase, decision))
        return decision

    async def decide_within_deadline(
        self, policy_input: dict[str, Any], memo: bytes | None = None
    ) -> Decision:
        """One decision on ``policy_input``, nothing held, nothing recorded (also the index's
        per-model decisions: ``Pipeline.usable_models``). ``memo``: ``memo_key(policy_input)``
        when the caller has it (the cache's own key)."""
        engine = self.engine
        cache = engine if memo is not None and isinstance(engine, CachingEngine) else None
        if cache is not None and memo is not None:
            # A hit waits on nothing, so it needs no deadline timer (armed per decision otherwise).
            hit = cache.cached(memo)
            if hit is not None:
                return hit
        try:
            async with asyncio.timeout(self.decision_deadline_seconds):
                if cache is not None:
                    return await cache.decide(policy_input, key=memo)
                return await engine.decide(policy_input)
        except TimeoutError:
            return Decision.deny("POLICY_TIMEOUT", engine=self.engine.name, revision=self.engine.revision)


def _refusal(decision: Decision) -> PermissionDenied | PolicyUnavailable:
    details = {"decision_id": decision.decision_id or "", "engine": decision.engine}
    if decision.fail_reason in _UNAVAILABLE_REASONS:
        return PolicyUnavailable(decision.fail_reason, "policy engine unavailable: call denied", **details)
    if decision.require_approval is not None:
        return PermissionDenied(
            policy_reasons.APPROVAL_REQUIRED, decision.reason or "approval required", **details
        )
    return PermissionDenied(
        decision.fail_reason or "POLICY_DENIED", decision.reason or "denied by policy", **details
    )
