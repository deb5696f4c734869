"""Signatures as OPA makes and checks them: the real ``opa`` binary is the judge.

``opa build --bundle FILE --verification-key PUB`` verifies an input bundle's signature with
OPA's own code (the same ``bundle`` package the server runtime uses), so every acceptance
and rejection below is OPA's verdict, not ours.
"""

from __future__ import annotations

import base64
import json
import subprocess
import types
from pathlib import Path

import pytest

from labelgate.bundle import signing
from labelgate.bundle.build import SIGNATURES, build_bundle, read_tarball, write_tarball
from labelgate.bundle.signing import Signer, canonical_json, file_hash, verify_signatures
from labelgate.bundle.source import read_snapshot
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


# ---------------------------------------------------------------------------------------------
# Verifying is bounded before it costs anything (review s14: a replayed signature with one data
# file swapped for 32 MiB of [0,0,...] was canonicalized, 28 s holding the GIL and 3.9 GB, before
# its hash was compared). The work is asserted, not timed.


# The bounds (read this way so that the tests also run, and fail, against a build without them).
MAX_VALUES: int = getattr(signing, "MAX_CANONICAL_VALUES", 100_000)
MAX_BYTES: int = getattr(signing, "MAX_CANONICAL_BYTES", 4 * 1024 * 1024)


def _signed_members(private_pem: bytes, files: list[tuple[str, bytes]] | None = None) -> dict[str, bytes]:
    source = files or [("tricky/p.rego", MODULE), ("tricky/deep/data.json", TRICKY_DATA)]
    return dict(build_bundle(source, Signer.from_pem(private_pem)).files)


