"""A call that needs approvals of two requirements, through a real gateway process.

A caller in data-stewards (confidential: in clear after one data-owners approval) and in
break-glass (restricted: after two security approvals) asks for a reply with both. Review
finding (rev-labels 4): the call was held for security only, and two security approvals
released the SSN in clear though no data owner approved. Now each requirement is met by
approvers of its own groups: the call is held for security, then for a data owner, and
released only when both have granted."""

from __future__ import annotations

import re

from tests.approvals.conftest import Stack, grpc_infer, held, person, token

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
ASYNC = {"x-labelgate-approval": "async"}
OWNERS_REASON = "confidential data needs 1 approval(s) from data-owners"


def _grant_security(stack: Stack, approval_id: str) -> None:
    for name in ("sam", "sol"):
        answer = stack.api.approve(approval_id, token(person(name), "security"), "incident INC-7")
        assert answer.status_code == 200, answer.text
    assert stack.api.show(approval_id, token(person("sec"), "security"))["state"] == "granted"


def test_a_held_call_waits_for_each_requirement_and_then_shows_both(stack: Stack) -> None:
    bob = person("bob")
    bob_token = token(bob, "data-stewards", "break-glass")
    owner_token = token(person("owner"), "data-owners")
    call = held(stack.grpc, bob_token)

    first = stack.api.pending_of(bob, token(person("sec"), "security"))
    assert (first["approver_groups"], first["min_approvals"]) == (["security"], 2)
    _grant_security(stack, first["id"])

    # Two security approvals do not stand in for a data owner's: held again, for one.
    second = stack.api.pending_of(bob, owner_token)
    assert second["id"] != first["id"]
    assert (second["approver_groups"], second["min_approvals"]) == (["data-owners"], 1)
    assert second["policy_reason"] == OWNERS_REASON
    assert not call.done(), "the SSN must wait for a data owner"

    assert stack.api.approve(second["id"], owner_token, "ticket CS-7").json()["state"] == "granted"
    result = call.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
    assert all(result["outputs"]["account_secret"]["values"]), "restricted is visible after security's grant"


def test_a_data_owners_denial_refuses_the_call_security_granted(stack: Stack) -> None:
    bob = person("bob")
    owner_token = token(person("owner"), "data-owners")
    call = held(stack.grpc, token(bob, "data-stewards", "break-glass"))
    _grant_security(stack, stack.api.pending_of(bob, token(person("sec"), "security"))["id"])

    second = stack.api.pending_of(bob, owner_token)
    assert stack.api.deny(second["id"], owner_token, "no ticket").json()["state"] == "denied"
    result = call.result(timeout=60)
    assert result["error"]["code"] == "PERMISSION_DENIED", result
    assert "no ticket" in result["error"]["message"]


def test_async_mode_asks_for_the_next_requirement_when_the_first_is_named(stack: Stack) -> None:
    bob = person("bob")
    bob_token = token(bob, "data-stewards", "break-glass")
    owner_token = token(person("owner"), "data-owners")
    pending = grpc_infer(stack.grpc, bob_token, **ASYNC)
    assert (pending.code, pending.reason) == ("FAILED_PRECONDITION", "APPROVAL_PENDING"), pending
    first = pending.metadata["approval_id"]
    _grant_security(stack, first)

    # Naming the security grant: the SSN still needs a data owner, asked for now.
    named = grpc_infer(stack.grpc, bob_token, **ASYNC, **{"x-labelgate-approval-id": first})
    assert (named.code, named.reason) == ("FAILED_PRECONDITION", "APPROVAL_PENDING"), named
    second = named.metadata["approval_id"]
    assert second != first and OWNERS_REASON in named.message
    assert stack.api.show(second, owner_token)["approver_groups"] == ["data-owners"]

    assert stack.api.approve(second, owner_token).json()["state"] == "granted"
    done = grpc_infer(stack.grpc, bob_token, **{"x-labelgate-approval-id": second})
    assert done.code == "OK", done
    assert all(SSN.match(value.decode()) for value in done.outputs["ssn"])
    assert all(done.outputs["account_secret"])
    # Both grants live: a repeat call of the same query passes at once.
    assert grpc_infer(stack.grpc, bob_token).code == "OK"


def test_a_security_approver_who_is_a_data_owner_too_does_not_approve_for_data_owners(stack: Stack) -> None:
    """Review finding: a vote recorded all of the approver's groups, and the policy counts each
    requirement by the groups in ``approval.approvers``. Two security members, one of them a
    data owner too, approving the security round released the SSN with no data-owners request
    ever opened. A vote now counts in the groups its request asked for only."""
    bob = person("bob")
    owner_token = token(person("owner"), "data-owners")
    call = held(stack.grpc, token(bob, "data-stewards", "break-glass"))
    first = stack.api.pending_of(bob, token(person("sec"), "security"))
    assert first["approver_groups"] == ["security"]
    sam, sol = token(person("sam"), "security", "data-owners"), token(person("sol"), "security")
    for approver in (sam, sol):
        answer = stack.api.approve(first["id"], approver, "incident INC-7")
        assert answer.status_code == 200, answer.text
    assert [vote["groups"] for vote in stack.api.show(first["id"], sol)["votes"]] == [["security"]] * 2

    second = stack.api.pending_of(bob, owner_token)
    assert (second["approver_groups"], second["min_approvals"]) == (["data-owners"], 1)
    assert not call.done(), "the SSN must wait for a data owner's own approval"
    assert stack.api.approve(second["id"], owner_token, "ticket CS-7").json()["state"] == "granted"
    result = call.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
