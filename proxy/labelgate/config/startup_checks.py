"""What would still stop a gateway with valid settings from starting, found without the
network (``labelgate serve --check-config``, ``startup_problems``): the files a config names
read and loaded as serve loads them (TLS pairs, trusted certificates, descriptor sets, the
policy folder compiled by its engine, keys), and the folders it writes into writable. And
what such a gateway would start without keeping (``startup_notes``: no audit, no recording).

Apart from the settings model because these touch the file system (and start a policy
engine), where the model only checks values. ``check_tls_pair`` is also what both listeners
call at start (gateway/server.py, admin/listener.py), so a bad pair fails the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelgate import reasons
from labelgate.errors import ConfigError

if TYPE_CHECKING:
    from labelgate.config import GatewaySettings


class _EncryptedKey(Exception):
    """OpenSSL asked for a password: neither gRPC nor uvicorn can give it one."""


def _no_password() -> bytes:
    raise _EncryptedKey  # else OpenSSL would prompt on the terminal


def check_tls_pair(cert_file: Path, key_file: Path, what: str) -> None:
    """A listener's certificate and key load, and belong together; else ``ConfigError``
    (``TLS_FILE_UNREADABLE``) naming the file. OpenSSL's ``load_cert_chain`` is what uvicorn
    calls for ``admin.tls``; gRPC's BoringSSL refuses the same files, but says only that it
    could not bind. Here, below both listeners, so that start and ``--check-config`` share it."""
    import ssl

    try:
        cert_file.read_bytes()
        key_file.read_bytes()
    except OSError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: cannot read {error.filename}: {error.strerror}"
        ) from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=_no_password)
        return
    except _EncryptedKey:
        problem = f"key_file {key_file} is an encrypted private key: give the listener an unencrypted one"
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            problem = f"the private key in {key_file} is not the one of the certificate in {cert_file}"
        elif not _holds_certificates(cert_file):
            problem = f"cert_file {cert_file} holds no PEM certificate"
        else:
            problem = f"key_file {key_file} holds no PEM private key"
            if error.reason:
                problem += f" ({error.reason})"
    raise ConfigError(reasons.TLS_FILE_UNREADABLE, f"{what}: {problem}")


def _holds_certificates(path: Path) -> bool:
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        return False
    return True


def check_ca_file(path: Path, what: str) -> None:
    """A file of trusted certificates loads as the REST upstream and the OPA client load theirs
    (``ssl.create_default_context``); else ``ConfigError`` (``TLS_FILE_UNREADABLE``). A gRPC
    channel hands the same bytes to BoringSSL, which refuses them only at the first call."""
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: {path} holds no PEM certificate ({error.reason or error})"
        ) from None
    except OSError as error:
        raise ConfigError(
            reasons.TLS_FILE_UNREADABLE, f"{what}: cannot read {path}: {error.strerror}"
        ) from None


def _descriptor_set(path: Path) -> None:
    """A route's descriptors parse as a FileDescriptorSet (``protoc --descriptor_set_out``).
    Serve's loader (``gateway.routes.load_descriptor_set``) also adds them to the process's
    descriptor pool; that one sits above this module and is not called from here."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    try:
        descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except DecodeError as error:
        raise ValueError(f"{path} is not a FileDescriptorSet: {error}") from None


def _compile_policy(settings: GatewaySettings) -> None:
    """The policy folder compiled by the engine serve runs, as serve compiles it at start (the
    embedded engine's child-process compile and ``opa check``; the wasm engine's ``opa build``)."""
    import asyncio

    from labelgate.policy.embedded import EmbeddedEngine
    from labelgate.policy.wasm import WasmEngine

    engine = (
        WasmEngine(settings.policy.dir, watch_interval=None)
        if settings.engine == "wasm"
        else EmbeddedEngine(settings.policy.dir, watch_interval=None, opa_check=settings.policy.opa_check)
    )

    async def start_and_close() -> None:
        try:
            await engine.start()
        finally:
            await engine.close()

    asyncio.run(start_and_close())


def startup_notes(settings: GatewaySettings) -> list[tuple[str, str]]:
    """What a gateway with these settings does not keep, as (event, note): no durable audit
    record (no ``audit.socket``, ``audit_off``), no session recording (no ``recording`` store,
    ``recording_off``). Both are optional, so neither is a problem; found by review, a gateway
    with neither (the image's default config) released data, ``--check-config`` said OK and
    the log said nothing. The gateway logs them once started, ``serve --check-config`` prints
    them; from the settings alone, so the check loads none of the gateway."""
    notes: list[tuple[str, str]] = []
    if settings.audit.socket is None:
        notes.append(
            (
                "audit_off",
                "audit.socket is not set: calls are released with structured logs only, "
                "no durable audit record",
            )
        )
    if not settings.recording.enabled:
        notes.append(
            (
                "recording_off",
                "no recording section (recording.dir or recording.postgres_dsn): sessions are not recorded",
            )
        )
    return notes


