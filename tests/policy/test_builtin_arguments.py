"""Builtins the embedded engine got wrong on arguments OPA's cases never pass (review findings
1 and 2), against real OPA.

- ``strings.count(s, "")`` is the number of characters + 1 in OPA, of bytes + 1 in rego-cpp
  (``"日本"``: 3 and 7): a policy counting with a needle that is not a non-empty string
  literal is refused at load (capabilities.LITERAL_ARGUMENT_BUILTINS); a literal needle
  counts as OPA does (the hostile suite's ``strings.count/literal`` holds that on every input,
  the empty needle on non-ASCII text included).
- ``io.jwt.verify_*`` took a signature in standard base64 (``+``, ``/``) or with a stray
  ``=``, and ``io.jwt.decode`` the second, where OPA's value is undefined: a policy verifying
  a caller's token said yes to one OPA refuses. They are refused (INEXACT_BUILTINS).

The wasm engine refuses both policies as well (neither builtin is one it allows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.capabilities import INEXACT_BUILTINS
from labelgate.policy.embedded import EmbeddedEngine
from tests.policy.builtin_differential import (
    EMPTY_NEEDLE_INPUT,
    HOSTILE,
    Suite,
    embedded_results,
    jwt_suite,
    key_material,
    opa_results,
)
from tests.policy.conftest import VALID_RESULT, result_rule, write_policy
from tests.policy.opa_compliance import canonical
from tests.policy.test_rego_text import _refusals
from tests.support.procs import opa_binary

EMPTY_NEEDLE = "default n := 0\n\nn := strings.count(input.subject.id, {needle})\n\n"
# The reviewer's token: signed with "secret", its signature written with "+" and "/".
STANDARD_ALPHABET_TOKEN = (
    "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiYWRtaW4ifQ."
    "4lUTkpWCXNk0MBYUDkn89+WpDLB6Qe+6z1dk9G/8Zs0"
)


def _value(result: dict[str, Any]) -> Any:
    return result.get("value", "<undefined>" if result.get("undefined") else result)


@pytest.mark.parametrize("needle", ['""', "``", "input.request.model", 'concat("", [])', 'trim("a", "a")'])
async def test_strings_count_without_a_literal_needle_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, needle: str
) -> None:
    """The reviewer's case: `allow if n > 3` allowed the subject "日本" (7), OPA denied (3)."""
    body = EMPTY_NEEDLE.format(needle=needle) + result_rule(VALID_RESULT, "n > 3")
    messages = await _refusals(write_policy(tmp_path, body), monkeypatch)
    assert (
        "builtin `strings.count` with a needle that is not a non-empty string literal" in messages["embedded"]
    )
    assert '"日本": 7, OPA 3' in messages["embedded"]
    assert "strings.count" in messages["wasm"]


async def test_strings_count_with_a_literal_needle_loads_and_counts_characters(tmp_path: Path) -> None:
    body = 'n := [strings.count(input.subject.id, "本"), strings.count(input.subject.id, "aa")]\n\n'
    body += result_rule(VALID_RESULT, "n == [2, 2]")  # "aa" counted without overlaps, as OPA
    engine = EmbeddedEngine(write_policy(tmp_path, body), watch_interval=None)
    await engine.start()
    try:
        decision = await engine.decide({"subject": {"id": "日本本aaaaa"}})
    finally:
        await engine.close()
    assert not decision.failed_closed and decision.allow


def test_an_empty_needle_on_non_ascii_text_differs_from_opa_unless_refusals(tmp_path: Path) -> None:
    """Compiled without the load-time check, rego-cpp counts the bytes of the corpus's input:
    the refusal is earned, and the differential corpus carries the case."""
    suite = Suite(
        {"strings.count/input_needle": HOSTILE.expressions["strings.count/input_needle"]}, HOSTILE.inputs, {}
    )
    want = opa_results(opa_binary(), tmp_path, suite)
    got = embedded_results(timeout=60.0, suite=suite, unchecked=True)["strings.count/input_needle"]
    text = HOSTILE.inputs[EMPTY_NEEDLE_INPUT]["s"]
    assert want[EMPTY_NEEDLE_INPUT]["strings.count/input_needle"] == len(text) + 1
    assert _value(got[EMPTY_NEEDLE_INPUT]) == len(text.encode()) + 1
    checked = embedded_results(timeout=60.0, suite=suite)["strings.count/input_needle"]
    assert all("`strings.count` with a needle" in result.get("refused", "") for result in checked)


@pytest.fixture(scope="module")
def tokens() -> Suite:
    return jwt_suite(key_material())


def test_the_jwt_builtins_are_refused_naming_why(tokens: Suite) -> None:
    got = embedded_results(timeout=60.0, suite=tokens)
    for name, results in got.items():
        for result in results:
            assert f"`{name}` ({INEXACT_BUILTINS[name]})" in result.get("refused", ""), (name, result)


def test_the_jwt_builtins_took_tokens_opa_refuses(tmp_path: Path, tokens: Suite) -> None:
    """Compiled without the check: equal to OPA on the valid tokens, and a value (``true``, the
    claims) on an odd one where OPA has none."""
    want = opa_results(opa_binary(), tmp_path, tokens)
    got = embedded_results(timeout=60.0, suite=tokens, unchecked=True)
    accepted = {}
    for name, results in got.items():
        assert canonical(_value(results[0])) == canonical(want[0][name]), name
        accepted[name] = [
            index
            for index, result in enumerate(results[1:], start=1)
            if "value" in result and result["value"] is not False and name not in want[index]
        ]
    assert all(accepted.values()), accepted
    assert all(1 in found for name, found in accepted.items() if name != "io.jwt.decode"), accepted


async def test_the_reviewers_token_does_not_load_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = f'token := "{STANDARD_ALPHABET_TOKEN}"\n\n'
    body += result_rule(VALID_RESULT, 'io.jwt.verify_hs256(token, "secret")')
    messages = await _refusals(write_policy(tmp_path, body), monkeypatch)
    assert (
        f"builtin `io.jwt.verify_hs256` ({INEXACT_BUILTINS['io.jwt.verify_hs256']})" in messages["embedded"]
    )
    assert "io.jwt.verify_hs256" in messages["wasm"]
