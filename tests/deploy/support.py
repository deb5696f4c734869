"""Deploy checks without a container engine: render the chart, and lay out what a container
would see (the image's files, then each mount over them) in a folder, so the config it runs
with can go through ``labelgate serve --check-config`` as it would inside the container.

``python -m tests.deploy.support --write`` rewrites deploy/kubernetes/ (``make k8s-render``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "labelgate"
PROFILES = ("quickstart", "ha")
RENDERED = DEPLOY / "kubernetes" / "labelgate.yaml"
# The Kubernetes version the chart is rendered and validated for (kubernetes-validate's schemas).
KUBE_VERSION = "1.34.0"
RELEASE = "labelgate"
HELM = Path(os.environ.get("LABELGATE_HELM", REPO / ".tools" / "bin" / "helm"))
RENDERED_HEADER = (
    "# GENERATED: the Helm chart deploy/helm/labelgate rendered with its quickstart profile\n"
    "# (make k8s-render; tests/deploy checks it is current). Do not edit: change the chart.\n"
    "#   kubectl create namespace labelgate && kubectl -n labelgate apply -f deploy/kubernetes/\n"
)
# What the Dockerfile's final stage puts in the image (tests check the Dockerfile says so).
IMAGE_FILES = {
    "/etc/labelgate/rego": REPO / "rego",
    "/etc/labelgate/labelgate.yaml": DEPLOY / "docker" / "labelgate.yaml",
}
IMAGE_DIRS = (
    "/var/lib/labelgate/audit",
    "/var/lib/labelgate/state",
    "/var/lib/labelgate/bundle-server",
    "/run/labelgate/audit",
    "/tmp",
)
# `socket` stays as written: start-up only checks its length, which rebasing would change.
_PATH_KEYS = {"dir", "descriptor_set"}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        raise AssertionError(f"helm is not built at {HELM}: run `make tools`")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check, timeout=120)


def template(*values_args: str, chart: Path = CHART) -> str:
    return helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        "labelgate",
        "--kube-version",
        KUBE_VERSION,
        *values_args,
    ).stdout


def profile_args(profile: str) -> list[str]:
    return ["--values", str(CHART / "profiles" / f"{profile}.yaml")]


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubernetes_render() -> str:
    return RENDERED_HEADER + template(*profile_args("quickstart"))


# -- a container's filesystem ---------------------------------------------------------------


@dataclass
class Mount:
    path: str
    writable: bool


@dataclass
class Container:
    """What one container sees: ``root`` stands for ``/``; ``env`` its environment."""

    name: str
    root: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def writable(self, path: str) -> bool:
        """On a writable mount (the root filesystem is read-only)."""
        return any(
            m.writable and (path == m.path or path.startswith(m.path.rstrip("/") + "/")) for m in self.mounts
        )

    def option(self, name: str) -> str:
        return self.args[self.args.index(name) + 1]


def lay_image(root: Path) -> None:
    for target, source in IMAGE_FILES.items():
        dest = root / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copyfile(source, dest)
    for folder in IMAGE_DIRS:
        (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _mount_dir(container: Container, path: str, writable: bool) -> Path:
    """A mount hides what the image had at its path."""
    where = container.host(path)
    if where.is_dir():
        shutil.rmtree(where)
    elif where.exists():
        where.unlink()
    where.mkdir(parents=True)
    container.mounts.append(Mount(path, writable))
    return where


SECRET_SAMPLES = {
    "hash.key": "0123456789abcdef0123456789abcdef\n",
    "session.key": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    "jwks.json": (DEPLOY / "quickstart" / "dev-keys" / "jwks.json").read_text(),
    "postgres-dsn": "postgresql://labelgate:sample@postgres:5432/labelgate",
    # 32 bytes as hex, as `recording.encryption_key_file` takes them.
    "recording.key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
}


@cache
def _sample_key_pair() -> tuple[str, str]:
    """One RSA key pair for every sample signing key (private, public PEM), made once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


