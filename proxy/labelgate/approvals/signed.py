"""Signed values for cookies: ``<format>.<base64url JSON>.<base64url HMAC-SHA256>``.

One ``purpose`` per kind of value (an inbox session, a pending sign-in, a CSRF token) is
mixed into the MAC, so a value signed for one purpose never verifies as another, even
under the same key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def same(given: str, expected: str) -> bool:
    """Whether a secret a client sent (a CSRF token, an OIDC ``state``) is the expected one,
    in constant time. As bytes: ``hmac.compare_digest`` raises TypeError on ``str`` holding
    anything but ASCII, and the client chooses what it sends."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def mac(key: bytes, purpose: bytes, data: str) -> bytes:
    return hmac.new(key, purpose + b"\0" + data.encode(), hashlib.sha256).digest()


def sign(key: bytes, purpose: bytes, version: str, claims: dict[str, Any]) -> str:
    body = f"{version}.{_b64(json.dumps(claims, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{body}.{_b64(mac(key, purpose, body))}"


def verify(
    key: bytes, purpose: bytes, version: str, value: str | None, max_bytes: int
) -> dict[str, Any] | None:
    """The claims of a value this key signed for ``purpose`` in ``version``; None for anything
    else (too long, another format, a bad MAC, not a JSON object). Expiry is the caller's."""
    if not value or len(value) > max_bytes:
        return None
    body, _, signature = value.rpartition(".")
    if not body.startswith(version + "."):
        return None
    try:
        if not hmac.compare_digest(_unb64(signature), mac(key, purpose, body)):
            return None
        claims = json.loads(_unb64(body.partition(".")[2]))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None
