"""Loading a policy folder the way OPA loads a bundle: modules, data at its directory path,
a content-hash revision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.source import PolicySource, policy_fingerprint


def make_tree(root: Path) -> Path:
    (root / "labelgate" / "decision").mkdir(parents=True)
    (root / "labelgate" / "decision" / "main.rego").write_text("package labelgate.decision\n\nx := 1\n")
    (root / "labelgate" / "decision" / "main_test.rego").write_text(
        "package labelgate.decision\n\ntest_x if x == 1\n"
    )
    (root / "labelgate" / "tables").mkdir(parents=True)
    (root / "labelgate" / "tables" / "data.json").write_text(json.dumps({"rank": {"public": 0}}))
    (root / "labelgate" / "catalog").mkdir(parents=True)
    (root / "labelgate" / "catalog" / "data.yaml").write_text("default_label: internal\n")
    (root / "data.json").write_text(json.dumps({"labelgate": {"flags": {"strict": True}}, "top": 1}))
    (root / ".git").mkdir()
    (root / ".git" / "data.json").write_text('{"ignored": true}')
    (root / "labelgate" / "notes.json").write_text('{"not": "data"}')
    return root


def test_modules_and_data_land_at_their_directory_paths(tmp_path: Path) -> None:
    source = PolicySource.from_dir(make_tree(tmp_path / "p"))
    assert [name for name, _ in source.modules] == ["labelgate/decision/main.rego"]  # *_test.rego excluded
    assert source.data == {
        "top": 1,
        "labelgate": {
            "flags": {"strict": True},
            "tables": {"rank": {"public": 0}},
            "catalog": {"default_label": "internal"},
        },
    }


def test_revision_is_a_content_hash(tmp_path: Path) -> None:
    first = PolicySource.from_dir(make_tree(tmp_path / "a"))
    copy = PolicySource.from_dir(shutil.copytree(tmp_path / "a", tmp_path / "b"))
    assert len(first.revision) == 64 and first.revision == copy.revision  # same bytes, same revision
    (tmp_path / "b" / "labelgate" / "tables" / "data.json").write_text(json.dumps({"rank": {"public": 1}}))
    assert PolicySource.from_dir(tmp_path / "b").revision != first.revision
    # A test file or an ignored file changes nothing the engine loads, so not the revision.
    (tmp_path / "a" / "labelgate" / "decision" / "main_test.rego").write_text("package labelgate.decision\n")
    (tmp_path / "a" / "labelgate" / "notes.json").write_text("{}")
    assert PolicySource.from_dir(tmp_path / "a").revision == first.revision


def test_fingerprint_follows_loaded_files_only(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p")
    before = policy_fingerprint(root)
    (root / "labelgate" / "notes.json").write_text('{"changed": true}')
    assert policy_fingerprint(root) == before
    (root / "labelgate" / "decision" / "extra.rego").write_text("package labelgate.decision\n\ny := 2\n")
    assert policy_fingerprint(root) != before


def test_conflicting_data_is_rejected(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p")
    (root / "data.json").write_text(json.dumps({"labelgate": {"tables": {"rank": 5}}}))
    with pytest.raises(ConfigError) as caught:
        PolicySource.from_dir(root)
    assert caught.value.reason == "POLICY_DATA_CONFLICT"
    assert "data.labelgate.tables.rank" in caught.value.message


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"p.rego": "package x\n", "data.json": "{not json"}, "POLICY_DATA_INVALID"),
        ({"p.rego": "package x\n", "data.json": "[1, 2]"}, "POLICY_DATA_INVALID"),
        ({"p.rego": "package x\n", "data.json": '{"name": "a\\udc80b"}'}, "POLICY_DATA_INVALID"),
        ({"p.rego": "package x\n", "data.json": '{"a\\ud800": 1}'}, "POLICY_DATA_INVALID"),
        ({"data.json": "{}"}, "POLICY_EMPTY"),
    ],
)
def test_broken_folders_are_configuration_errors(tmp_path: Path, files: dict[str, str], reason: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        PolicySource.from_dir(tmp_path)
    assert caught.value.reason == reason


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicySource.from_dir(tmp_path / "nope")
    assert caught.value.reason == "POLICY_DIR_MISSING"


def test_yaml_data_files_are_named_for_the_engines_that_refuse_them(tmp_path: Path) -> None:
    source = PolicySource.from_dir(make_tree(tmp_path / "p"))
    assert source.yaml_files == ("labelgate/catalog/data.yaml",)
    with pytest.raises(ConfigError) as raised:
        source.refuse_yaml_data("embedded")
    assert raised.value.reason == "BUNDLE_DATA_UNSUPPORTED"
    assert "labelgate/catalog/data.yaml" in raised.value.message and "--engine opa" in raised.value.message
    (tmp_path / "p" / "labelgate" / "catalog" / "data.yaml").unlink()
    PolicySource.from_dir(tmp_path / "p").refuse_yaml_data("embedded")  # JSON only: fine


def _data_source(root: Path, data: str) -> PolicySource:
    (root / "t").mkdir(parents=True)
    (root / "t" / "t.rego").write_text("package t\n\nx := data.limits.threshold > 0.1\n")
    (root / "limits").mkdir()
    (root / "limits" / "data.json").write_text(data)
    return PolicySource.from_dir(root)


@pytest.mark.parametrize(
    "number", ["0.1000000000000000055511151231257827", "12345678901234567890.5", "1e400", "1e-400"]
)
def test_a_data_number_a_float_does_not_hold_is_refused_by_the_in_process_engines(
    tmp_path: Path, number: str
) -> None:
    """OPA compares the number as written; the in-process engines get a Python float."""
    from labelgate.policy.embedded import _Compiled
    from labelgate.policy.wasm import _WasmCompiled

    source = _data_source(tmp_path / "p", f'{{"threshold": {number}, "fine": 0.1}}')
    assert source.inexact_numbers == (("limits/data.json", number),)  # read: OPA itself takes it
    with pytest.raises(ConfigError) as refused:
        source.refuse_yaml_data("embedded")  # what both in-process engines call as they load
    assert refused.value.reason == "POLICY_DATA_INVALID"
    assert f"limits/data.json: {number}" in refused.value.message
    assert "the embedded engine" in refused.value.message and "--engine opa" in refused.value.message
    with pytest.raises(ConfigError) as wasm:
        _WasmCompiled.build(source, "t/x")
    assert wasm.value.reason == "POLICY_DATA_INVALID" and f"limits/data.json: {number}" in wasm.value.message
    with pytest.raises(ConfigError) as embedded:  # an infinite number is refused sooner, as not JSON
        _Compiled.build(source, "t/x")
    assert embedded.value.reason == "POLICY_DATA_INVALID"


def test_data_numbers_a_float_holds_load(tmp_path: Path) -> None:
    # Not 1E2 nor -0.0: whole numbers written as floats are refused (whole_numbers.py).
    numbers = "[0.1, 1E-2, 2.5e-3, -0.5, 0.30000000000000004, 1.7976931348623157e308, 9007199254740993, "
    numbers += "12345678901234567890123]"
    source = _data_source(tmp_path / "p", f'{{"threshold": 0.2, "all": {numbers}}}')
    assert source.inexact_numbers == ()
    source.refuse_yaml_data("embedded")
    assert source.data["limits"]["all"][-2:] == [9007199254740993, 12345678901234567890123]  # ints stay exact


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_data_that_is_not_json_is_invalid(tmp_path: Path, constant: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _data_source(tmp_path / "p", f'{{"threshold": {constant}}}')
    assert (
        refused.value.reason == "POLICY_DATA_INVALID"
        and f"{constant} is not a JSON number" in refused.value.message
    )


DUPLICATE_LABELS = (
    b'{"default_label": "internal", "entries": [{"model": "customer-profile", "path": "outputs.ssn",'
    b' "labels": ["restricted"], "labels": ["public"]}]}'
)


def test_a_data_file_with_a_key_twice_is_refused(tmp_path: Path) -> None:
    """json.loads would keep the last "labels" (public): refused, as the catalog file is (s14)."""
    with pytest.raises(ConfigError) as error:
        PolicySource.from_files(
            [("p.rego", b"package p\n"), ("labelgate/catalog/data.json", DUPLICATE_LABELS)], origin="test"
        )
    assert error.value.reason == "POLICY_DATA_INVALID"
    assert "labelgate/catalog/data.json: key 'labels' appears twice in one object" in error.value.message


def test_a_signed_bundle_with_a_key_twice_is_refused() -> None:
    """Signed by hand (the builder refuses it too): the gateway's own check, not the builder's."""
    from labelgate.bundle.build import MANIFEST, SIGNATURES, write_tarball
    from labelgate.bundle.signing import Signer
    from labelgate.policy.source import BundleKey
    from tests.bundle.helpers import make_key_pair

    rsa_keys = make_key_pair("RS256")

    members = [
        (MANIFEST, b'{"revision":"r1","roots":["labelgate","p"]}'),
        ("labelgate/catalog/data.json", DUPLICATE_LABELS),
        ("p/p.rego", b"package p\n"),
    ]
    signatures = Signer.from_pem(rsa_keys.private_pem).signatures_file(members)
    tarball = write_tarball([members[0], (SIGNATURES, signatures), *members[1:]])
    with pytest.raises(ConfigError) as error:
        PolicySource.from_bundle(tarball, verify=BundleKey(rsa_keys.public_pem))
    assert error.value.reason == "POLICY_DATA_INVALID" and "appears twice" in error.value.message


def test_a_folder_revision_ignores_the_data_layout(tmp_path: Path) -> None:
    """The same scheme as the bundle builder, which serves data.json in canonical form."""
    files = [("p.rego", b"package p\n"), ("a/data.json", b'{"b": 1.50, "a": 1}')]
    spread = [("p.rego", b"package p\n"), ("a/data.json", b'{\n  "a": 1,\n  "b": 1.50\n}\n')]
    assert (
        PolicySource.from_files(files, origin="x").revision
        == PolicySource.from_files(spread, origin="x").revision
    )
