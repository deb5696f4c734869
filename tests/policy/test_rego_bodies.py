"""Body expressions rego-cpp evaluates unlike OPA (rego_bodies.py): each refusal is held to
real OPA and to rego-cpp unchecked, so it stays honest (issue 12; found by review and by a
differential fuzzer of random policies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.capabilities import UNSUPPORTED
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.rego_bodies import (
    COMPREHENSION_IN_EVERY,
    COMPREHENSION_IN_NOT,
    LOCAL_IN_ELSE,
    NOT_IN_EVERY,
    RESERVED_NAME_BOUND,
    UNIFIED_NAME,
    VALUE_IN_NOT,
    WITH_BEYOND_INPUT,
)
from labelgate.policy.rego_text import text_findings
from tests.policy.conftest import VALID_RESULT, opa_value, rego_cpp_unchecked, result_rule, write_policy


@pytest.mark.parametrize(
    "every",
    [
        "every x in input.xs { not x == 1 }",
        "every x in input.xs {\n\t\tnot _one(x)\n\t}",
        "every k, v in input.o { not v == k }",
        "every x in {1, 2} { not x == input.n }",
        "every x in [[1], [2]][0] { not x == input.n }",
        "every x in input.xs { every y in [x] { not y == 1 } }",
        "every x in input.xs { count([y | y := x; not y == 1]) == 1 }",
    ],
)
def test_not_inside_every_is_refused(every: str) -> None:
    module = f"package t\n\nx if {{\n\t{every}\n}}\n\n_one(x) if x == 1\n"
    assert NOT_IN_EVERY in [f.what for f in text_findings("t.rego", module)]


@pytest.mark.parametrize(
    "body",
    [
        "every x in input.xs { x != 1 }",
        "every x in input.xs { x != 1 }\n\tnot input.flag",
        'every x in input.xs { x != "not" }',
        "every x in {1, 2} { is_number(x); x > 0 }",
    ],
)
def test_every_without_not_and_not_outside_every_are_accepted(body: str) -> None:
    module = f"package t\n\nx if {{\n\t{body}\n}}\n"
    assert text_findings("t.rego", module) == []


FIELDS = '{"fields": [{"name": "ssn", "labels": ["secret"]}], "xs": [1, 2]}'
# What rego-cpp decides wrong (found by review and by a differential fuzzer of random
# policies): (condition, input, the finding that refuses it).
DIFFERING = {
    "not_in_every": ("every x in input.xs { not x == 1 }", FIELDS, NOT_IN_EVERY),
    "comprehension_in_every": (
        'every f in input.fields { count([l | some l in f.labels; l == "secret"]) == 0 }',
        FIELDS,
        COMPREHENSION_IN_EVERY,
    ),
    "undefined_operand_in_not": ("not input.user.risk > 50", '{"user": {}}', VALUE_IN_NOT),
    "undefined_argument_in_not": ('not startswith(input.path, "/admin")', "{}", VALUE_IN_NOT),
    "undefined_index_in_not": (
        "not data.labelgate.tables.blocked[input.user.id]",
        '{"user": {}}',
        VALUE_IN_NOT,
    ),
    "undefined_rule_in_not": ("not _limit > 3", "{}", VALUE_IN_NOT),
    "undefined_call_in_equality": ('not _level(input.user) == "banned"', '{"user": {}}', VALUE_IN_NOT),
    "inequality_in_not": ('not input.user.role != "guest"', '{"user": {}}', VALUE_IN_NOT),
    "comprehension_in_not": (
        'not count([name | some f in input.fields; "secret" in f.labels; name := f.name]) > 0',
        FIELDS,
        COMPREHENSION_IN_NOT,
    ),
}


@pytest.mark.parametrize("case", sorted(DIFFERING))
async def test_what_rego_cpp_decides_unlike_opa_does_not_load(tmp_path: Path, case: str) -> None:
    """Keeps each refusal honest: unchecked, rego-cpp allows where OPA does not."""
    condition, document, finding = DIFFERING[case]
    helpers = "_limit := input.limit\n\n_level(user) := user.level\n"
    policy = write_policy(
        tmp_path / "policy", result_rule(VALID_RESULT, condition) + helpers, data={"blocked": {}}
    )
    assert await opa_value(policy, document) is None
    assert '"allow":true' in rego_cpp_unchecked(policy, document)
    engine = EmbeddedEngine(policy, watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == UNSUPPORTED and finding in refused.value.message


@pytest.mark.parametrize(
    ("condition", "found"),
    [
        ("every f in input.fields { {1 | true} }", {COMPREHENSION_IN_EVERY}),
        (
            "every f in input.fields {\n\t\tcount({l: 1 | some l in f.labels}) > 0\n\t}",
            {COMPREHENSION_IN_EVERY},
        ),
        ("every x in {1, 2} { x in input.xs }", set()),
        ("not count([x | some x in input.xs]) > 0", {COMPREHENSION_IN_NOT}),
        ("not _f({y | some y in input.xs})", {COMPREHENSION_IN_NOT}),
        ("not input.a\n\tc := [x | some x in input.xs]", set()),
        ("c := [x | some x in input.xs; not x == 1]", set()),
        ("not input.a | input.b", set()),
    ],
)
def test_comprehensions_in_every_or_not_are_found_however_written(condition: str, found: set[str]) -> None:
    module = f"package t\n\nx if {{\n\t{condition}\n}}\n\n_f(s) if count(s) > 1\n"
    assert {f.what for f in text_findings("t.rego", module)} & {
        COMPREHENSION_IN_EVERY,
        COMPREHENSION_IN_NOT,
    } == found


@pytest.mark.parametrize(
    "condition",
    [
        "not input.user.risk > 50",
        "not 50 < input.user.risk",
        "not input.user.risk + 1 == 3",
        "not count(input.zz) > 1",
        "not count(input.zz) == 0",
        'not startswith(input.path, "/admin")',
        'not "a" in input.nothing',
        'not "a", 1 in input.o',
        "not input.o[input.k]",
        "not tables.blocked[input.user.id]",
        "not _limit > 3",
        "not _limit in {1, 2}",
        'not input.x != "a"',
        "not _f(input.o)",
        "not x > 3\n\tx := input.x",
        "not input.x == 1 with input as {}",
    ],
)
def test_a_value_evaluated_before_the_negation_is_refused(condition: str) -> None:
    module = f"package t\n\nimport data.tables\n\nx if {{\n\t{condition}\n}}\n\n_limit := input.limit\n"
    module += "\n_f(o) if o.a\n"
    assert VALUE_IN_NOT in [f.what for f in text_findings("t.rego", module)]


@pytest.mark.parametrize(
    "condition",
    [
        "not input.user.admin",
        "not input.user.roles[0]",
        'not input.x == "a"',
        "not input.x == input.y",
        "not _limit == 3",
        "v := input.user.risk\n\tis_number(v)\n\tnot v > 50",
        "some label in input.labels\n\tnot tables.labels[label]",
        "some label in input.labels\n\tnot label in _allowed",
        "some label in input.labels\n\tnot label in _visible",
        "some label in input.labels\n\tnot label in _defaulted",
        "some g in input.groups\n\tnot _f(g)",
        'not contains("abc", "b")',
        "not 1 in {1, [2, 3], null}",
        "m := input.m\n\tsome k\n\tm[k]\n\tnot k == 1",
        "c := count(input.zz)\n\tnot c > 1",
    ],
)
def test_values_both_engines_read_alike_in_a_negation_are_accepted(condition: str) -> None:
    module = (
        f"package t\n\nimport data.tables\n\nx if {{\n\t{condition}\n}}\n\n"
        '_limit := input.limit\n\n_f(o) if o.a\n\n_allowed contains "a"\n\n'
        "_visible := {l | some l in input.v} | {l | some l in input.w}\n\n"
        "default _defaulted := set()\n\n_defaulted := {1} if input.d\n"
    )
    assert [f.what for f in text_findings("t.rego", module)] == []


# Policies that fooled earlier versions of the check (rounds three to eight of fuzzing): each
# loads in OPA and, unchecked, decides differently in rego-cpp (allow where OPA denies).
FOOLED = Path(__file__).parent / "rego_bodies"
BLOCKED = '{"blocked": {"u1": true}}'
FOOLED_INPUTS = {
    "not_equal_to_an_index_on_the_next_line": '{"user": {"role": "admin"}}',
    "named_in_an_every_body": '{"list": []}',
    "else_local_in_a_later_comprehension": BLOCKED,
    "else_some_in_a_later_comprehension": BLOCKED,
    "function_else_local_in_a_later_body": BLOCKED,
    "else_local_in_a_later_value": BLOCKED,
    "rule_unified_with_a_value": '{"user": {"admin": false}}',
    "value_unified_with_a_name_in_an_else_part": '{"user": {}, "blocked": {"a": true}}',
    "with_replacing_a_builtin_the_rule_index_reads": '{"user": {"email": "eve@x"}}',
}


@pytest.mark.parametrize("case", sorted(path.stem for path in FOOLED.glob("*.rego")))
async def test_what_fooled_the_first_check_does_not_load(tmp_path: Path, case: str) -> None:
    body = (FOOLED / f"{case}.rego").read_text()
    document = FOOLED_INPUTS.get(case, '{"user": {"role": "guest"}}')
    policy = write_policy(tmp_path / "policy", body)
    allow = "data.labelgate.decision.result.allow"
    assert await opa_value(policy, document, allow) is False
    assert rego_cpp_unchecked(policy, document, allow).endswith('"x":true}}')
    engine = EmbeddedEngine(policy, watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == UNSUPPORTED
    findings = (
        NOT_IN_EVERY,
        COMPREHENSION_IN_EVERY,
        COMPREHENSION_IN_NOT,
        VALUE_IN_NOT,
        LOCAL_IN_ELSE,
        UNIFIED_NAME,
        WITH_BEYOND_INPUT,
    )
    assert any(finding in refused.value.message for finding in findings)


@pytest.mark.parametrize(
    "chain",
    [
        "allow if {\n\tsome f in input.a\n\tf.x\n} else if {\n\tsome f in input.b\n\tf.y\n}",
        "allow if {\n\tv := input.a\n\tis_number(v)\n\tv > 1\n}"
        " else if {\n\tv := input.b\n\tis_number(v)\n\tv > 2\n}",
    ],
)
def test_a_name_declared_afresh_in_each_part_of_an_else_chain_is_accepted(chain: str) -> None:
    """rego-cpp starts afresh where a later body declares the name itself (round five)."""
    module = f"package t\n\ndefault allow := false\n\n{chain}\n"
    assert [f.what for f in text_findings("t.rego", module)] == []


@pytest.mark.parametrize(
    ("condition", "refused"),
    [
        ("admin = true", True),
        ('"nobody" = banned', True),
        ("x = input.a\n\tx > 1", True),
        ("x := input.a\n\tx = 2", False),
        ("[a, b] = [1, 2]\n\ta == b", False),
        ("admin == true", False),
    ],
)
def test_unification_with_a_name_not_bound_before_is_refused(condition: str, refused: bool) -> None:
    module = f"package t\n\nadmin := input.admin\n\nbanned := input.b\n\nx if {{\n\t{condition}\n}}\n"
    assert (UNIFIED_NAME in [f.what for f in text_findings("t.rego", module)]) is refused


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("input", False),
        ("input.user", False),
        ("startswith", True),
        ("data.labelgate.decision.m.x", True),
        ("data.labelgate.tables", True),
    ],
)
def test_with_on_anything_but_the_input_is_refused(target: str, refused: bool) -> None:
    module = (
        f"package t\n\nm[k] := 1 if some k in input.ks\n\nx if {{\n\tm.x == 1 with {target} as {{}}\n}}\n"
    )
    assert (WITH_BEYOND_INPUT in [f.what for f in text_findings("t.rego", module)]) is refused


# Round nine: OPA refuses each of these policies (a reserved name bound); rego-cpp loaded them
# and read the policy's own value for `input`, so the first three allowed every caller.
@pytest.mark.parametrize(
    ("module", "refused"),
    [
        ('import data.t.fake as input\n\nfake := {"role": "admin"}\n\nx if input.role == "admin"\n', True),
        ('x if {\n\tinput := {"role": "admin"}\n\tinput.role == "admin"\n}\n', True),
        ('x if count([1 | input := {"role": "admin"}; input.role == "admin"]) > 0\n', True),
        ("x if {\n\tsome data in [1]\n}\n", True),
        ("x if {\n\tevery input in [1] { true }\n}\n", True),
        ("f(input) := 1\n", True),
        ("data := 1\n", True),
        ("x if input.role == data.t.admin\n\ny if f with input as {}\n\nf if input.a\n", False),
        ("import input.user as u\n\nimport data.t.roles\n\nx if u.role in roles\n", False),
    ],
)
def test_binding_input_or_data_is_refused(module: str, refused: bool) -> None:
    found = [f.what for f in text_findings("t.rego", f"package t\n\n{module}")]
    assert (RESERVED_NAME_BOUND in found) is refused, found


async def test_a_policy_binding_input_does_not_load(tmp_path: Path) -> None:
    body = 'allow if {\n\tinput := {"role": "admin"}\n\tinput.role == "admin"\n}\n\ndefault allow := false\n'
    body += "result := " + json.dumps({**VALID_RESULT, "allow": "@"}).replace('"@"', "allow") + "\n"
    policy = write_policy(tmp_path / "policy", body)
    assert rego_cpp_unchecked(policy, '{"role": "guest"}', "data.labelgate.decision.result.allow").endswith(
        '"x":true}}'
    )
    engine = EmbeddedEngine(policy, watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == UNSUPPORTED and RESERVED_NAME_BOUND in refused.value.message
