"""The text scanner both in-process engines vet a policy with (rego_text.py) must be sound: a
call it does not see, or takes for the policy's own, is a builtin nobody vetted (issue 12).

The reviewed bypasses (an import alias in one module hiding ``net.cidr_contains`` in another,
a body line at column 0 taken for a rule head) are refused by both engines; calls resolve by
their whole path as Rego resolves them; and on real modules the scanner sees every call and
no head that ``opa parse`` does not (the default pack, tricky snippets, and OPA's own cases).
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.capabilities import UNSUPPORTED
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.rego_text import (
    WHOLE_LITERAL,
    blank,
    call_sites,
    definitions,
    outline,
    scan_calls,
    text_findings,
)
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm import WasmEngine
from labelgate.policy.wasm_host import UNSUPPORTED as WASM_UNSUPPORTED
from tests.policy.conftest import REGO, VALID_RESULT, result_rule, write_policy
from tests.support.procs import opa_binary

DENY = {**VALID_RESULT, "allow": False, "reason": "blocked network"}
# An alias named like a builtin namespace, in a module other than the one calling the builtin.
ALIAS_ELSEWHERE = "package labelgate.util\n\nimport data.labelgate.tables as net\n\nlimit := net.limit\n"
# The same call inside a rule body, indented as `opa fmt` writes it and at column 0.
COLUMN_ZERO = (
    'blocked if {{\n\tparts := split(input.peer, ":")\n'
    '{indent}net.cidr_contains("10.0.0.0/8", parts[1])\n}}\n'
)


def _scan(*modules: str) -> list[list[tuple[str, int]]]:
    named = tuple((f"m{i}.rego", text) for i, text in enumerate(modules))
    defined = definitions(named)
    return [scan_calls(text, defined) for _, text in named]


async def _refusals(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """engine name -> the refusal's message; both engines must refuse."""
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())
    messages = {}
    for engine, reason in (
        (EmbeddedEngine(folder, watch_interval=None), UNSUPPORTED),
        (WasmEngine(folder, watch_interval=None), WASM_UNSUPPORTED),
    ):
        with pytest.raises(ConfigError) as refused:
            await engine.start()
        await engine.close()
        assert refused.value.reason == reason and "--engine opa" in refused.value.message
        messages[engine.name] = refused.value.message
    return messages


async def test_an_import_alias_in_another_module_does_not_hide_a_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's t1c: `net` aliased in labelgate.util made `net.cidr_contains` in
    labelgate.decision look like the policy's own; both engines loaded it and allowed what OPA
    denies (rego-cpp's cidr_contains is wrong, the wasm one on ::ffff:10.1.2.3)."""
    body = result_rule(DENY, 'net.cidr_contains("10.0.0.0/8", input.ip)') + "\n"
    folder = write_policy(tmp_path, body, data={"limit": 1})
    (folder / "labelgate" / "util").mkdir()
    (folder / "labelgate" / "util" / "util.rego").write_text(ALIAS_ELSEWHERE)
    for message in (await _refusals(folder, monkeypatch)).values():
        assert "`net.cidr_contains`" in message and "labelgate/decision/policy.rego:4" in message


@pytest.mark.parametrize("indent", ["\t", ""])
async def test_a_builtin_call_in_a_body_is_vetted_at_any_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indent: str
) -> None:
    """The reviewer's t1b: at column 0 the body line was taken for the head of a rule named
    `net`, and every `net.` call was skipped."""
    body = COLUMN_ZERO.format(indent=indent) + "\n" + result_rule(DENY, "blocked")
    folder = write_policy(tmp_path, body)
    for message in (await _refusals(folder, monkeypatch)).values():
        assert "`net.cidr_contains`" in message and "labelgate/decision/policy.rego:5" in message


@pytest.mark.parametrize("call", ['strings.split_n(input.s, ",", 2)', "semver.compare(input.a, input.b)"])
def test_column_zero_calls_are_calls_and_not_heads(call: str) -> None:
    """The reviewer's t1: `name.x(` at column 0 inside a body defined no rule `name`."""
    module = f"package p\n\nok if {{\nx := {call}\n}}\n\nother if {{\n{call}\n}}\n"
    assert outline(module).heads[0].path == "ok" and len(outline(module).heads) == 2
    assert [name for name, _ in _scan(module)[0]] == [call.split("(")[0]] * 2