@cache
def _sample_assertion_key() -> str:
    """One P-256 private key (PKCS#8 PEM), as ``openssl genpkey -algorithm EC`` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@cache
def _sample_tls() -> tuple[str, str]:
    """One self-signed certificate and its key (PEM), made once: what a TLS Secret and a CA
    bundle hold (``serve --check-config`` loads them as serving does)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labelgate-sample")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), pem_key.decode()


def secret_sample(key: str) -> str:
    """What a Secret's ``key`` holds in the checks: each key its own value (so two credentials
    from two keys differ, and one key mounted in two places matches), PEM where a key is one."""
    if key == "assertion.key":
        return _sample_assertion_key()
    if key.endswith("signing.key") and not key.startswith("audit"):
        return _sample_key_pair()[0]
    if key.endswith("signing.pub") and not key.startswith("audit"):
        return _sample_key_pair()[1]
    if key.endswith(".crt"):  # a serving certificate or a CA bundle
        return _sample_tls()[0]
    if key == "tls.key":
        return _sample_tls()[1]
    return SECRET_SAMPLES.get(key, f"sample {key}\n")


def pod_container(
    tmp: Path, manifests: list[dict[str, Any]], workload: dict[str, Any], name: str
) -> Container:
    """The container ``name`` of a rendered workload, its mounts laid over the image."""
    pod = workload["spec"]["template"]["spec"]
    spec = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name)
    root = tmp / f"{workload['metadata']['name']}-{name}"
    lay_image(root)
    container = Container(name, root, [str(a) for a in spec.get("args", [])])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    config_maps = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ConfigMap"}
    for mount in spec.get("volumeMounts", []):
        writable = not mount.get("readOnly", False)
        where = _mount_dir(container, mount["mountPath"], writable)
        if mount["name"] in claims:
            continue
        volume = volumes[mount["name"]]  # KeyError: a mount of a volume the pod does not define
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (where / item["path"]).write_text(data[item["key"]])
        elif "secret" in volume:
            items = volume["secret"].get("items")
            if items is None:  # a kubernetes.io/tls Secret
                items = [{"key": k, "path": k} for k in ("tls.crt", "tls.key")]
            for item in items:
                (where / item["path"]).write_text(secret_sample(item["key"]))
        elif not {"emptyDir", "persistentVolumeClaim"} & volume.keys():
            raise AssertionError(f"{name}: volume {mount['name']} of a kind this check does not know")
    for variable in spec.get("env", []):
        if "value" in variable:
            container.env[variable["name"]] = variable["value"]
        else:
            container.env[variable["name"]] = secret_sample(
                variable["valueFrom"]["secretKeyRef"]["key"]
            ).strip()
    return container


def compose_container(tmp: Path, compose: dict[str, Any], name: str, secrets_dir: Path | None) -> Container:
    """A compose service: bind mounts from deploy/, named volumes empty (``secrets`` from ``secrets_dir``)."""
    service = compose["services"][name]
    root = tmp / f"compose-{name}"
    lay_image(root)
    command = service.get("command", [])
    container = Container(name, root, [str(a) for a in command] if isinstance(command, list) else [])
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        writable = "ro" not in mode
        if source.startswith("."):
            host = (DEPLOY / source).resolve()
            if not host.exists():
                raise AssertionError(f"compose service {name} mounts {source}, which does not exist")
            where = container.host(target)
            if host.is_dir():
                _mount_dir(container, target, writable)
                shutil.rmtree(where)
                shutil.copytree(host, where)
            else:
                where.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(host, where)
                container.mounts.append(Mount(target, writable))
        else:
            if source not in compose.get("volumes", {}):
                raise AssertionError(f"compose service {name} mounts volume {source}, which is not declared")
            where = _mount_dir(container, target, writable)
            if source == "secrets" and secrets_dir is not None:
                shutil.rmtree(where)
                shutil.copytree(secrets_dir, where)
    for key, value in (service.get("environment") or {}).items():
        container.env[key] = str(value)
    return container


