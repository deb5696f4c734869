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
import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labelgate.classify.catalog import Catalog
from labelgate.errors import ConfigError, InvalidInput, PolicyUnavailable
from labelgate.logs import configure
from labelgate.policy import catalog_impact, reasons, table_impact
from labelgate.policy.contract import Decision, validate_input
from labelgate.policy.impact import (
    APPROVAL_CHANGED,
    ImpactReport,
    Replayed,
    compare,
    model_of,
    subject_group,
    summarize,
)
from labelgate.policy.table_impact import approval_weakenings
from labelgate.shown_urls import shown_problem, shown_url
from labelgate.untrusted_text import shown

ENGINES = ("embedded", "wasm", "opa")
# A person is waiting, not a gateway call: give OPA more time than the data path does.
CLI_OPA_TIMEOUT_SECONDS = 5.0


def read_input(input_file: Path) -> dict[str, Any]:
    try:
        text = Path(input_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(reasons.INPUT_INVALID, f"cannot read {input_file}: {error}") from error
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            reasons.INPUT_INVALID,
            f"{input_file} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from error
    except RecursionError:
        raise InvalidInput(reasons.INPUT_INVALID, f"{input_file} is nested too deeply") from None
    validate_input(doc)
    checked: dict[str, Any] = doc  # validate_input: a labelgate.v1 input object
    return checked


def evaluate(input_file: Path, *, engine: str, opa_url: str, policy_dir: Path, explain: bool) -> None:
    configure("warning")
    if engine not in ENGINES:
        raise ConfigError(
            reasons.ENGINE_UNKNOWN, f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}"
        )
    if engine == "opa" and shown_url(opa_url) != opa_url:
        # Sent as basic auth, which OPA never checks: they would only reach the log lines.
        raise ConfigError(
            reasons.POLICY_URL_INVALID,
            f"--opa-url {shown_url(opa_url)!r} carries credentials (user:password@): OPA checks "
            "only a bearer token: remove them",
        )
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


