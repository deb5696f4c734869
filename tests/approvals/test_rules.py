"""Who may approve, what counts, and what a grant covers: the pure rules."""

from __future__ import annotations

import dataclasses

import pytest

from labelgate.approvals import rules
from labelgate.approvals.model import ApprovalRequest, Binding, Grant, Requirement, State, Vote
from labelgate.approvals.stage import read_options
from labelgate.auth import Subject
from labelgate.errors import InvalidInput

NOW = 1_800_000_000.0
METHOD = "/inference.GRPCInferenceService/ModelInfer"
BINDING = Binding("bea", METHOD, "customer-profile", ("restricted", "public"), "d" * 64)
TWO_FROM_SECURITY = Requirement(("security",), 2, 900, "restricted data needs 2 approval(s) from security")


def request(**changes) -> ApprovalRequest:
    base = ApprovalRequest(
        id="apr-0123456789abcdef",
        state=State.PENDING,
        mode="hold",
        binding=BINDING,
        requester_groups=("break-glass",),
        phase="request",
        fields=(),
        requirement=TWO_FROM_SECURITY,
        justification="",
        created_at=NOW - 10,
        expires_at=NOW + 60,
        node_id="n",
        call_request_id="r",
        session_id="s",
    )
    return dataclasses.replace(base, **changes)


def vote(person: str, *groups: str, verdict: str = "approve") -> Vote:
    return Vote(person, groups, verdict, "", NOW)  # type: ignore[arg-type]


def test_labels_are_a_set_in_a_binding() -> None:
    assert Binding("a", "m", "x", ("public", "restricted", "public")).labels == ("public", "restricted")


def test_approvals_count_distinct_people_in_the_required_groups_never_the_requester() -> None:
    votes = [vote("sam", "security", "data-owners"), vote("bea", "security"), vote("olivia", "data-owners")]
    assert set(rules.counted_approvers(votes, TWO_FROM_SECURITY, "bea")) == {"sam"}
    assert rules.outcome(request(votes=tuple(votes))) is State.PENDING
    assert rules.outcome(request(votes=(*votes, vote("sol", "security")))) is State.GRANTED
    assert (
        rules.outcome(request(votes=(vote("sam", "security"), vote("sol", "security", verdict="deny"))))
        is State.DENIED
    )


def test_vote_refusals() -> None:
    pending = request()
    refusal = rules.vote_refusal(Subject("bea", ("security", "admins")), pending, "approve", ["admins"], NOW)
    assert refusal is not None and refusal.reason == "SELF_APPROVAL"
    refusal = rules.vote_refusal(Subject("root", ("admins",)), pending, "approve", ["admins"], NOW)
    assert refusal is not None and refusal.reason == "NOT_AN_APPROVER"
    # Viewer groups see every request and vote on none: not even a deny.
    refusal = rules.vote_refusal(Subject("root", ("admins",)), pending, "deny", ["admins"], NOW)
    assert refusal is not None and refusal.reason == "NOT_AN_APPROVER"
    assert "viewer groups" in refusal.message
    assert rules.vote_refusal(Subject("sam", ("security",)), pending, "deny", ["admins"], NOW) is None
    assert rules.vote_refusal(Subject("sam", ("security",)), pending, "approve", [], NOW) is None
    voted = request(votes=(vote("sam", "security"),))
    refusal = rules.vote_refusal(Subject("sam", ("security",)), voted, "approve", [], NOW)
    assert refusal is not None and refusal.reason == "ALREADY_VOTED"
    refusal = rules.vote_refusal(Subject("sam", ("security",)), pending, "approve", [], NOW + 61)
    assert refusal is not None and refusal.reason == "APPROVAL_NOT_PENDING"
    refusal = rules.vote_refusal(Subject("sam", ("security",)), request(state=State.DENIED), "deny", [], NOW)
    assert refusal is not None and refusal.reason == "APPROVAL_NOT_PENDING"


def test_what_a_grant_covers() -> None:
    grant = Grant(
        "grant-1", "apr-1", BINDING, (("sam", ("security",)), ("sol", ("security",))), NOW, NOW + 900
    )
    assert rules.grant_mismatch(grant, BINDING, NOW) is None
    assert rules.grant_mismatch(grant, dataclasses.replace(BINDING, subject="eve"), NOW) == (
        "the grant belongs to another subject"
    )
    assert rules.grant_mismatch(grant, dataclasses.replace(BINDING, model="sentiment"), NOW) == (
        "the grant is for another model"
    )
    assert rules.grant_mismatch(grant, dataclasses.replace(BINDING, method="/a.B/C"), NOW) == (
        "the grant is for another method"
    )
    wider = Binding("bea", METHOD, "customer-profile", ("restricted", "public", "confidential"), "d" * 64)
    assert rules.grant_mismatch(grant, wider, NOW) == "the grant is for another set of labels"
    assert rules.grant_mismatch(grant, BINDING, NOW + 900) == "the grant has expired"
    assert rules.grant_satisfies(grant, TWO_FROM_SECURITY)
    one = dataclasses.replace(grant, approvers=(("sam", ("security",)),))
    assert not rules.grant_satisfies(one, TWO_FROM_SECURITY)
    # An approver who was not in the required groups when approving does not count.
    wrong_group = dataclasses.replace(grant, approvers=(("sam", ("security",)), ("olivia", ("data-owners",))))
    assert not rules.grant_satisfies(wrong_group, TWO_FROM_SECURITY)


