"""Bundle building: reproducible bytes, content revisions, roots, and a tarball OPA loads."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from labelgate.bundle.build import (
    MANIFEST,
    SEQUENCE,
    build_bundle,
    bundle_roots,
    content_revision,
    manifest_sequence,
    read_tarball,
    write_tarball,
)
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import read_snapshot
from labelgate.errors import InvalidInput
from tests.bundle.helpers import REGO, TABLES, KeyPair, example_input, set_plain_ttl
from tests.support.procs import opa_binary

MODULE = b"package labelgate.decision\n\nresult := {}\n"


def test_the_same_source_builds_the_same_bytes(policy_source: Path, tmp_path: Path) -> None:
    first = build_bundle(read_snapshot(policy_source).files)
    # A copy made later has other mtimes, inodes and directory order: none of it may leak in.
    copy = tmp_path / "copy"
    shutil.copytree(policy_source, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    second = build_bundle(read_snapshot(copy).files)
    assert first.tarball == second.tarball
    assert first.revision == second.revision
    assert gzip.decompress(first.tarball)  # a valid gzip stream
    assert first.tarball[4:8] == b"\0\0\0\0"  # gzip header mtime 0


def test_tarball_members_are_sorted_and_stripped_of_local_details(policy_source: Path) -> None:
    bundle = build_bundle(read_snapshot(policy_source).files)
    with tarfile.open(fileobj=io.BytesIO(bundle.tarball), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [member.name for member in members]
    assert names[0] == MANIFEST
    assert names[1:] == sorted(names[1:])
    assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "") for m in members)


def test_tests_are_run_not_served(policy_source: Path) -> None:
    bundle = build_bundle(read_snapshot(policy_source).files)
    names = [name for name, _ in bundle.files]
    assert "labelgate/bundle_probe_test.rego" not in names
    assert not any(name.endswith("_test.rego") for name in names)
    assert {TABLES, "labelgate/catalog/data.json", "labelgate/decision/decision.rego"} <= set(names)


def test_manifest_names_revision_roots_and_rego_version(policy_source: Path) -> None:
    bundle = build_bundle(read_snapshot(policy_source).files)
    manifest = json.loads(dict(bundle.files)[MANIFEST])
    assert manifest == {"revision": bundle.revision, "roots": ["labelgate"], "rego_version": 1}


def test_a_signed_bundle_carries_a_sequence_above_every_earlier_build(rsa_keys: KeyPair) -> None:
    """The signed manifest orders revisions (content hashes do not), so a gateway can refuse an
    older one replayed to it; OPA ignores metadata it does not know."""
    signer = Signer.from_pem(rsa_keys.private_pem)
    files = [("p.rego", MODULE)]
    first, second = build_bundle(files, signer), build_bundle(files, signer)
    sequences = [json.loads(dict(b.files)[MANIFEST])["metadata"][SEQUENCE] for b in (first, second)]
    assert (first.sequence, second.sequence) == tuple(sequences)
    assert isinstance(sequences[0], int) and 0 < sequences[0] < sequences[1]
    assert first.revision == second.revision  # the content, not the moment, names the revision
    assert sequences[0] <= time.time_ns() // 1000 < sequences[0] + 60_000_000  # microseconds, now
    pinned = build_bundle(files, signer, sequence=7)
    assert pinned.sequence == 7 and manifest_sequence(dict(pinned.files)[MANIFEST]) == 7
    assert build_bundle(files).sequence is None  # unsigned: reproducible, as before


@pytest.mark.parametrize(
    "manifest",
    [
        b'{"metadata": {"labelgate_sequence": "7"}}',
        b'{"metadata": {"labelgate_sequence": 7.5}}',
        b'{"metadata": {"labelgate_sequence": true}}',
        b'{"metadata": {"labelgate_sequence": -1}}',
        b'{"metadata": ["labelgate_sequence"]}',
        b"[]",
        b"{",
    ],
)
def test_a_sequence_that_is_not_a_whole_number_is_refused(manifest: bytes) -> None:
    with pytest.raises(InvalidInput) as error:
        manifest_sequence(manifest)
    assert error.value.reason == "BUNDLE_SEQUENCE_INVALID"


def test_a_manifest_without_a_sequence_has_none() -> None:
    assert manifest_sequence(None) is None
    assert manifest_sequence(b'{"revision": "x"}') is None
    assert manifest_sequence(b'{"metadata": {"other": 1}}') is None
    with pytest.raises(InvalidInput):
        build_bundle([("p.rego", MODULE)], sequence=-1)


def test_revision_follows_served_content_only(policy_source: Path) -> None:
    before = build_bundle(read_snapshot(policy_source).files).revision
    probe = policy_source / "labelgate" / "bundle_probe_test.rego"
    probe.write_text(probe.read_text() + "\n# a test-only edit\n")
    assert build_bundle(read_snapshot(policy_source).files).revision == before
    tables = policy_source / TABLES
    tables.write_text(tables.read_text() + "\n")  # the same data, laid out differently
    assert build_bundle(read_snapshot(policy_source).files).revision == before
    set_plain_ttl(policy_source, 7)
    assert build_bundle(read_snapshot(policy_source).files).revision != before


def test_revision_is_a_hash_over_names_and_bytes() -> None:
    # The name/content boundary is part of the hash: moving bytes between them changes it.
    assert content_revision([("a.rego", b"bc")]) != content_revision([("a.regob", b"c")])
    assert content_revision([("a", b"1"), ("b", b"2")]) == content_revision([("b", b"2"), ("a", b"1")])


def test_roots_cover_every_package_and_data_path() -> None:
    files = [
        ("labelgate/decision/policy.rego", b"# METADATA\n# title: x\npackage labelgate.decision\n"),
        ("system/log.rego", b"package system.log\n\nmask contains x if { x := 1 }\n"),
        ("extra/data.json", b"{}"),
        ("data.json", b'{"clearances": {}, "groups": []}'),
    ]
    assert bundle_roots(files) == ("clearances", "extra", "groups", "labelgate", "system")


def test_opa_loads_the_built_bundle_and_decides(tmp_path: Path) -> None:
    """The real project source, as built: OPA reads the tarball and evaluates the entrypoint."""
    bundle = build_bundle(read_snapshot(REGO).files)
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(bundle.tarball)
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(example_input()))
    query = "data.labelgate.decision.result"
    result = subprocess.run(
        [opa_binary(), "eval", "--bundle", str(path), "--input", str(input_path), "--format", "json", query],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    value = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    assert isinstance(value["allow"], bool)


def test_opa_refuses_a_module_outside_the_manifest_roots(tmp_path: Path) -> None:
    """The roots matter: the same module under narrower roots is rejected by OPA."""
    members = [(MANIFEST, b'{"revision":"x","roots":["other"],"rego_version":1}'), ("p.rego", MODULE)]
    path = tmp_path / "narrow.tar.gz"
    path.write_bytes(write_tarball(members))
    result = subprocess.run(
        [opa_binary(), "eval", "--bundle", str(path), "data"], capture_output=True, check=False, timeout=60
    )
    assert result.returncode != 0
    assert b"manifest roots" in result.stdout + result.stderr


def test_read_tarball_round_trips(policy_source: Path) -> None:
    bundle = build_bundle(read_snapshot(policy_source).files)
    assert read_tarball(bundle.tarball) == dict(bundle.files)
    with pytest.raises(InvalidInput) as error:
        read_tarball(b"not a tarball")
    assert error.value.reason == "BUNDLE_UNREADABLE"


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ([("labelgate/x_test.rego", MODULE), ("a/data.json", b"{}")], "BUNDLE_EMPTY"),
        ([("p.rego", MODULE), ("a/data.yaml", b"a: 1")], "BUNDLE_DATA_UNSUPPORTED"),
        ([("p.rego", MODULE), ("a/data.json", b"{nope")], "BUNDLE_DATA_INVALID"),
        ([("p.rego", MODULE), ("data.json", b"[1, 2]")], "BUNDLE_DATA_INVALID"),
        ([("p.rego", b"# no package here\nallow := true\n")], "BUNDLE_PACKAGE_MISSING"),
        ([("p.rego", b"package p\n\xff\xfe")], "BUNDLE_FILE_INVALID"),
    ],
)
def test_bad_sources_are_refused_with_a_reason(files: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        build_bundle(files)
    assert error.value.reason == reason


DUPLICATE_LABELS = (
    b'{"entries": [{"model": "m", "path": "outputs.ssn", "labels": ["restricted"], "labels": ["public"]}]}'
)


def test_a_data_file_with_a_key_twice_is_not_built() -> None:
    """json.loads keeps the last "labels": the bundle would not say what its reviewer read (s14)."""
    with pytest.raises(InvalidInput) as error:
        build_bundle([("p.rego", MODULE), ("labelgate/catalog/data.json", DUPLICATE_LABELS)])
    assert error.value.reason == "BUNDLE_DATA_INVALID"
    assert "labelgate/catalog/data.json: key 'labels' appears twice" in error.value.message


def test_served_data_is_canonical_and_the_revision_ignores_its_layout() -> None:
    compact = build_bundle([("p.rego", MODULE), ("a/data.json", b'{"b":1.50,"a":[1e3]}')])
    spread = build_bundle([("p.rego", MODULE), ("a/data.json", b'{\n  "a": [1e3],\n  "b": 1.50\n}\n')])
    assert dict(spread.files)["a/data.json"] == b'{"a":[1e3],"b":1.50}'  # numbers as written
    assert spread.revision == compact.revision and spread.tarball == compact.tarball