def parse_since(text: str | None, option: str = "--since") -> float | None:
    """``24h``, ``30m``, ``7d``, ``2w``, ``3600s`` or ``3600``: seconds; None or ``all``: no limit.

    Only a finite positive duration: ``nan`` compares false with everything, so a ``nan``
    window selected no input at all and the replay read as "no changes"; ``inf`` (or ``1e400``)
    is ``all`` spelled in a way nobody means."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    text = text.strip().lower()
    unit = _UNITS.get(text[-1])
    number = text[:-1] if unit is not None else text
    try:
        amount = float(number) * (unit or 1)
    except ValueError:
        raise ConfigError(
            reasons.SINCE_INVALID, f"{option}: {text!r} is not a duration like 24h, 30m or 7d"
        ) from None
    if not math.isfinite(amount) or amount <= 0:
        raise ConfigError(
            reasons.SINCE_INVALID, f"{option}: {text!r} is not a finite positive duration like 24h, 30m or 7d"
        )
    return amount


def _sample_line(path: Path, number: int, entry: Any) -> tuple[dict[str, Any], int]:
    """(input, times seen) of one line of a JSON Lines sample: an input, or ``{"input", "seen"}``."""
    if not isinstance(entry, dict):
        raise InvalidInput(reasons.INPUT_INVALID, f"{path}:{number}: not a JSON object")
    if "input" not in entry:
        return entry, 1
    doc, seen = entry["input"], entry.get("seen", 1)
    if isinstance(seen, bool) or not isinstance(seen, int) or seen < 1:
        raise InvalidInput(
            reasons.INPUT_INVALID, f"{path}:{number}: seen is {json.dumps(seen)}, not a positive whole number"
        )
    if not isinstance(doc, dict):
        raise InvalidInput(reasons.INPUT_INVALID, f"{path}:{number}: not a JSON input")
    return doc, seen


def load_inputs(path: Path, since_seconds: float | None) -> list[tuple[str, int, dict[str, Any]]]:
    """(hash, times seen, input) from an input store (SQLite) or a JSON Lines sample (one
    labelgate.v1 input a line, or ``{"input": ..., "seen": n}``), deduplicated by hash."""
    import time

    from labelgate.policy.cache import cache_key

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(reasons.INPUTS_UNREADABLE, f"--inputs: {path} is not a file")
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        counted: dict[str, tuple[int, dict[str, Any]]] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidInput(reasons.INPUTS_UNREADABLE, f"--inputs: cannot read {path}: {error}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInput(
                    reasons.INPUT_INVALID, f"{path}:{number}: not JSON ({error.msg})"
                ) from None
            except RecursionError:
                raise InvalidInput(reasons.INPUT_INVALID, f"{path}:{number}: nested too deeply") from None
            doc, seen = _sample_line(path, number, entry)
            key = cache_key(doc)
            if key is None:
                raise InvalidInput(reasons.INPUT_INVALID, f"{path}:{number}: not a JSON input")
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
        raise InvalidInput(reasons.INPUTS_UNREADABLE, f"--inputs: {path}: {error}") from None


def impact(
    *,
    candidate: Path,
    current: Path,
    inputs: Path | None,
    since: str | None,
    engine: str,
    output: str,
    source: str | None = None,
    token: str | None = None,
) -> int:
    """Replay the stored inputs on both policies, print the report; returns the exit code."""
    configure("warning")
    if (inputs is None) == (source is None):
        raise ConfigError(reasons.INPUTS_MISSING, "give one of --inputs FILE or --from URL|FILE")
    window = parse_since(since)
    stored = (
        load_inputs(inputs, window)
        if inputs is not None
        else load_decision_log_inputs(str(source), window, token=token)
    )
    report = replay_report(current, candidate, stored, engine=engine)
    warnings = [] if report.distinct else [_nothing_replayed(since)]
    for warning in warnings:  # stderr too: CI logs show it whatever the output format
        sys.stderr.write(f"warning: {warning}\n")
    if output == "json":
        document = {
            "engine": engine,
            "current": str(current),
            "candidate": str(candidate),
            **report.to_json(),
            "warnings": warnings,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif output == "markdown":
        from labelgate.policy.impact import to_markdown

        text = to_markdown(report, current=str(current), candidate=str(candidate))
        sections = (
            ("The candidate's catalog takes labels from fields", report.catalog_lines()),
            ("The candidate's tables show labels more readily", report.table_lines()),
        )
        for title, found in sections:
            if found:  # perhaps no decision changed, but the data did
                lines = "".join(f"- {shown(line)}\n" for line in found)
                text = text.replace("\nNo changes.\n", "\nNo decision changes.\n")
                text += f"\n**{title}**:\n{lines}"
        sys.stdout.write(text)
    else:
        _print_table(report, engine=engine, current=current, candidate=candidate)
    sys.stdout.flush()
    if report.errors:
        return IMPACT_ERROR
    return IMPACT_CHANGED if report.groups or report.catalog or report.tables else IMPACT_UNCHANGED


def _nothing_replayed(since: str | None) -> str:
    window = f"in the last {since.strip()}" if since and since.strip().lower() != "all" else "at all"
    return (
        f"no decision inputs were replayed (none stored {window}): this report says nothing about "
        "the candidate, and exit 0 here is not evidence that it changes nothing"
    )


def replay_report(
    current: Path,
    candidate: Path,
    stored: list[tuple[str, int, dict[str, Any]]],
    *,
    engine: str,
    timing: dict[str, float] | None = None,
) -> ReplayReport:
    """The impact of ``candidate`` against ``current`` over ``stored`` inputs, with what the
    replay cannot show (``ReplayReport``).

    Blocking (it runs its own event loop, and ``opa`` servers for ``engine="opa"``): the
    bundle server's publish gate calls it from a worker thread. ``timing`` gets
    ``replay_s``, the seconds spent deciding (both policies loaded), for ``bench``."""
    import contextlib

    if engine not in ENGINES:
        raise ConfigError(
            reasons.ENGINE_UNKNOWN, f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}"
        )
    for name, folder in (("--candidate", candidate), ("--current", current)):
        if not Path(folder).is_dir():
            raise ConfigError(reasons.POLICY_DIR_MISSING, f"{name}: {folder} is not a folder")
    catalog, tables = catalog_changes(current, candidate), table_changes(current, candidate)
    with contextlib.ExitStack() as servers:
        # OPA runs as a server per policy (started before the event loop: it blocks until ready).
        urls = (
            [servers.enter_context(_opa_server(f)) for f in (current, candidate)] if engine == "opa" else []
        )
        replays = asyncio.run(
            _replay(stored, engine=engine, folders=(current, candidate), urls=urls, timing=timing)
        )
    return replay_summary(replays, catalog, tables)


# -- what the replay cannot show ----------------------------------------------------------
# The publish gate (``bundle/gate.py``) reads both from the report's JSON.


@dataclasses.dataclass
class ReplayReport(ImpactReport):
    """The impact report, with per ``approval requirement changed`` group how the requirement
    weakened (``weakened``), the ``catalog`` changes that take a label from a field, and the
    ``tables`` changes that show a label more readily."""

    catalog: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tables: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # (group, model, detail) of an ``approval requirement changed`` group -> how it weakened
    weakened_approvals: dict[tuple[str, str, str], list[str]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        for change, group in zip(document["changes"], self.groups, strict=True):
            if group.kind == APPROVAL_CHANGED:
                change["weakened"] = self.weakened_approvals.get((group.group, group.model, group.detail), [])
        document["catalog"] = list(self.catalog)
        document["tables"] = list(self.tables)
        return document

    def catalog_lines(self) -> list[str]:
        from labelgate.bundle.gate import describe_catalog_change

        return [f"{change['kind']}: {describe_catalog_change(change)}" for change in self.catalog]

    def table_lines(self) -> list[str]:
        from labelgate.bundle.gate import describe_table_change

        return [f"{change['kind']}: {describe_table_change(change)}" for change in self.tables]


def replay_summary(
    replays: list[Replayed],
    catalog: list[dict[str, Any]] | None = None,
    tables: list[dict[str, Any]] | None = None,
) -> ReplayReport:
    """The report of ``replays`` (``impact.summarize``), how each changed approval weakened,
    ``catalog`` (``catalog_changes``) and ``tables`` (``table_changes``)."""
    report = summarize(replays)
    return ReplayReport(
        **{f.name: getattr(report, f.name) for f in dataclasses.fields(report)},
        catalog=list(catalog or ()),
        tables=list(tables or ()),
        weakened_approvals=weakened_approvals(replays),
    )


def weakened_approvals(replays: Iterable[Replayed]) -> dict[tuple[str, str, str], list[str]]:
    """Per ``approval requirement changed`` group (subject group, model, detail, as
    ``impact.summarize`` groups them): how the requirement weakened on any of its inputs."""
    found: dict[tuple[str, str, str], set[str]] = {}
    for replay in replays:
        was, now = replay.current.require_approval, replay.candidate.require_approval
        if was is None or now is None:  # not held both times (or failed closed): no such change
            continue
        for change in compare(replay.current, replay.candidate):
            if change.kind == APPROVAL_CHANGED:
                key = (subject_group(replay.input), model_of(replay.input), change.detail)
                found.setdefault(key, set()).update(approval_weakenings(was, now))
    return {key: sorted(weakenings) for key, weakenings in found.items()}


def catalog_changes(current: Path, candidate: Path) -> list[dict[str, Any]]:
    """Every field to which ``candidate``'s catalog (``data.labelgate.catalog``) gives fewer
    labels than ``current``'s (``labelgate.policy.catalog_impact``, which says why a replay
    cannot show it, nor a comparison of the entries' text)."""
    return catalog_impact.catalog_changes(_bundle_catalog(current), _bundle_catalog(candidate))


