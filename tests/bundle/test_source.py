"""The source folder: what a snapshot holds, when an edit is noticed, and OPA's verdict on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.bundle.build import build_bundle
from labelgate.bundle.source import OpaValidator, PolicyRejected, fingerprint, read_snapshot
from labelgate.errors import ConfigError
from tests.bundle.helpers import set_plain_ttl, write_atomically
from tests.support.procs import opa_binary


def validate(source: Path) -> None:
    snapshot = read_snapshot(source)
    OpaValidator(opa_binary()).validate(snapshot, build_bundle(snapshot.files))


def test_snapshot_holds_policy_data_and_tests_but_no_hidden_or_other_files(policy_source: Path) -> None:
    (policy_source / ".git").mkdir()
    (policy_source / ".git" / "x.rego").write_text("package x\n")
    (policy_source / "labelgate" / ".decision.rego.swp").write_text("junk")
    (policy_source / "README.md").write_text("# notes")
    names = [name for name, _ in read_snapshot(policy_source).files]
    assert names == sorted(names)
    assert "labelgate/bundle_probe_test.rego" in names
    assert "labelgate/tables/data.json" in names
    assert not [name for name in names if name.startswith(".") or "/." in name or name.endswith(".md")]


def test_fingerprint_notices_edits_additions_and_removals(policy_source: Path) -> None:
    seen = fingerprint(policy_source)
    assert fingerprint(policy_source) == seen
    set_plain_ttl(policy_source, 61)
    edited = fingerprint(policy_source)
    assert edited != seen
    extra = policy_source / "labelgate" / "extra.rego"
    extra.write_text("package labelgate.extra\n")
    added = fingerprint(policy_source)
    assert added != edited
    extra.unlink()
    assert fingerprint(policy_source) == edited
    (policy_source / "notes.txt").write_text("not policy")
    assert fingerprint(policy_source) == edited


def test_the_project_policy_copy_passes(policy_source: Path) -> None:
    validate(policy_source)


def test_a_syntax_error_fails_opa_check_with_the_file_named(policy_source: Path) -> None:
    (policy_source / "labelgate" / "decision" / "broken.rego").write_text(
        "package labelgate.decision\n\nbroken if {\n"
    )
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_CHECK_FAILED"
    assert "labelgate/decision/broken.rego" in error.value.message
    assert "labelgate-bundle-" not in error.value.output  # scratch paths are not shown


def test_a_strict_mode_error_fails_opa_check(policy_source: Path) -> None:
    (policy_source / "labelgate" / "decision" / "sloppy.rego").write_text(
        "package labelgate.decision\n\nsloppy if {\n\tunused := 1\n\ttrue\n}\n"
    )
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_CHECK_FAILED"
    assert "unused" in error.value.output


def test_each_check_error_is_named_with_its_file_and_line(policy_source: Path) -> None:
    """Not OPA's "2 errors occurred": each error, as file:line: message, in the one line that
    the status and the fleet page show."""
    (policy_source / "labelgate" / "decision" / "twice.rego").write_text(
        "package labelgate.decision\n\nfirst if {\n\tx := 1\n\ttrue\n}\n\nsecond if {\n\ty := 2\n\ttrue\n}\n"
    )
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_CHECK_FAILED"
    assert "errors occurred" not in error.value.message
    assert "labelgate/decision/twice.rego:4: " in error.value.message
    assert "labelgate/decision/twice.rego:9: " in error.value.message


def test_a_failing_test_fails_opa_test_with_the_test_named(policy_source: Path) -> None:
    set_plain_ttl(policy_source, -5)
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_TEST_FAILED"
    assert "test_plain_cache_ttl_is_not_negative" in error.value.message


def test_data_that_clashes_with_a_rule_fails_opa_check(policy_source: Path) -> None:
    """The bundle itself is checked, data included: data.labelgate.decision.result is a rule."""
    write_atomically(policy_source / "labelgate" / "decision" / "data.json", b'{"result": 1}')
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_CHECK_FAILED"
    assert "conflicting rule" in error.value.message


def test_a_missing_opa_binary_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        OpaValidator(str(tmp_path / "no-opa"))
    assert error.value.reason == "OPA_BINARY_MISSING"


def test_a_missing_source_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        read_snapshot(tmp_path / "nowhere")
    assert error.value.reason == "BUNDLE_SOURCE_MISSING"


def test_a_link_to_a_file_outside_the_source_is_refused_naming_it(
    policy_source: Path, tmp_path: Path
) -> None:
    """A policy author's symlink (say, in a git PR) must not publish a host file to every instance."""
    secret = tmp_path / "host-secret.json"
    secret.write_text('{"private_key": "-----BEGIN PRIVATE KEY-----"}')
    leak = policy_source / "labelgate" / "leak"
    leak.mkdir()
    (leak / "data.json").symlink_to(secret)
    for read in (read_snapshot, fingerprint):
        with pytest.raises(ConfigError) as refused:
            read(policy_source)
        assert refused.value.reason == "BUNDLE_FILE_INVALID"
        assert "labelgate/leak/data.json is a symbolic link to" in refused.value.message
        assert (
            str(secret.resolve()) in refused.value.message
            and "outside the source folder" in refused.value.message
        )
    (leak / "data.json").unlink()
    (tmp_path / "elsewhere").mkdir()
    (leak / "x.rego").symlink_to(tmp_path / "elsewhere" / ".." / "host-secret.json")  # through `..`
    with pytest.raises(ConfigError):
        read_snapshot(policy_source)


