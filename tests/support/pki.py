"""Throwaway key material for tests: a CA with server and client certificates, and JWT signing keys.

Everything is generated in memory with ``cryptography`` and written only where a test asks
(a ``tmp_path``). The forgeries (``alg: none``, HS256 signed with an RSA public key) are
built by hand because PyJWT rightly refuses to produce them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# ---------------------------------------------------------------------------------------------
# X.509


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class IssuedCert:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key``; returns (cert path, key path)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


@dataclass(frozen=True)
class CertAuthority:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.crt"
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        common_name: str | None,
        *,
        dns: Iterable[str] = (),
        uris: Iterable[str] = (),
        ips: Iterable[str] = (),
        server: bool = False,
        valid_days: int = 1,
    ) -> IssuedCert:
        """A leaf certificate signed by this CA (client auth, plus server auth when ``server``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        names += [x509.UniformResourceIdentifier(uri) for uri in uris]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not common_name)
        return IssuedCert(builder.sign(self.key, hashes.SHA256()), key)

    def server_cert(self) -> IssuedCert:
        """For a server on loopback: SAN localhost and 127.0.0.1."""
        return self.issue("localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)


def create_ca(name: str = "labelgate test CA") -> CertAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertAuthority(cert, key)


# ---------------------------------------------------------------------------------------------
# JWT


@dataclass(frozen=True)
class SigningKey:
    """A private key with the ``kid`` and ``alg`` its public JWK is published under."""

    key: PrivateKey
    kid: str
    alg: str

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if self.alg.startswith(("RS", "PS")) else jwt.algorithms.ECAlgorithm
        )
        jwk = json.loads(algorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        return jwt.encode(
            dict(claims), self.key, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


def rsa_signing_key(kid: str = "test-rsa", alg: str = "RS256") -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid, alg)


def ec_signing_key(kid: str = "test-ec", alg: str = "ES256") -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), kid, alg)


def jwks(*keys: SigningKey, with_alg: bool = True) -> dict[str, Any]:
    return {"keys": [key.public_jwk(with_alg=with_alg) for key in keys]}


def write_jwks(path: Path, *keys: SigningKey, with_alg: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jwks(*keys, with_alg=with_alg)))
    return path


def claims(
    sub: str = "alice",
    *,
    iss: str = "https://idp.test",
    aud: str | list[str] = "labelgate",
    ttl: int = 300,
    groups: Any = ("analysts",),
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Standard claims valid for ``ttl`` seconds from ``now``; pass ``groups=None`` to leave it out."""
    issued = int(now if now is not None else time.time())
    body: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    if groups is not None:
        body["groups"] = list(groups) if isinstance(groups, tuple) else groups
    body.update(extra)
    return body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(body).encode())


def forge_alg_none(body: Mapping[str, Any], kid: str | None = None) -> str:
    """An unsigned token (``alg: none``), the classic 'trust me' forgery."""
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return _segments(header, body) + "."


def forge_hs256_with_public_key(body: Mapping[str, Any], public_pem: bytes, kid: str | None = None) -> str:
    """HS256 keyed with the verifier's *public* key: accepted by a verifier that lets the
    token's ``alg`` choose how the key is used (algorithm confusion)."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = _segments(header, body)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)