def test_an_alias_counts_only_in_its_own_module() -> None:
    calling = "package p\n\nx := net.cidr_contains(input.a, input.b)\n"
    aliased = "package p\n\nimport data.q as net\n\ny := net.f(1)\n\nz := net.g(1)\n"
    defining = "package q\n\nf(x) := x\n"
    calls = _scan(calling, aliased, defining)
    assert calls[0] == [("net.cidr_contains", 3)]
    # Through the alias `net.f` is data.q.f, a function of the policy; `net.g` is no function
    # at all: OPA refuses it, and its full path is on no allow-list.
    assert calls[1] == [("data.q.g", 7)]
    assert calls[2] == []


def test_an_import_counts_however_it_is_laid_out() -> None:
    """OPA parses `package p import data.q as json` on one line: `json.marshal` is then q's
    function, which the engine must neither vet as the builtin nor swap for its exact version."""
    from labelgate.policy.capabilities import exact_modules

    calling = "package p import data.q as json\n\ny := json.marshal(1)\n"
    defining = "package q\n\nmarshal(x) := x\n"
    assert _scan(calling, defining)[0] == []
    assert dict(exact_modules((("p.rego", calling), ("q.rego", defining))))["p.rego"] == calling


def test_a_bare_name_resolves_only_against_its_own_package() -> None:
    other = "package other\n\nupper(x) := x\n\nnet.cidr_contains(a, b) := true\n"
    own = other.replace("other", "p") + "\ny := [upper(1), net.cidr_contains(1, 2)]\n"
    caller = (
        "package q\n\ny := [upper(1), net.cidr_contains(1, 2), data.other.upper(1), data.other.lower(1)]\n"
    )
    calls = _scan(other, own, caller)
    # A function of the package shadows the builtin in OPA and in rego-cpp alike.
    assert calls[1] == []
    assert calls[2] == [("upper", 3), ("net.cidr_contains", 3), ("data.other.lower", 3)]


def test_calls_the_scanner_cannot_resolve_are_vetted_as_builtins() -> None:
    module = (
        "package p\n\nf(x) := x\n\n"
        'a := data.p["f"](1)\n\n'  # OPA calls data.p.f: the scanner reads no string keys
        "b := f(1).g(2)\n\n"
        'c := upper ("a")\n\n'  # not a call in OPA, but one in rego-cpp
        'd := $"{concat(",", [http.send({})])}"\n\n'  # a template's expression is code
        "e := 5 % 2\n"
    )
    names = [name for name, _ in _scan(module)[0]]
    assert names == ["data.p[...]", "(...).g", "upper", "concat", "http.send", "internal.template_string"]
    assert "builtin `rem` (the `%` operator; wrong on large numbers)" in [
        f.what for f in text_findings("m", module)
    ]


@pytest.mark.parametrize(
    ("module", "heads"),
    [
        # A line after an operator, an `if` or a comma continues the rule before it.
        ("package p\n\ny if input.x ==\nf(a) = 1\n", ["y"]),
        ("package p\n\ny if\nf(a) = 1\n", ["y"]),
        ("package p\n\ny := 1\n\t+ f(a)\n", ["y"]),
        # After a complete rule, `f(a) = 1` is a function (OPA: data.p.f(1) == 1).
        ("package p\n\ny if input.x\nf(a) = 1\n", ["y", "f"]),
        (
            'package p\n\ndefault f(_) := false\n\np.q[r] := 1 if r := "a"\n\ns contains 1\n',
            ["f", "p.q", "s"],
        ),
        ('package p\n\nx := {\n"a": 1,\n}\n\nnot_a_head\n', ["x"]),
    ],
)
def test_heads_are_read_by_the_grammar_not_the_column(module: str, heads: list[str]) -> None:
    assert [head.path for head in outline(module).heads] == heads


