"""Run ``tests/support/triton_probe.py`` (the real tritonclient) from a test.

tritonclient must not be imported in the pytest process (its protos clash with
labelgate's in the default descriptor pool), so calls go to a child process. The call
format is documented in ``triton_probe.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PROBE = Path(__file__).with_name("triton_probe.py")


def run_probe(
    calls: list[dict[str, Any]], timeout: float = 60, url: str | None = None
) -> list[dict[str, Any]]:
    """One result per call, in order. ``url`` fills in calls that do not name one."""
    if url is not None:
        calls = [{"url": url, **call} for call in calls]
    completed = subprocess.run(
        [sys.executable, str(PROBE)],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"triton probe failed (exit {completed.returncode}):\n{completed.stderr}")
    results = json.loads(completed.stdout)
    assert len(results) == len(calls), "the probe must answer every call"
    return results


def probe_one(call: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``run_probe`` for a single call."""
    return run_probe([call], **kwargs)[0]
