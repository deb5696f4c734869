"""Helpers for the policy tests: small policy folders and real OPA servers on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Process, free_port, opa_binary, running

REPO = Path(__file__).resolve().parents[2]
REGO = REPO / "rego"

VALID_RESULT = {
    "allow": True,
    "reason": "ok",
    "mask": [],
    "require_approval": None,
    "cache_ttl_seconds": 30,
}


def write_policy(directory: Path, body: str, *, data: dict[str, Any] | None = None) -> Path:
    """A policy folder: ``package labelgate.decision`` + ``body``; ``data`` at data.labelgate.tables."""
    module = directory / "labelgate" / "decision" / "policy.rego"
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text("package labelgate.decision\n\n" + body)
    if data is not None:
        tables = directory / "labelgate" / "tables" / "data.json"
        tables.parent.mkdir(parents=True, exist_ok=True)
        tables.write_text(json.dumps(data))
    return directory


def result_rule(result: dict[str, Any], condition: str = "true") -> str:
    return f"result := {json.dumps(result)} if {{\n\t{condition}\n}}\n"


@contextlib.contextmanager
def opa(
    log_dir: Path, *paths: Path, args: tuple[str, ...] = (), scheme: str = "http"
) -> Iterator[tuple[str, Process]]:
    """A real ``opa run --server`` on a free loopback port; yields (base URL, process)."""
    port = free_port()
    command = [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", *args, *map(str, paths)]
    with running(command, log_dir / f"opa-{port}.log", port=port) as process:
        yield f"{scheme}://127.0.0.1:{port}", process


@pytest.fixture(scope="module")
def rego_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One OPA per module with the real policy pack (rego/) and decision logging on."""
    with opa(tmp_path_factory.mktemp("opa"), REGO, args=("--set", "decision_logs.console=true")) as (
        url,
        _process,
    ):
        yield url
