"""The wasm engine before and after a change, same run (``python -m bench.wasm_ab BASELINE_REGO``).

    git archive HEAD rego | tar -x -C /tmp/base   # the policy as committed
    .venv/bin/python -m bench.wasm_ab /tmp/base/rego [--rounds 12] [--seconds 1]

Three arms, each a WasmEngine deciding ``bench.policy_engines.sample_input`` uncached, one
thread, measured in turns (the order reversed every round) so drift on a shared machine
lands on every arm alike:

- ``baseline``: the policy folder given, the input encoded whole by the plain JSON encoder;
- ``rego``: this tree's rego/, the input encoded whole (the policy change alone);
- ``current``: this tree's rego/ and this tree's encoding (``_WasmCompiled.encode_input``).

Figures are decisions per CPU-second of this thread (``time.thread_time``), medians over
rounds, and each arm's ratio to the baseline. Every arm must give the same result first.
Nothing asserts on the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.policy_engines import sample_input
from labelgate.policy.wasm import _ENCODER, WasmEngine
from tests.support.procs import REPO, opa_binary


def _plain(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


async def _run(baseline: Path, rounds: int, seconds: float) -> dict[str, Any]:
    doc = sample_input()
    opa = opa_binary()
    arms: dict[str, WasmEngine] = {}
    for name, folder, plain in (("baseline", baseline, True), ("rego", REPO / "rego", True)):
        engine = arms[name] = WasmEngine(folder, watch_interval=None, opa=opa)
        await engine.start()
        if plain:
            engine._compiled.encode_input = _plain  # type: ignore[union-attr]
    arms["current"] = WasmEngine(REPO / "rego", watch_interval=None, opa=opa)
    await arms["current"].start()
    try:
        results = {name: (await engine.decide(doc)).to_result() for name, engine in arms.items()}
        if len({json.dumps(r, sort_keys=True) for r in results.values()}) != 1:
            raise RuntimeError(f"the arms decide differently: {results}")
        rates: dict[str, list[float]] = {name: [] for name in arms}
        for round_ in range(rounds):
            order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
            for name in order:
                engine, count = arms[name], 0
                started, deadline = time.thread_time(), time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    await engine.decide(doc)
                    count += 1
                rates[name].append(count / (time.thread_time() - started))
    finally:
        for engine in arms.values():
            await engine.close()
    out: dict[str, Any] = {"rounds": rounds, "seconds_per_turn": seconds}
    for name, values in rates.items():
        out[f"{name}_decisions_per_cpu_s"] = round(statistics.median(values))
    for name in ("rego", "current"):
        out[f"{name}_over_baseline"] = round(
            out[f"{name}_decisions_per_cpu_s"] / out["baseline_decisions_per_cpu_s"], 3
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wasm_ab", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the policy folder to compare against")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    json.dump(asyncio.run(_run(args.baseline, args.rounds, args.seconds)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
