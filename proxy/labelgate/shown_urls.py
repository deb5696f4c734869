"""URLs as messages show them: without the credentials their userinfo may carry.

An operator may write ``http://user:password@host`` for an OPA server, a forwarder's
destination or an API; an error about that URL names it, and a message ends up in
terminals, CI logs and log shippers, so the userinfo is replaced before any message quotes
it. Pure: no parsing that can fail (a URL too malformed to parse is what such messages are
about).
"""

from __future__ import annotations

import re

# scheme://userinfo@ : everything between "//" and the last "@" before the path.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#]*)@")


def shown_url(url: str) -> str:
    """``url`` with any userinfo replaced by ``***`` (``http://***@host:1/x``)."""
    return _USERINFO.sub(lambda match: f"{match['scheme']}***@", url)
