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


def ssh2_value(rng: random.Random, lines: int = 4) -> str:
    """An ssh.com (SSH2) private key: RFC 4716's markers, a header line, base64 lines."""
    label = rng.choice(["SSH2 ENCRYPTED PRIVATE KEY", "SSH2 PRIVATE KEY"])
    body = [pick(rng, ALNUM + "+/", 70) for _ in range(lines)] + [pick(rng, ALNUM + "+/", 22) + "=="]
    header = f'Comment: "rsa-key-{pick(rng, string.digits, 8)}"'
    return "\n".join([f"---- BEGIN {label} ----", header, *body, f"---- END {label} ----"])


# What some encoders write between a JSON object's "{" and its first key: nothing, or whitespace
# (pretty-printed headers, hand-built tokens).
JSON_LEADS = ("", " ", "  ", "\n", "\n  ", "\n    ", "\t", "\n\t", "\r\n", "\r\n  ", " \t\r\n ")


def object_segment(value: dict[str, object], lead: str = "", padded: bool = False) -> str:
    """``value`` as JSON with ``lead`` after its "{", base64url, its "=" padding kept or not."""
    text = "{" + lead + json.dumps(value)[1:]
    encoded = base64.urlsafe_b64encode(text.encode()).decode()
    return encoded if padded else encoded.rstrip("=")


def _padded(segment: str) -> str:
    """``segment`` (base64url of some bytes) with the "=" padding of its length, as some
    libraries write every segment."""
    return segment + "=" * (-len(segment) % 4) if len(segment) % 4 != 1 else segment


def jwt_value(rng: random.Random, signed: bool = True, lead: str = "", padded: bool = False) -> str:
    """A compact JWS: header, payload, signature (empty for ``alg: none``); ``lead`` after
    each JSON "{", every segment "="-padded with ``padded``."""
    header = object_segment({"alg": "HS256" if signed else "none", "typ": "JWT"}, lead, padded)
    name = pick(rng, ALNUM, rng.randint(1, 14) if lead or padded else 12)  # every padding length
    claims = {"sub": pick(rng, string.digits, 10), "name": name, "iat": 1516239022}
    payload = object_segment(claims, lead, padded)
    signature = pick(rng, BASE64URL, 43) if signed else ""
    return f"{header}.{payload}.{_padded(signature) if padded else signature}"


def jwe_value(rng: random.Random, lead: str = "", padded: bool = False) -> str:
    """A compact JWE: header, encrypted key (empty for ``alg: dir``), IV, ciphertext, tag."""
    direct = rng.random() < 0.3
    header = object_segment({"alg": "dir" if direct else "RSA-OAEP", "enc": "A256GCM"}, lead, padded)
    parts = ["" if direct else pick(rng, BASE64URL, 342), pick(rng, BASE64URL, 16)]
    parts += [pick(rng, BASE64URL, rng.randint(1, 120)), pick(rng, BASE64URL, 22)]
    return ".".join([header, *(_padded(part) if padded else part for part in parts)])


# Pieces of JWTs for generated texts: openings of JSON objects' segments whole (8 characters
# or more), cut short and near misses; whitespace groups' characters; dots, padding, run ends.
JWT_PIECES = [
    b"eyJhbGci", b"eyIiOjB9", b"eyAiYWxn", b"ewogICJh", b"ewkiYWxn", b"ew0KICJh", b"eyAgICAgICJh",
    b"eyAbcdef",
    b"e", b"ey", b"ew", b"eyJ", b"eyI", b"eyA", b"ewo", b"ewk", b"ew0", b"eyAg", b"ewog", b"ICAg", b"ICJ",
    b"Cg", b"CQ", b"DQo", b"IC", b"i", b"g", b"J", b"hbGci", b"YWJj", b".", b".", b".", b"..", b"=", b"==",
    b"===", b" ", b"x", b"-", b"_", b"\x00",
]  # fmt: skip


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
    "ssh2": lambda rng: ssh2_value(rng, rng.randint(1, 6)),
    "jwt": lambda rng: jwt_value(rng, rng.random() < 0.8),
    "jwt padded": lambda rng: jwt_value(rng, rng.random() < 0.8, padded=True),
    "jwt spaced json": lambda rng: jwt_value(
        rng, rng.random() < 0.8, rng.choice(JSON_LEADS[1:]), rng.random() < 0.5
    ),
    "jwe": lambda rng: jwe_value(rng, rng.choice(JSON_LEADS), rng.random() < 0.3),
    **TOKEN_FORMS,
}


def secret_value(rng: random.Random) -> str:
    return SECRET_FORMS[rng.choice(sorted(SECRET_FORMS))](rng)