def forbid_canonicalizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail the test if verification canonicalizes anything."""

    def refuse(content: bytes) -> bytes:
        raise AssertionError(f"canonicalized {len(content)} bytes")

    monkeypatch.setattr(signing, "canonical_json", refuse)


def forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail the test if verification parses .signatures.json or the JWT."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("parsed")

    monkeypatch.setattr(signing, "json", types.SimpleNamespace(loads=refuse, dumps=json.dumps))
    monkeypatch.setattr(signing.jwt, "decode", refuse)


def test_built_data_files_are_canonical_and_verify_by_their_raw_hash(
    rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _signed_members(rsa_keys.private_pem)
    assert members["tricky/deep/data.json"] == canonical_json(TRICKY_DATA)  # not the source bytes
    forbid_canonicalizing(monkeypatch)
    verify_signatures(members, rsa_keys.public_pem)  # raw hashes match: nothing canonicalized


def test_a_signed_document_in_another_layout_is_still_canonicalized_and_verifies(rsa_keys: KeyPair) -> None:
    """What ``opa build`` or another signer writes need not be canonical: the hash still holds."""
    members = _signed_members(rsa_keys.private_pem)
    members["tricky/deep/data.json"] = TRICKY_DATA  # the source's own layout, as another signer keeps it
    verify_signatures(members, rsa_keys.public_pem)
    members["tricky/deep/data.json"] = members["tricky/deep/data.json"].replace(b'"e": 2', b'"e": 3')
    with pytest.raises(InvalidInput) as changed:
        verify_signatures(members, rsa_keys.public_pem)
    assert changed.value.reason == "BUNDLE_SIGNATURE_INVALID"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"x":[' + b"0," * MAX_VALUES + b"0]}", id="too-many-values"),
        pytest.param(b'{"x":"' + b"a" * MAX_BYTES + b'"}', id="too-many-bytes"),
    ],
)
def test_a_swapped_data_file_past_the_canonical_bounds_is_refused_unread(
    rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    members = _signed_members(rsa_keys.private_pem)
    members["tricky/deep/data.json"] = body  # the signature replayed as it is
    forbid_canonicalizing(monkeypatch)
    with pytest.raises(InvalidInput) as refused:
        verify_signatures(members, rsa_keys.public_pem)
    assert refused.value.reason == "BUNDLE_DATA_TOO_LARGE"
    assert "tricky/deep/data.json" in refused.value.message and "not read" in refused.value.message


def test_the_canonical_bounds_hold_for_the_bundle_not_each_file(
    rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [("a/p.rego", b"package a\n"), ("a/data.json", b"{}"), ("b/data.json", b"{}")]
    members = _signed_members(rsa_keys.private_pem, files)
    half = b"[" + b"0," * (MAX_VALUES // 2) + b"0]"
    members["a/data.json"] = members["b/data.json"] = half
    canonicalized: list[int] = []
    monkeypatch.setattr(
        signing, "canonical_json", lambda content: canonicalized.append(len(content)) or b"{}"
    )
    with pytest.raises(InvalidInput) as refused:
        verify_signatures(members, rsa_keys.public_pem)
    assert refused.value.reason == "BUNDLE_DATA_TOO_LARGE"
    assert "b/data.json" in refused.value.message  # a/ took the first half of the budget
    assert canonicalized == [len(half)]  # a/ only; b/ refused unread


def test_a_deeply_nested_swapped_file_is_refused_with_a_reason(rsa_keys: KeyPair) -> None:
    members = _signed_members(rsa_keys.private_pem)
    members["tricky/deep/data.json"] = b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(InvalidInput) as refused:
        verify_signatures(members, rsa_keys.public_pem)
    assert refused.value.reason == "BUNDLE_DATA_INVALID"
    assert "nested too deeply" in refused.value.message


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(b'{"signatures":[' + b"0.5," * 20_000 + b"0.5]}", id="over-the-size-limit"),
        pytest.param(b'{"signatures":[' + b"0," * 20 + b"0]}", id="too-many-values"),
    ],
)
def test_a_forged_signatures_file_is_refused_before_it_is_parsed(
    rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch, forged: bytes
) -> None:
    members = _signed_members(rsa_keys.private_pem)
    members[SIGNATURES] = forged
    forbid_parsing(monkeypatch)
    with pytest.raises(InvalidInput) as refused:
        verify_signatures(members, rsa_keys.public_pem)
    assert refused.value.reason == "BUNDLE_SIGNATURE_INVALID"
    assert "not read" in refused.value.message


def test_a_long_jwt_header_is_refused_before_pyjwt_reads_it(
    rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _signed_members(rsa_keys.private_pem)
    token = json.loads(members[SIGNATURES])["signatures"][0]
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": "k" * 4000}).encode()).rstrip(b"=")
    members[SIGNATURES] = json.dumps({"signatures": [header.decode() + token[token.index(".") :]]}).encode()
    monkeypatch.setattr(signing.jwt, "decode", lambda *a, **k: pytest.fail("PyJWT was called"))
    with pytest.raises(InvalidInput) as refused:
        verify_signatures(members, rsa_keys.public_pem)
    assert refused.value.reason == "BUNDLE_SIGNATURE_INVALID" and "JWT header" in refused.value.message


def test_the_signatures_limit_leaves_room_for_long_names_and_the_project(
    rsa_keys: KeyPair, policy_source: Path
) -> None:
    """The limit is per signed file, with its name: a long non-ASCII name still verifies."""
    long_name = "tricky/" + "é" * 300 + "/data.json"
    members = _signed_members(rsa_keys.private_pem, [("tricky/p.rego", MODULE), (long_name, b'{"a": 1}')])
    assert len(members[SIGNATURES]) < signing.signatures_limit(n for n in members if n != SIGNATURES)
    verify_signatures(members, rsa_keys.public_pem)
    project = dict(
        build_bundle(read_snapshot(policy_source).files, Signer.from_pem(rsa_keys.private_pem)).files
    )
    assert len(project[SIGNATURES]) * 4 < signing.signatures_limit(n for n in project if n != SIGNATURES)


def test_a_signed_replacement_character_swapped_for_a_lone_surrogate_is_refused(rsa_keys: KeyPair) -> None:
    """Review, seventh round: the canonical form (OPA's) reads a lone surrogate escape as
    U+FFFD, so ``"\\udc80"`` hashes as the signed ``"\ufffd"`` did; the gateway's loader
    would have kept the surrogate, data no one signed. It verifies, and is refused as data."""
    from labelgate.policy.source import BundleKey, PolicySource

    signed = json.dumps({"name": "a\ufffdb"}, ensure_ascii=False).encode()
    source = [("tricky/p.rego", MODULE), ("tricky/t/data.json", signed)]
    members = _signed_members(rsa_keys.private_pem, source)
    members["tricky/t/data.json"] = b'{"name":"a\\udc80b"}'
    verify_signatures(members, rsa_keys.public_pem)  # the hash holds: the loader must refuse it
    tarball = write_tarball(list(members.items()))
    with pytest.raises(ConfigError) as refused:
        PolicySource.from_bundle(tarball, verify=BundleKey(rsa_keys.public_pem))
    assert refused.value.reason == "POLICY_DATA_INVALID"
    assert "surrogate" in refused.value.message
