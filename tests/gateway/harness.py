"""Real parts for the gateway acceptance tests: credentials, configs and processes.

Every gateway here is a real ``labelgate serve --config FILE`` child process on loopback,
in front of a real upstream, with a real policy engine. Nothing in this module imports
tritonclient (its protos clash with ours in one process): the real Triton client runs in
a child process (``tests.support.triton.run_probe``, or ``run_tls_probe`` below for mTLS).
The in-process grpc.aio client is ``aio.py``; expected values are ``expected.py``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from tests.support.pki import CertAuthority, SigningKey, claims, create_ca, write_jwks
from tests.support.procs import Process, free_port, labelgate_command, opa_binary, running, wait_until

REPO = Path(__file__).resolve().parents[2]
REGO = REPO / "rego"
CATALOG = REGO / "labelgate" / "catalog" / "data.json"
ISSUER = "https://idp.test"
AUDIENCE = "labelgate"
HASH_KEY = "gateway-test-hash-key-0123456789"
# The gateway's own credential toward the upstream: the backend must see this, never the caller's.
UPSTREAM_TOKEN = "gateway-own-upstream-token"
TLS_PROBE = Path(__file__).with_name("tls_probe.py")
INFER = "/inference.GRPCInferenceService/ModelInfer"
ENGINES = ("embedded", "opa")

# Personas of the default policy: persona -> (JWT subject and mTLS common name, groups).
PERSONAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "no-group": ("nora", ()),
    "analyst": ("ana", ("analysts",)),
    "steward": ("steve", ("data-stewards",)),
    "break-glass": ("bea", ("break-glass",)),
}


# --- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenIssuer:
    """The identity provider the gateways trust: one RSA key published in a JWKS file."""

    key: SigningKey
    jwks_file: Path

    def token(self, sub: str, groups: Sequence[str] = (), **overrides: Any) -> str:
        fields: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, **overrides}
        return self.key.sign(claims(sub, groups=list(groups), **fields))

    def headers(self, persona: str) -> dict[str, str]:
        sub, groups = PERSONAS[persona]
        return bearer(self.token(sub, groups))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_token_issuer(directory: Path, key: SigningKey) -> TokenIssuer:
    return TokenIssuer(key, write_jwks(directory / "jwks.json", key))


@dataclass(frozen=True)
class ClientCert:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class MtlsFiles:
    """A CA, the gateway's server certificate, one client certificate per persona, the groups file."""

    ca: CertAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path
    groups_file: Path
    clients: dict[str, ClientCert] = field(default_factory=dict)

    def probe_tls(self, persona: str) -> dict[str, str]:
        """The ``tls`` entry of a ``run_tls_probe`` call: the persona's client certificate."""
        client = self.clients[persona]
        return {
            "root_certificates": str(self.ca_file),
            "private_key": str(client.key_file),
            "certificate_chain": str(client.cert_file),
        }

    def channel_credentials(self, persona: str | None) -> grpc.ChannelCredentials:
        """grpc credentials with the persona's client certificate (None: no certificate)."""
        root = self.ca_file.read_bytes()
        if persona is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        client = self.clients[persona]
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=client.key_file.read_bytes(),
            certificate_chain=client.cert_file.read_bytes(),
        )


def make_mtls_files(directory: Path) -> MtlsFiles:
    ca = create_ca()
    ca_file = ca.write(directory)
    server_cert, server_key = ca.server_cert().write(directory, "server")
    clients = {}
    for persona, (common_name, _) in PERSONAS.items():
        cert_file, key_file = ca.issue(common_name).write(directory, f"client-{common_name}")
        clients[persona] = ClientCert(cert_file, key_file)
    groups_file = directory / "groups.yaml"
    groups_file.write_text(yaml.safe_dump({cn: list(groups) for cn, groups in PERSONAS.values()}))
    return MtlsFiles(ca, ca_file, server_cert, server_key, groups_file, clients)


# --- gateway processes -------------------------------------------------------------------


