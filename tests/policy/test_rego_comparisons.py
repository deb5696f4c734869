"""Orderings the embedded engine does not share with OPA (rego_comparisons.py): comparisons of
values not shown to be numbers, and arrays built in a set's order. Each refusal is held to real
OPA and to rego-cpp unchecked (the fail-open it keeps out), and each rewrite it names loads and
decides as OPA does (review of issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.capabilities import UNSUPPORTED
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.rego_comparisons import SET_ORDER, UNPROVEN_COMPARISON
from labelgate.policy.rego_text import text_findings
from tests.policy.conftest import (
    VALID_RESULT,
    opa_value,
    refused_start,
    rego_cpp_unchecked,
    result_rule,
    write_policy,
)

RISKY = '{"subject": {"attributes": {"risk_score": "90"}}}'
# (condition of a deny rule, an input on which OPA denies and rego-cpp, unchecked, allows)
FAIL_OPEN = {
    # The review's case: the IdP sends the score as a string; OPA orders it above every number.
    "string_claim": ("input.subject.attributes.risk_score > 50", RISKY),
    "strings": ("input.a < input.b", '{"a": "a", "b": "a!"}'),
    "arrays": ("input.a < input.b", '{"a": [2], "b": [10]}'),
    "by_name": ("gt(input.a, 50)", '{"a": "90"}'),
}


def _denying(condition: str) -> str:
    return f"_over if {condition}\n\n" + result_rule(VALID_RESULT, "not _over")


@pytest.mark.parametrize("case", sorted(FAIL_OPEN))
async def test_an_ordering_rego_cpp_decides_unlike_opa_does_not_load(tmp_path: Path, case: str) -> None:
    condition, document = FAIL_OPEN[case]
    policy = write_policy(tmp_path / "policy", _denying(condition))
    assert await opa_value(policy, document) is None
    assert '"allow":true' in rego_cpp_unchecked(policy, document)
    refused = await refused_start(EmbeddedEngine(policy, watch_interval=None))
    assert refused.reason == UNSUPPORTED and UNPROVEN_COMPARISON in refused.message
    assert "policy.rego:3" in refused.message and "--engine wasm" in refused.message


@pytest.mark.parametrize(
    ("refused", "rewritten"),
    [
        # is_number first, as a body expression of its own
        ("input.a > 50", "is_number(input.a)\n\tinput.a > 50"),
        ("input.a > 50", "is_number(input.a); input.a > 50"),
        ("r := input.a\n\tnot r > 50", "r := input.a\n\tis_number(r)\n\tnot r > 50"),
        ("lte(input.a, 3)", "is_number(input.a)\n\tlte(input.a, 3)"),
        # a number builtin, a local bound to one, arithmetic that has numbers only
        ("input.a >= 1", "count(input.a) >= 1"),
        ("input.a >= 1", 'strings.count(input.a, "x") >= 1'),
        ("n := input.a\n\tn > 1", "n := count(input.a)\n\tn > 1"),
        ("n := input.a\n\tm := n\n\tm > 1", "n := count(input.a)\n\tm := n + 1\n\tm > 1"),
        ("input.a - input.b >= 0", "count(input.a) - input.b >= 0"),
        ("input.a >= input.b", "input.a + 0 >= input.b * 1"),
        # a comprehension's head reads its body's checks
        ("c := [v > 1 | some v in input.a]", "c := [v > 1 | some v in input.a; is_number(v)]"),
        ("c := [v | some v in input.a; v > 1]", "c := [v | some v in input.a; is_number(v); v > 1]"),
        ("every v in input.a { v > 1 }", "every v in input.a { is_number(v); v > 1 }"),
    ],
)
def test_a_comparison_is_refused_until_the_text_shows_numbers(refused: str, rewritten: str) -> None:
    def found(condition: str) -> list[str]:
        module = "package t\n\n" + result_rule(VALID_RESULT, condition)
        return [f.where for f in text_findings("t.rego", module) if f.what == UNPROVEN_COMPARISON]

    assert found(refused)
    assert found(rewritten) == []


@pytest.mark.parametrize(
    "condition",
    [
        "1 < 2 < 3",  # (1 < 2) < 3: a boolean ordered against a number
        "input.a - input.b > 0",  # a set difference, maybe
        "-input.a > 1",
        "input.a % 2 > 0",
        "[1] < [2]",
        "not is_number(input.a)\n\tinput.a > 5",
        "b := is_number(input.a)\n\tinput.a > 5",  # a value, not a check
        "c := [1 | is_number(input.a)]\n\tinput.a > 5",  # a closed comprehension's check
        "is_number(input.a)\n\t== false\n\tinput.a > 5",  # the check goes on over the line
        'is_number(input.a)\n\tinput.a > 5 with input as {"a": "x"}',  # another input compared
        "is_number(input.a[_])\n\tinput.a[_] > 5",  # each `_` is its own variable
        "a := input.a\n\t-2 > 3",  # Rego reads `a := input.a - 2 > 3`
        "n := count(input.a)\n\tsome n in input.b\n\tn > 1",  # bound twice
        "n := count(input.a)\n\tc := [v | some v in input.b; n > 1]",  # bound in another body
        "is_number(input.a)\n\ts := {input.a > 1}",  # a set literal is read as a body of its own
        "count(input.a) > 1 | 2",  # a union on the right
    ],
)
def test_what_the_text_does_not_show_to_be_numbers_is_refused(condition: str) -> None:
    module = "package t\n\n" + result_rule(VALID_RESULT, condition)
    assert UNPROVEN_COMPARISON in [f.what for f in text_findings("t.rego", module)]


def test_count_of_the_policys_own_or_an_else_bodys_check_does_not_count() -> None:
    own = "package t\n\nimport data.lib.count\n\nx if count(input.a) > 1\n"
    assert UNPROVEN_COMPARISON in [f.what for f in text_findings("t.rego", own)]
    other_body = "package t\n\nx := 1 if {\n\tis_number(input.a)\n} else := 2 if input.a > 1\n"
    assert [f.where for f in text_findings("t.rego", other_body)] == ["t.rego:5"]


CHECKED = """_risky if {
	score := input.subject.attributes.risk_score
	not is_number(score)
}

