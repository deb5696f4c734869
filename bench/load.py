"""Load generation with ghz (Go), driven as a child process; one ``LoadRun`` per measurement.

Why ghz and not Python: on a two-core machine the client shares the CPU with the backend
and the gateway, so every CPU microsecond the client spends per call is taken from the
system under test. Every run records ghz's own CPU time (from ``wait4``) next to the
gateway's and the backend's, and ``python_client_probe`` measures a grpc.aio client doing
the same calls, so the report shows how the two compare and, run by run, that the load
generator is not the bottleneck, instead of claiming it.

Requests are serialized protobuf (``-B``), the same bytes for direct and gateway calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BenchError, tool
from tests.support.procs import cpu_seconds

GHZ_VERSION = "v0.120.0"  # what `make tools` installs; ghz built by `go install` reports "dev"
METHOD = "inference.GRPCInferenceService.ModelInfer"
# A call cut off when the run's time is up ends with one of these; at most one per worker.
_CUTOFF_CODES = frozenset({"Unavailable", "Canceled"})
MAX_MESSAGE = "512MB"


def ghz_binary(repo: Path) -> str:
    return tool(
        repo / ".tools" / "bin" / "ghz",
        "ghz",
        f"run `make tools` (GOBIN=.tools/bin go install github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION})",
    )


@dataclass
class LoadRun:
    """One ghz run's results; latencies in milliseconds, only successful calls count."""

    target: str
    concurrency: int
    seconds: float
    ok: int
    errors: dict[str, int]
    unexpected_errors: int
    calls_per_s: float  # steady state: between the first and the last completed call
    calls_per_s_wall: float  # completed calls / the whole run, ramp-up and cut-off included
    mean_ms: float
    slowest_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    client_cpu_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_call(self) -> dict[str, float]:
        per_call = {"client (ghz)": self.client_cpu_s, **self.cpu_s}
        return {
            name: round(seconds * 1000 / self.ok, 3) if self.ok else 0.0 for name, seconds in per_call.items()
        }

    def cpu_cores_used(self) -> dict[str, float]:
        used = {"client (ghz)": self.client_cpu_s, **self.cpu_s}
        return {
            name: round(seconds / self.seconds, 3) if self.seconds else 0.0 for name, seconds in used.items()
        }

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["cpu_ms_per_call"] = self.cpu_ms_per_call()
        doc["cpu_cores_used"] = self.cpu_cores_used()
        return doc


class Ghz:
    def __init__(self, binary: str, proto_root: Path, work_dir: Path) -> None:
        proto = proto_root / "inference" / "open_inference.proto"
        if not proto.is_file():
            raise BenchError("BENCH_PROTO_MISSING", f"{proto} not found: run the bench from a checkout")
        self.binary = binary
        self.proto = proto
        self.proto_root = proto_root
        self.work_dir = work_dir
        self._runs = 0

    def run(
        self,
        target: str,
        request_file: Path,
        metadata: dict[str, str],
        *,
        concurrency: int,
        seconds: float | None = None,
        calls: int | None = None,
        watch: dict[str, int] | None = None,
    ) -> LoadRun:
        """Run for ``seconds`` (or exactly ``calls`` calls); ``watch`` maps names to pids whose
        CPU time over the run is recorded next to ghz's own."""
        if (seconds is None) == (calls is None):
            raise ValueError("give exactly one of seconds and calls")
        self._runs += 1
        metadata_file = self.work_dir / "ghz-metadata.json"
        metadata_file.write_text(json.dumps(metadata))
        out = self.work_dir / f"ghz-{self._runs}.json"
        args = [
            self.binary,
            "--insecure",
            f"--proto={self.proto}",
            f"--import-paths={self.proto_root}",
            f"--call={METHOD}",
            f"--binary-file={request_file}",
            f"--metadata-file={metadata_file}",
            f"--concurrency={concurrency}",
            # One Go scheduler thread: less CPU per call, and a core stays free for what is measured.
            "--cpus=1",
            f"--max-recv-message-size={MAX_MESSAGE}",
            f"--max-send-message-size={MAX_MESSAGE}",
            "--timeout=120s",
            "--format=json",
            f"--output={out}",
        ]
        args += [f"--duration={seconds:.3f}s"] if seconds is not None else [f"--total={calls}"]
        args.append(target)
        watched_before = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
        began = time.perf_counter()
        errors_file = out.with_suffix(".err")
        with open(errors_file, "wb") as errors:
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
            # wait4 gives this child's own CPU time (RUSAGE_CHILDREN would mix in other children).
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - began
        stderr = errors_file.read_text(errors="replace")[-2000:]
        watched = {name: cpu_seconds(pid) - watched_before[name] for name, pid in (watch or {}).items()}
        if process.returncode != 0 or not out.is_file():
            raise BenchError("BENCH_GHZ_FAILED", f"ghz exited with {process.returncode}: {stderr.strip()}")
        report = json.loads(out.read_text())
        return parse_report(
            report,
            target=target,
            concurrency=concurrency,
            elapsed=elapsed,
            client_cpu_s=usage.ru_utime + usage.ru_stime,
            cpu_s=watched,
        )


