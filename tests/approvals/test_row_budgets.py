"""Row budgets on grants (issue 13): ``require_approval.row_budget: N`` lets a grant release at
most N rows in total across the calls it covers.

Through a real gateway, demo backend and the default policy pack (its approvals table given a
budget): a held 2-row call is released and charged, the next 2-row call is not (held again as a
new request; named, refused with APPROVAL_BUDGET_EXHAUSTED); a model-wide grant spends one
budget across different queries; a call larger than any grant could release is refused before
approvers are asked. The store charges with one conditional UPDATE: two replicas charging one
grant at once on a real PostgreSQL never overspend it. The schema refuses a budget below 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from labelgate.admin.app import build_admin_app
from labelgate.approvals import rules
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.audit_sink import approval_audit_event
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.model import Binding, Grant, InputSummary, Query, Requirement
from labelgate.approvals.postgres import PostgresDatabase
from labelgate.approvals.service import ApprovalService, Draft
from labelgate.approvals.web import issue_session
from labelgate.auth import Authenticator, Subject
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.policy.contract import validate_result
from tests.approvals.conftest import Answer, Api, gateway_config, person, running_gateway, token
from tests.approvals.stored_grants import store_grant
from tests.approvals.test_query_grants import ASYNC, approval_of, ask, clear_ssns
from tests.support.postgres import PostgresServer
from tests.support.procs import REPO, free_port, labelgate_command, running

METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Gateway:
    grpc: str
    api: Api
    log: Path


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    """Two gateways on one demo backend, their policy the default pack with data-owner grants
    budgeted to 3 rows: ``query`` (grants cover the held query) and ``model`` (grants cover
    any query to the model)."""
    folder = tmp_path_factory.mktemp("row-budgets")
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with (
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
        contextlib.ExitStack() as gateways,
    ):
        made = {}
        for scope in ("query", "model"):
            rego = folder / f"rego-{scope}"
            shutil.copytree(REPO / "rego", rego)
            tables_file = rego / "labelgate" / "tables" / "data.json"
            tables = json.loads(tables_file.read_text())
            tables["approvals"]["data_owner_grant"].update(row_budget=3, grant_scope=scope)
            tables_file.write_text(json.dumps(tables))
            approvals = {"sqlite_file": str(folder / f"{scope}.db"), "hold_timeout_seconds": 60}
            config, address, admin = gateway_config(folder, backend, approvals, name=f"gateway-{scope}")
            config.write_text(config.read_text().replace(str(REPO / "rego") + "\n", str(rego) + "\n"))
            assert str(rego) in config.read_text()
            log = folder / f"gateway-{scope}.log"
            gateways.enter_context(running_gateway(config, address, log))
            made[scope] = Gateway(address, Api(admin), log)
        yield made


def refused_for_budget(answer: Answer) -> bool:
    return (answer.code, answer.reason) == ("PERMISSION_DENIED", "APPROVAL_BUDGET_EXHAUSTED")


def charges_logged(log: Path, grant_id: str) -> list[tuple[int, int, int]]:
    """(rows charged, rows used after, budget) of each charge the gateway recorded for a grant
    (its approval events are JSON log lines, the same payload the audit writer gets)."""
    found = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        charge = entry.get("event") == "approval.grant_used" and "rows_charged" in entry
        if charge and entry.get("grant_id") == grant_id:
            found.append((entry["rows_charged"], entry["rows_used"], entry["row_budget"]))
    return found


def test_a_budget_of_3_releases_a_held_2_row_call_and_not_the_next_2_rows(
    budgeted: dict[str, Gateway],
) -> None:
    gateway = budgeted["query"]
    sam, owner = person("sam"), person("owner")
    sam_token, owner_token = token(sam, "data-stewards"), token(owner, "data-owners")
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(ask, gateway.grpc, sam_token, [1, 2])  # held until approved
        item = gateway.api.pending_of(sam, owner_token)
        # Approvers see the budget next to the rows asked.
        assert (item["row_budget"], item["query"]["rows"], item["grant_scope"]) == (3, 2, "query")
        assert gateway.api.approve(item["id"], owner_token).json()["state"] == "granted"
        assert clear_ssns(call.result(timeout=60))

    grant_id = gateway.api.show(item["id"], owner_token)["grant_id"]
    assert charges_logged(gateway.log, grant_id) == [(2, 2, 3)]  # the held call, charged once

    # The same query again: 2 + 2 > 3. Named, refused; not named, held again as a new request.
    named = ask(gateway.grpc, sam_token, [1, 2], **{"x-labelgate-approval-id": item["id"]})
    assert refused_for_budget(named), named
    assert "2 of 3 rows" in named.message
    fresh = approval_of(ask(gateway.grpc, sam_token, [1, 2], **ASYNC))
    assert fresh != item["id"]
    assert gateway.api.show(fresh, owner_token)["row_budget"] == 3
    assert charges_logged(gateway.log, grant_id) == [(2, 2, 3)]  # nothing more was charged


def test_a_model_wide_grant_spends_one_budget_across_queries(budgeted: dict[str, Gateway]) -> None:
    gateway = budgeted["model"]
    sam, owner = person("sam"), person("owner")
    sam_token, owner_token = token(sam, "data-stewards"), token(owner, "data-owners")
    approval = approval_of(ask(gateway.grpc, sam_token, [1], **ASYNC))
    assert gateway.api.approve(approval, owner_token).json()["state"] == "granted"
    named = {"x-labelgate-approval-id": approval}

    assert clear_ssns(ask(gateway.grpc, sam_token, [1, 2], **named))  # 2 of 3
    assert clear_ssns(ask(gateway.grpc, sam_token, [7]))  # another query, found without naming: 3 of 3
    assert refused_for_budget(ask(gateway.grpc, sam_token, [9], **named))
    assert approval_of(ask(gateway.grpc, sam_token, [9], **ASYNC)) != approval

    grant_id = gateway.api.show(approval, owner_token)["grant_id"]
    assert charges_logged(gateway.log, grant_id) == [(2, 2, 3), (1, 3, 3)]


def test_a_call_larger_than_the_budget_is_refused_without_asking(budgeted: dict[str, Gateway]) -> None:
    gateway = budgeted["query"]
    sam, owner = person("sam"), person("owner")
    sam_token, owner_token = token(sam, "data-stewards"), token(owner, "data-owners")
    answer = ask(gateway.grpc, sam_token, [1, 2, 3, 4], **ASYNC)
    assert refused_for_budget(answer), answer
    assert "at most 3 rows" in answer.message
    pending = gateway.api.get("/api/v1/approvals", owner_token).json()["items"]
    assert not [item for item in pending if item["requester"].endswith(f"#{sam}")]


def test_the_schema_refuses_a_budget_below_one() -> None:
    base = {"approver_groups": ["data-owners"], "min_approvals": 1, "grant_ttl_seconds": 60, "reason": "r"}

    def result(**approval: Any) -> dict[str, Any]:
        return {
            "allow": False,
            "reason": "held",
            "mask": [],
            "require_approval": {**base, **approval},
            "cache_ttl_seconds": 0,
        }

    for bad in (0, -1, 2.5, "3", True):
        decision = validate_result(result(row_budget=bad))
        assert decision.fail_reason == "POLICY_RESULT_INVALID", bad
    decision = validate_result(result(row_budget=3))
    assert decision.require_approval is not None and decision.require_approval.row_budget == 3
    assert decision.require_approval.to_json()["row_budget"] == 3
    unbudgeted = validate_result(result())
    assert unbudgeted.require_approval is not None and unbudgeted.require_approval.row_budget is None
    assert "row_budget" not in unbudgeted.require_approval.to_json()


# -- the store: one conditional UPDATE -----------------------------------------------------------
def budgeted_grant(budget: int) -> Grant:
    now = time.time()
    binding = Binding("jwt:labelgate-dev#sam", METHOD, "customer-profile", ("confidential",), "d" * 64)
    return Grant(
        id=f"grant-{int(now * 1e6):x}",
        request_id="apr-0000000000000000",
        binding=binding,
        approvers=(("jwt:labelgate-dev#owner", ("data-owners",)),),
        created_at=now,
        expires_at=now + 600,
        row_budget=budget,
    )


@contextlib.asynccontextmanager
async def service_on(db: Any) -> AsyncIterator[ApprovalService]:
    service = ApprovalService(db, node_id=f"node-{id(db)}", link_base="http://inbox.test")
    await service.start(sweep=False)
    try:
        yield service
    finally:
        await service.close()


async def insert(service: ApprovalService, grant: Grant) -> None:
    async with service.db.transaction() as tx:
        await store_grant(tx, grant)


async def test_sqlite_charges_each_call_once_and_never_past_the_budget(tmp_path: Path) -> None:
    async with service_on(SqliteDatabase(tmp_path / "a.db")) as service:
        grant = budgeted_grant(3)
        await insert(service, grant)
        first = await service.use_grant(grant, None, "call-1", rows=2)
        assert (first.released, first.rows_charged) == (True, 2)
        # The same call's response phase is not charged again.
        again = await service.use_grant(grant, None, "call-1", rows=2)
        assert (again.released, again.rows_charged) == (True, None)
        assert await service.charged(grant, "call-1")
        refused = await service.use_grant(grant, None, "call-2", rows=2)
        assert (refused.released, refused.refusal) == (False, "APPROVAL_BUDGET_EXHAUSTED")
        assert (await service.use_grant(grant, None, "call-3", rows=1)).released
        stored = await service.get_grant(grant.id)
        assert stored is not None and (stored.rows_used, stored.rows_left) == (3, 0)
        requirement = Requirement(("data-owners",), 1, 600)
        assert await service.find_grant(grant.binding, requirement, "call-4", rows=1) is None
        assert await service.find_grant(grant.binding, requirement, "call-1", rows=2) is not None


async def test_two_replicas_charging_one_grant_at_once_on_postgres_never_overspend(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.create_database()
    grant = budgeted_grant(3)
    async with service_on(PostgresDatabase(dsn)) as a, service_on(PostgresDatabase(dsn)) as b:
        await insert(a, grant)
        # A third session holds the grant's row, so both charges are in flight together and
        # must queue on it; once it lets go, PostgreSQL re-checks each UPDATE's condition.
        async with await psycopg.AsyncConnection.connect(dsn) as blocker:
            async with blocker.transaction():
                await blocker.execute("SELECT id FROM approval_grants WHERE id = %s FOR UPDATE", (grant.id,))
                charges = [
                    asyncio.create_task(a.use_grant(grant, None, "call-on-a", rows=2)),
                    asyncio.create_task(b.use_grant(grant, None, "call-on-b", rows=2)),
                ]
                await until_waiting_on_locks(dsn, 2)
            outcomes = await asyncio.gather(*charges)
    assert sorted(use.released for use in outcomes) == [False, True]
    assert [use.refusal for use in outcomes if not use.released] == ["APPROVAL_BUDGET_EXHAUSTED"]
    async with service_on(PostgresDatabase(dsn)) as check:
        stored = await check.get_grant(grant.id)
        async with check.db.transaction() as tx:
            charged = await tx.fetch("SELECT call_request_id, rows_charged FROM approval_grant_charges")
    assert stored is not None and stored.rows_used == 2
    assert len(charged) == 1 and charged[0]["rows_charged"] == 2


async def until_waiting_on_locks(dsn: str, sessions: int, within: float = 30.0) -> None:
    """Until ``sessions`` other sessions of this database wait for a lock (a condition, polled)."""
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
        while True:
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= sessions:
                return
            assert time.monotonic() < deadline, f"{sessions} charges never queued on the grant's row"
            await asyncio.sleep(0.05)


def test_the_audit_record_carries_the_charge() -> None:
    event = approval_audit_event(
        "approval.grant_used",
        {
            "approval_id": "apr-0000000000000001",
            "grant_id": "grant-1",
            "subject": "jwt:labelgate-dev#sam",
            "method": METHOD,
            "model": "customer-profile",
            "labels": ["confidential"],
            "request_id": "req-9",
            "rows": 2,
            "rows_charged": 2,
            "rows_used": 2,
            "row_budget": 3,
        },
    )
    assert event is not None and event["decision"] == "approval_granted"
    assert event["details"] == {
        "event": "approval.grant_used",
        "grant_id": "grant-1",
        "rows": 2,
        "rows_charged": 2,
        "rows_used": 2,
        "row_budget": 3,
    }


def test_a_policy_that_tightens_the_budget_stops_wider_grants() -> None:
    grant = budgeted_grant(3)
    unbudgeted = dataclasses.replace(grant, row_budget=None)
    now = time.time()
    for budget, covered in (
        (None, (True, True)),
        (5, (True, False)),
        (3, (True, False)),
        (2, (False, False)),
    ):
        requirement = Requirement(("data-owners",), 1, 600, row_budget=budget)
        found = (
            rules.grant_mismatch(grant, grant.binding, now, requirement) is None,
            rules.grant_mismatch(unbudgeted, grant.binding, now, requirement) is None,
        )
        assert found == covered, budget
    assert rules.budget_shortfall(grant, 3, already_charged=False) is None
    assert rules.budget_shortfall(dataclasses.replace(grant, rows_used=2), 2, already_charged=True) is None
    assert "2 of 3 rows" in (rules.budget_shortfall(dataclasses.replace(grant, rows_used=2), 2, False) or "")
    assert (rules.call_rows(None), rules.call_rows(0), rules.call_rows(7)) == (1, 0, 7)


# -- approvers see the budget --------------------------------------------------------------------
async def test_the_inbox_shows_approvers_the_budget_and_the_rows_asked() -> None:

    key = b"row-budget-inbox-test-key-0123456789abcdef"
    steward = Subject.proven("jwt", "sam", issuer="labelgate-dev", groups=("data-stewards",))
    owner = Subject.proven("jwt", "olivia", issuer="labelgate-dev", groups=("data-owners",))

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    async with service_on(SqliteDatabase(None)) as service:
        request = await service.open(
            Draft(
                binding=Binding(steward.id, METHOD, "customer-profile", ("confidential",), "d" * 64),
                requester_groups=steward.groups,
                phase="request",
                fields=(),
                requirement=Requirement(("data-owners",), 1, 600, "confidential", row_budget=3),
                justification="",
                mode="async",
                expires_at=time.time() + 600,
                query=Query(inputs=(InputSummary("customer_ids", "INT64", (2,)),)),
            )
        )
        authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
        context = ApprovalsContext(service, authenticator, session_key=key)
        app = build_admin_app(ready, context)
        session = issue_session(context, owner, time.time() + 600)
        headers = {"cookie": f"labelgate_session={session}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as http:
            inbox = await http.get("/inbox", headers=headers)
            detail = await http.get(f"/inbox/{request.id}", headers=headers)
    assert inbox.status_code == 200 and detail.status_code == 200
    assert "at most 3 row(s) in total; this call asks for 2" in inbox.text
    assert "at most 3 row(s) in total" in detail.text
