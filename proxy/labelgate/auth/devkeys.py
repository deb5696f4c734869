"""The quickstart's DEVELOPMENT signing key: generate it once, mint short-lived dev tokens with it.

INSECURE BY DESIGN. The private key is committed to the repository
(``deploy/quickstart/dev-keys/``, never shipped in the package) so the quickstart works
offline, which means anyone with a copy of the repository can mint tokens for any subject
and any group. The gateway trusts
this key only when its config says ``jwt.trust_dev_key: true``, and then only for tokens
with issuer ``labelgate-dev`` and audience ``labelgate`` (see ``JwtVerifier``). Never
enable it in front of real data.

Regenerate (replaces the committed pair): ``python -m labelgate.auth generate-dev-keys DIR --force``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from labelgate.auth import reasons
from labelgate.auth.assertion import public_jwk
from labelgate.auth.subject import group_name_problem, normalise_groups
from labelgate.errors import ConfigError, InvalidInput

DEV_ISSUER = "labelgate-dev"
DEV_AUDIENCE = "labelgate"
DEV_ALGORITHM = "ES256"
DEV_KID_PREFIX = "labelgate-dev-INSECURE-"
PRIVATE_KEY_NAME = "INSECURE-dev-only-private-key.pem"
JWKS_NAME = "jwks.json"
DEV_KEYS_ENV = "LABELGATE_DEV_KEYS"
MAX_DEV_TTL_SECONDS = 7 * 24 * 3600

_TTL = re.compile(r"(\d+)([smhd]?)", re.IGNORECASE)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_GROUP_NAME = re.compile(r"[^\s,]+")


# Relative to the working directory, like ``labelgate quickstart``'s default config: the
# quickstart runs from the root of a checkout (``make run``).
QUICKSTART_DEV_KEYS = Path("deploy") / "quickstart" / "dev-keys"


def default_dev_key_dir() -> Path:
    """``$LABELGATE_DEV_KEYS``, else ``deploy/quickstart/dev-keys`` under the current directory
    (the root of a checkout, where the quickstart runs). The package itself holds no keys: an
    image that wants dev tokens copies the folder and sets the variable, or its config sets
    ``auth.jwt.dev_keys_dir``."""
    configured = os.environ.get(DEV_KEYS_ENV)
    if configured:
        return Path(configured)
    return Path.cwd() / QUICKSTART_DEV_KEYS


def dev_jwks_path(key_dir: Path | None = None) -> Path:
    return (key_dir or default_dev_key_dir()) / JWKS_NAME


def generate(directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new P-256 key pair: the private key (PEM, PKCS#8) and ``jwks.json`` with the public
    key under a ``kid`` derived from it (RFC 7638 thumbprint). Returns (private key, jwks)."""
    private_path, jwks_path = directory / PRIVATE_KEY_NAME, directory / JWKS_NAME
    existing = [str(path) for path in (private_path, jwks_path) if path.exists()]
    if existing and not force:
        raise ConfigError(
            reasons.DEV_KEYS_EXIST, f"refusing to overwrite {', '.join(existing)} (force replaces them)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    # The same JWK the gateway publishes for its own key (RFC 7638 thumbprint as kid), prefixed.
    jwk = public_jwk(key)
    directory.mkdir(parents=True, exist_ok=True)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    document = {"keys": [{**jwk, "kid": DEV_KID_PREFIX + jwk["kid"][:16]}]}
    jwks_path.write_text(json.dumps(document, indent=2) + "\n")
    return private_path, jwks_path


def parse_ttl(text: str) -> int:
    """``"3600"``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` -> seconds (1 s to 7 days)."""
    match = _TTL.fullmatch(str(text).strip())
    if not match:
        raise InvalidInput(
            reasons.TTL_INVALID,
            f"cannot read TTL {text!r}: use seconds (3600) or a number with s, m, h or d (30m, 1h)",
        )
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2).lower()]
    if not 1 <= seconds <= MAX_DEV_TTL_SECONDS:
        raise InvalidInput(reasons.TTL_INVALID, f"TTL {text!r} must be between 1 second and 7 days")
    return seconds


def mint_dev_token(
    sub: str,
    groups: Sequence[str],
    ttl_seconds: int,
    key_dir: Path | None = None,
    *,
    now: float | None = None,
) -> str:
    """A JWT signed with the dev key: iss ``labelgate-dev``, aud ``labelgate``, ``kid`` of the
    shipped JWKS, valid from ``now`` for ``ttl_seconds``."""
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 256:
        raise InvalidInput(reasons.DEV_TOKEN_BAD_SUBJECT, "the subject must be 1 to 256 characters")
    problem = group_name_problem(sub)  # the gateway refuses such a subject (JwtVerifier._subject)
    if problem is not None:
        raise InvalidInput(reasons.DEV_TOKEN_BAD_SUBJECT, f"the subject {problem}")
    # What the gateway would refuse in the token (group_name_problem) is refused here first.
    bad = [group for group in groups if not _GROUP_NAME.fullmatch(group) or group_name_problem(group)]
    if bad:
        raise InvalidInput(
            reasons.DEV_TOKEN_BAD_GROUPS, f"group names must be non-empty without spaces or commas: {bad}"
        )
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int)
        or not 1 <= ttl_seconds <= MAX_DEV_TTL_SECONDS
    ):
        raise InvalidInput(reasons.TTL_INVALID, "ttl_seconds must be an integer from 1 to 7 days")
    key, kid = _load_signing_key(key_dir or default_dev_key_dir())
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": sub.strip(),
        "groups": list(normalise_groups(groups)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=DEV_ALGORITHM, headers={"kid": kid, "typ": "JWT"})


def dev_token_command(sub: str, groups_csv: str | None, ttl: str) -> str:
    """What ``labelgate dev-token --sub alice --groups analysts,data-stewards --ttl 1h`` prints."""
    groups = [name.strip() for name in (groups_csv or "").split(",") if name.strip()]
    return mint_dev_token(sub, groups, parse_ttl(ttl))


def _load_signing_key(key_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, str]:
    private_path, jwks_path = key_dir / PRIVATE_KEY_NAME, key_dir / JWKS_NAME
    missing = [str(path) for path in (private_path, jwks_path) if not path.is_file()]
    if missing:
        raise ConfigError(
            reasons.DEV_KEYS_MISSING,
            f"dev key files not found: {', '.join(missing)} (set {DEV_KEYS_ENV} to the dev-keys folder)",
        )
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        document = json.loads(jwks_path.read_text())
    except ValueError as error:
        raise ConfigError(
            reasons.DEV_KEYS_UNREADABLE, f"cannot read the dev keys in {key_dir}: {error}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(reasons.DEV_KEYS_UNREADABLE, f"{private_path} is not a P-256 private key")
    jwk = public_jwk(key)
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        if isinstance(entry, dict) and all(entry.get(name) == jwk[name] for name in ("kty", "crv", "x", "y")):
            return key, str(entry["kid"])
    raise ConfigError(
        reasons.DEV_KEYS_MISMATCH, f"{jwks_path} does not publish the public half of {private_path}"
    )
