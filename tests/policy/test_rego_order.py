"""Iteration order (``policy.rego_order``): where a policy iterates something rego-cpp orders
differently from OPA in a way the decision shows, across every module of the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.rego_order import order_findings
from labelgate.policy.rego_text import text_findings
from labelgate.policy.source import PolicySource
from tests.policy.conftest import REGO, refused_start, write_joined_denials

DENIALS = (
    "package t\n\n"
    'denials contains "restricted output requested" if "restricted" in input.labels\n'
    'denials contains "model is in quarantine" if input.model == "q-model"\n'
)


def _order(*modules: str) -> list[str]:
    return [
        f"{f.where}: {f.what}"
        for f in order_findings(tuple((f"m{i}.rego", m) for i, m in enumerate(modules)))
    ]


@pytest.mark.parametrize(
    "other",
    [
        'package t\n\nx := concat("; ", denials)\n',  # the bare name, another module of the package
        'package t\n\nx := concat("; ", [d | some d in denials])\n',
        'package u\n\nx := concat("; ", data.t.denials)\n',  # by its data path
        'package u\n\nimport data.t\n\nx := concat("; ", t.denials)\n',  # through an alias
        'package u\n\nimport data.t.denials as d\n\nx := concat("; ", [v | some v in d])\n',
        'package u\n\nall := data.t.denials\n\nx := concat("; ", all)\n',  # a name bound to it
    ],
)
def test_a_set_defined_in_another_module_counts(other: str) -> None:
    """The reviewer's repro: the check read one module at a time, so a `contains` rule of
    another module (the default pack's own layout) joined in insertion order loaded."""
    found = _order(DENIALS, other)
    assert found and all(line.startswith("m1.rego:") and "a set" in line for line in found), found


@pytest.mark.parametrize(
    "module",
    [
        "o := {k: 1 | some k in input.a}\nks := [k | o[k]]\nx := ks[0]\n",  # a comprehension's order
        'x := [k | {"b": 1, "a": 2}[k]]\n',  # a literal: its text order
        "p[k] := 1 if {\n\tsome k in input.a\n}\n\nx := [k | some k, _ in p]\n",  # a partial object
        "a.b.c := 1\n\na.b.d := 2\n\nx := [k | a.b[k]]\n",  # ref heads make objects
        'o := json.patch(input.o, [{"op": "add", "path": "/z", "value": 1}])\nx := [v | some v in o]\n',
        "ps := [p | walk(input.o, [p, _])]\n",  # rego-cpp walks breadth first, OPA depth first
    ],
)
def test_an_array_built_in_an_order_opa_does_not_have_is_refused(module: str) -> None:
    assert _order(f"package t\n\n{module}"), module


@pytest.mark.parametrize(
    "module",
    [
        "x := [k | input.o[k]]\n",  # input and data go in with their keys sorted
        "x := [k | data.tables.labels[k]]\n",
        "o := {k: 1 | some k in input.a}\nx := [v | some k in input.a; v := o[k]]\n",  # a lookup
        "o := {k: 1 | some k in input.a}\nx := count([k | o[k]])\n",  # order does not matter
        "o := {k: 1 | some k in input.a}\nx := sort([k | o[k]])\n",
        "n := count([p | walk(input.o, [p, _])])\n",
        "s := {v | some v in input.a}\nx := [v | some v in s]\n",  # a set, not joined into a string
    ],
)
def test_order_free_uses_and_input_objects_are_not_findings(module: str) -> None:
    assert _order(f"package t\n\n{module}") == []


@pytest.mark.parametrize(
    "module",
    [
        # Found by review of this round's fix: kept in a helper rule, or passed through
        # array.concat, the set's order reached the string all the same.
        's := {v | some v in input.a}\na := [v | some v in s]\nx := concat(",", a)\n',
        's := {v | some v in input.a}\nx := concat(",", array.concat([], [v | some v in s]))\n',
        's := {v | some v in input.a}\na := [v | some v in s]\nb := [w | some w in a]\nx := concat(",", b)\n',
        "s := {v | some v in input.a}\na := [v | some v in s]\nx := json.marshal(a)\n",
    ],
)
def test_an_array_built_in_a_sets_order_is_refused_where_it_becomes_a_string(module: str) -> None:
    assert _order(f"package t\n\n{module}"), module


@pytest.mark.parametrize(
    "module",
    [
        's := {v | some v in input.a}\na := [v | some v in s]\nx := concat(",", sort(a))\n',
        "s := {v | some v in input.a}\na := [v | some v in s]\nx := count(a)\n",
        'a := [v | some v in input.a]\nx := concat(",", a)\n',  # an array's own order: OPA's
    ],
)
def test_an_array_built_in_a_sets_order_and_sorted_or_counted_is_not_a_finding(module: str) -> None:
    assert _order(f"package t\n\n{module}") == []


def test_the_default_pack_has_no_order_finding_and_text_findings_use_the_whole_policy() -> None:
    modules = PolicySource.from_dir(REGO).modules
    assert order_findings(modules) == []
    other = 'package t\n\nx := concat("; ", denials)\n'
    assert text_findings("m1.rego", other, (("m0.rego", DENIALS), ("m1.rego", other)))
    assert text_findings("m1.rego", other) == []  # alone, `denials` is nothing known


async def test_the_reviewers_set_in_another_module_does_not_load(tmp_path: Path) -> None:
    refused = await refused_start(EmbeddedEngine(write_joined_denials(tmp_path), watch_interval=None))
    assert "an array comprehension over a set" in refused.message
    assert "labelgate/decision/reason.rego:3" in refused.message


@pytest.mark.parametrize(
    ("module", "refused"),
    [
        ("f(k) := [v | v := input.m[k]]\n", True),  # rego-cpp: every value of input.m
        ("f(a, k) := r if {\n\tr := {v | some v in input.m[k]}\n}\n", True),
        ("f(k) := {v: 1 | v := input.l[k]}\n", True),
        ("f(k) := [v | j := k; v := input.m[j]]\n", False),  # bound first: read right
        ("f(k) := [v | some v in k]\n", False),
        ("f(k) := input.m[k]\n", False),
    ],
)
def test_a_comprehension_indexing_by_a_function_argument_is_refused(module: str, refused: bool) -> None:
    found = [f.what for f in text_findings("t.rego", f"package t\n\n{module}")]
    assert any("indexing by the function argument `k`" in what for what in found) is refused, found


def test_expressions_nested_past_the_stack_are_a_finding_not_a_traceback() -> None:
    # Found by review: ~330 nested array.concat raised RecursionError out of the engine's start.
    nested = "[1]"
    for _ in range(2000):
        nested = f"array.concat([], {nested})"
    found = order_findings((("deep.rego", f'package t\n\nx := concat(",", {nested})\n'),))
    assert [f.what for f in found] == ["expressions nested too deeply for the load-time order check"]
