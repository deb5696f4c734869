"""A builtin error inside a deny rule is a deny on the opa engine, as on the embedded one
(review: OPA turned the error into undefined, so ``allow if not deny`` held and the caller
was allowed). Against a real ``opa run --server``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from labelgate.policy.opa import OpaEngine
from tests.policy.conftest import VALID_RESULT, opa, write_policy

# Deny callers whose token carries more than 3 roles: ``count`` of a number is a builtin error.
POLICY = f"""deny if count(input.subject.attributes.roles) > 3

default allow := false

allow if not deny

result := object.union({json.dumps(VALID_RESULT)}, {{"allow": allow}})
"""


@pytest.fixture(scope="module")
def opa_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = write_policy(tmp_path_factory.mktemp("policy"), POLICY)
    with opa(tmp_path_factory.mktemp("log"), folder) as (url, _):
        yield url


async def decide(url: str, roles: object) -> tuple[bool, str | None]:
    engine = OpaEngine(url, timeout=5.0)
    try:
        decision = await engine.decide({"subject": {"id": "a", "attributes": {"roles": roles}}})
    finally:
        await engine.close()
    return decision.allow, decision.fail_reason


async def test_the_policy_decides_the_inputs_it_can_read(opa_url: str) -> None:
    assert await decide(opa_url, ["admin"]) == (True, None)
    assert await decide(opa_url, ["a", "b", "c", "d"]) == (False, None)


async def test_a_builtin_error_in_a_deny_rule_is_a_logged_fail_closed_deny(
    opa_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="labelgate.policy.opa"):
        assert await decide(opa_url, 5) == (False, "POLICY_ERROR_500")
    (logged,) = [r for r in caplog.records if r.msg == "opa_error_status"]
    # OPA's error codes and where in the policy, never its message (it may quote input values).
    assert [code for code, _ in logged.errors] == ["eval_type_error"]
    assert "number" not in str(vars(logged))