def gateway_config(
    *,
    upstream: str,
    engine: str,
    issuer: TokenIssuer | None,
    opa_url: str | None = None,
    mtls: MtlsFiles | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config for ``labelgate serve``: JWT auth (``issuer``), mTLS auth (``mtls``) or both.

    ``sections`` are merged into the top level (one level deep for mappings).
    """
    policy: dict[str, Any] = {"dir": str(REGO)}
    if engine == "opa":
        assert opa_url, "engine opa needs an opa_url"
        policy["opa_url"] = opa_url
    auth: dict[str, Any] = {}
    if issuer is not None:
        auth["jwt"] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(issuer.jwks_file)}
    config: dict[str, Any] = {
        "upstream": {"address": upstream},
        "engine": engine,
        "policy": policy,
        "classification": {"catalog_file": str(CATALOG)},
        "masking": {"hash_key": HASH_KEY},
        "auth": auth,
        # Issue 4's behaviour: a call the policy holds is refused at once (APPROVAL_REQUIRED).
        # Holding calls for approvers is the approval service's, tested on its own.
        "approvals": {"enabled": False},
    }
    if mtls is not None:
        config["server_tls"] = {"cert_file": str(mtls.server_cert), "key_file": str(mtls.server_key)}
        auth["mtls"] = {
            "ca_file": str(mtls.ca_file),
            "identity_from": "cn",
            "groups_file": str(mtls.groups_file),
        }
    for key, value in sections.items():
        current = config.get(key)
        config[key] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    return config


@dataclass
class Gateway:
    """A running gateway process."""

    address: str
    admin_url: str
    process: Process
    config: dict[str, Any]

    def output(self) -> str:
        return self.process.output()

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.admin_url + path)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback test URL
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def start_gateway(config: dict[str, Any], directory: Path, name: str = "gateway") -> Iterator[Gateway]:
    """Write ``config`` (plus free listen/admin ports) and run ``labelgate serve`` until ready."""
    port, admin_port = free_port(), free_port()
    config = {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}"}
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(config_file))
    with running(command, directory / f"{name}.log", port=port) as process:
        gateway = Gateway(f"127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, config)

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"the gateway exited early:\n{process.output()}")
            with contextlib.suppress(OSError):
                return gateway.get("/readyz")[0] == 200
            return False

        wait_until(ready, 20, f"{name} /readyz")
        yield gateway


# --- the real Triton client over mTLS ------------------------------------------------------


def run_tls_probe(calls: list[dict[str, Any]], url: str, timeout: float = 60) -> list[dict[str, Any]]:
    """``run_probe`` for calls that carry a ``tls`` entry (see ``tls_probe.py``)."""
    completed = subprocess.run(
        [sys.executable, str(TLS_PROBE)],
        input=json.dumps([{"url": url, **call} for call in calls]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"tls probe failed (exit {completed.returncode}):\n{completed.stderr}")
    results = json.loads(completed.stdout)
    assert len(results) == len(calls), "the probe must answer every call"
    return results


# --- the other real parts ------------------------------------------------------------------


@contextlib.contextmanager
def run_backend(directory: Path, name: str = "backend") -> Iterator[tuple[str, Process]]:
    """A real demo backend process; yields (HOST:PORT, process)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    directory.mkdir(parents=True, exist_ok=True)
    command = labelgate_command("demo-backend", "--listen", address)
    with running(command, directory / f"{name}.log", port=port) as process:
        yield address, process


@contextlib.contextmanager
def run_opa(directory: Path, name: str = "opa") -> Iterator[tuple[str, Process]]:
    """A real ``opa run --server`` with the policy pack; yields (base URL, process)."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    command = [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", str(REGO)]
    with running(command, directory / f"{name}.log", port=port) as process:
        yield f"http://127.0.0.1:{port}", process


class GatewayPool:
    """Gateways in front of the shared backend, one per (engine, auth), started on first use.

    ``auth`` is ``jwt`` (bearer tokens from ``token_issuer``; the gateway calls the backend
    with its own token, ``UPSTREAM_TOKEN``) or ``mtls`` (client certificates only).
    """

    def __init__(
        self, stack: contextlib.ExitStack, directory: Path, backend: str, issuer: TokenIssuer, mtls: MtlsFiles
    ) -> None:
        self._stack = stack
        self._directory = directory
        self._backend = backend
        self._issuer = issuer
        self._mtls = mtls
        self._opa_url: str | None = None
        self._gateways: dict[tuple[str, str], Gateway] = {}

    def opa_url(self) -> str:
        if self._opa_url is None:
            self._opa_url, _ = self._stack.enter_context(run_opa(self._directory / "opa"))
        return self._opa_url

    def get(self, engine: str, auth: str = "jwt") -> Gateway:
        key = (engine, auth)
        if key not in self._gateways:
            opa_url = self.opa_url() if engine == "opa" else None
            if auth == "jwt":
                config = gateway_config(
                    upstream=self._backend, engine=engine, opa_url=opa_url, issuer=self._issuer
                )
                config["upstream"]["token"] = UPSTREAM_TOKEN
            else:
                config = gateway_config(
                    upstream=self._backend, engine=engine, opa_url=opa_url, issuer=None, mtls=self._mtls
                )
            name = f"{engine}-{auth}"
            self._gateways[key] = self._stack.enter_context(
                start_gateway(config, self._directory / name, name)
            )
        return self._gateways[key]

    def terminate_all(self) -> None:
        """Ask every gateway to stop at once; each takes a while to exit, so don't do it in turn."""
        for gateway in self._gateways.values():
            gateway.process.signal(signal.SIGTERM)
