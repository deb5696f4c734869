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

Verifying (``verify_signatures``) runs on a tarball anyone answering the bundle URL may have
made, so each step is bounded before it costs anything (review s14: a replayed signature with
one data file swapped for 32 MiB of ``[0,0,...]`` held the GIL for 28 s and took 3.9 GB,
because that file was canonicalized before its hash was compared):

1. ``.signatures.json`` is judged by its size (``signatures_limit``: what a signature over
   the bundle's files can take) and its shape (a handful of JSON tokens) before it is parsed,
   and the JWT header by its length before PyJWT parses it; the JWT's signature is checked
   before any other member is looked at.
2. Each member's raw SHA-256 is compared with the signed hash first. ``labelgate bundle``
   writes structured documents in the canonical form (``bundle/build.py``), so its bundles
   never need more; by collision resistance a raw match means the bytes *are* the signed
   canonical text, whose canonical form (idempotent) is itself: nothing is accepted that
   the canonical comparison would refuse.
3. Only a structured member whose raw hash differs (a bundle from ``opa build``, say, whose
   encoder escapes ``<>&``) is canonicalized, within ``MAX_CANONICAL_BYTES`` and
   ``MAX_CANONICAL_VALUES`` per bundle, counted beforehand by a scan that builds no object
   (``BUNDLE_DATA_TOO_LARGE`` past either). Within them the canonicalization costs tens of
   milliseconds at most.
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

# What a ``.signatures.json`` may take (``signatures_limit``). A signed entry is
# ``{"name":"…","hash":"<64 hex>","algorithm":"SHA-256"}``: 108 bytes besides its name, whose
# JSON escaping at most sextuples it (``\u003c`` for ``<`` in Go's encoder, ``\u00e9`` for a
# 2-byte character in Python's), and base64url adds a third: at most 144 + 8 bytes per name
# byte. 1 KiB per entry leaves room for fields a signer adds; the 8 KiB base holds the JWT
# header, the payload's own fields (keyid, scope, iat, iss), a signature (an 8192-bit RSA
# key's is 1366 characters) and the ``{"signatures":[…]}`` around it. The project's bundle
# signs 10 files in 2.2 KiB; its limit is about 20 KiB.
SIGNATURES_BASE_BYTES = 8 * 1024
SIGNATURES_ENTRY_BYTES = 1024
SIGNATURES_NAME_FACTOR = 8
# ``{"signatures":["<JWT>"]}`` has 3 of the bytes ``,:[{`` (a JWT has none); OPA may add a
# ``"plugin"`` key. More than this many is not a signatures file and is not parsed.
MAX_SIGNATURES_STRUCTURE = 16
# A JWT header is ``{"alg":…,"kid":…,"typ":…}`` in base64url: a key id would have to be
# kilobytes long to need more. PyJWT parses the header before it checks the signature.
MAX_JWT_HEADER_BYTES = 4096
# At most this much structured data of a bundle is canonicalized to check its hash (only the
# members whose raw hash differs: never a bundle ``labelgate bundle`` built). Within these a
# canonicalization takes at most ~100 ms of CPU in the worker thread, of which json.loads, the
# one part that holds the GIL throughout, a few tens of milliseconds
# (``tests/bundle/test_signing.py`` checks the count, not the time).
MAX_CANONICAL_BYTES = 4 * 1024 * 1024
MAX_CANONICAL_VALUES = 100_000
_STRUCTURE_BYTES = (b",", b":", b"[", b"{")


class _Number(str):
    """A JSON number kept as its literal text, as OPA's ``UseNumber`` decoding keeps it."""


def canonical_json(content: bytes) -> bytes:
    """The bytes OPA hashes for a structured document.

    Unbounded: a caller handed untrusted bytes bounds them first (``verify_signatures``).
    """
    try:
        value = json.loads(content, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
        out: list[str] = []
        _encode(value, out)
    except ValueError as error:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"not valid JSON: {error}") from error
    except RecursionError:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, "JSON nested too deeply") from None
    return "".join(out).encode("utf-8")


def is_structured(name: str) -> bool:
    """A member OPA hashes in canonical form (``data.json``, ``.manifest``, ...)."""
    return PurePosixPath(name).name in _STRUCTURED


def file_hash(name: str, content: bytes) -> str:
    """Hex SHA-256 of one bundle member, canonical for structured documents."""
    if is_structured(name):
        content = canonical_json(content)
    return hashlib.sha256(content).hexdigest()


def structure_count(content: bytes) -> int:
    """An upper bound of the values and keys in a JSON document, read without parsing it.

    Every value or key but the first follows one of ``,`` ``:`` ``[`` ``{`` (those inside
    strings count too, so this errs high): four ``bytes.count`` passes, milliseconds for the
    64 MiB a bundle may hold.
    """
    return sum(content.count(byte) for byte in _STRUCTURE_BYTES) + 1


