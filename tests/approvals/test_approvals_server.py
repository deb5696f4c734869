"""``labelgate approvals-server`` on the gateway's store, and the ``labelgate approvals`` CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.approvals.conftest import Api, Stack, grpc_infer, person, token
from tests.support.procs import Process, free_port, labelgate_command, running, wait_until


@contextlib.contextmanager
def approvals_server(stack: Stack, log: Path) -> Iterator[tuple[Api, Process]]:
    port = free_port()
    args = labelgate_command(
        "approvals-server", "--config", str(stack.config), "--listen", f"127.0.0.1:{port}"
    )
    with running(args, log, port=port) as process:
        api = Api(f"http://127.0.0.1:{port}")
        wait_until(lambda: api.get("/readyz", None).status_code == 200, 20, "the approvals server")
        yield api, process


def test_pending_requests_survive_an_approvals_server_restart(stack: Stack, tmp_path: Path) -> None:
    steward, owner = person("steward"), person("owner")
    owner_token = token(owner, "data-owners")
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(grpc_infer, stack.grpc, token(steward, "data-stewards"), timeout=40)
        with approvals_server(stack, tmp_path / "first.log") as (api, _):
            item = api.pending_of(steward, owner_token)
            assert item["link"] == f"{api.base}/inbox/{item['id']}"
        with approvals_server(stack, tmp_path / "second.log") as (api, _):
            assert api.pending_of(steward, owner_token)["id"] == item["id"]
            assert (
                api.approve(item["id"], owner_token, "from the approvals server").json()["state"] == "granted"
            )
            answer = call.result(timeout=40)  # the gateway, another process, sees it and releases the call
    assert answer.code == "OK", answer


def cli(stack: Stack, bearer: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABELGATE_APPROVALS_URL": stack.api.base, "LABELGATE_TOKEN": bearer}
    return subprocess.run(
        labelgate_command("approvals", *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_lists_shows_approves_and_denies(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    steward_token, owner_token = token(steward, "data-stewards"), token(owner, "data-owners")
    asked = [
        grpc_infer(
            stack.grpc, steward_token, **{"x-labelgate-approval": "async", "x-labelgate-justification": j}
        )
        for j in ("weekly report", "one more")
    ]
    first, second = (answer.metadata["approval_id"] for answer in asked)

    listed = cli(stack, owner_token, "list")
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second in listed.stdout and steward in listed.stdout
    shown = cli(stack, owner_token, "show", first)
    assert "justification: weekly report" in shown.stdout and "data-owners" in shown.stdout

    own = cli(stack, steward_token, "approve", first)
    assert own.returncode == 1 and "(SELF_APPROVAL)" in own.stderr
    approved = cli(stack, owner_token, "approve", first, "--reason", "report is fine")
    assert approved.returncode == 0 and f"{first}  granted" in approved.stdout
    denied = cli(stack, owner_token, "deny", second, "--reason", "duplicate")
    assert denied.returncode == 0 and "denied by" in denied.stdout and "duplicate" in denied.stdout
    again = cli(stack, owner_token, "deny", second, "--reason", "again")
    assert again.returncode == 2 and "(APPROVAL_NOT_PENDING)" in again.stderr
    no_token = cli(stack, "", "list")
    assert no_token.returncode == 2 and "LABELGATE_TOKEN" in no_token.stderr  # an input problem
