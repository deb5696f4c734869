"""Helpers for the bundle server tests: policy source copies, keys, real servers and OPAs.

The source is a copy of the project's ``rego/`` without its own ``*_test.rego`` files (they
belong to the policy work and may be mid-edit), plus one probe test we control, so these
tests can make a test fail on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.procs import Process, free_port, opa_binary, running, wait_until

REPO = Path(__file__).resolve().parents[2]
REGO = REPO / "rego"
EXAMPLES = REPO / "proto" / "labelgate" / "v1" / "schema" / "examples"
TABLES = "labelgate/tables/data.json"
# The bundle server's credentials in these tests: TOKEN is the one OPA instance ("opa") that
# pulls bundles and posts reports, READER_TOKEN reads the fleet, decisions and status.
TOKEN = "bundle-test-token"
READER_TOKEN = "bundle-test-reader-token"
INSTANCE = "opa"

PROBE_TEST = """package labelgate.bundle_probe_test

import data.labelgate.tables

# Fails when an edit makes the plain cache TTL negative: the "failing opa test" case.
test_plain_cache_ttl_is_not_negative if {
	tables.cache_ttl_seconds.plain >= 0
}
"""


def copy_source(target: Path) -> Path:
    """The project's policy and data, without its tests, plus the probe test."""
    shutil.copytree(REGO, target, ignore=shutil.ignore_patterns("*_test.rego", ".*"))
    (target / "labelgate" / "bundle_probe_test.rego").write_text(PROBE_TEST)
    return target


def write_atomically(path: Path, content: str | bytes) -> None:
    """Save the way editors do: a hidden temporary file renamed over the target."""
    data = content.encode() if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def set_plain_ttl(source: Path, seconds: int) -> None:
    tables_path = source / TABLES
    tables = json.loads(tables_path.read_text())
    tables["cache_ttl_seconds"]["plain"] = seconds
    write_atomically(tables_path, json.dumps(tables, indent=2))


def example_input(name: str = "no-group-response") -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


# ---------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    algorithm: str

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        private, public = directory / f"{stem}.key.pem", directory / f"{stem}.pub.pem"
        private.write_bytes(self.private_pem)
        public.write_bytes(self.public_pem)
        return private, public


def make_key_pair(algorithm: str = "RS256") -> KeyPair:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(65537, 2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, public, algorithm)


# ---------------------------------------------------------------------------------------------
# Real processes


def write_tokens_file(path: Path, instances: dict[str, str], readers: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"instances": instances, "readers": readers}))
    return path


@dataclass
class BundleServer:
    url: str
    process: Process
    verify: ssl.SSLContext | bool = True  # trusts the test CA when the server speaks TLS

    def client(self, token: str | None = READER_TOKEN, **headers: str) -> httpx.Client:
        """A client with a bearer token: the reader's unless told (pass ``TOKEN`` to act as OPA)."""
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=self.verify)

    def status(self) -> dict[str, Any]:
        with self.client() as client:
            return client.get("/status").raise_for_status().json()


@contextlib.contextmanager
def bundle_server(
    log_dir: Path, source: Path, *args: str, env: dict[str, str] | None = None, ca_file: Path | None = None
) -> Iterator[BundleServer]:
    """``labelgate bundle-server`` as a child process on a free port.

    Credentials from the environment, as a deployment would pass them: ``TOKEN`` for the OPA
    instance ``opa`` and ``READER_TOKEN`` for reading (``env`` replaces them, e.g. with
    ``LABELGATE_BUNDLE_TOKENS_FILE``).
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "labelgate.bundle.cli",
        "bundle-server",
        "--source",
        str(source),
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(log_dir / f"state-{port}"),
        "--opa",
        opa_binary(),
        *args,
    ]
    if env is None:
        env = {"LABELGATE_BUNDLE_TOKEN": TOKEN, "LABELGATE_BUNDLE_READER_TOKEN": READER_TOKEN}
    with running(command, log_dir / f"bundle-server-{port}.log", port=port, env=env) as process:
        if ca_file is not None:  # started with --tls-cert-file/--tls-key-file
            yield BundleServer(
                f"https://localhost:{port}", process, ssl.create_default_context(cafile=ca_file)
            )
        else:
            yield BundleServer(f"http://127.0.0.1:{port}", process)


def opa_config(
    bundle_url: str,
    control_url: str,
    *,
    token: str = TOKEN,
    public_key: KeyPair | None = None,
    key_id: str = "labelgate",
    ca_file: Path | None = None,
) -> dict[str, Any]:
    """OPA pulling bundle ``labelgate`` with long polling; status and decision logs to ``control_url``."""
    bundle: dict[str, Any] = {
        "service": "bundles",
        "resource": "bundles/labelgate",
        # max_delay bounds the retry backoff after a failed download (e.g. a rejected signature).
        "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2, "long_polling_timeout_seconds": 10},
    }
    config: dict[str, Any] = {
        "services": {
            "bundles": {"url": bundle_url, "credentials": {"bearer": {"token": token}}},
            "control": {"url": control_url, "credentials": {"bearer": {"token": token}}},
        },
        "bundles": {"labelgate": bundle},
        "status": {"service": "control"},
        "decision_logs": {
            "service": "control",
            "reporting": {"min_delay_seconds": 1, "max_delay_seconds": 1},
        },
    }
    if ca_file is not None:
        for service in config["services"].values():
            service["tls"] = {"ca_cert": str(ca_file)}
    if public_key is not None:
        config["keys"] = {key_id: {"key": public_key.public_pem.decode(), "algorithm": public_key.algorithm}}
        bundle["signing"] = {"keyid": key_id}
    return config


@dataclass
class Opa:
    url: str
    process: Process

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/health", params={"bundles": "true"}, timeout=5).status_code == 200

    def decide(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """The decision response: ``result`` (absent before activation) and ``decision_id``."""
        response = httpx.post(f"{self.url}/v1/data/labelgate/decision/result", json={"input": policy_input})
        return response.raise_for_status().json()


@contextlib.contextmanager
def opa_with_config(log_dir: Path, config: dict[str, Any], name: str = "opa") -> Iterator[Opa]:
    port = free_port()
    config_path = log_dir / f"{name}-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}"]
    command += ["--config-file", str(config_path)]
    with running(command, log_dir / f"{name}-{port}.log", port=port) as process:
        yield Opa(f"http://127.0.0.1:{port}", process)


def wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    wait_until(check, timeout=timeout, what=what)