def signatures_limit(names: Iterable[str]) -> int:
    """The most bytes a ``.signatures.json`` signing the members ``names`` needs (see
    SIGNATURES_BASE_BYTES)."""
    return SIGNATURES_BASE_BYTES + sum(
        SIGNATURES_ENTRY_BYTES + SIGNATURES_NAME_FACTOR * len(name.encode()) for name in names
    )


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
    Every step is bounded before it runs (module docstring): BUNDLE_SIGNATURE_INVALID for a
    signature that does not hold or a member whose hash differs, BUNDLE_DATA_TOO_LARGE for
    structured data too large to canonicalize.
    """
    if SIGNATURES not in files:
        raise InvalidInput(reasons.BUNDLE_UNSIGNED, "the bundle has no .signatures.json")
    present = {name for name in files if name != SIGNATURES}
    payload = _verified_payload(files[SIGNATURES], present, public_key_pem, algorithm)
    listed = _listed_files(payload)
    if set(listed) != present:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            f"signed files {sorted(listed)} differ from bundle files {sorted(present)}",
        )
    budget = _CanonicalBudget()
    for name in sorted(present):
        entry = listed[name]
        signed = entry.get("hash")
        if entry.get("algorithm") != HASH_ALGORITHM or not _hash_matches(name, files[name], signed, budget):
            raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, f"{name}: digest mismatch")


def _verified_payload(raw: bytes, names: set[str], public_key_pem: bytes, algorithm: str) -> dict[str, Any]:
    """The payload of the one JWT in ``.signatures.json`` once its signature verifies."""
    limit = signatures_limit(names)
    if len(raw) > limit:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            f".signatures.json is {len(raw)} bytes; a signature over {len(names)} files takes at most "
            f"{limit}: not read",
        )
    if structure_count(raw) > MAX_SIGNATURES_STRUCTURE:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            '.signatures.json is not {"signatures": ["<JWT>"]}: too many JSON values, not read',
        )
    try:
        tokens = json.loads(raw)["signatures"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID, f".signatures.json is malformed: {error}"
        ) from error
    if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
        raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, "expected exactly one signature")
    if len(tokens[0].partition(".")[0]) > MAX_JWT_HEADER_BYTES:
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            f"the signature's JWT header is over {MAX_JWT_HEADER_BYTES} bytes: not read",
        )
    try:
        payload: dict[str, Any] = jwt.decode(tokens[0], public_key_pem, algorithms=[algorithm])
    except jwt.PyJWTError as error:
        raise InvalidInput(reasons.BUNDLE_SIGNATURE_INVALID, f"signature does not verify: {error}") from error
    return payload


def _listed_files(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = payload.get("files", [])
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in entries
    ):
        raise InvalidInput(
            reasons.BUNDLE_SIGNATURE_INVALID,
            "the signature's files are not a list of {name, hash, algorithm}",
        )
    return {entry["name"]: entry for entry in entries}


class _CanonicalBudget:
    """What is left of MAX_CANONICAL_BYTES and MAX_CANONICAL_VALUES for one bundle."""

    def __init__(self) -> None:
        self.bytes = MAX_CANONICAL_BYTES
        self.values = MAX_CANONICAL_VALUES

    def spend(self, name: str, content: bytes) -> None:
        """Refuse (BUNDLE_DATA_TOO_LARGE) before canonicalizing what the rest does not cover."""
        if len(content) > self.bytes:
            raise InvalidInput(
                reasons.BUNDLE_DATA_TOO_LARGE,
                f"{name}: {len(content)} bytes not in canonical JSON form: checking its signed hash "
                f"would canonicalize more than the {MAX_CANONICAL_BYTES} bytes a bundle may need that "
                f"for (`labelgate bundle` writes canonical JSON, which needs none): not read",
            )
        values = structure_count(content)
        if values > self.values:
            raise InvalidInput(
                reasons.BUNDLE_DATA_TOO_LARGE,
                f"{name}: up to {values} JSON values not in canonical form: checking its signed hash "
                f"would canonicalize more than the {MAX_CANONICAL_VALUES} values a bundle may need "
                f"that for (`labelgate bundle` writes canonical JSON, which needs none): not read",
            )
        self.bytes -= len(content)
        self.values -= values


def _hash_matches(name: str, content: bytes, signed: object, budget: _CanonicalBudget) -> bool:
    """Whether ``content`` hashes to ``signed``: raw bytes first, canonical form if still needed."""
    if not isinstance(signed, str):
        return False
    if hashlib.sha256(content).hexdigest() == signed:
        return True
    if not is_structured(name):
        return False
    budget.spend(name, content)
    return hashlib.sha256(canonical_json(content)).hexdigest() == signed


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
