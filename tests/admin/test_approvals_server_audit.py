"""``labelgate approvals serve`` joins the audit trail: a vote cast through it (the inbox
compose and the chart send approvers to) reaches the audit log as the gateway's own do, it
does not start without the writer its config names, and it is not ready while that writer
is down. Real processes: the audit writer, a gateway, the approvals server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.admin.conftest import write_config
from tests.approvals.conftest import Api, dev_id, grpc_infer, person, running_gateway, token
from tests.audit.conftest import read_records, writer_process
from tests.support.procs import Process, free_port, labelgate_command, running, wait_until

# A request opened without holding the call (the caller is answered at once with its id).
ASYNC: dict[str, Any] = {"x-labelgate-approval": "async"}


@contextlib.contextmanager
def approvals_server(config: Path, log: Path) -> Iterator[tuple[Api, Process]]:
    port = free_port()
    command = labelgate_command(
        "approvals", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"
    )
    with running(command, log, port=port) as process:
        api = Api(f"http://127.0.0.1:{port}")
        wait_until(lambda: api.get("/healthz", None).status_code == 200, 20, "the approvals server")
        yield api, process


def approval_records(log_dir: Path, approval_id: str) -> dict[str, dict[str, Any]]:
    """The audit records about ``approval_id``, by the approval event each was made from."""
    records = [r["event"] for r in read_records(log_dir)]
    return {r["details"]["event"]: r for r in records if r.get("approval_id") == approval_id}


def test_a_denial_through_the_approvals_server_is_in_the_audit_log(tmp_path: Path, backend: str) -> None:
    sock, log_dir = tmp_path / "a.sock", tmp_path / "audit"
    config, grpc_address, _ = write_config(tmp_path, backend, {}, audit={"socket": str(sock)})
    steward, owner = person("steward"), person("owner")
    with (
        writer_process(sock, log_dir),
        running_gateway(config, grpc_address, tmp_path / "gateway.log"),
        approvals_server(config, tmp_path / "approvals.log") as (api, server),
    ):
        asked = grpc_infer(grpc_address, token(steward, "data-stewards"), **ASYNC)
        approval_id = asked.metadata["approval_id"]
        denied = api.deny(approval_id, token(owner, "data-owners"), "not today")
        assert denied.status_code == 200, denied.text
        assert denied.json()["state"] == "denied"
        server.stop()  # SIGTERM: the server drains its audit appends before it exits
        assert server.popen.returncode == 0, server.tail()
    found = approval_records(log_dir, approval_id)
    assert {"approval.vote", "approval.denied"} <= found.keys(), sorted(found)
    vote, outcome = found["approval.vote"], found["approval.denied"]
    assert vote["approvers"] == [dev_id(owner)]
    assert vote["details"]["verdict"] == "deny"
    assert vote["reason"] == "not today"
    assert outcome["decision"] == "approval_denied"
    assert outcome["subject"]["id"] == dev_id(steward)


def test_it_does_not_start_without_the_audit_writer_its_config_names(tmp_path: Path, backend: str) -> None:
    config, _, _ = write_config(tmp_path, backend, {}, audit={"socket": str(tmp_path / "none.sock")})
    command = labelgate_command(
        "approvals", "serve", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}"
    )
    process = Process(command, tmp_path / "approvals.log")
    try:
        status = process.popen.wait(timeout=30)
    finally:
        process.stop()
    assert status != 0
    assert "(AUDIT_UNAVAILABLE)" in process.output()
    assert "audit.socket" in process.output()


def test_it_is_not_ready_while_its_audit_writer_is_down(tmp_path: Path, backend: str) -> None:
    sock, log_dir = tmp_path / "a.sock", tmp_path / "audit"
    config, _, _ = write_config(tmp_path, backend, {}, audit={"socket": str(sock)})
    with (
        writer_process(sock, log_dir) as writer,
        approvals_server(config, tmp_path / "approvals.log") as (api, _),
    ):
        ready = api.get("/readyz", None)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"approval_store": True, "audit_writer": True}
        writer.stop()
        # /readyz answers from a check at most a second old (admin.bridge.bridged_ready).
        wait_until(lambda: api.get("/readyz", None).status_code == 503, 10, "readiness to fail")
        down = api.get("/readyz", None)
        assert down.json()["checks"]["audit_writer"] is False


def test_without_an_audit_socket_it_says_votes_are_not_audited(tmp_path: Path, backend: str) -> None:
    config, _, _ = write_config(tmp_path, backend, {})
    assert "audit" not in yaml.safe_load(config.read_text())
    with approvals_server(config, tmp_path / "approvals.log") as (api, server):
        assert httpx.get(f"{api.base}/readyz", timeout=10).status_code == 200
        assert "votes are not audited" in server.output()
