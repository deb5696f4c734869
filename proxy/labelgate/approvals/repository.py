"""The approval tables and every statement on them (portable SQL: SQLite and PostgreSQL).

Lists and objects are stored as JSON text; a grant's labels as the JSON of the sorted list,
so "exactly this label set" is a plain equality. A request's approver groups are also kept
one row per group (``approval_request_groups``), so an inbox is filtered in SQL by the
viewer's groups (and own requests) and paginated by (created_at, id), however many
requests one requester opened.

A grant is always read with the approver groups of the request it was made for
(``rules.grant_as_asked``), and a granted request is kept as long as its grant is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from labelgate.approvals import rules
from labelgate.approvals.db import Row, Tx
from labelgate.approvals.model import (
    ApprovalRequest,
    Binding,
    FieldAtStake,
    Grant,
    Query,
    Requirement,
    State,
    Vote,
)

# The tables are made and changed by labelgate/migrations/approvals (yoyo): a schema change
# is a new numbered migration there.


async def _insert_groups(tx: Tx, request_id: str, groups: Iterable[str]) -> None:
    for group in sorted(set(groups)):
        await tx.execute(
            "INSERT INTO approval_request_groups (request_id, group_name) VALUES (?, ?)", (request_id, group)
        )


def _labels_key(labels: Iterable[str]) -> str:
    return json.dumps(sorted(set(labels)))


async def insert_request(tx: Tx, request: ApprovalRequest) -> None:
    await tx.execute(
        """INSERT INTO approval_requests (id, state, mode, requester, requester_groups, method, model,
            phase, labels, fields, policy_reason, justification, approver_groups, min_approvals,
            grant_ttl_seconds, created_at, expires_at, resolved_at, resolution, node_id,
            call_request_id, session_id, grant_id, digest, query_summary, grant_scope, single_use,
            row_budget)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            request.id,
            request.state.value,
            request.mode,
            request.requester,
            json.dumps(list(request.requester_groups)),
            request.binding.method,
            request.binding.model,
            request.phase,
            _labels_key(request.binding.labels),
            json.dumps([f.to_json() for f in request.fields]),
            request.requirement.reason,
            request.justification,
            json.dumps(list(request.requirement.approver_groups)),
            request.requirement.min_approvals,
            request.requirement.grant_ttl_seconds,
            request.created_at,
            request.expires_at,
            request.resolved_at,
            request.resolution,
            request.node_id,
            request.call_request_id,
            request.session_id,
            request.grant_id,
            request.binding.digest,
            json.dumps(request.query.to_json()),
            request.requirement.grant_scope,
            int(request.requirement.single_use),
            request.requirement.row_budget,
        ),
    )
    await _insert_groups(tx, request.id, request.requirement.approver_groups)
    tx.changed(request.id)


def _request(row: Row, votes: Sequence[Vote]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row["id"],
        state=State(row["state"]),
        mode=row["mode"],
        binding=Binding(
            row["requester"], row["method"], row["model"], tuple(json.loads(row["labels"])), row["digest"]
        ),
        requester_groups=tuple(json.loads(row["requester_groups"])),
        phase=row["phase"],
        fields=tuple(FieldAtStake(f["path"], tuple(f["labels"])) for f in json.loads(row["fields"])),
        requirement=Requirement(
            approver_groups=tuple(json.loads(row["approver_groups"])),
            min_approvals=int(row["min_approvals"]),
            grant_ttl_seconds=int(row["grant_ttl_seconds"]),
            reason=row["policy_reason"],
            grant_scope="model" if row["grant_scope"] == "model" else "query",
            single_use=bool(row["single_use"]),
            row_budget=_optional_int(row["row_budget"]),
        ),
        justification=row["justification"],
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        node_id=row["node_id"],
        call_request_id=row["call_request_id"],
        session_id=row["session_id"],
        resolved_at=float(row["resolved_at"]) if row["resolved_at"] is not None else None,
        resolution=row["resolution"],
        grant_id=row["grant_id"],
        votes=tuple(votes),
        query=Query.from_json(json.loads(row["query_summary"] or "{}")),
    )


