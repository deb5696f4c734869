"""Shared fixtures, and the rule that keeps CI honest: with CI=true a skip is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import PINNED_OPA, Process, free_port, labelgate_command, opa_binary, running

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The package does not know where the repository is: it reads these (the Makefile exports
# LABELGATE_OPA), and so do the processes the tests start. Set here too so that `pytest`
# run by hand, from any folder, finds the pinned opa and the quickstart's dev keys.
if PINNED_OPA.is_file():
    os.environ.setdefault("LABELGATE_OPA", str(PINNED_OPA))
os.environ.setdefault("LABELGATE_DEV_KEYS", str(REPO / "deploy" / "quickstart" / "dev-keys"))
# The demo backend serves its metadata-echoing _debug-metadata model only when asked: tests do.
os.environ.setdefault("LABELGATE_DEMO_DEBUG_MODEL", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not IN_CI:
        return
    if report.skipped:
        # Covers skip marks, pytest.skip(), importorskip and xfail (which reports as skipped).
        why = getattr(report, "wasxfail", None) or (
            report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        )
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skipped or xfailed test is a failed test ({why})"


@pytest.fixture
def demo_backend(tmp_path: Path) -> Iterator[str]:
    """A real demo backend process; yields its HOST:PORT."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    with running(labelgate_command("demo-backend", "--listen", address), tmp_path / "backend.log", port=port):
        yield address


@pytest.fixture
def opa_server(tmp_path: Path) -> Iterator[tuple[str, Process]]:
    """A real `opa run --server` with rego/ loaded; yields (base URL, process)."""
    port = free_port()
    args = [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", str(REPO / "rego")]
    with running(args, tmp_path / "opa.log", port=port) as process:
        yield f"http://127.0.0.1:{port}", process