def test_a_grant_lives_no_longer_than_the_policy_in_force_allows() -> None:
    """Review finding: a grant made under ``grant_ttl_seconds: 3600`` kept releasing calls for
    an hour after a policy revision said 60: only the expiry stored at grant time was read."""
    grant = Grant(
        "grant-1", "apr-1", BINDING, (("sam", ("security",)), ("sol", ("security",))), NOW, NOW + 3600
    )
    shorter = dataclasses.replace(TWO_FROM_SECURITY, grant_ttl_seconds=60)
    assert rules.grant_mismatch(grant, BINDING, NOW + 59, shorter) is None
    assert rules.grant_mismatch(grant, BINDING, NOW + 60, shorter) == (
        "the policy now lets a grant last at most 60 s"
    )
    assert rules.grant_mismatch(grant, BINDING, NOW + 600, shorter) is not None
    # A longer lifetime now never lengthens the grant: its own expiry still ends it.
    longer = dataclasses.replace(TWO_FROM_SECURITY, grant_ttl_seconds=86400)
    assert rules.grant_mismatch(grant, BINDING, NOW + 600, longer) is None
    assert rules.grant_mismatch(grant, BINDING, NOW + 3600, longer) == "the grant has expired"
    # Without a requirement (what a named grant for another round is checked against): its own expiry.
    assert rules.grant_lapsed(grant, None, NOW + 600) is None
    assert rules.grant_lapsed(grant, shorter, NOW + 600) is not None


def test_a_vote_counts_in_the_groups_the_request_asked_for_only() -> None:
    """Review finding: a vote recorded all of the approver's groups, so a data owner who is in
    security too, approving a data-owners request, made a grant that counted as a security
    approval nobody asked for (in ``grant_satisfies`` and in the policy's approvers)."""
    owners = request(requirement=Requirement(("data-owners",), 1, 900))
    sam = Subject("sam", ("data-owners", "security", "admins"))
    assert rules.voting_groups(sam, owners) == ("data-owners",)
    assert rules.voting_groups(sam, request()) == ("security",)
    either = request(requirement=Requirement(("security", "data-owners"), 1, 900))
    assert rules.voting_groups(sam, either) == ("data-owners", "security")
    # A vote stored with every group (before votes were narrowed) still makes a narrow grant.
    wide = vote("sam", "data-owners", "security")
    assert rules.counted_approvers([wide], owners.requirement, "bea") == {"sam": ("data-owners",)}
    grant = Grant("grant-1", "apr-1", BINDING, (("sam", ("data-owners",)),), NOW, NOW + 900)
    assert not rules.grant_satisfies(grant, Requirement(("security",), 1, 900))


def test_client_options_from_metadata() -> None:
    options = read_options((("x-labelgate-approval", "async"), ("x-labelgate-justification", b"ticket\n42")))
    assert options.mode == "async" and options.justification == "ticket 42" and options.approval_id is None
    assert read_options(()).mode == "hold"
    with pytest.raises(InvalidInput, match="async"):
        read_options((("x-labelgate-approval", "later"),))
    with pytest.raises(InvalidInput):
        read_options((("x-labelgate-approval-id", "apr-'; drop table"),))
    with pytest.raises(InvalidInput):
        read_options((("x-labelgate-approval-id", "apr-0123456789abcdef"),) * 2)
    assert len(read_options((("x-labelgate-justification", "x" * 2000),)).justification) == 500


def test_a_grant_covers_its_query_unless_the_policy_widened_it_to_the_model() -> None:
    grant = Grant(
        "grant-1", "apr-1", BINDING, (("sam", ("security",)), ("sol", ("security",))), NOW, NOW + 900
    )
    other_query = dataclasses.replace(BINDING, digest="e" * 64)
    assert rules.grant_mismatch(grant, other_query, NOW) == (
        "the grant is for another query (other inputs or outputs)"
    )
    # A call whose query is not known never rides on a query-scoped grant.
    assert rules.grant_mismatch(grant, dataclasses.replace(BINDING, digest=""), NOW) is not None
    model_wide = dataclasses.replace(grant, scope="model")
    assert rules.grant_mismatch(model_wide, other_query, NOW) is None
    # ... unless the policy now asks for query-scoped grants again.
    assert rules.grant_mismatch(model_wide, other_query, NOW, TWO_FROM_SECURITY) is not None
    widened = dataclasses.replace(TWO_FROM_SECURITY, grant_scope="model")
    assert rules.grant_mismatch(model_wide, other_query, NOW, widened) is None


