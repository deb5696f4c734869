"""Held calls, grants and who may approve, through a real gateway process and its REST API."""

from __future__ import annotations

import re

from tests.approvals.conftest import CUSTOMER, Stack, dev_id, grpc_infer, held, infer, person, token

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
ASYNC = {"x-labelgate-approval": "async"}


def ask_async(stack: Stack, bearer: str, model: str = CUSTOMER) -> str:
    """An async-mode request; returns its approval id."""
    answer = grpc_infer(stack.grpc, bearer, model=model, **ASYNC)
    assert answer.code == "FAILED_PRECONDITION", answer
    assert answer.reason == "APPROVAL_PENDING"
    return answer.metadata["approval_id"]


def test_held_call_is_released_by_an_approval_and_then_sees_clear_values(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    steward_token, owner_token = token(steward, "data-stewards"), token(owner, "data-owners")

    call = held(stack.grpc, steward_token, **{"x-labelgate-justification": "ticket CS-1042"})
    item = stack.api.pending_of(steward, owner_token)

    assert item["mode"] == "hold"
    assert item["justification"] == "ticket CS-1042"
    assert item["policy_reason"] == "confidential data needs 1 approval(s) from data-owners"
    assert item["approver_groups"] == ["data-owners"] and item["min_approvals"] == 1
    assert "confidential" in item["labels"]
    assert {"path": "outputs.ssn", "labels": ["confidential"]} in item["fields"]
    assert item["link"].endswith(f"/inbox/{item['id']}")
    assert not call.done(), "the call must be held until someone decides"

    approved = stack.api.approve(item["id"], owner_token, "ticket checked")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "granted"
    assert approved.json()["votes"][0]["approver"] == dev_id(owner)
    assert approved.json()["votes"][0]["reason"] == "ticket checked"

    result = call.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
    # The grant unlocks confidential only: restricted stays nulled for data-stewards.
    assert result["outputs"]["account_secret"]["values"] == ["", ""]

    # A repeat call within the grant's TTL passes at once, without a new request.
    again = infer(stack.grpc, steward_token, timeout=10)
    assert all(SSN.match(value) for value in again["outputs"]["ssn"]["values"])
    mine = stack.api.get("/api/v1/approvals?state=all", steward_token).json()["items"]
    assert [i["id"] for i in mine] == [item["id"]]

    # Notifications: Slack blocks carry the deep link; the generic payload has the request.
    slack = stack.receiver.wait_for(
        "/slack", lambda b: item["id"] in b["text"] and "Approval needed" in b["text"]
    )
    buttons = [e for block in slack["blocks"] if block["type"] == "actions" for e in block["elements"]]
    assert buttons[0]["url"] == item["link"]
    granted = stack.receiver.wait_for(
        "/generic", lambda b: b["event"] == "approval.granted" and b["approval"]["id"] == item["id"]
    )
    assert granted["approval"]["grant_id"] and granted["link"] == item["link"]


def test_a_denial_refuses_the_held_call_with_the_approvers_reason(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    owner_token = token(owner, "data-owners")
    call = held(stack.grpc, token(steward, "data-stewards"))
    item = stack.api.pending_of(steward, owner_token)

    denied = stack.api.deny(item["id"], owner_token, "no ticket for this customer")
    assert denied.status_code == 200 and denied.json()["state"] == "denied"

    result = call.result(timeout=60)
    assert result["error"]["code"] == "PERMISSION_DENIED"
    assert "no ticket for this customer" in result["error"]["message"]
    assert owner in result["error"]["message"]


def test_a_held_call_expires_at_the_clients_deadline_and_says_why(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    answer = grpc_infer(stack.grpc, token(steward, "data-stewards"), timeout=2.5)

    # The gateway answers just before the deadline, so the caller learns why (the approval
    # expired, its id), not only that its own timer fired.
    assert answer.code == "DEADLINE_EXCEEDED", answer
    assert answer.reason == "APPROVAL_DEADLINE_EXCEEDED"
    assert "expired" in answer.message
    items = stack.api.get("/api/v1/approvals?state=resolved", token(owner, "data-owners")).json()["items"]
    mine = [i for i in items if i["requester"] == dev_id(steward)]
    assert [i["state"] for i in mine] == ["expired"]
    stack.receiver.wait_for(
        "/generic", lambda b: b["event"] == "approval.expired" and b["approval"]["id"] == mine[0]["id"]
    )


def test_async_mode_round_trip(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    steward_token, owner_token = token(steward, "data-stewards"), token(owner, "data-owners")

    answer = grpc_infer(stack.grpc, steward_token, **ASYNC, **{"x-labelgate-justification": "batch job 7"})
    assert answer.code == "FAILED_PRECONDITION" and answer.reason == "APPROVAL_PENDING"
    approval_id, link = answer.metadata["approval_id"], answer.metadata["link"]
    assert link == f"{stack.api.base}/inbox/{approval_id}"
    assert stack.api.show(approval_id, owner_token)["mode"] == "async"

    # Too early: still pending, same id.
    early = grpc_infer(stack.grpc, steward_token, **{"x-labelgate-approval-id": approval_id})
    assert early.code == "FAILED_PRECONDITION" and early.metadata["approval_id"] == approval_id

    assert stack.api.approve(approval_id, owner_token).json()["state"] == "granted"
    done = grpc_infer(stack.grpc, steward_token, **{"x-labelgate-approval-id": approval_id})
    assert done.code == "OK", done
    assert all(SSN.match(value.decode()) for value in done.outputs["ssn"])


def test_a_grant_serves_only_its_subject_and_its_model(stack: Stack) -> None:
    steward, other, owner = person("steward"), person("steward"), person("owner")
    steward_token, other_token = token(steward, "data-stewards"), token(other, "data-stewards")
    approval_id = ask_async(stack, steward_token)
    assert stack.api.approve(approval_id, token(owner, "data-owners")).json()["state"] == "granted"
    use_it = {"x-labelgate-approval-id": approval_id}

    stolen = grpc_infer(stack.grpc, other_token, **use_it)
    assert stolen.code == "PERMISSION_DENIED" and stolen.reason == "APPROVAL_NOT_YOURS", stolen

    other_model = grpc_infer(stack.grpc, steward_token, model="sentiment", **use_it)
    assert other_model.code == "PERMISSION_DENIED" and other_model.reason == "GRANT_NOT_APPLICABLE"
    assert "another model" in other_model.message

    # Without naming it, the grant still does not stretch: the other model asks anew.
    assert grpc_infer(stack.grpc, steward_token, model="sentiment", **ASYNC).code == "FAILED_PRECONDITION"
    # ...while the subject's own call on the granted model passes.
    assert grpc_infer(stack.grpc, steward_token).code == "OK"


def test_nobody_approves_their_own_request_and_only_approvers_approve(stack: Stack) -> None:
    ada = person("ada")  # a steward who is also a data owner and an administrator
    ada_token = token(ada, "data-stewards", "data-owners", "admins")
    approval_id = ask_async(stack, ada_token)

    for verdict in ("approve", "deny"):
        own = stack.api.post(f"/api/v1/approvals/{approval_id}/{verdict}", ada_token, {"reason": "mine"})
        assert own.status_code == 403 and own.json()["reason"] == "SELF_APPROVAL", own.text
        assert own.headers["content-type"] == "application/problem+json"

    analyst = stack.api.approve(approval_id, token(person("analyst"), "analysts"))
    assert analyst.status_code in (403, 404)  # an analyst may not even see it
    admin_token = token(person("admin"), "admins")
    admin = stack.api.approve(approval_id, admin_token)
    assert admin.status_code == 403 and admin.json()["reason"] == "NOT_AN_APPROVER"
    assert stack.api.show(approval_id, ada_token)["state"] == "pending"

    # A viewer group (the stack's ``admins``) sees the request and votes on nothing, not even a
    # deny: only the policy's approver groups decide (issue 19, finding 7).
    assert stack.api.show(approval_id, admin_token)["state"] == "pending"
    not_theirs = stack.api.deny(approval_id, admin_token, "duplicate request")
    assert not_theirs.status_code == 403 and not_theirs.json()["reason"] == "NOT_AN_APPROVER"
    assert stack.api.show(approval_id, ada_token)["state"] == "pending"
    cleared = stack.api.deny(approval_id, token(person("olivia"), "data-owners"), "duplicate request")
    assert cleared.status_code == 200 and cleared.json()["state"] == "denied"
    refused = grpc_infer(stack.grpc, ada_token, **{"x-labelgate-approval-id": approval_id})
    assert refused.code == "PERMISSION_DENIED" and "duplicate request" in refused.message


def test_break_glass_needs_two_distinct_people_from_security(stack: Stack) -> None:
    bea, sam, sol = person("bea"), person("sam"), person("sol")
    bea_token, sam_token = token(bea, "break-glass"), token(sam, "security")
    approval_id = ask_async(stack, bea_token)
    assert stack.api.show(approval_id, sam_token)["min_approvals"] == 2

    owner = stack.api.approve(approval_id, token(person("owner"), "data-owners"))
    assert owner.status_code in (403, 404)
    first = stack.api.approve(approval_id, sam_token, "on call incident 12")
    assert first.json()["state"] == "pending" and first.json()["approvals"] == 1
    twice = stack.api.approve(approval_id, sam_token)
    assert twice.status_code == 409 and twice.json()["reason"] == "ALREADY_VOTED"
    # Same person, another token with more groups: still one person.
    again = stack.api.approve(approval_id, token(sam, "security", "data-owners"))
    assert again.status_code == 409 and again.json()["reason"] == "ALREADY_VOTED"
    assert (
        grpc_infer(stack.grpc, bea_token, **{"x-labelgate-approval-id": approval_id}).code
        == "FAILED_PRECONDITION"
    )

    second = stack.api.approve(approval_id, token(sol, "security"), "confirmed")
    assert second.json()["state"] == "granted" and second.json()["approvals"] == 2
    done = grpc_infer(stack.grpc, bea_token, **{"x-labelgate-approval-id": approval_id})
    assert done.code == "OK", done
    assert all(value for value in done.outputs["account_secret"]), "restricted is visible after two approvals"


def test_the_api_answers_problems_and_publishes_its_schema(stack: Stack) -> None:
    no_token = stack.api.get("/api/v1/approvals", None)
    assert no_token.status_code == 401 and no_token.headers["content-type"] == "application/problem+json"
    assert no_token.json()["reason"] == "NO_CREDENTIALS" and no_token.headers["www-authenticate"] == "Bearer"
    bad_token = stack.api.get("/api/v1/approvals", "not-a-jwt")
    assert bad_token.status_code == 401 and bad_token.json()["status"] == 401

    owner_token = token(person("owner"), "data-owners")
    missing = stack.api.get("/api/v1/approvals/apr-0000000000000000", owner_token)
    assert missing.status_code == 404 and missing.json()["reason"] == "APPROVAL_NOT_FOUND"
    malformed = stack.api.get("/api/v1/approvals/../../etc", owner_token)
    assert (
        malformed.status_code in (400, 404)
        and malformed.headers["content-type"] == "application/problem+json"
    )
    no_reason = stack.api.post("/api/v1/approvals/apr-0000000000000000/deny", owner_token, {})
    assert no_reason.status_code == 400 and no_reason.json()["reason"] == "INVALID_REQUEST"
    assert "Traceback" not in no_reason.text

    schema = stack.api.get("/api/v1/openapi.json", None).json()
    assert {"/api/v1/approvals", "/api/v1/approvals/{approval_id}/approve"} <= set(schema["paths"])
    assert "bearerAuth" in str(schema["components"]["securitySchemes"]) or "HTTPBearer" in str(schema)
    # The admin listener still serves its health endpoints.
    assert stack.api.get("/healthz", None).json() == {"status": "alive"}
    assert stack.api.get("/readyz", None).status_code == 200
    assert "labelgate_approval_requests_total" in stack.api.get("/metrics", None).text
