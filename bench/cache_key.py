"""Decision-cache hit cost, a baseline against this tree, same run (``python -m bench.cache_key``).

The baseline is either another tree's ``labelgate.policy.cache`` (and ``contract``), loaded
side by side under other module names (``--baseline /tmp/cache-base/proxy`` after
``git archive HEAD | tar -x -C /tmp/cache-base``), or, by default, this tree's cache keyed
the way it was before the pickle key: ``marshal`` format 2 of the decision-relevant part.
Both run the same kind of inner engine on the same input
(``bench.policy_engines.sample_input``, with the per-call values the gateway adds); rounds
alternate A/B (order flipped every round) and each figure is the median over rounds of CPU
time per operation (``time.thread_time``), so other load on the machine counts as little as
it can. Nothing here asserts on the figures.

- ``hit``: ``await cache.decide(doc)`` on a cached input (the engine computes the key), what
  the engines scenario times as ``cache_hit_c1``;
- ``gateway_hit``: the decide stage's own work on a hit: ``cache_keys`` (the cache's key and
  the store's canonical key) plus ``decide(doc, key=...)``;
- ``gateway_build_hit``: the same, starting from the call's parts (``build_input``), as
  ``Pipeline.decide`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import marshal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.policy_engines import sample_input
from labelgate.policy import cache, contract
from labelgate.policy.contract import Decision


class _Fixed:
    """An inner engine that always allows (a hit never reaches it)."""

    name, revision = "fixed", "r1"

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool:
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        return Decision(allow=True, reason="ok", cache_ttl_seconds=3600, engine="fixed", revision="r1")


class _MarshalKeys:
    """This tree's cache keyed as before the pickle key: ``marshal`` format 2."""

    def __init__(self) -> None:
        self._canonical: dict[bytes, bytes] = {}
        outer = self

        class Engine(cache.CachingEngine):
            async def decide(self, input: dict[str, Any], *, key: bytes | None = None) -> Decision:
                return await super().decide(input, key=outer.memo_key(input) if key is None else key)

        self.CachingEngine = Engine

    @staticmethod
    def memo_key(doc: dict[str, Any]) -> bytes | None:
        try:
            return marshal.dumps(cache._relevant(doc), 2)
        except ValueError:
            return None

    def cache_keys(self, doc: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
        fast = self.memo_key(doc)
        if fast is not None and fast in self._canonical:
            return fast, self._canonical[fast]
        text = json.dumps(cache._relevant(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = hashlib.sha256(text.encode()).digest()
        if fast is not None:
            self._canonical[fast] = key
        return fast, key


def _load(tree: Path, name: str) -> ModuleType:
    """``labelgate/policy/<name>.py`` of another tree, as a module of its own."""
    spec = importlib.util.spec_from_file_location(
        f"baseline_{name}", tree / "labelgate" / "policy" / f"{name}.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no labelgate/policy/{name}.py under {tree}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def _cpu_per_op(operation: Callable[[], Awaitable[Any]], count: int) -> float:
    started = time.thread_time()
    for _ in range(count):
        await operation()
    return (time.thread_time() - started) / count


def _variants(
    keys: Any, build: Callable[..., dict[str, Any]]
) -> tuple[cache.CachingEngine, dict[str, Callable[[], Awaitable[Decision]]]]:
    doc = sample_input()
    # What the gateway adds per call (left out of the key, so they cost a copy).
    doc["request"].update(session_id="s-1", peer="ipv4:10.0.0.1:50000", model_version="", opaque=None)
    doc["subject"]["attributes"] = {"team": "risk"}
    parts = {k: doc[k] for k in ("phase", "subject", "request", "fields")} | {"approval": None}
    engine: cache.CachingEngine = keys.CachingEngine(_Fixed())

    async def hit() -> Decision:
        return await engine.decide(doc)

    async def gateway_hit() -> Decision:
        memo, _ = keys.cache_keys(doc)
        return await engine.decide(doc, key=memo)

    async def gateway_build_hit() -> Decision:
        built = build(**parts, time_ns=time.time_ns())
        memo, _ = keys.cache_keys(built)
        return await engine.decide(built, key=memo)

    return engine, {"hit": hit, "gateway_hit": gateway_hit, "gateway_build_hit": gateway_build_hit}


async def _run(rounds: int, count: int, baseline_tree: Path | None) -> dict[str, Any]:
    old_keys: Any
    if baseline_tree is None:
        baseline_name, old_keys, old_build = "marshal format 2 key", _MarshalKeys(), contract.build_input
    else:
        baseline_name = str(baseline_tree)
        old_keys, old_build = _load(baseline_tree, "cache"), _load(baseline_tree, "contract").build_input
    old_engine, old = _variants(old_keys, old_build)
    new_engine, new = _variants(cache, contract.build_input)
    samples: dict[str, list[float]] = {f"{name}_{v}": [] for name in new for v in ("old", "new")}
    for operation in (*old.values(), *new.values()):
        await operation()  # fill the caches and the canonical memos
    for round_ in range(rounds):
        for name in new:
            pairs = [("old", old[name]), ("new", new[name])]
            for label, operation in pairs if round_ % 2 == 0 else reversed(pairs):
                samples[f"{name}_{label}"].append(await _cpu_per_op(operation, count))
    if new_engine.hits < rounds * count or old_engine.hits < rounds * count:
        raise RuntimeError("the benchmark's decisions were not cache hits")
    results: dict[str, Any] = {"baseline": baseline_name, "rounds": rounds, "operations_per_round": count}
    for key, values in samples.items():
        results[f"{key}_us"] = round(statistics.median(values) * 1e6, 2)
    for name in new:
        ratios = [a / b for a, b in zip(samples[f"{name}_old"], samples[f"{name}_new"], strict=True)]
        results[f"{name}_old_over_new"] = round(statistics.median(ratios), 3)
    return results


def run_cache_key_bench(
    rounds: int = 10, count: int = 20_000, baseline_tree: Path | None = None
) -> dict[str, Any]:
    return asyncio.run(_run(rounds, count, baseline_tree))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another tree's proxy folder (holds labelgate/)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    json.dump(run_cache_key_bench(args.rounds, args.count, args.baseline), sys.stdout, indent=2)
    sys.stdout.write("\n")
