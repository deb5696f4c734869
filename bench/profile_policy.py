"""Where a policy decision's time goes, per engine (``python -m bench.profile_policy``).

For one input (by default a realistic customer-profile response: nine outputs and three
detector or JSON-key fields, 12 in all) and one policy folder (``rego/``), it reports:

- ``opa``: the evaluation time inside OPA (``timer_rego_query_eval_ns`` from ``?metrics``
  on a real ``opa run --server``) and decisions/s over HTTP at concurrency 1 (OpaEngine);
- ``embedded``: the two halves of a regopy decision (handing the input over, node by node
  as the engine does and as JSON text for comparison; querying the entrypoint) and
  decisions/s at concurrency 1 through EmbeddedEngine;
- ``floor``: the same for a policy whose result is a constant: what each engine costs
  before a single rule of the real policy runs, i.e. the best any policy can do.

CPU times are per thread (``time.thread_time``), so another process on the machine
inflates them less than wall-clock times; decisions/s are wall clock. Numbers are from one
run on whatever machine runs it, and nothing here asserts on them. ``--json`` prints them
as JSON; ``--policy-dir`` profiles another folder (e.g. a draft, to compare before/after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.policy_engines import REPO, _measure, _opa_server
from labelgate.policy.contract import build_input
from labelgate.policy.embedded import EmbeddedEngine, _Compiled, _interpreter, set_policy_input
from labelgate.policy.engine import DECISION_PATH
from labelgate.policy.opa import OpaEngine
from labelgate.policy.source import PolicySource

_OUTPUTS = {
    "customer_id": "public",
    "segment": "public",
    "name": "internal",
    "email": "internal",
    "risk_score": "internal",
    "ssn": "confidential",
    "card_number": "confidential",
    "notes": "internal",
    "account_secret": "restricted",
}

CONSTANT_POLICY = """package labelgate.decision

result := {
	"allow": true,
	"reason": "constant",
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": count(input.fields),
}
"""


def realistic_input() -> dict[str, Any]:
    """An analyst's customer-profile response: 9 outputs, 2 detector spans, 1 JSON key."""
    fields = [
        {"path": f"outputs.{name}", "labels": [label], "sources": {label: ["catalog"]}}
        for name, label in _OUTPUTS.items()
    ]
    for detector in ("us_ssn", "credit_card"):
        fields.append(
            {
                "path": f"outputs.notes{{{detector}}}",
                "labels": ["confidential"],
                "sources": {"confidential": [f"detector:{detector}"]},
            }
        )
    fields.append(
        {
            "path": "outputs.notes[].contact.email",
            "labels": ["internal", "confidential"],
            "sources": {"internal": ["catalog"], "confidential": ["backend"]},
        }
    )
    return build_input(
        phase="response",
        subject={"id": "ana@example.com", "groups": ["analysts"], "auth": "jwt"},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "customer-profile",
            "requested_outputs": [],
            "model_version": "1",
            "request_id": "profile",
        },
        fields=fields,
        approval=None,
        time_ns=1_767_225_600_000_000_000,
    )


def _cpu_us(action: Callable[[], object], repeat: int) -> dict[str, float]:
    for _ in range(min(20, repeat)):  # warm up: allocator, caches
        action()
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        action()
        times.append(time.thread_time() - started)
    times.sort()
    return {"median_us": round(statistics.median(times) * 1e6, 1), "min_us": round(times[0] * 1e6, 1)}


