"""Trusted JWT verification keys: parsed from JWKS documents, indexed by ``kid`` and algorithm.

Each key is bound to exactly one algorithm and one issuer/audience pair when it is loaded,
so the token's header can only *select* a key, never decide how it is used: an RSA public
key is never fed to HMAC (the HS256 confusion attack) and ``alg: none`` has no key at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

# Algorithm -> (JWK "kty", required "crv" or None). Only these can ever be configured.
ALGORITHM_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    "HS256": ("oct", None),
    "HS384": ("oct", None),
    "HS512": ("oct", None),
}
SYMMETRIC_ALGORITHMS = frozenset(alg for alg, (kty, _) in ALGORITHM_KEY_TYPES.items() if kty == "oct")
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 1 << 20


@dataclass(frozen=True)
class TrustedKey:
    """One verification key, usable with exactly one algorithm, for one issuer and audience."""

    kid: str | None
    algorithm: str
    jwk: jwt.PyJWK
    issuer: str
    audience: str
    source: str  # "jwks_file", "jwks_url" or "dev": recorded in the subject's attributes


class KeyIndex:
    """Immutable lookup ``(kid, alg) -> keys``; replaced as a whole when a JWKS is refreshed."""

    def __init__(self, keys: Iterable[TrustedKey]) -> None:
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys)

    def kids(self) -> set[str]:
        return {key.kid for key in self._keys if key.kid is not None}

    def candidates(self, kid: str | None, algorithm: str) -> list[TrustedKey]:
        """Keys that may verify a token with this header. Without a ``kid`` every key for the
        algorithm is a candidate; the caller refuses when that is more than one."""
        return [key for key in self._keys if key.algorithm == algorithm and (kid is None or key.kid == kid)]

    def merged(self, other: KeyIndex) -> KeyIndex:
        return KeyIndex((*self._keys, *other._keys))


def parse_jwks(
    document: Any,
    *,
    algorithms: Sequence[str],
    issuer: str,
    audience: str,
    source: str,
) -> tuple[list[TrustedKey], list[str]]:
    """Keys from a JWKS document, and every problem found in it. Keys marked for encryption
    (``use`` other than ``sig``) or for an algorithm that is not allowed are skipped, not errors:
    identity providers publish such keys routinely."""
    problems: list[str] = []
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return [], [f"{source}: not a JWKS document (an object with a 'keys' list)"]
    keys: list[TrustedKey] = []
    for position, jwk in enumerate(document["keys"]):
        where = f"{source}: keys[{position}]"
        if not isinstance(jwk, dict):
            problems.append(f"{where} is not an object")
            continue
        kid = jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            problems.append(f"{where}: 'kid' must be a non-empty string")
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        for algorithm in _usable_algorithms(jwk, algorithms):
            try:
                pyjwk = jwt.PyJWK(jwk, algorithm=algorithm)
            except jwt.PyJWTError as error:
                problems.append(
                    f"{where} ({kid or 'no kid'}): unusable for {algorithm}: {type(error).__name__}"
                )
                continue
            size = getattr(pyjwk.key, "key_size", None)
            if ALGORITHM_KEY_TYPES[algorithm][0] == "RSA" and size is not None and size < MIN_RSA_BITS:
                problems.append(
                    f"{where} ({kid or 'no kid'}): RSA key has {size} bits, at least {MIN_RSA_BITS}"
                )
                break
            keys.append(TrustedKey(kid, algorithm, pyjwk, issuer, audience, source))
    if not keys and not problems:
        problems.append(f"{source}: no signing key usable with the allowed algorithms {list(algorithms)}")
    return keys, problems


def _usable_algorithms(jwk: dict[str, Any], algorithms: Sequence[str]) -> list[str]:
    declared = jwk.get("alg")
    usable = []
    for algorithm in algorithms:
        kty, crv = ALGORITHM_KEY_TYPES[algorithm]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            continue
        if declared is not None and declared != algorithm:
            continue
        usable.append(algorithm)
    return usable


def read_jwks_file(path: Path) -> tuple[Any, list[str]]:
    """The parsed document, or the problem reading it."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, [f"{path}: cannot read ({error.strerror})"]
    if len(raw) > MAX_JWKS_BYTES:
        return None, [f"{path}: larger than {MAX_JWKS_BYTES} bytes"]
    try:
        return json.loads(raw), []
    except ValueError as error:
        return None, [f"{path}: not JSON ({error})"]
    except RecursionError:
        return None, [f"{path}: nested too deeply"]
