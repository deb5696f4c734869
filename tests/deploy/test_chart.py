"""The Helm chart: lint and render each profile, validate the manifests against the pinned
Kubernetes version's schemas, hold every workload to the hardening rules, and run the rendered
config through ``serve --check-config`` in the filesystem each container would see."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from labelgate.admin.app import session_key
from labelgate.auth.assertion import SubjectAsserter
from labelgate.config import load_settings
from tests.deploy.support import (
    CHART,
    DEPLOY,
    DEPRECATED_ALIASES,
    KUBE_VERSION,
    PROFILES,
    RENDERED,
    approvals_server_check,
    check_config,
    cli_options,
    command_words,
    config_in,
    containers_of,
    documents,
    helm,
    kubernetes_render,
    parse_command,
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
    return next(
        m
        for m in manifests
        if m["kind"] == "StatefulSet" and m["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    )


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


def test_only_the_processes_that_append_share_the_audit_socket() -> None:
    for profile in PROFILES:
        for workload in workloads(rendered(profile)):
            sharing = {
                c["name"]
                for c in containers_of(workload)
                if any(m["name"] == "audit-socket" for m in c.get("volumeMounts", []))
            }
            assert sharing in (
                set(),
                {"gateway", "audit-writer"},
                {"gateway", "audit-writer", "approvals"},
                {"audit-writer", "approvals"},
            ), (profile, workload["metadata"]["name"])


AUDIT_CASES = {
    **{profile: profile_args(profile) for profile in PROFILES},
    "postgres-one-approvals-server-no-persistence": [
        *profile_args("quickstart"),
        "--set", "approvals.store=postgres,approvals.postgres.dsnSecret.name=db",
        "--set", "audit.persistence.enabled=false",
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", AUDIT_CASES)
def test_every_approvals_server_reaches_an_audit_writer_in_its_pod(case: str, tmp_path: Path) -> None:
    """Votes cast in the inbox are audited: each ``approvals serve`` container reads a config
    naming the audit socket, and mounts the socket's folder from the volume an audit writer of
    the same pod listens in, whose log is kept as the gateways' are."""
    manifests = documents(template(*AUDIT_CASES[case]))
    servers = 0
    for workload in workloads(manifests):
        containers = containers_of(workload)
        for spec in containers:
            if command_words(spec.get("args", [])) != ("approvals", "serve"):
                continue
            servers += 1
            where = f"{workload['metadata']['name']}/{spec['name']}"
            container = pod_container(tmp_path / where, manifests, workload, spec["name"])
            with patched_environ(container.env):
                settings = load_settings(config_in(container, container.option("--config")))
            socket = settings.audit.socket
            assert socket is not None, where
            writer = next(c for c in containers if command_words(c.get("args", [])) == ("audit", "writer"))
            assert parse_command(writer["args"])[1]["socket_path"] == socket, where
            folder = str(socket.parent)
            mounted = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
            assert mounted.get(folder) == "audit-socket", where
            assert {m["mountPath"]: m["name"] for m in writer["volumeMounts"]}[folder] == "audit-socket"
            assert container.writable(folder), where  # connecting to a socket needs write access
            claims = [t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])]
            persistent = "audit.persistence.enabled=false" not in AUDIT_CASES[case]
            assert ("audit-log" in claims) == persistent, where
    assert servers == 1


