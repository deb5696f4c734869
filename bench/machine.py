"""What the numbers were measured on: hardware, load, versions, commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.load import GHZ_VERSION


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _command_output(args: list[str], cwd: Path | None = None) -> str | None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=cwd, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(repo: Path, opa: str | None) -> dict[str, Any]:
    opa_version = _command_output([opa, "version"]) if opa else None
    commit = _command_output(["git", "rev-parse", "HEAD"], cwd=repo)
    # --no-optional-locks: only read, never refresh the index another process may be using.
    changes = _command_output(["git", "--no-optional-locks", "status", "--porcelain"], cwd=repo)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {
            "labelgate": _version("labelgate"),
            "opa": opa_version.splitlines()[0].removeprefix("Version: ") if opa_version else None,
            "regopy": _version("regopy"),
            "grpcio": _version("grpcio"),
            "protobuf": _version("protobuf"),
            "ghz": GHZ_VERSION,
            "py-spy": _version("py-spy"),
            "matplotlib": _version("matplotlib"),
        },
        "git_commit": commit,
        # Uncommitted changes mean the numbers belong to the working tree, not the commit alone.
        "git_dirty": bool(changes) if changes is not None else None,
    }
