"""``python -m bench`` (``make bench``) and ``--quick`` (``make bench-quick``), from the repository root."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from bench import plan as plans
from bench.runner import SCENARIO_NAMES, run
from tests.support.procs import REPO


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("every value must be a positive integer")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {unknown}; choose from {', '.join(SCENARIO_NAMES)}"
        )
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError("seconds must be between 0.1 and 600")
    return value


def parse_args(argv: list[str]) -> plans.Plan:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway against direct calls on loopback; writes latest.json and charts.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (under two minutes)")
    parser.add_argument("--duration", type=_seconds, help="seconds per measurement (overrides the mode)")
    parser.add_argument("--rows", type=_csv_ints, help="rows per call for the scaling scenario, e.g. 1,100")
    parser.add_argument("--concurrency", type=_csv_ints, help="data-path concurrency levels, e.g. 1,32")
    parser.add_argument(
        "--only", type=_scenarios, help=f"comma-separated subset of: {', '.join(SCENARIO_NAMES)}"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="output folder")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, default=None, help="py-spy the gateway (full: on)"
    )
    args = parser.parse_args(argv)
    plan = (plans.quick if args.quick else plans.full)(args.out.resolve())
    if args.duration is not None:
        plan = plans.custom(plan, args.duration)
    changes: dict = {"charts": not args.no_charts}
    if args.rows:
        changes["rows"] = args.rows
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.only:
        changes["only"] = args.only
    if args.profile is not None:
        changes["profile_s"] = (plan.profile_s or plan.run_s) if args.profile else 0.0
    return dataclasses.replace(plan, **changes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = parse_args(argv)
    _, code = run(plan, shlex.join(["python", "-m", "bench", *argv]))
    return code


if __name__ == "__main__":
    sys.exit(main())
