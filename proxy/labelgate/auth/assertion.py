"""The signed subject assertion: who asked, told to the upstream in a form it can verify.

The caller's own credentials never travel upstream (the upstream sees the gateway's). So
that an upstream still learns, trustworthily, on whose behalf a call is made, the gateway
adds to every upstream call a short-lived JWT signed with its own key::

    x-labelgate-subject-assertion: <ES256 JWT>
    header  {"alg": "ES256", "typ": "JWT", "kid": "<RFC 7638 thumbprint>"}
    claims  {"iss": "labelgate", "aud": "<the upstream>", "sub": "<qualified subject id>",
             "name": "<short form>", "auth": "jwt|mtls|api_key", "groups": [...],
             "request_id": "<the gateway's id of the call>", "iat", "nbf", "exp" (~60 s), "jti"}

The upstream verifies it with the gateway's published JWKS (``/.well-known/jwks.json`` on
the admin listener), checks ``aud`` is itself and ``exp``, and may match ``request_id``
against the gateway's audit log. A caller cannot forge or replay it into another upstream:
a caller-sent header of that name is never forwarded (``Upstream.metadata`` forwards an
allow-list), and ``aud`` names one upstream. Unless ``audience`` is set: then every upstream's
assertions carry that one ``aud``, and an upstream can replay one it received to another
upstream within ``ttl_seconds``; leave it unset so that each upstream gets its own.

The key: ``upstream.subject_assertion.key_file`` (a PEM P-256 private key, PKCS#8; made
with ``python -m labelgate.auth generate-assertion-key FILE`` or generated for the
quickstart), or ``key`` (the PEM inline, e.g. from a secret env). Neither: a key made per
process at start, logged as such (a restart changes the JWKS; several workers get one
shared key from the parent). Rotation: publish the new key's JWKS beside the old one
(``extra_jwks_file``) for one TTL plus the upstreams' JWKS cache time, then switch
``key_file`` and drop the old entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from labelgate.auth import reasons
from labelgate.auth.subject import Subject
from labelgate.config_paths import ConfigPath
from labelgate.errors import ConfigError
from labelgate.logs import get_logger

log = get_logger(__name__)
ASSERTION_HEADER = "x-labelgate-subject-assertion"
ALGORITHM = "ES256"
DEFAULT_ISSUER = "labelgate"


class SubjectAssertionSettings(BaseModel):
    """``upstream.subject_assertion``: the JWT about the caller added to every upstream call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    key_file: ConfigPath | None = Field(None, description="PEM P-256 private key (PKCS#8)")
    key: SecretStr | None = Field(None, description="The same PEM inline (e.g. from a secret)")
    extra_jwks_file: ConfigPath | None = Field(
        None, description="More public keys to publish in the JWKS (the next or previous key, when rotating)"
    )
    issuer: str = Field(DEFAULT_ISSUER, min_length=1, max_length=256)
    audience: str | None = Field(
        None,
        description="aud of every assertion. Leave it unset so that each upstream gets its own "
        "(its address), and an assertion one upstream receives does not verify at another; set, "
        "every upstream gets the same aud, so one upstream can replay an assertion it received to "
        "another within ttl_seconds",
    )
    ttl_seconds: int = Field(60, ge=5, le=3600)
    header: str = Field(ASSERTION_HEADER, pattern=r"^[a-z0-9][a-z0-9._-]*$")

    @model_validator(mode="after")
    def _one_key(self) -> SubjectAssertionSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("subject_assertion: set key or key_file, not both")
        if self.header.endswith("-bin"):
            raise ValueError("subject_assertion.header must not end in -bin (that is binary metadata)")
        return self


# JWK members that hold private key material (RFC 7518 6.2.2, 6.3.2 and 6.4.1).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _check_public(keys: tuple[Any, ...]) -> None:
    """Every extra key is published as it is, on an unauthenticated URL: one holding private
    members (a rotation file written from the full next key) would publish the signing key
    itself, so it is refused at start rather than stripped (the file is wrong, and says so)."""
    for position, key in enumerate(keys, 1):
        if not isinstance(key, Mapping):
            raise ConfigError(
                reasons.ASSERTION_KEY_INVALID,
                f"subject_assertion.extra_jwks_file: key {position} is not an object",
            )
        private = sorted(PRIVATE_JWK_MEMBERS.intersection(key))
        if private:
            which = f"kid {key['kid']!r}" if "kid" in key else f"number {position} (no kid)"
            raise ConfigError(
                reasons.ASSERTION_KEY_INVALID,
                f"subject_assertion.extra_jwks_file: the key with {which} holds private members "
                f"({', '.join(private)}); publish only its public part",
            )