def test_ha_profile_has_what_high_availability_needs() -> None:
    manifests = rendered("ha")
    kinds = {m["kind"] for m in manifests}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"} <= kinds
    gateway = _gateway(manifests)
    assert [t["metadata"]["name"] for t in gateway["spec"]["volumeClaimTemplates"]] == ["audit-log"]
    approvals = next(
        m for m in manifests if m["metadata"]["name"] == "labelgate-approvals" and m["kind"] == "StatefulSet"
    )
    assert approvals["spec"]["replicas"] == 2
    # Each approvals server keeps the audit log of its votes on a claim of its own.
    assert [t["metadata"]["name"] for t in approvals["spec"]["volumeClaimTemplates"]] == ["audit-log"]
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
            words = command_words(spec["args"])
            if words == ("serve",):
                result = check_config(container, config)
                if result.returncode != 0:
                    failures.append(f"{container.name}: {result.stderr.strip()}")
                    continue
            with patched_environ(container.env):
                settings = load_settings(config_in(container, config))
            if words == ("serve",):  # read as it starts, not by --check-config
                SubjectAsserter.from_settings(settings.upstream.subject_assertion)
                session_key(settings.admin)
            if words == ("approvals", "serve"):  # what it reads: the store, JWT settings, session key
                approvals_server_check(settings)
            sqlite_file = settings.approvals.sqlite_file
            if sqlite_file is not None and settings.approvals.store == "sqlite":  # both write it
                assert container.writable("/" + str(sqlite_file.relative_to(container.root))), sqlite_file
            if words == ("serve",) and settings.recording.dir is not None:  # the gateway records
                assert container.writable("/" + str(settings.recording.dir.relative_to(container.root)))
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
    # A KServe predictor in another namespace (its Service maps 80 to 8080), subject
    # assertions off, the bundle server's state on a claim of one's own.
    "kserve-elsewhere": [
        *profile_args("ha"),
        "--set", "upstream.address=my-model-predictor.models.svc:80,upstream.targetPort=8080",
        "--set", "upstream.namespaceSelector.kubernetes\\.io/metadata\\.name=models",
        "--set", "upstream.subjectAssertion.enabled=false,upstream.subjectAssertion.keySecret.name=",
        "--set", "bundleServer.persistence.existingClaim=fleet",
    ],
    # ... and the approvals sidecar with a session key (it reads the gateway's config).
    "embedded-following-bundles-on-a-claim": [
        *profile_args("quickstart"),
        "--set", "bundleServer.enabled=true,bundleServer.tokenSecret.name=tok",
        "--set", "bundleServer.readerTokenSecret.name=tok,bundleServer.persistence.enabled=true",
        "--set", "bundleServer.persistence.storageClassName=fast,approvals.sessionKeySecret.name=inbox",
        "--set-json", "bundleServer.retention.decisionDays=1.5",
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
    # Every bundle server line, the compose one included, is a plain argument list (no shell).
    assert sum(1 for args in lines if command_words(args) == ("bundle", "serve")) == 3
    checked = set()
    for args in lines:
        if args[0].startswith("-"):
            continue
        words = command_words(args)
        assert words, args
        options = cli_options(*words)
        for arg in args[len(words) :]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, (words, arg)
        checked.add(words)
    assert {
        ("serve",),
        ("audit", "writer"),
        ("approvals", "serve"),
        ("bundle", "serve"),
        ("demo-backend",),
    } <= checked


# -- keys the replicas share ---------------------------------------------------------------


def _config_of(manifests: tuple[dict, ...] | list[dict]) -> dict:
    return yaml.safe_load(next(m for m in manifests if m["kind"] == "ConfigMap")["data"]["labelgate.yaml"])


def _refusal(profile: str, *values: str) -> str:
    args = [a for v in values for a in ("--set", v)]
    result = helm("template", "x", str(CHART), *profile_args(profile), *args, check=False)
    assert result.returncode != 0, f"{profile} {values} rendered"
    return result.stderr


@pytest.mark.parametrize(
    ("profile", "values", "reason"),
    [
        # ha without the session key: 3 gateways (their admin port serves the inbox) and 2
        # approvals servers would each sign inbox cookies with a random key of their own.
        ("ha", ["approvals.sessionKeySecret.name="], "needs approvals.sessionKeySecret.name"),
        # one gateway, two approvals servers
        (
            "quickstart",
            [
                "approvals.store=postgres,approvals.postgres.dsnSecret.name=db,approvals.replicaCount=2",
            ],
            "needs approvals.sessionKeySecret.name",
        ),
        # several gateways, each signing subject assertions with a key of its own
        (
            "ha",
            ["upstream.subjectAssertion.keySecret.name="],
            "needs upstream.subjectAssertion.keySecret.name",
        ),
    ],
)
def test_replicas_without_a_shared_key_are_refused(profile: str, values: list[str], reason: str) -> None:
    assert reason in _refusal(profile, *values)


def test_one_process_needs_no_shared_key_and_assertions_can_be_off() -> None:
    quickstart = _config_of(rendered("quickstart"))
    assert quickstart["admin"] == {"approvals": False}  # no session_key_file
    assert "subject_assertion" not in quickstart["upstream"]
    manifests = documents(
        template(
            *profile_args("ha"),
            "--set", "upstream.subjectAssertion.enabled=false,upstream.subjectAssertion.keySecret.name=",
        )
    )  # fmt: skip
    assert _config_of(manifests)["upstream"]["subject_assertion"] == {"enabled": False}
    gateway = _gateway(tuple(manifests))["spec"]["template"]["spec"]
    assert not [v for v in gateway["volumes"] if v["name"] == "assertion-key"]


def test_ha_replicas_share_the_inbox_session_key_and_the_subject_assertion_key(tmp_path: Path) -> None:
    manifests = rendered("ha")
    config = _config_of(manifests)
    assert config["admin"]["session_key_file"] == "/etc/labelgate/secrets/session-key/session.key"
    assert config["upstream"]["subject_assertion"]["key_file"] == (
        "/etc/labelgate/secrets/assertion-key/assertion.key"
    )
    keys: dict[str, bytes | None] = {}
    for workload in workloads(manifests):
        for spec in containers_of(workload):
            if command_words(spec.get("args", [])) not in (("serve",), ("approvals", "serve")):
                continue
            where = f"{workload['metadata']['name']}/{spec['name']}"
            mounts = {m["name"]: m for m in spec["volumeMounts"]}
            assert mounts["session-key"].get("readOnly") is True, where
            container = pod_container(tmp_path, list(manifests), workload, spec["name"])
            with patched_environ(container.env):
                settings = load_settings(config_in(container, container.option("--config")))
            keys[where] = session_key(settings.admin)
            if spec["name"] == "gateway":
                assert mounts["assertion-key"].get("readOnly") is True
                # The key from the Secret, not one made at start.
                asserter = SubjectAsserter.from_settings(settings.upstream.subject_assertion)
                assert asserter is not None
                assert settings.upstream.subject_assertion.key_file is not None
                assert settings.upstream.subject_assertion.key_file.is_file()
            else:
                assert "assertion-key" not in mounts, where  # the signing key stays in the gateway
    assert set(keys) == {"labelgate/gateway", "labelgate-approvals/approvals"}
    assert None not in keys.values() and len(set(keys.values())) == 1, keys


# -- what the admin port serves, and session recordings --------------------------------------


@pytest.mark.parametrize("case", [*PROFILES, *VARIANTS])
def test_the_gateways_admin_port_takes_no_votes(case: str, tmp_path: Path) -> None:
    """The admin port is open to ``networkPolicy.adminFrom`` (every namespace by default), for
    metrics and probes; the approvals API and inbox are the approvals server's alone, behind
    ``networkPolicy.approvalsFrom``."""
    manifests = rendered(case) if case in PROFILES else tuple(documents(template(*VARIANTS[case])))
    gateway = _gateway(manifests)
    container = pod_container(tmp_path, list(manifests), gateway, "gateway")
    with patched_environ(container.env):
        settings = load_settings(config_in(container, container.option("--config")))
    assert settings.admin_listen is not None
    assert settings.admin.approvals is False
    policy = next(m for m in manifests if m["metadata"]["name"] == "labelgate-gateway")
    admin_rule = next(
        r for r in policy["spec"]["ingress"] if {"port": "admin", "protocol": "TCP"} in r["ports"]
    )
    assert admin_rule["ports"] == [{"port": "admin", "protocol": "TCP"}]


def test_a_single_process_keeps_the_approvals_on_its_admin_port_by_default() -> None:
    # `make run`, the image's own config: one gateway, no approvals server beside it.
    from labelgate.config import AdminSettings

    assert AdminSettings().approvals is True
    image = yaml.safe_load((DEPLOY / "docker" / "labelgate.yaml").read_text())
    assert "approvals" not in image.get("admin", {})


@pytest.mark.parametrize("profile", PROFILES)
def test_the_gateway_records_sessions_on_the_pods_audit_volume(profile: str, tmp_path: Path) -> None:
    manifests = rendered(profile)
    gateway = _gateway(manifests)
    container = pod_container(tmp_path, list(manifests), gateway, "gateway")
    with patched_environ(container.env):
        settings = load_settings(config_in(container, container.option("--config")))
    assert settings.recording.enabled and settings.recording.dir is not None
    folder = "/" + str(settings.recording.dir.relative_to(container.root))
    assert container.writable(folder)
    spec = next(c for c in containers_of(gateway) if c["name"] == "gateway")
    mount = next(m for m in spec["volumeMounts"] if m["mountPath"] == folder)
    # Kept with the audit log (the pod's claim), in a folder of its own: not the log's.
    assert (mount["name"], mount["subPath"]) == ("audit-log", "sessions")
    assert "audit-log" in [t["metadata"]["name"] for t in gateway["spec"]["volumeClaimTemplates"]]
    writer = next(c for c in containers_of(gateway) if c["name"] == "audit-writer")
    log_dir = Path(parse_command(writer["args"])[1]["log_dir"])
    writer_mount = next(m for m in writer["volumeMounts"] if m["name"] == "audit-log")
    assert log_dir.relative_to(writer_mount["mountPath"]).parts[0] != "sessions"
    sealed = settings.recording.encryption_key_file is not None
    assert sealed == (profile == "ha"), "the ha profile seals recordings at rest"


def test_recording_can_be_off_or_kept_without_the_audit_writer(tmp_path: Path) -> None:
    off = documents(template(*profile_args("quickstart"), "--set", "recording.enabled=false"))
    assert "recording" not in _config_of(off)
    manifests = documents(template(*profile_args("quickstart"), "--set", "audit.enabled=false"))
    assert _check_pod(tmp_path, manifests) == []
    pod = _gateway(tuple(manifests))["spec"]["template"]["spec"]
    assert {"name": "sessions", "emptyDir": {}} in pod["volumes"]
    assert validate(tuple(manifests)) == []


# -- NetworkPolicy and the upstream's port ---------------------------------------------------


def _policies(*values: str) -> dict[str, dict]:
    args = [a for v in values for a in ("--set", v)]
    manifests = documents(template(*profile_args("ha"), *args))
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "NetworkPolicy"}


