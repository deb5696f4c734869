"""Scenario 3: the decision engines alone, through ``bench.policy_engines.run_policy_bench``.

The same measurement runs twice: on the default policy pack and on the allow-all policy.
The allow-all run is each engine's baseline (its fixed cost: transport, input handling),
so the ratio is what the policy pack's evaluation costs on top. A cache hit is read
against a miss of the engine it wraps (embedded, default policy).
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench
from bench.figures import Figure, Scenario
from bench.policy_engines import run_policy_bench
from bench.stack import ALLOW_ALL_POLICY, DEFAULT_POLICY

# (result key of run_policy_bench, id part, label)
MEASURES = (
    ("opa_http_c1", "opa_http.c1", "OPA over HTTP, c=1"),
    ("opa_http_c16", "opa_http.c16", "OPA over HTTP, c=16"),
    ("embedded_c1", "embedded.c1", "embedded (regopy), c=1"),
    ("embedded_c4", "embedded.c4", "embedded (regopy), c=4"),
    ("wasm_c1", "wasm.c1", "wasm (OPA's Wasm target, wasmtime), c=1"),
    ("wasm_c4", "wasm.c4", "wasm (OPA's Wasm target, wasmtime), c=4"),
)
# The wasm engine against the others, same run, c=1, uncached: (other key, id part, label).
WASM_AGAINST = (
    ("embedded_c1", "embedded", "embedded (regopy) c=1"),
    ("opa_http_c1", "opa_http", "OPA over HTTP c=1"),
)


def run_engines(bench: Bench) -> Scenario:
    scenario = Scenario("engines", "Decision engines alone (one customer-profile response decision)")
    results: dict[str, dict[str, Any]] = {}
    for name, policy_dir in (("default", DEFAULT_POLICY), ("allow_all", ALLOW_ALL_POLICY)):
        # Our own OPA (access logs off, as in the data path) rather than the helper's default.
        with bench.stack.opa(policy_dir) as (opa_url, _):
            results[name] = run_policy_bench(
                policy_dir=policy_dir, opa_url=opa_url, duration=bench.plan.engine_run_s
            )
    full, trivial = results["default"], results["allow_all"]
    for key, id_part, label in MEASURES:
        scenario.figures += [
            Figure(
                f"engines.{id_part}.decisions_per_s",
                f"decisions/s, {label}",
                full[key]["decisions_per_s"],
                "decisions/s",
                f"same engine, allow-all policy ({label})",
                trivial[key]["decisions_per_s"],
                "higher",
            ),
            Figure(
                f"engines.{id_part}.p50_ms",
                f"p50 latency, {label}",
                full[key]["p50_ms"],
                "ms",
                f"same engine, allow-all policy ({label})",
                trivial[key]["p50_ms"],
                "lower",
                show_added=True,
            ),
        ]
    wasm = full["wasm_c1"]
    for key, id_part, label in WASM_AGAINST:
        scenario.figures.append(
            Figure(
                f"engines.wasm_vs_{id_part}.c1.decisions_per_s",
                f"decisions/s, wasm against {label}, default policy",
                wasm["decisions_per_s"],
                "decisions/s",
                label,
                full[key]["decisions_per_s"],
                "higher",
            )
        )
    hit, miss = full["cache_hit_c1"], full["embedded_c1"]
    scenario.figures += [
        Figure(
            "engines.cache_hit.c1.decisions_per_s",
            "decisions/s, cache hit, c=1",
            hit["decisions_per_s"],
            "decisions/s",
            "embedded miss, c=1",
            miss["decisions_per_s"],
            "higher",
        ),
        Figure(
            "engines.cache_hit.c1.p50_ms",
            "p50 latency, cache hit, c=1",
            hit["p50_ms"],
            "ms",
            "embedded miss, c=1",
            miss["p50_ms"],
            "lower",
            show_added=True,
        ),
    ]
    scenario.details = {"default_policy": full, "allow_all_policy": trivial}
    return scenario