def _bundle_catalog(folder: Path) -> Catalog | None:
    """The catalog a gateway following ``folder``'s bundle would take; None if it has none."""
    from labelgate.gateway import reasons as gateway_reasons
    from labelgate.gateway.classify_stage import bundle_catalog
    from labelgate.policy.source import PolicySource

    try:
        return bundle_catalog(PolicySource.from_dir(folder))
    except ConfigError as error:
        if error.reason != gateway_reasons.BUNDLE_CATALOG_MISSING:
            raise
        return None


def table_changes(current: Path, candidate: Path) -> list[dict[str, Any]]:
    """What ``candidate``'s tables (``data.labelgate.tables``) show more readily than
    ``current``'s (``labelgate.policy.table_impact``): each the document the rules read, which
    modules can define as well as data.json (``labelgate.policy.evaluated_tables``, which raises
    for tables it cannot compare)."""
    from labelgate.policy.evaluated_tables import evaluated_tables

    served = evaluated_tables(current, "the served revision")
    proposed = evaluated_tables(candidate, "the candidate")
    return table_impact.table_changes(served, proposed)


def load_decision_log_inputs(
    source: str, since_seconds: float | None, *, token: str | None = None
) -> list[tuple[str, int, dict[str, Any]]]:
    """(hash, times seen, input) from the bundle server's decision-log store: its URL
    (``GET /decisions/inputs``, a reader token) or its ``fleet.sqlite3`` file. The inputs OPA
    logged carry per-call values (request id, time); they are dropped, as the gateway's own
    input store drops them, and the rest is deduplicated by the decision-cache key."""
    from labelgate.gateway.record import replayable_input
    from labelgate.policy.cache import cache_key

    if source.startswith(("http://", "https://")):
        logged = _fetch_logged_inputs(source, since_seconds, token)
    else:
        logged = _read_logged_inputs(Path(source), since_seconds)
    counted: dict[str, tuple[int, dict[str, Any]]] = {}
    for doc, seen in logged:
        # OPA logs every query, including ones no gateway made: only contract inputs replay.
        try:
            validate_input(doc)
        except InvalidInput:
            continue
        stored = replayable_input(doc)
        key = cache_key(stored)
        if key is None:
            continue
        count, _ = counted.get(key.hex(), (0, stored))
        counted[key.hex()] = (count + seen, stored)
    return [(digest, seen, doc) for digest, (seen, doc) in sorted(counted.items())]


