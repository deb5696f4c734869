"""What the approval service stores: requests, the votes on them, and the grants they produce.

Times are seconds since the epoch (``time.time()``) so that replicas and the database agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class State(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"
    EXPIRED = "expired"
    # The gateway that held the call went away (restart, crash) or the caller hung up.
    ABANDONED = "abandoned"


RESOLVED = frozenset({State.GRANTED, State.DENIED, State.EXPIRED, State.ABANDONED})
Mode = Literal["hold", "async"]
Verdict = Literal["approve", "deny"]


@dataclass(frozen=True, slots=True)
class FieldAtStake:
    path: str
    labels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "labels": list(self.labels)}


@dataclass(frozen=True, slots=True)
class Binding:
    """What a grant is bound to: who (qualified subject id), which method and model, exactly
    which labels, and which query (``digest``: the request digest, "" when not known)."""

    subject: str
    method: str
    model: str
    labels: tuple[str, ...]
    digest: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(sorted(set(self.labels))))


GrantScope = Literal["query", "model"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """From the policy decision: ``min_approvals`` distinct people from ``approver_groups``;
    the grant covers the query (default) or the model, may be single-use, and may release at
    most ``row_budget`` rows in total (None: no budget)."""

    approver_groups: tuple[str, ...]
    min_approvals: int
    grant_ttl_seconds: int
    reason: str = ""
    grant_scope: GrantScope = "query"
    single_use: bool = False
    row_budget: int | None = None


@dataclass(frozen=True, slots=True)
class InputSummary:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Query:
    """What the held call asked, as approvers see it: input names, datatypes and shapes (no
    values), the outputs it named (none: all), and how many rows it asks for (the first
    dimension of its inputs; None when it has none)."""

    inputs: tuple[InputSummary, ...] = ()
    requested_outputs: tuple[str, ...] = ()

    @property
    def rows(self) -> int | None:
        firsts = [i.shape[0] for i in self.inputs if i.shape]
        return max(firsts) if firsts else None

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [i.to_json() for i in self.inputs],
            "requested_outputs": list(self.requested_outputs),
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Query:
        return cls(
            inputs=tuple(
                InputSummary(i["name"], i["datatype"], tuple(int(n) for n in i["shape"]))
                for i in data.get("inputs", [])
            ),
            requested_outputs=tuple(data.get("requested_outputs", [])),
        )


@dataclass(frozen=True, slots=True)
class Vote:
    approver: str
    groups: tuple[str, ...]  # the approver's groups when they voted
    verdict: Verdict
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "approver": self.approver,
            "groups": list(self.groups),
            "verdict": self.verdict,
            "reason": self.reason,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    state: State
    mode: Mode
    binding: Binding
    requester_groups: tuple[str, ...]
    phase: str
    fields: tuple[FieldAtStake, ...]
    requirement: Requirement
    justification: str
    created_at: float
    expires_at: float
    node_id: str
    call_request_id: str
    session_id: str
    resolved_at: float | None = None
    resolution: str = ""
    grant_id: str | None = None
    votes: tuple[Vote, ...] = field(default=())
    query: Query = field(default_factory=Query)

    @property
    def requester(self) -> str:
        return self.binding.subject

    @property
    def pending(self) -> bool:
        return self.state is State.PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "mode": self.mode,
            "requester": self.requester,
            "requester_groups": list(self.requester_groups),
            "method": self.binding.method,
            "model": self.binding.model,
            "phase": self.phase,
            "labels": list(self.binding.labels),
            "fields": [f.to_json() for f in self.fields],
            "digest": self.binding.digest,
            "query": self.query.to_json(),
            "grant_scope": self.requirement.grant_scope,
            "single_use": self.requirement.single_use,
            "row_budget": self.requirement.row_budget,
            "policy_reason": self.requirement.reason,
            "justification": self.justification,
            "approver_groups": list(self.requirement.approver_groups),
            "min_approvals": self.requirement.min_approvals,
            "grant_ttl_seconds": self.requirement.grant_ttl_seconds,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "resolved_at": self.resolved_at,
            "resolution": self.resolution,
            "grant_id": self.grant_id,
            "votes": [v.to_json() for v in self.votes],
        }


@dataclass(frozen=True, slots=True)
class Grant:
    """A time-boxed permission for one binding, made by the people who approved it."""

    id: str
    request_id: str
    binding: Binding
    approvers: tuple[tuple[str, tuple[str, ...]], ...]  # (person, their groups when they approved)
    created_at: float
    expires_at: float
    scope: GrantScope = "query"  # query: releases only calls with binding.digest
    single_use: bool = False
    used_by: str | None = None  # the call (request id) a single-use grant was spent on
    row_budget: int | None = None  # rows the grant may release in total (None: no budget)
    rows_used: int = 0  # rows charged so far, by the calls it released

    @property
    def rows_left(self) -> int | None:
        return None if self.row_budget is None else max(0, self.row_budget - self.rows_used)

    @property
    def approved_by(self) -> list[str]:
        return sorted(person for person, _ in self.approvers)

    def to_policy(self) -> dict[str, Any]:
        """The ``approval`` object of the policy input once this grant applies."""
        return policy_approval((self,))


def policy_approval(grants: Sequence[Grant]) -> dict[str, Any]:
    """The ``approval`` object of the policy input once ``grants`` apply together (a call held
    for several requirements in turn is decided under the grants of all of them). Each
    approver comes with the groups they approved in, so the policy counts each requirement
    by its own approver groups: two security approvals never stand in for a data owner's.
    ``grant_id`` names the last grant."""
    return {
        "state": "granted",
        "grant_id": grants[-1].id,
        "approved_by": sorted({person for grant in grants for person, _ in grant.approvers}),
        "approvers": [
            {"id": person, "groups": sorted(groups)} for grant in grants for person, groups in grant.approvers
        ],
    }
