"""The rule-in-a-test-file check (``bundle/rules_in_tests.py``) on the project's own policy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from labelgate.bundle import rules_in_tests
from labelgate.bundle.source import read_snapshot
from labelgate.policy.engine import DECISION_PATH
from tests.bundle.helpers import REGO
from tests.support.procs import opa_binary


def test_the_entrypoint_is_what_gateways_evaluate() -> None:
    served = "data." + DECISION_PATH.replace("/", ".")
    assert (served,) == rules_in_tests.ENTRYPOINTS


def test_the_project_test_files_define_only_fixtures(tmp_path: Path) -> None:
    """rego/'s tests define helpers (``steward_call``, ``at(path, mask)``) that no served rule reads."""
    texts = rules_in_tests.texts_of_test_modules(read_snapshot(REGO).files)
    assert texts, "the project's policy has tests"
    modules_input = tmp_path / "tests.json"
    modules_input.write_text(json.dumps(texts))

    def opa(args: list[str]) -> bytes:
        return subprocess.run([opa_binary(), *args], capture_output=True, check=True, cwd=tmp_path).stdout

    deps = opa(rules_in_tests.deps_args(REGO))
    parsed = opa(rules_in_tests.parse_args(modules_input))
    assert rules_in_tests.depended_on(deps, parsed) == []
    assert b"steward_call" in parsed  # the fixtures were looked at


def test_a_refusal_names_a_few_rules_and_counts_the_rest() -> None:
    found = [rules_in_tests.RuleInTestFile(f"p/{n}_test.rego", f"data.p.r{n}") for n in range(5)]
    message = rules_in_tests.refusal(found)
    assert "p/0_test.rego defines data.p.r0; p/1_test.rego defines data.p.r1" in message
    assert "(and 2 more)" in message and "r3" not in message
