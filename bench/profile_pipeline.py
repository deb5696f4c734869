"""Per-call CPU of the whole pipeline in process, without gRPC (a measurement, not a test).

    .venv/bin/python -m bench.profile_pipeline [--calls 3000] [--allow-all] [--profile]
                                               [--ceiling response-free]

``Pipeline.infer`` as the gateway builds it (``gateway.server.build_pipeline`` from the
bench's own gateway configuration: a dev JWT, the embedded engine with its decision cache,
the real catalog and detectors, logs and metrics, log lines written to /dev/null), for the
100-row ``customer-profile`` call of an ``analysts`` caller. The upstream is the demo
backend's reply, parsed afresh for every call as gRPC would. So this is the pipeline's own
CPU per call, without the server, the upstream call and the subject assertion that a live
call adds (``make bench`` measures those together; ``bench.ab`` compares trees).

``--allow-all``: the allow-all policy and catalog (``bench/policy``) with detectors off, the
``proxy_allow_all`` variant of ``make bench``. ``--ceiling response-free``: with the response
stage made free after the first call (``bench.ceilings``), what the rest of the pipeline
costs. ``--profile``: cProfile's top functions by own time instead of timings. CPU time of
this thread (``time.thread_time``), median of 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from bench.ceilings import CEILINGS, install
from bench.profile_response import customer_response
from bench.stack import PROXY, SCALING_VARIANT, Variant, bearer_token, gateway_config, request_bytes
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import Call, uuid4_hex
from labelgate.config import load_settings
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.server import build_engine, build_pipeline
from labelgate.logs import configure

METHOD = "/inference.GRPCInferenceService/ModelInfer"
ROWS = 100
WARM_UP = 300
ROUNDS = 5


class InProcessCalls:
    """One pipeline and the bytes of one request and its upstream reply."""

    def __init__(self, variant: Variant) -> None:
        settings = load_settings(
            **gateway_config(variant, listen="127.0.0.1:1", upstream="127.0.0.1:2", opa_url=None)
        )
        self.engine = build_engine(settings)
        self.pipeline: Pipeline = build_pipeline(settings, self.engine)
        self.request = request_bytes(ROWS)
        self.reply = customer_response(ROWS).SerializeToString()
        self.metadata = (("authorization", f"Bearer {bearer_token()}"),)

    async def start(self) -> None:
        await self.engine.start()
        self.pipeline.classifier.start()

    async def close(self) -> None:
        self.pipeline.classifier.stop()
        await self.engine.close()

    async def one(self) -> pb.ModelInferResponse:
        async def send(message: Any) -> pb.ModelInferResponse:
            return pb.ModelInferResponse.FromString(self.reply)

        call = Call(
            method=METHOD,
            peer="ipv4:127.0.0.1:50000",
            metadata=self.metadata,
            auth_context={},
            session_id="bench",
            request_id=uuid4_hex(),
        )
        return await self.pipeline.infer(call, pb.ModelInferRequest.FromString(self.request), send)


async def measure(calls: InProcessCalls, count: int) -> dict[str, float]:
    """CPU µs per call: the median and the lowest of ``ROUNDS`` rounds of ``count`` calls."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.thread_time()
        for _ in range(count):
            await calls.one()
        rounds.append((time.thread_time() - started) / count * 1e6)
    return {"cpu_us_per_call": round(statistics.median(rounds), 1), "min_us": round(min(rounds), 1)}


async def run(variant: Variant, count: int, profile: bool, heap: bool = True) -> dict[str, float] | None:
    calls = InProcessCalls(variant)
    await calls.start()
    try:
        for _ in range(WARM_UP):
            await calls.one()
        if heap:  # as a gateway worker does once started (gateway.heap)
            from labelgate.gateway.heap import prepare_heap

            prepare_heap()
        if not profile:
            return await measure(calls, max(1, count // ROUNDS))
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(count):
            await calls.one()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        return None
    finally:
        await calls.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--allow-all", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--ceiling", choices=CEILINGS, help="with this stage made free (bench.ceilings): what is left"
    )
    args = parser.parse_args()
    if args.ceiling:
        install(args.ceiling)
    with open(os.devnull, "w") as sink:
        configure("info", sink)
        variant = PROXY if args.allow_all else SCALING_VARIANT
        result = asyncio.run(run(variant, args.calls, args.profile))
    if result is not None:
        name = f"{variant.name}, {args.ceiling}" if args.ceiling else variant.name
        print(f"{name}: {result['cpu_us_per_call']} CPU µs per call (lowest round {result['min_us']})")


if __name__ == "__main__":
    main()
