"""OPA's own compliance cases (``v1/test/cases/testdata/v1`` of the pinned opa Go module), run
against regopy the way the embedded engine runs a policy.

Each case is compiled with ``Interpreter.build(query)`` (as ``_Compiled.build`` compiles a
revision), its input is handed over with ``set_policy_input`` (the engine's own path; an
``input_term`` goes in as Rego text), and the bundle is queried on a separate runner
interpreter, as ``_Compiled.evaluate`` does. The result set is compared the way OPA's own
harness (``v1/topdown/exported_test.go``) compares it: a set of binding objects, numbers by
value, ``sort_bindings`` sorting each binding. A case that wants an error passes when rego-cpp
reports any error: the gateway turns every evaluation error into a deny, so the error code
and text do not change a decision.

rego-cpp can crash or loop on odd input, so the cases run in one child process
(``python -m tests.policy.opa_compliance run``) that prints one JSON line per case; the parent
restarts it after the case that killed it, and gives each case ``CASE_TIMEOUT`` seconds.

``python -m tests.policy.opa_compliance report`` rewrites docs/EMBEDDED_COMPLIANCE.md;
``... failures`` prints the failing cases in the format of ``compliance_failures.yaml``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OPA_VERSION = "v1.22.3"
CASES_SUBDIR = "v1/test/cases/testdata/v1"
FAILURES_FILE = Path(__file__).with_name("compliance_failures.yaml")
REPORT_FILE = REPO / "docs" / "EMBEDDED_COMPLIANCE.md"
CASE_TIMEOUT = 30.0  # generous: CI machines are shared
# Cases the reviewed list says hang (replace_n with an empty key): their timeout is short.
HANG_TIMEOUT = 3.0


def cases_dir() -> Path | None:
    """The compliance cases of the pinned OPA in the Go module cache (``make tools`` puts them there)."""
    explicit = os.environ.get("LABELGATE_OPA_CASES")
    if explicit:
        return Path(explicit)
    candidates = []
    gomodcache = os.environ.get("GOMODCACHE")
    if not gomodcache and shutil.which("go"):
        gomodcache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False
        ).stdout.strip()
    if gomodcache:
        candidates.append(Path(gomodcache))
    candidates.append(Path.home() / "go" / "pkg" / "mod")
    for root in candidates:
        path = root / "github.com" / "open-policy-agent" / f"opa@{OPA_VERSION}" / CASES_SUBDIR
        if path.is_dir():
            return path
    return None


@dataclass(frozen=True)
class Case:
    note: str
    family: str  # the folder under testdata/v1: OPA groups cases by builtin or feature
    file: str
    spec: dict[str, Any]


def load_cases(root: Path) -> list[Case]:
    cases = []
    for path in sorted(root.rglob("*.yaml")):
        family = path.relative_to(root).parts[0]
        document = yaml.safe_load(path.read_text()) or {}
        for spec in document.get("cases") or []:
            cases.append(Case(spec["note"], family, str(path.relative_to(root)), spec))
    cases.sort(key=lambda case: case.note)  # stable: duplicates keep their file order
    # A few notes repeat (in one file or across files): number the repeats to keep keys unique.
    seen: Counter[str] = Counter()
    unique = []
    for case in cases:
        seen[case.note] += 1
        note = case.note if seen[case.note] == 1 else f"{case.note} #{seen[case.note]}"
        unique.append(Case(note, case.family, case.file, case.spec))
    return unique


# ------------------------------------------------------------------------------------------
# Comparing values as OPA does: numbers by value, objects by keys, sets of results.


def canonical(value: Any) -> Any:
    """A hashable form in which equal Rego values are equal (1 == 1.0; True != 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", Fraction(value) if value == value and abs(value) != float("inf") else str(value))
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, (list, tuple)):
        return ("a", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("o", tuple(sorted((str(k), canonical(v)) for k, v in value.items())))
    raise TypeError(type(value).__name__)


def _order_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def result_set(rows: list[dict[str, Any]], sort_bindings: bool) -> frozenset[Any]:
    found = set()
    for row in rows:
        items = []
        for name, value in row.items():
            if sort_bindings and isinstance(value, list):
                value = sorted(value, key=_order_key)
            items.append((name, canonical(value)))
        found.add(tuple(sorted(items)))
    return frozenset(found)


# ------------------------------------------------------------------------------------------
# Running one case in this process (the child).


def run_case(case: Case) -> dict[str, Any]:
    """{"outcome", "detail", "builtins", "scanner_missed"} for one case."""
    result, missed = _run_case(case)
    return {**result, "scanner_missed": missed}


def _scanner_missed(spec: dict[str, Any], builtins: list[str]) -> list[str]:
    """Builtins rego-cpp's plan calls that the load-time text scanner does not report.

    Operators (``plus``, ``internal.member_2``, ...) are written as symbols, not calls, and
    are all vetted through the plan here, so only builtins with a dotted or word name count.
    """
    from labelgate.policy.rego_text import definitions, scan_calls

    modules = tuple((f"test-{i}.rego", text) for i, text in enumerate(spec.get("modules") or []))
    defined = definitions(modules)
    seen = {name for _, text in modules for name, _ in scan_calls(text, defined)}
    seen |= {name for name, _ in scan_calls(spec["query"], defined)}
    return sorted(set(builtins) - seen - _OPERATORS)


# How rego-cpp's plan names infix operators and `in`.
_OPERATORS = frozenset(
    {
        "plus",
        "minus",
        "mul",
        "div",
        "rem",
        "and",
        "or",
        "equal",
        "neq",
        "lt",
        "lte",
        "gt",
        "gte",
        "internal.member_2",
        "internal.member_3",
        "assign",
        "eq",
    }
)


def _run_case(case: Case) -> tuple[dict[str, Any], list[str]]:
    import regopy

    from labelgate.policy.capabilities import plan_builtins
    from labelgate.policy.embedded import UnsupportedInput, set_policy_input

    spec = case.spec
    builder = regopy.Interpreter()
    builder.log_level = regopy.LogLevel.NONE
    builder.strict_built_in_errors = bool(spec.get("strict_error"))
    wants_error = "want_error" in spec or "want_error_code" in spec
    builtins: list[str] = []
    missed: list[str] = []
    try:
        for index, module in enumerate(spec.get("modules") or []):
            builder.add_module(f"test-{index}.rego", module)
        builder.add_data_json(json.dumps(spec.get("data") or {}, ensure_ascii=False))  # as _load
        bundle = builder.build(spec["query"], [])
        if not bundle.ok():
            raise regopy.RegoError("build failed")
        builtins = sorted(plan_builtins(builder, bundle))
        missed = _scanner_missed(spec, builtins)
        runner = regopy.Interpreter()
        runner.log_level = regopy.LogLevel.NONE
        runner.strict_built_in_errors = builder.strict_built_in_errors
        if spec.get("input_term") is not None:
            runner.set_input_term(spec["input_term"])
        elif "input" in spec:
            try:
                set_policy_input(runner, spec["input"])
            except UnsupportedInput:
                # The engine denies such an input (EMBEDDED_INPUT_UNSUPPORTED) unevaluated;
                # rego-cpp is still measured on it, from the JSON text that gives the same nodes.
                runner.set_input_term(json.dumps(spec["input"], ensure_ascii=False, allow_nan=False))
        output = runner.query_bundle(bundle)
        if not output.ok():
            raise regopy.RegoError(str(output).splitlines()[0] if str(output) else "error")
        rows = [result.bindings for result in output.results if result.bindings or result.expressions]
    except (regopy.RegoError, ValueError, RuntimeError) as error:
        if wants_error:
            return {"outcome": "pass", "builtins": builtins}, missed
        kind = "invalid JSON output" if isinstance(error, ValueError) else "error"
        return {"outcome": "fail", "detail": f"{kind}: {_short(str(error))}", "builtins": builtins}, missed
    if wants_error:
        return {
            "outcome": "fail",
            "detail": f"no error; got {_short(json.dumps(rows))}",
            "builtins": builtins,
        }, missed
    want = spec.get("want_result")
    if want is None:
        return {"outcome": "fail", "detail": "case has no want_result", "builtins": builtins}, missed
    sort_bindings = bool(spec.get("sort_bindings"))
    if result_set(rows, sort_bindings) != result_set(want, sort_bindings):
        detail = f"got {_short(json.dumps(rows))} want {_short(json.dumps(want, default=str))}"
        return {"outcome": "fail", "detail": detail, "builtins": builtins}, missed
    return {"outcome": "pass", "builtins": builtins}, missed


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _child(root: Path, start: int) -> None:
    cases = load_cases(root)
    for index in range(start, len(cases)):
        case = cases[index]
        # Announce the case before running it, so the parent knows which one crashed.
        print(json.dumps({"start": index}), flush=True)
        os.environ.update({str(k): str(v) for k, v in (case.spec.get("env") or {}).items()})
        result = run_case(case)
        print(json.dumps({"index": index, **result}), flush=True)


# ------------------------------------------------------------------------------------------
# Running every case (the parent).


def run_all(root: Path) -> dict[str, dict[str, Any]]:
    """note -> result for every case; crashes and timeouts are failures of that case."""
    cases = load_cases(root)
    results: dict[str, dict[str, Any]] = {}
    start = 0
    while start < len(cases):
        start = _run_from(root, cases, start, results)
    return results


def _run_from(root: Path, cases: list[Case], start: int, results: dict[str, dict[str, Any]]) -> int:
    command = [sys.executable, "-m", "tests.policy.opa_compliance", "child", str(root), str(start)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proxy")])}
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    ) as child:
        assert child.stdout is not None
        # A reader thread, because select() does not see lines already in the pipe's buffer.
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
        reader.start()
        current = None
        hanging = {note for note, entry in known_failures().items() if entry["reason"].startswith("hangs")}
        while True:
            timeout = HANG_TIMEOUT if current is not None and cases[current].note in hanging else CASE_TIMEOUT
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                child.kill()
                return _lost(cases, current, start, results, f"no result within {timeout:g}s")
            if not line:
                child.wait()
                if current is None:
                    return len(cases)
                return _lost(cases, current, start, results, f"rego-cpp crashed (exit {child.returncode})")
            message = json.loads(line)
            if "start" in message:
                current = message["start"]
                continue
            case = cases[message.pop("index")]
            results[case.note] = {**message, "family": case.family}
            current = None


def _pump(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # end of output: the child exited or crashed


def _lost(cases: list[Case], current: int | None, start: int, results: dict[str, Any], why: str) -> int:
    index = start if current is None else current
    case = cases[index]
    results[case.note] = {"outcome": "fail", "detail": why, "builtins": [], "family": case.family}
    return index + 1


# ------------------------------------------------------------------------------------------
# The reviewed list of failures and the report.


def known_failures() -> dict[str, dict[str, str]]:
    """note -> {"blame": builtin or "feature:<name>", "reason": one line}."""
    if not FAILURES_FILE.exists():
        return {}
    return yaml.safe_load(FAILURES_FILE.read_text()) or {}


def builtin_evidence(results: dict[str, dict[str, Any]]) -> dict[str, Counter[str]]:
    """builtin -> Counter(pass=..., fail=...) over the cases that call it (from rego-cpp's plan)."""
    evidence: dict[str, Counter[str]] = defaultdict(Counter)
    for result in results.values():
        for name in result.get("builtins", []):
            evidence[name][result["outcome"]] += 1
    return evidence


def family_rates(results: dict[str, dict[str, Any]]) -> dict[str, Counter[str]]:
    rates: dict[str, Counter[str]] = defaultdict(Counter)
    for result in results.values():
        rates[result["family"]][result["outcome"]] += 1
    return dict(sorted(rates.items()))


def render_report(results: dict[str, dict[str, Any]], seconds: float) -> str:
    import regopy

    from labelgate.policy.capabilities import GUARDED_BUILTINS, INEXACT_BUILTINS, SUPPORTED_BUILTINS

    rates = family_rates(results)
    passed = sum(r["outcome"] == "pass" for r in results.values())
    failures = known_failures()
    blamed = Counter(entry["blame"] for entry in failures.values())
    lines = [
        "# Embedded engine (regopy) against OPA's compliance suite",
        "",
        "Generated by `.venv/bin/python -m tests.policy.opa_compliance report` (do not edit by hand);",
        "`tests/policy/test_opa_compliance.py` runs the same cases in CI and fails when the results",
        "differ from `tests/policy/compliance_failures.yaml`, the reviewed list of cases regopy",
        "cannot pass.",
        "",
        "**Which engine for which policy.** The embedded engine is held to OPA on the default",
        "pack (byte-identical results on the differential corpus) and refuses, when a policy",
        "loads, what it knows it evaluates differently. That refusal is read from the policy's",
        "text, and nine rounds of differential fuzzing of random policies against OPA kept finding",
        "ways past it (each fixed, each kept as a test). For a policy of your own, run",
        "`--engine opa` or `--engine wasm` (OPA's own compiler, in process) where exactness",
        "matters; keep the embedded engine for the shipped pack and policies close to it.",
        "",
        f"- OPA cases: `{CASES_SUBDIR}` of the opa {OPA_VERSION} Go module, {len(results)} cases",
        f"- regopy {regopy.__version__ if hasattr(regopy, '__version__') else '1.5.2'}, "
        f"run the way `proxy/labelgate/policy/embedded.py` runs a policy ({seconds:.0f} s on this machine)",
        f"- passed: {passed} of {len(results)} ({100 * passed / max(1, len(results)):.1f}%)",
        "",
        "A case that wants an error passes when rego-cpp reports any error (the gateway denies on",
        "every evaluation error, so the error's code and text never change a decision).",
        "",
        "The embedded engine loads only policies whose builtins are all in",
        "`labelgate.policy.capabilities.SUPPORTED_BUILTINS`: a builtin is there only when no",
        "listed failure is blamed on it, at least one passing case calls it, and a differential",
        "run against real OPA (`tests/policy/test_builtin_differential.py`) finds no difference,",
        "both on hostile arguments (non-ASCII text, numbers beyond 2^53, odd syntax, empty",
        "separators) and on ordinary ones (nested objects, RFC 3339 times with `Z`, fractions and",
        "offsets, `+` in query strings, a real certificate, CSR, keys and JWTs, floats one ulp",
        "apart); every allowed builtin, operators included, has an ordinary case there",
        f"({len(SUPPORTED_BUILTINS)} builtins today). Anything else needs `--engine opa`.",
        "Builtins are found in the policy's text (`rego_text.py`), every call resolved by its",
        "whole path as Rego resolves it (an import alias only in its own module, a bare name only",
        "against its own package) and rule heads read by Rego's grammar, not by their column.",
        "",
        "## Passing OPA's cases, refused anyway",
        "",
        "These pass every case of OPA's that calls them but differ from OPA on other arguments",
        "(the pass rates below do not show it), so a policy calling one does not load",
        "(`INEXACT_BUILTINS`; the refusal names the builtin and the reason). The differential test",
        "on ordinary arguments moved `crypto.parse_private_keys`, `crypto.x509.parse_certificate_request`,",
        "`crypto.x509.parse_certificates`, `crypto.x509.parse_keypair`, `graph.reachable_paths`,",
        "`io.jwt.encode_sign`, `json.patch`, `object.subset`, `object.union`, `object.union_n`,",
        "`time.parse_ns`, `time.parse_rfc3339_ns` and `urlquery.decode` here; compiled without the",
        "load-time check each still differs from OPA there (a test holds that). The default pack",
        "merges its objects without `object.union` (`rego/labelgate/decision/engines.rego`).",
        "Tokens OPA refuses moved `io.jwt.decode` and every `io.jwt.verify_*` here: a signature",
        "written in standard base64 (`+`, `/`) or ending in a stray `=` verified in rego-cpp (and",
        "the second decoded) where OPA's value is undefined, so a policy checking a caller's token",
        "said yes to one OPA refuses (`tests/policy/test_builtin_arguments.py`).",
        'Template strings (`$"..."`, `internal.template_string`) pass all of OPA\'s',
        "`stringinterpolation` cases, but rego-cpp writes the values in them its own way (`2.0` as",
        "`2`, `1e2` as `100`, strings inside arrays, sets and objects without OPA's escapes, sets in",
        "the order they were built); which values reach a template cannot be told from the text,",
        "so every template string is refused (review: a release tag from the data came out",
        '`"2-stable"`, never the revoked `"2.0-stable"`). The default pack writes none.',
        "",
        "| builtin | what differs in regopy |",
        "|---|---|",
        *[f"| `{name}` | {why.replace('|', '/')} |" for name, why in sorted(INEXACT_BUILTINS.items())],
        "",
        "Guarded instead, because the default pack needs them: "
        + ", ".join(f"`{name}`" for name in sorted(GUARDED_BUILTINS))
        + ".",
        'rego-cpp orders values by their JSON text (`max([9, 10])` is 9, `"a b"` sorts before `"a"`,',
        '`"a"` before `1`), and its json.marshal does not escape `<`, `>`, `&`, U+2028, U+2029',
        "nor sort a set. The engine",
        "compiles every call of them as a call of an exact version (`capabilities.EXACT_REGO`):",
        "rego-cpp's answer where it is provably OPA's, OPA's computed otherwise (numbers compared",
        "with `<`, strings ordered by their `hex.encode`), an evaluation error (a deny) for what",
        "neither covers (mixed types, booleans, arrays or objects in an order, json.marshal of",
        "anything but numbers, arrays of them and null: the text of a string or an object holds",
        "`\"`, which rego-cpp's string builtins count and hash in its escaped form, and a boolean",
        "an `in` made comes out `True`; both found by fuzzing). Each guarded call costs a function",
        "call in rego-cpp.",
        "",
        "What else is refused at load, and what is known but not refused (details in the",
        "docstrings of `proxy/labelgate/policy/capabilities.py`, `rego_text.py` and `rego_order.py`):",
        "",
        "- refused: `strings.count` unless its needle is a non-empty string literal (with an",
        '  empty needle rego-cpp counts bytes + 1 on non-ASCII text, OPA characters + 1: `"日本"`',
        "  is 7 there, 3 in OPA; a literal needle counts alike);",
        "  the `%` operator (`rem`); `with` replacing a guarded builtin; builtins that",
        "  depend on the outside world (`http.send`, `time.now_ns`, ...), whatever their cases",
        "  say; a call with whitespace, a line break or a comment between its name and `(`",
        "  (rego-cpp reads `time.now_ns\\n()` as a call, OPA refuses the module); string",
        "  literals with a `\\u` or `\\/` escape, and raw strings holding a control character",
        "  other than tab, newline or carriage return (rego-cpp keeps them as written, so they",
        "  never equal the input's string); the number literal `-0` (rego-cpp orders it below",
        "  `0`), number literals with a fraction or exponent beyond 16 significant digits",
        "  (rego-cpp rounds them: `0.30000000000000004` is `0.3` there), and whole numbers",
        "  written with a fraction or an exponent (`1.0`, `1e0`: OPA looks an array up by them,",
        "  rego-cpp does not, so `input.fields[1.0]` had no value there); a comprehension in a",
        "  function that indexes by one of the function's arguments (`f(k) := [v | v := m[k]]`:",
        "  rego-cpp iterates every key there; `key := k` first is read right); data from a",
        "  `data.yaml` (PyYAML reads YAML 1.1: `1e3` is a string there, a number in OPA), and",
        "  data holding a float beyond 16 significant digits or a whole number written as a",
        "  float (`1.0`, named by its path; OPA's engine reads the bundle's data as written, so it",
        "  is refused rather than converted); `not` inside the body of an",
        "  `every` (rego-cpp drops the negation: `every x in xs { not x == 1 }` holds when `xs`",
        "  holds 1; `x != 1` is read right); a comprehension inside the body of an `every`",
        "  (`every f in fs { count([l | some l in f.labels; l == 1]) == 0 }` held where OPA's",
        "  does not) or inside a `not` expression (a local of the comprehension named like a key",
        "  it reads, `name := f.name`, is read as that key there); bind the comprehension first;",
        "  a negated expression holding a call, an operand of an operator other than `==`, or an",
        "  index that is not a literal, a variable bound before the `not` or a rule that is always",
        "  defined (OPA evaluates those before the negation and fails the body when one is",
        "  undefined; rego-cpp holds the `not`: `allow if not input.user.risk > 50` allowed a user",
        "  without a risk score); bind the value first (`risk := input.user.risk; not risk > 50`),",
        "  in the same body (a name bound in an earlier `else` body, an `every` body or another",
        "  rule does not count; an expression goes on over line breaks, blank lines and comments",
        "  as Rego reads it); a name bound in one part of an `else` chain and named again in a",
        "  later part, unless that part declares it afresh (rego-cpp keeps its value there, OPA",
        "  starts afresh); `=` with a bare name the body has not bound before (OPA compares a",
        "  rule of that name, rego-cpp binds a new variable: `allow if admin = true` held for",
        "  every caller; bind with `:=`, compare with `==`); `with` on anything but the input",
        "  (OPA's rule index filters on `startswith` and its kin before a `with` replacing them",
        "  applies; a `with` on part of a rule is an error in OPA that rego-cpp ignores);",
        "  `input` or `data` bound as a name (OPA refuses the policy; rego-cpp read the policy's",
        "  own value, so `input := {...}` let every caller in). The last seven were found by",
        "  nine rounds of differential fuzzing of",
        "  random policies against OPA, each",
        "  round attacking the previous round's check (`policy/rego_bodies.py`, whose test",
        "  policies are what fooled earlier versions).",
        "- refused for iteration order (`rego_order.order_findings`, over every module of the",
        "  policy: a set or object known by a bare name in another module of the package, by",
        "  `data.pkg.rule` or through an import alias counts). OPA iterates sets and object keys in",
        "  sorted order and `walk` depth first; rego-cpp iterates sets and objects in the order",
        "  they were built and walks breadth first. The input and the data go into rego-cpp with",
        "  their object keys sorted, so iterating those is OPA's order. Refused: `concat`/`sort` of",
        "  a set, and an array comprehension over a set joined into a string (`concat`,",
        "  `json.marshal`), right there or kept first in a rule or a local, or passed through",
        "  `array.concat` (an array built in a set's order is a kind of its own; `sort` of it is",
        "  fine); an array comprehension over an object the policy builds (a literal, a",
        "  comprehension, a partial object rule, an object-returning builtin such as",
        "  `json.patch`) or calling `walk`, unless it is the argument of `count`, `sort`, `max` or",
        "  `min`; and an array comprehension over a set used any other way than as the argument",
        "  of `count`, `sort`, `max` or `min` or the right side of a membership `x in [...]`",
        "  (`rego_comparisons.set_order_findings`, review of issue 12: `[g | some g in s][0]`",
        "  was another group than OPA's; write `sort([...])[0]`).",
        "- refused per decision (a fail-closed deny, `EMBEDDED_INPUT_UNSUPPORTED`): an input",
        '  holding a string (key or value) with `"`, `\\` or a control character, a float that',
        "  16 significant digits do not hold, or a whole number written as a float (`1.0`,",
        "  `-0.0`). rego-cpp compares and sorts strings by their escaped form, so these order",
        "  differently from OPA (mask order, joined reasons), it keeps numbers to 16 significant",
        "  digits (`0.30000000000000004 > 0.3` is false there), and it looks arrays up by integers",
        '  only (`input.fields[input.i]` with `"i": 1.0` is the second field in OPA and undefined',
        "  there: a deny rule on it let the call through); `--engine opa` decides such inputs.",
        "  The gateway hands subject attributes (a JWT's `exp`) to every engine, OPA included,",
        "  with whole floats made integers (`Subject.to_policy`), so its own inputs hold none.",
        "- not refused (cannot be seen by name): `count` and string builtins on strings of the",
        '  policy or its data holding `"`, `\\` or control characters (rego-cpp counts escaped',
        "  bytes); a set or object the policy builds reaching a comprehension through a function",
        '  argument or a `with` (`with input as {"b": 1, "a": 2}` iterates in text order), where',
        "  the order check follows kinds by name only; the silent wrong result of the",
        "  `indexing` failure below (a partial rule indexing `data` through a local bound to a",
        "  constant). The differential test covers the default pack for these.",
        "- denied where OPA decides (fail closed, not refused at load): `json.marshal` of an",
        "  array the input holds (rego-cpp's json.marshal has no value for the arrays the input",
        "  is built from; the guard turns that into an evaluation error).",
        "- refused (`rego_comparisons.py`, found by the review of issue 12): an ordering comparison",
        "  (`<`, `>`, `<=`, `>=`, or `lt`, `gt`, `lte`, `gte` by name) unless the text shows both",
        "  sides to be numbers: a number literal, `count(...)` or `strings.count(...)`, a sum,",
        "  product or quotient, a difference with a number, a name the same body bound to one of",
        "  these, a term the same body checked before with `is_number(term)` (an expression of its",
        "  own, no `with`), or a complete rule every value of which (each definition, `default` and",
        "  `else` values included) is one of these, named by its bare name in its package where the",
        "  rule binds no local of that name, by its `data.` path or through an import alias (`n :=",
        "  count(input.fields)`, then `n >= 0`). OPA orders any two values (a string above every",
        "  number, strings by code point, arrays element by element); rego-cpp holds a comparison",
        '  across types false and orders strings and arrays by their JSON text (`"a" < "a!"` is false',
        '  there), so `deny if input.subject.attributes.risk_score > 50` let the claim `"90"`',
        "  through. Rewrite: `is_number(x); x > 50` (the wasm engine loads it too), a difference as",
        "  the default pack writes it (`count(s) - x >= 0`), or `--engine wasm` / `--engine opa`.",
        "- not refused (operators read right between numbers; `DOCUMENTED` in the differential",
        "  test holds these to being true): number comparison is exact for integers and for floats",
        "  of at most 16 significant digits (the only ones the engine takes), but an integer beyond",
        "  2^53 is compared with a float as the float nearest to it (`9007199254740993 ==",
        "  9007199254740992.0` holds); `+`, `-`, `*`, `/` on floats and numbers beyond 2^64 round",
        "  differently, the result to 16 significant digits (`1e300 + 1`, `t / 1e9`), and `/` of",
        "  two integers is a float there (`9007199254740992 / 1 == 9007199254740993` holds; found",
        "  by fuzzing); integral floats (`1.0`) come out as `1` from array and object builtins; a",
        "  set of strings one of which is the other followed by a space or `!` is written out in",
        "  the order of their JSON text.",
        "- denied where OPA's result is undefined (fail closed): a builtin called on arguments it",
        '  does not take (`count(5)`, `concat(",", "ab")`) is an evaluation error, so the decision',
        "  is a deny (POLICY_ERROR) where OPA's expression is undefined. rego-cpp's default left",
        "  the assigned variable unbound and went on, so `v := count(x); not v > 3` allowed where",
        "  OPA's body fails; the engine runs rego-cpp with strict builtin errors instead, and the",
        "  default pack and the guards test types first so that no input raises one. The builtin",
        "  differential test accepts such a deny only where OPA with `--strict-builtin-errors`",
        "  fails too.",
        "- not refused, found by that fuzzer: an object comprehension whose keys repeat (from",
        "  the input: `{f.name: f.level | some f in input.fields}` with two fields named alike) is",
        "  an evaluation error in OPA (a deny) but can be undefined in rego-cpp when the body that",
        "  builds it fails for another reason (`by_name := {...}; some l in by_name; input.strict`),",
        "  so `allow if not flagged` allows there. Key such objects by a set's members, or check",
        "  `count` of the keys against the input's.",
        "- compile errors in rego-cpp (the `and`/`or` keywords, `not { ... }`, `.0`) refuse the",
        "  policy at load (POLICY_COMPILE_FAILED): different from OPA, but never a silent decision.",
        "  So does a policy rego-cpp's compiler aborts the process on (`with input as` over a rule",
        "  calling `object.get`, found by fuzzing): each revision is compiled in a child process",
        "  first (`policy/compile_check.py`, ~130 ms), so the gateway, and the revision in force,",
        "  live on.",
        "- a policy OPA's compiler refuses (a variable used before its `some`, an unsafe variable,",
        "  v0 syntax, recursion, `count(5)`, a rule on a path the data holds) loaded in rego-cpp:",
        "  every revision passes `opa check` first whenever an OPA of 1.0 or later is at hand",
        "  (`policy/opa_check.py`, `policy.opa_check`: `auto`, `required`, `off`), refused as",
        "  POLICY_REJECTED_BY_OPA. Without an OPA on the machine the check is skipped (logged once).",
        "",
        "## Pass rate per family",
        "",
        "A family is a folder of OPA's cases: one builtin (or builtin group) or one language feature.",
        "",
        "| family | passed | failed | pass rate |",
        "|---|---:|---:|---:|",
    ]
    for family, counts in rates.items():
        total = counts["pass"] + counts["fail"]
        lines.append(
            f"| {family} | {counts['pass']} | {counts['fail']} | {100 * counts['pass'] / total:.0f}% |"
        )
    lines += ["", "## Failures by what they are blamed on", "", "| blamed on | cases |", "|---|---:|"]
    for name, count in sorted(blamed.items()):
        lines.append(f"| `{name}` | {count} |")
    lines += ["", *_WASM_SECTION, ""]
    return "\n".join(lines)


# The wasm engine is not run against the compliance cases (OPA's own compiler builds its
# module); what it refuses and what it leaves is written here, beside the embedded engine's.
_WASM_SECTION = (
    "## The wasm engine",
    "",
    "`--engine wasm` runs OPA's own Wasm target (`opa build -t wasm`) in process, so its",
    "semantics are OPA's compiler's and OPA's Wasm runtime's; what that runtime does differently",
    "from OPA is refused at load (POLICY_UNSUPPORTED_BY_WASM, naming it and pointing to",
    "`--engine opa`) or listed here (details in the docstring of `proxy/labelgate/policy/wasm_checks.py`):",
    "",
    "- refused: any builtin but the module-native ones the default pack uses and `is_number`",
    "  (`WASM_NATIVE_BUILTINS`, each held to OPA by a differential test), `json.marshal` on what the",
    "  text does not show to be",
    "  an integer (`count(..)` counts only where no rule of the package nor import takes the name",
    "  `count`; the index of `some i, x in C` only where `C` is an array literal or comprehension or",
    "  an `input.` path the input schema declares an array, with no `with input` in the policy:",
    "  over a set the index is the element, over an object a key; a `data.` path counts only where",
    "  the data document itself holds an integer and no package of the policy is at, above or",
    "  below it: a rule there once passed for the data; and every `json.marshal` is refused when a",
    "  `with` replaces anything but the input), and",
    "  `sprintf` beyond `%d`, `%s`, `%v`, `%%` in a literal format (the one host",
    "  builtin), and any `with ... as sprintf` (the replaced function's calls reach the host's",
    '  sprintf with formats no check saw: `concat("%x", xs) with concat as sprintf` loaded and',
    "  failed every decision on its path). The module is checked as well as the text: the",
    "  builtins its `name` section shows it calls and those its `builtins` export asks of the",
    "  host, so a bundle's `policy.wasm` built from",
    "  other modules than the `.rego` beside it cannot use a refused builtin; a module without names",
    "  is refused. The other checks (order, `json.marshal`, `/`) read the `.rego` text only, so a",
    "  signed `policy.wasm` built from other modules than the ones beside it is trusted for those",
    "  (its signer is trusted; `labelgate bundle` ships no `policy.wasm`: the engine compiles the",
    "  modules it checked).",
    "- refused: the `/` operator (the runtime rounds every quotient to 18 significant digits:",
    "  `(1 / 3) * 3 == 1` is false there, true in OPA).",
    "- refused, as for the embedded engine (`rego_order.order_findings`,",
    "  `rego_comparisons.set_order_findings`): a set or an object the policy builds ordered into",
    "  what the decision shows (`concat`/`sort` of a set, an array comprehension over one joined",
    "  into a string), and an array comprehension over a set used other than as the argument of",
    "  `count`, `sort`, `max` or `min` or the right side of `x in [...]`; the runtime iterates",
    "  both in its own hash order (with 40 groups, `[g | some g in s][0]` was another group than",
    "  OPA's, and `[g | some g in s] == sort(input.groups)` false).",
    "- refused: data numbers float64 does not hold exactly (`0.1000000000000000055511151231257827`,",
    "  `1e400`), and `NaN` or `Infinity` in data.",
    "- refused at load: whole numbers written with a fraction or an exponent (`1.0`, `1e0`), as",
    "  literals of the policy or in its data (named by path); denied per decision",
    "  (`EMBEDDED_INPUT_UNSUPPORTED`): an input holding one. OPA looks an array up by them as by",
    '  the integer, the runtime by integers only (`input.fields[input.i]` with `"i": 1.0` was',
    "  undefined there, so a deny rule on it let the call through).",
    "- made strict: a builtin's runtime error (`count` of a number, `+` on a string, `%` by zero,",
    "  `object.get` of a non-object, `concat` of a non-string, `sprintf` of a non-array: each on",
    "  a value of the input) is undefined in OPA's Wasm library, so",
    "  `deny if count(input.x) > 1` let `input.x = 5` through where the opa engine (strict builtin",
    "  errors) denies. The engine patches the module, compiled or a bundle's, before instantiating",
    "  it (`proxy/labelgate/policy/wasm_strict.py`): each allowed builtin's library function that",
    "  can err traps where OPA raises, and the decision is a deny (POLICY_ERROR); `max` and `min` of",
    "  an empty array or set stay undefined, as in OPA, and the host's `sprintf` raises too. Left,",
    "  closed: where OPA stops early (a complete rule at its first success, `every` at its first",
    "  failure, rule indexing skipping a body), the module's plan may go on to a call that errs and",
    "  deny where OPA allows (`tests/policy/test_wasm_strict.py`).",
    "- not refused (the text cannot tell): `+`, `-` and `*` with a non-integer operand compute in",
    "  float64, a whole-number result at or above 2^31 is a float to `sprintf` (`%d` writes",
    "  `%!d(float64=...)`) and one beyond 2^53 is rounded; iterating an object of the input or the",
    "  data into an array (`[k | input.o[k]]`) follows the runtime's hash order, where OPA's is",
    "  sorted. The differential test covers the default pack for these.",
)


def failures_yaml(results: dict[str, dict[str, Any]]) -> str:
    """The failing cases as entries for compliance_failures.yaml (keeps reviewed entries)."""
    known = known_failures()
    entries = {}
    for note, result in sorted(results.items()):
        if result["outcome"] != "fail":
            continue
        entries[note] = known.get(note) or {
            "blame": guess_blame(result),
            "reason": result["detail"],
        }
    return yaml.safe_dump(entries, sort_keys=True, allow_unicode=True, width=200)


def guess_blame(result: dict[str, Any]) -> str:
    """A first guess for review: the family's builtin when the case calls one, else the feature."""
    family = result["family"]
    squashed = {re.sub(r"[^a-z0-9]", "", name): name for name in result.get("builtins", [])}
    for key, name in squashed.items():
        if key == family or family.startswith(key) or key.startswith(family):
            return name
    if len(result.get("builtins", [])) == 1:
        return result["builtins"][0]
    return f"feature:{family}"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "report"
    if command == "child":
        _child(Path(argv[1]), int(argv[2]))
        return 0
    root = cases_dir()
    if root is None:
        print(f"OPA {OPA_VERSION} compliance cases not found: run `make tools` (go install)", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = run_all(root)
    seconds = time.monotonic() - started
    if command == "report":
        REPORT_FILE.write_text(render_report(results, seconds))
        print(f"wrote {REPORT_FILE} ({seconds:.0f} s)")
    elif command == "failures":
        print(failures_yaml(results), end="")
    elif command == "json":
        json.dump(results, sys.stdout, indent=1, sort_keys=True)
    else:
        print(f"unknown command {command!r}: child | report | failures | json", file=sys.stderr)
        return 2
    return 0


def iter_mismatches(results: dict[str, dict[str, Any]], known: dict[str, dict[str, str]]) -> Iterator[str]:
    """Every way the results and the reviewed list disagree, one line each."""
    for note, result in sorted(results.items()):
        if result["outcome"] == "fail" and note not in known:
            yield f"new failure {note!r} ({result['family']}): {result['detail']}"
        elif result["outcome"] == "pass" and note in known:
            yield f"listed case {note!r} now passes: remove it from {FAILURES_FILE.name}"
    for note in sorted(set(known) - set(results)):
        yield f"listed case {note!r} is not in OPA's cases any more: remove it"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():  # keep rego-cpp's stray files out of the repo
        sys.exit(main(sys.argv[1:]))
