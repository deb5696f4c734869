"""The secured bundle server in every shipped deployment: it starts (credentials for instances
and readers, the names its clients use allowed), and every client uses it properly (OPA's
bundles, status and decision logs, and the embedded engine, with an instance token the server
accepts, under an allowed name, verifying signatures when bundles are signed).

Static checks on the chart's profiles and variants and on compose, each broken on purpose to
see it fail, and one live run: the ha profile's ``bundle serve`` line and OPA config started for
real, OPA activating the signed bundle and reporting in, readers and strangers answered as they
should be.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labelgate.config import load_settings
from tests.deploy.bundles import BundleServer, bundle_server, embedded_problems, opa_problems
from tests.deploy.support import (
    DEPLOY,
    Container,
    command_words,
    compose_container,
    config_in,
    containers_of,
    documents,
    load_module,
    patched_environ,
    pod_container,
    profile_args,
    template,
    workloads,
)
from tests.support.procs import free_port, opa_binary, running, wait_until

NAMESPACE = "labelgate"
SERVICE = "labelgate-bundles"
SERVICE_NAMES = [SERVICE, f"{SERVICE}.{NAMESPACE}.svc", f"{SERVICE}.{NAMESPACE}.svc.cluster.local"]

# Every way the chart runs the bundle server: the ha profile (OPA sidecars, signed bundles) and
# the embedded engine following it, signed or not.
CHART_CASES: dict[str, list[str]] = {
    "ha": profile_args("ha"),
    "embedded-following-bundles": [
        *profile_args("quickstart"),
        "--set", "bundleServer.enabled=true,bundleServer.tokenSecret.name=tok",
        "--set", "bundleServer.readerTokenSecret.name=tok",
    ],
    "embedded-following-signed-bundles": [
        *profile_args("quickstart"),
        "--set", "bundleServer.enabled=true,bundleServer.tokenSecret.name=tok",
        "--set", "bundleServer.readerTokenSecret.name=rd",
        "--set", "bundleServer.signing.secretName=sign,bundleServer.allowedHosts={policy.example.com}",
    ],
}  # fmt: skip


@cache
def chart(case: str) -> tuple[dict, ...]:
    return tuple(documents(template(*CHART_CASES[case])))


def _workload(manifests: list[dict] | tuple[dict, ...], component: str) -> dict:
    return next(
        w
        for w in workloads(manifests)
        if w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def chart_problems(tmp_path: Path, manifests: list[dict] | tuple[dict, ...]) -> list[str]:
    """Every problem of the bundle server of rendered manifests and of its clients."""
    manifests = list(manifests)
    server_pod = _workload(manifests, "bundle-server")
    server = bundle_server(pod_container(tmp_path, manifests, server_pod, "bundle-server"), SERVICE_NAMES)
    problems = list(server.problems)
    gateway_pod = _workload(manifests, "gateway")
    names = {c["name"] for c in containers_of(gateway_pod)}
    if "opa" in names:
        opa = pod_container(tmp_path, manifests, gateway_pod, "opa")
        config_file = next(a.split("=", 1)[1] for a in opa.args if a.startswith("--config-file="))
        problems += opa_problems(server, opa, yaml.safe_load(opa.host(config_file).read_text()))
    else:
        gateway = pod_container(tmp_path, manifests, gateway_pod, "gateway")
        with patched_environ(gateway.env):
            settings = load_settings(config_in(gateway, gateway.option("--config")))
        problems += embedded_problems(server, gateway, settings)
    return problems


@pytest.mark.parametrize("case", CHART_CASES)
def test_the_charts_bundle_server_starts_and_its_clients_use_it(case: str, tmp_path: Path) -> None:
    assert chart_problems(tmp_path, chart(case)) == []


def test_the_quickstart_profile_runs_no_bundle_server() -> None:
    manifests = documents(template(*profile_args("quickstart")))
    assert not [
        c
        for w in workloads(manifests)
        for c in containers_of(w)
        if command_words(c.get("args", [])) == ("bundle", "serve")
    ]


def test_signing_is_on_in_ha_and_the_private_key_stays_in_the_bundle_server() -> None:
    manifests = chart("ha")
    server = next(
        c for c in containers_of(_workload(manifests, "bundle-server")) if c["name"] == "bundle-server"
    )
    assert "--signing-key" in server["args"]
    for workload in workloads(manifests):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            keys = [i["key"] for i in (volume.get("secret") or {}).get("items", [])]
            if "bundle-signing.key" in keys:
                assert workload is _workload(manifests, "bundle-server"), workload["metadata"]["name"]
            if "bundle-reader-token" in keys:
                pytest.fail(f"{workload['metadata']['name']} mounts the reader token")


def _container(manifests: list[dict], component: str, name: str) -> dict:
    return next(c for c in containers_of(_workload(manifests, component)) if c["name"] == name)


def _drop_env(name: str) -> Callable[[list[dict]], None]:
    def edit(manifests: list[dict]) -> None:
        server = _container(manifests, "bundle-server", "bundle-server")
        server["env"] = [e for e in server["env"] if e["name"] != name]

    return edit


def _drop_option(option: str) -> Callable[[list[dict]], None]:
    def edit(manifests: list[dict]) -> None:
        args = _container(manifests, "bundle-server", "bundle-server")["args"]
        while option in args:
            del args[args.index(option) : args.index(option) + 2]

    return edit


def _edit_opa_config(change: Callable[[dict], None]) -> Callable[[list[dict]], None]:
    def edit(manifests: list[dict]) -> None:
        config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
        config = yaml.safe_load(config_map["data"]["opa.yaml"])
        change(config)
        config_map["data"]["opa.yaml"] = yaml.safe_dump(config)

    return edit


def _insecure(manifests: list[dict]) -> None:
    server = _container(manifests, "bundle-server", "bundle-server")
    server["args"].append("--insecure-no-auth")
    server["env"] = []


def _opa_token_is_the_readers(manifests: list[dict]) -> None:
    volume = next(
        v
        for v in _workload(manifests, "gateway")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "bundle-token"
    )
    volume["secret"]["items"] = [{"key": "bundle-reader-token", "path": "bundle-token"}]


def _opa_without_verification(manifests: list[dict]) -> None:
    _edit_opa_config(lambda c: c["bundles"]["labelgate"].pop("signing"))(manifests)


def _only_the_short_name(manifests: list[dict]) -> None:
    _drop_option("--allowed-host")(manifests)
    _container(manifests, "bundle-server", "bundle-server")["args"] += ["--allowed-host", "labelgate-bundles"]


BROKEN_CHART = {
    "no credentials at all": (
        lambda m: (_drop_env("LABELGATE_BUNDLE_TOKEN")(m), _drop_env("LABELGATE_BUNDLE_READER_TOKEN")(m)),
        "has no credentials: it does not start",
    ),
    "no reader token": (_drop_env("LABELGATE_BUNDLE_READER_TOKEN"), "has no reader credential"),
    "no instance token": (_drop_env("LABELGATE_BUNDLE_TOKEN"), "has no instance credential"),
    "--insecure-no-auth": (_insecure, "runs with --insecure-no-auth"),
    "no --allowed-host": (_drop_option("--allowed-host"), "has no --allowed-host"),
    "only the short Service name": (
        _only_the_short_name,
        "does not allow the host(s) labelgate-bundles.labelgate.svc",
    ),
    "OPA without credentials": (
        _edit_opa_config(lambda c: c["services"]["bundles"].pop("credentials")),
        "has no credentials.bearer",
    ),
    "OPA status to a service without credentials": (
        _edit_opa_config(
            lambda c: (
                c["services"].update(plain={"url": "http://labelgate-bundles:8282"}),
                c["status"].update(service="plain"),
            )
        ),
        "OPA status (service 'plain') has no credentials.bearer",
    ),
    "OPA's token is the reader token": (_opa_token_is_the_readers, "a reader token (403)"),
    "OPA under a name the server refuses": (
        _edit_opa_config(lambda c: c["services"]["bundles"].update(url="http://bundles.example:8282")),
        "does not answer to bundles.example (421)",
    ),
    "OPA does not verify signatures": (_opa_without_verification, "accepts unsigned and altered bundles"),
}


@pytest.mark.parametrize("broken", BROKEN_CHART)
def test_the_check_fails_on_a_broken_chart(broken: str, tmp_path: Path) -> None:
    edit, expected = BROKEN_CHART[broken]
    manifests = copy.deepcopy(list(chart("ha")))
    edit(manifests)
    problems = chart_problems(tmp_path, manifests)
    assert any(expected in p for p in problems), problems


def test_the_check_fails_when_the_embedded_engine_has_no_instance_token(tmp_path: Path) -> None:
    manifests = copy.deepcopy(list(chart("embedded-following-signed-bundles")))
    gateway = _container(manifests, "gateway", "gateway")
    gateway["env"] = [e for e in gateway["env"] if e["name"] != "LABELGATE_POLICY__BUNDLE_TOKEN"]
    assert any("no bearer token" in p for p in chart_problems(tmp_path, manifests))


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ("bundleServer.enabled=true", "bundleServer.enabled needs bundleServer.tokenSecret.name"),
        (
            "bundleServer.enabled=true,bundleServer.tokenSecret.name=t,bundleServer.readerTokenSecret.name=t,"
            "bundleServer.readerTokenSecret.key=bundle-token",
            "instances and readers need different tokens",
        ),
    ],
)
def test_the_chart_refuses_a_bundle_server_without_credentials(values: str, reason: str) -> None:
    from tests.deploy.support import CHART, helm

    result = helm("template", "x", str(CHART), *profile_args("quickstart"), "--set", values, check=False)
    assert result.returncode != 0
    assert reason in result.stderr


# -- compose -----------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets") / "labelgate"
    load_module(DEPLOY / "compose" / "init_secrets.py").make_secrets(directory)
    return directory


def compose_problems(
    tmp_path: Path, compose: dict[str, Any], secrets: Path, edit_opa: Callable[[dict], None] | None = None
) -> list[str]:
    server = bundle_server(compose_container(tmp_path, compose, "bundle-server", secrets), ["bundle-server"])
    opa = compose_container(tmp_path, compose, "opa", secrets)
    config_file = next(a.split("=", 1)[1] for a in opa.args if a.startswith("--config-file="))
    config = yaml.safe_load(opa.host(config_file).read_text())
    if edit_opa is not None:
        edit_opa(config)
    return server.problems + opa_problems(server, opa, config)


def test_compose_bundle_server_starts_and_opa_uses_it(tmp_path: Path, secrets: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose_problems(tmp_path, compose, secrets) == []
    again = tmp_path / "again"
    server = bundle_server(compose_container(again, compose, "bundle-server", secrets), ["bundle-server"])
    assert server.role_of((secrets / "bundle-token").read_text()) == "instance"
    assert server.role_of((secrets / "bundle-reader-token").read_text()) == "reader"
    assert server.public_key_pem() == (secrets / "bundle-signing.pub").read_bytes()
    # The server holds digests only.
    assert (secrets / "bundle-token").read_text() not in (secrets / "bundle-tokens.yaml").read_text()


def _compose_drop(option: str) -> Callable[[dict], None]:
    def edit(compose: dict) -> None:
        command = compose["services"]["bundle-server"]["command"]
        while option in command:
            del command[command.index(option) : command.index(option) + 2]

    return edit


def _bare_decision_logs(config: dict) -> None:
    config["services"]["bare"] = {"url": "http://bundle-server:8282"}
    config["decision_logs"]["service"] = "bare"


BROKEN_COMPOSE: dict[str, tuple[Callable[[dict], None] | None, Callable[[dict], None] | None, str]] = {
    "no --tokens-file": (_compose_drop("--tokens-file"), None, "has no credentials"),
    "no --allowed-host": (_compose_drop("--allowed-host"), None, "has no --allowed-host"),
    "OPA config without credentials": (
        None,
        lambda c: c["services"]["bundles"].pop("credentials"),
        "has no credentials.bearer",
    ),
    "OPA decision logs to a bare service": (None, _bare_decision_logs, "OPA decision_logs (service 'bare')"),
    "OPA without the public key": (
        None,
        lambda c: c["bundles"]["labelgate"].pop("signing"),
        "accepts unsigned and altered bundles",
    ),
}


@pytest.mark.parametrize("broken", BROKEN_COMPOSE)
def test_the_check_fails_on_a_broken_compose(broken: str, tmp_path: Path, secrets: Path) -> None:
    edit_compose, edit_opa, expected = BROKEN_COMPOSE[broken]
    compose = yaml.safe_load(COMPOSE.read_text())
    if edit_compose is not None:
        edit_compose(compose)
    problems = compose_problems(tmp_path, compose, secrets, edit_opa)
    assert any(expected in p for p in problems), problems


# -- live: the ha profile's lines, started ------------------------------------------------------


def _rebased_server_args(server: Container, port: int) -> list[str]:
    args = list(server.args)
    for option in (
        "--source",
        "--state-dir",
        "--signing-key",
        "--tokens-file",
        "--tls-cert-file",
        "--tls-key-file",
    ):
        if option in args:
            index = args.index(option) + 1
            args[index] = str(server.host(args[index]))
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    return args


def _rebased_opa(opa: Container, bundle_port: int, addr: int, diag: int, tmp_path: Path) -> list[str]:
    config_file = next(a.split("=", 1)[1] for a in opa.args if a.startswith("--config-file="))
    config = yaml.safe_load(opa.host(config_file).read_text())
    config["services"]["bundles"]["url"] = f"http://127.0.0.1:{bundle_port}"
    bearer = config["services"]["bundles"]["credentials"]["bearer"]
    bearer["token_path"] = str(opa.host(bearer["token_path"]))
    config["persistence_directory"] = str(opa.host(config["persistence_directory"]))
    for bundle in config["bundles"].values():  # the first poll is what the test waits for
        bundle["polling"] = {
            "min_delay_seconds": 1,
            "max_delay_seconds": 2,
            "long_polling_timeout_seconds": 10,
        }
    config.setdefault("decision_logs", {})["reporting"] = {"min_delay_seconds": 1, "max_delay_seconds": 2}
    rebased = tmp_path / "opa.rebased.yaml"
    rebased.write_text(yaml.safe_dump(config))
    args = []
    for arg in opa.args:
        if arg.startswith("--addr="):
            arg = f"--addr=127.0.0.1:{addr}"
        elif arg.startswith("--diagnostic-addr="):
            arg = f"--diagnostic-addr=127.0.0.1:{diag}"
        elif arg.startswith("--config-file="):
            arg = f"--config-file={rebased}"
        elif arg.startswith("--set-file="):
            key, _, path = arg.split("=", 1)[1].partition("=")
            arg = f"--set-file={key}={opa.host(path)}"
        args.append(arg)
    return args


@pytest.mark.slow
def test_ha_profile_bundle_server_and_opa_work_together(tmp_path: Path) -> None:
    from tests.support.procs import labelgate_command

    manifests = list(chart("ha"))
    server_container = pod_container(
        tmp_path, manifests, _workload(manifests, "bundle-server"), "bundle-server"
    )
    opa = pod_container(tmp_path, manifests, _workload(manifests, "gateway"), "opa")
    server: BundleServer = bundle_server(server_container, SERVICE_NAMES)
    assert server.problems == []
    port, addr, diag = free_port(), free_port(), free_port()
    reader = server_container.env["LABELGATE_BUNDLE_READER_TOKEN"]
    instance = server_container.env["LABELGATE_BUNDLE_TOKEN"]
    server_command = labelgate_command(*_rebased_server_args(server_container, port))
    with running(
        server_command, tmp_path / "bundle-server.log", port=port, env=server_container.env, timeout=60
    ):
        url = f"http://127.0.0.1:{port}"
        with running(
            [opa_binary(), *_rebased_opa(opa, port, addr, diag, tmp_path)], tmp_path / "opa.log", port=diag
        ) as opa_process:

            def bundle_active() -> bool:
                return httpx.get(f"http://127.0.0.1:{diag}/health?bundles", timeout=2).status_code == 200

            try:
                wait_until(bundle_active, 60, "OPA to activate the signed bundle")
            except TimeoutError:
                pytest.fail(f"OPA never activated the bundle:\n{opa_process.tail(30)}")

            def fleet(host: str, token: str) -> httpx.Response:
                headers = {"Host": f"{host}:8282", "Authorization": f"Bearer {token}"}
                return httpx.get(f"{url}/fleet", headers=headers, timeout=5)

            def reported() -> bool:
                instances = fleet(SERVICE, reader).json()["instances"]
                return any(i["id"] == "gateways" and i.get("up_to_date") for i in instances)

            wait_until(reported, 30, "OPA's status report under the release's instance name")
            decision = httpx.post(
                f"http://127.0.0.1:{addr}/v1/data/labelgate/decision", json={"input": {}}, timeout=5
            )
            assert decision.status_code == 200, decision.text

            def logged() -> bool:
                instances = fleet(SERVICE, reader).json()["instances"]
                return any(
                    i["id"] == "gateways" and (i.get("decision_logs") or {}).get("count") for i in instances
                )

            wait_until(logged, 30, "OPA's decision log, posted with its instance token")
            for name in SERVICE_NAMES:
                assert fleet(name, reader).status_code == 200, name
            assert fleet("rebound.example", reader).status_code == 421  # a DNS-rebinding name
            assert fleet(SERVICE, instance).status_code == 403  # OPA's token does not read
            assert fleet(SERVICE, "not-a-token-of-this-server").status_code == 401
            bundle = httpx.get(
                f"{url}/bundles/labelgate", headers={"Authorization": f"Bearer {reader}"}, timeout=5
            )
            assert bundle.status_code == 403  # the reader's token does not pull
            signed = httpx.get(
                f"{url}/bundles/labelgate", headers={"Authorization": f"Bearer {instance}"}, timeout=5
            )
            from labelgate.bundle.build import read_tarball

            assert ".signatures.json" in read_tarball(signed.content)
