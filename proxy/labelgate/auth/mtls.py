"""Client certificate -> Subject.

The TLS layer does the cryptography: the gateway's server credentials require a client
certificate and verify it against the configured CA (``server_credentials`` below), so a
client without one never reaches a handler. This stage only reads the already-verified
leaf certificate that grpc puts in ``context.auth_context()``::

    {"transport_security_type": [b"ssl"], "x509_pem_cert": [b"-----BEGIN CERTIFICATE..."],
     "x509_common_name": [b"alice"], "peer_uri": [b"spiffe://..."], "peer_dns": [...], ...}

(measured with grpcio 1.85). The identity is read from the PEM itself, so it does not
depend on which convenience properties a grpc version provides. Like a JWT subject, it must
be printable text that neither starts nor ends with a space (``group_name_problem``): a name
with a control, bidi or zero-width character is refused (``CERT_BAD_IDENTITY``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from labelgate.auth import reasons
from labelgate.auth.settings import MtlsSettings
from labelgate.auth.subject import Subject, group_name_problem
from labelgate.errors import ConfigError, Unauthenticated

AuthContext = Mapping[str, list[bytes]]


@dataclass(frozen=True)
class CertFacts:
    common_names: tuple[str, ...]
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    sha256: str


@functools.lru_cache(maxsize=1024)
def cert_facts(pem: bytes) -> CertFacts:
    """Parsed once per distinct certificate: a client reuses its certificate on every call."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris = dns = ()
    common_names = tuple(
        str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    return CertFacts(common_names, uris, dns, cert.fingerprint(hashes.SHA256()).hex())


def client_certificate(auth_context: AuthContext | None) -> bytes | None:
    """The verified client certificate (PEM) of a TLS connection, or None (no TLS or no cert)."""
    if not auth_context or auth_context.get("transport_security_type") != [b"ssl"]:
        return None
    pems = auth_context.get("x509_pem_cert") or []
    return pems[0] if pems and pems[0] else None


class MtlsIdentifier:
    def __init__(
        self,
        identity_from: Literal["san", "cn"] = "san",
        san_type: Literal["uri", "dns"] = "uri",
        groups: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._identity_from = identity_from
        self._san_type = san_type
        self._groups = dict(groups or {})

    @classmethod
    def from_settings(cls, settings: MtlsSettings) -> MtlsIdentifier:
        groups = load_groups_file(settings.groups_file) if settings.groups_file else {}
        return cls(settings.identity_from, settings.san_type, groups)

    def presented(self, auth_context: AuthContext | None) -> bool:
        return client_certificate(auth_context) is not None

    def identify(self, auth_context: AuthContext | None) -> Subject:
        pem = client_certificate(auth_context)
        if pem is None:
            raise Unauthenticated(reasons.NO_CREDENTIALS, "no verified client certificate on this connection")
        try:
            facts = cert_facts(pem)
        except ValueError:
            raise Unauthenticated(
                reasons.CERT_UNREADABLE, "the client certificate cannot be parsed"
            ) from None
        if self._identity_from == "cn":
            names, where = facts.common_names, "subject CN"
        else:
            names = facts.uris if self._san_type == "uri" else facts.dns_names
            where = f"{self._san_type.upper()} SAN"
        names = tuple(name for name in names if name)
        if not names:
            raise Unauthenticated(reasons.CERT_NO_IDENTITY, f"the client certificate has no {where}")
        if len(names) > 1:
            # Two names, two possible subjects: refuse rather than pick one.
            raise Unauthenticated(
                reasons.CERT_AMBIGUOUS_IDENTITY, f"the client certificate has {len(names)} {where}s"
            )
        identity = names[0]
        # The rule a JWT subject and group names follow: a name holding a control, bidi or
        # zero-width character, or starting or ending with a space, would pass for another
        # identity (``alice`` + U+200B) or forge a log line; it is refused, never cleaned up.
        problem = group_name_problem(identity)
        if problem is not None:
            raise Unauthenticated(reasons.CERT_BAD_IDENTITY, f"the client certificate's {where} {problem}")
        return Subject.proven(
            "mtls",
            identity,
            groups=self._groups.get(identity, ()),
            attributes={"cert_sha256": facts.sha256},
        )


def load_groups_file(path: Path) -> dict[str, tuple[str, ...]]:
    """YAML mapping ``identity: [group, ...]``; every problem in one ConfigError."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            reasons.AUTH_CONFIG_INVALID, f"mTLS groups file {path}: cannot read ({error})"
        ) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            reasons.AUTH_CONFIG_INVALID, f"mTLS groups file {path}: must map identity -> list of groups"
        )
    problems = []
    groups: dict[str, tuple[str, ...]] = {}
    for identity, names in document.items():
        if not isinstance(identity, str) or not identity:
            problems.append(f"identity {identity!r} is not a non-empty string")
        elif not isinstance(names, list) or any(group_name_problem(name) is not None for name in names):
            # Names are never trimmed (see group_name_problem): a doubtful one is refused here.
            problems.append(
                f"{identity}: groups must be a list of names without invisible characters"
                " or surrounding spaces"
            )
        else:
            groups[identity] = tuple(names)
    if problems:
        raise ConfigError(reasons.AUTH_CONFIG_INVALID, f"mTLS groups file {path}: " + "; ".join(problems))
    return groups


def server_credentials(settings: MtlsSettings, cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """TLS server credentials that require a client certificate signed by ``settings.ca_file``."""
    try:
        pair = (key_file.read_bytes(), cert_file.read_bytes())
        ca = settings.ca_file.read_bytes()
    except OSError as error:
        raise ConfigError(reasons.TLS_CONFIG_INVALID, f"cannot read TLS files: {error}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)
