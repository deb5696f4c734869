"""Start-up errors operators meet first: a port held by another program is one line on
stderr and exit 2, for every server; a second gateway on a gateway's port fails instead of
sharing it (SO_REUSEPORT only with workers > 1). Real processes on loopback.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.gateway.harness import Gateway, TokenIssuer, gateway_config, start_gateway
from tests.support.procs import REPO, free_port, labelgate_command


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        labelgate_command(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )


def assert_one_line_in_use(result: subprocess.CompletedProcess[str], address: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert address in lines[0] and "in use" in lines[0] and "LISTEN_IN_USE" in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program (a plain listening socket) holds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def first_gateway(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer
) -> Iterator[Gateway]:
    config = gateway_config(upstream=backend, engine="embedded", issuer=token_issuer)
    with start_gateway(config, tmp_path_factory.mktemp("first"), "first") as gateway:
        yield gateway


def second_config(first: Gateway, directory: Path, **changes: str) -> Path:
    config = {**first.config, **changes}
    path = directory / "second.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_second_gateway_on_the_same_port_fails_clearly(first_gateway: Gateway, tmp_path: Path) -> None:
    config = second_config(first_gateway, tmp_path, admin_listen=f"127.0.0.1:{free_port()}")
    result = run_cli("serve", "--config", str(config))
    assert_one_line_in_use(result, first_gateway.address)
    assert first_gateway.get("/readyz")[0] == 200  # the first one is untouched


def test_a_second_gateway_on_the_same_admin_port_fails_clearly(
    first_gateway: Gateway, tmp_path: Path
) -> None:
    config = second_config(first_gateway, tmp_path, listen=f"127.0.0.1:{free_port()}")
    result = run_cli("serve", "--config", str(config))
    assert_one_line_in_use(result, first_gateway.config["admin_listen"])


def test_serve_with_a_rest_port_held_by_another_program(
    first_gateway: Gateway, tmp_path: Path, held_port: int
) -> None:
    config = second_config(
        first_gateway,
        tmp_path,
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=f"127.0.0.1:{free_port()}",
        rest_listen=f"127.0.0.1:{held_port}",
    )
    result = run_cli("serve", "--config", str(config))
    assert_one_line_in_use(result, f"127.0.0.1:{held_port}")


def test_demo_backend_on_a_taken_port(backend: str) -> None:
    assert_one_line_in_use(run_cli("demo-backend", "--listen", backend), backend)


def test_bundle_serve_on_a_taken_port(held_port: int, tmp_path: Path) -> None:
    address = f"127.0.0.1:{held_port}"
    for command in (("bundle", "serve"), ("bundle-server",)):
        result = run_cli(
            *command,
            *("--source", str(REPO / "rego"), "--listen", address, "--insecure-no-auth"),
            *("--state-dir", str(tmp_path / "state")),
        )
        assert_one_line_in_use(result, address)


def test_approvals_serve_on_a_taken_port(held_port: int) -> None:
    address = f"127.0.0.1:{held_port}"
    for command in (("approvals", "serve"), ("approvals-server",)):
        assert_one_line_in_use(run_cli(*command, "--listen", address), address)


# --- a start that fails: one line and its exit code, whatever fails and however many workers ---


def _failing_config(directory: Path, **changes: object) -> Path:
    config: dict[str, object] = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstream": {"address": f"127.0.0.1:{free_port()}"},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "startup-test-hash-key-0123456789"},
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(REPO / "deploy/quickstart/dev-keys")}},
        "approvals": {"enabled": False},
        **changes,
    }
    path = directory / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_one_error_line(result: subprocess.CompletedProcess[str], *says: str) -> str:
    """The process's last words: one ``error: ... (REASON)`` line, no traceback, exit 2."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    own = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # not log lines
    assert len(own) == 1, result.stderr
    assert own[0].startswith("error: ") and all(part in own[0] for part in says), own[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return own[0]


@pytest.fixture
def not_pem(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-cert.pem"
    path.write_text("not a pem\n")
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_policy_that_does_not_compile_is_one_line_and_exit_2_with_any_workers(
    tmp_path: Path, workers: str
) -> None:
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "x.rego").write_text("package labelgate.decision\nthis is not rego {\n")
    config = _failing_config(tmp_path, policy={"dir": str(rego)})
    result = run_cli("serve", "--config", str(config), "--workers", workers)
    assert_one_error_line(result, "(POLICY_COMPILE_FAILED)", "x.rego")


def test_a_server_tls_file_that_is_not_pem_is_named_not_reported_as_a_port_in_use(
    tmp_path: Path, not_pem: Path
) -> None:
    config = _failing_config(tmp_path, server_tls={"cert_file": str(not_pem), "key_file": str(not_pem)})
    line = assert_one_error_line(run_cli("serve", "--config", str(config)), "(TLS_FILE_UNREADABLE)")
    assert "server_tls" in line and str(not_pem) in line and "in use" not in line


def test_an_admin_tls_file_that_is_not_pem_is_named_before_anything_serves(
    tmp_path: Path, not_pem: Path
) -> None:
    config = _failing_config(tmp_path, admin={"tls": {"cert_file": str(not_pem), "key_file": str(not_pem)}})
    line = assert_one_error_line(run_cli("serve", "--config", str(config)), "(TLS_FILE_UNREADABLE)")
    assert "admin.tls" in line and str(not_pem) in line


def test_a_missing_hash_key_file_is_named_plainly_with_its_reason(tmp_path: Path) -> None:
    """Found by a first-user review: Python's "[Errno 2] ...: '<path>'" text, no plain words."""
    missing = tmp_path / "absent.key"
    result = run_cli(
        "serve", "--config", str(_failing_config(tmp_path, masking={"hash_key_file": str(missing)}))
    )
    line = assert_one_error_line(result, "(HASH_KEY_UNREADABLE)", f"{missing}: No such file or directory")
    assert "[Errno" not in line
