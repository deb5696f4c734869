"""Sign bundles exactly as OPA verifies them, and verify them the same way.

``.signatures.json`` is ``{"signatures": ["<JWT>"]}``. The JWT header carries ``alg`` and
``kid``; its payload lists every other member of the bundle, ``.manifest`` included, as
``{"name", "hash", "algorithm": "SHA-256"}``. OPA hashes structured documents (files named
``data.json``, ``data.yaml``, ``.manifest``) in a canonical form so that whitespace and key
order do not matter, and everything else (``.rego``) as raw bytes. The canonical form is
the one OPA's hasher writes: objects with keys sorted recursively, no whitespace, numbers
exactly as written in the file (OPA decodes with ``UseNumber``), and strings escaped the way
Go's encoder does with HTML escaping off, which matches Python's ``json.dumps`` with
``ensure_ascii=False`` except for U+2028/U+2029 (Go escapes them).

``tests/bundle/test_signing.py`` checks these hashes against the ones ``opa build
--signing-key`` writes, and that a real OPA accepts our signatures and rejects tampering.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from labelgate.bundle import reasons
from labelgate.errors import ConfigError, InvalidInput

SIGNATURES = ".signatures.json"
HASH_ALGORITHM = "SHA-256"
ALGORITHMS = ("RS256", "ES256")
_STRUCTURED = frozenset({"data.json", "data.yaml", ".manifest", SIGNATURES})
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _Number(str):
    """A JSON number kept as its literal text, as OPA's ``UseNumber`` decoding keeps it."""


def canonical_json(content: bytes) -> bytes:
    """The bytes OPA hashes for a structured document."""
    try:
        value = json.loads(content, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
    except ValueError as error:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"not valid JSON: {error}") from error
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def file_hash(name: str, content: bytes) -> str:
    """Hex SHA-256 of one bundle member, canonical for structured documents."""
    if PurePosixPath(name).name in _STRUCTURED:
        content = canonical_json(content)
    return hashlib.sha256(content).hexdigest()


def signed_files(members: Iterable[tuple[str, bytes]]) -> list[dict[str, str]]:
    return [
        {"name": name, "hash": file_hash(name, content), "algorithm": HASH_ALGORITHM}
        for name, content in members
        if name != SIGNATURES
    ]


@dataclass(frozen=True)
class Signer:
    """A private key, its JWT algorithm and the key id OPA's config names it by."""

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str = "RS256"
    key_id: str = "default"

    @classmethod
    def from_pem(cls, pem: bytes, algorithm: str = "RS256", key_id: str = "default") -> Signer:
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                reasons.SIGNING_ALG_UNSUPPORTED, f"signing algorithm {algorithm!r}: use {ALGORITHMS}"
            )
        if not key_id:
            raise ConfigError(reasons.SIGNING_KEY_ID_EMPTY, "the signing key id must not be empty")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                reasons.SIGNING_KEY_INVALID, f"not an unencrypted PEM private key: {error}"
            ) from error
        if algorithm == "RS256" and not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(reasons.SIGNING_KEY_MISMATCH, "RS256 needs an RSA private key")
        if algorithm == "ES256" and not (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            raise ConfigError(reasons.SIGNING_KEY_MISMATCH, "ES256 needs an EC P-256 private key")
        return cls(key, algorithm, key_id)  # type: ignore[arg-type]  # narrowed by the checks above

    @classmethod
    def from_file(cls, path: Path, algorithm: str = "RS256", key_id: str = "default") -> Signer:
        try:
            pem = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(
                reasons.SIGNING_KEY_UNREADABLE, f"cannot read signing key {path}: {error}"
            ) from error
        return cls.from_pem(pem, algorithm, key_id)

    def signatures_file(self, members: Iterable[tuple[str, bytes]]) -> bytes:
        """The ``.signatures.json`` content for a bundle made of ``members``."""
        token = jwt.encode(
            {"files": signed_files(members)},
            self.private_key,
            algorithm=self.algorithm,
            headers={"kid": self.key_id},
        )
        return json.dumps({"signatures": [token]}, separators=(",", ":")).encode()


def verify_signatures(files: dict[str, bytes], public_key_pem: bytes, algorithm: str = "RS256") -> None:
    """Check a bundle's members against its signature, with OPA's rules; raise if anything differs.

    For readers of bundle tarballs (the embedded engine, tests); OPA does its own checking.
    """
    if SIGNATURES not in files:
        raise InvalidInput(reasons.BUNDLE_UNSIGNED, "the bundle has no .signatures.json")
    try:
        tokens = json.loads(files[SIGNATURES])["signatures"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID, f".signatures.json is malformed: {error}"
        ) from error
    if not isinstance(tokens, list) or len(tokens) != 1:
        raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, "expected exactly one signature")
    try:
        payload = jwt.decode(tokens[0], public_key_pem, algorithms=[algorithm])
    except jwt.PyJWTError as error:
        raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, f"signature does not verify: {error}") from error
    listed = {entry["name"]: entry for entry in payload.get("files", [])}
    present = {name for name in files if name != SIGNATURES}
    if set(listed) != present:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            f"signed files {sorted(listed)} differ from bundle files {sorted(present)}",
        )
    for name in sorted(present):
        entry = listed[name]
        if entry.get("algorithm") != HASH_ALGORITHM or entry.get("hash") != file_hash(name, files[name]):
            raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, f"{name}: digest mismatch")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if index:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, _Number):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    else:
        out.append("null")


def _string(text: str) -> str:
    # Go decodes a lone surrogate escape to U+FFFD and escapes U+2028/U+2029 even with HTML off.
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return json.dumps(text, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
