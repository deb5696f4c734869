"""Who may approve what, and when a request or a grant counts: pure functions, no I/O.

The rules, all checked here and nowhere else:

- a person never votes on their own request, whatever their groups (administrators too).
  People are known by qualified subject ids (``jwt:<iss>#<sub>``, ``mtls:<name>``,
  ``api_key:<id>``), so a name proven one way is never mistaken for another's; separation
  of duties is stricter still: a voter whose *name* (the short form) is the requester's is
  refused too, because the same person may hold a token and an API key under one name;
- only members of the request's ``approver_groups`` vote, to approve **or to deny**;
  viewer groups (``approvals.viewer_groups``, formerly ``admin_groups``) may see every
  request and the recorded sessions, and never vote: a read-only group such as
  ``auditors`` cannot hold up or refuse anyone's call;
- approvals count **people**: one person in two approver groups counts once, and a second
  vote by the same person (same id, or same name by another method) is refused;
- a grant is bound to one subject (qualified id), method, model and exact label set, and,
  unless the policy widened it to the model, to one query (the digest of the request's
  inputs and requested outputs); it counts for a requirement only when enough of its
  approvers were in the required groups when they voted; a single-use grant releases one
  call; a grant with a row budget releases at most that many rows in total (each call is
  charged its row count once, when the grant releases it);
- a vote is recorded in the groups the request asked for only (``voting_groups``), so a
  grant never counts for a requirement its approvers were not asked about; a stored grant
  is read back the same way (``grant_as_asked``), however it was written: its approvers
  count only in the groups its own request asked for, and in none when that request is gone;
- a grant lasts no longer than the policy in force allows: past its own expiry, or past
  ``grant_ttl_seconds`` of the requirement it is checked against now (``grant_lapsed``), it
  releases nothing, whichever round of a call it was found for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from labelgate.approvals import reasons
from labelgate.approvals.errors import ApprovalConflict
from labelgate.approvals.model import ApprovalRequest, Binding, Grant, Requirement, State, Vote
from labelgate.auth import Subject
from labelgate.auth.subject import requester_ids, short_name
from labelgate.errors import LabelgateError, PermissionDenied


def same_person(one: str, other: str) -> bool:
    """The same qualified id, or the same name proven another way (separation of duties).
    A requester that proved several identities (``requester_of``) is each of them."""
    return any(
        a == b or short_name(a) == short_name(b) for a in requester_ids(one) for b in requester_ids(other)
    )


def is_viewer(person: Subject, viewer_groups: Iterable[str]) -> bool:
    """In a group that may see every request (and recorded sessions), never vote."""
    return bool(set(person.groups) & set(viewer_groups))


def is_approver(person: Subject, request: ApprovalRequest) -> bool:
    return bool(set(person.groups) & set(request.requirement.approver_groups))


def may_view(person: Subject, request: ApprovalRequest, viewer_groups: Iterable[str]) -> bool:
    """Approvers and viewers see a request; its requester sees it too (to follow it)."""
    return (
        person.id in requester_ids(request.requester)
        or is_approver(person, request)
        or is_viewer(person, viewer_groups)
    )


def vote_refusal(
    person: Subject, request: ApprovalRequest, verdict: str, viewer_groups: Iterable[str], now: float
) -> LabelgateError | None:
    """Why ``person`` may not cast ``verdict`` on ``request`` now, or None when they may.

    ``viewer_groups`` gives no vote of either kind: seeing a request is not deciding it."""
    if request.state is not State.PENDING:
        return ApprovalConflict(
            reasons.APPROVAL_NOT_PENDING, f"approval {request.id} is already {request.state.value}"
        )
    if request.expires_at <= now:
        return ApprovalConflict(reasons.APPROVAL_NOT_PENDING, f"approval {request.id} has expired")
    if same_person(person.id, request.requester):
        return PermissionDenied(
            reasons.SELF_APPROVAL, "nobody may approve or deny their own request, administrators included"
        )
    if not is_approver(person, request):
        groups = ", ".join(request.requirement.approver_groups)
        return PermissionDenied(
            reasons.NOT_AN_APPROVER,
            f"only members of {groups} may {verdict} approval {request.id}"
            + (" (viewer groups see requests, they do not vote)" if is_viewer(person, viewer_groups) else ""),
        )
    if any(same_person(vote.approver, person.id) for vote in request.votes):
        return ApprovalConflict(
            reasons.ALREADY_VOTED, f"{person.id} has already voted on approval {request.id}"
        )
    return None


def asked_groups_only(groups: Iterable[str], asked: Iterable[str]) -> tuple[str, ...]:
    """Of ``groups`` (an approver's), those a request asked for (its ``approver_groups``): the
    only groups an approval on that request counts in. The one rule behind a vote, the
    approvers a grant is made with, and a stored grant read back."""
    wanted = set(asked)
    return tuple(group for group in groups if group in wanted)


def voting_groups(person: Subject, request: ApprovalRequest) -> tuple[str, ...]:
    """The groups a vote by ``person`` on ``request`` is cast in: those of theirs the request
    asked for, never the others. A vote is a decision on this requirement only: recorded
    with all of an approver's groups, an approval asked of a data owner who is in security
    too would count, in the grant and in the policy, as a security approval nobody asked for."""
    return asked_groups_only(person.groups, request.requirement.approver_groups)


def counted_approvers(
    votes: Iterable[Vote], requirement: Requirement, requester: str
) -> dict[str, tuple[str, ...]]:
    """The distinct people whose approvals count: approve votes by someone other than the
    requester who was in an approver group when they voted. person -> the approver groups
    they were in (only those ``requirement`` names)."""
    required = set(requirement.approver_groups)
    people: dict[str, tuple[str, ...]] = {}
    for vote in votes:
        if vote.verdict != "approve" or same_person(vote.approver, requester):
            continue
        if not required & set(vote.groups):
            continue
        if any(same_person(vote.approver, counted) for counted in people):
            continue  # one name, two methods: one person
        # Only the groups the request asked for: a grant says who approved as what, and an
        # approver's other groups were never asked (votes recorded before votes were
        # narrowed carry them all).
        people[vote.approver] = asked_groups_only(vote.groups, required)
    return people


def outcome(request: ApprovalRequest) -> State:
    """What the votes so far make of a pending request: one eligible denial denies it."""
    if any(vote.verdict == "deny" for vote in request.votes):
        return State.DENIED
    people = counted_approvers(request.votes, request.requirement, request.requester)
    return State.GRANTED if len(people) >= request.requirement.min_approvals else State.PENDING


def grant_as_asked(grant: Grant, asked: Sequence[str] | None) -> Grant:
    """``grant`` with each approver counted only in the groups its own request asked for
    (``asked``: that request's ``approver_groups``); an approver left with none is dropped.
    Grants stored before votes were narrowed carry every group of their approvers, and were
    used as stored: a security grant approved by someone also in data-owners met a
    data-owners requirement, in ``grant_satisfies`` and in the policy. ``asked`` None (the
    request is gone): nothing says what its approvers were asked, so it counts for no group."""
    if asked is None:
        return dataclasses.replace(grant, approvers=())
    approvers = tuple(
        (person, kept) for person, groups in grant.approvers if (kept := asked_groups_only(groups, asked))
    )
    return dataclasses.replace(grant, approvers=approvers)


def grant_mismatch(
    grant: Grant,
    binding: Binding,
    now: float,
    requirement: Requirement | None = None,
    call_request_id: str = "",
) -> str | None:
    """Why ``grant`` does not cover a call with ``binding`` (None when it does).

    A query-scoped grant covers only the query it was granted for (the same request
    digest; an unknown digest never matches). A model-scoped grant covers every query to
    the model, unless the policy now asks for a query-scoped one (``requirement``). A spent
    single-use grant covers only the call it was spent on."""
    lapsed = grant_lapsed(grant, requirement, now)
    if lapsed is not None:
        return lapsed
    if grant.binding.subject != binding.subject:
        return "the grant belongs to another subject"
    if grant.binding.method != binding.method:
        return "the grant is for another method"
    if grant.binding.model != binding.model:
        return "the grant is for another model"
    if grant.binding.labels != binding.labels:
        return "the grant is for another set of labels"
    wide = grant.scope == "model" and (requirement is None or requirement.grant_scope == "model")
    if not wide and (not grant.binding.digest or grant.binding.digest != binding.digest):
        return "the grant is for another query (other inputs or outputs)"
    if grant_spent(grant, call_request_id):
        return "the grant was for one call and has been used"
    tighter = requirement.row_budget if requirement is not None else None
    if tighter is not None and (grant.row_budget is None or grant.row_budget > tighter):
        return f"the policy now allows at most {tighter} rows per grant"
    return None


def grant_lapsed(grant: Grant, requirement: Requirement | None, now: float) -> str | None:
    """Why ``grant`` is too old to release a call now (None when it is not): past the expiry
    it was made with, or older than the ``grant_ttl_seconds`` the policy asks for now (a
    revision that shortens the lifetime shortens the grants already made, as it does a row
    budget: a grant never lives longer than the policy in force allows)."""
    if grant.expires_at <= now:
        return "the grant has expired"
    if requirement is not None and grant.created_at + requirement.grant_ttl_seconds <= now:
        return f"the policy now lets a grant last at most {requirement.grant_ttl_seconds} s"
    return None


def call_rows(rows: int | None) -> int:
    """What a call is charged against a row budget: its row count (the first dimension of
    its inputs); a call without one (scalar inputs, no inputs) counts as one row."""
    return 1 if rows is None else rows


def budget_shortfall(grant: Grant, rows: int, already_charged: bool) -> str | None:
    """Why ``grant``'s row budget cannot release a call of ``rows`` rows (None when it can).
    A call already charged (its response phase, after the request phase) is not charged again."""
    left = grant.rows_left
    if left is None or already_charged or rows <= left:
        return None
    return (
        f"the grant's row budget is spent: {grant.rows_used} of {grant.row_budget} rows released, "
        f"this call asks for {rows}"
    )


def grant_spent(grant: Grant, call_request_id: str) -> bool:
    """A single-use grant already used by another call."""
    return grant.single_use and grant.used_by is not None and grant.used_by != call_request_id


def spends(grant: Grant, requirement: Requirement | None) -> bool:
    """Whether using ``grant`` spends it: it was granted single-use, or the policy now asks
    for single-use grants."""
    return grant.single_use or (requirement is not None and requirement.single_use)


def grant_satisfies(grant: Grant, requirement: Requirement) -> bool:
    """Enough distinct approvers of ``grant`` were in the groups ``requirement`` names."""
    required = set(requirement.approver_groups)
    names = {
        short_name(person)
        for person, groups in grant.approvers
        if not same_person(person, grant.binding.subject) and required & set(groups)
    }
    return len(names) >= requirement.min_approvals
