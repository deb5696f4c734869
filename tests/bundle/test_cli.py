"""``labelgate bundle build`` for CI, and the argument checks of ``bundle-server``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelgate.bundle.build import read_tarball
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
    for bad in ("8282", ":8282", "host:0", "host:http", "host:70000"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