def generate_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_key_file(path: Path) -> Path:
    """A new P-256 key in ``path`` (mode 0600), unless one is there already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(generate_key_pem())
    return path


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {**jwk, "use": "sig", "alg": ALGORITHM, "kid": _b64(thumbprint)}


class SubjectAsserter:
    """Signs subject assertions with one key; ``jwks()`` is what the admin listener publishes."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        ttl_seconds: int = 60,
        header: str = ASSERTION_HEADER,
        audience: str | None = None,
        extra_keys: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(reasons.ASSERTION_KEY_INVALID, "the subject assertion key must be a P-256 key")
        self._key = key
        self._jwk = public_jwk(key)
        self.kid = self._jwk["kid"]
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds
        self.header = header
        self.audience = audience
        self._extra = tuple(dict(k) for k in extra_keys if k.get("kid") != self.kid)
        # The JWS header is the same on every assertion: encoded once (keys sorted, as PyJWT does).
        jws_header = {"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}
        self._jws_header = _b64(json.dumps(jws_header, separators=(",", ":"), sort_keys=True).encode())
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        self._claims_openings: dict[tuple[str, str, str, tuple[str, ...], str], str] = {}

    @classmethod
    def from_settings(cls, settings: SubjectAssertionSettings) -> SubjectAsserter | None:
        if not settings.enabled:
            return None
        if settings.key is not None:
            pem, where = settings.key.get_secret_value().encode(), "subject_assertion.key"
        elif settings.key_file is not None:
            try:
                pem, where = settings.key_file.read_bytes(), str(settings.key_file)
            except OSError as error:
                raise ConfigError(
                    reasons.ASSERTION_KEY_UNREADABLE, f"cannot read subject_assertion.key_file: {error}"
                ) from None
        else:
            log.warning(
                "subject_assertion_key_ephemeral",
                note="no subject_assertion key configured: signing with a key made for this process; "
                "its JWKS changes on restart",
            )
            pem, where = generate_key_pem(), "a key made at start"
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(reasons.ASSERTION_KEY_INVALID, f"{where} is not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(reasons.ASSERTION_KEY_INVALID, f"{where} is not an EC (P-256) private key")
        extra: tuple[Mapping[str, Any], ...] = ()
        if settings.extra_jwks_file is not None:
            try:
                extra = tuple(json.loads(settings.extra_jwks_file.read_text())["keys"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise ConfigError(
                    reasons.ASSERTION_KEY_INVALID, f"subject_assertion.extra_jwks_file: {error}"
                ) from None
            _check_public(extra)
        return cls(
            key,
            issuer=settings.issuer,
            ttl_seconds=settings.ttl_seconds,
            header=settings.header,
            audience=settings.audience,
            extra_keys=extra,
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk), *(dict(k) for k in self._extra)]}

    def assertion(self, subject: Subject, request_id: str, audience: str, *, now: float | None = None) -> str:
        """A new assertion for each upstream call, never one reused: it names the call
        (``request_id``, which an upstream may match against the audit log) and has its own
        ``jti``, so a cached one would tell the upstream about another call.

        Signed here rather than by ``jwt.encode``: the same RFC 7515 compact ES256 JWS (the
        fixed header encoded once), without PyJWT's per-call header and key preparation."""
        issued = int(now if now is not None else time.time())
        # The claims as json.dumps(claims, separators=(",", ":")) writes them, in this order:
        # the subject's part made once per subject and audience, the call's part here.
        payload = (
            f"{self._subject_claims(subject, self.audience or audience)}"
            f'"request_id":{_json_string(request_id)},"iat":{issued},"nbf":{issued},'
            f'"exp":{issued + self.ttl_seconds},"jti":"{secrets.token_hex(16)}"}}'
        )
        signing_input = f"{self._jws_header}.{_b64(payload.encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), self._ecdsa))
        # JWS ES256 signatures are R || S, each 32 bytes big-endian (RFC 7518 3.4), not DER.
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _subject_claims(self, subject: Subject, audience: str) -> str:
        """The opening of the claims up to ``request_id``: ``{"iss":..,..,"groups":[..],``."""
        key = (subject.id, subject.name, subject.auth, subject.groups, audience)
        found = self._claims_openings.get(key)
        if found is None:
            if len(self._claims_openings) >= _MAX_CLAIMS_OPENINGS:
                self._claims_openings.clear()
            static = {
                "iss": self.issuer,
                "aud": audience,
                "sub": subject.id,
                "name": subject.name,
                "auth": subject.auth,
                "groups": list(subject.groups),
            }
            found = self._claims_openings[key] = json.dumps(static, separators=(",", ":"))[:-1] + ","
        return found


# Subjects (with their audience) whose claims opening is kept; past this the memo starts over.
_MAX_CLAIMS_OPENINGS = 4096
# json.dumps's own string encoder (ASCII-only output, as json.dumps writes by default).
_json_string = json.encoder.encode_basestring_ascii


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
