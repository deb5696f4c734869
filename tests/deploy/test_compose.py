"""deploy/compose.yaml: valid against the vendored Compose Specification schema, a healthcheck
per long-running service, the secrets its init service makes, and its gateway config passing
``serve --check-config`` in the filesystem each container would see."""

from __future__ import annotations

import json
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from labelgate.config import load_settings
from tests.deploy.support import (
    DEPLOY,
    IMAGE_DIRS,
    approvals_server_check,
    check_config,
    compose_container,
    config_in,
    image_tag,
    load_module,
    patched_environ,
)

COMPOSE = DEPLOY / "compose.yaml"
# The Compose Specification's JSON Schema as check-jsonschema (PyPI) vendors it, with its
# licence beside it in that package.
SCHEMA = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"


def load(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    make_secrets = load_module(DEPLOY / "compose" / "init_secrets.py").make_secrets
    directory = tmp_path_factory.mktemp("secrets") / "labelgate"
    written = make_secrets(directory)
    assert set(written) == {
        "hash.key",
        "recording.key",
        "audit-signing.key",
        "audit-signing.pub",
        "bundle-token",
        "bundle-reader-token",
        "bundle-tokens.yaml",
        "bundle-signing.key",
        "bundle-signing.pub",
        "postgres-password",
        "pgpass",
    }
    assert make_secrets(directory) == []  # idempotent: a restart of the stack keeps its secrets
    return directory


def test_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(load()) == []


def test_schema_check_fails_on_a_broken_compose_file() -> None:
    broken = load()
    broken["services"]["gateway"]["healthcheck"]["interval"] = 5
    broken["services"]["gateway"]["depends_on"]["opa"]["condition"] = "service_ready"
    broken["services"]["backend"]["image"] = 5
    assert len(schema_errors(broken)) == 3


def test_every_long_running_service_has_its_own_healthcheck() -> None:
    services = load()["services"]
    for name, service in services.items():
        if name == "init" or "tools" in service.get("profiles", []):
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] == "CMD", name
    tests = [json.dumps(s["healthcheck"]["test"]) for n, s in services.items() if "healthcheck" in s]
    assert len(set(tests)) == len(tests), "each service checks itself, not another's port"