def _rebase(node: Any, root: Path) -> Any:
    """Absolute paths in a gateway config, moved under ``root`` (keys as config.py reads paths)."""
    if isinstance(node, dict):
        return {
            key: (
                str(root / value.lstrip("/"))
                if isinstance(value, str)
                and value.startswith("/")
                and (key in _PATH_KEYS or key.endswith(("_file", "_dir")))
                else _rebase(value, root)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase(item, root) for item in node]
    return node


def config_in(container: Container, config_path: str) -> Path:
    """The container's config file, its absolute paths rebased into the container's folder."""
    source = container.host(config_path)
    if not source.is_file():
        raise AssertionError(f"{container.name}: the config {config_path} is not in the container")
    data = yaml.safe_load(source.read_text())
    rebased = source.with_name(source.stem + ".rebased.yaml")
    rebased.write_text(yaml.safe_dump(_rebase(data, container.root)))
    return rebased


def check_config(container: Container, config_path: str) -> subprocess.CompletedProcess[str]:
    """``labelgate serve --check-config`` on the container's config, with its environment."""
    config = config_in(container, config_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELGATE_")}
    env |= {k: v for k, v in container.env.items() if k.startswith("LABELGATE_")}
    if "LABELGATE_DEV_KEYS" in container.env:
        env["LABELGATE_DEV_KEYS"] = str(container.host(container.env["LABELGATE_DEV_KEYS"]))
    command = [sys.executable, "-m", "labelgate.cli", "serve", "--check-config", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


@contextmanager
def patched_environ(variables: dict[str, str]) -> Iterator[None]:
    """``LABELGATE_*`` as the container has them, for an in-process ``load_settings``."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("LABELGATE_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in variables.items() if k.startswith("LABELGATE_")})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def workloads(manifests: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def containers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def approvals_server_check(settings: Any) -> None:
    """What ``labelgate approvals serve`` refuses to start with (wherever that module lives now),
    and the inbox's session key it reads as it starts (``admin.session_key_file``)."""
    try:
        from labelgate.admin.approvals_server import check
    except ImportError:  # before the admin package
        from labelgate.approvals.server import check  # type: ignore[no-redef]
    from labelgate.admin.app import session_key

    check(settings)
    session_key(settings.admin)


# The top-level names README keeps for one release only (hidden from --help): a deployment
# must use the commands they stand for.
DEPRECATED_ALIASES = {
    "bundle-server": ("bundle", "serve"),
    "approvals-server": ("approvals", "serve"),
    "audit-writer": ("audit", "writer"),
    "audit-forwarder": ("audit", "forwarder"),
}


def _cli_group() -> Any:
    import typer.main

    from labelgate.cli import app

    return typer.main.get_command(app)


def command_words(args: list[str]) -> tuple[str, ...]:
    """The words of ``args`` that name a labelgate command: ``("serve",)``, ``("bundle", "serve")``."""
    node, words = _cli_group(), []
    for arg in args:
        commands = getattr(node, "commands", None)
        if commands is None or arg not in commands:
            break
        node = commands[arg]
        words.append(arg)
    return tuple(words)


def cli_command(words: tuple[str, ...] | list[str]) -> Any:
    """The click command ``labelgate WORDS...`` runs."""
    node = _cli_group()
    for word in words:
        node = node.commands[word]
    return node


def cli_options(*words: str) -> set[str]:
    """The options ``labelgate WORDS...`` takes."""
    found = cli_command(words)
    return {name for param in found.params for name in param.opts if name.startswith("--")}


def parse_command(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``args`` as the CLI parses them (with ``env``'s LABELGATE_* variables): the command's
    words and its parameters, defaults included."""
    words = command_words(args)
    with patched_environ(env or {}):
        context = cli_command(words).make_context(" ".join(words), list(args[len(words) :]))
    return words, dict(context.params)


def load_module(path: Path) -> Any:
    """A script of deploy/ (not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_tag(text: str, image: str) -> list[str]:
    return re.findall(rf"{re.escape(image)}:([\w.-]+)", text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.deploy.support --write")
    RENDERED.parent.mkdir(parents=True, exist_ok=True)
    RENDERED.write_text(kubernetes_render())
    print(f"wrote {RENDERED.relative_to(REPO)}")