_risky if {
	score := input.subject.attributes.risk_score
	is_number(score)
	score > 50
}

"""


async def test_the_rewrite_the_refusal_names_decides_as_opa(tmp_path: Path) -> None:
    """The review's policy is refused naming the rewrite; rewritten (a score that is not a
    number is risky too), it loads and decides every score as OPA does."""
    raw = write_policy(tmp_path / "raw", _denying(FAIL_OPEN["string_claim"][0]))
    refused = await refused_start(EmbeddedEngine(raw, watch_interval=None))
    assert "`is_number(x); x > 50`" in refused.message
    policy = write_policy(tmp_path / "checked", CHECKED + result_rule(VALID_RESULT, "not _risky"))
    engine = EmbeddedEngine(policy, watch_interval=None)
    await engine.start()
    try:
        for document in [{"subject": {"attributes": {"risk_score": s}}} for s in ("90", 90, 10, None)] + [{}]:
            opa = await opa_value(policy, json.dumps(document))
            assert (await engine.decide(document)).allow is (opa is not None), document
    finally:
        await engine.close()


# -- arrays built in a set's order --------------------------------------------------------

GROUPS = '{"subject": {"groups": ["zeta-admins", "analysts"]}}'


async def test_an_array_in_a_sets_order_indexed_does_not_load(tmp_path: Path) -> None:
    """The review's case: the first of the caller's groups, read from a set. OPA sorts the set
    ("analysts" first) and denies; rego-cpp keeps the input's order and allowed."""
    body = (
        "_groups := {g | some g in input.subject.groups}\n\n"
        "_primary := [g | some g in _groups][0]\n\n" + result_rule(VALID_RESULT, '_primary == "zeta-admins"')
    )
    policy = write_policy(tmp_path / "policy", body)
    assert await opa_value(policy, GROUPS) is None
    assert '"allow":true' in rego_cpp_unchecked(policy, GROUPS)
    refused = await refused_start(EmbeddedEngine(policy, watch_interval=None))
    assert (
        refused.reason == UNSUPPORTED and SET_ORDER in refused.message and "policy.rego:5" in refused.message
    )


@pytest.mark.parametrize(
    ("refused", "rewritten"),
    [
        ("p := [g | some g in _groups][0]", "p := sort([g | some g in _groups])[0]"),
        (
            "p := [g | some g in {g | some g in input.xs}][0]",
            "p := max([g | some g in {g | some g in input.xs}])",
        ),
        ("a := [g | some g in _groups]", "n := count([g | some g in _groups])"),
        ("a := [g | some g in _groups] == input.xs", 'a := "x" in [g | some g in _groups]'),
        ("p if {\n\tsome i, g in [g | some g in _groups]\n\ti == 0\n}", "p := min([g | some g in _groups])"),
        ('p if "x", 0 in [g | some g in _groups]', 'p if "x" in [g | some g in _groups]'),
    ],
)
def test_an_array_in_a_sets_order_loads_only_where_the_order_is_lost(refused: str, rewritten: str) -> None:
    def found(rule: str) -> bool:
        module = f"package t\n\n_groups := {{g | some g in input.xs}}\n\n{rule}\n"
        return SET_ORDER in [f.what for f in text_findings("t.rego", module)]

    assert found(refused)
    assert not found(rewritten)