def test_with_around_a_guarded_builtin_and_reserved_names_are_refused() -> None:
    module = (
        "package p\n\n__labelgate_sort(x) := x\n\n"
        "a := count(input.x) with count as sort\n\nb := sort(input.x) with sort as __labelgate_sort\n"
    )
    found = [f.what for f in text_findings("m", module)]
    assert "a rule named `__labelgate_sort` (`__labelgate` is reserved)" in found
    assert "`with` replacing or replaced by `sort`" in found


def test_strings_comments_and_templates_are_blanked_at_the_same_offsets() -> None:
    text = 'x := "a(b" # c(\ny := `r\n(s`\nz := $"t{f(1)}u{`{`}v"\n'
    code = blank(text)
    assert len(code) == len(text) and code.count("\n") == text.count("\n")
    assert "a(b" not in code and "c(" not in code and "(s" not in code
    assert [text[c.start : c.end] for c in call_sites(text, definitions((("m", text),)))] == ["f"]


# -- the scanner against OPA's own parser -------------------------------------------------

TRICKY = [
    "package p\n\nimport data.q as json\n\nf(x) := json.marshal(x)\n\ng(x) := x if {\nupper(x)\n}\n",
    'package p\n\ny := $"a{concat(",", ["x", $"{lower("B")}"])}b"\n\nz := `raw(` # upper(\n',
    "package p\n\ny if input.x ==\nf(a) = 1\n\nq if input.x\nh(a) = 1\n",
    "package p\n\ny := 1\n\t+ count([1])\n\nz := [x | some x in numbers.range(1, 3); x > 1]\n",
    'package p\n\nf(x) := 1\n\ny := data.p["f"](1)\n\nnet.cidr_contains(a, b) := true\n',
    'package p\n\ndefault allow := false\n\nallow if {\n\tsome x in input.xs\n\tstartswith(x, "a")\n}'
    " else := true\n",
]


