"""A revision OPA's compiler refuses is refused by the embedded engine too (opa_check.py).

Each policy here was tried against both: rego-cpp (and the load-time text checks) load it,
``opa check`` of OPA 1.22.3 refuses it, so OPA would never serve it and there is no decision of
OPA's to match. The real opa binary is used (``$LABELGATE_OPA``, set by tests/conftest.py);
fake ones (shell scripts) stand in only for an old OPA, a noisy one and a stalled one.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import ConfigError
from labelgate.policy import opa_check
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.opa_check import MESSAGE_LIMIT, OpaChecker
from labelgate.policy.source import PolicySource
from tests.policy.conftest import REGO, VALID_RESULT, result_rule, write_policy
from tests.support.procs import opa_binary

# name -> (a body OPA refuses and rego-cpp loads, what OPA says about it)
REFUSED_BY_OPA_ONLY = {
    "referenced_before_some": (
        "ok if {\n\tinput.a[x] == 1\n\tsome x in input.b\n}\n",
        "policy.rego:5: rego_compile_error: var x referenced above",
    ),
    "unsafe_in_negation": (
        "ok if {\n\tnot x == 1\n}\n",
        "policy.rego:4: rego_unsafe_var_error: var x is unsafe",
    ),
    "unsafe_head": ("ok := y if {\n\tinput.a == 1\n}\n", "rego_unsafe_var_error: var y is unsafe"),
    "v0_body_without_if": ("ok { true }\n", "`if` keyword is required before rule body"),
    "recursive_rules": ("ok if q\n\nq if ok\n", "rego_recursion_error"),
    "type_error_in_a_builtin": ("ok if count(5) == 1\n", "rego_type_error: count: invalid argument(s)"),
    # sort is compiled as a call of a Rego function of the engine's (exact_modules): checking
    # the policy's own text is what keeps OPA's type error.
    "type_error_in_a_guarded_builtin": (
        "ok if sort(5) == [5]\n",
        "rego_type_error: sort: invalid argument(s)",
    ),
}


def _policy(directory: Path, body: str) -> Path:
    return write_policy(directory, body + "\n" + result_rule(VALID_RESULT), data={"roles": {}})


def _opa_refuses(folder: Path) -> str:
    done = subprocess.run([opa_binary(), "check", "--bundle", str(folder)], capture_output=True, text=True)
    assert done.returncode != 0, "OPA accepts this policy: it is no example of a gap"
    return done.stderr + done.stdout


async def _load(folder: Path, **options: Any) -> ConfigError | None:
    engine = EmbeddedEngine(folder, watch_interval=None, **options)
    try:
        await engine.start()
        return None
    except ConfigError as error:
        return error
    finally:
        await engine.close()


def _fake_opa(directory: Path, script: str) -> str:
    path = directory / "opa"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("name", sorted(REFUSED_BY_OPA_ONLY))
async def test_a_policy_opa_refuses_is_refused_at_load(name: str, tmp_path: Path) -> None:
    body, opa_says = REFUSED_BY_OPA_ONLY[name]
    folder = _policy(tmp_path, body)
    assert opa_says in _opa_refuses(folder)
    assert await _load(folder, opa_check="off") is None  # the gap: rego-cpp and the text checks load it
    refused = await _load(folder)
    assert refused is not None and refused.reason == "POLICY_REJECTED_BY_OPA"
    assert "OPA refuses this policy" in refused.message and opa_says in refused.message
    # the module's name, not the temporary folder's
    assert "labelgate/decision/policy.rego:" in refused.message


async def test_a_rule_on_a_data_path_is_refused_as_opa_refuses_it(tmp_path: Path) -> None:
    """The data goes to OPA too: a rule and data on one path conflict there, not in rego-cpp."""
    folder = _policy(tmp_path, "")
    (folder / "labelgate" / "tables" / "extra.rego").write_text("package labelgate.tables\n\nroles := {}\n")
    assert "conflicting rule for data path labelgate/tables/roles" in _opa_refuses(folder)
    assert await _load(folder, opa_check="off") is None
    refused = await _load(folder)
    assert refused is not None and refused.reason == "POLICY_REJECTED_BY_OPA"
    assert "labelgate/tables/extra.rego:3: rego_compile_error: conflicting rule" in refused.message


async def test_a_followed_revision_opa_refuses_leaves_the_one_in_force_deciding(tmp_path: Path) -> None:
    engine = EmbeddedEngine(REGO, watch_interval=None)
    await engine.start()
    try:
        before = engine.revision
        body, _ = REFUSED_BY_OPA_ONLY["referenced_before_some"]
        with pytest.raises(ConfigError) as refused:
            await engine.load(PolicySource.from_dir(_policy(tmp_path / "next", body)))
        assert refused.value.reason == "POLICY_REJECTED_BY_OPA"
        assert engine.revision == before
        decision: Any = await engine.decide({"version": "labelgate.v1"})
        assert decision.engine == "embedded" and decision.revision == before
    finally:
        await engine.close()


def test_the_default_pack_passes_opa_check() -> None:
    source = PolicySource.from_dir(REGO)
    check = OpaChecker("required").begin(source.modules, "{}", "rego")
    assert check is not None
    check.result()


async def test_the_default_pack_loads_with_the_check_required() -> None:
    assert await _load(REGO, opa_check="required") is None


async def test_a_policy_refused_for_another_reason_keeps_that_reason(tmp_path: Path) -> None:
    """OPA is asked last: a refusal of rego-cpp's or the text checks' is not renamed."""
    folder = _policy(tmp_path, "default ok := false\n\ndefault ok := true\n")  # both refuse it
    _opa_refuses(folder)
    refused = await _load(folder)
    assert refused is not None and refused.reason == "POLICY_COMPILE_FAILED"


async def test_off_never_runs_opa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_OPA", _fake_opa(tmp_path, "exit 1\n"))  # would refuse everything
    body, _ = REFUSED_BY_OPA_ONLY["unsafe_in_negation"]
    assert await _load(_policy(tmp_path / "p", body), opa_check="off") is None


def _without_opa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABELGATE_OPA", raising=False)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_required_without_an_opa_is_a_clear_start_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_opa(tmp_path, monkeypatch)
    with pytest.raises(ConfigError) as refused:
        EmbeddedEngine(REGO, watch_interval=None, opa_check="required")
    assert refused.value.reason == "OPA_BINARY_MISSING"
    assert "policy.opa_check is required" in refused.value.message
    assert "neither $LABELGATE_OPA is set nor `opa` on PATH" in refused.value.message


async def test_auto_without_an_opa_loads_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _without_opa(tmp_path, monkeypatch)
    monkeypatch.setattr(opa_check, "_said", set())
    body, _ = REFUSED_BY_OPA_ONLY["unsafe_in_negation"]
    with caplog.at_level(logging.INFO, logger="labelgate.policy.opa_check"):
        assert await _load(_policy(tmp_path / "a", body)) is None
        assert await _load(_policy(tmp_path / "b", body)) is None
    skipped = [r for r in caplog.records if r.getMessage() == "policy_opa_check_skipped"]
    assert len(skipped) == 1 and skipped[0].levelno == logging.INFO


async def test_an_opa_older_than_1_0_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its `opa check` reads Rego v0 and would refuse every v1 policy, the default pack included."""
    old = 'if [ "$1" = version ]; then echo "Version: 0.70.0"; exit 0; fi\nexit 1\n'  # refuses all
    monkeypatch.setenv("LABELGATE_OPA", _fake_opa(tmp_path, old))
    assert await _load(REGO) is None
    refused = await _load(REGO, opa_check="required")
    assert refused is not None and refused.reason == "OPA_BINARY_MISSING"
    assert "older than 1.0" in refused.message