def _vote(row: Row) -> Vote:
    return Vote(
        approver=row["approver"],
        groups=tuple(json.loads(row["approver_groups"])),
        verdict=row["verdict"],
        reason=row["reason"],
        at=float(row["at"]),
    )


async def _with_votes(tx: Tx, rows: list[Row]) -> list[ApprovalRequest]:
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" for _ in ids)
    votes: dict[str, list[Vote]] = {request_id: [] for request_id in ids}
    for vote_row in await tx.fetch(
        f"SELECT * FROM approval_votes WHERE request_id IN ({marks}) ORDER BY at, approver",  # noqa: S608
        ids,
    ):
        votes[vote_row["request_id"]].append(_vote(vote_row))
    return [_request(row, votes[row["id"]]) for row in rows]


async def get_request(tx: Tx, request_id: str, *, for_update: bool = False) -> ApprovalRequest | None:
    lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
    rows = await tx.fetch(f"SELECT * FROM approval_requests WHERE id = ?{lock}", (request_id,))  # noqa: S608
    found = await _with_votes(tx, rows)
    return found[0] if found else None


@dataclass(frozen=True)
class Viewer:
    """Whose inbox: requests ``subject`` opened or that name one of ``groups`` as approvers;
    ``everything`` (viewer/admin groups) sees all."""

    subject: str
    groups: tuple[str, ...] = ()
    everything: bool = False


@dataclass(frozen=True)
class PageCursor:
    """Where a page ends: the (created_at, id) of its last request, newest first."""

    created_at: float
    id: str


async def list_requests(
    tx: Tx,
    states: Sequence[State],
    limit: int,
    viewer: Viewer | None = None,
    after: PageCursor | None = None,
) -> list[ApprovalRequest]:
    """Up to ``limit`` requests in ``states`` that ``viewer`` may see (None: everyone's),
    newest first, starting after ``after``. Filtered and ordered in SQL, so one requester's
    many requests never push another's out of a viewer's page."""
    where = [f"state IN ({', '.join('?' for _ in states)})"]
    params: list[Any] = [state.value for state in states]
    if viewer is not None and not viewer.everything:
        # Their own requests, also those held as one of several identities (``requester_of``:
        # a JSON list of ids, each written as a JSON string, so a quoted id matches whole).
        contains = "instr(requester, ?) > 0" if tx.dialect == "sqlite" else "strpos(requester, ?) > 0"
        mine = ["requester = ?", f"(substr(requester, 1, 1) = '[' AND {contains})"]
        params.extend([viewer.subject, json.dumps(viewer.subject, ensure_ascii=False)])
        if viewer.groups:
            marks = ", ".join("?" for _ in viewer.groups)
            mine.append(
                f"id IN (SELECT request_id FROM approval_request_groups WHERE group_name IN ({marks}))"  # noqa: S608
            )
            params.extend(viewer.groups)
        where.append(f"({' OR '.join(mine)})")
    if after is not None:
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params.extend([after.created_at, after.created_at, after.id])
    rows = await tx.fetch(
        f"SELECT * FROM approval_requests WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        [*params, limit],
    )
    return await _with_votes(tx, rows)


async def open_count(tx: Tx, requester: str) -> int:
    """How many pending requests ``requester`` has open."""
    rows = await tx.fetch(
        "SELECT COUNT(*) AS n FROM approval_requests WHERE requester = ? AND state = ?",
        (requester, State.PENDING.value),
    )
    return int(rows[0]["n"])


async def lock_requester(tx: Tx, requester: str) -> None:
    """Serialise the open-request cap per requester across replicas (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises every writer)."""
    if tx.dialect == "postgres":
        await tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"requester:{requester}",))


async def insert_vote(tx: Tx, request_id: str, vote: Vote) -> None:
    await tx.execute(
        "INSERT INTO approval_votes (request_id, approver, approver_groups, verdict, reason, at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (request_id, vote.approver, json.dumps(list(vote.groups)), vote.verdict, vote.reason, vote.at),
    )
    tx.changed(request_id)


