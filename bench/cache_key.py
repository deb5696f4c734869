"""Decision-cache hit cost, old key against new, same run (``python -m bench.cache_key``).

Old (before issue 12): the cache keyed on sha256 of ``marshal`` (format 2) of the
decision-relevant input, and the gateway computed it twice per decision (once in
``cache_key`` for the decision-input store, once more in ``CachingEngine.decide``). New: the
``marshal`` bytes are the key as they are, computed once per decision (``cache_keys``) and
handed to ``CachingEngine.decide(key=...)``, and ``_relevant`` copies only the parts that hold
a per-call value. Both variants run the same CachingEngine code on the same input
(``bench.policy_engines.sample_input``); rounds alternate A/B and each figure is the median
over rounds of CPU time per operation (``time.thread_time``), so other load on the machine
counts as little as it can. Nothing here asserts on the figures.

- ``hit``: ``await cache.decide(doc)`` on a cached input (the engine computes the key);
- ``gateway_hit``: what the gateway's decide stage does per decision on a hit: the store's
  canonical key plus the cache lookup (old: two keys; new: one, shared).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import marshal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.policy_engines import sample_input
from labelgate.policy import cache
from labelgate.policy.contract import Decision

_OLD_CANONICAL: dict[bytes, bytes] = {}


def old_relevant(doc: dict[str, Any]) -> dict[str, Any]:
    """``cache._relevant`` as it was: every part copied by a comprehension."""
    relevant = dict(doc)
    request = relevant.get("request")
    if isinstance(request, dict):
        relevant["request"] = {k: v for k, v in request.items() if k not in cache._VOLATILE_REQUEST_KEYS}
    subject = relevant.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("attributes"), dict):
        volatile = cache._VOLATILE_SUBJECT_ATTRIBUTES
        attributes = {k: v for k, v in subject["attributes"].items() if k not in volatile}
        relevant["subject"] = {**subject, "attributes": attributes}
    context = relevant.get("context")
    if isinstance(context, dict):
        relevant["context"] = {k: v for k, v in context.items() if k != "time_ns"}
    return relevant


def old_memo_key(doc: dict[str, Any]) -> bytes | None:
    """The key as it was: sha256 of the marshal bytes."""
    try:
        return hashlib.sha256(marshal.dumps(old_relevant(doc), 2)).digest()
    except ValueError:
        return None


def old_cache_key(doc: dict[str, Any]) -> bytes | None:
    """``cache_key`` as it was: the canonical key remembered by the old memo key."""
    fast = old_memo_key(doc)
    if fast is not None and fast in _OLD_CANONICAL:
        return _OLD_CANONICAL[fast]
    text = json.dumps(old_relevant(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = hashlib.sha256(text.encode()).digest()
    if fast is not None:
        _OLD_CANONICAL[fast] = key
    return key


class _Fixed:
    """An inner engine that always allows (a hit never reaches it)."""

    name, revision = "fixed", "r1"

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool:
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        return Decision(allow=True, reason="ok", cache_ttl_seconds=3600, engine="fixed", revision="r1")


class _OldCachingEngine(cache.CachingEngine):
    async def decide(self, input: dict[str, Any], *, key: bytes | None = None) -> Decision:
        return await super().decide(input, key=old_memo_key(input))


async def _cpu_per_op(operation: Callable[[], Awaitable[Any]], count: int) -> float:
    started = time.thread_time()
    for _ in range(count):
        await operation()
    return (time.thread_time() - started) / count


async def _run(rounds: int, count: int) -> dict[str, Any]:
    doc = sample_input()
    old, new = _OldCachingEngine(_Fixed()), cache.CachingEngine(_Fixed())

    async def old_hit() -> Decision:
        return await old.decide(doc)

    async def new_hit() -> Decision:
        return await new.decide(doc)

    async def old_gateway_hit() -> Decision:
        old_cache_key(doc)
        return await old.decide(doc)

    async def new_gateway_hit() -> Decision:
        memo, _ = cache.cache_keys(doc)
        return await new.decide(doc, key=memo)

    variants = {
        "hit": (old_hit, new_hit),
        "gateway_hit": (old_gateway_hit, new_gateway_hit),
    }
    samples: dict[str, list[float]] = {f"{name}_{v}": [] for name in variants for v in ("old", "new")}
    for operation in (old_hit, new_hit, old_gateway_hit, new_gateway_hit):
        await operation()  # fill the caches and the canonical memos
    for round_ in range(rounds):
        for name, (before, after) in variants.items():
            pairs = [("old", before), ("new", after)]
            for label, operation in pairs if round_ % 2 == 0 else reversed(pairs):
                samples[f"{name}_{label}"].append(await _cpu_per_op(operation, count))
    if new.hits < rounds * count or old.hits < rounds * count:
        raise RuntimeError("the benchmark's decisions were not cache hits")
    results: dict[str, Any] = {"rounds": rounds, "operations_per_round": count}
    for key, values in samples.items():
        results[f"{key}_us"] = round(statistics.median(values) * 1e6, 2)
    for name in variants:
        results[f"{name}_old_over_new"] = round(results[f"{name}_old_us"] / results[f"{name}_new_us"], 2)
    return results


def run_cache_key_bench(rounds: int = 10, count: int = 20_000) -> dict[str, Any]:
    return asyncio.run(_run(rounds, count))


if __name__ == "__main__":
    json.dump(run_cache_key_bench(), sys.stdout, indent=2)
    sys.stdout.write("\n")