def _upstream_egress(policies: dict[str, dict]) -> dict:
    egress = policies["labelgate-gateway"]["spec"]["egress"]
    return next(
        rule
        for rule in egress
        if any(
            peer.get("podSelector", {}).get("matchLabels") == {"app": "inference-backend"}
            for peer in rule.get("to", [])
        )
    )


@pytest.mark.parametrize(
    ("values", "port"),
    [
        ([], 8001),  # the address's port: the Service does not translate it
        # A KServe predictor Service: 80 -> 8080. The policies see the pod's port, 8080.
        (["upstream.address=my-model-predictor:80,upstream.targetPort=8080"], 8080),
        (["upstream.address=my-model-predictor:80,upstream.targetPort=h2c"], "h2c"),  # the pods' port name
    ],
)
def test_network_policies_match_the_upstream_pods_port(values: list[str], port: int | str) -> None:
    policies = _policies(*values)
    assert _upstream_egress(policies)["ports"] == [{"port": port, "protocol": "TCP"}]
    assert policies["labelgate-upstream"]["spec"]["ingress"][0]["ports"] == [
        {"port": port, "protocol": "TCP"}
    ]
    assert validate(tuple(policies.values())) == []


def test_an_upstream_in_another_namespace_is_reached_through_its_namespace_selector() -> None:
    policies = _policies(
        "upstream.address=my-model-predictor.models.svc:80,upstream.targetPort=8080",
        "upstream.namespaceSelector.kubernetes\\.io/metadata\\.name=models",
    )
    rule = _upstream_egress(policies)
    # One peer: the selected pods in the selected namespaces (two peers would allow either).
    assert rule["to"] == [
        {
            "podSelector": {"matchLabels": {"app": "inference-backend"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "models"}},
        }
    ]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    # A policy here would select pods of this namespace that happen to carry the labels.
    assert "labelgate-upstream" not in policies
    assert validate(tuple(policies.values())) == []


