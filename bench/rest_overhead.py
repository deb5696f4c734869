"""The REST binding's overhead, against direct REST calls and against the gRPC path, same run.

The demo backend speaks gRPC only, so the direct REST baseline is MLServer 1.7 (its own
virtualenv, ``tests/support/mlserver.py``) serving ``mls-profile``; one ``labelgate serve``
(default policy, embedded engine, an analyst, so every reply is classified and masked) routes
``customer-profile`` to the demo backend over gRPC and ``mls-*`` to MLServer over REST. Six
paths, each called one at a time (c=1) by an in-process client (grpc.aio or httpx), in
interleaved rounds so all see the same machine load:

- MLServer: direct REST; gateway REST binding -> REST upstream; gateway gRPC -> REST upstream;
- demo backend: direct gRPC; gateway gRPC; gateway REST binding -> gRPC upstream.

Two more per gateway, a trivial call each way (``GET /v2/health/ready``, ``ServerReady``), show
what each binding costs with no tensors at all.

``python -m bench.rest_overhead [--seconds 3] [--rows 100] [--baseline-src DIR]`` prints the
figures; with ``--baseline-src`` (a source tree's ``proxy/`` folder, e.g. from ``git archive``)
a second gateway importing ``labelgate`` from there is measured in the same interleaved rounds
(its paths prefixed ``base_``), for before/after ratios of a change. ``python -m bench`` runs it
as scenario ``rest_overhead``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx

from bench.figures import Figure, Scenario, not_available
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import mint_dev_token
from tests.gateway.expected import customer_request
from tests.gateway.harness import run_backend, start_gateway
from tests.support import mlserver_data
from tests.support.mlserver import run_mlserver
from tests.support.procs import REPO, free_port

if TYPE_CHECKING:
    from bench.context import Bench

# As bench/stack.py's full path: the default policy, an analyst, the dev key (development only).
DEFAULT_POLICY = REPO / "rego"
DEFAULT_CATALOG = DEFAULT_POLICY / "labelgate" / "catalog" / "data.json"
DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
HASH_KEY = "bench-insecure-hash-key-not-secret"

ROUNDS = 3
Call = Callable[[], Awaitable[None]]


def gateway_config(backend: str, mlserver: str, catalog_file: Path, rest_listen: str) -> dict[str, Any]:
    return {
        "upstream": {"address": backend},
        "upstreams": [{"name": "mlserver", "address": mlserver, "protocol": "rest", "models": ["mls-*"]}],
        "rest_listen": rest_listen,
        "engine": "embedded",
        "policy": {"dir": str(DEFAULT_POLICY)},
        "classification": {"catalog_file": str(catalog_file)},
        "masking": {"hash_key": HASH_KEY},
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        "approvals": {"enabled": False},
        "log_level": "warning",
    }


def _json_body(rows: int) -> bytes:
    ids = list(range(rows))
    return json.dumps(
        {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [rows], "data": ids}]}
    ).encode()


async def _timed(call: Call, seconds: float, samples: list[float]) -> None:
    end = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
        if started > end:
            return


@dataclass(frozen=True)
class Stack:
    backend: str
    mlserver: str
    gateways: dict[str, tuple[str, str]]  # prefix ("" or "base_") -> (gRPC address, REST HOST:PORT)
    pids: dict[str, int] = field(default_factory=dict)  # prefix -> the gateway's process id


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (``/proc/<pid>/stat``): steadier than latency on a
    shared machine, and only the gateway's (not the client's, nor the kernel's wake-ups)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(stack: Stack, rows: int, seconds: float, warmup: float) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) and calls/s of each path, over ROUNDS interleaved rounds."""
    backend, mlserver = stack.backend, stack.mlserver
    token = mint_dev_token("bench-analyst", ["analysts"], 3600, DEV_KEYS)
    headers = {"authorization": f"Bearer {token}"}
    body = _json_body(rows)
    json_headers = {**headers, "content-type": "application/json"}
    demo_request = customer_request(list(range(rows)))
    mls_request = customer_request(list(range(rows)), model=mlserver_data.MODEL)
    options = [("grpc.max_receive_message_length", -1)]
    async with contextlib.AsyncExitStack() as opened:
        client = await opened.enter_async_context(httpx.AsyncClient(timeout=60))
        direct_channel = await opened.enter_async_context(grpc.aio.insecure_channel(backend, options=options))
        infer = "/inference.GRPCInferenceService/ModelInfer"

        def grpc_call(channel: grpc.aio.Channel, request: pb.ModelInferRequest, metadata: Any) -> Call:
            stub: Any = channel.unary_unary(
                infer, request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=None
            )

            async def call() -> None:
                await stub(request, metadata=metadata, timeout=60)

            return call

        def rest_call(url: str, send_headers: dict[str, str], get: bool = False) -> Call:
            async def call() -> None:
                if get:
                    reply = await client.get(url, headers=send_headers)
                else:
                    reply = await client.post(url, content=body, headers=send_headers)
                if reply.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {reply.status_code} {reply.text[:200]}")

            return call

        def health_call(channel: grpc.aio.Channel, metadata: Any) -> Call:
            stub: Any = channel.unary_unary(
                "/inference.GRPCInferenceService/ServerReady",
                request_serializer=pb.ServerReadyRequest.SerializeToString,
                response_deserializer=None,
            )

            async def call() -> None:
                await stub(pb.ServerReadyRequest(), metadata=metadata, timeout=60)

            return call

        metadata = tuple(headers.items())
        paths: dict[str, Call] = {
            "mls_direct_rest": rest_call(
                f"http://{mlserver}/v2/models/{mlserver_data.MODEL}/infer",
                {"content-type": "application/json"},
            ),
            "demo_direct_grpc": grpc_call(direct_channel, demo_request, ()),
        }
        for prefix, (gateway, rest) in stack.gateways.items():
            channel = await opened.enter_async_context(grpc.aio.insecure_channel(gateway, options=options))
            paths |= {
                f"{prefix}mls_gateway_rest": rest_call(
                    f"http://{rest}/v2/models/{mlserver_data.MODEL}/infer", json_headers
                ),
                f"{prefix}mls_gateway_grpc": grpc_call(channel, mls_request, metadata),
                f"{prefix}demo_gateway_grpc": grpc_call(channel, demo_request, metadata),
                f"{prefix}demo_gateway_rest": rest_call(
                    f"http://{rest}/v2/models/customer-profile/infer", json_headers
                ),
                f"{prefix}health_gateway_rest": rest_call(
                    f"http://{rest}/v2/health/ready", headers, get=True
                ),
                f"{prefix}health_gateway_grpc": health_call(channel, metadata),
            }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
        for call in paths.values():
            await _timed(call, warmup, [])
        for _ in range(ROUNDS):
            for name, call in paths.items():
                # The gateway this path goes through (direct paths: none).
                pid = next(
                    (stack.pids[p] for p in ("base_", "") if name.startswith(p) and "gateway" in name), None
                )
                before = cpu_seconds(pid) if pid else 0.0
                await _timed(call, seconds / ROUNDS, samples[name])
                cpu[name] += (cpu_seconds(pid) - before) if pid else 0.0
    results = {}
    for name, taken in samples.items():
        ordered = sorted(taken)
        results[name] = {
            "calls": len(taken),
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
            "calls_per_s": len(taken) / sum(taken),
            "gateway_cpu_ms_per_call": cpu[name] * 1000 / len(taken),
        }
    return results


