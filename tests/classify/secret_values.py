"""Generators of credentials in the forms the ``secret`` detector knows, for tests: random
bodies behind the vendors' documented prefixes, never real keys."""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

ALNUM = string.ascii_letters + string.digits
BASE64URL = ALNUM + "_-"
UPPER_DIGITS = string.ascii_uppercase + string.digits
PEM_LABELS = (
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "DSA PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "PRIVATE KEY",
    "PGP PRIVATE KEY BLOCK",
)


def pick(rng: random.Random, alphabet: str, count: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(count))


def pem_value(rng: random.Random, label: str = "RSA PRIVATE KEY", lines: int = 4) -> str:
    """A PEM block: BEGIN marker, base64 lines of 64 characters, END marker."""
    body = [pick(rng, ALNUM + "+/", 64) for _ in range(lines)] + [pick(rng, ALNUM + "+/", 22) + "=="]
    return "\n".join([f"-----BEGIN {label}-----", *body, f"-----END {label}-----"])


def _segment(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def jwt_value(rng: random.Random, signed: bool = True) -> str:
    """A compact JWS: header, payload, signature (empty for ``alg: none``)."""
    header = _segment({"alg": "HS256" if signed else "none", "typ": "JWT"})
    payload = _segment({"sub": pick(rng, string.digits, 10), "name": pick(rng, ALNUM, 12), "iat": 1516239022})
    return f"{header}.{payload}.{pick(rng, BASE64URL, 43) if signed else ''}"


Form = Callable[[random.Random], str]
TOKEN_FORMS: dict[str, Form] = {
    "aws": lambda rng: rng.choice(["AKIA", "ASIA"]) + pick(rng, UPPER_DIGITS, 16),
    "github": lambda rng: f"gh{rng.choice('pousr')}_" + pick(rng, ALNUM, 36),
    "github_pat": lambda rng: "github_pat_" + pick(rng, ALNUM + "_", 82),
    "gitlab": lambda rng: "glpat-" + pick(rng, BASE64URL, rng.choice([20, 100])),
    "slack": lambda rng: (
        f"xox{rng.choice('abposr')}-"
        + "-".join(pick(rng, string.digits, 12) for _ in range(2))
        + "-"
        + pick(rng, ALNUM, rng.choice([24, 90]))
    ),
    "stripe": lambda rng: rng.choice(["sk", "rk"]) + "_live_" + pick(rng, ALNUM, rng.choice([24, 99])),
    "google": lambda rng: "AIza" + pick(rng, BASE64URL, 35),
}

SECRET_FORMS: dict[str, Form] = {
    "pem": lambda rng: pem_value(rng, rng.choice(PEM_LABELS), rng.randint(1, 6)),
    "jwt": lambda rng: jwt_value(rng, rng.random() < 0.8),
    **TOKEN_FORMS,
}


def secret_value(rng: random.Random) -> str:
    return SECRET_FORMS[rng.choice(sorted(SECRET_FORMS))](rng)
