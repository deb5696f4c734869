"""The wasm engine: OPA's Wasm target in process. Its differential test against OPA is in
test_differential.py; here: loading, refusals, the host's sprintf against OPA's, failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from labelgate.bundle.build import read_tarball, write_tarball
from labelgate.errors import ConfigError
from labelgate.policy.bundle_client import BundleSource, read_bundle
from labelgate.policy.contract import POLICY_ERROR, validate_result
from labelgate.policy.embedded import UnsupportedInput
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm import WasmEngine, _WasmCompiled, compile_wasm, opa_binary
from labelgate.policy.wasm_host import UNSUPPORTED, WasmInstance, WasmPolicy
from labelgate.policy.wasm_sprintf import UnsupportedFormat, check_format, parse_arguments, sprintf
from tests.policy.conftest import (
    REGO,
    VALID_RESULT,
    refused_start,
    result_rule,
    write_joined_denials,
    write_policy,
)
from tests.support.procs import opa_binary as pinned_opa

ENTRYPOINT = "labelgate/decision/result"


@pytest.fixture(autouse=True)
def _opa_on_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_OPA", pinned_opa())


def _analyst_input() -> dict[str, Any]:
    from bench.policy_engines import sample_input

    return sample_input()


async def test_the_default_pack_decides_and_validates() -> None:
    engine = WasmEngine(REGO, watch_interval=None)
    await engine.start()
    try:
        decision = await engine.decide(_analyst_input())
        for _ in range(20):  # enough to measure an average and move inline
            again = await engine.decide(_analyst_input())
        compiled = engine._compiled
    finally:
        await engine.close()
    assert decision.engine == "wasm" and not decision.failed_closed
    assert decision.allow and decision.reason == "allowed; 4 field(s) masked"
    # The default pack writes numbers with json.marshal, which the module implements itself:
    # no call back into the host on the hot path (sprintf cost ~10 µs a decision there).
    assert isinstance(compiled, _WasmCompiled) and compiled.policy.builtins == {}
    # The contract's own validation gives the same decision from the same result object.
    assert validate_result(decision.to_result(), engine="wasm", revision=decision.revision) == decision
    assert again == decision


async def test_a_result_off_contract_is_a_deny(tmp_path: Path) -> None:
    write_policy(tmp_path, result_rule({**VALID_RESULT, "allow": "yes"}))
    engine = WasmEngine(tmp_path, watch_interval=None)
    await engine.start()
    try:
        decision = await engine.decide({})
    finally:
        await engine.close()
    assert decision.fail_reason == "POLICY_RESULT_INVALID" and not decision.allow


async def test_an_evaluation_error_fails_closed_and_the_next_decision_works(tmp_path: Path) -> None:
    ok, other = json.dumps(VALID_RESULT), json.dumps({**VALID_RESULT, "reason": "other"})
    write_policy(tmp_path, f"result := {ok} if input.a\n\nresult := {other} if input.b\n")
    engine = WasmEngine(tmp_path, watch_interval=None)
    await engine.start()
    try:
        conflict = await engine.decide({"a": 1, "b": 2})  # OPA: eval_conflict_error; here opa_abort
        fine = await engine.decide({"a": 1})
    finally:
        await engine.close()
    assert conflict.fail_reason == POLICY_ERROR
    assert fine.allow and not fine.failed_closed


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('result := {"allow": true, "x": http.send({"method": "get", "url": input.u})}\n', "`http.send`"),
        ('result := {"t": time.now_ns()}\n', "`time.now_ns`"),
        ('result := {"y": yaml.marshal(input), "n": units.parse("1k")}\n', "`units.parse`, `yaml.marshal`"),
        ('result := {"r": sprintf("%x", [input.n])}\n', "'%x'"),
        ('result := {"r": sprintf("%5d", [input.n])}\n', "'%5d'"),
        ('result := {"r": sprintf(input.f, [1])}\n', "not a string literal"),
    ],
)
async def test_policies_needing_what_the_host_does_not_implement_are_refused(
    tmp_path: Path, body: str, named: str
) -> None:
    write_policy(tmp_path, body)
    raised = await refused_start(WasmEngine(tmp_path, watch_interval=None))
    assert raised.reason == UNSUPPORTED
    assert named in raised.message and "--engine opa" in raised.message


def test_a_missing_opa_binary_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABELGATE_OPA")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError) as raised:
        WasmEngine(REGO, watch_interval=None)
    assert raised.value.reason == "OPA_BINARY_MISSING"
    assert "$LABELGATE_OPA" in raised.value.message and "PATH" in raised.value.message
    assert "make tools" in raised.value.message
    monkeypatch.setenv("LABELGATE_OPA", "/nonexistent/opa")
    with pytest.raises(ConfigError, match="not an executable"):
        opa_binary()


def test_a_compile_error_names_the_file(tmp_path: Path) -> None:
    write_policy(tmp_path, "result := {\n")
    with pytest.raises(ConfigError) as raised:
        compile_wasm(PolicySource.from_dir(tmp_path), ENTRYPOINT)
    assert raised.value.reason == "POLICY_COMPILE_FAILED"
    assert "labelgate/decision/policy.rego" in raised.value.message


def _opa_wasm_bundle(policy_dir: Path, out: Path) -> bytes:
    tarball = out / "bundle.tar.gz"
    subprocess.run(
        [
            pinned_opa(),
            "build",
            "-t",
            "wasm",
            "-e",
            ENTRYPOINT,
            "--ignore",
            "*_test.rego",
            "-o",
            str(tarball),
            str(policy_dir),
        ],
        check=True,
        capture_output=True,
    )
    return tarball.read_bytes()


async def test_a_bundle_holding_policy_wasm_is_used_without_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = _opa_wasm_bundle(REGO, tmp_path)
    opa = pinned_opa()
    source = read_bundle(tarball, verify=None, origin="test-bundle")
    assert isinstance(source, BundleSource) and source.wasm == read_tarball(tarball)["policy.wasm"]
    assert source.data["labelgate"]["catalog"]  # the catalog comes from the bundle's data
    monkeypatch.setenv("LABELGATE_OPA", "/nonexistent/opa")  # compiling would fail now
    compiled = _WasmCompiled.build(source, ENTRYPOINT, wasm=source.wasm)
    from_bundle = validate_result(compiled.evaluate(_analyst_input()))
    monkeypatch.setenv("LABELGATE_OPA", opa)
    from_folder = validate_result(
        _WasmCompiled.build(PolicySource.from_dir(REGO), ENTRYPOINT).evaluate(_analyst_input())
    )
    assert from_bundle == from_folder


def test_a_bundle_without_policy_wasm_reads_as_before(tmp_path: Path) -> None:
    write_policy(tmp_path / "src", result_rule(VALID_RESULT))
    tar = tmp_path / "plain.tar.gz"
    subprocess.run(
        [pinned_opa(), "build", "-o", str(tar), str(tmp_path / "src")], check=True, capture_output=True
    )
    source = read_bundle(tar.read_bytes(), verify=None, origin="plain")
    assert type(source) is PolicySource


# -- sprintf: the host's against OPA's own ----------------------------------------------------

FORMATS = ["%d", "%s", "%v", "%%", "a%db", "%d %d", "%d%", "x %v y %s", "", "%d field(s) masked"]
VALUES = [
    "0",
    "1",
    "-5",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1000000000000000000000000000000",
    "1.5",
    "-0.25",
    "1e6",
    "1E2",
    "1.0",
    "-0",
    "-0.0",
    "123456.0",
    "1234567.0",
    "1e-5",
    "0.0001",
    "1e21",
    "1e-7",
    "0.30000000000000004",
    "1e300",
    "1e400",
    "1e-400",
    "12345678901234567890.5",
    "2.5e-10",
    '"abc"',
    '""',
    '"\\u00e9 \\" \\\\ \\n"',
    "true",
    "false",
    "null",
]


def _cases() -> list[tuple[str, str]]:
    cases = [(f, f"[{v}]") for f in FORMATS for v in VALUES]
    return cases + [(f, "[]") for f in FORMATS] + [(f, '[1,"x",2.5]') for f in FORMATS]


def test_check_format_accepts_only_what_is_rendered_exactly() -> None:
    assert all(check_format(f) is None for f in FORMATS)
    for bad in ("%x", "%5d", "%-d", "%.2v", "%[1]d", "%q", "%t", "%f", "%+d", "% d"):
        assert check_format(f"a {bad} b") == bad


def test_sprintf_matches_opa_on_numbers_strings_and_mistakes(tmp_path: Path) -> None:
    """Go's fmt through OPA, for the verbs the host implements, with the numbers' own text."""
    cases = _cases()
    doc = "[" + ",".join(f"[{json.dumps(f)},{args}]" for f, args in cases) + "]"
    (tmp_path / "cases.json").write_text(doc)
    done = subprocess.run(
        [
            pinned_opa(),
            "eval",
            "-f",
            "json",
            "-i",
            str(tmp_path / "cases.json"),
            "[sprintf(c[0], c[1]) | some c in input]",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    expected = json.loads(done.stdout)["result"][0]["expressions"][0]["value"]
    mine = [sprintf(f, parse_arguments(args)) for f, args in cases]
    wrong = [(c, e, m) for c, e, m in zip(cases, expected, mine, strict=True) if e != m]
    assert not wrong, wrong[:10]


def test_sprintf_refuses_what_it_cannot_render() -> None:
    with pytest.raises(UnsupportedFormat):
        sprintf("%v", parse_arguments("[[1, 2]]"))
    with pytest.raises(UnsupportedFormat):
        sprintf("%v", parse_arguments("set()"))
    with pytest.raises(UnsupportedFormat):
        sprintf("%x", [])
    with pytest.raises(TypeError):
        sprintf(1, [])


def test_sprintf_in_the_module_matches_opa_for_input_numbers(tmp_path: Path) -> None:
    """Numbers travel input -> Wasm value -> value dump -> host: their text must survive."""
    formats = ["%d", "%v", "%s", "n=%d, s=%s"]
    rules = "\n".join(f"out[{i}] := sprintf({json.dumps(f)}, input.args)" for i, f in enumerate(formats))
    policy = tmp_path / "p"
    (policy / "t").mkdir(parents=True)
    (policy / "t" / "t.rego").write_text(f"package t\n\n{rules}\n")
    compiled = _WasmCompiled.build(PolicySource.from_dir(policy), "t/out")
    for raw in [*VALUES, '"x", 3', "2, true", "1.5, null"]:
        text = f'{{"args": [{raw}]}}'
        (tmp_path / "input.json").write_text(text)
        done = subprocess.run(
            [
                pinned_opa(),
                "eval",
                "-f",
                "json",
                "-d",
                str(policy),
                "-i",
                str(tmp_path / "input.json"),
                "data.t.out",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        expected = json.loads(done.stdout)["result"][0]["expressions"][0]["value"]
        # The same input text OPA read, so the numbers' text is the same on both sides.
        results = json.loads(compiled._instance().evaluate(text.encode()))
        got = results[0]["result"] if results else None
        assert got == expected, (raw, got, expected)


def test_the_input_encoding_is_the_plain_json_and_never_a_remembered_other() -> None:
    """``fields`` JSON is remembered by its marshal bytes: the text parses to exactly what the
    plain encoder writes, and a changed field (value or type) is encoded afresh."""
    from labelgate.policy.wasm import _ENCODER

    compiled = _WasmCompiled.__new__(_WasmCompiled)
    compiled._fields_json = {}
    base = _analyst_input()
    variants: list[Any] = [base, {}, {"fields": []}, {"fields": "x"}, {"a": 1, "fields": [{"p": None}]}]
    for value in (1, True, 1.5, "1", [1], None, "é\u2028"):
        variants.append({**base, "fields": [{**base["fields"][0], "labels": [value]}]})
    texts = set()
    for value in variants + variants:  # the second pass is served from the memo
        text = compiled.encode_input(value)
        expected = _ENCODER.encode(value).encode()
        # Canonical text, not parsed values: 1 == True == 1.0 in Python.
        canonical = json.dumps(json.loads(expected), sort_keys=True)
        assert json.dumps(json.loads(text), sort_keys=True) == canonical
        texts.add(text)
    assert len(texts) == len(variants)  # 1 and true are different inputs
    assert len(compiled._fields_json) == len(variants) - 2  # {} and "x" have no list to remember
    # A whole float (1.0 == 1 in Python) is refused, never remembered (whole_numbers.py).
    whole = {**base, "fields": [{**base["fields"][0], "labels": [1.0]}]}
    for _ in range(2):
        with pytest.raises(UnsupportedInput):
            compiled.encode_input(whole)
    assert len(compiled._fields_json) == len(variants) - 2
    with pytest.raises(ValueError):
        compiled.encode_input({"fields": [float("nan")]})  # as the plain encoder: fails closed


# -- module-native builtins: only the reviewed ones -------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('result := {"r": to_number(input.rows)}\n', "`to_number`"),
        ('result := {"r": format_int(input.n, 16)}\n', "`format_int`"),
        ('result := {"r": json.marshal_with_options(input, {})}\n', "`json.marshal_with_options`"),
        ('result := {"r": upper(input.s), "t": to_number(input.t)}\n', "`to_number`, `upper`"),
        ('result := {"r": json.marshal(input.params)}\n', "`json.marshal` of a value not known"),
        ('result := {"r": json.marshal({"a": input.a})}\n', "`json.marshal` of a value not known"),
        (
            'result := {"r": json.marshal(data.labelgate.tables.name)}\n',
            "`json.marshal` of a value not known",
        ),
    ],
)
async def test_module_native_builtins_outside_the_reviewed_list_are_refused(
    tmp_path: Path, body: str, named: str
) -> None:
    """The module's own json.marshal writes keys in hash order, its to_number("1e400") is a number:
    a policy may call only the builtins held to OPA by the differential test."""
    write_policy(tmp_path, body, data={"name": "<a>", "min_approvals": 2})
    raised = await refused_start(WasmEngine(tmp_path, watch_interval=None))
    assert raised.reason == UNSUPPORTED
    assert named in raised.message and "--engine opa" in raised.message
    assert "labelgate/decision/policy.rego:3" in raised.message


async def test_json_marshal_of_what_the_text_shows_is_an_integer_loads(tmp_path: Path) -> None:
    body = (
        "n := json.marshal(count(input.xs))\n\n"
        "i contains json.marshal(k) if {\n\tsome k, _ in input.fields\n}\n\n"
        "m := json.marshal(data.labelgate.tables.rule.min_approvals)\n\n" + result_rule(VALID_RESULT)
    )
    write_policy(tmp_path, body, data={"rule": {"min_approvals": 2}, "other": [{"min_approvals": 1}]})
    engine = WasmEngine(tmp_path, watch_interval=None)
    await engine.start()
    await engine.close()


def test_the_default_pack_needs_nothing_outside_the_reviewed_list() -> None:
    from labelgate.policy.wasm_checks import native_findings

    assert native_findings(PolicySource.from_dir(REGO)) == []


async def test_data_from_yaml_is_refused(tmp_path: Path) -> None:
    write_policy(tmp_path, result_rule(VALID_RESULT))
    (tmp_path / "labelgate" / "tables").mkdir(parents=True)
    (tmp_path / "labelgate" / "tables" / "data.yml").write_text("max_rows: 1e3\n")
    raised = await refused_start(WasmEngine(tmp_path, watch_interval=None))
    assert raised.reason == "BUNDLE_DATA_UNSUPPORTED"
    assert "labelgate/tables/data.yml" in raised.message and "--engine opa" in raised.message


async def test_a_result_that_allows_and_holds_is_valid_in_replay_only(tmp_path: Path) -> None:
    approval = {
        "approver_groups": ["security"],
        "min_approvals": 2,
        "grant_ttl_seconds": 900,
        "reason": "held",
    }
    write_policy(tmp_path, result_rule({**VALID_RESULT, "require_approval": approval}))
    engine = WasmEngine(tmp_path, watch_interval=None)
    await engine.start()
    try:
        # replay first: the remembered decision must not let the other phases through
        replay = await engine.decide({"phase": "replay"})
        request = await engine.decide({"phase": "request"})
        response = await engine.decide({"phase": "response"})
        again = await engine.decide({"phase": "replay"})
    finally:
        await engine.close()
    assert replay == again and replay.allow and replay.require_approval is not None
    for decision in (request, response):
        assert (decision.allow, decision.fail_reason) == (False, "POLICY_RESULT_INVALID")
        assert "contradictory" in decision.reason


@pytest.mark.parametrize(
    "rules",
    [
        # An alias of the input, a name declared but not iterated, a name iterated in another rule.
        "f := x if {\n\ti := input.request\n\tx := json.marshal(i.n)\n}\n",
        "f := x if {\n\tsome s, t\n\ts = input.a\n\tt = 1\n\tx := json.marshal(s)\n}\n",
        "g if {\n\tsome k, _ in [1]\n}\n\nf := x if {\n\tk := input.a\n\tx := json.marshal(k)\n}\n",
        "_r := input.r\n\nf := json.marshal(_r.n)\n",
        # A body line at column 0 is no definition of _r; nor is a rule that reads the input
        # through another rule.
        "g if {\n_r := data.r\n}\n\n_r := input.r\n\nf := json.marshal(_r.n)\n",
        "_s := input.r\n\n_r := _s\n\nf := json.marshal(_r.n)\n",
    ],
)
def test_json_marshal_of_what_may_be_a_string_or_an_object_is_refused(rules: str) -> None:
    from labelgate.policy.wasm_marshal import marshal_findings

    module = f"package labelgate.probe\n\n{rules}"
    assert marshal_findings((("probe.rego", module),), {"r": {"n": 1}}) != []


def test_json_marshal_of_data_and_of_a_rule_reading_data_is_accepted() -> None:
    from labelgate.policy.wasm_marshal import marshal_findings

    module = (
        "package labelgate.probe\n\n_r := data.r\n\nf := json.marshal(_r.n)\n\ng := json.marshal(data.r.n)\n"
    )
    assert marshal_findings((("probe.rego", module),), {"r": {"n": 1}}) == []


# Review: a rule of the policy reached by a ``data.`` path whose last key is an integer elsewhere
# in the data. The module writes the object's keys in hash order, OPA sorts them, so the marshalled
# pair never matched the blocked one: the wasm engine allowed where OPA denies.
_RULE_UNDER_DATA = """\
pairs := {"max_rows": {"label": l, "path": p} |
	some p in input.request.requested_outputs
	some l in input.labels
}

