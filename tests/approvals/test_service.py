"""The approval service on both stores: SQLite (a file) and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from labelgate.approvals import events
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.errors import ApprovalConflict, ApprovalsUnavailable
from labelgate.approvals.model import Binding, FieldAtStake, Requirement, State
from labelgate.approvals.postgres import PostgresDatabase
from labelgate.approvals.service import ApprovalService, Draft
from labelgate.auth import Subject
from labelgate.errors import NotFound, PermissionDenied
from tests.support.postgres import PostgresServer
from tests.support.procs import free_port

METHOD = "/inference.GRPCInferenceService/ModelInfer"
OWNERS = Requirement(("data-owners",), 1, 900, "confidential data needs 1 approval(s) from data-owners")
SECURITY = Requirement(("security",), 2, 900, "restricted data needs 2 approval(s) from security")
STEVE = Subject("steve", ("data-stewards",))
OLIVIA = Subject("olivia", ("data-owners",))
DIGEST = "a" * 64  # the request digest of the held call


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable:
    """Makes connections to one fresh store (call it again for a second process's view)."""
    if request.param == "sqlite":
        return lambda: SqliteDatabase(tmp_path / "approvals.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    dsn = server.create_database()
    return lambda: PostgresDatabase(dsn)


@contextlib.asynccontextmanager
async def running_service(new_database: Callable, **kwargs) -> AsyncIterator[ApprovalService]:
    service = ApprovalService(
        new_database(), node_id=kwargs.pop("node_id", "node-a"), link_base="http://inbox.test", **kwargs
    )
    await service.start(sweep=False)
    try:
        yield service
    finally:
        await service.close()


def draft(
    subject: Subject = STEVE,
    requirement: Requirement = OWNERS,
    *,
    model: str = "customer-profile",
    seconds: float = 60,
    mode: str = "hold",
    labels: tuple[str, ...] = ("confidential", "public"),
    digest: str = DIGEST,
) -> Draft:
    return Draft(
        binding=Binding(subject.id, METHOD, model, labels, digest),
        requester_groups=subject.groups,
        phase="request",
        fields=(
            FieldAtStake("outputs.ssn", ("confidential",)),
            FieldAtStake("outputs.customer_id", ("public",)),
        ),
        requirement=requirement,
        justification="ticket 7",
        mode=mode,  # type: ignore[arg-type]
        expires_at=time.time() + seconds,
        call_request_id="req-1",
        session_id="sess-1",
    )


@pytest.fixture
def recorded() -> list[tuple[str, dict]]:
    seen: list[tuple[str, dict]] = []

    def sink(event: str, payload: dict) -> None:
        seen.append((event, payload))

    events.add_sink(sink)
    yield seen
    events.remove_sink(sink)


async def test_an_approval_made_by_another_process_wakes_the_held_call(
    new_database: Callable, recorded
) -> None:
    async with running_service(new_database) as gateway, running_service(new_database, node_id="b") as other:
        request = await gateway.open(draft())
        waiter = asyncio.create_task(gateway.wait(request.id, time.time() + 30))
        await asyncio.sleep(0)
        assert not waiter.done()
        granted = await other.approve(OLIVIA, request.id, "ticket checked")
        assert granted.state is State.GRANTED and granted.grant_id
        final = await asyncio.wait_for(waiter, 10)
    assert final.state is State.GRANTED
    grant = granted.grant_id
    names = [event for event, payload in recorded if payload.get("approval_id") == request.id]
    assert names[:3] == ["approval.requested", "approval.vote", "approval.granted"]
    vote = next(p for e, p in recorded if e == "approval.vote")
    assert vote["approver"] == "olivia" and vote["reason"] == "ticket checked" and vote["at"]
    assert grant.startswith("grant-")


async def test_two_people_from_security_and_a_person_counts_once(new_database: Callable) -> None:
    bea = Subject("bea", ("break-glass",))
    sam, sol = Subject("sam", ("security", "data-owners")), Subject("sol", ("security",))
    async with running_service(new_database) as service:
        request = await service.open(draft(bea, SECURITY, labels=("restricted",)))
        after_one = await service.approve(sam, request.id)
        assert after_one.state is State.PENDING
        with pytest.raises(ApprovalConflict) as twice:
            await service.approve(sam, request.id)
        assert twice.value.reason == "ALREADY_VOTED"
        with pytest.raises(NotFound):  # not an approver of this one: it is not even shown
            await service.approve(OLIVIA, request.id)
        done = await service.approve(sol, request.id)
        assert done.state is State.GRANTED and done.resolution == "approved by sam, sol"
        grant = await service.get_grant(done.grant_id)
        assert grant is not None and grant.approved_by == ["sam", "sol"]
        # The policy gets each approver's groups (as they voted), to count each requirement
        # by its own approver groups: only those the request asked for (sam is a data owner
        # too, and was not asked as one).
        assert grant.to_policy() == {
            "state": "granted",
            "grant_id": grant.id,
            "approved_by": ["sam", "sol"],
            "approvers": [
                {"id": "sam", "groups": ["security"]},
                {"id": "sol", "groups": ["security"]},
            ],
        }


async def test_a_vote_is_recorded_in_the_groups_the_request_asked_for_only(
    new_database: Callable, recorded
) -> None:
    """Review finding: a vote recorded all of the approver's groups, copied into the grant, so
    a data owner who is in security too made, by approving a data-owners request, a grant that
    released the call when the policy held it for security (no security request opened)."""
    olga = Subject("olga", ("data-owners", "security", "analysts"))
    one_from_security = Requirement(
        ("security",), 1, 900, "restricted data needs 1 approval(s) from security"
    )
    async with running_service(new_database) as service:
        request = await service.open(draft(mode="async"))
        done = await service.approve(olga, request.id, "ticket 7")
        assert done.state is State.GRANTED and done.grant_id is not None
        assert [vote.groups for vote in done.votes] == [("data-owners",)]
        grant = await service.get_grant(done.grant_id)
        assert grant is not None and grant.approvers == (("olga", ("data-owners",)),)
        binding = Binding("steve", METHOD, "customer-profile", ("public", "confidential"), DIGEST)
        assert await service.find_grant(binding, OWNERS) is not None
        assert await service.find_grant(binding, one_from_security) is None
    vote = next(p for e, p in recorded if e == "approval.vote" and p.get("approval_id") == request.id)
    assert vote["groups"] == ["data-owners"]


ONE_FROM_SECURITY = Requirement(("security",), 1, 900, "restricted data needs 1 approval(s) from security")
BINDING = Binding("steve", METHOD, "customer-profile", ("public", "confidential"), DIGEST)


async def test_a_grant_stored_with_an_approvers_other_groups_counts_only_in_those_its_request_asked(
    new_database: Callable,
) -> None:
    """Review finding: a grant stored before votes were narrowed (its approvers with all their
    groups) was used as stored, so for up to grant_ttl_seconds after an upgrade a security
    grant approved by someone also in data-owners met a data-owners requirement, and the
    policy was told so. Read back, it counts in the groups its own request asked for only."""
    sam = Subject("sam", ("security", "data-owners"))
    async with running_service(new_database) as service:
        request = await service.open(dataclasses.replace(draft(mode="async"), requirement=ONE_FROM_SECURITY))
        done = await service.approve(sam, request.id)
        assert done.state is State.GRANTED and done.grant_id is not None
        async with service.db.transaction() as tx:  # the row as the release before wrote it
            await tx.execute(
                "UPDATE approval_grants SET approvers = ? WHERE id = ?",
                (json.dumps([["sam", ["data-owners", "security"]]]), done.grant_id),
            )
        assert await service.find_grant(BINDING, OWNERS) is None
        found = await service.find_grant(BINDING, ONE_FROM_SECURITY)
        assert found is not None and found.approvers == (("sam", ("security",)),)
        grant = await service.get_grant(done.grant_id)
        assert grant is not None and grant.to_policy()["approvers"] == [{"id": "sam", "groups": ["security"]}]


async def test_a_grant_whose_request_is_gone_counts_for_no_group(new_database: Callable) -> None:
    """Nothing left says what its approvers were asked: fail closed."""
    async with running_service(new_database) as service:
        request = await service.open(draft(mode="async"))
        done = await service.approve(OLIVIA, request.id)
        assert done.grant_id is not None and await service.find_grant(BINDING, OWNERS) is not None
        async with service.db.transaction() as tx:
            for table in ("approval_votes", "approval_request_groups"):
                await tx.execute(f"DELETE FROM {table} WHERE request_id = ?", (request.id,))  # noqa: S608
            await tx.execute("DELETE FROM approval_requests WHERE id = ?", (request.id,))
        assert await service.find_grant(BINDING, OWNERS) is None
        grant = await service.get_grant(done.grant_id)
        assert grant is not None and grant.approvers == ()


async def test_a_granted_request_is_kept_as_long_as_its_grant(new_database: Callable) -> None:
    """A grant counts only with its request: a retention shorter than grant_ttl_seconds must
    not purge the request under a live grant (and so end the grant early)."""
    clock = Clock()
    async with running_service(new_database, clock=clock, retention_seconds=60) as service:
        request = await service.open(draft(mode="async"))
        done = await service.approve(OLIVIA, request.id)
        assert done.grant_id is not None
        clock.now += 120
        await service.sweep()
        assert await service.get(request.id) is not None
        assert await service.find_grant(BINDING, OWNERS) is not None
        clock.now += 900
        await service.sweep()
        assert await service.get(request.id) is None
        assert await service.get_grant(done.grant_id) is None


async def test_a_policy_that_shortens_grant_ttl_shortens_the_grants_already_made(
    new_database: Callable,
) -> None:
    """Review finding: a grant made under ``grant_ttl_seconds: 3600`` was still found 10 min
    later under a policy revision that says 60: only the expiry set at grant time counted."""
    clock = Clock()
    hour = dataclasses.replace(OWNERS, grant_ttl_seconds=3600)
    minute = dataclasses.replace(OWNERS, grant_ttl_seconds=60)
    binding = Binding("steve", METHOD, "customer-profile", ("public", "confidential"), DIGEST)
    async with running_service(new_database, clock=clock) as service:
        request = await service.open(dataclasses.replace(draft(mode="async"), requirement=hour))
        await service.approve(OLIVIA, request.id)
        clock.now += 30
        assert await service.find_grant(binding, minute) is not None
        clock.now += 570
        assert await service.find_grant(binding, hour) is not None
        assert await service.find_grant(binding, minute) is None


async def test_nobody_decides_their_own_request_admins_included(new_database: Callable) -> None:
    ada = Subject("ada", ("data-stewards", "data-owners", "admins"))
    async with running_service(new_database, admin_groups=["admins"]) as service:
        request = await service.open(draft(ada))
        for vote in (service.approve, service.deny):
            with pytest.raises(PermissionDenied) as refused:
                await vote(ada, request.id, "mine")
            assert refused.value.reason == "SELF_APPROVAL"
        admin = Subject("root", ("admins",))
        with pytest.raises(PermissionDenied):
            await service.approve(admin, request.id)
        outsider = Subject("eve", ("analysts",))
        with pytest.raises(NotFound):
            await service.approve(outsider, request.id)
        assert [r.id for r in await service.visible_to(admin)] == [request.id]
        assert await service.visible_to(outsider) == []
        # A viewer group (admin_groups, now viewer_groups) sees, and never votes: no deny either.
        with pytest.raises(PermissionDenied) as refused:
            await service.deny(admin, request.id, "duplicate")
        assert refused.value.reason == "NOT_AN_APPROVER"
        assert (await service.show(admin, request.id)).state is State.PENDING
        owner = Subject("olivia", ("data-owners",))
        denied = await service.deny(owner, request.id, "duplicate")
        assert denied.state is State.DENIED and denied.resolution == "denied by olivia: duplicate"
        assert [(v.approver, v.verdict, v.reason) for v in denied.votes] == [("olivia", "deny", "duplicate")]


async def test_a_request_expires_on_its_own_and_late_votes_are_refused(
    new_database: Callable, recorded
) -> None:
    clock = Clock()
    async with running_service(new_database, clock=clock) as service:
        request = await service.open(draft(seconds=5))
        late = await service.open(draft(seconds=5))
        clock.now += 6
        await service.sweep(purge=False)
        assert (await service.get(request.id)).state is State.EXPIRED
        with pytest.raises(ApprovalConflict) as refused:
            await service.approve(OLIVIA, late.id)
        assert refused.value.reason == "APPROVAL_NOT_PENDING"
        assert (await service.get(late.id)).state is State.EXPIRED
    assert ("approval.expired", request.id) in [(e, p.get("approval_id")) for e, p in recorded]


async def test_a_held_wait_expires_at_its_deadline(new_database: Callable) -> None:
    async with running_service(new_database) as service:
        request = await service.open(draft())
        final = await asyncio.wait_for(service.wait(request.id, time.time() + 0.3), 10)
    assert final.state is State.EXPIRED and "time ran out" in final.resolution


async def test_resolved_requests_are_kept_for_the_retention_period(new_database: Callable) -> None:
    clock = Clock()
    async with running_service(new_database, clock=clock, retention_seconds=3600) as service:
        request = await service.open(draft(mode="async"))
        await service.deny(OLIVIA, request.id, "no")
        pending = await service.open(draft(mode="async", seconds=10_000))
        clock.now += 3000
        await service.sweep()
        assert await service.get(request.id) is not None
        clock.now += 1000
        await service.sweep()
        assert await service.get(request.id) is None
        assert (await service.get(pending.id)).state is State.PENDING


async def test_a_restarted_gateway_marks_the_calls_it_held_abandoned(new_database: Callable) -> None:
    crashed = ApprovalService(new_database(), node_id="node-a", link_base="http://inbox.test")
    await crashed.start(sweep=False)
    held = await crashed.open(draft())
    async_request = await crashed.open(draft(mode="async"))
    await crashed.db.close()  # a crash: nothing is cleaned up
    async with running_service(new_database, node_id="node-b") as elsewhere:
        other_node = await elsewhere.open(draft())
    async with running_service(new_database, node_id="node-a") as restarted:
        assert (await restarted.get(held.id)).state is State.ABANDONED
        assert "restarted" in (await restarted.get(held.id)).resolution
        # An async request holds no call; another node's call is not ours to abandon.
        assert (await restarted.get(async_request.id)).state is State.PENDING
        assert (await restarted.get(other_node.id)).state is State.ABANDONED  # node-b shut down cleanly


async def test_pending_requests_survive_a_restart(new_database: Callable) -> None:
    async with running_service(new_database) as first:
        request = await first.open(draft(mode="async"))
    async with running_service(new_database, node_id="approvals-api") as second:
        assert [r.id for r in await second.visible_to(OLIVIA)] == [request.id]
        assert (await second.approve(OLIVIA, request.id)).state is State.GRANTED


async def test_grants_are_bound_to_subject_method_model_and_labels(new_database: Callable) -> None:
    clock = Clock()
    async with running_service(new_database, clock=clock) as service:
        request = await service.open(draft(mode="async"))
        await service.approve(OLIVIA, request.id)
        binding = Binding("steve", METHOD, "customer-profile", ("public", "confidential"), DIGEST)
        assert (await service.find_grant(binding, OWNERS)) is not None
        assert (
            await service.find_grant(
                Binding("mallory", METHOD, "customer-profile", binding.labels, DIGEST), OWNERS
            )
            is None
        )
        assert (
            await service.find_grant(Binding("steve", METHOD, "sentiment", binding.labels, DIGEST), OWNERS)
            is None
        )
        assert (
            await service.find_grant(
                Binding("steve", METHOD, "customer-profile", ("restricted",), DIGEST), OWNERS
            )
            is None
        )
        assert (
            await service.find_grant(
                Binding("steve", "/x.Y/Z", "customer-profile", binding.labels, DIGEST), OWNERS
            )
            is None
        )
        # Another query (other inputs or outputs) is not covered: the grant is for this one.
        other_query = Binding("steve", METHOD, "customer-profile", binding.labels, "b" * 64)
        assert await service.find_grant(other_query, OWNERS) is None
        # A one-person grant never satisfies a two-person requirement.
        assert await service.find_grant(binding, SECURITY) is None
        clock.now += 901
        assert await service.find_grant(binding, OWNERS) is None


async def test_the_sweeper_expires_requests_nobody_waits_for(new_database: Callable) -> None:
    service = ApprovalService(new_database(), node_id="n", link_base="http://x", sweep_interval_seconds=0.05)
    await service.start(sweep=True)
    try:
        request = await service.open(draft(mode="async", seconds=0.2))
        deadline = time.monotonic() + 10
        while (await service.get(request.id)).state is State.PENDING:
            assert time.monotonic() < deadline, "the sweeper did not expire the request"
            await asyncio.sleep(0.05)
        assert (await service.get(request.id)).state is State.EXPIRED
    finally:
        await service.close()


async def test_an_unreachable_store_refuses_instead_of_guessing(tmp_path: Path) -> None:
    service = ApprovalService(SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="http://x")
    await service.start(sweep=False)
    await service.db.close()
    with pytest.raises(ApprovalsUnavailable):
        await service.open(draft())
    nowhere = ApprovalService(
        PostgresDatabase(f"postgresql://nobody@127.0.0.1:{free_port()}/none"),
        node_id="n",
        link_base="http://x",
    )
    with pytest.raises(ApprovalsUnavailable) as refused:
        await nowhere.start(sweep=False)
    assert refused.value.reason == "APPROVALS_STORE_UNREACHABLE"


async def test_a_user_behind_a_workload_certificate_sees_their_request_in_their_list(
    new_database: Callable,
) -> None:
    # Held as every identity the call proved (``requester_of``): the user found it by id but
    # not in their own list, which matched the stored requester whole (found by review).
    from labelgate.auth.subject import requester_of

    workload = Subject.proven("mtls", "spiffe://corp/ns/batch/sa/reporting")
    olivia_id = "jwt:https://idp#olivia"
    behind = dataclasses.replace(workload, attributes={"also_verified": {"jwt": olivia_id}})
    async with running_service(new_database) as service:
        held = draft(behind)
        binding = dataclasses.replace(held.binding, subject=requester_of(behind))
        request = await service.open(dataclasses.replace(held, binding=binding))
        olivia = Subject.proven("jwt", "olivia", issuer="https://idp")
        assert [r.id for r in await service.visible_to(olivia)] == [request.id]
        assert [r.id for r in await service.visible_to(workload)] == [request.id]
        for other in ("jwt:https://idp#oli", "jwt:https://idp#OLIVIA", "jwt:https://idp#olivia2"):
            assert await service.visible_to(Subject(other, ())) == [], other
