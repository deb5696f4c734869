"""The Helm chart: lint and render each profile, validate the manifests against the pinned
Kubernetes version's schemas, hold every workload to the hardening rules, and run the rendered
config through ``serve --check-config`` in the filesystem each container would see."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from labelgate.config import load_settings
from tests.deploy.support import (
    CHART,
    DEPLOY,
    KUBE_VERSION,
    PROFILES,
    RENDERED,
    approvals_server_check,
    check_config,
    cli_options,
    config_in,
    containers_of,
    documents,
    helm,
    kubernetes_render,
    patched_environ,
    pod_container,
    profile_args,
    template,
    workloads,
)


@cache
def rendered(profile: str) -> tuple[dict, ...]:
    return tuple(documents(template(*profile_args(profile))))


def validate(manifests: tuple[dict, ...]) -> list[str]:
    problems = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']} {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(error.message)
    return problems


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_passes_strict(profile: str) -> None:
    result = helm("lint", "--strict", str(CHART), *profile_args(profile), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_manifests_validate_against_the_pinned_kubernetes(profile: str) -> None:
    assert validate(rendered(profile)) == []


def test_validation_catches_a_bad_manifest() -> None:
    statefulset = next(m for m in rendered("quickstart") if m["kind"] == "StatefulSet")
    broken = json.loads(json.dumps(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    assert len(validate((broken,))) == 1  # the first error found


def test_a_typo_in_values_fails_lint(tmp_path: Path) -> None:
    values = tmp_path / "typo.yaml"
    values.write_text("replicaCount: 1\napprovals:\n  stor: postgres\n")
    result = helm("lint", "--strict", str(CHART), "--values", str(values), check=False)
    assert result.returncode != 0
    assert "stor" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ("replicaCount=3", "approvals.store sqlite"),
        ("engine=opa", "engine opa needs bundleServer.enabled"),
        ("approvals.store=postgres", "approvals.postgres.dsnSecret.name"),
        ("auth.trustDevKey=false", "auth: set auth.jwt.jwksUrl"),
    ],
)
def test_combinations_that_cannot_work_are_refused(values: str, reason: str) -> None:
    result = helm("template", "x", str(CHART), *profile_args("quickstart"), "--set", values, check=False)
    assert result.returncode != 0
    assert reason in result.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_every_container_is_hardened(profile: str) -> None:
    for workload in workloads(rendered(profile)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in containers_of(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            assert "livenessProbe" in container, where
            assert "readinessProbe" in container or container.get("restartPolicy") == "Always", where


def _gateway(manifests: tuple[dict, ...]) -> dict:
    return next(m for m in manifests if m["kind"] == "StatefulSet")


def test_gateway_probes_native_grpc_health_and_opa_probes_its_diagnostic_port() -> None:
    pod = _gateway(rendered("ha"))["spec"]["template"]["spec"]
    gateway, opa = pod["containers"][0], pod["containers"][1]
    assert gateway["readinessProbe"]["grpc"] == {"port": 8443}
    assert gateway["startupProbe"]["grpc"] == {"port": 8443}
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert "--diagnostic-addr=0.0.0.0:8282" in opa["args"]
    assert opa["readinessProbe"]["httpGet"]["port"] == "opa-diag"
    assert opa["image"] == "openpolicyagent/opa:1.22.3-static"


def test_grpc_tls_comes_from_a_secret_and_probes_move_to_readyz() -> None:
    manifests = documents(template(*profile_args("quickstart"), "--set", "tls.secretName=gw-tls"))
    pod = _gateway(tuple(manifests))["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "tls", "secret": {"secretName": "gw-tls", "defaultMode": 0o400}} in pod["volumes"]
    config = yaml.safe_load(next(m for m in manifests if m["kind"] == "ConfigMap")["data"]["labelgate.yaml"])
    assert config["server_tls"] == {
        "cert_file": "/etc/labelgate/tls/tls.crt",
        "key_file": "/etc/labelgate/tls/tls.key",
    }


def test_only_the_gateway_and_the_audit_writer_share_the_audit_socket() -> None:
    for profile in PROFILES:
        for workload in workloads(rendered(profile)):
            sharing = {
                c["name"]
                for c in containers_of(workload)
                if any(m["name"] == "audit-socket" for m in c.get("volumeMounts", []))
            }
            assert sharing in (set(), {"gateway", "audit-writer"}), (profile, workload["metadata"]["name"])


def test_ha_profile_has_what_high_availability_needs() -> None:
    manifests = rendered("ha")
    kinds = {m["kind"] for m in manifests}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"} <= kinds
    gateway = _gateway(manifests)
    assert [t["metadata"]["name"] for t in gateway["spec"]["volumeClaimTemplates"]] == ["audit-log"]
    approvals = next(
        m for m in manifests if m["metadata"]["name"] == "labelgate-approvals" and m["kind"] == "Deployment"
    )
    assert approvals["spec"]["replicas"] == 2
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    assert services["labelgate-approvals"]["spec"]["selector"]["app.kubernetes.io/component"] == "approvals"
    assert [p["name"] for p in services["labelgate"]["spec"]["ports"]] == ["grpc"]
    upstream_policy = next(m for m in manifests if m["metadata"]["name"] == "labelgate-upstream")
    assert upstream_policy["spec"]["podSelector"]["matchLabels"] == {"app": "inference-backend"}
    assert (
        upstream_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "gateway"
    )


def test_service_monitor_is_optional() -> None:
    assert not any(m["kind"] == "ServiceMonitor" for p in PROFILES for m in rendered(p))
    manifests = documents(template(*profile_args("ha"), "--set", "serviceMonitor.enabled=true"))
    monitor = next(m for m in manifests if m["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"
    metrics = next(m for m in manifests if m["metadata"]["name"] == "labelgate-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()


def _check_pod(tmp_path: Path, manifests: tuple[dict, ...] | list[dict]) -> list[str]:
    """--check-config for every labelgate container that reads the config; the failures."""
    failures = []
    for workload in workloads(manifests):
        for spec in containers_of(workload):
            if "--config" not in spec.get("args", []):
                continue
            container = pod_container(tmp_path, list(manifests), workload, spec["name"])
            config = container.option("--config")
            if spec["args"][0] == "serve":
                result = check_config(container, config)
                if result.returncode != 0:
                    failures.append(f"{container.name}: {result.stderr.strip()}")
                    continue
            with patched_environ(container.env):
                settings = load_settings(config_in(container, config))
            if spec["args"][0] == "approvals-server":  # what it reads: the store and JWT settings
                approvals_server_check(settings)
            for path in (settings.approvals.sqlite_file, settings.recording.dir):
                if path is not None and settings.approvals.store == "sqlite":
                    assert container.writable("/" + str(path.relative_to(container.root))), path
    return failures


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_config_passes_check_config_inside_each_container(profile: str, tmp_path: Path) -> None:
    assert _check_pod(tmp_path, rendered(profile)) == []


def test_check_config_catches_a_path_that_misses_in_the_container(tmp_path: Path) -> None:
    # The bug of the first kubernetes/gateway.yaml: a relative path resolves against the
    # ConfigMap's mount, where the image's rego/ is not.
    manifests = documents(
        template(
            *profile_args("quickstart"),
            "--set", "extraConfig.classification.catalog_file=rego/labelgate/catalog/data.json",
            "--set", "extraConfig.masking.hash_key_file=/etc/labelgate/secrets/missing/hash.key",
        )
    )  # fmt: skip
    failures = _check_pod(tmp_path, manifests)
    assert failures, "a missing catalog must fail the check"
    assert "classification.catalog_file" in failures[0]
    assert "masking.hash_key_file" in failures[0]


def test_writers_write_on_writable_volumes(tmp_path: Path) -> None:
    for profile in PROFILES:
        manifests = rendered(profile)
        for workload in workloads(manifests):
            for spec in containers_of(workload):
                args = spec.get("args", [])
                container = pod_container(tmp_path / profile, list(manifests), workload, spec["name"])
                if spec["image"].startswith("labelgate:"):
                    assert container.writable("/tmp"), spec["name"]
                for option in ("--log-dir", "--state-dir"):
                    if option in args:
                        assert container.writable(container.option(option)), (profile, option)
                if "--socket" in args:
                    assert container.writable(container.option("--socket").rsplit("/", 1)[0]), profile


def test_kubernetes_folder_is_the_quickstart_render() -> None:
    assert RENDERED.read_text() == kubernetes_render(), "deploy/kubernetes/ is stale: run `make k8s-render`"
    assert sorted(p.name for p in RENDERED.parent.iterdir()) == [RENDERED.name]


def test_dev_jwks_shipped_with_the_chart_is_the_quickstart_key() -> None:
    shipped = json.loads((CHART / "files" / "dev-jwks.json").read_text())
    assert shipped == json.loads((DEPLOY / "quickstart" / "dev-keys" / "jwks.json").read_text())


VARIANTS = {
    "embedded-following-bundles": [
        *profile_args("quickstart"),
        "--set", "bundleServer.enabled=true,bundleServer.tokenSecret.name=tok",
        "--set", "bundleServer.readerTokenSecret.name=tok,bundleServer.signing.secretName=sign",
    ],
    "tls-and-jwks-secret": [
        *profile_args("ha"),
        "--set", "tls.secretName=gw-tls,auth.jwt.jwksUrl=,auth.jwt.jwksSecret=idp-jwks,upstream.caSecret=ca",
        "--set", "upstream.tls=true,serviceMonitor.enabled=true,audit.persistence.enabled=false",
    ],
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_other_value_combinations_render_valid_and_start(variant: str, tmp_path: Path) -> None:
    manifests = tuple(documents(template(*VARIANTS[variant])))
    assert validate(tuple(m for m in manifests if m["kind"] != "ServiceMonitor")) == []
    assert _check_pod(tmp_path, manifests) == []


def test_every_labelgate_command_line_is_one_the_cli_takes() -> None:
    manifests = [m for p in PROFILES for m in rendered(p)] + documents(
        template(*VARIANTS["embedded-following-bundles"])
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    lines = [
        c["args"]
        for w in workloads(manifests)
        for c in containers_of(w)
        if c["image"].startswith("labelgate:")
    ]
    lines += [
        s["command"]
        for s in compose["services"].values()
        if s.get("command") and "entrypoint" not in s and s["image"].startswith("labelgate:")
    ]
    # Every bundle-server line, the compose one included, is a plain argument list (no shell).
    assert sum(1 for args in lines if args[0] == "bundle-server") == 3
    checked = set()
    for args in lines:
        if args[0].startswith("-"):
            continue
        options = cli_options(args[0])
        for arg in args[1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, (args[0], arg)
        checked.add(args[0])
    assert {"serve", "audit-writer", "approvals-server", "bundle-server", "demo-backend"} <= checked