denied if json.marshal(data.labelgate.decision.pairs.max_rows) in data.labelgate.tables.blocked

"""


async def test_json_marshal_of_a_rule_under_a_data_path_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.policy.conftest import opa_value

    body = _RULE_UNDER_DATA + result_rule(VALID_RESULT, "not denied")
    blocked = json.dumps({"label": "restricted", "path": "outputs.ssn"}, separators=(",", ":"))
    policy = write_policy(tmp_path / "policy", body, data={"max_rows": 100, "blocked": [blocked]})
    document = '{"request": {"requested_outputs": ["outputs.ssn"]}, "labels": ["restricted"]}'
    assert await opa_value(policy, document) is None  # OPA: denied, so no result
    with monkeypatch.context() as unchecked:  # the refusal is earned: unchecked, the module allows
        unchecked.setattr("labelgate.policy.wasm_checks.marshal_findings", lambda modules, data: [])
        engine = WasmEngine(policy, watch_interval=None)
        await engine.start()
        try:
            assert (await engine.decide(json.loads(document))).allow
        finally:
            await engine.close()
    raised = await refused_start(WasmEngine(policy, watch_interval=None))
    assert raised.reason == UNSUPPORTED and "--engine opa" in raised.message
    assert "`json.marshal` of a value not known to be an integer at labelgate/decision/policy.rego:8" in (
        raised.message
    )


@pytest.mark.parametrize(
    "rules",
    [
        # A rule of the policy at a data path (the key is an integer elsewhere in the data).
        'pairs := {"n": {"b": input.b, "a": 1}}\n\nf := json.marshal(data.labelgate.probe.pairs.n)\n',
        # ... reached through a rule valued from "data", or through an import.
        'pairs := {"n": {"b": input.b}}\n\n_r := data.labelgate.probe.pairs\n\nf := json.marshal(_r.n)\n',
        'pairs := {"k": {"n": {"b": input.b}}}\n\n_r := data.labelgate.probe.pairs["k"]\n\n'
        "f := json.marshal(_r.n)\n",
        'import data.labelgate.probe as p\n\npairs := {"n": {"b": 1}}\n\n_r := p.pairs\n\n'
        "f := json.marshal(_r.n)\n",
        # A data path the data does not hold as written, or holds as something else.
        "f := json.marshal(data.q.n)\n",
        "f := json.marshal(data.r)\n",
        "f := json.marshal(data.r.s)\n",
        # A local or an argument named like the rule valued from data.
        "_r := data.r\n\nf := x if {\n\t_r := input.r\n\tx := json.marshal(_r.n)\n}\n",
        "_r := data.r\n\nf := x if {\n\tsome _r in input.rs\n\tx := json.marshal(_r.n)\n}\n",
        "_r := data.r\n\ng(_r) := json.marshal(_r.n)\n",
        "_r := data.r\n\nf := [json.marshal(_r.n) | some _r in input.rs]\n",
        # An index name bound afresh, in a comprehension or by assignment.
        "f := [json.marshal(i) | some i in input.strs] if {\n\tsome i, _ in input.xs\n}\n",
        "f := x if {\n\tsome i, _ in input.xs\n\tx := [json.marshal(i) | i := input.o]\n}\n",
        # A rule of that name, where the index is declared in a comprehension only.
        "i := input.o\n\nf := json.marshal(i) if {\n\tc := [x | some i, x in input.xs]\n}\n",
        # A `with` can put anything where the data was.
        "m := json.marshal(data.r.n)\n\nf := x if {\n\tx := m with data.r.n as input.o\n}\n",
        "m := json.marshal(count(input.xs))\n\nf := x if {\n\tx := m with count as input.o\n}\n",
        # Review: the key of a set is the element (an object), of an object a string (`<` differs).
        "f := x if {\n\tsome i, _ in {x | some x in input.rows}\n\tx := json.marshal(i)\n}\n",
        'f := x if {\n\tsome i, _ in {"<": 1}\n\tx := json.marshal(i)\n}\n',
        "f := x if {\n\tsome i, _ in input.context\n\tx := json.marshal(i)\n}\n",
        "f := x if {\n\tsome i, _ in input.xs\n\tx := json.marshal(i)\n}\n",
        "f := x if {\n\tsome i, _ in input.fields[0].labels\n\tx := json.marshal(i)\n}\n",
        "f := x if {\n\tsome i, _ in data.r\n\tx := json.marshal(i)\n}\n",
        'f := x if {\n\tsome i, _ in [{"<": 1}][0]\n\tx := json.marshal(i)\n}\n',
        "o := {x | some x in input.labels}\n\nf := x if {\n\tsome i, _ in o\n\tx := json.marshal(i)\n}\n",
        # ... and an input declared an array, where a `with` may put anything.
        "f := x if {\n\tsome i, _ in input.fields\n\tx := json.marshal(i)\n}\n\n"
        'g := f with input as {"fields": {"<": 1}}\n',
        # Review: `count` that is no builtin: a function of the package (a head split over lines
        # too), an import's alias or last path element (brackets included).
        'count(row) := {"p": row}\n\nf := json.marshal(count(input.fields))\n',
        'count(row)\n\t:= {"p": row}\n\nf := json.marshal(count(input.fields))\n',
        "import data.lib.pair as count\n\nf := json.marshal(count(input.fields))\n",
        "import data.lib.count\n\nf := json.marshal(count(input.fields))\n",
        "import input.x as count\n\nf := json.marshal(count(input.fields))\n",
        'import data["lib"].count\n\nf := json.marshal(count(input.fields))\n',
    ],
)
def test_json_marshal_of_what_may_not_be_the_data_or_an_index_is_refused(rules: str) -> None:
    from labelgate.policy.wasm_marshal import marshal_findings

    module = f"package labelgate.probe\n\n{rules}"
    data = {"q": {"m": {"n": 1}}, "r": {"n": 1, "s": 1.5}, "other": {"probe": 2}}
    assert marshal_findings((("probe.rego", module),), data) != []


def test_json_marshal_of_a_count_another_module_of_the_package_defines_is_refused() -> None:
    from labelgate.policy.wasm_marshal import marshal_findings

    probe = "package labelgate.probe\n\nf := json.marshal(count(input.fields))\n"
    other = 'package labelgate.probe\n\ncount(row) := {"p": row}\n'
    assert marshal_findings((("probe.rego", probe),), {}) == []
    assert marshal_findings((("probe.rego", probe), ("other.rego", other)), {}) != []


@pytest.mark.parametrize(
    "collection",
    [
        "input.fields",  # the input schema declares these arrays
        "input.labels",
        "input.request.requested_outputs",
        '["a", "b"]',
        "[x | some x in input.labels]",
    ],
)
def test_json_marshal_of_the_index_of_an_array_is_accepted(collection: str) -> None:
    from labelgate.policy.wasm_marshal import marshal_findings

    module = (
        f"package labelgate.probe\n\nf := x if {{\n\tsome i, _ in {collection}\n\tx := json.marshal(i)\n}}\n"
    )
    assert marshal_findings((("probe.rego", module),), {}) == []
    comprehension = f"package labelgate.probe\n\nf := [json.marshal(i) | some i, _ in {collection}]\n"
    assert marshal_findings((("probe.rego", comprehension),), {}) == []


def test_json_marshal_of_data_a_package_overlaps_is_refused() -> None:
    """A package of the policy at or above a data path may define rules there (``r.n := ...``)."""
    from labelgate.policy.wasm_marshal import marshal_findings

    probe = "package labelgate.probe\n\nf := json.marshal(data.r.n)\n"
    for other in ("package r\n\nm := 1\n", "package r.n.x\n\nm := 1\n", 'package ["r"]\n\nm := 1\n'):
        modules = (("probe.rego", probe), ("other.rego", other))
        assert marshal_findings(modules, {"r": {"n": 1}}) != [], other


# -- the module itself: a bundle's policy.wasm is checked, not only the .rego beside it -------


def _module(text: str) -> bytes:
    """``opa build -t wasm`` of ``package t`` holding ``text``: entrypoint t/x."""
    return compile_wasm(
        PolicySource.from_files([("t/t.rego", f"package t\n\n{text}\n".encode())], origin="t"), "t/x"
    )


def _beside(wasm: bytes, decoy: str) -> BundleSource:
    """A bundle of ``wasm`` and a decoy module, read as a followed bundle is."""
    manifest = json.dumps({"revision": "decoy", "roots": ["t"]}).encode()
    members = [
        (".manifest", manifest),
        ("policy.wasm", wasm),
        ("t/t.rego", f"package t\n\n{decoy}\n".encode()),
    ]
    source = read_bundle(write_tarball(members), verify=None, origin="decoy")
    assert isinstance(source, BundleSource)
    return source


def _without_names(wasm: bytes) -> bytes:
    """``wasm`` without its ``name`` custom section (as ``wasm-strip`` leaves it)."""
    from labelgate.policy.wasm_strict import read_u32 as _leb128

    out, offset = bytearray(wasm[:8]), 8
    while offset < len(wasm):
        size, start = _leb128(wasm, offset + 1)
        length, at = _leb128(wasm, start) if wasm[offset] == 0 else (0, start)
        if not (wasm[offset] == 0 and wasm[at : at + length] == b"name"):
            out += wasm[offset : start + size]
        offset = start + size
    return bytes(out)


@pytest.mark.parametrize(
    ("built_from", "named"),
    [
        ('x := regex.match("^a.c$", input.s)', "policy.wasm uses builtin(s) `regex.match`"),
        ("x := input.a / 3", "policy.wasm uses builtin(s) `div`"),
        ("x := upper(input.s)", "policy.wasm uses builtin(s) `upper`"),
        ('x := sprintf("%x", [input.n])', "policy.wasm calls `sprintf`, which no module calls"),
        ("x := json.marshal(input.o)", "policy.wasm calls `json.marshal`, which no module calls"),
    ],
)
def test_a_policy_wasm_built_from_other_modules_is_refused_for_what_it_uses(
    built_from: str, named: str
) -> None:
    """The .rego beside it passes the check; the module OPA compiled from other text runs regex.match."""
    source = _beside(_module(built_from), decoy="x := true")
    with pytest.raises(ConfigError) as raised:
        _WasmCompiled.build(source, "t/x", wasm=source.wasm)
    assert raised.value.reason == UNSUPPORTED
    assert named in raised.value.message and "--engine opa" in raised.value.message


def test_a_policy_wasm_built_from_the_modules_beside_it_loads() -> None:
    text = 'x := {"n": count(input.xs) * 2 + 1, "in": "a" in input.xs, "j": json.marshal(count(input.xs))}'
    source = _beside(_module(text), decoy=text)
    compiled = _WasmCompiled.build(source, "t/x", wasm=source.wasm)
    assert compiled.evaluate({"xs": ["a", "b"]}) == {"n": 5, "in": True, "j": "2"}


def test_a_policy_wasm_without_function_names_is_refused() -> None:
    text = "x := count(input.xs)"
    source = _beside(_without_names(_module(text)), decoy=text)
    with pytest.raises(ConfigError) as raised:
        _WasmCompiled.build(source, "t/x", wasm=source.wasm)
    assert raised.value.reason == UNSUPPORTED
    assert "policy.wasm has no function names" in raised.value.message


def test_the_default_pack_module_uses_only_what_the_text_check_allows(tmp_path: Path) -> None:
    from labelgate.policy.wasm_checks import module_builtins, module_findings

    source = read_bundle(_opa_wasm_bundle(REGO, tmp_path), verify=None, origin="default pack")
    assert isinstance(source, BundleSource) and source.wasm is not None
    used = module_builtins(source.wasm, ())
    assert used is not None and {"count", "json.marshal", "object.get", "plus"} <= used
    assert module_findings(source, source.wasm, (), "policy.wasm") == []


class _Probe(WasmPolicy):
    """A module loaded only to ask its ``builtins`` export (WasmPolicy refuses what the host lacks)."""

    def __init__(self, wasm: bytes) -> None:
        self.engine = wasmtime.Engine()
        self.module = wasmtime.Module(self.engine, wasm)
        self.origin = "probe"


def _calling(builtins: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A module whose x calls each of ``builtins`` (OPA capabilities entries), and their names."""
    rules, names = [], []
    for index, builtin in enumerate(builtins):
        decl = builtin.get("decl", {})
        arguments = ", ".join(f"input.a{n}" for n in range(len(decl.get("args", []))))
        call = f"{builtin['name']}({arguments})"
        rules.append(f"b{index} := {call}" if decl.get("result") else f"b{index} if {call}")
        names.append(builtin["name"])
    uses = ", ".join(f"b{index}" for index in range(len(builtins)))
    return "\n\n".join([*rules, f"x := [{uses}]"]), names