def test_a_bad_upstream_target_port_fails_lint() -> None:
    result = helm(
        "lint", "--strict", str(CHART), *profile_args("ha"), "--set", "upstream.targetPort=70000", check=False
    )
    assert result.returncode != 0


# -- the bundle server's fleet database ------------------------------------------------------

# Bytes one decision event takes in the fleet database (SQLite, indexes included), measured with
# FleetStore.store_decisions on 20,000 OPA decision-log events of a 12-field labelgate input:
# 4.3 KB; rounded up. The volume must hold the most events the server keeps.
EVENT_BYTES = 4500
UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def _quantity(text: str) -> int:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()  # type: ignore[union-attr]
    return int(float(number) * UNITS[unit])


def _bundle_state(manifests: tuple[dict, ...] | list[dict]) -> tuple[dict, dict[str, Any], int]:
    """The bundle server's Deployment, its parsed command line and its state volume's bytes."""
    deployment = next(
        m for m in manifests if m["metadata"]["name"] == "labelgate-bundles" and m["kind"] == "Deployment"
    )
    spec = next(c for c in containers_of(deployment) if c["name"] == "bundle-server")
    words, params = parse_command(spec["args"])
    assert words == ("bundle", "serve")
    mount = next(m for m in spec["volumeMounts"] if m["mountPath"] == str(params["state_dir"]))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    if "emptyDir" in volume:
        size = _quantity(volume["emptyDir"]["sizeLimit"])
    else:
        claim_name = volume["persistentVolumeClaim"]["claimName"]
        claim = next(
            m
            for m in manifests
            if m["kind"] == "PersistentVolumeClaim" and m["metadata"]["name"] == claim_name
        )
        size = _quantity(claim["spec"]["resources"]["requests"]["storage"])
    return deployment, params, size


