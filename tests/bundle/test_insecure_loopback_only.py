"""``--insecure-no-auth`` is for a demo on loopback only: off loopback the server does not
start (review: ``--listen 0.0.0.0:18181 --insecure-no-auth`` only warned, and anyone reaching
the port pulled the policy and read ``/fleet``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.procs import free_port, labelgate_command, port_open


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "[::]", "192.0.2.2", "bundles.example.com", "[::ffff:192.0.2.2]"]
)
def test_insecure_no_auth_off_loopback_does_not_start(policy_source: Path, tmp_path: Path, host: str) -> None:
    port = free_port()
    command = labelgate_command(
        *("bundle", "serve", "--source", str(policy_source), "--state-dir", str(tmp_path / "state")),
        *("--listen", f"{host}:{port}", "--insecure-no-auth", "--allowed-host", "192.0.2.2"),
    )
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:  # it served: subprocess.run has killed it
        pytest.fail(f"the server started without credentials on {host}")
    assert done.returncode == 2, done.stderr
    assert "BUNDLE_AUTH_REQUIRED" in done.stderr and "loopback only" in done.stderr, done.stderr
    assert not port_open(port)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("::ffff:192.0.2.2", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    from labelgate.bundle.cli import on_loopback

    assert on_loopback(host) is loopback