def test_the_module_check_names_every_builtin_opa_compiles_a_call_to() -> None:
    """For the pinned opa: a call to any builtin shows in the module, as a host builtin its
    ``builtins`` export names or as a function _NATIVE_FUNCTIONS maps to it; and the allowed
    builtins read as allowed ones only."""
    from labelgate.policy.wasm_checks import WASM_NATIVE_BUILTINS, WASM_OPERATORS, module_builtins

    capabilities = json.loads(
        subprocess.run([pinned_opa(), "capabilities", "--current"], capture_output=True, check=True).stdout
    )
    callable_ = [b for b in capabilities["builtins"] if not b.get("deprecated") and b["name"] != "eq"]
    text, names = _calling(callable_)
    wasm = _module(text)
    used = module_builtins(wasm, WasmInstance(_Probe(wasm), b"{}", _probe=True).dump_json("builtins"))
    assert used is not None and len(names) > 150
    # print compiles to nothing (print is off), rego.metadata.* to constants.
    invisible = {"print", "rego.metadata.chain", "rego.metadata.rule"}
    assert set(names) - invisible - used == set()

    allowed = WASM_NATIVE_BUILTINS | WASM_OPERATORS | {"json.marshal"}
    text, names = _calling([b for b in callable_ if b["name"] in allowed])
    assert set(names) == allowed
    wasm = _module(text)
    assert module_builtins(wasm, ()) == allowed