def _embedded_parts(policy_dir: Path, doc: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Input hand-over and entrypoint query, timed apart, as EmbeddedEngine runs them."""
    compiled = _Compiled.build(PolicySource.from_dir(policy_dir), DECISION_PATH)
    runner = _interpreter()
    text = json.dumps(doc, ensure_ascii=False)
    set_policy_input(runner, doc)

    def query() -> None:
        if not runner.query_bundle_entrypoint(compiled.bundle, compiled.entrypoint).ok():
            raise RuntimeError("the policy failed to evaluate the profiling input")

    return {
        "input_nodes": _cpu_us(lambda: set_policy_input(runner, doc), repeat),
        "input_json_text": _cpu_us(lambda: runner.set_input_term(text), repeat),
        "query": _cpu_us(query, repeat),
    }


def _opa_eval_us(url: str, doc: dict[str, Any], repeat: int) -> dict[str, float]:
    """OPA's own evaluation time for the decision, from ?metrics (wall clock inside OPA)."""
    body = json.dumps({"input": doc}).encode()
    path = f"{url}/v1/data/{DECISION_PATH}?metrics"
    samples = []
    for index in range(repeat + 20):
        request = urllib.request.Request(path, body, {"Content-Type": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            metrics = json.loads(reply.read())["metrics"]
        if index >= 20:
            samples.append(metrics["timer_rego_query_eval_ns"] / 1000)
    samples.sort()
    return {"median_us": round(statistics.median(samples), 1), "min_us": round(samples[0], 1)}


async def _throughput(policy_dir: Path, url: str, doc: dict[str, Any], duration: float) -> dict[str, Any]:
    opa = OpaEngine(url, timeout=5.0)
    try:
        opa_c1 = await _measure(lambda: opa.decide(doc), concurrency=1, duration=duration)
    finally:
        await opa.close()
    embedded = EmbeddedEngine(policy_dir, watch_interval=None)
    await embedded.start()
    try:
        embedded_c1 = await _measure(lambda: embedded.decide(doc), concurrency=1, duration=duration)
    finally:
        await embedded.close()
    return {"opa_http_c1": opa_c1, "embedded_c1": embedded_c1}


def profile(
    policy_dir: Path, doc: dict[str, Any], *, repeat: int = 200, duration: float = 2.0
) -> dict[str, Any]:
    """The report for one policy folder (see the module docstring)."""
    with _opa_server(policy_dir, None) as url:
        report: dict[str, Any] = {"opa_eval": _opa_eval_us(url, doc, repeat)}
        report.update(asyncio.run(_throughput(policy_dir, url, doc, duration)))
    report["embedded_parts"] = _embedded_parts(policy_dir, doc, repeat)
    return report


def run(policy_dir: Path, doc: dict[str, Any], *, repeat: int, duration: float) -> dict[str, Any]:
    results = {
        "input_bytes": len(json.dumps(doc)),
        "fields": len(doc.get("fields", [])),
        "policy": profile(policy_dir, doc, repeat=repeat, duration=duration),
    }
    with tempfile.TemporaryDirectory() as tmp:
        constant = Path(tmp) / "labelgate" / "decision" / "policy.rego"
        constant.parent.mkdir(parents=True)
        constant.write_text(CONSTANT_POLICY)
        results["floor"] = profile(Path(tmp), doc, repeat=repeat, duration=duration)
    return results


def _print_table(results: dict[str, Any]) -> None:
    print(f"input: {results['fields']} fields, {results['input_bytes']} bytes of JSON")
    for name in ("policy", "floor"):
        report = results[name]
        parts = report["embedded_parts"]
        print(f"\n{name}:")
        print(f"  OPA eval (?metrics)        {report['opa_eval']['median_us']:>9.1f} µs median")
        print(f"  OPA over HTTP, c=1         {report['opa_http_c1']['decisions_per_s']:>9.1f} decisions/s")
        print(f"  embedded input, nodes      {parts['input_nodes']['median_us']:>9.1f} µs median (CPU)")
        print(f"  embedded input, JSON text  {parts['input_json_text']['median_us']:>9.1f} µs median (CPU)")
        print(f"  embedded query             {parts['query']['median_us']:>9.1f} µs median (CPU)")
        print(f"  embedded, c=1              {report['embedded_c1']['decisions_per_s']:>9.1f} decisions/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, default=REPO / "rego")
    parser.add_argument("--input", type=Path, help="a labelgate.v1 input (default: the realistic one)")
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions per CPU measurement")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per decisions/s measurement")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    doc = json.loads(args.input.read_text()) if args.input else realistic_input()
    results = run(args.policy_dir, doc, repeat=args.repeat, duration=args.duration)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(results)


if __name__ == "__main__":
    main()
