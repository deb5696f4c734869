"""A call outlives the credentials it was made with: the checks that none has expired.

A stream's messages, a client stream's requests and each release after a wait (a call held
for approval) are checked again, here, against the first of the caller's credentials to
expire (``labelgate.expiry``): once it has, nothing more goes upstream or to the caller.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TypeVar

from labelgate.auth import Subject
from labelgate.auth import reasons as auth_reasons
from labelgate.errors import Unauthenticated
from labelgate.expiry import credentials_live

R = TypeVar("R")


def is_valid(subject: Subject) -> bool:
    """None of the subject's credentials has expired, its own token or one presented beside it
    (a bearer token next to a client certificate: ``earliest_expiry``). An expiry that cannot be
    read counts as passed."""
    return credentials_live(subject.attributes, time.time())


def still_valid(subject: Subject, why: str = "the token this stream was opened with has expired") -> None:
    """A call outlives the credentials it was made with (a stream, a call held for approval, a
    client stream's messages): each message, and each release after a wait, checks that none
    has expired (``is_valid``), refused UNAUTHENTICATED TOKEN_EXPIRED otherwise."""
    if not is_valid(subject):
        raise Unauthenticated(auth_reasons.TOKEN_EXPIRED, why)


async def while_valid(subject: Subject, messages: AsyncIterator[R]) -> AsyncIterator[R]:
    """A client stream's messages, each checked (``still_valid``) as it is read, before it is
    handed on to the upstream: the first read once a credential has expired ends the stream."""
    async for message in messages:
        still_valid(subject)
        yield message
