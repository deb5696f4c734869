"""Scenario ``policy_replay``: distinct decision inputs per second replayed by ``policy impact``.

The replay behind ``labelgate policy impact`` and the bundle server's publish gate decides
every distinct stored input twice (current and candidate policy). This measures it on each
engine in the same run: embedded (regopy), wasm (OPA's Wasm target) and opa (two ``opa run
--server`` on loopback), over a synthetic set of distinct inputs (every persona, several
output selections, distinct subjects: one evaluation each, as the cache key dedupes them)
against a candidate that unmasks ``confidential`` for ``analysts``.

Each figure is the replay alone (both policies loaded), read against the same engine's
end-to-end rate, which includes loading both policies (and starting OPA): the cost a CI job
or a publish pays once. Nothing here asserts on the numbers.

    .venv/bin/python -m bench.policy_replay [DISTINCT_INPUTS]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.figures import Figure, Scenario
from bench.policy_engines import sample_input
from labelgate.policy.cache import cache_key
from labelgate.policy.cli import replay_report
from tests.support.procs import REPO

ENGINES = (("embedded", "embedded (regopy)"), ("wasm", "wasm (OPA's Wasm target)"), ("opa", "OPA over HTTP"))
GROUPS: tuple[list[str], ...] = (["analysts"], ["data-stewards"], ["break-glass"], [])
OUTPUT_SETS: tuple[list[str], ...] = (
    [],
    ["customer_id", "ssn"],
    ["name", "email", "notes"],
    ["customer_id", "card_number"],
)
FULL_INPUTS, QUICK_INPUTS = 200, 40


def distinct_inputs(count: int) -> list[tuple[str, int, dict[str, Any]]]:
    """``count`` distinct inputs (hash, seen, input), cycling personas and output selections."""
    base = sample_input()
    shapes = list(islice(cycle([(g, o) for g in GROUPS for o in OUTPUT_SETS]), count))
    stored = []
    for n, (groups, outputs) in enumerate(shapes):
        doc = json.loads(json.dumps(base))
        doc["subject"] = {**doc["subject"], "id": f"mtls:person-{n}", "groups": groups}
        doc["request"] = {**doc["request"], "requested_outputs": outputs}
        for volatile in ("request_id", "session_id", "peer", "digest"):
            doc["request"].pop(volatile, None)
        doc["context"] = {k: v for k, v in doc.get("context", {}).items() if k != "time_ns"}
        key = cache_key(doc)
        assert key is not None
        stored.append((key.hex(), 1, doc))
    return stored


def candidate_policy(folder: Path) -> Path:
    candidate = folder / "candidate-rego"
    shutil.rmtree(candidate, ignore_errors=True)
    shutil.copytree(REPO / "rego", candidate)
    tables = candidate / "labelgate" / "tables" / "data.json"
    data = json.loads(tables.read_text())
    data["labels"]["confidential"]["groups"]["analysts"] = {"see": True}
    tables.write_text(json.dumps(data, indent=2))
    return candidate


def measure(work_dir: Path, count: int) -> dict[str, dict[str, float]]:
    """engine -> {distinct, replay_s, total_s, per_s, end_to_end_per_s, changed}."""
    stored = distinct_inputs(count)
    candidate = candidate_policy(work_dir)
    results = {}
    for engine, _ in ENGINES:
        timing: dict[str, float] = {}
        began = time.perf_counter()
        report = replay_report(REPO / "rego", candidate, stored, engine=engine, timing=timing)
        total = time.perf_counter() - began
        if report.errors:
            raise RuntimeError(f"{engine}: {len(report.errors)} decisions failed closed: {report.errors[:2]}")
        results[engine] = {
            "distinct": report.distinct,
            "changed": report.changed,
            "replay_s": round(timing["replay_s"], 3),
            "total_s": round(total, 3),
            "per_s": report.distinct / timing["replay_s"],
            "end_to_end_per_s": report.distinct / total,
        }
    changed = {r["changed"] for r in results.values()}
    if len(changed) != 1:
        raise RuntimeError(f"the engines disagree on how many inputs change: {results}")
    return results


def run_policy_replay(bench: Bench) -> Scenario:
    count = QUICK_INPUTS if bench.plan.mode == "quick" else FULL_INPUTS
    results = measure(bench.work_dir, count)
    scenario = Scenario("policy_replay", f"Policy impact replay ({count} distinct inputs, both policies)")
    for engine, label in ENGINES:
        result = results[engine]
        scenario.figures.append(
            Figure(
                f"policy_replay.{engine}.distinct_inputs_per_s",
                f"distinct inputs/s replayed, {label}",
                result["per_s"],
                "inputs/s",
                f"end to end, loading both policies ({label})",
                result["end_to_end_per_s"],
                "higher",
            )
        )
    scenario.details = {"inputs": count, "engines": results}
    return scenario


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else FULL_INPUTS
    with tempfile.TemporaryDirectory(prefix="labelgate-replay-") as scratch:
        for engine, result in measure(Path(scratch), count).items():
            print(
                f"{engine:9s} {result['per_s']:8.1f} distinct inputs/s replayed "
                f"({result['distinct']} in {result['replay_s']:.2f} s; {result['end_to_end_per_s']:.1f}/s "
                f"with loading, {result['total_s']:.2f} s; {result['changed']} changed)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
