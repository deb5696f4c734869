"""When a call's credentials expire: pure, and free of the auth package's imports (the
decision cache reads it too, and ``labelgate policy`` commands should not load JWT and X.509
code to get it).

A call may prove several identities (a bearer token next to a client certificate:
``auth.authenticator``); it lasts no longer than the first of them to expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The subject's attributes when a call proved several identities (``Authenticator``):
# ``also_verified`` {method: qualified id} (approvals and the default policy read it), and
# ``also_verified_credentials`` {method: that credential's own subject object, as
# ``Subject.to_policy`` writes it}: its groups and attributes (a JWT's ``exp``, ``jti``,
# ``iss``, ``kid``, ...), so policy can judge every credential, not only the subject's.
ALSO_VERIFIED = "also_verified"
ALSO_VERIFIED_CREDENTIALS = "also_verified_credentials"
# What ``earliest_expiry`` answers for an ``exp`` it cannot read: long past.
UNREADABLE_EXPIRY = float("-inf")


def earliest_expiry(attributes: Mapping[str, Any]) -> int | float | None:
    """When the first of a call's credentials expires (seconds since the epoch): the least
    ``exp`` of ``attributes`` (a subject's, or the policy input's ``subject.attributes``) and
    of each credential in its ``also_verified_credentials``; None when none has one (a client
    certificate or an API key alone). A stream or a cached decision then ends with whichever
    credential expires first, the token presented next to a certificate included.

    Fails closed: an ``exp`` that is there but is no number (a bool, a string, null, NaN) or
    ``also_verified_credentials`` of another shape answers ``UNREADABLE_EXPIRY`` (expired),
    never "no expiry". An int beyond a float's range is handed back as it is (callers compare
    before they subtract)."""
    earliest = _expiry(attributes)
    others = attributes.get(ALSO_VERIFIED_CREDENTIALS)
    if others is None:
        return earliest
    if not isinstance(others, Mapping):
        return UNREADABLE_EXPIRY
    for credential in others.values():
        own = credential.get("attributes") if isinstance(credential, Mapping) else None
        if not isinstance(own, Mapping):
            return UNREADABLE_EXPIRY
        expires = _expiry(own)
        if expires is not None and (earliest is None or expires < earliest):
            earliest = expires
    return earliest


def _expiry(attributes: Mapping[str, Any]) -> int | float | None:
    """One credential's ``exp``: None when it has none, ``UNREADABLE_EXPIRY`` when it is not
    a number (exact int or float: a bool is no number of seconds) or is NaN."""
    if "exp" not in attributes:
        return None
    expires = attributes["exp"]
    if type(expires) is not int and type(expires) is not float:
        return UNREADABLE_EXPIRY
    if expires != expires:  # NaN: no telling when it expires
        return UNREADABLE_EXPIRY
    return expires


def credentials_live(attributes: Mapping[str, Any], now: float) -> bool:
    """None of the credentials ``attributes`` names has expired at ``now`` (``earliest_expiry``;
    one that cannot be read has)."""
    expires = earliest_expiry(attributes)
    return expires is None or now < expires
