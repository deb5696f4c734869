"""Readiness follows OPA having its policy (``engine: opa``): an OPA that follows a bundle
server answers plain ``/health`` as soon as it listens, before its bundle is activated, and
then every call is refused ``POLICY_UNDEFINED``; ``/readyz`` and gRPC health must say so
until the bundle is there (review: the gateway said ready and SERVING meanwhile).

Real processes: the demo backend, ``opa run --server`` following a loopback bundle service
that serves the project's policy pack built by ``opa build``, and a gateway. The gateway
starts while OPA is already up with nothing activated, so its first readiness answers are
about exactly that state (no earlier outage in between to be mistaken for it)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2

from tests.gateway.aio import infer, refused
from tests.gateway.expected import customer_request
from tests.gateway.harness import REGO, Gateway, TokenIssuer, gateway_config
from tests.gateway.test_faults import eventually, health
from tests.policy.test_opa import BundleService, bundle_tarball, following_config, opa_at
from tests.support.procs import free_port, labelgate_command, running

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@contextlib.contextmanager
def listening_gateway(config: dict[str, Any], directory: Path) -> Iterator[Gateway]:
    """``labelgate serve`` once it listens, ready or not (``start_gateway`` waits for ready,
    which this gateway is not meant to be at first)."""
    port, admin_port = free_port(), free_port()
    config = {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}"}
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(config_file))
    # The gRPC port opens last, after the admin listener and the first readiness check.
    with running(command, directory / "gateway.log", port=port) as process:
        yield Gateway(f"127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, config)


async def test_not_ready_until_opa_has_activated_its_bundle(
    tmp_path: Path, backend: str, token_issuer: TokenIssuer
) -> None:
    service = BundleService(bundle_tarball(REGO, tmp_path / "rego.tar.gz"))
    opa_port = free_port()
    headers = token_issuer.headers("analyst")
    config = gateway_config(
        upstream=backend, engine="opa", opa_url=f"http://127.0.0.1:{opa_port}", issuer=token_issuer
    )
    try:
        with (
            # The bundle service is not started: OPA is up and has no policy.
            opa_at(tmp_path, opa_port, following_config(tmp_path, service.url)),
            listening_gateway(config, tmp_path / "gateway") as gateway,
        ):
            status, body = gateway.get("/readyz")
            assert status == 503, body
            assert json.loads(body)["checks"] == {"policy_engine": False, "upstream": True}
            assert await health(gateway.address) == NOT_SERVING
            refusal = await refused(gateway.address, customer_request([1]), headers)
            assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_UNDEFINED")
            assert gateway.get("/healthz")[0] == 200, "alive, just not ready"

            service.start()

            async def ready() -> bool:
                return gateway.get("/readyz")[0] == 200 and await health(gateway.address) == SERVING

            await eventually(ready, within=20, what="/readyz 200 and health SERVING")
            await infer(gateway.address, customer_request([1]), headers)
    finally:
        service.stop()
