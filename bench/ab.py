"""A/B in one run: gateway arms against the bare proxy and each other, interleaved.

    .venv/bin/python -m bench.ab [--baseline-src DIR] [--current-src DIR] [--uvloop] [--workers 2]
                                 [--ceiling response-free] [--typed-floor]
                                 [--variant full_opa_cache] [--rows 100] [--concurrency 1,32]
                                 [--seconds 5] [--rounds 2]

On a shared machine only same-run ratios mean anything. This starts one demo backend, the
bare pass-through proxy (the floor) and one gateway per arm, all at once, and measures them
in turns (round by round, arm after arm at each concurrency) with ghz, so drift on the
machine lands on every arm alike. Arms:

- ``current``: the gateway of this tree, as ``make bench`` runs it (asyncio, one worker);
  with ``--current-src``, importing ``labelgate`` from that source tree instead (so a change
  can be measured apart from others in the working tree: both arms from trees made for it);
- ``baseline`` (``--baseline-src``): the same, importing ``labelgate`` from another source
  tree (e.g. ``git archive HEAD | tar -x -C /tmp/base`` then ``/tmp/base/proxy``), for
  before/after figures of a change;
- ``uvloop`` (``--uvloop``): the current arm's tree with uvloop's event loop policy installed
  first;
- ``workers<N>`` (``--workers N``): the current arm's tree with N worker processes (CPU is
  summed over them);
- ``response-free`` (``--ceiling response-free``): the current arm's tree with the response
  stage made free after the first call (``bench.ceilings``): the best any work on that
  stage alone could reach;
- ``typed-proxy`` (``--typed-floor``): the bare proxy parsing and re-serializing ModelInfer
  messages, nothing else (what no pipeline work can get under).

Prints medians over rounds of calls/s, p50 and gateway CPU per call, each also as a ratio
to the bare proxy's figure of the same round; ``--json`` writes them all. Nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.ceilings import CEILINGS, ceiling_command
from bench.context import Bench
from bench.load import LoadRun
from bench.plan import custom, full
from bench.stack import FULL_VARIANTS, PROXY, Variant, gateway_config, verify
from tests.support.procs import Process, free_port, labelgate_command, running

FLOOR = "bare-proxy"
_UVLOOP_LAUNCHER = (
    "import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from labelgate.cli import app; app()"
)


@dataclass(frozen=True)
class Arm:
    name: str
    command_prefix: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1


def from_source(name: str, source: str, workers: int = 1) -> Arm:
    """An arm importing ``labelgate`` from ``source`` (a tree's ``proxy/`` folder)."""
    path = str(Path(source).resolve())
    return Arm(name, [sys.executable, "-m", "labelgate.cli"], {"PYTHONPATH": path}, workers)


def arms_from(args: argparse.Namespace) -> list[Arm]:
    source = getattr(args, "current_src", None)
    current = from_source("current", source) if source else Arm("current", labelgate_command())
    arms = [current]
    if args.baseline_src:
        arms.insert(0, from_source("baseline", args.baseline_src))
    if args.uvloop:
        arms.append(Arm("uvloop", [sys.executable, "-c", _UVLOOP_LAUNCHER], current.env))
    if args.workers > 1:
        arms.append(Arm(f"workers{args.workers}", current.command_prefix, current.env, args.workers))
    for ceiling in getattr(args, "ceiling", None) or ():
        # labelgate from the current arm's tree (this environment's when it has none).
        prefix, env = ceiling_command(ceiling, labelgate_path=current.env.get("PYTHONPATH", ""))
        arms.append(Arm(ceiling, prefix, env))
    return arms


@contextlib.contextmanager
def start_arm(bench: Bench, arm: Arm, variant: Variant, upstream: str) -> Iterator[tuple[str, Process]]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = gateway_config(variant, listen=address, upstream=upstream, opa_url=None)
    config["workers"] = arm.workers
    config_file = bench.work_dir / f"ab-{arm.name}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, **arm.env}
    args = [*arm.command_prefix, "serve", "--config", str(config_file)]
    log = bench.work_dir / f"ab-{arm.name}.log"
    with running(args, log, port, name=f"gateway ({arm.name})", timeout=30.0, env=env) as child:
        yield address, child


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of a multi-process gateway)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending += [int(child) for child in task.read_text().split()]
    return found