# -- rules whose every value is a number --------------------------------------------------


def _refused_lines(module: str, *others: tuple[str, str]) -> list[str]:
    modules = (("t.rego", module), *others)
    return [f.where for f in text_findings("t.rego", module, modules) if f.what == UNPROVEN_COMPARISON]


@pytest.mark.parametrize(
    ("refused", "accepted"),
    [
        ("n := input.a", "n := count(input.a)"),
        ("n := input.a", "n := 5"),
        ("n = input.a", "n = count(input.a) + 1"),
        # every definition, the default and each `else` value included
        (
            'default n := "x"\n\nn := count(input.a) if input.b',
            "default n := 0\n\nn := count(input.a) if input.b",
        ),
        ("n := 1 if input.b\n\nn := input.c if input.d", "n := 1 if input.b\n\nn := 2 if input.d"),
        ('n := 1 if input.b else := "x"', "n := 1 if input.b else := 2"),
        ("n := 1 if input.b else if input.c", "n := 1 if input.b else = 2 if input.c"),  # a bare else: true
        # through other rules, to a fixed point
        ("m := input.a\n\nn := m", "m := count(input.a)\n\nn := m"),
        ("n := m\n\nm := n", "n := m\n\nm := 5"),  # a cycle proves nothing
        # not a complete rule's value: a local of its body, a partial or function definition,
        # a rule below it (an object)
        ("n := x if {\n\tx := count(input.a)\n}", "n := count(input.a) if {\n\tinput.b\n}"),
        ("n := 5\n\nn contains 1", "n := 5\n\nm contains 1"),
        ("n := 5\n\nn.x := 1", "n := 5\n\nm.x := 1"),
        ("n(x) := 5", "n := 5"),
    ],
)
def test_a_rule_whose_every_value_is_a_number_counts_as_one(refused: str, accepted: str) -> None:
    def module(rules: str) -> str:
        return f"package t\n\n{rules}\n\n" + result_rule(VALID_RESULT, "n >= 0")

    assert _refused_lines(module(refused))
    assert _refused_lines(module(accepted)) == []


@pytest.mark.parametrize(
    "condition",
    [
        "n >= 0",
        "data.t.n >= 0",
        "lim.n >= 0",  # through the import alias
        "gte(n, count(input.a))",
    ],
)
def test_a_number_rule_counts_by_name_path_or_alias_from_any_module(condition: str) -> None:
    module = "package t\n\nimport data.t as lim\n\n" + result_rule(VALID_RESULT, condition)
    assert _refused_lines(module, ("u.rego", "package t\n\nn := count(input.a)\n")) == []
    assert _refused_lines(module, ("u.rego", "package t\n\nn := input.a\n"))


@pytest.mark.parametrize(
    "condition",
    [
        "some n in input.xs\n\tn >= 0",
        "some i, n in input.xs\n\tn >= i + 0",
        "[_, n] := input.xs\n\tn >= 0",
        "every n in input.xs { n >= 0 }",
        "c := [n | some n in input.xs; n >= 0]",
        "input.xs[n]\n\tn >= 0",
    ],
)
def test_a_local_named_like_a_number_rule_is_not_the_rule(condition: str) -> None:
    module = "package t\n\nn := 5\n\n" + result_rule(VALID_RESULT, condition)
    assert _refused_lines(module)
    assert _refused_lines("package t\n\nn := 5\n\nf(n) if n >= 0\n")  # a parameter


async def test_a_number_rule_loads_and_decides_as_opa(tmp_path: Path) -> None:
    """`n := count(input.fields)`, compared by name: loads, and decides every input as OPA; the
    same rule bound to the input is refused (a string there is the review's fail-open)."""
    policy = write_policy(
        tmp_path / "policy", "n := count(input.fields)\n\n" + result_rule(VALID_RESULT, "n >= 2")
    )
    engine = EmbeddedEngine(policy, watch_interval=None)
    await engine.start()
    try:
        documents: list[dict[str, Any]] = [{"fields": ["a"]}, {"fields": ["a", "b"]}, {"fields": "abc"}, {}]
        for document in documents:
            opa = await opa_value(policy, json.dumps(document))
            assert (await engine.decide(document)).allow is (opa is not None), document
    finally:
        await engine.close()
    raw = write_policy(
        tmp_path / "raw", "n := input.n\n\n_over if n > 50\n\n" + result_rule(VALID_RESULT, "not _over")
    )
    claim = '{"n": "90"}'
    assert await opa_value(raw, claim) is None
    assert '"allow":true' in rego_cpp_unchecked(raw, claim)
    refused = await refused_start(EmbeddedEngine(raw, watch_interval=None))
    assert refused.reason == UNSUPPORTED and "policy.rego:5" in refused.message
