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


# -- labelgate policy impact ---------------------------------------------------------------
# Exit codes: 0 nothing changed, 3 something did, 2 errors (a policy that does not load, an
# unreadable store, an input off the contract, a decision that failed closed).
IMPACT_UNCHANGED = 0
IMPACT_CHANGED = 3
IMPACT_ERROR = 2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str | None) -> float | None:
    """``24h``, ``30m``, ``7d``, ``2w``, ``3600s`` or ``3600``: seconds; None or ``all``: no limit."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    text = text.strip().lower()
    unit = _UNITS.get(text[-1])
    number = text[:-1] if unit is not None else text
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(
            "SINCE_INVALID", f"--since: {text!r} is not a duration like 24h, 30m or 7d"
        ) from None
    if amount <= 0:
        raise ConfigError("SINCE_INVALID", "--since must be positive")
    return amount * (unit or 1)


def load_inputs(path: Path, since_seconds: float | None) -> list[tuple[str, int, dict[str, Any]]]:
    """(hash, times seen, input) from an input store (SQLite) or a JSON Lines sample (one
    labelgate.v1 input a line, or ``{"input": ..., "seen": n}``), deduplicated by hash."""
    import time

    from labelgate.policy.cache import cache_key

    path = Path(path)
    if not path.is_file():
        raise InvalidInput("INPUTS_UNREADABLE", f"--inputs: {path} is not a file")
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        counted: dict[str, tuple[int, dict[str, Any]]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInput("INPUT_INVALID", f"{path}:{number}: not JSON ({error.msg})") from None
            doc, seen = (entry["input"], int(entry.get("seen", 1))) if "input" in entry else (entry, 1)
            key = cache_key(doc)
            if key is None:
                raise InvalidInput("INPUT_INVALID", f"{path}:{number}: not a JSON input")
            count, _ = counted.get(key.hex(), (0, doc))
            counted[key.hex()] = (count + seen, doc)
        return [(digest, seen, doc) for digest, (seen, doc) in sorted(counted.items())]
    import sqlite3

    from labelgate.gateway.record import InputStore

    since = None if since_seconds is None else time.time() - since_seconds
    try:
        store = InputStore.open_readonly(path)
        try:
            return list(store.read(since))
        finally:
            store.close()
    except (sqlite3.Error, json.JSONDecodeError) as error:
        raise InvalidInput("INPUTS_UNREADABLE", f"--inputs: {path}: {error}") from None


def impact(
    *,
    candidate: Path,
    current: Path,
    inputs: Path,
    since: str | None,
    engine: str,
    output: str,
) -> int:
    """Replay the stored inputs on both policies, print the report; returns the exit code."""
    configure("warning")
    if engine not in ENGINES:
        raise ConfigError("ENGINE_UNKNOWN", f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    for name, folder in (("--candidate", candidate), ("--current", current)):
        if not Path(folder).is_dir():
            raise ConfigError("POLICY_DIR_MISSING", f"{name}: {folder} is not a folder")
    stored = load_inputs(inputs, parse_since(since))
    import contextlib

    from labelgate.policy.impact import summarize, to_markdown

    with contextlib.ExitStack() as servers:
        # OPA runs as a server per policy (started before the event loop: it blocks until ready).
        urls = (
            [servers.enter_context(_opa_server(f)) for f in (current, candidate)] if engine == "opa" else []
        )
        replays = asyncio.run(_replay(stored, engine=engine, folders=(current, candidate), urls=urls))
    report = summarize(replays)
    if output == "json":
        document = {
            "engine": engine,
            "current": str(current),
            "candidate": str(candidate),
            **report.to_json(),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif output == "markdown":
        sys.stdout.write(to_markdown(report, current=str(current), candidate=str(candidate)))
    else:
        _print_table(report, engine=engine, current=current, candidate=candidate)
    sys.stdout.flush()
    if report.errors:
        return IMPACT_ERROR
    return IMPACT_CHANGED if report.groups else IMPACT_UNCHANGED


async def _replay(
    stored: list[tuple[str, int, dict[str, Any]]],
    *,
    engine: str,
    folders: tuple[Path, Path],
    urls: list[str],
) -> list[Any]:
    import contextlib
    import time

    from labelgate.policy.impact import Replayed

    async with contextlib.AsyncExitStack() as stack:
        engines = [
            await stack.enter_async_context(_engine(engine, folder, urls[i] if urls else ""))
            for i, folder in enumerate(folders)
        ]
        replays = []
        for digest, seen, stored_input in stored:
            context = stored_input.get("context") or {}
            doc = {**stored_input, "context": {**context, "time_ns": time.time_ns()}}
            validate_input(doc)
            before = await engines[0].decide(doc)
            after = await engines[1].decide(doc)
            replays.append(Replayed(digest, seen, stored_input, before, after))
        return replays


def _engine(engine: str, folder: Path, url: str) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def running() -> Any:
        if engine == "opa":
            from labelgate.policy.opa import OpaEngine

            opa = OpaEngine(url, timeout=CLI_OPA_TIMEOUT_SECONDS)
            try:
                yield opa
            finally:
                await opa.close()
            return
        from labelgate.policy.embedded import EmbeddedEngine

        if engine == "wasm":
            from labelgate.policy.wasm import WasmEngine

            loaded: EmbeddedEngine = WasmEngine(folder, watch_interval=None)
        else:
            loaded = EmbeddedEngine(folder, watch_interval=None)
        await loaded.start()
        try:
            yield loaded
        finally:
            await loaded.close()

    return running()


def _opa_server(folder: Path) -> Any:
    """``opa run --server`` on a free loopback port with ``folder``, until the block ends."""
    import contextlib
    import socket
    import subprocess
    import time
    import urllib.request

    from labelgate.policy.wasm import opa_binary

    @contextlib.contextmanager
    def server() -> Any:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                if process.poll() is not None:
                    problem = (process.stderr.read() if process.stderr else b"").decode(errors="replace")
                    raise ConfigError(
                        "POLICY_COMPILE_FAILED", f"opa could not load {folder}: {problem[:2000]}"
                    )
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/health", timeout=1) as answer,  # noqa: S310 - loopback
                ):
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise PolicyUnavailable("POLICY_UNAVAILABLE", f"opa did not start for {folder}")
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    return server()


def _print_table(report: Any, *, engine: str, current: Path, candidate: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"policy impact ({engine}): {candidate} against {current}: {report.distinct} distinct inputs "
        f"({report.inputs} decisions) replayed, {report.changed} decided differently"
    )
    if report.groups:
        table = Table("change", "group", "model", "field", "detail", "inputs", "decisions", "example input")
        for g in report.groups:
            table.add_row(
                g.kind, g.group, g.model, g.field, g.detail, str(g.inputs), str(g.calls), g.example[:16]
            )
        console.print(table)
    else:
        console.print("no changes")
    for error in report.errors:
        console.print(f"[red]failed closed[/red] {error['hash'][:16]} ({error['side']}): {error['reason']}")
