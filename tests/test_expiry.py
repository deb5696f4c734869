"""earliest_expiry: the first of a call's credentials to expire, failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from labelgate.expiry import UNREADABLE_EXPIRY, earliest_expiry


def _behind(exp: Any) -> dict[str, Any]:
    """A token's subject object as ``also_verified_credentials`` holds it, with ``exp``."""
    return {"id": "jwt:i#bob", "name": "bob", "groups": [], "auth": "jwt", "attributes": {"exp": exp}}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"cert_sha256": "ab"}, None),  # a certificate alone: no expiry
        ({"exp": 200}, 200),
        ({"exp": 10**400}, 10**400),  # handed back as it is, never a float overflow
        ({"cert_sha256": "ab", "also_verified_credentials": {"jwt": _behind(150)}}, 150),
        ({"exp": 300, "also_verified_credentials": {"jwt": _behind(150)}}, 150),
        ({"exp": 100, "also_verified_credentials": {"jwt": _behind(150)}}, 100),
        ({"also_verified_credentials": {"api_key": {"attributes": {"key_id": "k"}}}}, None),
        ({"also_verified_credentials": {}}, None),
    ],
)
def test_the_earliest_expiry_is_the_first_credential_to_expire(attributes: Any, expected: Any) -> None:
    assert earliest_expiry(attributes) == expected


@pytest.mark.parametrize(
    "attributes",
    [
        {"exp": "200"},
        {"exp": True},
        {"exp": None},
        {"exp": float("nan")},
        {"also_verified_credentials": {"jwt": _behind("200")}},
        {"also_verified_credentials": {"jwt": _behind(False)}},
        {"also_verified_credentials": {"jwt": _behind(None)}},
        {"also_verified_credentials": {"jwt": _behind(float("nan"))}},
        {"exp": 10**400, "also_verified_credentials": {"jwt": _behind([200])}},
        {"also_verified_credentials": ["jwt"]},
        {"also_verified_credentials": {"jwt": "jwt:i#bob"}},
        {"also_verified_credentials": {"jwt": {"attributes": "exp=200"}}},
    ],
)
def test_an_expiry_that_cannot_be_read_has_passed(attributes: Any) -> None:
    """Fail closed: never read as "no expiry", which would let a stream or a cached decision
    outlive the token."""
    assert earliest_expiry(attributes) == UNREADABLE_EXPIRY == float("-inf")