def measure(bench: Bench, address: str, rows: int, concurrency: int, seconds: float, pid: int) -> LoadRun:
    watch = {f"gateway{index}": member for index, member in enumerate(process_tree(pid))}
    return bench.measure(address, rows, concurrency, seconds, watch)


def summarize(run: LoadRun) -> dict[str, float]:
    spent = run.cpu_ms_per_call()
    cpu = sum(value for name, value in spent.items() if name.startswith("gateway"))
    return {"calls_per_s": run.calls_per_s, "p50_ms": run.p50_ms, "cpu_ms": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", help="a source tree's proxy/ folder to import labelgate from")
    parser.add_argument(
        "--current-src", help="the current arm's source tree (proxy/ folder); default: this tree"
    )
    parser.add_argument("--uvloop", action="store_true", help="add an arm with uvloop's event loop")
    parser.add_argument("--workers", type=int, default=1, help="add an arm with this many workers")
    parser.add_argument(
        "--ceiling", action="append", choices=CEILINGS, help="add an arm with this stage made free"
    )
    parser.add_argument(
        "--typed-floor", action="store_true", help="add the pass-through that parses ModelInfer messages"
    )
    # Audited variants need an audit writer, which this harness does not start.
    names = [variant.name for variant in (PROXY, *FULL_VARIANTS) if not variant.audit]
    parser.add_argument("--variant", default="full_embedded_cache", choices=names)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args()
    variant = next(v for v in (PROXY, *FULL_VARIANTS) if v.name == args.variant)
    if variant.engine == "opa":
        parser.error("the A/B runs in-process engines only (embedded, wasm)")
    concurrency = [int(part) for part in args.concurrency.split(",")]
    work_dir = Path(tempfile.mkdtemp(prefix="labelgate-ab-"))
    bench = Bench(custom(full(work_dir), args.seconds), work_dir)
    arms = arms_from(args)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {}
    with contextlib.ExitStack() as stack:
        upstream, _ = stack.enter_context(bench.stack.backend())
        floor_address, floor = stack.enter_context(bench.stack.bare_proxy(upstream))
        targets = {FLOOR: (floor_address, floor.pid)}
        if args.typed_floor:
            typed_address, typed = stack.enter_context(bench.stack.bare_proxy(upstream, typed=True))
            targets["typed-proxy"] = (typed_address, typed.pid)
        request = bench.request_file(args.rows).read_bytes()
        for arm in arms:
            address, child = stack.enter_context(start_arm(bench, arm, variant, upstream))
            verify(variant, upstream, address, request, bench.metadata)
            targets[arm.name] = (address, child.pid)
        for round_number in range(args.rounds):
            for level in concurrency:
                for name, (address, pid) in targets.items():
                    run = measure(bench, address, args.rows, level, args.seconds, pid)
                    runs.setdefault(name, {}).setdefault(level, []).append(summarize(run))
                    print(f"round {round_number + 1} c={level} {name}: {summarize(run)}", flush=True)
    report(runs, concurrency)
    if args.json:
        args.json.write_text(json.dumps({"variant": variant.name, "rows": args.rows, "runs": runs}, indent=2))


def report(runs: dict[str, dict[int, list[dict[str, float]]]], concurrency: list[int]) -> None:
    header = ("arm", "c", "calls/s", "x floor", "p50 ms", "cpu ms/call", "x floor")
    print("\n" + " ".join(f"{cell:>12}" for cell in header))
    for level in concurrency:
        floor = runs[FLOOR][level]
        for name, levels in runs.items():
            rounds = levels[level]
            pairs = list(zip(rounds, floor, strict=True))
            cells = [
                statistics.median(run["calls_per_s"] for run in rounds),
                statistics.median(run["calls_per_s"] / base["calls_per_s"] for run, base in pairs),
                statistics.median(run["p50_ms"] for run in rounds),
                statistics.median(run["cpu_ms"] for run in rounds),
                statistics.median(
                    run["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else 0.0 for run, base in pairs
                ),
            ]
            print(f"{name:>12} {level:>12} " + " ".join(f"{cell:>12.3f}" for cell in cells))


if __name__ == "__main__":
    main()
