"""How long a held call waits: the policy's ``hold_seconds`` (else the config's), cut short by
the caller's deadline, which then ends the call with DEADLINE_EXCEEDED and expires the request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from labelgate.approvals import deadline
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.errors import HoldDeadlineExceeded
from labelgate.approvals.hold import note_request
from labelgate.approvals.model import State
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.stage import HoldForApproval
from labelgate.auth import Subject
from labelgate.calls import Call
from labelgate.policy.contract import Decision, validate_result
from tests.approvals.conftest import Stack, grpc_infer, person, token

METHOD = "/inference.GRPCInferenceService/ModelInfer"
STEVE = Subject.proven("jwt", "steve", issuer="https://idp.test", groups=["data-stewards"])
POLICY_INPUT = {
    "phase": "request",
    "labels": ["confidential"],
    "fields": [{"path": "outputs.ssn", "labels": ["confidential"]}],
    "request": {"model": "customer-profile", "digest": "d" * 64, "inputs": [], "requested_outputs": []},
}


def held_decision(**extra: object) -> Decision:
    requirement = {
        "approver_groups": ["data-owners"],
        "min_approvals": 1,
        "grant_ttl_seconds": 900,
        "reason": "confidential data needs 1 approval(s) from data-owners",
        **extra,
    }
    result = {
        "allow": False,  # held: allowing and holding at once is a contradictory result
        "reason": "",
        "mask": [],
        "require_approval": requirement,
        "cache_ttl_seconds": 0,
    }
    return validate_result(result)


def call() -> Call:
    return Call(METHOD, "ipv4:127.0.0.1:1", (), {}, "sess-1", f"req-{time.monotonic_ns()}")


async def never(_: dict) -> Decision:
    raise AssertionError("nothing was granted: the policy is not asked again")


@pytest.fixture(autouse=True)
def noted_request() -> Iterator[None]:
    """What a transport notes of each call (a call with nothing noted is not held)."""
    note_request(b"x" * 100)
    yield
    note_request(None)


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[HoldForApproval]:
    service = ApprovalService(SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="http://inbox.test")
    await service.start(sweep=False)
    try:
        yield HoldForApproval(service, hold_timeout_seconds=60, deadline_margin_seconds=0.25)
    finally:
        await service.close()


def test_the_result_schema_accepts_a_hold_window_and_refuses_a_bad_one() -> None:
    assert held_decision(hold_seconds=5).require_approval.hold_seconds == 5  # type: ignore[union-attr]
    assert held_decision().require_approval.hold_seconds is None  # type: ignore[union-attr]
    assert held_decision(hold_seconds=0).fail_reason == "POLICY_RESULT_INVALID"
    assert held_decision(hold_seconds="5").fail_reason == "POLICY_RESULT_INVALID"


async def test_the_policy_window_replaces_the_configured_one(stage: HoldForApproval) -> None:
    decision = held_decision(hold_seconds=1)
    assert stage.hold_window(decision) == 1.0
    assert stage.hold_window(held_decision()) == 60.0
    answer = await stage.hold(call(), STEVE, POLICY_INPUT, decision, never)
    assert not answer.allow and answer.fail_reason == "APPROVAL_EXPIRED"
    [request] = await stage.service.visible_to(STEVE, [State.EXPIRED])
    assert request.expires_at - request.created_at == pytest.approx(1.0, abs=0.2)


async def test_the_configured_window_caps_a_longer_policy_window(tmp_path: Path) -> None:
    """A policy may ask for up to 86400 s; the operator's ``hold_timeout_seconds`` is the
    ceiling: the call is held no longer, and its request expires with it."""
    service = ApprovalService(SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="http://inbox.test")
    await service.start(sweep=False)
    try:
        capped = HoldForApproval(service, hold_timeout_seconds=1, deadline_margin_seconds=0.25)
        decision = held_decision(hold_seconds=86400)
        assert capped.hold_window(decision) == 1.0
        answer = await capped.hold(call(), STEVE, POLICY_INPUT, decision, never)
        assert not answer.allow and answer.fail_reason == "APPROVAL_EXPIRED"
        [request] = await service.visible_to(STEVE, [State.EXPIRED])
        assert request.expires_at - request.created_at == pytest.approx(1.0, abs=0.2)
    finally:
        await service.close()


async def test_a_client_deadline_shorter_than_the_window_ends_the_hold_there(
    stage: HoldForApproval,
) -> None:
    token = deadline.set_deadline(1.5)
    try:
        with pytest.raises(HoldDeadlineExceeded) as raised:
            await stage.hold(call(), STEVE, POLICY_INPUT, held_decision(hold_seconds=30), never)
    finally:
        deadline.reset_deadline(token)
    assert raised.value.reason == "APPROVAL_DEADLINE_EXCEEDED"
    request = await stage.service.get(raised.value.details["approval_id"])
    assert request is not None and request.state is State.EXPIRED
    assert request.expires_at - request.created_at == pytest.approx(1.25, abs=0.2)


async def test_a_token_expiring_before_the_window_ends_the_hold_there(stage: HoldForApproval) -> None:
    """A grant after the caller's credential expired releases nothing (the pipeline refuses it
    TOKEN_EXPIRED), so the hold, and the request approvers see, end with the token: here one
    presented beside a client certificate, 1.5 s from expiry, in a 30 s window."""
    behind = {"id": "jwt:https://idp.test#steve", "attributes": {"exp": time.time() + 1.5}}
    subject = Subject.proven(
        "mtls",
        "workload",
        groups=["data-stewards"],
        attributes={"also_verified_credentials": {"jwt": behind}},
    )
    token = deadline.set_deadline(30)  # the token, not the deadline, ends it: so it says
    try:
        answer = await stage.hold(call(), subject, POLICY_INPUT, held_decision(hold_seconds=30), never)
    finally:
        deadline.reset_deadline(token)
    assert not answer.allow and answer.fail_reason == "TOKEN_EXPIRED" and "fresh token" in answer.reason
    [request] = await stage.service.visible_to(subject, [State.EXPIRED])
    assert request.expires_at - request.created_at == pytest.approx(1.5, abs=0.3)


async def test_a_token_already_expired_is_not_held(stage: HoldForApproval) -> None:
    subject = Subject.proven("jwt", "steve", issuer="https://idp.test", attributes={"exp": time.time() - 1})
    answer = await stage.hold(call(), subject, POLICY_INPUT, held_decision(hold_seconds=30), never)
    assert answer.fail_reason == "APPROVAL_DEADLINE_TOO_SHORT" and "token" in answer.reason


def test_a_grpc_client_deadline_ends_the_held_call_with_deadline_exceeded(stack: Stack) -> None:
    steward, owner = person("steward"), person("olivia")
    answer = grpc_infer(stack.grpc, token(steward, "data-stewards"), timeout=3)
    assert answer.code == "DEADLINE_EXCEEDED", answer
    assert answer.reason == "APPROVAL_DEADLINE_EXCEEDED"
    approval_id = answer.metadata["approval_id"]
    shown = stack.api.show(approval_id, token(owner, "data-owners"))
    assert shown["state"] == "expired"
    assert "deadline" in answer.message


async def test_a_call_held_for_several_requirements_ends_by_the_first_rounds_window(
    stage: HoldForApproval,
) -> None:
    """Each round took a fresh window (review s13): a call needing two approvals could be held
    up to four times ``hold_timeout_seconds``. Every later round ends when the first would."""
    owner = Subject.proven("jwt", "olga", issuer="https://idp.test", groups=["data-owners"])
    guard = Subject.proven("jwt", "sam", issuer="https://idp.test", groups=["security"])
    second = held_decision(
        approver_groups=["security"], reason="restricted data needs 1 approval(s) from security"
    )

    async def after_the_first_grant(_: dict) -> Decision:
        return second

    async def approve_each_round() -> list[float]:
        ends = []
        for approver in (owner, guard):
            while True:
                pending = await stage.service.visible_to(approver, [State.PENDING])
                if pending:
                    break
                await asyncio.sleep(0.01)
            [request] = pending
            ends.append(request.expires_at)
            if approver is owner:
                await stage.service.approve(approver, request.id)
            else:
                await stage.service.deny(approver, request.id, "no")
        return ends

    approving = asyncio.create_task(approve_each_round())
    answer = await stage.hold(call(), STEVE, POLICY_INPUT, held_decision(), after_the_first_grant)
    first_end, second_end = await asyncio.wait_for(approving, 30)
    assert not answer.allow
    assert second_end <= first_end