def test_links_inside_the_source_and_a_linked_source_folder_read(policy_source: Path, tmp_path: Path) -> None:
    """git-sync serves its checkout through a link, and a repository may link one file to another."""
    tables = policy_source / "labelgate" / "tables" / "data.json"
    (policy_source / "labelgate" / "copy").mkdir()
    (policy_source / "labelgate" / "copy" / "data.json").symlink_to(Path("..") / "tables" / "data.json")
    linked = tmp_path / "current"
    linked.symlink_to(policy_source)
    files = dict(read_snapshot(linked).files)
    assert files["labelgate/copy/data.json"] == files["labelgate/tables/data.json"] == tables.read_bytes()
    assert fingerprint(linked)


# A production rule written in a test file: `opa test` passes with it, the served bundle (which
# leaves test files out) lacks it, and every gateway allows what the test showed denied.
QUARANTINE_IN_A_TEST = """package labelgate.decision

# Quarantined models: every call to them is refused.
_model_admin_denied if input.request.model == "customer-profile"

test_quarantined_model_is_refused if {
	_model_admin_denied with input as {"request": {"model": "customer-profile"}}
}
"""


def test_a_rule_the_decision_uses_in_a_test_file_is_refused_naming_it(policy_source: Path) -> None:
    (policy_source / "labelgate" / "decision" / "quarantine_test.rego").write_text(QUARANTINE_IN_A_TEST)
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_RULE_IN_TEST_FILE"
    assert (
        "labelgate/decision/quarantine_test.rego defines data.labelgate.decision._model_admin_denied"
        in error.value.message
    )
    assert "move each such rule to a module whose name does not end in _test.rego" in error.value.message
    assert error.value.output == (
        "labelgate/decision/quarantine_test.rego: data.labelgate.decision._model_admin_denied"
    )
    assert "labelgate-bundle-" not in error.value.message


def test_fixtures_in_a_test_file_are_allowed(policy_source: Path) -> None:
    """Inputs, expected values and helper functions that only tests read are not served policy."""
    (policy_source / "labelgate" / "decision" / "fixtures_test.rego").write_text(
        """package labelgate.decision

steward_call := {"request": {"model": "customer-profile", "method": "ModelReady"}}

at(path, mask) := object.union({"path": path}, mask)

_fixture_ttl := 5

test_fixtures_are_usable if {
	at("outputs.ssn", {"kind": "hash"}).path == "outputs.ssn"
	steward_call.request.model == "customer-profile"
	_fixture_ttl == 5
}
"""
    )
    validate(policy_source)


# (production module or None, test module path, test module, the rule the refusal names)
VARIANTS = {
    "else": (
        """package labelgate.decision

default _quarantine_level := 0

_model_admin_denied if _quarantine_level > 0
""",
        "labelgate/decision/quarantine_test.rego",
        """package labelgate.decision

_quarantine_level := 2 if input.request.model == "customer-profile" else := 0

test_quarantine_level if _quarantine_level == 2 with input as {"request": {"model": "customer-profile"}}
""",
        "data.labelgate.decision._quarantine_level",
    ),
    "function": (
        """package labelgate.decision

_quarantined(model) if model == "retired-model"

_model_admin_denied if _quarantined(input.request.model)
""",
        "labelgate/decision/quarantine_test.rego",
        """package labelgate.decision

_quarantined(model) if model == "customer-profile"

test_quarantined if _quarantined("customer-profile")
""",
        "data.labelgate.decision._quarantined",
    ),
    "import": (
        """package labelgate.decision

import data.labelgate.quarantine

_model_admin_denied if input.request.model in quarantine.models
""",
        "labelgate/quarantine/models_test.rego",
        """package labelgate.quarantine

models contains "customer-profile"

test_customer_profile_is_quarantined if "customer-profile" in models
""",
        "data.labelgate.quarantine.models",
    ),
    "dynamic key": (
        """package labelgate.decision

_model_admin_denied if data.labelgate.quarantine[input.request.model]
""",
        "labelgate/quarantine_test.rego",
        """package labelgate

quarantine["customer-profile"] := true

test_customer_profile_is_quarantined if quarantine["customer-profile"]
""",
        'data.labelgate.quarantine["customer-profile"]',
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_test_file_rule_reached_through_else_functions_imports_or_keys_is_refused(
    policy_source: Path, variant: str
) -> None:
    production, test_path, test_module, rule = VARIANTS[variant]
    (policy_source / "labelgate" / "decision" / "quarantine.rego").write_text(production)
    (policy_source / test_path).parent.mkdir(parents=True, exist_ok=True)
    (policy_source / test_path).write_text(test_module)
    with pytest.raises(PolicyRejected) as error:
        validate(policy_source)
    assert error.value.reason == "POLICY_RULE_IN_TEST_FILE", error.value.message
    assert f"{test_path} defines {rule}," in error.value.message
