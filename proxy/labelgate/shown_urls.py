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


def credentials_problem(address: str, *, why: str) -> str | None:
    """The refusal of an address whose userinfo nothing it names checks (``why`` says so), or
    None when it carries none: a password written there would only travel to log lines,
    links and ids. ``config.sections.without_credentials`` refuses settings with it; the
    settings below the config package (auth, tracing) call it themselves."""
    if shown_url(address) == address:
        return None
    return f"{shown_url(address)!r} carries credentials (user:password@): {why}: remove them"


def shown_problem(url: str, problem: str) -> str:
    """A failed request's message (an aiohttp, httpx or yarl error's own text) as a log line
    or an error may quote it: an InvalidURL error repeats the whole URL, whose userinfo holds
    credentials and whose path may be the secret itself (a Slack incoming webhook's
    /services/T…/B…/token). The URL and its path become ``…``, the host stays (the message
    names it anyway)."""
    origin = "/".join(url.split("/")[:3])
    path = url[len(origin) :]
    text = problem.replace(url, f"{shown_url(url, origin)}/…")
    if len(path) > 1:
        text = text.replace(path, "/…")
    return shown_url(url, text)
