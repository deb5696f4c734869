"""Grants put straight into the store, as the service stores them: with the granted request
each was made for. A grant counts only in the groups its own request asked for
(``rules.grant_as_asked``), and in none without that request."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate.approvals import repository as repo
from labelgate.approvals.db import Tx
from labelgate.approvals.model import ApprovalRequest, Grant, Requirement, State


def granted_request(grant: Grant, asked: Sequence[str]) -> ApprovalRequest:
    """The request ``grant`` was made for, granted, which asked for approvers from ``asked``."""
    return ApprovalRequest(
        id=grant.request_id,
        state=State.GRANTED,
        mode="async",
        binding=grant.binding,
        requester_groups=(),
        phase="request",
        fields=(),
        requirement=Requirement(
            approver_groups=tuple(asked),
            min_approvals=1,
            grant_ttl_seconds=max(1, int(grant.expires_at - grant.created_at)),
            grant_scope=grant.scope,
            single_use=grant.single_use,
            row_budget=grant.row_budget,
        ),
        justification="",
        created_at=grant.created_at,
        expires_at=grant.created_at + 60,
        node_id="test",
        call_request_id="",
        session_id="",
        resolved_at=grant.created_at,
        resolution="granted",
        grant_id=grant.id,
    )


def approvers_groups(grant: Grant) -> tuple[str, ...]:
    """The groups ``grant``'s approvers are recorded in (what a grant made now was asked)."""
    return tuple(sorted({group for _, groups in grant.approvers for group in groups}))


class _Unannounced:
    """``tx`` without change notices. A request stored before the test's call is awaited by
    nobody, and on PostgreSQL its notice may arrive late, to be taken for the one the call
    opens by a test that decides "the next request opened"."""

    def __init__(self, tx: Tx) -> None:
        self.dialect = tx.dialect
        self.fetch = tx.fetch
        self.execute = tx.execute

    def changed(self, request_id: str) -> None:
        pass


async def store_grant(tx: Tx, grant: Grant, asked: Sequence[str] | None = None) -> None:
    """``grant`` and its granted request, which asked ``asked`` (default: the groups its
    approvers are recorded in, as for a grant the service makes now)."""
    request = granted_request(grant, approvers_groups(grant) if asked is None else asked)
    await repo.insert_request(_Unannounced(tx), request)
    await repo.insert_grant(tx, grant)
