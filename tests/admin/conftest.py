"""Admin listener fixtures: a real demo backend and a real ``labelgate serve`` whose admin
listener has approvals, the inbox, the API docs and a short body deadline; optionally HTTPS.

Subjects are unique per test (``person``), as in tests/approvals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.approvals.conftest import running_gateway
from tests.support.pki import create_ca
from tests.support.procs import REPO, Process, free_port, labelgate_command, running

BODY_TIMEOUT_SECONDS = 1.5


@dataclass
class Admin:
    grpc: str
    base: str  # the admin listener's base URL
    process: Process
    folder: Path
    ca_file: Path | None = None


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("admin-backend")
    port = free_port()
    address = f"127.0.0.1:{port}"
    with running(labelgate_command("demo-backend", "--listen", address), folder / "backend.log", port=port):
        yield address


def write_config(folder: Path, backend: str, admin: dict[str, Any], **extra: Any) -> tuple[Path, str, int]:
    port, admin_port = free_port(), free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "upstream": {"address": backend},
        "engine": "embedded",
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "admin-test-hash-key-0123"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "approvals": {"sqlite_file": str(folder / "approvals.db"), "viewer_groups": ["auditors"]},
        "admin": admin,
        **extra,
    }
    if admin.get("approvals") is False:  # the admin port serves no inbox: links name the one that does
        config["approvals"]["public_url"] = "https://approvals.test"
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, f"127.0.0.1:{port}", admin_port


@contextlib.contextmanager
def admin_gateway(folder: Path, backend: str, *, tls: bool = False, **admin: Any) -> Iterator[Admin]:
    settings: dict[str, Any] = {"body_timeout_seconds": BODY_TIMEOUT_SECONDS, "api_docs": True, **admin}
    ca_file = None
    if tls:
        ca = create_ca()
        cert, key = ca.server_cert().write(folder / "pki", "admin")
        ca_file = ca.write(folder / "pki")
        settings["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    config, address, admin_port = write_config(folder, backend, settings)
    scheme = "https" if tls else "http"
    base = f"{scheme}://127.0.0.1:{admin_port}"
    if tls:  # running_gateway waits for plain-HTTP health: wait on the gRPC port only
        port = int(address.rpartition(":")[2])
        command = labelgate_command("serve", "--config", str(config))
        with running(command, folder / "gateway.log", port=port) as process:
            yield Admin(address, base, process, folder, ca_file)
        return
    with running_gateway(config, address, folder / "gateway.log") as process:
        yield Admin(address, base, process, folder)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Admin]:
    with admin_gateway(tmp_path_factory.mktemp("admin-gateway"), backend) as running_admin:
        yield running_admin
