"""Does the audit commit delay pay? A same-run A/B (a measurement, not a test).

Three gateways of the shipped configuration in front of one demo backend: auditing off,
audited with ``commit_delay_ms: 0`` and audited with the delay under test, each audited one
with its own ``labelgate audit-writer`` (fsync on), so neither writer sees two connections.
They are measured in turn, round after round, at one concurrency; per round the audited
gateways' throughput and CPU are compared with the unaudited one's, and the writers'
counters give records per fsync.

    .venv/bin/python -m bench.audit_delay_ab [--rounds 6] [--concurrency 32] [--delay-ms 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

from bench.audit import SUBJECT, audit_writer, writer_stats
from bench.context import Bench
from bench.datapath import gateway_cpu_ms
from bench.plan import custom, full
from bench.procs import enter_together
from bench.stack import verify

ROWS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labelgate-audit-delay-"))
    bench = Bench(custom(full(work), 12), work)
    request = bench.request_file(ROWS).read_bytes()
    arms = ("off", "delay 0", f"delay {args.delay_ms:g}")
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    with contextlib.ExitStack() as stack:
        direct, backend = stack.enter_context(bench.stack.backend())
        plain_socket, _, plain_writer = stack.enter_context(audit_writer(work / "writer-no-delay"))
        delayed_socket, _, delayed_writer = stack.enter_context(audit_writer(work / "writer-delay"))
        gateways = enter_together(
            stack,
            bench.stack.gateway(SUBJECT, direct, None, name="off"),
            bench.stack.gateway(
                SUBJECT, direct, None, extra={"audit": {"socket": str(plain_socket)}}, name="no-delay"
            ),
            bench.stack.gateway(
                SUBJECT,
                direct,
                None,
                extra={"audit": {"socket": str(delayed_socket), "commit_delay_ms": args.delay_ms}},
                name="delay",
            ),
        )
        writers = (None, (plain_socket, plain_writer.pid), (delayed_socket, delayed_writer.pid))
        for (address, _), _ in zip(gateways, writers, strict=True):
            verify(SUBJECT, direct, address, request, bench.metadata)
        for round_number in range(args.rounds):
            for arm, (address, gateway), writer in zip(arms, gateways, writers, strict=True):
                watch = {"backend": backend.pid, "gateway": gateway.pid}
                before = None
                if writer is not None:
                    watch["audit-writer"] = writer[1]
                    before = writer_stats(writer[0])
                run = bench.measure(address, ROWS, args.concurrency, args.seconds, watch)
                row = {"calls_per_s": run.calls_per_s, "cpu_ms": gateway_cpu_ms(run), "p50_ms": run.p50_ms}
                if writer is not None and before is not None:
                    after = writer_stats(writer[0])
                    row["records_per_fsync"] = (after["records"] - before["records"]) / max(
                        1, after["fsyncs"] - before["fsyncs"]
                    )
                    row["writer_cpu_ms"] = run.cpu_ms_per_call()["audit-writer"]
                results[arm].append(row)
                print(round_number, arm, {k: round(v, 3) for k, v in row.items()}, flush=True)
    off = results["off"]
    for arm in arms[1:]:
        rows = results[arm]
        costs = [1 - row["calls_per_s"] / base["calls_per_s"] for row, base in zip(rows, off, strict=True)]
        added = [row["cpu_ms"] - base["cpu_ms"] for row, base in zip(rows, off, strict=True)]
        print(
            f"{arm}: throughput cost median {statistics.median(costs):.3f} "
            f"(per round {[round(cost, 3) for cost in costs]}), added CPU median "
            f"{statistics.median(added):.3f} ms/call (gateway + writer), writer "
            f"{statistics.median(row['writer_cpu_ms'] for row in rows):.3f} ms/record, records per fsync "
            f"{statistics.median(row['records_per_fsync'] for row in rows):.2f}, p50 "
            f"{statistics.median(row['p50_ms'] for row in rows):.1f} ms "
            f"(off: {statistics.median(row['p50_ms'] for row in off):.1f})"
        )


if __name__ == "__main__":
    main()