# -- arithmetic: `/` is refused, `+ - *` are documented ---------------------------------------


async def test_division_is_refused_at_load_naming_each_place(tmp_path: Path) -> None:
    """OPA's wasm target rounds quotients to 18 digits: `(1 / 3) * 3 == 1` and
    `t / 1000000000 > 1750000000` (t = 1750000000000000001) are true in OPA and false there."""
    body = (
        'r := [(input.a / 3) * 3 == 1, input.t / 1000000000 > 1750000000] # "a / b" in a comment\n\n'
        'q := "a/b"\n\n' + result_rule(VALID_RESULT)
    )
    write_policy(tmp_path, body)
    raised = await refused_start(WasmEngine(tmp_path, watch_interval=None))
    assert raised.reason == UNSUPPORTED
    where = "labelgate/decision/policy.rego:3, labelgate/decision/policy.rego:3 ("
    assert f"the `/` operator at {where}" in raised.message and "--engine opa" in raised.message


async def test_other_arithmetic_and_slashes_in_strings_and_comments_load(tmp_path: Path) -> None:
    body = 'r := [input.a * 3, input.a + 1, input.a - 1, input.a % 2] # a / b\n\nq := "a/b"\n\n'
    write_policy(tmp_path, body + result_rule(VALID_RESULT))
    engine = WasmEngine(tmp_path, watch_interval=None)
    await engine.start()
    await engine.close()


