"""``labelgate policy eval``: one input in, the validated decision out, as JSON on stdout.

The input must be a labelgate.v1 input (checked against input.json before any engine
sees it). The output is ``{"result": <the contract's result object>, "provenance":
{engine, revision, decision_id, fail_reason, cached}}`` and, with ``--explain``,
``"explanation"``: OPA's own notes and full trace, or for the embedded engine the named
rules of the decision package that hold for this input, with their values.

A fail-closed deny is printed like any decision, then reported as an error (exit 1) so
scripts notice the policy could not decide.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from labelgate.errors import ConfigError, InvalidInput, PolicyUnavailable
from labelgate.logs import configure
from labelgate.policy.contract import Decision, validate_input

ENGINES = ("embedded", "wasm", "opa")
# A person is waiting, not a gateway call: give OPA more time than the data path does.
CLI_OPA_TIMEOUT_SECONDS = 5.0


def read_input(input_file: Path) -> dict[str, Any]:
    try:
        text = Path(input_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput("INPUT_INVALID", f"cannot read {input_file}: {error}") from error
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            "INPUT_INVALID",
            f"{input_file} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from error
    validate_input(doc)
    return doc


def evaluate(input_file: Path, *, engine: str, opa_url: str, policy_dir: Path, explain: bool) -> None:
    configure("warning")
    if engine not in ENGINES:
        raise ConfigError("ENGINE_UNKNOWN", f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    doc = read_input(input_file)
    output = asyncio.run(
        _evaluate(doc, engine=engine, opa_url=opa_url, policy_dir=policy_dir, explain=explain)
    )
    json.dump(output, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    fail_reason = output["provenance"]["fail_reason"]
    if fail_reason is not None:
        raise PolicyUnavailable(fail_reason, f"the {engine} engine could not decide: the decision is a deny")


async def _evaluate(
    doc: dict[str, Any], *, engine: str, opa_url: str, policy_dir: Path, explain: bool
) -> dict[str, Any]:
    # Imported here: aiohttp alone takes most of a second to import, and a bad input
    # should be reported without paying for an engine.
    if engine == "opa":
        from labelgate.policy.opa import OpaEngine

        opa = OpaEngine(opa_url, timeout=CLI_OPA_TIMEOUT_SECONDS)
        try:
            decision = await opa.decide(doc)
            explanation = await _opa_explanation(opa, doc) if explain else None
        finally:
            await opa.close()
    else:
        from labelgate.policy.embedded import EmbeddedEngine

        embedded: EmbeddedEngine
        if engine == "wasm":
            from labelgate.policy.wasm import WasmEngine

            embedded = WasmEngine(policy_dir, watch_interval=None)
        else:
            embedded = EmbeddedEngine(policy_dir, watch_interval=None)
        await embedded.start()
        try:
            decision = await embedded.decide(doc)
            explanation = embedded.explain(doc) if explain else None
        finally:
            await embedded.close()
    output: dict[str, Any] = {"result": decision.to_result(), "provenance": decision.provenance()}
    if explain:
        output["explanation"] = explanation
    return output


async def _opa_explanation(opa: Any, doc: dict[str, Any]) -> dict[str, Any]:
    explanation: dict[str, Any] = {}
    for mode in ("notes", "full"):
        body = await opa.explain(doc, mode)
        if isinstance(body, Decision):
            explanation[mode] = f"unavailable: {body.fail_reason}"
        else:
            explanation[mode] = body.get("explanation", [])
    return explanation
