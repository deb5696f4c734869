"""Who may approve what, and when a request or a grant counts: pure functions, no I/O.

The rules, all checked here and nowhere else:

- a person never votes on their own request, whatever their groups (administrators too);
- only members of the request's ``approver_groups`` vote; ``admin_groups`` may see every
  request and deny any, but an approval still needs the policy's approver groups;
- approvals count **people**: one person in two approver groups counts once, and a second
  vote by the same person is refused;
- a grant is bound to one subject, method, model and exact label set, and counts for a
  requirement only when enough of its approvers were in the required groups when they voted.
"""

from __future__ import annotations

from collections.abc import Iterable

from labelgate.approvals.errors import ApprovalConflict
from labelgate.approvals.model import ApprovalRequest, Binding, Grant, Requirement, State, Vote
from labelgate.auth import Subject
from labelgate.errors import LabelgateError, PermissionDenied


def is_admin(person: Subject, admin_groups: Iterable[str]) -> bool:
    return bool(set(person.groups) & set(admin_groups))


def is_approver(person: Subject, request: ApprovalRequest) -> bool:
    return bool(set(person.groups) & set(request.requirement.approver_groups))


def may_view(person: Subject, request: ApprovalRequest, admin_groups: Iterable[str]) -> bool:
    """Approvers and admins see a request; its requester sees it too (to follow it)."""
    return person.id == request.requester or is_approver(person, request) or is_admin(person, admin_groups)


def vote_refusal(
    person: Subject, request: ApprovalRequest, verdict: str, admin_groups: Iterable[str], now: float
) -> LabelgateError | None:
    """Why ``person`` may not cast ``verdict`` on ``request`` now, or None when they may."""
    if request.state is not State.PENDING:
        return ApprovalConflict(
            "APPROVAL_NOT_PENDING", f"approval {request.id} is already {request.state.value}"
        )
    if request.expires_at <= now:
        return ApprovalConflict("APPROVAL_NOT_PENDING", f"approval {request.id} has expired")
    if person.id == request.requester:
        return PermissionDenied(
            "SELF_APPROVAL", "nobody may approve or deny their own request, administrators included"
        )
    allowed = is_approver(person, request) or (verdict == "deny" and is_admin(person, admin_groups))
    if not allowed:
        groups = ", ".join(request.requirement.approver_groups)
        return PermissionDenied(
            "NOT_AN_APPROVER", f"only members of {groups} may {verdict} approval {request.id}"
        )
    if any(vote.approver == person.id for vote in request.votes):
        return ApprovalConflict("ALREADY_VOTED", f"{person.id} has already voted on approval {request.id}")
    return None


def counted_approvers(
    votes: Iterable[Vote], requirement: Requirement, requester: str
) -> dict[str, tuple[str, ...]]:
    """The distinct people whose approvals count: approve votes by someone other than the
    requester who was in an approver group when they voted. person -> their groups."""
    required = set(requirement.approver_groups)
    return {
        vote.approver: vote.groups
        for vote in votes
        if vote.verdict == "approve" and vote.approver != requester and required & set(vote.groups)
    }


def outcome(request: ApprovalRequest) -> State:
    """What the votes so far make of a pending request: one eligible denial denies it."""
    if any(vote.verdict == "deny" for vote in request.votes):
        return State.DENIED
    people = counted_approvers(request.votes, request.requirement, request.requester)
    return State.GRANTED if len(people) >= request.requirement.min_approvals else State.PENDING


def grant_mismatch(grant: Grant, binding: Binding, now: float) -> str | None:
    """Why ``grant`` does not cover a call with ``binding`` (None when it does)."""
    if grant.expires_at <= now:
        return "the grant has expired"
    if grant.binding.subject != binding.subject:
        return "the grant belongs to another subject"
    if grant.binding.method != binding.method:
        return "the grant is for another method"
    if grant.binding.model != binding.model:
        return "the grant is for another model"
    if grant.binding.labels != binding.labels:
        return "the grant is for another set of labels"
    return None


def grant_satisfies(grant: Grant, requirement: Requirement) -> bool:
    """Enough distinct approvers of ``grant`` were in the groups ``requirement`` names."""
    required = set(requirement.approver_groups)
    people = {
        person
        for person, groups in grant.approvers
        if person != grant.binding.subject and required & set(groups)
    }
    return len(people) >= requirement.min_approvals