def _read_logged_inputs(path: Path, since_seconds: float | None) -> list[tuple[Any, int]]:
    import sqlite3

    from labelgate.bundle.fleet import logged_inputs

    if not path.is_file():
        raise InvalidInput(reasons.INPUTS_UNREADABLE, f"--from: {path} is not a file or an http(s) URL")
    try:
        return logged_inputs(path, since_seconds)
    except (sqlite3.Error, json.JSONDecodeError) as error:
        raise InvalidInput(reasons.INPUTS_UNREADABLE, f"--from: {path}: {error}") from None


def _fetch_logged_inputs(url: str, since_seconds: float | None, token: str | None) -> list[tuple[Any, int]]:
    import httpx

    params = {} if since_seconds is None else {"since_seconds": str(int(since_seconds))}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.get(f"{url.rstrip('/')}/decisions/inputs", params=params, headers=headers, timeout=60)
    except httpx.HTTPError as error:
        raise InvalidInput(
            reasons.INPUTS_UNREADABLE,
            f"--from: cannot reach {shown_url(url)}: {shown_problem(url, str(error))}",
        ) from None
    except (httpx.InvalidURL, ValueError) as error:  # a URL (or token) the client cannot send
        raise InvalidInput(
            reasons.INPUTS_UNREADABLE,
            f"--from: {shown_url(url)!r} cannot be used: {shown_problem(url, str(error))}",
        ) from None
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail", "")
        except (ValueError, AttributeError, RecursionError):
            detail = ""
        raise InvalidInput(
            reasons.INPUTS_UNREADABLE,
            f"--from: {shown_url(url)} answered {answer.status_code}: {str(detail)[:200]}",
        )
    try:
        return [(item["input"], int(item["seen"])) for item in answer.json()["inputs"]]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise InvalidInput(
            reasons.INPUTS_UNREADABLE, f"--from: {shown_url(url)} sent no input list ({error})"
        ) from None


