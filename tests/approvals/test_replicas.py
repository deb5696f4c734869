"""Two gateway processes on one real PostgreSQL: a call held on A is released by a grant made
through B (woken by LISTEN/NOTIFY), and a restarted gateway marks the calls it lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.approvals.conftest import Api, gateway_config, grpc_infer, person, running_gateway, token
from tests.support.postgres import PostgresServer
from tests.support.procs import Process, free_port, labelgate_command, running

# The held call's deadline is long; the service's safety re-check comes after 15 s. So a call
# released within RELEASE_WITHIN was woken by PostgreSQL NOTIFY, the main path.
CLIENT_DEADLINE = 40.0
RELEASE_WITHIN = 10.0


@dataclass
class Replica:
    grpc: str
    api: Api
    config: Path
    log: Path
    process: Process | None = None


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    folder = tmp_path_factory.mktemp("replicas")
    dsn = postgres.create_database()
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with running(
        labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
    ):
        made = []
        for name in ("a", "b"):
            approvals = {"store": "postgres", "postgres_dsn": dsn, "node_id": f"replica-{name}"}
            config, address, admin = gateway_config(folder, backend, approvals, name=f"gateway-{name}")
            made.append(Replica(address, Api(admin), config, folder / f"gateway-{name}.log"))
        with (
            running_gateway(made[0].config, made[0].grpc, made[0].log) as first,
            running_gateway(made[1].config, made[1].grpc, made[1].log) as second,
        ):
            made[0].process, made[1].process = first, second
            yield made


def test_a_call_held_on_a_is_released_by_a_grant_made_through_b(replicas: list[Replica]) -> None:
    a, b = replicas
    steward, owner = person("steward"), person("owner")
    owner_token = token(owner, "data-owners")
    with ThreadPoolExecutor(1) as pool:
        released: list[float] = []
        call = pool.submit(grpc_infer, a.grpc, token(steward, "data-stewards"), timeout=CLIENT_DEADLINE)
        call.add_done_callback(lambda _: released.append(time.monotonic()))
        item = b.api.pending_of(steward, owner_token)  # B sees A's request: one shared store
        granted_at = time.monotonic()
        response = b.api.approve(item["id"], owner_token, "approved on replica B")
        assert response.status_code == 200 and response.json()["state"] == "granted"
        answer = call.result(timeout=RELEASE_WITHIN)
    assert answer.code == "OK", answer
    assert all(value for value in answer.outputs["ssn"])
    print(f"\ngrant through replica B -> release on replica A: {(released[0] - granted_at) * 1000:.1f} ms")
    assert a.api.show(item["id"], owner_token)["votes"][0]["reason"] == "approved on replica B"


def test_a_restarted_gateway_marks_the_requests_of_the_calls_it_held(replicas: list[Replica]) -> None:
    a, b = replicas
    steward, owner = person("steward"), person("owner")
    owner_token = token(owner, "data-owners")
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(grpc_infer, b.grpc, token(steward, "data-stewards"), timeout=30)
        item = a.api.pending_of(steward, owner_token)
        assert item["state"] == "pending"
        # Replica B dies while holding the call (no clean shutdown) and comes back.
        b_process = b.process
        assert b_process is not None
        b_process.signal(signal.SIGKILL)
        assert call.result(timeout=30).code == "UNAVAILABLE"
    assert a.api.show(item["id"], owner_token)["state"] == "pending", "nobody knows yet"
    b_process.stop()
    with running_gateway(b.config, b.grpc, b.log.with_suffix(".restarted.log")):
        shown = a.api.show(item["id"], owner_token)
        assert shown["state"] == "abandoned" and "restarted" in shown["resolution"]
        # Not in anyone's pending list any more.
        assert item["id"] not in [
            i["id"] for i in a.api.get("/api/v1/approvals", owner_token).json()["items"]
        ]
