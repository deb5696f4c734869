"""OPA's compliance suite against the embedded engine (regopy), and the allow-list it justifies.

Runs every case under ``v1/test/cases/testdata/v1`` of the pinned opa Go module (put in the
module cache by ``make tools``) the way embedded.py evaluates a policy (see
tests/policy/opa_compliance.py). Fails when a case fails that compliance_failures.yaml does
not list, when a listed case passes (so the list stays honest), and when
``SUPPORTED_BUILTINS`` holds a builtin no passing case calls or a listed failure is blamed on.
docs/EMBEDDED_COMPLIANCE.md is the same run as a report:
``.venv/bin/python -m tests.policy.opa_compliance report``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.capabilities import NONDETERMINISTIC, SUPPORTED_BUILTINS
from tests.policy.opa_compliance import (
    builtin_evidence,
    cases_dir,
    iter_mismatches,
    known_failures,
    run_all,
)


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    root = cases_dir()
    if root is None:
        # Not a skip: with CI=true a skip fails the run anyway, and silence would hide the gap.
        pytest.fail("OPA v1.22.3 compliance cases not in the Go module cache: run `make tools`")
    assert isinstance(root, Path)
    started = time.monotonic()
    found = run_all(root)
    print(f"\n{len(found)} OPA compliance cases in {time.monotonic() - started:.1f}s")
    return found


def test_every_case_passes_or_is_a_reviewed_failure(results: dict[str, dict[str, Any]]) -> None:
    assert len(results) > 2000  # the whole suite ran, not a stray folder
    problems = list(iter_mismatches(results, known_failures()))
    assert not problems, "\n".join(problems)


def test_the_allow_list_is_what_the_cases_justify(results: dict[str, dict[str, Any]]) -> None:
    evidence = builtin_evidence(results)
    blamed = {entry["blame"] for entry in known_failures().values()}
    unproven = sorted(name for name in SUPPORTED_BUILTINS if not evidence.get(name, {}).get("pass"))
    assert not unproven, f"allowed builtins that no passing case calls: {unproven}"
    assert not sorted(SUPPORTED_BUILTINS & blamed), "allowed builtins that listed failures are blamed on"
    assert not SUPPORTED_BUILTINS & NONDETERMINISTIC
    # Whatever the text scanner misses the plan shows: a builtin it cannot see, it cannot refuse.
    missed = {name for result in results.values() for name in result.get("scanner_missed", [])}
    assert not missed, f"builtins in rego-cpp's plans the text scanner did not find: {sorted(missed)}"
