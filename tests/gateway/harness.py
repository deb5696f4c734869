"""Real parts for the gateway acceptance tests: credentials, configs and processes.

Every gateway here is a real ``labelgate serve --config FILE`` child process on loopback,
in front of a real upstream, with a real policy engine. Nothing in this module imports
tritonclient (its protos clash with ours in one process): the real Triton client runs in
a child process (``tests.support.triton.run_probe``, or ``run_tls_probe`` below for mTLS).
The in-process grpc.aio client is ``aio.py``; expected values are ``expected.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.rpc import error_details_pb2, status_pb2

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
ENGINES = ("embedded", "wasm", "opa")

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
def start_gateway(
    config: dict[str, Any], directory: Path, name: str = "gateway", env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """Write ``config`` (plus free listen/admin ports) and run ``labelgate serve`` until ready
    (``env`` on top of this process's, e.g. ``PYTHONPATH`` for a baseline source tree)."""
    port, admin_port = free_port(), free_port()
    config = {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}"}
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(config_file))
    with running(command, directory / f"{name}.log", port=port, env=env) as process:
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


# --- the planted upstream, the audit writer, what a caller and the disk hold ----------------
# (for test_release.py and test_leak_fuzzer.py)

PLANTED_UPSTREAM = Path(__file__).with_name("planted_upstream.py")
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