async def resolve(
    tx: Tx, request_id: str, state: State, resolution: str, now: float, grant_id: str | None = None
) -> bool:
    """Move a *pending* request to ``state``; False when it was not pending any more."""
    changed = await tx.execute(
        "UPDATE approval_requests SET state = ?, resolution = ?, resolved_at = ?, grant_id = ? "
        "WHERE id = ? AND state = ?",
        (state.value, resolution, now, grant_id, request_id, State.PENDING.value),
    )
    if changed:
        tx.changed(request_id)
    return changed == 1


async def pending_ids(tx: Tx, where: str, params: Sequence[Any]) -> list[str]:
    rows = await tx.fetch(
        f"SELECT id FROM approval_requests WHERE state = ? AND {where} ORDER BY id",  # noqa: S608
        [State.PENDING.value, *params],
    )
    return [row["id"] for row in rows]


async def insert_grant(tx: Tx, grant: Grant) -> None:
    await tx.execute(
        "INSERT INTO approval_grants (id, request_id, subject, method, model, labels, approvers, "
        "created_at, expires_at, digest, scope, single_use, used_by, row_budget, rows_used) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            grant.id,
            grant.request_id,
            grant.binding.subject,
            grant.binding.method,
            grant.binding.model,
            _labels_key(grant.binding.labels),
            json.dumps([[person, list(groups)] for person, groups in grant.approvers]),
            grant.created_at,
            grant.expires_at,
            grant.binding.digest,
            grant.scope,
            int(grant.single_use),
            grant.used_by,
            grant.row_budget,
            grant.rows_used,
        ),
    )


# Every grant is read with the approver groups its own request asked for (NULL when that
# request is gone), never as stored alone: see ``_grant``.
_GRANTS = (
    "SELECT g.*, r.approver_groups AS request_approver_groups FROM approval_grants g "
    "LEFT JOIN approval_requests r ON r.id = g.request_id"
)


def _grant(row: Row) -> Grant:
    """A grant row (from ``_GRANTS``), its approvers counted only in the groups its request
    asked for: rows written before votes were narrowed carry all of their groups."""
    asked = row["request_approver_groups"]
    stored = _stored_grant(row)
    return rules.grant_as_asked(stored, None if asked is None else tuple(json.loads(asked)))


