"""Where the gateway's time goes: py-spy samples of the running gateway, summed by stage.

``py-spy record --gil`` samples only the thread holding the GIL, i.e. Python work on the
CPU (C code that releases the GIL, such as regopy evaluations, shows up as the time the
caller waits, not here). Each sample is charged to the innermost labelgate module on its
stack (library frames count for the labelgate code that called them: stdnum for classify,
json for logging); samples with no labelgate frame are grpc's transport or the event loop.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# First match wins, so the more specific gateway modules come before labelgate/gateway/.
STAGES: tuple[tuple[str, str], ...] = (
    ("labelgate/gateway/classify_stage.py", "classify"),
    ("labelgate/classify/", "classify"),
    ("labelgate/enforce/", "enforce (masking)"),
    ("labelgate/policy/", "decide (policy engine)"),
    ("labelgate/auth/", "authenticate"),
    ("labelgate/oip/", "tensor decode/encode"),
    ("labelgate/gateway/record.py", "record (logs, metrics)"),
    ("labelgate/logs.py", "record (logs, metrics)"),
    ("labelgate/audit/", "record (logs, metrics)"),
    ("labelgate/approvals/deadline.py", "gateway glue (pipeline, proxy, upstream call)"),
    ("labelgate/approvals/", "hold for approval"),
    ("labelgate/gateway/", "gateway glue (pipeline, proxy, upstream call)"),
)
# Frames on every stack (the command and the server loop) say nothing about where time goes.
_ENTRY_POINTS = ("labelgate/cli.py", "labelgate/gateway/server.py")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


def profile_process(pid: int, seconds: float, raw_file: Path, load: Callable[[float], Any]) -> dict[str, Any]:
    """Sample ``pid`` for ``seconds`` while ``load(seconds + 1)`` keeps it busy."""
    binary = py_spy()
    if binary is None:
        return {"status": "not_available", "note": "py-spy is not installed (pip install py-spy)"}
    args = [
        binary,
        "record",
        f"--pid={pid}",
        f"--duration={max(1, round(seconds))}",
        "--rate=250",
        "--gil",
        "--nonblocking",  # do not pause the gateway to sample it
        "--format=raw",
        f"--output={raw_file}",
    ]
    spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        load(seconds + 1)
        _, stderr = spy.communicate(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not raw_file.is_file():
        return {"status": "failed", "note": f"py-spy exited with {spy.returncode}: {stderr.decode()[-500:]}"}
    return {"status": "ok", "raw_file": raw_file.name, **summarize(raw_file.read_text())}


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for marker, stage in STAGES:
            if marker in frame:
                return stage
    if any("grpc" in frame for frame in frames):
        return "grpc transport (serialization, HTTP/2)"
    if any("asyncio" in frame for frame in frames):
        return "event loop"
    return "other"


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """Shares by stage, the hottest functions (self time) and labelgate functions (inclusive)."""
    stages: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [frame for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += samples
        stages[stage_of(frames)] += samples
        leaf[frames[-1]] += samples
        for frame in set(frames):
            if "labelgate/" in frame and not any(root in frame for root in _ENTRY_POINTS):
                inclusive[frame] += samples

    def shares(counter: collections.Counter[str], limit: int | None = None) -> list[dict[str, Any]]:
        return [
            {"name": name, "share": round(n / total, 4)} for name, n in counter.most_common(limit) if total
        ]

    return {
        "samples": total,
        "stages": shares(stages),
        "top_self": shares(leaf, top),
        "top_labelgate_inclusive": shares(inclusive, top),
    }


# The per-call budget the issue asks for, in its seven stages: each profile stage above
# counts for one of them; what is not one of the named stages is glue.
BUDGET_STAGES: tuple[str, ...] = ("authenticate", "decide", "classify", "enforce", "codec", "record", "glue")
_BUDGET_OF = {
    "authenticate": "authenticate",
    "decide (policy engine)": "decide",
    "classify": "classify",
    "enforce (masking)": "enforce",
    "tensor decode/encode": "codec",
    "record (logs, metrics)": "record",
}


def stage_budget(summary: dict[str, Any], cpu_ms_per_call: float) -> dict[str, float]:
    """CPU µs per call by budget stage: the gateway's measured CPU per call shared out by the
    profile's stage shares. An estimate: py-spy sees Python holding the GIL, while the CPU
    figure also counts gRPC's C threads, which this charges to the stages pro rata."""
    budget = dict.fromkeys(BUDGET_STAGES, 0.0)
    for stage in summary.get("stages", []):
        budget[_BUDGET_OF.get(stage["name"], "glue")] += stage["share"] * cpu_ms_per_call * 1000
    return {name: round(value, 1) for name, value in budget.items()}