BUNDLE_CASES = {
    "ha": profile_args("ha"),
    "embedded-following-bundles": VARIANTS["embedded-following-bundles"],
    "embedded-following-bundles-on-a-claim": VARIANTS["embedded-following-bundles-on-a-claim"],
}


@pytest.mark.parametrize("case", BUNDLE_CASES)
def test_the_fleet_database_fits_its_volume(case: str) -> None:
    _, params, size = _bundle_state(documents(template(*BUNDLE_CASES[case])))
    # Every gateway of the release reports as one instance: the cap bounds the whole database.
    cap = params["max_decisions_per_instance"]
    assert cap > 0 and cap * EVENT_BYTES <= size, f"{cap} events of {EVENT_BYTES} bytes in {size} bytes"


def test_ha_keeps_the_fleet_database_on_a_claim_with_smaller_bounds() -> None:
    manifests = rendered("ha")
    deployment, params, _ = _bundle_state(manifests)
    assert next(m for m in manifests if m["kind"] == "PersistentVolumeClaim")["metadata"]["name"] == (
        "labelgate-bundles-state"
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one server on the claim
    defaults = parse_command(["bundle", "serve", "--source", "."])[1]
    assert params["decision_retention_days"] < defaults["decision_retention_days"]
    assert params["max_decisions_per_instance"] < defaults["max_decisions_per_instance"]
    assert params["status_retention_days"] <= defaults["status_retention_days"]


def test_the_fleet_database_can_live_on_a_claim_of_ones_own() -> None:
    manifests = documents(template(*VARIANTS["kserve-elsewhere"]))
    deployment = next(
        m for m in manifests if m["metadata"]["name"] == "labelgate-bundles" and m["kind"] == "Deployment"
    )
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "fleet"}
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]


def test_without_persistence_the_fleet_database_is_an_empty_dir_of_its_size_limit() -> None:
    manifests = documents(
        template(*VARIANTS["embedded-following-bundles"], "--set", "bundleServer.stateSizeLimit=1Gi")
    )
    deployment, _, size = _bundle_state(manifests)
    assert size == 1024**3
    assert "strategy" not in deployment["spec"]
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]


# -- the commands ---------------------------------------------------------------------------


def test_no_deployment_uses_a_command_alias_that_is_going_away() -> None:
    manifests = [m for p in PROFILES for m in rendered(p)] + [
        m for v in VARIANTS.values() for m in documents(template(*v))
    ]
    lines = [c.get("args", []) for w in workloads(manifests) for c in containers_of(w)]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    lines += [
        s.get("command", []) for s in compose["services"].values() if isinstance(s.get("command"), list)
    ]
    used = {args[0] for args in lines if args} & set(DEPRECATED_ALIASES)
    assert not used, (
        f"use {[' '.join(DEPRECATED_ALIASES[a]) for a in sorted(used)]} instead of {sorted(used)}"
    )
