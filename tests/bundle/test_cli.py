"""``labelgate bundle build`` for CI, and the argument checks of ``bundle-server``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelgate.bundle.build import manifest_sequence, read_tarball
from labelgate.bundle.cli import command_line, parse_listen
from labelgate.bundle.signing import verify_signatures
from labelgate.errors import ConfigError
from tests.bundle.helpers import KeyPair, set_plain_ttl
from tests.support.procs import opa_binary


def run(*args: str):
    return CliRunner().invoke(command_line(), list(args))


def test_build_writes_a_signed_bundle_and_prints_its_revision(
    policy_source: Path, ec_keys: KeyPair, tmp_path: Path
) -> None:
    private, _ = ec_keys.write(tmp_path, "ci")
    out = tmp_path / "dist" / "bundle.tar.gz"
    signing = ["--signing-key", str(private), "--signing-alg", "ES256", "--key-id", "ci"]
    result = run("bundle", "build", str(policy_source), "-o", str(out), *signing, "--opa", opa_binary())
    assert result.exit_code == 0, result.output
    files = read_tarball(out.read_bytes())
    assert f'"revision":"{result.output.strip()}"' in files[".manifest"].decode()
    verify_signatures(files, ec_keys.public_pem, "ES256")
    again = run("bundle", "build", str(policy_source), "-o", str(tmp_path / "again.tar.gz"), "--no-check")
    assert again.output == result.output  # same content, same revision (signing does not change it)


def test_build_signs_the_sequence_it_is_given(policy_source: Path, rsa_keys: KeyPair, tmp_path: Path) -> None:
    private, _ = rsa_keys.write(tmp_path, "ci")
    out = tmp_path / "bundle.tar.gz"
    signed = ["--signing-key", str(private), "--sequence", "42", "--no-check"]
    result = run("bundle", "build", str(policy_source), "-o", str(out), *signed)
    assert result.exit_code == 0, result.output
    files = read_tarball(out.read_bytes())
    assert manifest_sequence(files[".manifest"]) == 42
    verify_signatures(files, rsa_keys.public_pem, "RS256")
    again = tmp_path / "again.tar.gz"
    assert run("bundle", "build", str(policy_source), "-o", str(again), *signed).exit_code == 0
    assert again.read_bytes() == out.read_bytes()  # RS256 with a pinned sequence: reproducible
    default = tmp_path / "default.tar.gz"
    unpinned = run("bundle", "build", str(policy_source), "-o", str(default), *signed[:2], "--no-check")
    assert unpinned.exit_code == 0, unpinned.output
    assert manifest_sequence(read_tarball(default.read_bytes())[".manifest"]) > 42  # the build time
    assert run("bundle", "build", str(policy_source), "-o", str(out), "--sequence", "-1").exit_code != 0


def test_build_refuses_a_source_whose_tests_fail(policy_source: Path, tmp_path: Path) -> None:
    set_plain_ttl(policy_source, -5)
    out = tmp_path / "bundle.tar.gz"
    result = run("bundle", "build", str(policy_source), "-o", str(out), "--opa", opa_binary())
    assert result.exit_code == 1
    assert "POLICY_TEST_FAILED" in result.output
    assert not out.exists()


def test_build_reports_a_bad_signing_key(policy_source: Path, tmp_path: Path) -> None:
    result = run(
        "bundle", "build", str(policy_source), "-o", str(tmp_path / "b.tgz"), "--signing-key", "nope"
    )
    assert result.exit_code == 2
    assert "SIGNING_KEY_UNREADABLE" in result.output


def test_bundle_server_refuses_a_bad_listen_address(policy_source: Path) -> None:
    result = run("bundle-server", "--source", str(policy_source), "--listen", "localhost")
    assert result.exit_code == 2
    assert "LISTEN_INVALID" in result.output


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8282") == ("127.0.0.1", 8282)
    assert parse_listen("[::1]:8282") == ("::1", 8282)
    for bad in ("8282", ":8282", "host:0", "host:http", "host:70000", "host:\u00b2", "host:" + "9" * 5000):
        with pytest.raises(ConfigError):
            parse_listen(bad)


NO_BUNDLE_ENV = {
    "LABELGATE_BUNDLE_TOKEN": None,
    "LABELGATE_BUNDLE_READER_TOKEN": None,
    "LABELGATE_BUNDLE_TOKENS_FILE": None,
    "LABELGATE_BUNDLE_ALLOWED_HOSTS": None,
}


def serve(*args: str):
    return CliRunner().invoke(command_line(), ["bundle-server", *args], env=NO_BUNDLE_ENV)


def test_bundle_server_refuses_to_start_without_credentials(policy_source: Path, tmp_path: Path) -> None:
    state = ("--state-dir", str(tmp_path / "state"))
    result = serve("--source", str(policy_source), *state)
    assert result.exit_code == 2
    assert "BUNDLE_AUTH_REQUIRED" in result.output and "--insecure-no-auth" in result.output
    both = serve("--source", str(policy_source), *state, "--token", "x" * 20, "--insecure-no-auth")
    assert both.exit_code == 2 and "BUNDLE_AUTH_CONFLICT" in both.output
    same = serve("--source", str(policy_source), *state, "--token", "x" * 20, "--reader-token", "x" * 20)
    assert same.exit_code == 2 and "BUNDLE_TOKEN_REUSED" in same.output
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("instances:\n  opa: " + "y" * 20 + "\n")
    clash = serve("--source", str(policy_source), *state, "--tokens-file", str(tokens), "--token", "y" * 20)
    assert clash.exit_code == 2 and "BUNDLE_TOKEN_REUSED" in clash.output
    half_tls = serve("--source", str(policy_source), *state, "--token", "x" * 20, "--tls-cert-file", "c.pem")
    assert half_tls.exit_code == 2 and "BUNDLE_TLS_INVALID" in half_tls.output
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_bundle_server_help_names_the_credentials() -> None:
    result = CliRunner().invoke(command_line(), ["bundle-server", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--tokens-file", "--token", "--reader-token", "--insecure-no-auth", "--allowed-host"):
        assert option in result.output