async def test_a_set_joined_into_the_reason_does_not_load(tmp_path: Path) -> None:
    # OPA's wasm target iterates a set in its own hash order: the reason joined from one read
    # "restricted output requested; caller is not an analyst; ..." where OPA's is sorted.
    refused = await refused_start(WasmEngine(write_joined_denials(tmp_path), watch_interval=None))
    assert refused.reason == "POLICY_UNSUPPORTED_BY_WASM"
    assert "an array comprehension over a set" in refused.message
    assert "labelgate/decision/reason.rego:3" in refused.message


# -- is_number: module-native, held to OPA ---------------------------------------------------

IS_NUMBER_POLICY = """package t

each := [is_number(v) | some v in input.vs]

built := [
	is_number({v | some v in input.vs}),
	is_number(count(input.vs)),
	is_number(count(input.vs) * 2 - 1),
	is_number(input.vs),
	is_number(input),
]

kept := count([v | some v in input.vs; is_number(v)])

ordered := [b | some v in input.vs; is_number(v); b := v > 1]

x := {"each": each, "built": built, "kept": kept, "ordered": ordered}
"""
# Every JSON type, and numbers as OPA reads them unlike float64: beyond 2^64, beyond float64's
# range, more digits than it holds, a negative zero, exponents.
IS_NUMBER_VALUES = (
    "0, -1, 1.5, 1e3, 1E-3, -0, 18446744073709551616, -9223372036854775809, 1e400, -1e400, 4.9e-325, "
    '0.1000000000000000055511151231257827, "1", "", "1e3", true, false, null, [], [1], {}, {"a": 1}'
)


