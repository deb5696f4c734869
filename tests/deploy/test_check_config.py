"""``labelgate serve --check-config``: exit 0 on a config that would start, 2 listing every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.support import DEPLOY, REPO


def check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "labelgate.cli", "serve", "--check-config", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_the_quickstart_config_passes() -> None:
    result = check("--config", str(DEPLOY / "quickstart" / "labelgate.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_every_startup_problem_is_listed(tmp_path: Path) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "short.key").write_text("too short")
    (tmp_path / "catalog.json").write_text("{not json")
    config = tmp_path / "labelgate.yaml"
    config.write_text(
        "policy:\n  dir: policy\n"
        "classification:\n  catalog_file: catalog.json\n"
        "masking:\n  hash_key_file: short.key\n"
        "upstream:\n  address: backend:8001\n  tls: true\n  ca_file: missing-ca.pem\n"
        "auth:\n  jwt:\n    trust_dev_key: true\n"
        "approvals:\n  sqlite_file: catalog.json/approvals.db\n  admin_groups: [auditors]\n"
    )
    result = check("--config", str(config))
    assert result.returncode == 2
    for where in (
        "policy.dir",
        "classification.catalog_file",
        "masking.hash_key_file",
        "upstream.ca_file",
        "approvals.sqlite_file",
    ):
        assert f"  - {where}: " in result.stderr, where
    assert "5 problems at start-up" in result.stderr


def test_settings_problems_come_first_and_all_at_once(tmp_path: Path) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text(
        "listen: nowhere\nauth:\n  jwt:\n    jwks_file: missing.json\n"
        "engine: opa\nmasking:\n  hash_key: short\n"
    )
    result = check("--config", str(config))
    assert result.returncode == 2
    assert "CONFIG_INVALID" in result.stderr
    assert "listen" in result.stderr and "jwks_file" in result.stderr


def test_an_unreadable_config_fails() -> None:
    result = check("--config", "/nonexistent/labelgate.yaml")
    assert result.returncode == 2
    assert "CONFIG_UNREADABLE" in result.stderr


def test_flags_override_the_file_like_serve() -> None:
    result = check("--config", str(DEPLOY / "quickstart" / "labelgate.yaml"), "--listen", "nowhere")
    assert result.returncode == 2
    assert "listen" in result.stderr


def test_the_image_default_config_passes_with_its_secrets_mounted(tmp_path: Path) -> None:
    from tests.deploy.support import Container, check_config, lay_image, secret_sample

    container = Container("image-default", tmp_path, [])
    lay_image(tmp_path)
    secrets = tmp_path / "etc" / "labelgate" / "secrets"
    secrets.mkdir()
    for name in ("jwks.json", "hash.key"):
        (secrets / name).write_text(secret_sample(name))
    result = check_config(container, "/etc/labelgate/labelgate.yaml")
    assert result.returncode == 0, result.stderr
