"""``with ... as sprintf`` is refused at load by both in-process engines.

Review: the wasm engine vets sprintf formats at ``sprintf(`` calls only (``sprintf_findings``),
so ``concat("%x", input.args) == "ff" with concat as sprintf`` loaded, though ``%x`` is a
format it refuses at a call, and every decision reaching it failed closed at runtime
(POLICY_ERROR) where OPA decides. A format that is not a literal got through the same way.
Now any ``with ... as sprintf`` is refused when the policy loads
(POLICY_UNSUPPORTED_BY_WASM, ``sprintf_with_findings``). The embedded engine refuses sprintf
itself and every ``with`` on anything but the input: the same policies are refused there too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.reasons import POLICY_UNSUPPORTED_BY_EMBEDDED, POLICY_UNSUPPORTED_BY_WASM
from labelgate.policy.wasm import WasmEngine
from tests.policy.conftest import opa_value, write_policy
from tests.support.procs import opa_binary

RESULT = (
    'result := {"allow": allow, "reason": "r", "mask": [], '
    '"require_approval": null, "cache_ttl_seconds": 0}\n'
)
ALLOW_IF = "default allow := false\nallow if {{ {} }}"
# The review's policies: a format the engine refuses at a call, a fine one, one from the input,
# and the same on a deny path (every decision was a POLICY_ERROR deny there).
POLICIES = {
    "refused format": ALLOW_IF.format('concat("%x", input.args) == "ff" with concat as sprintf'),
    "fine format": ALLOW_IF.format('concat("%v-%v", input.args) == "1-2" with concat as sprintf'),
    "input format": ALLOW_IF.format('concat(input.f, input.args) == "ff" with concat as sprintf'),
    "deny path": (
        "default allow := true\n"
        'deny if { concat(input.f, input.args) == "ff" with concat as sprintf }\n'
        "allow := false if deny"
    ),
    "over lines, a comment between": (
        "default allow := false\n"
        'allow if {\n\tconcat("%x", input.args) == "ff" with concat as # the host builtin\n\t\tsprintf\n}'
    ),
    "a function of the policy replaced": (
        "default allow := false\n"
        "f(a, b) := concat(a, b)\n"
        'allow if { f("%x", input.args) == "ff" with f as sprintf }'
    ),
}


@pytest.fixture(autouse=True)
def _opa_for_wasm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())


@pytest.mark.parametrize(
    ("engine_class", "reason"),
    [(WasmEngine, POLICY_UNSUPPORTED_BY_WASM), (EmbeddedEngine, POLICY_UNSUPPORTED_BY_EMBEDDED)],
    ids=["wasm", "embedded"],
)
@pytest.mark.parametrize("name", sorted(POLICIES))
async def test_with_as_sprintf_is_refused_at_load(
    tmp_path: Path, name: str, engine_class: type[EmbeddedEngine], reason: str
) -> None:
    policy = write_policy(tmp_path / "p", f"{POLICIES[name]}\n{RESULT}")
    engine = engine_class(policy, watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == reason
    assert "--engine opa" in refused.value.message
    if engine_class is WasmEngine:
        assert "`with ... as sprintf`" in refused.value.message
        assert "policy.rego:" in refused.value.message


async def test_sprintf_called_as_the_value_of_a_with_still_loads(tmp_path: Path) -> None:
    """A call is vetted where it is (a literal format the host renders): only replacing is refused."""
    body = (
        'greeting := concat("", [input.x, "!"])\n'
        'result := {"allow": true, "reason": "r", "mask": [], "require_approval": null,'
        ' "cache_ttl_seconds": 0} if { greeting == "7!" with input.x as sprintf("%v", [7]) }\n'
    )
    policy = write_policy(tmp_path / "p", body)
    want = await opa_value(policy, "{}")
    engine = WasmEngine(policy, watch_interval=None)
    await engine.start()
    try:
        assert (await engine.decide({})).to_result() == want == {**want, "allow": True}
    finally:
        await engine.close()


def test_the_text_check_reads_with_as_sprintf_as_rego_does() -> None:
    from labelgate.policy.wasm_checks import sprintf_with_findings

    module = (
        "package t\n"
        'x if { concat("%x", input.a) == "ff" with concat as sprintf }\n'  # refused
        'y := sprintf("%v", [1])\n'  # a call: vetted as a call
        'z if { true with input.x as sprintf("%v", [1]) }\n'  # the value is a call
        "# with concat as sprintf\n"  # a comment
        'w := "with concat as sprintf"\n'  # a string
        "v if { data.t.sprintf_like with sprintf_like as data.t.sprintf_b }\n"
    )
    findings = sprintf_with_findings((("m.rego", module),))
    assert len(findings) == 1 and "m.rego:2" in findings[0] and "m.rego:3" not in findings[0]
