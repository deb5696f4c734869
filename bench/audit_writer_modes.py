"""What durable auditing costs: appends/s through the real writer process (a measurement, not a test).

One run, three writers side by side, each at concurrency 1 and 32 over one client connection
(like one gateway worker), in interleaved rounds; the median round is reported:

- ``group commit``: the default, fdatasync before every acknowledgement, batches shared;
- ``fsync per record``: ``--max-batch 1``, what durability costs without group commit;
- ``no fsync``: ``--no-fsync``, the baseline (acknowledged after write(), not durable).

CPU per append is counted on both sides: the client (this process, ``time.process_time``,
standing in for the gateway) and the writer process (the scheduler's nanoseconds over all
its threads, ``/proc/<pid>/task/*/schedstat``). Events are built before the clock starts.

    .venv/bin/python -m bench.audit_writer_modes [--dir DIR]   # DIR on the disk to measure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from labelgate.audit import AuditClient
from tests.audit.conftest import make_event, writer_process
from tests.support.procs import cpu_seconds

MODES = {
    "group commit": (),
    "fsync per record": ("--max-batch", "1"),
    "no fsync": ("--no-fsync",),
}
APPENDS = {1: 500, 32: 3200}


def process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``, to the nanosecond where the kernel says (``procs.cpu_seconds``)."""
    return cpu_seconds(pid)


async def measure(sock: Path, writer_pid: int, concurrency: int) -> dict[str, float]:
    async with AuditClient(sock, timeout=30) as client:
        for _ in range(50):  # warm up: connection, page cache, allocator
            await client.append(make_event())
        before = await client.stats()
        latencies: list[float] = []
        per_task = APPENDS[concurrency] // concurrency
        events = [[make_event() for _ in range(per_task)] for _ in range(concurrency)]

        async def task(mine: list[dict[str, object]]) -> None:
            for event in mine:
                start = time.perf_counter()
                await client.append(event)
                latencies.append(time.perf_counter() - start)

        writer_cpu, client_cpu, start = process_cpu_s(writer_pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(task(mine) for mine in events))
        elapsed = time.perf_counter() - start
        client_cpu, writer_cpu = time.process_time() - client_cpu, process_cpu_s(writer_pid) - writer_cpu
        after = await client.stats()
    records = after["records"] - before["records"]
    latencies.sort()
    return {
        "client_us": client_cpu / records * 1e6,
        "writer_us": writer_cpu / records * 1e6,
        "rate": records / elapsed,
        "fsyncs": after["fsyncs"] - before["fsyncs"],
        "batch": records / max(1, after["batches"] - before["batches"]),
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "mean": statistics.fmean(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=None, help="where the logs go (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir))
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        sockets: dict[str, Path] = {}
        pids: dict[str, int] = {}
        for n, (mode, extra) in enumerate(MODES.items()):
            log_dir = base / f"log-{n}"
            log_dir.mkdir()
            sockets[mode] = base / f"w{n}.sock"
            writer = writer_process(sockets[mode], log_dir, "--log-level", "warning", *extra)
            pids[mode] = stack.enter_context(writer).pid
        # Rounds interleave the modes so a noisy neighbour on the machine hits all of them alike.
        for _ in range(args.rounds):
            for mode, sock in sockets.items():
                for concurrency in APPENDS:
                    sample = asyncio.run(measure(sock, pids[mode], concurrency))
                    samples.setdefault((mode, concurrency), []).append(sample)
    results = {key: sorted(runs, key=lambda r: r["rate"])[len(runs) // 2] for key, runs in samples.items()}
    print(f"logs in {base}")
    header = (
        f"{'mode':<18}{'conc':>5}{'appends/s':>11}{'fsyncs':>8}{'rec/batch':>10}{'p50 ms':>8}{'p99 ms':>8}"
    )
    print(f"{header}{'client us':>11}{'writer us':>11}  (CPU per append)")
    for (mode, concurrency), r in results.items():
        print(
            f"{mode:<18}{concurrency:>5}{r['rate']:>11,.0f}{r['fsyncs']:>8.0f}{r['batch']:>10.1f}"
            f"{r['p50']:>8.2f}{r['p99']:>8.2f}{r['client_us']:>11.1f}{r['writer_us']:>11.1f}"
        )
    for concurrency in APPENDS:
        durable, baseline = results["group commit", concurrency], results["no fsync", concurrency]
        single = results["fsync per record", concurrency]
        versus_baseline, versus_single = durable["rate"] / baseline["rate"], durable["rate"] / single["rate"]
        print(
            f"concurrency {concurrency}: group commit = {versus_baseline:.2f}x the no-fsync baseline, "
            f"{versus_single:.2f}x fsync-per-record"
        )


if __name__ == "__main__":
    main()