@contextlib.contextmanager
def running_stack(directory: Path, baseline_src: Path | None = None) -> Iterator[Stack]:
    """Demo backend, MLServer and one gateway in front of both (two with ``baseline_src``)."""
    catalog = json.loads(DEFAULT_CATALOG.read_text())
    catalog["entries"] += mlserver_data.catalog_entries()
    catalog_file = directory / "catalog-with-mlserver.json"
    catalog_file.write_text(json.dumps(catalog))
    with run_mlserver(directory) as mls, run_backend(directory, "rest-bench-backend") as (backend, _):
        sources: dict[str, dict[str, str] | None] = {"": None}
        if baseline_src is not None:
            sources["base_"] = {"PYTHONPATH": str(baseline_src.resolve())}
        gateways: dict[str, tuple[str, str]] = {}
        pids: dict[str, int] = {}
        with contextlib.ExitStack() as started:
            for prefix, env in sources.items():
                rest_listen = f"127.0.0.1:{free_port()}"
                config = gateway_config(backend, mls.rest, catalog_file, rest_listen)
                name = f"rest-bench-{prefix}gateway"
                gateway = started.enter_context(start_gateway(config, directory / name, name, env=env))
                gateways[prefix] = (gateway.address, rest_listen)
                pids[prefix] = gateway.process.pid
            yield Stack(backend, mls.rest, gateways, pids)