def startup_problems(settings: GatewaySettings) -> list[str]:
    """What would still stop a gateway with these (valid) settings from starting, found without
    the network (``labelgate serve --check-config``): every file it reads at start must be there
    and load (catalog, JWKS, keys, hash key; the policy folder compiled by its engine; TLS
    certificates with their keys, trusted certificates and descriptor sets parsed), and the
    folders it writes state into must be writable. [] when none. Called outside an event loop:
    the policy engine starts in one of its own."""
    import os

    from labelgate.auth import Authenticator
    from labelgate.classify.catalog import Catalog
    from labelgate.errors import LabelgateError
    from labelgate.policy.source import BundleKey, PolicySource

    problems: list[str] = []

    def attempt(where: str, action: Any) -> bool:
        """Run ``action``; True when it raised nothing, else its problem is listed."""
        try:
            action()
            return True
        except LabelgateError as error:  # its message may name where itself
            message = error.message
            said = message if message.startswith(f"{where}: ") else f"{where}: {message}"
            problems.append(f"{said} ({error.reason})")
        except OSError as error:  # strerror, not Python's "[Errno 2] ...: 'path'"
            said = f"{where}: cannot read {error.filename}: {error.strerror}"
            problems.append(f"{said} ({reasons.CONFIG_UNREADABLE})")
        except ValueError as error:
            problems.append(f"{where}: {error} ({reasons.CONFIG_INVALID})")
        except RecursionError:
            problems.append(f"{where}: a file it names is nested too deeply ({reasons.CONFIG_INVALID})")
        return False

    def readable(path: Path) -> None:
        path.read_bytes()

    def hash_key(path: Path) -> None:
        if len(path.read_bytes().strip()) < 16:
            raise ValueError(f"{path} holds fewer than 16 bytes")

    def session_key(path: Path) -> None:
        if len(path.read_bytes().strip()) < 32:
            raise ValueError(f"{path} holds fewer than 32 bytes")

    def policy_dir(path: Path) -> None:
        if not any(name.endswith(".rego") for name, _ in PolicySource.from_dir(path).modules):
            raise ValueError(f"policy folder {path} holds no .rego module")

    def writable_folder(path: Path) -> None:
        folder = path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{path} cannot be created: {folder} is not a writable folder")

    if settings.policy.bundle_url is None:
        attempt(
            "classification.catalog_file", lambda: Catalog.from_file(settings.classification.catalog_file)
        )
    checker = True
    if settings.engine == "embedded":
        from labelgate.policy.opa_check import OpaChecker

        checker = attempt("policy.opa_check", lambda: OpaChecker(settings.policy.opa_check))
    in_process = settings.policy.bundle_url is None and settings.engine in ("embedded", "wasm")
    # Compiled as serve compiles it, once the folder holds modules and opa_check can run.
    if in_process and attempt("policy.dir", lambda: policy_dir(settings.policy.dir)) and checker:
        attempt("policy.dir", lambda: _compile_policy(settings))
    if settings.policy.bundle_public_key_file is not None:
        key_file = settings.policy.bundle_public_key_file
        attempt(
            "policy.bundle_public_key_file",
            lambda: BundleKey.from_file(key_file, settings.policy.bundle_signing_alg),
        )
    files = {
        "upstream.ca_file": settings.upstream.ca_file,
        "policy.opa_ca_file": settings.policy.opa_ca_file,
        "server_tls.cert_file": settings.server_tls.cert_file if settings.server_tls else None,
        "server_tls.key_file": settings.server_tls.key_file if settings.server_tls else None,
        "admin.tls.cert_file": settings.admin.tls.cert_file if settings.admin.tls else None,
        "admin.tls.key_file": settings.admin.tls.key_file if settings.admin.tls else None,
        "auth.mtls.ca_file": settings.auth.mtls.ca_file if settings.auth.mtls else None,
        **{f"routes[{i}].descriptor_set": r.descriptor_set for i, r in enumerate(settings.routes)},
        **{f"upstreams[{i}].ca_file": u.ca_file for i, u in enumerate(settings.upstreams)},
    }
    read = {
        where
        for where, path in files.items()
        if path is not None and attempt(where, lambda path=path: readable(path))
    }
    # Then what each file that could be read holds, loaded as serve loads it.
    for where, tls in (("server_tls", settings.server_tls), ("admin.tls", settings.admin.tls)):
        if tls is not None and {f"{where}.cert_file", f"{where}.key_file"} <= read:
            attempt(where, lambda tls=tls, where=where: check_tls_pair(tls.cert_file, tls.key_file, where))
    for where, path in files.items():
        if path is None or where not in read:
            continue
        if where.endswith("ca_file"):
            attempt(where, lambda path=path, where=where: check_ca_file(path, where))
        elif where.endswith("descriptor_set"):
            attempt(where, lambda path=path: _descriptor_set(path))
    if settings.masking.hash_key_file is not None:
        attempt("masking.hash_key_file", lambda: hash_key(settings.masking.hash_key_file))
    if settings.admin.session_key_file is not None:
        key_file = settings.admin.session_key_file
        attempt("admin.session_key_file", lambda: session_key(key_file))
    attempt("auth", lambda: Authenticator(settings.auth))
    if settings.audit.socket is not None and len(os.fsencode(settings.audit.socket)) > 107:
        problems.append(f"audit.socket: the path is longer than 107 bytes: {settings.audit.socket}")
    approvals = settings.approvals
    if approvals.enabled and approvals.store == "sqlite" and approvals.sqlite_file is not None:
        attempt("approvals.sqlite_file", lambda: writable_folder(approvals.sqlite_file.parent))
    if settings.audit.inputs_file is not None:
        inputs_file = settings.audit.inputs_file
        attempt("audit.inputs_file", lambda: writable_folder(inputs_file.parent))
    recording = settings.recording
    if recording.dir is not None:
        attempt("recording.dir", lambda: writable_folder(recording.dir))
    if recording.enabled and recording.encryption_key_file is not None:
        # What serve reads them with (``RecordingKeys.from_files``), each named on its own.
        from labelgate.recording.sealing import read_key

        attempt("recording.encryption_key_file", lambda: read_key(recording.encryption_key_file))
        for index, path in enumerate(recording.decryption_key_files):
            attempt(f"recording.decryption_key_files[{index}]", lambda path=path: read_key(path))
    return problems
