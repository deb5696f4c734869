"""Signatures as OPA makes and checks them: the real ``opa`` binary is the judge.

``opa build --bundle FILE --verification-key PUB`` verifies an input bundle's signature with
OPA's own code (the same ``bundle`` package the server runtime uses), so every acceptance
and rejection below is OPA's verdict, not ours.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from labelgate.bundle.build import SIGNATURES, build_bundle, read_tarball, write_tarball
from labelgate.bundle.signing import Signer, canonical_json, file_hash, verify_signatures
from labelgate.errors import ConfigError, InvalidInput
from tests.bundle.helpers import TABLES, KeyPair, make_key_pair
from tests.support.procs import opa_binary

# Numbers as written, HTML characters, U+2028/9, astral characters, escapes, unsorted keys.
TRICKY_DATA = (
    '{"z": 1.50, "a": [1e3, -0, 2E-2, 12345678901234567890, 0.1], '
    '"s": "<b>&amp; \\u2028 \\u2029 ünï ☃ 😀 \\ud83d\\ude00 tab\\t nl\\n q\\" ctl\\u0001 \\u007f \\b \\f /", '
    '"nested": {"b": {"y": true, "x": null}, "a": false}, "é": 1, "e": 2, "Z": 3}'
).encode()
MODULE = b"package tricky\n\nallow := data.tricky.deep.z == 1.5\n"


def opa_verify(
    bundle_path: Path, public_key: Path, algorithm: str, key_id: str, tmp_path: Path
) -> subprocess.CompletedProcess[bytes]:
    key = ["--verification-key", str(public_key), "--verification-key-id", key_id, "--signing-alg", algorithm]
    return subprocess.run(
        [opa_binary(), "build", "--bundle", str(bundle_path), *key, "-o", str(tmp_path / "out.tar.gz")],
        capture_output=True,
        check=False,
        timeout=60,
    )


def jwt_parts(signatures_file: bytes) -> tuple[dict, dict]:
    token = json.loads(signatures_file)["signatures"][0]
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


@pytest.fixture(params=["RS256", "ES256"])
def keys(request: pytest.FixtureRequest, rsa_keys: KeyPair, ec_keys: KeyPair) -> KeyPair:
    return rsa_keys if request.param == "RS256" else ec_keys


def test_opa_accepts_our_signature_and_rejects_every_tampering(keys: KeyPair, tmp_path: Path) -> None:
    private, public = keys.write(tmp_path, "signer")
    files = [("tricky/p.rego", MODULE), ("tricky/deep/data.json", TRICKY_DATA)]
    bundle = build_bundle(files, Signer.from_file(private, keys.algorithm, "ci-key"))
    # The signed manifest carries the ordering gateways check; OPA takes it as plain metadata.
    assert json.loads(dict(bundle.files)[".manifest"])["metadata"] == {"labelgate_sequence": bundle.sequence}
    good = tmp_path / "good.tar.gz"
    good.write_bytes(bundle.tarball)
    verdict = opa_verify(good, public, keys.algorithm, "ci-key", tmp_path)
    assert verdict.returncode == 0, verdict.stderr.decode()

    tamperings = [
        ("tricky/p.rego", MODULE + b"\nallow := true\n", b"tricky/p.rego: digest mismatch"),
        ("tricky/deep/data.json", TRICKY_DATA.replace(b"1.50", b"2"), b"data.json: digest mismatch"),
        ("tricky/extra.rego", b"package tricky\n\nx := 1\n", b"not included in bundle signature"),
        ("tricky/deep/data.json", None, b"specified in bundle signatures but not found"),
    ]
    for index, (name, content, complaint) in enumerate(tamperings):
        members = dict(bundle.files)
        if content is None:
            members.pop(name)
        else:
            members[name] = content
        path = tmp_path / f"tampered-{index}.tar.gz"
        path.write_bytes(write_tarball(members.items()))
        verdict = opa_verify(path, public, keys.algorithm, "ci-key", tmp_path)
        assert verdict.returncode != 0, f"OPA accepted a bundle with {name} tampered"
        assert complaint in verdict.stdout + verdict.stderr, verdict.stdout + verdict.stderr
    _, stranger = make_key_pair(keys.algorithm).write(tmp_path, "stranger")
    verdict = opa_verify(good, stranger, keys.algorithm, "ci-key", tmp_path)
    assert verdict.returncode != 0
    assert b"failed to verify" in verdict.stdout + verdict.stderr


def test_reformatting_json_keeps_the_signature_valid(rsa_keys: KeyPair, tmp_path: Path) -> None:
    """Canonical hashing: whitespace, key order and escape spelling are not content (OPA agrees)."""
    private, public = rsa_keys.write(tmp_path, "signer")
    original = '{"b": {"y": [1, 2.5], "x": "ü<"}, "a": 1}'.encode()
    reformatted = b'{\n  "a": 1,\n  "b": {"x": "\\u00fc\\u003c", "y": [1,2.5]}\n}'
    assert json.loads(original) == json.loads(reformatted)
    files = [("tricky/p.rego", MODULE), ("tricky/deep/data.json", original)]
    members = dict(build_bundle(files, Signer.from_file(private, "RS256", "ci-key")).files)
    members["tricky/deep/data.json"] = reformatted
    path = tmp_path / "reformatted.tar.gz"
    path.write_bytes(write_tarball(members.items()))
    verdict = opa_verify(path, public, "RS256", "ci-key", tmp_path)
    assert verdict.returncode == 0, verdict.stderr.decode()


def test_our_hashes_equal_the_ones_opa_signs(policy_source: Path, rsa_keys: KeyPair, tmp_path: Path) -> None:
    """``opa build --signing-key`` on the project source: every hash it wrote is ours too."""
    private, _ = rsa_keys.write(tmp_path, "signer")
    (policy_source / "tricky").mkdir()
    (policy_source / "tricky" / "data.json").write_bytes(TRICKY_DATA)
    out = tmp_path / "opa-signed.tar.gz"
    signing = ["--signing-key", str(private), "--signing-alg", "RS256", "--ignore", "*_test.rego"]
    subprocess.run(
        [opa_binary(), "build", "--bundle", str(policy_source), *signing, "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    members = read_tarball(out.read_bytes())
    header, payload = jwt_parts(members[SIGNATURES])
    assert header["alg"] == "RS256"
    assert {entry["name"] for entry in payload["files"]} == set(members) - {SIGNATURES}
    for entry in payload["files"]:
        assert entry["algorithm"] == "SHA-256"
        assert entry["hash"] == file_hash(entry["name"], members[entry["name"]]), entry["name"]
    # And our verifier accepts OPA's signature on OPA's bundle.
    verify_signatures(members, rsa_keys.public_pem, "RS256")


def test_signature_lists_every_file_with_header_alg_and_kid(
    policy_source: Path, ec_keys: KeyPair, tmp_path: Path
) -> None:
    private, _ = ec_keys.write(tmp_path, "signer")
    from labelgate.bundle.source import read_snapshot

    bundle = build_bundle(read_snapshot(policy_source).files, Signer.from_file(private, "ES256", "k1"))
    members = dict(bundle.files)
    header, payload = jwt_parts(members[SIGNATURES])
    assert (header["alg"], header["kid"]) == ("ES256", "k1")
    assert [entry["name"] for entry in payload["files"]] == [n for n in members if n != SIGNATURES]
    assert ".manifest" in members and TABLES in members
    verify_signatures(members, ec_keys.public_pem, "ES256")
    members["labelgate/decision/decision.rego"] += b"\n"
    with pytest.raises(InvalidInput, match="digest mismatch"):
        verify_signatures(members, ec_keys.public_pem, "ES256")


def test_canonical_json_keeps_number_literals_and_go_escaping() -> None:
    assert canonical_json(b'{"b": 1.50, "a": [1e3, -0]}') == b'{"a":[1e3,-0],"b":1.50}'
    assert canonical_json(b'"<&> \\u2028"') == b'"<&> \\u2028"'
    assert canonical_json(b'"\\ud800"') == '"\ufffd"'.encode()
    with pytest.raises(InvalidInput):
        canonical_json(b"NaN")


def test_signer_refuses_unusable_keys(rsa_keys: KeyPair, ec_keys: KeyPair, tmp_path: Path) -> None:
    cases = [
        (rsa_keys.private_pem, "ES256", "SIGNING_KEY_MISMATCH"),
        (ec_keys.private_pem, "RS256", "SIGNING_KEY_MISMATCH"),
        (rsa_keys.private_pem, "HS256", "SIGNING_ALG_UNSUPPORTED"),
        (b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "RS256", "SIGNING_KEY_INVALID"),
        (rsa_keys.public_pem, "RS256", "SIGNING_KEY_INVALID"),
    ]
    for pem, algorithm, reason in cases:
        with pytest.raises(ConfigError) as error:
            Signer.from_pem(pem, algorithm)
        assert error.value.reason == reason
    with pytest.raises(ConfigError) as error:
        Signer.from_file(tmp_path / "missing.pem")
    assert error.value.reason == "SIGNING_KEY_UNREADABLE"
