"""Readiness follows the audit writer: without it every call is refused (AUDIT_UNAVAILABLE),
so ``/readyz`` and gRPC health must say so, as they do for the policy engine and the upstream,
and a load balancer sends the calls elsewhere. Unless ``audit.fail_open``: calls then proceed
without the writer, and the gateway stays ready.

Real processes: the demo backend, an audit writer (stopped, then started again on its socket)
and a gateway (embedded engine, JWT)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.gateway.aio import infer, refused
from tests.gateway.expected import customer_request
from tests.gateway.harness import (
    AuditFiles,
    Gateway,
    TokenIssuer,
    gateway_config,
    run_audit_writer,
    start_gateway,
)
from tests.gateway.test_faults import eventually, health

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@contextlib.contextmanager
def audited_gateway(
    directory: Path, backend: str, issuer: TokenIssuer, audit: AuditFiles, **audit_settings: object
) -> Iterator[Gateway]:
    config = gateway_config(
        upstream=backend,
        engine="embedded",
        issuer=issuer,
        audit={"socket": str(audit.socket), "timeout_seconds": 2, **audit_settings},
    )
    with start_gateway(config, directory / "gateway") as gateway:
        yield gateway


async def test_readiness_follows_the_audit_writer(
    tmp_path: Path, backend: str, token_issuer: TokenIssuer
) -> None:
    headers = token_issuer.headers("analyst")
    with (
        run_audit_writer(tmp_path) as audit,
        audited_gateway(tmp_path, backend, token_issuer, audit) as gateway,
    ):
        assert await health(gateway.address) == SERVING
        await infer(gateway.address, customer_request([1]), headers)
        audit.process.stop()

        async def not_ready() -> bool:
            return gateway.get("/readyz")[0] == 503 and await health(gateway.address) == NOT_SERVING

        await eventually(not_ready, what="/readyz 503 and health NOT_SERVING")
        problem = json.loads(gateway.get("/readyz")[1])
        assert problem["checks"] == {"policy_engine": True, "upstream": True, "audit_writer": False}
        refusal = await refused(gateway.address, customer_request([1]), headers)
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
        assert gateway.get("/healthz")[0] == 200, "alive, just not ready"

        with run_audit_writer(tmp_path):  # the same socket, answering again

            async def ready() -> bool:
                return gateway.get("/readyz")[0] == 200 and await health(gateway.address) == SERVING

            await eventually(ready, within=10, what="/readyz 200 and health SERVING")
            await infer(gateway.address, customer_request([1]), headers)


async def test_a_fail_open_gateway_stays_ready_without_the_writer(
    tmp_path: Path, backend: str, token_issuer: TokenIssuer
) -> None:
    with (
        run_audit_writer(tmp_path) as audit,
        audited_gateway(tmp_path, backend, token_issuer, audit, fail_open=True) as gateway,
    ):
        audit.process.stop()
        # Calls proceed without the writer, so the gateway is as ready as it was.
        await infer(gateway.address, customer_request([1]), token_issuer.headers("analyst"))
        status, body = gateway.get("/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"policy_engine": True, "upstream": True}
        assert await health(gateway.address) == SERVING