def _stored_grant(row: Row) -> Grant:
    return Grant(
        id=row["id"],
        request_id=row["request_id"],
        binding=Binding(
            row["subject"], row["method"], row["model"], tuple(json.loads(row["labels"])), row["digest"]
        ),
        approvers=tuple((person, tuple(groups)) for person, groups in json.loads(row["approvers"])),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        scope="model" if row["scope"] == "model" else "query",
        single_use=bool(row["single_use"]),
        used_by=row["used_by"],
        row_budget=_optional_int(row["row_budget"]),
        rows_used=int(row["rows_used"]),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


async def spend_grant(tx: Tx, grant_id: str, call_request_id: str, now: float) -> bool:
    """Mark a single-use grant as used by this call; False when another call used it first."""
    changed = await tx.execute(
        "UPDATE approval_grants SET used_by = ?, used_at = ? "
        "WHERE id = ? AND (used_by IS NULL OR used_by = ?)",
        (call_request_id, now, grant_id, call_request_id),
    )
    return changed == 1


async def charged_rows(tx: Tx, grant_id: str, call_request_id: str) -> int | None:
    """The rows ``grant_id`` was charged for this call, None when it was not charged."""
    if not call_request_id:
        return None
    rows = await tx.fetch(
        "SELECT rows_charged FROM approval_grant_charges WHERE grant_id = ? AND call_request_id = ?",
        (grant_id, call_request_id),
    )
    return int(rows[0]["rows_charged"]) if rows else None


async def charge_grant(tx: Tx, grant_id: str, call_request_id: str, rows: int, now: float) -> bool:
    """Charge ``rows`` to a budgeted grant for this call; False when its budget cannot cover
    them. One conditional UPDATE: PostgreSQL re-checks the condition on the row it locked
    (and SQLite serialises writers), so replicas charging at once can never overspend."""
    changed = await tx.execute(
        "UPDATE approval_grants SET rows_used = rows_used + ? "
        "WHERE id = ? AND row_budget IS NOT NULL AND rows_used + ? <= row_budget",
        (rows, grant_id, rows),
    )
    if changed != 1:
        return False
    await tx.execute(
        "INSERT INTO approval_grant_charges (grant_id, call_request_id, rows_charged, at) "
        "VALUES (?, ?, ?, ?)",
        (grant_id, call_request_id, rows, now),
    )
    return True


async def get_grant(tx: Tx, grant_id: str) -> Grant | None:
    rows = await tx.fetch(f"{_GRANTS} WHERE g.id = ?", (grant_id,))
    return _grant(rows[0]) if rows else None


async def live_grants(tx: Tx, binding: Binding, now: float) -> list[Grant]:
    rows = await tx.fetch(
        f"{_GRANTS} WHERE g.subject = ? AND g.method = ? AND g.model = ? AND g.labels = ? "
        "AND g.expires_at > ? ORDER BY g.expires_at DESC",
        (binding.subject, binding.method, binding.model, _labels_key(binding.labels), now),
    )
    return [_grant(row) for row in rows]


async def purge(tx: Tx, resolved_before: float) -> list[str]:
    """Delete requests resolved, and grants ended, before ``resolved_before``. A granted
    request stays while its grant does (a grant whose request is gone counts for no group),
    and goes with it."""
    rows = await tx.fetch(
        "SELECT id FROM approval_requests WHERE state <> ? AND resolved_at < ? "
        "AND id NOT IN (SELECT request_id FROM approval_grants WHERE expires_at >= ?)",
        (State.PENDING.value, resolved_before, resolved_before),
    )
    ids = [row["id"] for row in rows]
    if ids:
        marks = ", ".join("?" for _ in ids)
        await tx.execute(f"DELETE FROM approval_votes WHERE request_id IN ({marks})", ids)  # noqa: S608
        await tx.execute(
            f"DELETE FROM approval_request_groups WHERE request_id IN ({marks})",  # noqa: S608
            ids,
        )
        await tx.execute(f"DELETE FROM approval_requests WHERE id IN ({marks})", ids)  # noqa: S608
    await tx.execute(
        "DELETE FROM approval_grant_charges WHERE grant_id IN "
        "(SELECT id FROM approval_grants WHERE expires_at < ?)",
        (resolved_before,),
    )
    await tx.execute("DELETE FROM approval_grants WHERE expires_at < ?", (resolved_before,))
    return ids


# -- inbox sign-outs (labelgate/migrations/approvals/0002_signed_out_sessions) --------------
# Each bound only ever raised: a later sign-out of an older session takes back nothing an
# earlier one ended. A CASE, the same in SQLite (scalar ``max``) and PostgreSQL (``GREATEST``).
_SIGN_OUT = """
INSERT INTO inbox_signed_out_sessions AS stored (subject_id, signed_out_through, ends_at)
VALUES (?, ?, ?)
ON CONFLICT (subject_id) DO UPDATE SET
    signed_out_through = CASE WHEN excluded.signed_out_through > stored.signed_out_through
        THEN excluded.signed_out_through ELSE stored.signed_out_through END,
    ends_at = CASE WHEN excluded.ends_at > stored.ends_at THEN excluded.ends_at ELSE stored.ends_at END
"""


async def sign_out_sessions(tx: Tx, subject_id: str, through: float, ends_at: float) -> None:
    """Refuse ``subject_id``'s sessions issued at or before ``through`` until ``ends_at``: one
    row per subject, however often it signs out."""
    await tx.execute(_SIGN_OUT, (subject_id, through, ends_at))


async def signed_out(tx: Tx, subject_id: str, issued_at: float) -> bool:
    """Whether ``subject_id``'s session issued at ``issued_at`` was signed out (it or a later one)."""
    rows = await tx.fetch(
        "SELECT 1 AS found FROM inbox_signed_out_sessions WHERE subject_id = ? AND signed_out_through >= ?",
        (subject_id, issued_at),
    )
    return bool(rows)


async def prune_signed_out(tx: Tx, ended_before: float) -> int:
    """Forget sign-outs whose sessions all ended before ``ended_before``; how many."""
    return await tx.execute("DELETE FROM inbox_signed_out_sessions WHERE ends_at < ?", (ended_before,))
