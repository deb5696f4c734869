"""Rules written in ``*_test.rego`` files that the served decision depends on.

The bundle leaves test modules out (``build.is_served_file``) while ``opa test`` runs them
with the rest of the source. A rule an author writes in a test file (an incremental
definition of a rule the decision uses, a helper function, an ``else`` branch) is therefore
tested but never served: ``opa test`` passes with it and every gateway decides without it,
allowing what the tests showed denied. Such a source is refused before publishing.

Fixtures (inputs, expected values, helpers that only tests call) stay allowed: nothing the
gateway evaluates reads them. Telling the two apart is left to OPA, which resolves imports,
bare names, ``else`` chains, functions and incremental definitions:

- ``opa deps`` of the entrypoints over the whole source (tests included, so a rule defined
  only in a test file is still a rule) lists the documents the decision depends on;
- one ``opa eval`` of ``rego.parse_module`` over the test files gives each one's rules.

A rule is refused when a dependency is that rule, lies under it (a key of an object rule) or
contains it (a whole package read at once, a reference with a variable key): in each case
the served bundle answers differently from the tested source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelgate.bundle.build import SourceFile, is_test_module

# What gateways evaluate (``policy/engine.py`` DECISION_PATH, which this layer may not import;
# ``tests/bundle/test_rules_in_tests.py`` keeps the two equal). Every decision phase reads it.
ENTRYPOINTS = ("data.labelgate.decision.result",)
# The rules of every test module, parsed by OPA itself: input is {file name: module text}.
_PARSE_QUERY = "{name: rego.parse_module(name, text) | some name, text in input}"
_MOST_NAMED = 3

Path_ = tuple[str, ...]


@dataclass(frozen=True, order=True)
class RuleInTestFile:
    """A rule in a test module that the served decision depends on."""

    file: str
    rule: str  # as a reference: data.labelgate.decision._model_admin_denied


def texts_of_test_modules(files: Iterable[SourceFile]) -> dict[str, str]:
    """The test modules of a snapshot, by name (``_PARSE_QUERY``'s input, UTF-8 as ``build`` checked)."""
    return {name: content.decode("utf-8") for name, content in files if is_test_module(name)}


def deps_args(source: Path) -> list[str]:
    return ["deps", "--format", "json", "; ".join(ENTRYPOINTS), "-d", str(source)]


def parse_args(modules_input: Path) -> list[str]:
    return ["eval", "--format", "json", "--input", str(modules_input), _PARSE_QUERY]


def depended_on(deps_output: bytes, parse_output: bytes) -> list[RuleInTestFile]:
    """The test-module rules that a dependency reported by ``opa deps`` reaches."""
    dependencies = _dependency_paths(json.loads(deps_output))
    parsed = json.loads(parse_output)["result"][0]["expressions"][0]["value"]
    found = set()
    for file, module in parsed.items():
        for rule in _rule_paths(module):
            if any(_overlaps(rule, dependency) for dependency in dependencies):
                found.add(RuleInTestFile(file, _render(rule)))
    return sorted(found)


def refusal(found: Sequence[RuleInTestFile]) -> str:
    """One line for the status, the fleet page and logs: the files, the rules, the way out."""
    named = "; ".join(f"{each.file} defines {each.rule}" for each in found[:_MOST_NAMED])
    more = f" (and {len(found) - _MOST_NAMED} more)" if len(found) > _MOST_NAMED else ""
    return (
        f"{named}{more}, which the served decision ({', '.join(ENTRYPOINTS)}) depends on: "
        f"*_test.rego files are not served, so opa test passed with rules that gateways would "
        f"decide without; move each such rule to a module whose name does not end in "
        f"_test.rego (fixtures only tests use may stay)"
    )


def _dependency_paths(deps: dict[str, Any]) -> set[Path_]:
    """Every ``data`` document ``opa deps`` names, base or virtual, cut at the first
    non-constant key (``data.x[k]`` reads all of ``data.x``)."""
    paths = set()
    for ref in [*deps.get("base", []), *deps.get("virtual", [])]:
        if ref and ref[0] == {"type": "var", "value": "data"}:
            paths.add(_constant_prefix(ref[1:]))
    return paths


def _rule_paths(module: dict[str, Any]) -> set[Path_]:
    package = _constant_prefix(module["package"]["path"][1:])  # after the leading ``data``
    paths = set()
    for rule in module.get("rules", []):
        head = rule["head"]
        ref = head.get("ref") or [{"type": "var", "value": head["name"]}]
        # The first term is the rule's name (a var), then its ref head's keys, if any.
        paths.add((*package, str(ref[0]["value"]), *_constant_prefix(ref[1:])))
    return paths


def _constant_prefix(terms: list[dict[str, Any]]) -> Path_:
    prefix: list[str] = []
    for term in terms:
        if term.get("type") != "string":
            break
        prefix.append(term["value"])
    return tuple(prefix)


def _overlaps(rule: Path_, dependency: Path_) -> bool:
    shorter = min(len(rule), len(dependency))
    return rule[:shorter] == dependency[:shorter]


def _render(path: Path_) -> str:
    return "data" + "".join(f".{key}" if key.isidentifier() else f"[{json.dumps(key)}]" for key in path)
