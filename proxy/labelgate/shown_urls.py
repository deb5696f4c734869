"""Addresses as messages show them: without the credentials their userinfo may carry.

An operator may write ``http://user:password@host`` (or ``user:password@host:port``) for an
OPA server, a tracing receiver, a forwarder's destination or an API; an error about that
address names it, and a message ends up in terminals, CI logs and log shippers, so the
userinfo is replaced before any message quotes it. Pure, and nothing in it can fail (a value
too malformed to parse is what such messages are about).
"""

from __future__ import annotations

import re

# scheme://userinfo@ or userinfo@ (HOST:PORT written with one): up to the last "@" before a path.
_USERINFO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?P<userinfo>[^/?#]*)@")


def shown_url(address: str, text: str | None = None) -> str:
    """``text`` (by default ``address`` itself, a URL or HOST:PORT) with the userinfo that
    ``address`` carries replaced by ``***``: a parser's own message (urllib's, yarl's) may
    repeat it, so ``text`` is cleaned of the same userinfo."""
    text = address if text is None else text
    found = _USERINFO.match(address)
    if found is None or not found["userinfo"]:
        return text
    return text.replace(found["userinfo"] + "@", "***@")