def test_dependencies_wait_for_health_and_exist() -> None:
    services = load()["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_completed_successfully" if dependency == "init" else "service_healthy"
            assert rule["condition"] == expected, (name, dependency)
    assert set(services["gateway"]["depends_on"]) == {"init", "backend", "opa", "audit-writer", "postgres"}


def test_images_are_pinned() -> None:
    text = COMPOSE.read_text()
    assert image_tag(text, "openpolicyagent/opa") == ["1.22.3-static"]
    assert "latest" not in text


def test_only_the_processes_that_append_mount_the_audit_socket() -> None:
    services = load()["services"]
    sharing = {
        n for n, s in services.items() if any(v.startswith("audit-socket:") for v in s.get("volumes", []))
    }
    assert sharing == {"gateway", "audit-writer", "approvals"}


def test_every_approvals_server_reaches_the_audit_writer(tmp_path: Path, secrets: Path) -> None:
    """Votes cast in the inbox are audited: every ``approvals serve`` service reads a config
    naming the writer's socket, mounts the socket's volume, and starts after the writer."""
    compose = load()
    writer = compose_container(tmp_path, compose, "audit-writer", secrets)
    servers = [
        n for n, s in compose["services"].items() if s.get("command", [])[:2] == ["approvals", "serve"]
    ]
    assert servers == ["approvals"]
    for name in servers:
        server = compose_container(tmp_path, compose, name, secrets)
        with patched_environ(server.env):
            settings = load_settings(config_in(server, server.option("--config")))
        assert settings.audit.socket is not None
        assert str(settings.audit.socket) == writer.option("--socket")
        folder = str(settings.audit.socket.parent)
        assert f"audit-socket:{folder}" in compose["services"][name]["volumes"]
        assert server.writable(folder)  # connecting to a socket needs write access
        assert compose["services"][name]["depends_on"]["audit-writer"] == {"condition": "service_healthy"}


def test_the_gateway_records_sessions_sealed_on_a_volume_of_its_own(tmp_path: Path, secrets: Path) -> None:
    compose = load()
    gateway = compose_container(tmp_path, compose, "gateway", secrets)
    settings = load_settings(config_in(gateway, gateway.option("--config")))
    assert settings.recording.dir is not None
    folder = "/" + str(settings.recording.dir.relative_to(gateway.root))
    assert gateway.writable(folder)
    # A named volume mounted where the image has a folder of the gateway's user: Docker copies
    # its ownership into the new volume, so the gateway (UID 10001) can write there.
    volume = next(
        v for v in compose["services"]["gateway"]["volumes"] if folder.startswith(v.split(":")[1] + "/")
    )
    assert volume.split(":")[1] in IMAGE_DIRS and volume.split(":")[0] in compose["volumes"]
    assert settings.recording.encryption_key_file is not None
    assert str(settings.recording.encryption_key_file).endswith("/run/secrets/labelgate/recording.key")


def test_the_cli_sees_only_the_secrets_it_reads(tmp_path: Path) -> None:
    compose = load()
    cli = compose["services"]["cli"]
    assert not [v for v in cli["volumes"] if v.startswith("secrets:")]
    init = load_module(DEPLOY / "compose" / "init_secrets.py")
    secrets_dir, cli_dir = tmp_path / "secrets", tmp_path / "cli"
    init.make_secrets(secrets_dir)
    assert sorted(init.share_with_cli(secrets_dir, cli_dir)) == ["audit-signing.pub", "bundle-reader-token"]
    assert sorted(p.name for p in cli_dir.iterdir()) == ["audit-signing.pub", "bundle-reader-token"]
    assert init.share_with_cli(secrets_dir, cli_dir) == []
    (secrets_dir / "bundle-reader-token").unlink()  # rotated: the next start copies the new one
    init.make_secrets(secrets_dir)
    assert init.share_with_cli(secrets_dir, cli_dir) == ["bundle-reader-token"]
    assert (cli_dir / "bundle-reader-token").read_text() == (secrets_dir / "bundle-reader-token").read_text()
    assert stat.S_IMODE((cli_dir / "bundle-reader-token").stat().st_mode) == 0o400
    # What the cli service's docs use them for, at the paths they name.
    command = compose["services"]["init"]["entrypoint"]
    where = command[command.index("--cli-dir") + 1]
    assert f"cli-secrets:{where}" in compose["services"]["init"]["volumes"]
    assert "cli-secrets:/run/secrets/labelgate:ro" in cli["volumes"]


def test_init_secrets_are_private(secrets: Path) -> None:
    private = (
        "hash.key",
        "recording.key",
        "audit-signing.key",
        "bundle-token",
        "bundle-reader-token",
        "bundle-tokens.yaml",
    )
    for name in (*private, "bundle-signing.key", "postgres-password"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o400, name
    assert stat.S_IMODE((secrets / "pgpass").stat().st_mode) == 0o600  # libpq ignores a looser one
    host, port, database, user, password = (secrets / "pgpass").read_text().strip().split(":")
    assert (host, port, database, user) == ("postgres", "5432", "labelgate", "labelgate")
    assert password == (secrets / "postgres-password").read_text()
    compose = load()
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].endswith(
        "/postgres-password"
    )


def test_gateway_config_passes_check_config_inside_its_container(tmp_path: Path, secrets: Path) -> None:
    compose = load()
    gateway = compose_container(tmp_path, compose, "gateway", secrets)
    config = gateway.option("--config")
    result = check_config(gateway, config)
    assert result.returncode == 0, result.stderr
    settings = load_settings(config_in(gateway, config))
    assert settings.auth.jwt is not None and settings.auth.jwt.trust_dev_key  # `labelgate dev-token` works
    assert settings.upstream.address == "backend:8001"
    assert settings.policy.opa_url == "http://opa:8181"
    assert str(settings.audit.socket).startswith("/run/labelgate/audit/")
    assert gateway.writable(str(settings.audit.socket.parent))
    approvals = compose_container(tmp_path, compose, "approvals", secrets)
    with patched_environ(approvals.env):
        approvals_server_check(load_settings(config_in(approvals, approvals.option("--config"))))


def test_check_config_fails_when_a_mount_is_missing(tmp_path: Path, secrets: Path) -> None:
    compose = load()
    compose["services"]["gateway"]["volumes"] = [
        v for v in compose["services"]["gateway"]["volumes"] if not v.startswith("secrets:")
    ]
    gateway = compose_container(tmp_path, compose, "gateway", secrets)
    result = check_config(gateway, gateway.option("--config"))
    assert result.returncode == 2
    assert "masking.hash_key_file" in result.stderr


def test_opa_follows_the_bundle_server_with_its_token() -> None:
    # tests/deploy/test_bundle_access.py checks the credentials, allowed hosts and signing in depth.
    compose = load()
    opa_config = yaml.safe_load((DEPLOY / "compose" / "opa.yaml").read_text())
    bundle_server = compose["services"]["bundle-server"]["command"]
    assert "entrypoint" not in compose["services"]["bundle-server"]  # no shell: the CLI reads the files
    assert opa_config["services"]["bundles"]["url"] == "http://bundle-server:8282"
    assert bundle_server[bundle_server.index("--listen") + 1] == "0.0.0.0:8282"
    assert opa_config["bundles"]["labelgate"]["resource"] == "bundles/labelgate"
    token_path = opa_config["services"]["bundles"]["credentials"]["bearer"]["token_path"]
    assert token_path == "/run/secrets/labelgate/bundle-token"
    assert "/run/secrets/labelgate/bundle-tokens.yaml" in bundle_server
    assert "--diagnostic-addr=0.0.0.0:8182" in compose["services"]["opa"]["command"]
    assert "8182/health?bundles" in compose["services"]["opa"]["healthcheck"]["test"][-1]


def test_init_rewrites_the_tokens_file_when_a_token_changes(tmp_path: Path) -> None:
    make_secrets = load_module(DEPLOY / "compose" / "init_secrets.py").make_secrets
    directory = tmp_path / "labelgate"
    make_secrets(directory)
    tokens = (directory / "bundle-tokens.yaml").read_text()
    (directory / "bundle-reader-token").unlink()  # e.g. an operator rotating it
    assert make_secrets(directory) == ["bundle-reader-token", "bundle-tokens.yaml"]
    assert (directory / "bundle-tokens.yaml").read_text() != tokens