def test_a_single_use_grant_covers_only_the_call_it_was_spent_on() -> None:
    grant = Grant(
        "grant-1",
        "apr-1",
        BINDING,
        (("sam", ("security",)),),
        NOW,
        NOW + 900,
        single_use=True,
        used_by="call-1",
    )
    assert rules.grant_mismatch(grant, BINDING, NOW, None, "call-1") is None  # its other phase
    assert rules.grant_mismatch(grant, BINDING, NOW, None, "call-2") == (
        "the grant was for one call and has been used"
    )
    assert rules.spends(grant, None)
    reusable = dataclasses.replace(grant, single_use=False, used_by=None)
    assert not rules.spends(reusable, TWO_FROM_SECURITY)
    assert rules.spends(reusable, dataclasses.replace(TWO_FROM_SECURITY, single_use=True))


def test_one_name_proven_two_ways_is_one_person_for_separation_of_duties() -> None:
    """Ids are qualified, so a dev-token ``bea`` is not the API key ``bea``; but neither may
    vote on the other's request, and their two votes count once."""
    mine = request(binding=dataclasses.replace(BINDING, subject="api_key:bea"))
    dev_bea = Subject.proven("jwt", "bea", issuer="labelgate-dev", groups=("security",))
    refusal = rules.vote_refusal(dev_bea, mine, "approve", [], NOW)
    assert refusal is not None and refusal.reason == "SELF_APPROVAL"
    sam_jwt, sam_mtls = "jwt:https://idp#sam", "mtls:sam"
    votes = [vote(sam_jwt, "security"), vote(sam_mtls, "security")]
    assert list(rules.counted_approvers(votes, TWO_FROM_SECURITY, "api_key:bea")) == [sam_jwt]
    voted = request(votes=(vote(sam_jwt, "security"),))
    refusal = rules.vote_refusal(
        Subject.proven("mtls", "sam", groups=("security",)), voted, "approve", [], NOW
    )
    assert refusal is not None and refusal.reason == "ALREADY_VOTED"
    grant = Grant(
        "grant-1",
        "apr-1",
        dataclasses.replace(BINDING, subject="api_key:bea"),
        ((sam_jwt, ("security",)), (sam_mtls, ("security",))),
        NOW,
        NOW + 900,
    )
    assert not rules.grant_satisfies(grant, TWO_FROM_SECURITY)


def test_the_user_behind_a_workload_certificate_is_the_requester_too() -> None:
    """A user token on a workload certificate: the subject is the workload (mTLS first), and
    the user it also proved may neither vote on the request nor lend the grant to another
    user's token on the same workload (found by review: both went by the workload's id)."""
    from labelgate.approvals.stage import binding_of
    from labelgate.auth.subject import requester_ids, requester_of
    from labelgate.calls import Call

    workload = Subject.proven("mtls", "spiffe://corp/ns/batch/sa/reporting", groups=())
    olivia_id, bob_id = "jwt:https://idp#olivia", "jwt:https://idp#bob"

    def behind(user: str) -> Subject:
        return dataclasses.replace(workload, attributes={"also_verified": {"jwt": user}})

    call = Call(
        method=METHOD, peer="ipv4:127.0.0.1:1", metadata=(), auth_context={}, session_id="s", request_id="r"
    )
    policy_input = {"request": {"model": "customer-profile", "digest": "d" * 64}, "labels": ["confidential"]}
    olivias, bobs = (binding_of(behind(user), call, policy_input) for user in (olivia_id, bob_id))
    assert requester_ids(olivias.subject) == (workload.id, olivia_id)
    assert requester_of(workload) == workload.id  # one identity: its id, as before
    held = request(binding=olivias, requirement=Requirement(("data-owners",), 1, 900, "r"))
    olivia = Subject.proven("jwt", "olivia", issuer="https://idp", groups=("data-owners",))
    refusal = rules.vote_refusal(olivia, held, "approve", [], NOW)
    assert refusal is not None and refusal.reason == "SELF_APPROVAL"
    assert rules.may_view(olivia, held, [])
    assert rules.counted_approvers([vote(olivia_id, "data-owners")], held.requirement, held.requester) == {}
    grant = Grant("grant-1", "apr-1", olivias, (("jwt:https://idp#owen", ("data-owners",)),), NOW, NOW + 900)
    assert rules.grant_mismatch(grant, olivias, NOW) is None
    assert rules.grant_mismatch(grant, bobs, NOW) == "the grant belongs to another subject"