@contextlib.contextmanager
def run_planted_upstream(directory: Path, name: str = "planted") -> Iterator[tuple[str, Process]]:
    """A real ``planted_upstream.py`` process (see its docstring); yields (HOST:PORT, process)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(PLANTED_UPSTREAM), "--listen", address]
    with running(command, directory / f"{name}.log", port=port) as process:
        yield address, process


@dataclass(frozen=True)
class AuditFiles:
    socket: Path
    log_dir: Path
    process: Process


@contextlib.contextmanager
def run_audit_writer(directory: Path, name: str = "audit") -> Iterator[AuditFiles]:
    """A real ``labelgate audit-writer`` process, ready once its socket exists."""
    directory.mkdir(parents=True, exist_ok=True)
    socket, log_dir = directory / f"{name}.sock", directory / name
    command = labelgate_command("audit-writer", "--socket", str(socket), "--log-dir", str(log_dir))
    with running(command, directory / f"{name}-writer.log") as process:

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"the audit writer exited early:\n{process.output()}")
            return socket.exists()

        wait_until(ready, 20, "the audit socket")
        yield AuditFiles(socket, log_dir, process)


def audit_records(log_dir: Path) -> list[dict[str, Any]]:
    """Every audit event written so far, oldest first."""
    return [
        json.loads(line)["event"]
        for path in sorted(log_dir.glob("audit-*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def files_at_rest(*places: Path) -> bytes:
    """Every byte stored in these files and folders, plus every base64 message a session
    recording holds, decoded (a value must not hide in base64 either)."""
    blobs: list[bytes] = []
    for place in places:
        paths = sorted(p for p in place.rglob("*") if p.is_file()) if place.is_dir() else [place]
        for path in paths:
            if not path.exists() or path.suffix in (".sock", ".db"):
                continue
            data = path.read_bytes()
            blobs.append(data)
            for line in data.splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if not isinstance(entry, dict):
                        continue
                    for key in ("response", "request_message"):
                        if isinstance(entry.get(key), dict) and "base64" in entry[key]:
                            blobs.append(base64.b64decode(entry[key]["base64"]))
    return b"\n".join(blobs)


def recorded_calls(recording_dir: Path, session_id: str) -> list[dict[str, Any]]:
    """The ``call`` entries the client's ``session_id`` is recorded under (files store), oldest
    first in each recording. A session is keyed ``<session id>~<digest of subject and id>``
    (``recording.entries.recording_key``), so this matches on the ``<session id>~`` prefix:
    give each caller its own session id (``AuditedStack.headers`` makes a fresh one)."""
    prefix = f"{session_id}~"
    entries = []
    for path in sorted(recording_dir.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):  # a line still being written
                entry = json.loads(line)
                if (
                    isinstance(entry, dict)
                    and entry.get("kind") == "call"
                    and str(entry.get("session_id", "")).startswith(prefix)
                ):
                    entries.append(entry)
    return entries


@dataclass
class Received:
    """Everything a caller received on one call: each serialized message, the initial and
    trailing metadata, and on failure the status code, message and details."""

    messages: list[bytes] = field(default_factory=list)
    initial_metadata: list[tuple[str, Any]] = field(default_factory=list)
    trailing_metadata: list[tuple[str, Any]] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""

    def blob(self) -> bytes:
        """All of it as one byte string, for leak checks."""
        parts = [*self.messages, self.details.encode()]
        for key, value in [*self.initial_metadata, *self.trailing_metadata]:
            parts.append(key.encode())
            parts.append(value if isinstance(value, bytes) else str(value).encode())
        return b"\n".join(parts)

    def status_details(self) -> Any:
        """The ``google.rpc.Status`` of a failure (None when it carries none)."""
        for key, value in self.trailing_metadata:
            if key == "grpc-status-details-bin":
                return status_pb2.Status.FromString(value)
        return None

    def reason(self) -> str | None:
        """The ``ErrorInfo`` reason of a failure."""
        status = self.status_details()
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info.reason
        return None


async def capture_unary(
    address: str, request: Any, headers: dict[str, str] | None = None, deadline: float = 30.0
) -> Received:
    """Call ``ModelInfer`` and keep every byte the caller receives."""
    received = Received()
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as ch:
        call = ch.unary_unary(INFER, request_serializer=lambda message: message.SerializeToString())(
            request, metadata=tuple((headers or {}).items()), timeout=deadline
        )
        try:
            received.messages.append(await call)
        except grpc.aio.AioRpcError as error:
            received.code, received.details = error.code(), error.details() or ""
        received.initial_metadata = list(await call.initial_metadata() or ())
        received.trailing_metadata = list(await call.trailing_metadata() or ())
    return received


async def capture_stream(
    address: str,
    requests: Sequence[Any],
    headers: dict[str, str] | None = None,
    deadline: float = 30.0,
    half_close: bool = True,
) -> Received:
    """Send ``requests`` on one ``ModelStreamInfer`` stream, half-close (unless not
    ``half_close``: the caller keeps its side open), and keep every byte the caller receives
    until the stream ends."""
    received = Received()
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as ch:
        call = ch.stream_stream(STREAM_INFER, request_serializer=lambda message: message.SerializeToString())(
            metadata=tuple((headers or {}).items()), timeout=deadline
        )

        async def send() -> None:
            # A write racing the end of the call (the gateway refused the stream) raises
            # InvalidStateError ("RPC already finished"): the call's status says what happened.
            with contextlib.suppress(
                grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.CancelledError, asyncio.InvalidStateError
            ):
                for request in requests:
                    await call.write(request)
                if half_close:
                    await call.done_writing()

        sender = asyncio.ensure_future(send())
        try:
            async for message in call:
                received.messages.append(message)
        except grpc.aio.AioRpcError as error:
            received.code, received.details = error.code(), error.details() or ""
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        code = await call.code()
        if code != grpc.StatusCode.OK and received.code == grpc.StatusCode.OK:
            received.code, received.details = code, await call.details() or ""
        received.initial_metadata = list(await call.initial_metadata() or ())
        received.trailing_metadata = list(await call.trailing_metadata() or ())
    return received


SESSION_HEADER = "x-labelgate-session"


@dataclass
class AuditedStack:
    """A gateway with a durable audit writer and session recording (files), in front of
    ``upstream``; ``log_files`` are the gateway's and the audit writer's own logs."""

    gateway: Gateway
    upstream: str
    audit: AuditFiles
    recording_dir: Path
    issuer: TokenIssuer

    @property
    def address(self) -> str:
        return self.gateway.address

    @property
    def log_files(self) -> list[Path]:
        return [self.gateway.process.log_path, self.audit.process.log_path]

    def headers(self, persona: str, session: str | None = None) -> dict[str, str]:
        """The persona's bearer token and a session id (fresh unless given)."""
        return {**self.issuer.headers(persona), SESSION_HEADER: session or f"s-{uuid.uuid4().hex}"}

    def records(self, session: str) -> list[dict[str, Any]]:
        return [r for r in audit_records(self.audit.log_dir) if r.get("session_id") == session]

    def at_rest(self) -> bytes:
        """What the audit log, the recordings and the logs hold now (``files_at_rest``)."""
        return files_at_rest(self.audit.log_dir, self.recording_dir, *self.log_files)

    def at_rest_after(self, session: str, calls: int = 1) -> bytes:
        """``at_rest`` once ``calls`` calls of ``session`` are recorded (recording is asynchronous)."""
        wait_until(
            lambda: len(recorded_calls(self.recording_dir, session)) >= calls,
            20,
            f"{calls} recorded call(s) of session {session}",
        )
        return self.at_rest()


@contextlib.contextmanager
def run_audited_gateway(
    directory: Path,
    upstream: str,
    issuer: TokenIssuer,
    catalog_entries: Sequence[dict[str, Any]] = (),
    **sections: Any,
) -> Iterator[AuditedStack]:
    """An audit writer and a ``labelgate serve`` (embedded engine, JWT) with durable audit and
    session recording; the catalog is the default one plus ``catalog_entries``."""
    directory.mkdir(parents=True, exist_ok=True)
    catalog = json.loads(CATALOG.read_text())
    catalog["entries"] += list(catalog_entries)
    catalog_file = directory / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    recording_dir = directory / "sessions"
    with run_audit_writer(directory) as audit:
        config = gateway_config(
            upstream=upstream,
            engine="embedded",
            issuer=issuer,
            audit={"socket": str(audit.socket), "timeout_seconds": 5},
            recording={"dir": str(recording_dir)},
            **sections,
        )
        config["classification"]["catalog_file"] = str(catalog_file)
        with start_gateway(config, directory / "gateway") as gateway:
            yield AuditedStack(gateway, upstream, audit, recording_dir, issuer)