def test_is_number_in_the_module_matches_opa(tmp_path: Path) -> None:
    """is_number is module-native (opa_types_is_number): it loads on the wasm engine and answers
    as OPA on every JSON type, on numbers float64 does not hold, and on values the policy builds."""
    policy = tmp_path / "p"
    (policy / "t").mkdir(parents=True)
    (policy / "t" / "t.rego").write_text(IS_NUMBER_POLICY)
    compiled = _WasmCompiled.build(PolicySource.from_dir(policy), "t/x")
    values = [value.strip() for value in IS_NUMBER_VALUES.split(", ") if value.strip()]
    for text in [f'{{"vs": [{IS_NUMBER_VALUES}]}}', *(f'{{"vs": [{value}]}}' for value in values)]:
        (tmp_path / "input.json").write_text(text)
        done = subprocess.run(
            [
                pinned_opa(),
                "eval",
                "-f",
                "json",
                "-d",
                str(policy),
                "-i",
                str(tmp_path / "input.json"),
                "data.t.x",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        expected = json.loads(done.stdout)["result"][0]["expressions"][0]["value"]
        results = json.loads(compiled._instance().evaluate(text.encode()))
        assert (results[0]["result"] if results else None) == expected, text
    assert expected["built"] == [False, True, True, False, False]


# -- arrays built in a set's order -----------------------------------------------------------

SET_GROUPS = "_groups := {g | some g in input.groups}\n\n"
# 40 groups, listed out of order: OPA sorts the set, the module iterates its own hash order.
GROUPS_40 = json.dumps({"groups": [f"group-{n:02d}" for n in reversed(range(40))]})


def _opa_eval(policy: Path, text: str, query: str = "data.t.x") -> Any:
    (policy.parent / "input.json").write_text(text)
    done = subprocess.run(
        [
            pinned_opa(),
            "eval",
            "-f",
            "json",
            "-d",
            str(policy),
            "-i",
            str(policy.parent / "input.json"),
            query,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)["result"][0]["expressions"][0]["value"]


def _package_t(tmp_path: Path, text: str) -> Path:
    policy = tmp_path / "p"
    (policy / "t").mkdir(parents=True, exist_ok=True)
    (policy / "t" / "t.rego").write_text(f"package t\n\n{text}\n")
    return policy


def test_an_array_in_a_sets_order_decided_unlike_opa_and_is_refused(tmp_path: Path) -> None:
    """The review's case on the wasm engine: the first of a set's elements, and the array of
    them compared with the sorted input, were another group and false there (true in OPA); the
    module compiled without the check shows it, and the check refuses the policy."""
    rule = (
        'x := {"first": [g | some g in _groups][0], "listed": [g | some g in _groups] == sort(input.groups)}'
    )
    policy = _package_t(tmp_path, SET_GROUPS + rule)
    source = PolicySource.from_dir(policy)
    expected = _opa_eval(policy, GROUPS_40)
    assert expected == {"first": "group-00", "listed": True}
    unchecked = _WasmCompiled(source, WasmPolicy(compile_wasm(source, "t/x"), "t/x", "t"), b"{}")
    assert unchecked.evaluate(json.loads(GROUPS_40)) != expected
    with pytest.raises(ConfigError) as raised:
        _WasmCompiled.build(source, "t/x")
    assert raised.value.reason == UNSUPPORTED
    assert "an array comprehension over a set used other than by" in raised.value.message
    assert "t/t.rego:5, t/t.rego:5" in raised.value.message and "--engine opa" in raised.value.message


@pytest.mark.parametrize(
    "rule",
    [
        'x := {"first": sort([g | some g in _groups])[0], "n": count([g | some g in _groups])}',
        "x := sort([g | some g in _groups]) == sort(input.groups)",
        "x := [count([g | some g in _groups]), max([g | some g in _groups]), min([g | some g in _groups])]",
        'x := ["group-07" in [g | some g in _groups], [g | some g in input.groups][0]]',
    ],
)
def test_an_array_in_a_sets_order_where_the_order_is_lost_loads_and_decides_as_opa(
    tmp_path: Path, rule: str
) -> None:
    policy = _package_t(tmp_path, SET_GROUPS + rule)
    compiled = _WasmCompiled.build(PolicySource.from_dir(policy), "t/x")
    assert compiled.evaluate(json.loads(GROUPS_40)) == _opa_eval(policy, GROUPS_40)
