"""Whole numbers written as floats: the in-process engines decide as real OPA or fail closed.

Review (fail-open on both in-process engines): OPA v1.22.3 looks an array up by ``1.0``,
``-0.0`` or ``1.00000000000000001`` as by the integer; rego-cpp and OPA's Wasm target found
nothing there, so ``deny if input.fields[input.i] == "secret"`` with ``"i": 1.0`` denied in
OPA and allowed in both. Now (policy/whole_numbers.py): an input holding such a float is denied
unevaluated (EMBEDDED_INPUT_UNSUPPORTED), data holding one and a policy with such a literal
are refused at load, and the gateway hands subject attributes over as integers, to every
engine alike, so the engines decide alike on what the gateway builds. Each case is held to
real OPA (``opa eval``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from labelgate.auth.subject import Subject
from labelgate.errors import ConfigError
from labelgate.policy.contract import EMBEDDED_INPUT_UNSUPPORTED, build_input
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.reasons import (
    POLICY_DATA_INVALID,
    POLICY_UNSUPPORTED_BY_EMBEDDED,
    POLICY_UNSUPPORTED_BY_WASM,
)
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm import WasmEngine
from labelgate.policy.whole_numbers import (
    holds_whole_float,
    is_whole_float,
    may_hold_whole_float,
    whole_float_at,
)
from tests.policy.conftest import opa_value, write_policy
from tests.support.procs import opa_binary

RESULT = (
    'result := {"allow": allow, "reason": "r", "mask": [], '
    '"require_approval": null, "cache_ttl_seconds": 0}\n'
)
FIELDS = ["public", "secret"]
# A deny rule reaching the second field by a number of the input, each way the review found.
DENY_RULES = {
    "index": 'deny if input.fields[input.i] == "secret"',
    "object.get": 'deny if object.get({"a": input.fields}, ["a", input.i], "") == "secret"',
    "member_3": 'deny if input.i, "secret" in input.fields',
    "comprehension": 'deny if { a := [v | some v in input.fields]; a[input.i] == "secret" }',
    "array.concat": 'deny if { a := array.concat(input.fields, []); a[input.i] == "secret" }',
    "sort": 'deny if { a := sort(input.fields); a[input.i] == "secret" }',
}
ENGINES: dict[str, type[EmbeddedEngine]] = {"embedded": EmbeddedEngine, "wasm": WasmEngine}


@pytest.fixture(autouse=True)
def _opa_for_wasm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())


def _policy(folder: Path, rule: str, data: dict[str, Any] | None = None) -> Path:
    return write_policy(folder, f"default allow := true\n{rule}\nallow := false if deny\n{RESULT}", data=data)


async def _decide(engine_name: str, policy: Path, value: dict[str, Any]) -> Any:
    engine = ENGINES[engine_name](policy, watch_interval=None)
    await engine.start()
    try:
        return await engine.decide(value)
    finally:
        await engine.close()


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("rule", sorted(DENY_RULES))
@pytest.mark.parametrize(
    "index", [1.0, -0.0, 1.00000000000000001], ids=["1.0", "-0.0", "1.00000000000000001"]
)
async def test_an_input_holding_a_whole_float_is_denied_unevaluated(
    tmp_path: Path, engine: str, rule: str, index: float
) -> None:
    body = DENY_RULES[rule]
    if index == 0:  # -0.0 reaches the first field
        body = body.replace('"secret"', '"public"')
    policy = _policy(tmp_path / "p", body)
    value = {"fields": FIELDS, "i": index}
    # OPA looks the field up by the float: its deny rule holds. It was undefined in both
    # in-process engines, which allowed.
    assert (await opa_value(policy, json.dumps(value)))["allow"] is False
    decision = await _decide(engine, policy, value)
    assert (decision.allow, decision.fail_reason) == (False, EMBEDDED_INPUT_UNSUPPORTED)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("rule", sorted(DENY_RULES))
async def test_the_same_rules_decide_as_opa_on_an_integer(tmp_path: Path, engine: str, rule: str) -> None:
    policy = _policy(tmp_path / "p", DENY_RULES[rule])
    for value in ({"fields": FIELDS, "i": 1}, {"fields": FIELDS, "i": 0}, {"fields": FIELDS, "i": 1.5}):
        want = await opa_value(policy, json.dumps(value))
        decision = await _decide(engine, policy, value)
        assert decision.fail_reason is None and decision.to_result() == want, value


@pytest.mark.parametrize("engine", sorted(ENGINES))
async def test_a_subject_attribute_written_as_a_float_decides_as_in_opa(tmp_path: Path, engine: str) -> None:
    """What the gateway builds: the subject's attributes as ``Subject.to_policy`` writes them
    (a JWT's ``"exp": 1796490140.0`` reads as a float in Python)."""
    policy = _policy(
        tmp_path / "p", 'deny if input.request.requested_outputs[input.subject.attributes.i] == "ssn"'
    )
    subject = Subject(id="jwt:i#alice", attributes={"i": 1.0, "exp": 1796490140.0})
    value = build_input(
        phase="request",
        subject=subject.to_policy(),
        request={"service": "s", "method": "/s/M", "model": "m", "requested_outputs": ["name", "ssn"]},
        fields=[],
        approval=None,
        time_ns=1,
    )
    want = await opa_value(policy, json.dumps(value))
    assert want["allow"] is False
    decision = await _decide(engine, policy, value)
    assert decision.fail_reason is None and decision.to_result() == want


async def test_the_integer_is_written_as_opa_writes_it(tmp_path: Path) -> None:
    """Every engine gets the integer, OPA included, so text made of it is the same: OPA keeps a
    number as written (``sprintf("%v", [1.0])`` is ``1.0``), so converting only the in-process
    engines' copy would have made them write another reason than OPA."""
    body = (
        'result := {"allow": true, "reason": sprintf("%v", [input.subject.attributes.exp]), "mask": [],'
        ' "require_approval": null, "cache_ttl_seconds": 0}\n'
    )
    policy = write_policy(tmp_path / "p", body)
    value = {"subject": Subject(id="jwt:i#alice", attributes={"exp": 1796490140.0}).to_policy()}
    want = await opa_value(policy, json.dumps(value))
    assert want["reason"] == "1796490140"
    assert (await _decide("wasm", policy, value)).to_result() == want  # regopy refuses sprintf


@pytest.mark.parametrize("engine", sorted(ENGINES))
async def test_data_holding_a_whole_float_is_refused_naming_its_path(tmp_path: Path, engine: str) -> None:
    rule = 'deny if input.fields[data.labelgate.tables.limits.idx] == "secret"'
    policy = _policy(tmp_path / "p", rule, data={"limits": {"idx": 1.0, "rows": 10}})
    assert (await opa_value(policy, json.dumps({"fields": FIELDS})))["allow"] is False
    with pytest.raises(ConfigError) as refused:
        await _decide(engine, policy, {"fields": FIELDS})
    assert refused.value.reason == POLICY_DATA_INVALID
    message = refused.value.message
    assert (
        "data.labelgate.tables.limits.idx" in message and "integer 1" in message and "--engine opa" in message
    )
    # Written as an integer, the same data decides as in OPA.
    policy = _policy(tmp_path / "q", rule, data={"limits": {"idx": 1, "rows": 10}})
    want = await opa_value(policy, json.dumps({"fields": FIELDS}))
    assert (await _decide(engine, policy, {"fields": FIELDS})).to_result() == want


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(
    "rule",
    [
        'deny if input.fields[1.0] == "secret"',
        'deny if 1.0, "secret" in input.fields',
        'deny if 1e0, "secret" in input.fields',  # OPA itself reads 1e0 unlike 1.0 here
        'deny if { x := 10.0e-1; input.fields[x] == "secret" }',
        'deny if input.fields[-0.0] == "public"',
    ],
)
async def test_a_whole_number_literal_written_as_a_float_is_refused(
    tmp_path: Path, engine: str, rule: str
) -> None:
    policy = _policy(tmp_path / "p", rule)
    with pytest.raises(ConfigError) as refused:
        await _decide(engine, policy, {"fields": FIELDS})
    expected = POLICY_UNSUPPORTED_BY_EMBEDDED if engine == "embedded" else POLICY_UNSUPPORTED_BY_WASM
    assert refused.value.reason == expected
    assert "whole number" in refused.value.message and "policy.rego:4" in refused.value.message


def test_the_text_test_sees_every_whole_float_python_writes() -> None:
    """``may_hold_whole_float`` rules inputs out by their text: it must never miss one."""
    rng = random.Random(20_260_707)
    floats = [0.0, -0.0, 1.0, -1.0, 1e15, 9007199254740991.0, -9007199254740991.0]
    floats += [float(rng.randrange(-(2**53) + 1, 2**53)) for _ in range(2000)]
    floats += [float(rng.randrange(-1000, 1000)) for _ in range(200)]
    encoder = json.JSONEncoder(separators=(",", ":"))
    for number in floats:
        assert is_whole_float(number)
        for value in ([number], {"a": number}, {"a": [1, number, "x"]}, number):
            text = encoder.encode(value)
            assert may_hold_whole_float(text) and holds_whole_float(value), text
            assert may_hold_whole_float(json.dumps(value)), value  # ", " separators too
    for other in (1.5, 1e16, 2.0**53, 1e300, 0.1, "1.0", "v1.0,", 1):
        assert not holds_whole_float({"a": [other]})
    assert not may_hold_whole_float('{"model":"v1.0","peer":"ipv4:10.0.0.1:5000","n":1.5}')


def test_the_path_of_a_whole_float_reads_as_rego() -> None:
    assert whole_float_at({"t": {"a b": [1, {"x": 2.0}]}}) == ('data.t["a b"][1].x', 2.0)
    assert whole_float_at({"b": 1.5, "a": [3]}) is None
    deep: Any = 4.0
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert whole_float_at({"d": deep}) == ("data.d" + "[0]" * 5000, 4.0)


@pytest.mark.parametrize("written", ["1E2", "-0.0", "2.50e1", "10.0e-1"])
def test_data_json_refuses_a_whole_number_however_written(tmp_path: Path, written: str) -> None:
    """The numbers as data.json writes them: Python reads each as a whole float."""
    folder = write_policy(tmp_path / "p", RESULT.replace("allow,", "true,"))
    (folder / "labelgate" / "tables" / "data.json").parent.mkdir(parents=True)
    (folder / "labelgate" / "tables" / "data.json").write_text(f'{{"ok": [1, 0.5], "n": {written}}}')
    with pytest.raises(ConfigError) as refused:
        PolicySource.from_dir(folder).refuse_yaml_data("wasm")  # what both engines call as they load
    assert refused.value.reason == POLICY_DATA_INVALID
    assert "data.labelgate.tables.n " in refused.value.message
