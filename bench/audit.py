"""Scenario 5: throughput of the full path with durable auditing against auditing off.

Two gateways of the shipped configuration (embedded engine, cache on; analysts persona,
100-row ``customer-profile`` calls) run side by side in front of one demo backend: one
with ``audit: {socket: S}`` to a real ``labelgate audit-writer`` (fsync on, group commit),
one without. Their measurements alternate (off, on, off, on, ...) per concurrency, so drift
on a shared machine hits both alike. The writer's counters (``AuditClient.stats()``) are
read around each measured run: records per fsync shows how well group commit batches, and
records per call proves the gateway really wrote one record per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.datapath import errors_note, gateway_cpu_ms
from bench.figures import Figure, Scenario
from bench.load import LoadRun
from bench.procs import BenchError, enter_together
from bench.stack import SCALING_VARIANT, Variant, describe, verify
from labelgate.config import COMMIT_DELAY_MS
from tests.support.procs import Process, labelgate_command

SUBJECT: Variant = SCALING_VARIANT  # what `make run` ships
OFF, ON = "audit_off", "audit_durable"


def run_audit(bench: Bench) -> Scenario:
    plan = bench.plan
    scenario = Scenario(
        "audit",
        f"Audit durability: {SUBJECT.title}, {plan.datapath_rows} rows, durable audit vs auditing off",
    )
    request = bench.request_file(plan.datapath_rows).read_bytes()
    runs: list[dict[str, Any]] = []
    results: dict[tuple[str, int], list[LoadRun]] = {}
    writer_runs: dict[int, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        direct, backend = stack.enter_context(bench.stack.backend())
        socket_path, log_dir, writer = stack.enter_context(audit_writer(bench.work_dir))
        (off_address, off_gateway), (on_address, on_gateway) = enter_together(
            stack,
            bench.stack.gateway(SUBJECT, direct, None, name="audit-off"),
            bench.stack.gateway(
                SUBJECT, direct, None, extra={"audit": {"socket": str(socket_path)}}, name="audit-on"
            ),
        )
        for address in (off_address, on_address):
            verify(SUBJECT, direct, address, request, bench.metadata)
        if writer_stats(socket_path)["records"] < 1:
            raise BenchError("BENCH_VERIFY", "the audited gateway answered a call but wrote no audit record")
        configs = {
            OFF: (off_address, {"backend": backend.pid, "gateway": off_gateway.pid}),
            ON: (on_address, {"backend": backend.pid, "gateway": on_gateway.pid, "audit-writer": writer.pid}),
        }
        for concurrency in plan.concurrency:
            for _ in range(plan.audit_rounds):
                for config, (address, watch) in configs.items():
                    before: dict[str, Any] = {}
                    if config == ON:
                        read_counters = functools.partial(_read_into, before, socket_path)
                        run = bench.measure(
                            address, plan.datapath_rows, concurrency, plan.run_s, watch, read_counters
                        )
                        writer_runs.setdefault(concurrency, []).append(
                            _writer_delta(before, writer_stats(socket_path), run)
                        )
                    else:
                        run = bench.measure(address, plan.datapath_rows, concurrency, plan.run_s, watch)
                    results.setdefault((config, concurrency), []).append(run)
                    runs.append({"config": config, **run.to_json()})
        final_stats = writer_stats(socket_path)
    for concurrency in plan.concurrency:
        scenario.figures += _figures(concurrency, results[OFF, concurrency], results[ON, concurrency])
    scenario.details["configs"] = {
        OFF: describe(SUBJECT),
        ON: {
            **describe(SUBJECT),
            "audit": "audit-writer over a Unix socket, fsync on (group commit; commit delay "
            f"{COMMIT_DELAY_MS:g} ms, the default)",
        },
    }
    scenario.details["audit_log"] = {
        "dir": str(log_dir),
        "filesystem": filesystem_of(log_dir),
        "fsync": final_stats.get("fsync"),
    }
    scenario.details["writer"] = {f"c{c}": _combine(parts) for c, parts in writer_runs.items()}
    scenario.details["writer_final_stats"] = final_stats
    scenario.details["rounds"] = plan.audit_rounds
    scenario.details["runs"] = runs
    scenario.note = errors_note(runs)
    return scenario


def _mean(runs: list[LoadRun], read: Any) -> float:
    return sum(read(run) for run in runs) / len(runs)


def _figures(concurrency: int, off: list[LoadRun], on: list[LoadRun]) -> list[Figure]:
    prefix = f"audit.durable.c{concurrency}"
    where = f"c={concurrency}"
    on_rate, off_rate = _mean(on, lambda r: r.calls_per_s), _mean(off, lambda r: r.calls_per_s)
    cost = 1 - on_rate / off_rate if off_rate else float("nan")
    return [
        Figure(
            f"{prefix}.throughput",
            f"throughput with durable audit, {where}",
            on_rate,
            "calls/s",
            f"auditing off, {where}",
            off_rate,
            "higher",
        ),
        # The target's figure: the share of throughput durable auditing costs. Its baseline is
        # the whole throughput (1.0) with auditing off, so the ratio reads the same as the value.
        Figure(
            f"{prefix}.throughput_cost",
            f"throughput lost to durable audit, {where}",
            cost,
            "",
            "auditing off (nothing lost of 1.0)",
            1.0,
            "lower",
        ),
        Figure(
            f"{prefix}.p50_ms",
            f"p50 latency with durable audit, {where}",
            _mean(on, lambda r: r.p50_ms),
            "ms",
            f"auditing off p50, {where}",
            _mean(off, lambda r: r.p50_ms),
            "lower",
            show_added=True,
        ),
        Figure(
            f"{prefix}.cpu_ms_per_call",
            f"gateway + audit-writer CPU per call, {where}",
            _mean(on, gateway_cpu_ms),  # the audit-writer's CPU included (counted once)
            "CPU ms/call",
            f"gateway CPU per call, auditing off, {where}",
            _mean(off, gateway_cpu_ms),
            "lower",
        ),
    ]


def _read_into(into: dict[str, Any], socket_path: Path) -> None:
    into.update(writer_stats(socket_path))


def _writer_delta(before: dict[str, Any], after: dict[str, Any], run: LoadRun) -> dict[str, Any]:
    """What the writer did during one measured run (warm-up excluded)."""
    return {
        "calls_ok": run.ok,
        "records": after["records"] - before["records"],
        "fsyncs": after["fsyncs"] - before["fsyncs"],
        "batches": after["batches"] - before["batches"],
        "largest_batch_so_far": after["largest_batch"],
    }


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    records = sum(p["records"] for p in parts)
    fsyncs = sum(p["fsyncs"] for p in parts)
    calls = sum(p["calls_ok"] for p in parts)
    batches = sum(p["batches"] for p in parts)
    return {
        "records": records,
        "fsyncs": fsyncs,
        "batches": batches,
        # Records still being written when ghz stops count here but not in calls_ok.
        "records_per_fsync": round(records / fsyncs, 2) if fsyncs else None,
        "records_per_batch": round(records / batches, 2) if batches else None,
        "records_per_call": round(records / calls, 3) if calls else None,
        "largest_batch_so_far": max(p["largest_batch_so_far"] for p in parts),
    }


# --- the writer process --------------------------------------------------------------------


@contextlib.contextmanager
def audit_writer(work_dir: Path, timeout: float = 30.0) -> Iterator[tuple[Path, Path, Process]]:
    """A real ``labelgate audit-writer`` (fsync on); yields (socket, log dir, process).

    The log goes into the run's work folder (the disk results are written to); the socket
    into a short temporary folder, since Unix socket paths are limited to 107 bytes.
    """
    log_dir = work_dir / "audit-log"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    socket_path = socket_dir / "audit.sock"
    args = labelgate_command(
        "audit-writer", "--socket", str(socket_path), "--log-dir", str(log_dir), "--log-level", "warning"
    )
    child = Process(args, work_dir / "audit-writer.log", name="audit-writer")
    try:
        child.wait_for_socket(socket_path, timeout)
        yield socket_path, log_dir, child
    finally:
        child.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def writer_stats(socket_path: Path) -> dict[str, Any]:
    """The writer's counters (records, fsyncs, batches, ...), over its own protocol."""
    from labelgate.audit import AuditClient
    from labelgate.errors import LabelgateError

    async def read() -> dict[str, Any]:
        async with AuditClient(socket_path, timeout=10) as client:
            return await client.stats()

    try:
        return asyncio.run(read())
    except LabelgateError as error:
        raise BenchError("BENCH_AUDIT_STATS", f"cannot read the audit writer's stats: {error}") from None


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts): fsync costs differ wildly."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, f"{fields[2]} ({mount})"
    return kind
