"""The approval store (PostgreSQL) is killed under a running gateway: a call that needs an
approval is refused, never released and never left hanging; calls that need none go on."""

from __future__ import annotations

from pathlib import Path

from tests.approvals.conftest import gateway_config, grpc_infer, running_gateway, token
from tests.support.postgres import running_postgres
from tests.support.procs import free_port, labelgate_command, running

ASYNC = {"x-labelgate-approval": "async"}
# What a caller reads of a dead store: the gateway's own words, not the driver's (host, port).
FIXED_TEXTS = {"cannot reach the approval store (PostgreSQL)", "the approval store (PostgreSQL) failed"}


def test_a_dead_approval_store_refuses_held_calls_and_spares_the_others(tmp_path: Path) -> None:
    port = free_port()
    backend = f"127.0.0.1:{port}"
    with (
        running_postgres() as postgres,
        running(labelgate_command("demo-backend", "--listen", backend), tmp_path / "backend.log", port=port),
    ):
        approvals = {
            "store": "postgres",
            "postgres_dsn": postgres.create_database(),
            "hold_timeout_seconds": 30,
        }
        config, address, _ = gateway_config(tmp_path, backend, approvals)
        with running_gateway(config, address, tmp_path / "gateway.log"):
            before = grpc_infer(address, token("stella", "data-stewards"), **ASYNC)
            assert (before.code, before.reason) == ("FAILED_PRECONDITION", "APPROVAL_PENDING"), before

            postgres.kill()  # the postmaster and every backend: none answers once this returns

            for held in (
                grpc_infer(address, token("sol", "data-stewards"), **ASYNC),
                grpc_infer(address, token("sid", "data-stewards"), timeout=20),
            ):
                assert held.code == "UNAVAILABLE", held
                assert held.reason.startswith("APPROVALS_STORE"), held
                assert held.outputs == {}
                # The driver's text (host, port, user, database) stays in the gateway's log.
                assert held.message in FIXED_TEXTS, held
            # Asking about the request made before the store died is refused too, not guessed.
            asked = grpc_infer(
                address,
                token("stella", "data-stewards"),
                **{"x-labelgate-approval-id": before.metadata["approval_id"]},
            )
            assert asked.code == "UNAVAILABLE" and asked.reason.startswith("APPROVALS_STORE"), asked
            # The store is not on the path of a call no policy holds.
            assert grpc_infer(address, token("ann", "analysts")).code == "OK"
