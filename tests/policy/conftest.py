"""Helpers for the policy tests: small policy folders and real OPA servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regopy

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


DECISION = "data.labelgate.decision.result"


async def opa_value(policy: Path, document: str, query: str = DECISION) -> Any:
    """Real OPA's value of ``query`` for the input ``document`` (JSON text); None when undefined."""
    path = policy.parent / f"{policy.name}-input.json"
    path.write_text(document)
    done = await asyncio.to_thread(
        subprocess.run,
        [opa_binary(), "eval", "-f", "json", "-b", str(policy), "-i", str(path), query],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout).get("result")
    return result[0]["expressions"][0]["value"] if result else None


def rego_cpp_unchecked(policy: Path, document: str, query: str = DECISION) -> str:
    """rego-cpp's answer to ``x := <query>``, the policy compiled without the embedded engine's
    load-time checks (what a refusal keeps out), as text without spaces."""
    interpreter = regopy.Interpreter()
    for module in sorted(policy.rglob("*.rego")):
        interpreter.add_module(module.name, module.read_text())
    tables = policy / "labelgate" / "tables" / "data.json"
    if tables.exists():
        interpreter.add_data_json(json.dumps({"labelgate": {"tables": json.loads(tables.read_text())}}))
    interpreter.set_input_term(document)
    return str(interpreter.query(f"x := {query}")).replace(" ", "")


# A set built in one module and joined into the reason in another: OPA sorts it, rego-cpp
# keeps the order it was built in and OPA's wasm target its hash order (review rev-s11 F3).
DENIALS = (
    "package labelgate.decision\n\n"
    'denials contains "restricted output requested" if "restricted" in input.labels\n'
    'denials contains "model is in quarantine" if input.model == "q-model"\n'
)
JOINED_REASON = 'package labelgate.decision\n\nreason := concat("; ", [d | some d in denials])\n'


def write_joined_denials(directory: Path) -> Path:
    """A policy folder whose reason joins a set another of its modules builds."""
    folder = write_policy(directory, result_rule(VALID_RESULT))
    (folder / "labelgate" / "decision" / "denials.rego").write_text(DENIALS)
    (folder / "labelgate" / "decision" / "reason.rego").write_text(JOINED_REASON)
    return folder


async def refused_start(engine: Any) -> Any:
    """The ConfigError ``engine.start()`` raises (the engine is closed after it)."""
    from labelgate.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    return refused.value


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
