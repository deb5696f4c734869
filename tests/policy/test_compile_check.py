"""A policy rego-cpp aborts on is refused, and the gateway lives on (compile_check.py).

Found by fuzzing: rego-cpp 1.5.2 throws out of its compiler (``shape 'rego-localref' has no
field 'rego-refhead'``) and the process aborts, on a policy OPA accepts: loaded in process, it
took the gateway down at start or on the next bundle."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.source import PolicySource
from tests.policy.conftest import REGO, VALID_RESULT, result_rule, write_policy
from tests.support.procs import opa_binary

ABORTS_REGO_CPP = (
    'role := object.get(data.labelgate.tables.roles, input.user.role, ["none"]) if true\n\n'
    'shown := v if {\n\tv := role with input as {"user": {"role": "x"}}\n}\n\n'
)


def _policy(directory: Path) -> Path:
    return write_policy(directory, ABORTS_REGO_CPP + result_rule(VALID_RESULT), data={"roles": {}})


def test_opa_accepts_the_policy(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    subprocess.run([opa_binary(), "check", str(policy)], check=True, capture_output=True)


async def test_a_policy_rego_cpp_aborts_on_is_refused_at_start(tmp_path: Path) -> None:
    engine = EmbeddedEngine(_policy(tmp_path), watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == "POLICY_COMPILE_FAILED"
    assert "crashed compiling it" in refused.value.message and "--engine opa" in refused.value.message


async def test_the_revision_in_force_keeps_deciding_when_the_next_one_aborts(tmp_path: Path) -> None:
    engine = EmbeddedEngine(REGO, watch_interval=None)
    await engine.start()
    try:
        before = engine.revision
        with pytest.raises(ConfigError):
            await engine.load(PolicySource.from_dir(_policy(tmp_path / "next")))
        assert engine.revision == before
        decision: Any = await engine.decide({"version": "labelgate.v1"})
        assert decision.engine == "embedded" and decision.revision == before
    finally:
        await engine.close()