def _opa_calls_and_heads(path: Path) -> tuple[set[tuple[int, str]], set[tuple[str, bool]]] | None:
    """(line, reference text) of every written call and (path, is a function) of every head,
    from ``opa parse``; None when OPA cannot parse the module."""
    done = subprocess.run(
        [opa_binary(), "parse", "--format", "json", "--json-include", "locations", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    ast = json.loads(done.stdout)
    calls: set[tuple[int, str]] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            terms = node.get("terms") if "index" in node else None
            operator = None
            if node.get("type") == "call":
                operator = node["value"][0]
            elif isinstance(terms, list) and terms:
                operator = terms[0]
            if isinstance(operator, dict) and "location" in operator:
                written = base64.b64decode(operator["location"]["text"]).decode()
                if (written[:1].isalpha() or written[:1] == "_") and written not in ("in", "and", "or"):
                    calls.add((operator["location"]["row"], written))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    heads = set()
    for rule in ast.get("rules") or []:
        visit(rule)
        ref = rule["head"]["ref"]
        segments = [ref[0]["value"]] + [term["value"] for term in ref[1:] if term["type"] == "string"]
        static = len(segments) == len(ref)
        path = (
            ".".join(segments)
            if static
            else ".".join(
                segments[: next(i for i, term in enumerate(ref) if term["type"] != "string" and i > 0)]
            )
        )
        heads.add((path, "args" in rule["head"]))
    return calls, heads


def _compliance_modules(limit: int) -> list[str]:
    from tests.policy.opa_compliance import cases_dir, load_cases

    root = cases_dir()
    if root is None:
        return []
    modules = [module for case in load_cases(root) for module in case.spec.get("modules") or []]
    return random.Random(20_260_706).sample(modules, min(limit, len(modules)))


def test_the_scanner_sees_every_call_and_no_head_that_opa_parse_does_not(tmp_path: Path) -> None:
    """Soundness, measured: every call OPA's parser finds is a call site of the scanner (same
    line, same reference), and every head the scanner reads is a head of OPA's AST."""
    modules = [text for _, text in PolicySource.from_dir(REGO).modules] + TRICKY + _compliance_modules(150)
    checked = 0
    for index, text in enumerate(modules):
        path = tmp_path / f"m{index}.rego"
        path.write_text(text)
        parsed = _opa_calls_and_heads(path)
        if parsed is None:
            continue
        opa_calls, opa_heads = parsed
        sites = {
            (c.line, "".join(text[c.start : c.end].split()))
            for c in call_sites(text, definitions((("m", text),)))
        }
        missed = {(line, ref) for line, ref in opa_calls if (line, ref.replace(" ", "")) not in sites}
        assert not missed, f"calls the scanner missed in module {index}:\n{text}\n{missed}"
        # A function's path is exact; `r["a"] := 1` is the rule r.a to OPA and `r` to the scanner.
        invented = {
            (h.path, h.function)
            for h in outline(text).heads
            if not any(
                function == h.function
                and (path == h.path or (not function and path.startswith(f"{h.path}.")))
                for path, function in opa_heads
            )
        }
        assert not invented, f"heads OPA does not see in module {index}:\n{text}\n{invented}"
        checked += 1
    assert checked > 100


# -- a call written apart from its "(" (review rev-s11 F6) -------------------------------------


@pytest.mark.parametrize(
    "gap",
    ["\n\t", " # the clock\n\t", "\r\n\t", " ", "\n\n"],
    ids=["newline", "comment", "crlf", "space", "blank-line"],
)
def test_a_call_apart_from_its_paren_is_seen_and_refused(gap: str) -> None:
    """rego-cpp reads `time.now_ns\\n()` as a call (and ran it); OPA refuses the module. The
    scanner looked back over spaces and tabs only, so the call was neither vetted nor refused."""
    module = f"package t\n\nx := y if {{\n\ty := time.now_ns{gap}()\n\tz := count{gap}([1])\n}}\n"
    assert [name for name, _ in _scan(module)[0]] == ["time.now_ns", "count"]
    found = [f.what for f in text_findings("t.rego", module)]
    assert "builtin `time.now_ns`" in found
    assert "whitespace between `count` and its `(` (OPA does not read a call there)" in found


async def test_the_reviewers_newline_call_does_not_load(tmp_path: Path) -> None:
    body = "now := y if {\n\ty := time.now_ns # clock\n\t()\n}\n\n" + result_rule(VALID_RESULT)
    engine = EmbeddedEngine(write_policy(tmp_path, body), watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == UNSUPPORTED and "`time.now_ns`" in refused.value.message


def test_set_is_the_empty_set_not_a_call() -> None:
    module = 'package t\n\nx := union({{"a"}, set()})\n'
    assert _scan(module)[0] == [("union", 3)] and text_findings("t.rego", module) == []


# -- numbers and function arguments rego-cpp reads differently (review rev-s11 F8) -------------


@pytest.mark.parametrize(
    ("expression", "found"),
    [
        ("-0 < 0", "the literal `-0` (rego-cpp orders it below 0)"),
        ("[1, -0]", "the literal `-0` (rego-cpp orders it below 0)"),
        (
            "input.f > 0.30000000000000004",
            "the number `0.30000000000000004` (rego-cpp keeps 16 significant digits)",
        ),
        (
            "input.f == 1.2345678901234567e5",
            "the number `1.2345678901234567e5` (rego-cpp keeps 16 significant digits)",
        ),
        # Whole numbers written as floats: OPA looks arrays up by them (whole_numbers.py).
        ("-0.0 < 0", WHOLE_LITERAL),
        ("input.a[1.0]", WHOLE_LITERAL),
        ("input.a[1e0]", WHOLE_LITERAL),
        ("1.00000000000000001", WHOLE_LITERAL),
        ('$"{2.0}"', WHOLE_LITERAL),
    ],
)
def test_number_literals_rego_cpp_reads_as_another_number_are_refused(expression: str, found: str) -> None:
    assert found in [f.what for f in text_findings("t.rego", f"package t\n\nx := {expression}\n")]


@pytest.mark.parametrize(
    "expression",
    [
        "1-0",
        "input.n - 0",
        "-0.5",
        "0.3000000000000001",
        "1e16",  # whole, but past 2^53: no array is that long
        '"1.0"',
        "12345678901234567890",
        '"-0"',
        "1.50000000000000000",
    ],
)
def test_other_number_literals_are_not_findings(expression: str) -> None:
    assert text_findings("t.rego", f"package t\n\nx := {expression}\n") == []