def parse_report(
    report: dict[str, Any],
    *,
    target: str,
    concurrency: int,
    elapsed: float,
    client_cpu_s: float,
    cpu_s: dict[str, float],
) -> LoadRun:
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    errors = {code: int(n) for code, n in codes.items() if code != "OK"}
    cutoff = sum(n for code, n in errors.items() if code in _CUTOFF_CODES)
    unexpected = sum(errors.values()) - min(cutoff, concurrency)
    seconds = (report.get("total") or 0) / 1e9 or elapsed
    wall_rate = ok / seconds if seconds else 0.0
    percentiles = {
        int(entry["percentage"]): entry["latency"] / 1e6 for entry in report.get("latencyDistribution") or []
    }
    return LoadRun(
        target=target,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        ok=ok,
        errors=errors,
        unexpected_errors=unexpected,
        calls_per_s=round(steady_rate(report.get("details") or []) or wall_rate, 2),
        calls_per_s_wall=round(wall_rate, 2),
        mean_ms=round((report.get("average") or 0) / 1e6, 3),
        slowest_ms=round((report.get("slowest") or 0) / 1e6, 3),
        p50_ms=round(percentiles.get(50, 0.0), 3),
        p90_ms=round(percentiles.get(90, 0.0), 3),
        p99_ms=round(percentiles.get(99, 0.0), 3),
        client_cpu_s=round(client_cpu_s, 4),
        cpu_s={name: round(value, 4) for name, value in cpu_s.items()},
    )


def python_client_probe(
    target: str, request: bytes, metadata: dict[str, str], *, concurrency: int, seconds: float
) -> dict[str, Any]:
    """The cheapest Python client we can write (grpc.aio, bytes in and out, one channel, N
    workers): its calls/s and CPU per call against ``target``, to compare with ghz's."""
    import asyncio

    import grpc

    async def drive() -> int:
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            call = channel.unary_unary(f"/{METHOD.rpartition('.')[0]}/ModelInfer")
            pairs = tuple(metadata.items())
            await call(request, metadata=pairs, timeout=60)  # connect before the clock starts
            deadline = time.perf_counter() + seconds
            done = 0

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await call(request, metadata=pairs, timeout=60)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

    cpu_before, began = time.process_time(), time.perf_counter()
    calls = asyncio.run(drive())
    cpu, elapsed = time.process_time() - cpu_before, time.perf_counter() - began
    return {
        "client": "python grpc.aio (bytes in/out, one channel)",
        "concurrency": concurrency,
        "calls": calls,
        "calls_per_s": round(calls / elapsed, 2) if elapsed else 0.0,
        "cpu_ms_per_call": round(cpu * 1000 / calls, 3) if calls else 0.0,
        "cpu_cores_used": round(cpu / elapsed, 3) if elapsed else 0.0,
    }


def steady_rate(details: list[dict[str, Any]]) -> float | None:
    """Calls/s between the first and the last successful completion.

    ghz starts every worker at once and cancels the calls in flight when time is up, so
    completed calls / run time undercounts by about half a latency per worker; the rate
    between completions (ghz's ``timestamp`` is when a call ended) has neither edge.
    """
    ends = sorted(_epoch(d["timestamp"]) for d in details if d.get("status") == "OK" and d.get("timestamp"))
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return None
    return (len(ends) - 1) / (ends[-1] - ends[0])


def _epoch(timestamp: str) -> float:
    """RFC 3339 with up to nanoseconds (Go's format), which datetime.fromisoformat cannot read."""
    import datetime

    text = timestamp.removesuffix("Z")
    offset = "+00:00"
    for sign in ("+", "-"):
        head, sep, tail = text[10:].rpartition(sign)
        if sep and ":" in tail and len(tail) == 5:
            text, offset = text[:10] + head, sign + tail
            break
    whole, _, fraction = text.partition(".")
    moment = datetime.datetime.fromisoformat(whole + offset)
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
