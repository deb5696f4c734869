"""A call held for several requirements uses the grants of all its rounds together, or none.

A call whose reply is confidential and restricted is held for security, then for a data owner
(``stage.Round``). With single-use (or budgeted) grants, the earlier rounds' grants were spent
one by one, each in a transaction of its own, before the last round's: when another call had
spent the last grant first, this call was refused (or asked anew), and the security grant
stayed spent on a call that never got its data. Now ``ApprovalService.use_grants`` spends and
charges them all in one transaction, or rolls every one back. The opposite holds too: a grant
found usable but spent by another call before this one releases never releases it.

The other call's use is driven from the policy's callback (between the stage finding the
grants and using them), so each race is deterministic. On SQLite and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from labelgate.approvals import reasons
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.errors import ApprovalPending
from labelgate.approvals.hold import grants_noted, note_request
from labelgate.approvals.model import Binding, Grant, Requirement
from labelgate.approvals.postgres import PostgresDatabase
from labelgate.approvals.service import GRANT_SPENT, ApprovalService
from labelgate.approvals.stage import HoldForApproval
from labelgate.auth import Subject
from labelgate.auth.subject import requester_of
from labelgate.calls import Call
from labelgate.policy.contract import Decision, validate_result
from tests.approvals.stored_grants import store_grant
from tests.approvals.test_row_budgets import until_waiting_on_locks
from tests.support.postgres import PostgresServer

METHOD = "/inference.GRPCInferenceService/ModelInfer"
STEVE = Subject.proven("jwt", "steve", issuer="https://idp.test", groups=["data-stewards", "break-glass"])
OLGA = Subject.proven("jwt", "olga", issuer="https://idp.test", groups=["data-owners"])
SAM = Subject.proven("jwt", "sam", issuer="https://idp.test", groups=["security"])
DIGEST = "d" * 64
LABELS = ("confidential", "restricted")
POLICY_INPUT = {
    "phase": "request",
    "labels": list(LABELS),
    "fields": [
        {"path": "outputs.ssn", "labels": ["confidential"]},
        {"path": "outputs.account_secret", "labels": ["restricted"]},
    ],
    "request": {
        "model": "customer-profile",
        "digest": DIGEST,
        "inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [2]}],
        "requested_outputs": [],
    },
}
ROWS = 2
ASYNC = (("x-labelgate-approval", "async"),)


def held(groups: str, reason: str, **extra: object) -> Decision:
    return validate_result(
        {
            "allow": False,
            "reason": "",
            "mask": [],
            "require_approval": {
                "approver_groups": [groups],
                "min_approvals": 1,
                "grant_ttl_seconds": 900,
                "reason": reason,
                "single_use": True,
                **extra,
            },
            "cache_ttl_seconds": 0,
        }
    )


# Budgeted too: a charge this call made must be undone with the single-use mark.
SECURITY = held("security", "restricted data needs 1 approval(s) from security", row_budget=5)
OWNERS = held("data-owners", "confidential data needs 1 approval(s) from data-owners")
ALLOW = validate_result(
    {"allow": True, "reason": "approved", "mask": [], "require_approval": None, "cache_ttl_seconds": 0}
)


class Policy:
    """Decides as the default pack does for this call: security first, then a data owner,
    allowed once approvers of both are in the ``approval`` it is given. ``before_allowing``
    runs just before it allows: another call's use, between finding the grants and using them."""

    def __init__(self, before_allowing: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        self.before_allowing = before_allowing

    async def __call__(self, approval: dict[str, Any]) -> Decision:
        groups = {group for approver in approval["approvers"] for group in approver["groups"]}
        if "security" not in groups:
            return SECURITY
        if "data-owners" not in groups:
            return OWNERS
        if self.before_allowing is not None:
            await self.before_allowing(approval)
        return ALLOW


def call(*metadata: tuple[str, str]) -> Call:
    return Call(METHOD, "ipv4:127.0.0.1:1", metadata, {}, "sess-1", f"req-{time.monotonic_ns()}")


def grant(approver: Subject, **extra: Any) -> Grant:
    now = time.time()
    group = approver.groups[0]
    return Grant(
        id=f"grant-{group}-{time.monotonic_ns()}",
        request_id=f"apr-{time.monotonic_ns() % 16**16:016x}",
        binding=Binding(requester_of(STEVE), METHOD, "customer-profile", LABELS, DIGEST),
        approvers=((approver.id, approver.groups),),
        created_at=now,
        expires_at=now + 900,
        **{"single_use": True, **extra},
    )


@pytest.fixture(autouse=True)
def noted_request() -> Iterator[None]:
    """What a transport notes of each call (a call with nothing noted is not held)."""
    note_request(b"x" * 100)
    yield
    note_request(None)


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    if request.param == "sqlite":
        return lambda: SqliteDatabase(tmp_path / "approvals.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    dsn = server.create_database()
    return lambda: PostgresDatabase(dsn)


@contextlib.asynccontextmanager
async def service_on(db: Any, clock: Callable[[], float] = time.time) -> AsyncIterator[ApprovalService]:
    service = ApprovalService(db, node_id=f"node-{id(db)}", link_base="http://inbox.test", clock=clock)
    await service.start(sweep=False)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def stage(new_database: Callable[[], Any]) -> AsyncIterator[HoldForApproval]:
    async with service_on(new_database()) as service:
        yield HoldForApproval(service, hold_timeout_seconds=20, deadline_margin_seconds=0.25)


async def insert(service: ApprovalService, *grants: Grant, asked: tuple[str, ...] | None = None) -> None:
    """Store ``grants``, each with the granted request it was made for, which asked ``asked``
    (default: the groups its approvers are recorded in)."""
    async with service.db.transaction() as tx:
        for one in grants:
            await store_grant(tx, one, asked)


async def stored(service: ApprovalService, one: Grant) -> Grant:
    found = await service.get_grant(one.id)
    assert found is not None
    return found


async def charges(service: ApprovalService, one: Grant) -> list[str]:
    async with service.db.transaction() as tx:
        rows = await tx.fetch(
            "SELECT call_request_id FROM approval_grant_charges WHERE grant_id = ?", (one.id,)
        )
    return [row["call_request_id"] for row in rows]


async def unspent(service: ApprovalService, one: Grant) -> bool:
    now = await stored(service, one)
    return now.used_by is None and now.rows_used == 0 and not await charges(service, one)


def decide_when_opened(service: ApprovalService, approver: Subject, verdict: str) -> asyncio.Task[str]:
    """Approve (or deny) the request the held call opens, once the store says it was opened
    (subscribed now, before the call is held)."""
    changed: asyncio.Queue[str] = asyncio.Queue()
    service.db.on_change(changed.put_nowait)

    async def decide() -> str:
        request_id = await changed.get()
        if verdict == "approve":
            await service.approve(approver, request_id, "ticket CS-7")
        else:
            await service.deny(approver, request_id, "no ticket")
        return request_id

    return asyncio.create_task(decide())


async def test_a_call_both_grants_release_spends_and_charges_both(stage: HoldForApproval) -> None:
    service = stage.service
    security, owners = grant(SAM, row_budget=5), grant(OLGA)
    await insert(service, security, owners)
    this = call()
    answer = await stage.hold(this, STEVE, POLICY_INPUT, SECURITY, Policy())
    assert answer.allow
    assert (await stored(service, security)).used_by == this.request_id
    assert (await stored(service, security)).rows_used == ROWS
    assert await charges(service, security) == [this.request_id]
    assert (await stored(service, owners)).used_by == this.request_id


async def test_the_last_grant_spent_by_another_call_first_leaves_the_earlier_one_unspent(
    stage: HoldForApproval,
) -> None:
    """Both grants found (async mode); another call spends the data owner's grant before this
    one uses it. This call is asked anew for a data owner, and the security grant is still
    there for the call that names the new approval."""
    service = stage.service
    security, owners = grant(SAM, row_budget=5), grant(OLGA)
    await insert(service, security, owners)

    async def another_call_spends_the_owners_grant(_: dict[str, Any]) -> None:
        assert (await service.use_grant(owners, None, "req-another-call")).released

    with pytest.raises(ApprovalPending) as pending:
        await stage.hold(
            call(*ASYNC), STEVE, POLICY_INPUT, SECURITY, Policy(another_call_spends_the_owners_grant)
        )
    assert await unspent(service, security), "a call that was not released spent the security grant"
    asked = await service.get(pending.value.details["approval_id"])
    assert asked is not None and asked.requirement.approver_groups == ("data-owners",)

    # Granted: the call that names it is released by it and the untouched security grant.
    await service.approve(OLGA, asked.id, "ticket CS-7")
    again = call(("x-labelgate-approval-id", asked.id))
    answer = await stage.hold(again, STEVE, POLICY_INPUT, SECURITY, Policy())
    assert answer.allow
    assert (await stored(service, security)).used_by == again.request_id
    assert await charges(service, security) == [again.request_id]


async def test_a_held_call_whose_last_grant_another_call_spent_first_spends_nothing(
    stage: HoldForApproval,
) -> None:
    """Held for the data owner (the security grant found); granted; another call spends the new
    grant before this one does: refused, and the security grant is not spent either."""
    service = stage.service
    security = grant(SAM, row_budget=5)
    await insert(service, security)

    async def another_call_spends_the_new_grant(approval: dict[str, Any]) -> None:
        new = await service.get_grant(approval["grant_id"])
        assert new is not None and new.id != security.id
        assert (await service.use_grant(new, None, "req-another-call")).released

    approving = decide_when_opened(service, OLGA, "approve")
    answer = await stage.hold(
        call(), STEVE, POLICY_INPUT, SECURITY, Policy(another_call_spends_the_new_grant)
    )
    owners_request = await asyncio.wait_for(approving, 30)
    assert not answer.allow and answer.fail_reason == GRANT_SPENT
    assert owners_request in answer.reason and "another call used its grant first" in answer.reason
    assert await unspent(service, security), "a refused call spent the security grant"


async def test_a_last_round_denied_spends_nothing(stage: HoldForApproval) -> None:
    service = stage.service
    security = grant(SAM, row_budget=5)
    await insert(service, security)
    denying = decide_when_opened(service, OLGA, "deny")
    answer = await stage.hold(call(), STEVE, POLICY_INPUT, SECURITY, Policy())
    await asyncio.wait_for(denying, 30)
    assert not answer.allow and answer.fail_reason == "APPROVAL_DENIED"
    assert await unspent(service, security)


async def test_an_earlier_grant_another_call_spent_after_it_was_found_never_releases(
    stage: HoldForApproval,
) -> None:
    """The opposite race: the security grant was unspent when this call found it, and spent by
    another call before this one uses it. Not released, and the data owner's grant is unspent."""
    service = stage.service
    security, owners = grant(SAM, row_budget=5), grant(OLGA)
    await insert(service, security, owners)

    async def another_call_spends_the_security_grant(_: dict[str, Any]) -> None:
        assert (await service.use_grant(security, None, "req-another-call")).released

    this = call()
    answer = await stage.hold(
        this, STEVE, POLICY_INPUT, SECURITY, Policy(another_call_spends_the_security_grant)
    )
    assert not answer.allow and answer.fail_reason == GRANT_SPENT
    assert security.request_id in answer.reason
    assert (await stored(service, security)).used_by == "req-another-call"
    assert await unspent(service, owners)


async def test_a_budget_too_short_for_one_grant_rolls_back_the_others(
    new_database: Callable[[], Any],
) -> None:
    async with service_on(new_database()) as service:
        single, budgeted = grant(SAM), grant(OLGA, row_budget=3, single_use=False)
        other = grant(OLGA, row_budget=5, single_use=False)
        await insert(service, single, budgeted, other)
        assert (await service.use_grant(budgeted, None, "req-another-call", rows=2)).released
        used = await service.use_grants([(other, None), (single, None), (budgeted, None)], "req-this", rows=2)
        assert not used.released and used.refused is not None and used.refused.id == budgeted.id
        assert used.refusal == "APPROVAL_BUDGET_EXHAUSTED"
        assert await unspent(service, single) and await unspent(service, other)
        assert (await stored(service, budgeted)).rows_used == 2
        # All three cover a 1-row call: all used, each as it stands after its charge.
        used = await service.use_grants([(other, None), (single, None), (budgeted, None)], "req-this", rows=1)
        assert used.released
        assert [use.rows_charged for use in used.uses] == [1, None, 1]
        assert [use.grant.rows_used for use in used.uses if use.grant is not None] == [1, 3]


async def test_two_replicas_using_the_same_two_grants_at_once_on_postgres_neither_deadlocks(
    postgres: PostgresServer,
) -> None:
    """Two calls on two replicas each use both grants, listed in opposite orders. Rows are
    locked in the order of the grant ids: one call gets both, the other none, and PostgreSQL
    never has to abort one for a deadlock (which would end the call UNAVAILABLE)."""
    dsn = postgres.create_database()
    security, owners = grant(SAM), grant(OLGA)
    async with service_on(PostgresDatabase(dsn)) as a, service_on(PostgresDatabase(dsn)) as b:
        await insert(a, security, owners)
        async with await psycopg.AsyncConnection.connect(dsn) as blocker:
            async with blocker.transaction():
                await blocker.execute(
                    "SELECT id FROM approval_grants WHERE id IN (%s, %s) FOR UPDATE", (security.id, owners.id)
                )
                uses = [
                    asyncio.create_task(a.use_grants([(security, None), (owners, None)], "req-on-a")),
                    asyncio.create_task(b.use_grants([(owners, None), (security, None)], "req-on-b")),
                ]
                await until_waiting_on_locks(dsn, 2)
            outcomes = await asyncio.gather(*uses)
        assert sorted(used.released for used in outcomes) == [False, True]
        [refused] = [used for used in outcomes if not used.released]
        assert refused.refusal == GRANT_SPENT
        winner = "req-on-a" if outcomes[0].released else "req-on-b"
        assert {(await stored(a, one)).used_by for one in (security, owners)} == {winner}


async def test_naming_the_last_approval_releases_a_call_whose_first_requirement_has_a_budget(
    stage: HoldForApproval,
) -> None:
    """Async mode, as documented: the call that names the last round's approval is released.
    The named data-owner grant was checked against the first round's (security) requirement,
    whose row budget it does not carry, and refused as "wider" than the policy allows."""
    service = stage.service
    with pytest.raises(ApprovalPending) as first:
        await stage.hold(call(*ASYNC), STEVE, POLICY_INPUT, SECURITY, Policy())
    security_approval = first.value.details["approval_id"]
    await service.approve(SAM, security_approval, "incident INC-7")
    with pytest.raises(ApprovalPending) as second:
        named = call(*ASYNC, ("x-labelgate-approval-id", security_approval))
        await stage.hold(named, STEVE, POLICY_INPUT, SECURITY, Policy())
    owners_approval = second.value.details["approval_id"]
    assert owners_approval != security_approval
    await service.approve(OLGA, owners_approval, "ticket CS-7")

    last = call(("x-labelgate-approval-id", owners_approval))
    answer = await stage.hold(last, STEVE, POLICY_INPUT, SECURITY, Policy())
    assert answer.allow, answer.reason
    for approval_id in (security_approval, owners_approval):
        request = await service.get(approval_id)
        assert request is not None and request.grant_id is not None
        used = await service.get_grant(request.grant_id)
        assert used is not None and used.used_by == last.request_id


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# A security grant that spends nothing (not single-use, no budget), under a policy that asks for one.
PLAIN_SECURITY = held("security", "restricted data needs 1 approval(s) from security", single_use=False)


@pytest.mark.parametrize(
    ("kind", "first"),
    [({"row_budget": 5}, SECURITY), ({"single_use": False}, PLAIN_SECURITY)],
    ids=["spends", "spends-nothing"],
)
async def test_an_earlier_rounds_grant_that_expired_while_the_next_was_held_releases_nothing(
    new_database: Callable[[], Any], kind: dict[str, Any], first: Decision
) -> None:
    """Review finding: round 1 found a live security grant; it expired while the call was held
    for a data owner, who approved after that; the call was released on the expired grant (and
    a single-use one spent on it): the earlier rounds' grants were used unchecked. Now the call
    is refused (GRANT_EXPIRED, naming the approval), nothing used; called again, it finds the
    data owner's grant still live and is asked for security only. A grant that spends nothing
    (not single-use, no budget) is checked too."""
    clock = Clock()
    async with service_on(new_database(), clock) as service:
        stage = HoldForApproval(service, hold_timeout_seconds=20, clock=clock)
        security = dataclasses.replace(grant(SAM, **kind), created_at=clock.now, expires_at=clock.now + 2)
        await insert(service, security)
        changed: asyncio.Queue[str] = asyncio.Queue()
        service.db.on_change(changed.put_nowait)

        async def approve_after_the_security_grant_expired() -> str:
            request_id = await changed.get()
            clock.now += 5
            await service.approve(OLGA, request_id, "ticket CS-7")
            return request_id

        approving = asyncio.create_task(approve_after_the_security_grant_expired())
        answer = await asyncio.wait_for(stage.hold(call(), STEVE, POLICY_INPUT, first, Policy()), 30)
        owners_request = await asyncio.wait_for(approving, 30)
        assert not answer.allow and answer.fail_reason == reasons.GRANT_EXPIRED
        assert security.request_id in answer.reason and "expired" in answer.reason
        assert await unspent(service, security)
        asked = await service.get(owners_request)
        assert asked is not None and asked.grant_id is not None
        assert (await service.get_grant(asked.grant_id)).used_by is None  # type: ignore[union-attr]

        with pytest.raises(ApprovalPending) as again:
            await asyncio.wait_for(stage.hold(call(*ASYNC), STEVE, POLICY_INPUT, first, Policy()), 30)
        renewed = await service.get(again.value.details["approval_id"])
        assert renewed is not None and renewed.requirement.approver_groups == ("security",)


async def test_using_grants_refuses_one_past_its_expiry_or_the_ttl_it_is_held_to(
    new_database: Callable[[], Any],
) -> None:
    clock = Clock()
    async with service_on(new_database(), clock) as service:
        spent_on_use, plain = grant(OLGA), grant(SAM, single_use=False)
        older = dataclasses.replace(grant(OLGA, single_use=False), expires_at=clock.now + 100)
        await insert(service, spent_on_use, plain, older)
        clock.now += 101
        # Grants that spend nothing are used without a transaction: checked all the same.
        used = await service.use_grants([(plain, None), (older, None)], "req-this")
        assert not used.released and used.refused == older and used.refusal == reasons.GRANT_EXPIRED
        # With one that spends: the live one is not spent on a call that is not released.
        used = await service.use_grants([(spent_on_use, None), (older, None)], "req-this")
        assert not used.released and used.refusal == reasons.GRANT_EXPIRED
        assert await unspent(service, spent_on_use)
        clock.now -= 101
        # Within its own expiry, but older than the grant_ttl_seconds of the requirement it met.
        clock.now += 300
        one_minute = Requirement(("security",), 1, 60)
        used = await service.use_grants([(plain, one_minute)], "req-this")
        assert not used.released and used.refused == plain and used.refusal == reasons.GRANT_EXPIRED
        assert (await service.use_grants([(plain, None)], "req-this")).released


async def test_a_token_expiring_while_the_call_is_decided_under_the_grants_spends_none(
    new_database: Callable[[], Any],
) -> None:
    """Review of the expiry fix (eighth round): the credential was checked when the grant was
    found, then the policy decided under it (time passes), and the grants were spent on a call
    the pipeline then refused TOKEN_EXPIRED. Checked again right before they are used."""
    clock = Clock()
    expiring = dataclasses.replace(STEVE, attributes={"exp": clock.now + 10})
    async with service_on(new_database(), clock) as service:
        stage = HoldForApproval(service, hold_timeout_seconds=20, clock=clock)
        security, owners = grant(SAM, row_budget=5), grant(OLGA)  # as SECURITY asks
        await insert(service, security, owners)  # the binding: the same requester, exp aside

        async def token_runs_out(_: dict[str, Any]) -> None:
            clock.now += 20

        with grants_noted() as noted:
            answer = await asyncio.wait_for(
                stage.hold(call(), expiring, POLICY_INPUT, SECURITY, Policy(token_runs_out)), 30
            )
        assert not answer.allow and answer.fail_reason == "TOKEN_EXPIRED"
        assert noted == []
        for each in (security, owners):
            assert (await service.get_grant(each.id)).used_by is None  # type: ignore[union-attr]


async def test_the_grants_a_call_is_released_under_are_noted_for_its_record(
    new_database: Callable[[], Any],
) -> None:
    async with service_on(new_database()) as service:
        stage = HoldForApproval(service, hold_timeout_seconds=20)
        security, owners = grant(SAM, row_budget=5), grant(OLGA)  # as SECURITY asks
        await insert(service, security, owners)
        with grants_noted() as noted:
            answer = await asyncio.wait_for(stage.hold(call(), STEVE, POLICY_INPUT, SECURITY, Policy()), 30)
        assert answer.allow
        assert sorted(noted) == sorted([(security.id, security.request_id), (owners.id, owners.request_id)])


async def test_a_security_grant_stored_with_its_approvers_other_groups_never_stands_in_for_a_data_owner(
    stage: HoldForApproval,
) -> None:
    """Review finding: a grant stored before votes were narrowed, made on a security request
    by someone also in data-owners, carries both groups; read as stored, it met the data
    owner's round too (released, no data-owners request opened). Read back, it counts as
    security only: the call is asked for a data owner."""
    sam_both = Subject.proven("jwt", "sam", issuer="https://idp.test", groups=["security", "data-owners"])
    legacy = grant(sam_both, single_use=False)
    assert dict(legacy.approvers)[sam_both.id] == ("data-owners", "security")
    await insert(stage.service, legacy, asked=("security",))
    with pytest.raises(ApprovalPending) as pending:
        await asyncio.wait_for(stage.hold(call(*ASYNC), STEVE, POLICY_INPUT, PLAIN_SECURITY, Policy()), 30)
    asked = await stage.service.get(pending.value.details["approval_id"])
    assert asked is not None and asked.requirement.approver_groups == ("data-owners",)