def figures(results: dict[str, dict[str, float]], rows: int) -> list[Figure]:
    r = results
    added_rest = r["mls_gateway_rest"]["p50_ms"] - r["mls_direct_rest"]["p50_ms"]
    added_grpc = r["demo_gateway_grpc"]["p50_ms"] - r["demo_direct_grpc"]["p50_ms"]
    where = f"{rows} rows, c=1"

    def p50(key: str, label: str, base: str, base_label: str) -> Figure:
        return Figure(
            f"rest_overhead.{key}.p50_ms",
            f"p50, {label} ({where})",
            r[key]["p50_ms"],
            "ms",
            f"{base_label}, same run",
            r[base]["p50_ms"],
            "lower",
            show_added=True,
        )

    return [
        p50(
            "mls_gateway_rest", "REST caller -> gateway -> MLServer (REST)", "mls_direct_rest", "direct REST"
        ),
        p50(
            "mls_gateway_grpc", "gRPC caller -> gateway -> MLServer (REST)", "mls_direct_rest", "direct REST"
        ),
        Figure(
            "rest_overhead.mls_gateway_rest.calls_per_s",
            f"calls/s, REST through the gateway to MLServer ({where})",
            r["mls_gateway_rest"]["calls_per_s"],
            "calls/s",
            "direct REST to MLServer, same run",
            r["mls_direct_rest"]["calls_per_s"],
            "higher",
        ),
        p50("demo_gateway_rest", "REST binding -> demo backend (gRPC)", "demo_gateway_grpc", "gRPC binding"),
        p50("demo_gateway_grpc", "gRPC -> gateway -> demo backend", "demo_direct_grpc", "direct gRPC"),
        Figure(
            "rest_overhead.added_p50_ms",
            f"p50 the gateway adds on the REST path (MLServer, {where})",
            added_rest,
            "ms",
            "what it adds on the gRPC path (demo backend), same run",
            added_grpc,
            "lower",
        ),
    ]


def run_rest_overhead(bench: Bench) -> Scenario:
    title = "REST binding: through the gateway vs direct REST (MLServer) and vs the gRPC path"
    directory = bench.work_dir / "rest_overhead"
    directory.mkdir(parents=True, exist_ok=True)
    rows = bench.plan.datapath_rows
    with contextlib.ExitStack() as stack:
        try:
            addresses = stack.enter_context(running_stack(directory))
        except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:
            # MLServer could not be installed or started here: said so, not left out.
            return not_available("rest_overhead", title, f"{type(error).__name__}: {error}")
        results = asyncio.run(measure(addresses, rows, bench.plan.run_s, bench.plan.warmup_s))
    return Scenario("rest_overhead", title, figures=figures(results, rows), details={"paths": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per path")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--baseline-src", type=Path, help="a source tree's proxy/ folder to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_stack(Path(folder), args.baseline_src) as stack:
        results = asyncio.run(measure(stack, args.rows, args.seconds, 1.0))
    for name, values in results.items():
        print(
            f"{name:20} p50 {values['p50_ms']:7.2f} ms  p99 {values['p99_ms']:7.2f} ms  "
            f"{values['calls_per_s']:7.1f} calls/s  ({values['calls']:.0f} calls)  "
            f"gateway cpu {values['gateway_cpu_ms_per_call']:.3f} ms/call"
        )
    for figure in figures(results, args.rows):
        ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else "n/a"
        print(
            f"{figure.label}: {figure.value:.2f} {figure.unit} "
            f"vs {figure.baseline:.2f} ({figure.baseline_label}) = {ratio}"
        )
    for prefix in ("", "base_") if args.baseline_src else ("",):
        print(
            f"{prefix or 'current '}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in comparison(results, prefix).items())
        )


def comparison(results: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """What each binding adds (p50 ms) and the REST/gRPC ratio of it, for one gateway."""
    r = {name: values["p50_ms"] for name, values in results.items()}
    cpu = {name: values["gateway_cpu_ms_per_call"] for name, values in results.items()}
    added_rest = r[f"{prefix}mls_gateway_rest"] - r["mls_direct_rest"]
    added_grpc = r[f"{prefix}demo_gateway_grpc"] - r["demo_direct_grpc"]
    return {
        "rest_added_ms": added_rest,
        "grpc_added_ms": added_grpc,
        "rest_over_grpc_added": added_rest / added_grpc if added_grpc > 0 else float("nan"),
        "rest_minus_grpc_same_backend_ms": r[f"{prefix}demo_gateway_rest"] - r[f"{prefix}demo_gateway_grpc"],
        "health_rest_minus_grpc_ms": r[f"{prefix}health_gateway_rest"] - r[f"{prefix}health_gateway_grpc"],
        "cpu_ms_mls_rest": cpu[f"{prefix}mls_gateway_rest"],
        "cpu_ms_mls_grpc": cpu[f"{prefix}mls_gateway_grpc"],
        "cpu_ms_demo_rest": cpu[f"{prefix}demo_gateway_rest"],
        "cpu_ms_demo_grpc": cpu[f"{prefix}demo_gateway_grpc"],
        "cpu_ms_health_rest": cpu[f"{prefix}health_gateway_rest"],
        "cpu_ms_health_grpc": cpu[f"{prefix}health_gateway_grpc"],
    }


if __name__ == "__main__":
    main()