def test_opa_s_words_are_bounded_and_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noisy = 'if [ "$1" = version ]; then echo "Version: 1.22.3"; exit 0; fi\n'
    noisy += "i=0; while [ $i -lt 400 ]; do i=$((i+1))\n"
    noisy += "printf 'x.rego:1: error \\033[31m\\001 number %s\\n' $i >&2; done\n"
    noisy += "exit 1\n"
    monkeypatch.setenv("LABELGATE_OPA", _fake_opa(tmp_path, noisy))
    check = OpaChecker("required").begin((("p.rego", "package p\n"),), "{}", "origin")
    assert check is not None
    with pytest.raises(ConfigError) as refused:
        check.result()
    message = refused.value.message
    assert refused.value.reason == "POLICY_REJECTED_BY_OPA" and "x.rego:1: error" in message
    assert len(message) < MESSAGE_LIMIT + 200
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in message)


def test_a_stalled_opa_is_a_refusal_and_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    stalls = 'if [ "$1" = version ]; then echo "Version: 1.22.3"; exit 0; fi\n'
    stalls += f'echo $$ > "{pid_file}"\nexec sleep 600\n'
    monkeypatch.setenv("LABELGATE_OPA", _fake_opa(tmp_path, stalls))
    monkeypatch.setattr(opa_check, "TIMEOUT_SECONDS", 0.0)  # already past its deadline when asked
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    check = OpaChecker("required").begin((("p.rego", "package p\n"),), "{}", "origin")
    assert check is not None
    with pytest.raises(ConfigError) as refused:
        check.result()
    assert refused.value.reason == "POLICY_REJECTED_BY_OPA" and "did not finish" in refused.value.message
    assert list(scratch.iterdir()) == []  # the private folder is gone
    if pid_file.exists():  # the script may not have got that far before it was killed
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)


def test_the_folder_is_private_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    peeks = 'if [ "$1" = version ]; then echo "Version: 1.22.3"; exit 0; fi\n'
    peeks += f'stat -c %a . > "{seen}"; find . -type f | sort >> "{seen}"\n'
    monkeypatch.setenv("LABELGATE_OPA", _fake_opa(tmp_path, peeks))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    modules = (("a/p.rego", "package a\n"), ("../escape.rego", "package b\n"), ("/abs.rego", "package c\n"))
    check = OpaChecker("required").begin(modules, '{"a": {"x": 1}}', "origin")
    assert check is not None
    check.result()
    assert seen.read_text().split() == [
        "700",
        "./__labelgate_module_1.rego",
        "./__labelgate_module_2.rego",
        "./a/p.rego",
        "./data.json",
    ]
    assert list(scratch.iterdir()) == []
