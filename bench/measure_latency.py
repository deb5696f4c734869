"""Measure the latency the gateway adds over a direct call (a measurement, not a test).

    .venv/bin/python -m bench.measure_latency [--calls 200] [--warmup 30] [--rows 100]

Starts real parts on loopback (demo backend, ``opa run --server``, one gateway per engine with
the default decision cache), then, per engine, times ``ModelInfer`` of ``customer-profile``
for ``--rows`` rows as an analyst (so every response is classified and masked) with an
in-process grpc.aio client and labelgate's own stubs: direct to the backend and through the
gateway, interleaved so that both see the same machine load. Prints p50/p99 of each and the
added latency (gateway minus direct) at p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from tests.gateway.aio import channel
from tests.gateway.expected import customer_request
from tests.gateway.harness import (
    ENGINES,
    gateway_config,
    make_token_issuer,
    run_backend,
    run_opa,
    start_gateway,
)
from tests.support.pki import rsa_signing_key


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(
    backend: str, gateway: str, headers: dict[str, str], calls: int, warmup: int, rows: int
) -> dict:
    request = customer_request(list(range(rows)))
    metadata = tuple(headers.items())
    async with channel(backend) as direct_channel, channel(gateway) as gateway_channel:
        direct = pb_grpc.GRPCInferenceServiceStub(direct_channel).ModelInfer
        through = pb_grpc.GRPCInferenceServiceStub(gateway_channel).ModelInfer
        for _ in range(warmup):
            await direct(request, timeout=10)
            await through(request, metadata=metadata, timeout=10)
        direct_ms, gateway_ms = [], []
        for _ in range(calls):
            started = time.perf_counter()
            await direct(request, timeout=10)
            direct_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await through(request, metadata=metadata, timeout=10)
            gateway_ms.append((time.perf_counter() - started) * 1000)
    return {
        "direct_p50": statistics.median(direct_ms),
        "direct_p99": percentile(direct_ms, 0.99),
        "gateway_p50": statistics.median(gateway_ms),
        "gateway_p99": percentile(gateway_ms, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Added latency of the gateway over a direct call.")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labelgate-latency-") as temp, contextlib.ExitStack() as stack:
        directory = Path(temp)
        issuer = make_token_issuer(directory, rsa_signing_key("latency"))
        backend, _ = stack.enter_context(run_backend(directory))
        opa_url, _ = stack.enter_context(run_opa(directory))
        results = {}
        for engine in ENGINES:
            config = gateway_config(
                upstream=backend, engine=engine, opa_url=opa_url if engine == "opa" else None, issuer=issuer
            )
            gateway = stack.enter_context(start_gateway(config, directory / engine, engine))
            headers = issuer.headers("analyst")
            results[engine] = asyncio.run(
                measure(backend, gateway.address, headers, args.calls, args.warmup, args.rows)
            )
    print(f"customer-profile, {args.rows} rows, analyst (masked), {args.calls} calls, {args.warmup} warm-up")
    columns = ("direct p50", "direct p99", "gw p50", "gw p99", "added p50", "added p99")
    print(f"{'engine':<10}" + "".join(f"{name:>12}" for name in columns))
    for engine, r in results.items():
        cells = (
            r["direct_p50"],
            r["direct_p99"],
            r["gateway_p50"],
            r["gateway_p99"],
            r["gateway_p50"] - r["direct_p50"],
            r["gateway_p99"] - r["direct_p99"],
        )
        print(f"{engine:<10}" + "".join(f"{value:>10.2f}ms" for value in cells))


if __name__ == "__main__":
    main()
