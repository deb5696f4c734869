"""Decisions per second for each engine, for ``make bench`` (``python -m bench.policy_engines``).

Measures OpaEngine over HTTP on loopback (starting ``opa run --server`` on the policy folder
unless given a URL), EmbeddedEngine (regopy), WasmEngine (OPA's Wasm target in wasmtime), and
a CachingEngine hit, with one representative
input (a customer-profile response for an analyst: nine outputs and a detector span).
Numbers are from one run on whatever machine runs it; nothing here asserts on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from labelgate.policy.cache import CachingEngine
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.opa import OpaEngine
from labelgate.policy.wasm import WasmEngine
from tests.support.procs import REPO, free_port, opa_binary, running

_OUTPUTS = {
    "customer_id": "public",
    "segment": "public",
    "name": "internal",
    "email": "internal",
    "risk_score": "internal",
    "notes": "internal",
    "ssn": "confidential",
    "card_number": "confidential",
    "account_secret": "restricted",
}


def sample_input() -> dict[str, Any]:
    fields = [
        {"path": f"outputs.{name}", "labels": [label], "sources": {label: ["catalog"]}}
        for name, label in _OUTPUTS.items()
    ]
    fields.append(
        {
            "path": "outputs.notes{us_ssn}",
            "labels": ["confidential"],
            "sources": {"confidential": ["detector:us_ssn"]},
        }
    )
    return build_input(
        phase="response",
        subject={"id": "CN=ana,O=Example", "groups": ["analysts"], "auth": "mtls"},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "customer-profile",
            "requested_outputs": [],
            "request_id": "bench",
        },
        fields=fields,
        approval=None,
        time_ns=1_767_225_600_000_000_000,
    )


async def _measure(
    decide: Callable[[], Awaitable[Decision]], *, concurrency: int, duration: float
) -> dict[str, float]:
    for _ in range(3):  # warm up: connections, thread-local interpreters, memoised verdicts
        decision = await decide()
        if decision.failed_closed:
            raise RuntimeError(f"benchmark decision failed closed: {decision.fail_reason}")
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await decide()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "decisions": len(latencies),
        "decisions_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3),
    }


@contextlib.contextmanager
def _opa_server(policy_dir: Path, binary: str | None) -> Iterator[str]:
    """``opa run --server`` on ``policy_dir`` (it loads the policy before it listens)."""
    port = free_port()
    args = [binary or opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", str(policy_dir)]
    with (
        tempfile.TemporaryDirectory(prefix="lg-policy-bench-") as logs,
        running(args, Path(logs) / "opa.log", port, name="opa"),
    ):
        yield f"http://127.0.0.1:{port}"


async def _run(
    policy_dir: Path,
    opa_url: str,
    duration: float,
    opa_concurrency: Sequence[int],
    embedded_concurrency: Sequence[int],
    wasm_concurrency: Sequence[int] = (1, 4),
    opa_binary_path: str | None = None,
) -> dict[str, Any]:
    doc = sample_input()
    results: dict[str, Any] = {}
    opa = OpaEngine(opa_url, timeout=5.0)
    try:
        for n in opa_concurrency:
            results[f"opa_http_c{n}"] = await _measure(
                lambda: opa.decide(doc), concurrency=n, duration=duration
            )
    finally:
        await opa.close()
    embedded = EmbeddedEngine(policy_dir, watch_interval=None)
    await embedded.start()
    try:
        for n in embedded_concurrency:
            results[f"embedded_c{n}"] = await _measure(
                lambda: embedded.decide(doc), concurrency=n, duration=duration
            )
        cache = CachingEngine(embedded)
        results["cache_hit_c1"] = await _measure(lambda: cache.decide(doc), concurrency=1, duration=duration)
        results["cache_hit_c1"]["hits"] = cache.hits
    finally:
        await embedded.close()
    wasm = WasmEngine(policy_dir, watch_interval=None, opa=opa_binary_path or opa_binary())
    await wasm.start()
    try:
        for n in wasm_concurrency:
            results[f"wasm_c{n}"] = await _measure(lambda: wasm.decide(doc), concurrency=n, duration=duration)
    finally:
        await wasm.close()
    # Same run, same input: how many times faster the wasm engine decides (c=1, uncached).
    if "wasm_c1" in results:
        wasm_rate = results["wasm_c1"]["decisions_per_s"]
        for other in ("embedded_c1", "opa_http_c1", "opa_http_c16"):
            if other in results:
                results[f"wasm_c1_over_{other}"] = round(wasm_rate / results[other]["decisions_per_s"], 2)
    results["input_bytes"] = len(json.dumps(doc))
    return results


def run_policy_bench(
    *,
    policy_dir: Path = REPO / "rego",
    opa_url: str | None = None,
    opa_binary: str | None = None,
    duration: float = 2.0,
    opa_concurrency: Sequence[int] = (1, 16),
    embedded_concurrency: Sequence[int] = (1, 4),
    wasm_concurrency: Sequence[int] = (1, 4),
) -> dict[str, Any]:
    """Decisions/s and latency per engine; starts (and stops) OPA unless ``opa_url`` is given."""
    with contextlib.ExitStack() as stack:
        url = opa_url or stack.enter_context(_opa_server(policy_dir, opa_binary))
        return asyncio.run(
            _run(
                policy_dir, url, duration, opa_concurrency, embedded_concurrency, wasm_concurrency, opa_binary
            )
        )


if __name__ == "__main__":
    json.dump(run_policy_bench(), sys.stdout, indent=2)
    sys.stdout.write("\n")
