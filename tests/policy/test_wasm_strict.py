"""The wasm engine fails a decision where OPA with strict builtin errors fails it (wasm_strict.py).

OPA's Wasm library returns NULL (undefined) from a builtin that errs, where the opa engine
(``strict-builtin-errors=true``) and the embedded one (``strict_built_in_errors``) fail the
evaluation: ``deny if count(input.x) > 1`` with ``input.x = 5`` allowed on the wasm engine and
denied on the others. Held here against a real ``opa run --server`` queried as the opa engine
queries it: the module patcher on hand-written modules, every allowed builtin on every JSON type,
and a decision per wrapped builtin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from labelgate.bundle.build import write_tarball
from labelgate.errors import ConfigError
from labelgate.policy import reasons
from labelgate.policy.bundle_client import BundleSource, read_bundle
from labelgate.policy.contract import POLICY_ERROR
from labelgate.policy.opa import DECISION_PARAMS
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm import WasmEngine, _WasmCompiled, compile_wasm
from labelgate.policy.wasm_checks import _NATIVE_FUNCTIONS, WASM_NATIVE_BUILTINS, WASM_OPERATORS
from labelgate.policy.wasm_host import WasmEvalError, WasmPolicy
from labelgate.policy.wasm_strict import (
    NEVER_NULL,
    WRAPPED,
    _function_names,
    _imported_functions,
    _read_sized,
    _sections,
    _vector,
    read_u32,
    strict_builtin_errors,
)
from tests.policy.conftest import VALID_RESULT, opa, write_policy
from tests.support.procs import opa_binary

DECISION = "labelgate/decision/result"

# -- the patcher on hand-written modules --------------------------------------------------------

# An imported function first (defined functions are numbered after it), imported memory (a
# value's type tag is its first byte), and functions named as OPA's library names them.
HAND_WRITTEN = """
(module
  (import "env" "f" (func $f (param i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func $opa_agg_count (export "count") (param i32) (result i32) local.get 0)
  (func $opa_agg_max (export "max") (param i32) (result i32) i32.const 0)
  (func $opa_arith_plus (export "plus") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  (func $elsewhere (export "elsewhere") (param i32) (result i32) local.get 0 call $opa_agg_count)
  (func $other (export "other") (param i32) (result i32) local.get 0))
"""


def _wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def _instance(wasm: bytes) -> tuple[wasmtime.Store, wasmtime.Instance, wasmtime.Memory]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None)))
    identity = wasmtime.Func(
        store, wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()]), lambda x: x
    )
    return store, wasmtime.Instance(store, wasmtime.Module(engine, wasm), [identity, memory]), memory


def _call(store: wasmtime.Store, instance: wasmtime.Instance, name: str, *args: int) -> int | str:
    function = instance.exports(store)[name]
    assert isinstance(function, wasmtime.Func)
    try:
        result = function(store, *args)
    except wasmtime.Trap as trap:
        assert "unreachable" in str(trap)
        return "trap"
    assert isinstance(result, int)
    return result


def test_a_wrapped_function_traps_on_null_and_answers_as_before_otherwise() -> None:
    wasm = _wat(HAND_WRITTEN)
    patched = strict_builtin_errors(wasm, "hand-written")
    assert wasmtime.Module.validate(wasmtime.Engine(), patched) is None
    store, instance, memory = _instance(patched)
    assert _call(store, instance, "count", 0) == "trap"  # NULL: count's error
    assert _call(store, instance, "count", 7) == 7
    assert _call(store, instance, "elsewhere", 0) == "trap"  # every caller reaches the wrapper
    assert _call(store, instance, "plus", 0, 0) == "trap"
    assert _call(store, instance, "plus", 2, 3) == 5
    assert _call(store, instance, "other", 0) == 0  # not a wrapped name: untouched
    # max: NULL is undefined for an array (5) or a set (7), an error for any other type.
    for tag, expected in [(5, 0), (7, 0), (3, "trap"), (4, "trap"), (6, "trap"), (8, "trap")]:
        memory.write(store, bytes([tag]), 64)
        assert _call(store, instance, "max", 64) == expected, tag
    # Unpatched, every NULL is an answer.
    store, instance, _ = _instance(wasm)
    assert _call(store, instance, "count", 0) == 0 and _call(store, instance, "plus", 0, 0) == 0


def test_the_patch_appends_one_function_per_wrapped_one_and_changes_nothing_else() -> None:
    wasm = _wat(HAND_WRITTEN)
    before, after = _sections(wasm), _sections(strict_builtin_errors(wasm, "hand-written"))
    assert [s for s, _ in before] == [s for s, _ in after]
    changed = {s for (s, a), (_, b) in zip(before, after, strict=True) if a != b}
    assert changed == {3, 10}  # the function and code sections
    declared = next(_vector(content, read_u32) for section, content in after if section == 3)
    assert len(declared) == 5 + 3  # count, max, plus moved to the end


def test_a_module_holding_no_wrapped_function_is_returned_as_it_is() -> None:
    wasm = _wat('(module (func $other (export "other") (param i32) (result i32) local.get 0))')
    assert strict_builtin_errors(wasm, "plain") is wasm


@pytest.mark.parametrize(
    ("wasm", "says"),
    [
        (b"not wasm at all", "not a Wasm 1.0 module"),
        (_wat(HAND_WRITTEN)[:-20], "runs past"),
        (
            _wat("(module (func $opa_agg_count (param i32 i32) (result i32) local.get 0))"),
            "is not (i32 x 1) -> i32",
        ),
    ],
)
def test_a_module_that_does_not_read_as_opa_writes_it_is_refused(wasm: bytes, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        strict_builtin_errors(wasm, "odd.wasm")
    assert raised.value.reason == reasons.POLICY_WASM_INVALID
    assert raised.value.message.startswith("odd.wasm: ") and says in raised.value.message


def test_every_allowed_builtins_function_is_wrapped_or_never_null() -> None:
    """A builtin added to the allowed ones needs a decision here: wrap it, or show it never errs."""
    allowed = WASM_NATIVE_BUILTINS | WASM_OPERATORS | {"json.marshal"}
    functions = {function for function, builtin in _NATIVE_FUNCTIONS.items() if builtin in allowed}
    assert set(WRAPPED) | NEVER_NULL == functions
    assert not set(WRAPPED) & NEVER_NULL


# -- OPA's own module -----------------------------------------------------------------------

# One call of every allowed builtin and operator.
EVERY_ALLOWED = """x := [
  array.concat(input.a, input.b), concat(input.s, input.a), count(input.a), is_array(input.a),
  is_boolean(input.a), is_number(input.a), is_object(input.a), is_string(input.a), max(input.a),
  min(input.a), object.get(input.o, input.k, 0), object.union(input.o, input.p), sort(input.a),
  input.s1 & input.s2, input.s1 | input.s2, input.n - input.m, input.n * input.m,
  input.n + input.m, input.n % input.m, input.n == input.m, input.n > input.m,
  input.n >= input.m, input.n < input.m, input.n <= input.m, input.n != input.m,
  input.n in input.a, {k | some k, _ in input.o; k, 1 in input.o}, json.marshal(count(input.a)),
  sprintf("%v", [input.n])]"""

# Opcodes by their immediates, enough to walk what OPA's compiler and clang emit (MVP, sign
# extension, bulk memory); any other opcode stops the reader rather than misread it.
_U32 = {0x0C, 0x0D, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2}
_BARE = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)}


def _direct_calls(entry: bytes) -> Iterator[int]:
    """The functions a code entry calls with ``call``."""
    groups, at = read_u32(entry, 0)
    for _ in range(groups):
        _, at = read_u32(entry, at)
        at += 1
    while at < len(entry):
        op, at = entry[at], at + 1
        if op in (0x02, 0x03, 0x04):  # block type: empty or a value type (one byte), or a type index
            at = at + 1 if 0x40 <= entry[at] < 0x80 else read_u32(entry, at)[1]
        elif op in _U32:
            value, at = read_u32(entry, at)
            if op == 0x10:
                yield value
        elif op == 0x0E:  # br_table
            count, at = read_u32(entry, at)
            for _ in range(count + 1):
                _, at = read_u32(entry, at)
        elif op == 0x11 or 0x28 <= op <= 0x3E:  # call_indirect; loads and stores (memarg)
            at = read_u32(entry, read_u32(entry, at)[1])[1]
        elif op == 0x1C:  # typed select
            count, at = read_u32(entry, at)
            at += count
        elif op in (0x3F, 0x40, 0xD0):
            at += 1
        elif op in (0x41, 0x42):  # signed LEB128: the same bytes as an unsigned one
            while entry[at] & 0x80:
                at += 1
            at += 1
        elif op in (0x43, 0x44):
            at += 4 if op == 0x43 else 8
        elif op == 0xFC:
            sub, at = read_u32(entry, at)
            immediates = {8: "ub", 9: "u", 10: "bb", 11: "b", 12: "uu", 13: "u", 14: "uu"}.get(
                sub, "" if sub <= 7 else "u"
            )
            for kind in immediates:
                at = at + 1 if kind == "b" else read_u32(entry, at)[1]
        else:
            assert op in _BARE, f"opcode {op:#x}: extend this reader"


def test_opas_library_calls_no_wrapped_function_itself() -> None:
    """The wrapper traps on every NULL its function returns: a library function reading one
    as a plain answer would fail a decision OPA makes. With the pinned compiler only the
    policy's plan (``g0.*``) calls the wrapped functions, but for opa_arith_minus falling back
    to opa_set_diff (NULL there is ``number - set``, which OPA raises too), and the function
    table holds none of them (no indirect call reaches one)."""
    source = PolicySource.from_files([("t/t.rego", f"package t\n\n{EVERY_ALLOWED}\n".encode())], origin="t")
    sections = _sections(compile_wasm(source, "t/x", opa_binary()))
    names, contents = _function_names(sections), dict(sections)
    imported = _imported_functions(contents[2])
    by_index = {index: name for name, index in names.items()}
    wrapped = {names[name]: name for name in WRAPPED if name in names}
    assert set(wrapped.values()) == set(WRAPPED)
    library: dict[str, set[str]] = {name: set() for name in WRAPPED}
    for offset, entry in enumerate(_vector(contents[10], _read_sized)):
        caller = by_index.get(imported + offset, f"#{imported + offset}")
        for callee in _direct_calls(entry):
            if callee in wrapped and not caller.startswith("g0."):
                library[wrapped[callee]].add(caller)
    assert library == {name: set() for name in WRAPPED} | {"opa_set_diff": {"opa_arith_minus"}}
    assert not set(_element_functions(contents[9])) & set(wrapped)


def _element_functions(content: bytes) -> Iterator[int]:
    """The function indexes of an element section of active segments with an offset (flag 0)."""
    count, at = read_u32(content, 0)
    for _ in range(count):
        flag, at = read_u32(content, at)
        assert flag == 0, f"element segment kind {flag}: extend this reader"
        while content[at] != 0x0B:  # the offset expression: i32.const N, end
            at += 1
        functions, at = read_u32(content, at + 1)
        for _ in range(functions):
            index, at = read_u32(content, at)
            yield index


# -- every allowed builtin on every JSON type, against OPA ------------------------------------

# A set the policy builds from the input's array (the input holds none), or the input itself.
SET = "_set := {x | some x in input.v} if is_array(input.v)\nelse := input.v\n"
# case -> an expression reading input.v. Sets are counted: OPA writes them sorted, the module in
# its own order (which order_findings keeps out of decisions).
EXPRESSIONS = {
    "count": "count(input.v)",
    "max": "max(input.v)",
    "min": "min(input.v)",
    "sort": "sort(input.v)",
    "array.concat": "array.concat(input.v, [1])",
    "array.concat/2": "array.concat([1], input.v)",
    "concat": 'concat(",", input.v)',
    "concat/delimiter": 'concat(input.v, ["a", "b"])',
    "object.get": 'object.get(input.v, "k", 0)',
    "object.get/path": 'object.get(input.v, ["k", "j"], 0)',
    "object.union": 'object.union(input.v, {"a": 1})',
    "object.union/2": 'object.union({"a": 1}, input.v)',
    "and": "count({1, 2} & _set)",
    "or": "count({1} | _set)",
    "minus/set": "count({1, 2} - _set)",
    "minus": "input.v - 1",
    "minus/2": "1 - input.v",
    "mul": "input.v * 2",
    "plus": "1 + input.v",
    "rem": "input.v % 2",
    "rem/2": "7 % input.v",
    "sprintf": 'sprintf("%v", input.v)',
    "json.marshal": "json.marshal(count(input.v))",
    "is_number": "[is_number(input.v), is_string(input.v), is_boolean(input.v)]",
    "is_array": "[is_array(input.v), is_object(input.v)]",
    "compare": "[input.v == 1, input.v != 1, input.v < 1, input.v <= 1, input.v > 1, input.v >= 1]",
    "in": '[1 in input.v, "k", 1 in input.v]',
}
VALUES: list[Any] = [None, True, 0, 2, -3, 1.5, "a", "", [], ["a", "b"], [1, 2], ["a", 1], {}, {"k": 1}]
TABLE = SET + "\n".join(
    f"x := {expression} if input.case == {json.dumps(case)}" for case, expression in EXPRESSIONS.items()
)

# Decisions: a deny rule per wrapped builtin (and the host's sprintf): (case, condition on
# input.v, a value OPA raises an error for, a value it decides).
DENY_CASES = [
    ("count", "count(input.v) > 1", 5, ["a", "b"]),
    ("max", "max(input.v) > 1", 5, [1, 2]),
    ("min", "min(input.v) < 1", "ab", [0, 2]),
    ("sort", "sort(input.v)[0] == 1", {"k": 1}, [2, 1]),
    ("array.concat", "count(array.concat([1], input.v)) > 2", "ab", [2, 3]),
    ("concat", 'concat(",", input.v) == "a,b"', ["a", 1], ["a", "b"]),
    ("object.get", 'object.get(input.v, "k", 0) == 1', [1], {"k": 1}),
    ("object.union", "object.union(input.v, {}).k == 1", "k", {"k": 1}),
    ("and", "count({1, 2} & _set) > 0", 5, [1]),
    ("or", "count({1} | _set) > 1", "a", [2]),
    ("minus/set", "count({1, 2} - _set) > 1", 5, [2]),
    ("minus", "input.v - 1 > 0", "a", 5),
    ("mul", "input.v * 2 > 1", None, 5),
    ("plus", "input.v + 1 > 1", True, 0),
    ("rem", "input.v % 2 == 1", 1.5, 5),
    ("rem/zero", "5 % input.v == 1", 0, 2),
    ("sprintf", 'sprintf("%v", input.v) == "1"', 5, [1]),
]
# OPA's undefined, which the module's NULL means as well: max and min of nothing.
UNDEFINED_CASES: list[tuple[str, Any]] = [("max", []), ("min", [])]
# Evaluation order: OPA stops at the first element that makes the rule true, the module goes
# on to the one that errs (a deny where OPA allows: closed, never open).
EARLY_EXIT = """
_counted if { some v in input.v; count(v) > 0 }

deny if { input.case == "early exit"; not _counted }
"""
DENY_RULES = "\n".join(f"deny if {{ input.case == {json.dumps(c)}; {test} }}" for c, test, _, _ in DENY_CASES)
DECISION_POLICY = f"""{SET}
{DENY_RULES}
{EARLY_EXIT}
default allow := false

allow if not deny

result := object.union({json.dumps(VALID_RESULT)}, {{"allow": allow}})
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    decision = write_policy(tmp_path_factory.mktemp("decision"), DECISION_POLICY)
    table = tmp_path_factory.mktemp("table")
    (table / "t").mkdir()
    (table / "t" / "t.rego").write_text(f"package t\n\n{TABLE}\n")
    return decision, table


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, folders: tuple[Path, Path]) -> Iterator[httpx.Client]:
    """OPA serving both folders; a client kept open to it (loopback: no proxy from the environment)."""
    with (
        opa(tmp_path_factory.mktemp("log"), *folders) as (url, _),
        httpx.Client(base_url=url, timeout=10, trust_env=False) as client,
    ):
        yield client


def _opa(server: httpx.Client, path: str, doc: Any) -> Any:
    """OPA's answer as the opa engine asks it (DECISION_PARAMS: strict builtin errors):
    ``("error",)`` for a builtin's error, ``("undefined",)``, or ``("value", v)``."""
    response = server.post(f"/v1/data/{path}", params=DECISION_PARAMS, json={"input": doc})
    if response.status_code == 500:
        codes = {error["code"] for error in response.json()["errors"]}
        assert codes <= {"eval_type_error", "eval_builtin_error"}, response.text
        return ("error",)
    response.raise_for_status()
    body = response.json()
    return ("value", body["result"]) if "result" in body else ("undefined",)


def _wasm(compiled: _WasmCompiled, doc: Any) -> Any:
    try:
        results = json.loads(compiled.evaluate_text(doc))
    except WasmEvalError:
        return ("error",)
    return ("value", results[0]["result"]) if results else ("undefined",)


@pytest.fixture(scope="module")
def table(folders: tuple[Path, Path]) -> _WasmCompiled:
    return _WasmCompiled.build(PolicySource.from_dir(folders[1]), "t/x", opa_binary())


@pytest.fixture(scope="module")
def decision(folders: tuple[Path, Path]) -> _WasmCompiled:
    return _WasmCompiled.build(PolicySource.from_dir(folders[0]), DECISION, opa_binary())


@pytest.mark.parametrize("case", list(EXPRESSIONS))
def test_every_allowed_builtin_errs_where_opa_does_and_answers_as_it_does_elsewhere(
    server: httpx.Client, table: _WasmCompiled, case: str
) -> None:
    wrong = []
    for value in VALUES:
        doc = {"case": case, "v": value}
        expected, got = _opa(server, "t/x", doc), _wasm(table, doc)
        if got != expected:
            wrong.append(f"{json.dumps(value)}: OPA {expected}, wasm {got}")
    assert not wrong, f"{EXPRESSIONS[case]}: " + "; ".join(wrong)


@pytest.mark.parametrize(("case", "condition", "erring", "fine"), DENY_CASES, ids=[c[0] for c in DENY_CASES])
def test_a_builtin_error_in_a_deny_rule_fails_the_decision_as_opa_does(
    server: httpx.Client, decision: _WasmCompiled, case: str, condition: str, erring: Any, fine: Any
) -> None:
    bad, good = {"case": case, "v": erring}, {"case": case, "v": fine}
    assert _opa(server, DECISION, bad) == ("error",) == _wasm(decision, bad)
    expected = _opa(server, DECISION, good)
    assert expected[0] == "value" and _wasm(decision, good) == expected


@pytest.mark.parametrize(("case", "value"), UNDEFINED_CASES)
def test_max_and_min_of_nothing_stay_undefined_as_in_opa(
    server: httpx.Client, decision: _WasmCompiled, case: str, value: Any
) -> None:
    doc = {"case": case, "v": value}
    expected = _opa(server, DECISION, doc)
    assert expected == ("value", {**VALID_RESULT, "allow": True}) and _wasm(decision, doc) == expected


def test_where_opa_stops_early_the_module_may_reach_an_error_and_deny(
    server: httpx.Client, decision: _WasmCompiled
) -> None:
    """A known difference, closed: OPA's complete rule stops at its first success ([1]), the
    module's plan evaluates the next element too (5) and errs. Rule indexing does the same
    (OPA skips a body whose `input.y == "a"` fails before it reaches a call that errs)."""
    doc = {"case": "early exit", "v": [[1], 5]}
    assert _opa(server, DECISION, doc) == ("value", {**VALID_RESULT, "allow": True})
    assert _wasm(decision, doc) == ("error",)


def test_opas_module_as_compiled_allows_what_opa_denies(folders: tuple[Path, Path]) -> None:
    """The failure wasm_strict closes: unpatched, each erring builtin leaves deny undefined."""
    source = PolicySource.from_dir(folders[0])
    wasm = compile_wasm(source, DECISION, opa_binary())
    unpatched = _WasmCompiled(source, WasmPolicy(wasm, DECISION, "t"), b"{}")
    allowed = ("value", {**VALID_RESULT, "allow": True})
    for case, _, erring, _ in DENY_CASES:
        if case != "sprintf":  # the host's, which wasm_host raises itself
            assert _wasm(unpatched, {"case": case, "v": erring}) == allowed, case


def test_after_a_trap_the_same_instance_decides_as_a_fresh_one(decision: _WasmCompiled) -> None:
    """Every opa_eval resets the heap (opa_heap_ptr_set) and the memo (opa_memoize_init), so
    a trap leaves nothing behind; the engine still starts a fresh instance (wasm.py)."""
    instance = decision.policy.instantiate(decision.data_json)
    fresh = decision.policy.instantiate(decision.data_json)
    for case, _, erring, fine in DENY_CASES:
        with pytest.raises(WasmEvalError, match=r"unreachable|strict builtin errors"):
            instance.evaluate(json.dumps({"case": case, "v": erring}).encode())
        good = json.dumps({"case": case, "v": fine}).encode()
        assert instance.evaluate(good) == fresh.evaluate(good), case


async def test_the_engine_denies_a_builtin_error_and_decides_the_next_input(
    server: httpx.Client,
    folders: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())
    engine = WasmEngine(folders[0], watch_interval=None)
    await engine.start()
    try:
        with caplog.at_level(logging.ERROR, logger="labelgate.policy.wasm"):
            for case, _, erring, fine in DENY_CASES:
                denied = await engine.decide({"case": case, "v": erring})
                assert not denied.allow and denied.fail_reason == POLICY_ERROR, case
                decided = await engine.decide({"case": case, "v": fine})
                expected = _opa(server, DECISION, {"case": case, "v": fine})
                assert not decided.failed_closed and decided.allow == expected[1]["allow"], case
    finally:
        await engine.close()
    logged = [r for r in caplog.records if r.msg == "policy_eval_error"]
    assert len(logged) == len(DENY_CASES)


def test_a_bundles_policy_wasm_is_made_strict_as_well() -> None:
    """A followed bundle's policy.wasm runs as shipped, built by another opa: patched the same."""
    text = "package t\n\nx := count(input.v)\n"
    wasm = compile_wasm(
        PolicySource.from_files([("t/t.rego", text.encode())], origin="t"), "t/x", opa_binary()
    )
    manifest = json.dumps({"revision": "r1", "roots": ["t"]}).encode()
    members = [(".manifest", manifest), ("policy.wasm", wasm), ("t/t.rego", text.encode())]
    source = read_bundle(write_tarball(members), verify=None, origin="bundle")
    assert isinstance(source, BundleSource) and source.wasm == wasm
    compiled = _WasmCompiled.build(source, "t/x", wasm=source.wasm)
    assert _wasm(compiled, {"v": [1, 2]}) == ("value", 2)
    assert _wasm(compiled, {"v": 5}) == ("error",)
