"""Calls to services the gateway does not serve share one label value (review: what leaves
the gateway, finding 3).

The catch-all ``UnservedMethods`` answers any path, before authentication, and the metrics
interceptor counts it: each service name an anonymous caller made up was a ``grpc_service``
label value of its own, of any length (80 calls naming 7,000-character services grew
/metrics from 7 KB to 9 MB, for the life of the process). Only the services the gateway
serves (its own, its routes') are label values; every other call is ``unserved``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import grpc

from labelgate.gateway.metrics import MAX_LABEL_CHARS, UNSERVED, method_label, method_labels
from tests.gateway.aio import channel
from tests.gateway.harness import TokenIssuer, gateway_config, start_gateway
from tests.gateway.test_metric_labels import scrape, series_with_a_method
from tests.support.procs import wait_until

SERVED = {
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def _call_unserved(address: str, services: list[str]) -> set[str]:
    codes = set()
    async with channel(address) as opened:
        for service in services:
            stream: grpc.aio.StreamStreamCall[bytes, bytes] = opened.stream_stream(f"/{service}/Leak")(
                iter([]), timeout=10
            )
            try:
                async for _ in stream:
                    pass
            except grpc.aio.AioRpcError as error:
                codes.add(error.code().name)
    return codes


async def test_unserved_service_names_add_no_series(
    tmp_path: Path, backend: str, token_issuer: TokenIssuer
) -> None:
    marker = uuid.uuid4().hex[:8]
    config = gateway_config(upstream=backend, engine="embedded", issuer=token_issuer)
    with start_gateway(config, tmp_path) as gateway:
        # One unserved call first: the ``unserved`` series exist from then on.
        assert await _call_unserved(gateway.address, [f"warm.{marker}"]) == {"UNIMPLEMENTED"}
        # The handled count is made once the call is over, which may be after its caller heard.
        wait_until(
            lambda: any(
                s.name == "grpc_server_handled_total" and s.labels["grpc_service"] == UNSERVED
                for s in scrape(gateway)
            ),
            10,
            "the warm call's handled count",
        )
        before = series_with_a_method(gateway)
        size_before = len(gateway.get("/metrics")[1])
        names = [f"ssn.078-05-1120.{marker}.n{i}" for i in range(70)]
        names += [f"s{i:02d}.{marker}." + "A" * 7000 for i in range(10)]
        names.append(f'x{marker}"\n}} evil_series 1e9 #')
        # A service this process has a descriptor for, which the gateway does not serve.
        names.append("labelgate.v1.demo.CustomerDirectory")
        assert await _call_unserved(gateway.address, names) == {"UNIMPLEMENTED"}
        after = series_with_a_method(gateway)
        samples = [s for s in scrape(gateway) if s.name.startswith("grpc_server_")]
        _, body = gateway.get("/metrics")
    assert after == before, sorted(after - before)[:3]
    assert marker not in body.decode() and "evil_series" not in body.decode()
    assert len(body) - size_before < 1024  # counts change, no series is added
    assert {s.labels["grpc_service"] for s in samples} <= SERVED | {UNSERVED}
    unserved = sum(
        s.value
        for s in samples
        if s.name == "grpc_server_handled_total" and s.labels["grpc_service"] == UNSERVED
    )
    assert unserved == 1 + len(names)
    assert {s.labels["grpc_method"] for s in samples if s.labels["grpc_service"] == UNSERVED} == {UNSERVED}


def test_only_served_services_are_label_values() -> None:
    """In a process of its own: what the gateway serves is process-wide."""
    script = (
        "from labelgate.gateway.metrics import method_labels, serve_services\n"
        "import labelgate._proto.labelgate.v1.demo_pb2\n"  # a descriptor in the pool, not served
        "print(len({method_labels(f'/svc{i}.S/M{i}') for i in range(500)}))\n"
        "print(*method_labels('/labelgate.v1.demo.CustomerDirectory/GetCustomer'))\n"
        "serve_services(['labelgate.v1.demo.CustomerDirectory', 'r' * 129])\n"
        "print(*method_labels('/labelgate.v1.demo.CustomerDirectory/GetCustomer'))\n"
        "print(*method_labels('/' + 'r' * 129 + '/M'))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    distinct, unserved, served, too_long = run.stdout.splitlines()
    assert distinct == "1"  # 500 made-up services, one pair of label values
    assert unserved == f"{UNSERVED} {UNSERVED}"
    assert served == "labelgate.v1.demo.CustomerDirectory GetCustomer"
    assert too_long == f"{UNSERVED} {UNSERVED}"  # a served name longer than MAX_LABEL_CHARS
    assert MAX_LABEL_CHARS == 128
    assert method_label("/made.Up/Call") == f"/{UNSERVED}/{UNSERVED}"
    assert method_labels("/made.Up/" + "m" * 9000) == (UNSERVED, UNSERVED)