async def _replay(
    stored: list[tuple[str, int, dict[str, Any]]],
    *,
    engine: str,
    folders: tuple[Path, Path],
    urls: list[str],
    timing: dict[str, float] | None = None,
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
        began = time.perf_counter()
        for digest, seen, stored_input in stored:
            context = stored_input.get("context") or {}
            doc = {**stored_input, "context": {**context, "time_ns": time.time_ns()}}
            validate_input(doc)
            before = await engines[0].decide(doc)
            after = await engines[1].decide(doc)
            replays.append(Replayed(digest, seen, stored_input, before, after))
        if timing is not None:
            timing["replay_s"] = time.perf_counter() - began
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
    import tempfile
    import time
    import urllib.request

    from labelgate.policy.wasm import opa_binary

    @contextlib.contextmanager
    def server() -> Any:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        # Errors only, into a file: an unread pipe fills after a few hundred requests and
        # OPA then blocks on its own log, which the replay would see as timeouts.
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [opa_binary(), "run", "--server", "--log-level", "error", "--addr", f"127.0.0.1:{port}",
                 str(folder)],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 20
                while True:
                    if process.poll() is not None:
                        errors.seek(0)
                        problem = errors.read().decode(errors="replace")
                        raise ConfigError(
                            reasons.POLICY_COMPILE_FAILED, f"opa could not load {folder}: {problem[:2000]}"
                        )
                    with (
                        contextlib.suppress(OSError),
                        urllib.request.urlopen(f"{url}/health", timeout=1) as answer,  # noqa: S310 - loopback
                    ):
                        if answer.status == 200:
                            break
                    if time.monotonic() > deadline:
                        raise PolicyUnavailable(reasons.POLICY_UNAVAILABLE, f"opa did not start for {folder}")
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
    from rich.markup import escape
    from rich.table import Table

    def plain(text: object) -> str:
        # Model names, fields and reasons come from callers and upstreams (the recorded
        # inputs): shown as text, never obeyed as terminal escapes or rich markup.
        return escape(shown(str(text)))

    console = Console()
    console.print(
        f"policy impact ({engine}): {plain(candidate)} against {plain(current)}: {report.distinct} distinct "
        f"inputs ({report.inputs} decisions) replayed, {report.changed} decided differently"
    )
    catalog = report.catalog_lines() if isinstance(report, ReplayReport) else []
    tables = report.table_lines() if isinstance(report, ReplayReport) else []
    if not report.distinct:
        console.print("[bold yellow]no decision inputs were replayed: nothing was compared[/]")
    elif report.groups:
        table = Table("change", "group", "model", "field", "detail", "inputs", "decisions", "example input")
        for g in report.groups:
            cells = (g.kind, g.group, g.model, g.field, g.detail, g.inputs, g.calls, g.example[:16])
            table.add_row(*(plain(cell) for cell in cells))
        console.print(table)
    else:
        console.print("no decision changes" if catalog or tables else "no changes")
    for line in catalog:
        console.print(f"[bold yellow]the candidate's catalog[/]: {plain(line)}")
    for line in tables:
        console.print(f"[bold yellow]the candidate's tables[/]: {plain(line)}")
    for error in report.errors:
        where = f"{plain(error['hash'][:16])} ({plain(error['side'])})"
        console.print(f"[red]failed closed[/red] {where}: {plain(error['reason'])}")
