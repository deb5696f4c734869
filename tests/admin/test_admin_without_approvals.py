"""``admin.approvals: false``: the gateway's admin listener serves health, readiness and
metrics, and neither the approvals API nor the inbox (where a separate approvals server
serves approvers, the admin port stays open to metrics scrapers without taking votes). The
approvals server reading the same config still serves both. Real processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.admin.conftest import Admin, admin_gateway
from tests.admin.test_approvals_server_audit import ASYNC, approvals_server
from tests.approvals.conftest import grpc_infer, person, token

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Admin]:
    with admin_gateway(tmp_path_factory.mktemp("admin-without-approvals"), backend, approvals=False) as admin:
        yield admin


def test_the_approvals_api_and_the_inbox_are_not_there(gateway: Admin) -> None:
    owner = token(person("owner"), "data-owners")
    for method, path in (
        ("GET", "/api/v1/approvals"),
        ("GET", "/api/v1/approvals/apr-0123456789abcdef"),
        ("POST", "/api/v1/approvals/apr-0123456789abcdef/deny"),
        ("GET", "/inbox"),
        ("GET", "/inbox/sessions"),
    ):
        answer = httpx.request(
            method, gateway.base + path, headers={"authorization": f"Bearer {owner}"}, json={}, timeout=10
        )
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == PROBLEM, (method, path)
        assert answer.json()["reason"] == "NOT_FOUND"
    spec = httpx.get(f"{gateway.base}/api/v1/openapi.json", timeout=10).json()
    assert not [p for p in spec["paths"] if p.startswith("/api/v1/approvals")]


def test_health_readiness_and_metrics_still_answer(gateway: Admin) -> None:
    assert httpx.get(f"{gateway.base}/healthz", timeout=10).status_code == 200
    ready = httpx.get(f"{gateway.base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(f"{gateway.base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "labelgate_" in metrics.text


def test_held_calls_are_decided_through_the_approvals_server(gateway: Admin, tmp_path: Path) -> None:
    config = gateway.folder / "gateway.yaml"
    steward, owner = person("steward"), token(person("owner"), "data-owners")
    asked = grpc_infer(gateway.grpc, token(steward, "data-stewards"), **ASYNC)
    approval_id = asked.metadata["approval_id"]
    with approvals_server(config, tmp_path / "approvals.log") as (api, _):
        assert api.show(approval_id, owner)["state"] == "pending"
        assert api.get("/inbox", None).status_code in (200, 303)
        assert api.approve(approval_id, owner, "through the approvals server").json()["state"] == "granted"


async def test_the_admin_app_serves_the_approvals_its_caller_gives_it(tmp_path: Path) -> None:
    """``admin.approvals`` is decided where the approvals context is made (the gateway
    withholds it; ``approvals serve`` gives it whatever the setting says): the app serves the
    API and the inbox when given one, and answers 404 problems when not. In process."""
    from labelgate.admin.app import build_admin_app
    from labelgate.approvals.api import ApprovalsContext
    from labelgate.approvals.db import SqliteDatabase
    from labelgate.approvals.service import ApprovalService
    from labelgate.auth import Authenticator
    from labelgate.auth.settings import AuthSettings, JwtSettings
    from labelgate.config import AdminSettings

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    service = ApprovalService(SqliteDatabase(tmp_path / "approvals.db"), node_id="n", link_base="http://a")
    authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
    context = ApprovalsContext(service, authenticator, session_key=b"k" * 32)
    settings = AdminSettings(approvals=False)  # what the approvals server reads from the same config
    for given, served in ((context, True), (None, False)):
        app = build_admin_app(ready, given, settings=settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            spec = (await client.get("/api/v1/openapi.json")).json()
            assert any(p.startswith("/api/v1/approvals") for p in spec["paths"]) is served
            if not served:
                answer = await client.get("/inbox")
                assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM
