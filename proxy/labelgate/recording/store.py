"""What a session store does, whichever the backend (files or PostgreSQL)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from labelgate.errors import InvalidInput
from labelgate.recording import reasons

if TYPE_CHECKING:  # the CLI reads the page sizes here, and must start fast
    from labelgate.recording.entries import Admission

# A page of the session list: what the inbox shows at once, and the most a caller may ask for.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_CURSOR = 2048  # characters: a position a store wrote (a session id is at most 128), base64

# Seals an entry as the session's ``seq``-th stored one (``sealing.RecordingKeys.seal``). The
# store calls it under the session's lock, where the position is known, so that several
# gateways writing one session number its entries without a gap or a repeat.
Sealer = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    started: str  # RFC 3339, time of the first recorded call
    last: str  # time of the latest entry
    calls: int
    bytes: int
    truncated: bool


@dataclass(frozen=True)
class SessionPage:
    """One page of sessions, most recent first; ``next`` is the cursor of the following page
    (None on the last one)."""

    sessions: list[SessionInfo]
    next: str | None = None


def encode_cursor(order: str, tie: str) -> str:
    """A page cursor: the position (an order key and a tie-breaker, each store's own) of the
    last session a page showed; the next page starts after it."""
    raw = json.dumps([order, tie], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    """The position ``encode_cursor`` wrote; InvalidInput (a 400) for anything else."""
    try:
        if len(text) > MAX_CURSOR:
            raise ValueError("too long")
        found = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        # Only what a store writes: two strings, no NUL (it would reach PostgreSQL and read as
        # a store failure, not as the caller's mistake).
        if not isinstance(found, list) or len(found) != 2 or not all(isinstance(x, str) for x in found):
            raise ValueError("not a position")
        order, tie = found
        if "\x00" in order + tie:
            raise ValueError("not a position")
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise bad_cursor() from None
    return order, tie


def bad_cursor() -> InvalidInput:
    return InvalidInput(reasons.SESSIONS_CURSOR_INVALID, "the page cursor is not one this server gave")


def page_size(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


class SessionStore(Protocol):
    async def open(self) -> None: ...

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        """Append in order under the session's size cap; what happened to each entry. With
        ``seal``, each stored entry (the marker too) is sealed at its position, counted from 1
        over the session's stored entries, and measured against the cap as sealed."""
        ...

    async def sessions(self) -> list[SessionInfo]:
        """Every session, most recent first (the CLI's prefix look-up; pages list them)."""
        ...

    async def sessions_page(self, limit: int, cursor: str | None = None) -> SessionPage:
        """Up to ``limit`` sessions, most recent first, after the one ``cursor`` names (from a
        previous page's ``next``), reading only what those need; InvalidInput for a cursor the
        store did not write."""
        ...

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        """Every entry of a session in order (the marker included), None if there is no such session."""
        ...

    async def sweep(self, cutoff: datetime) -> int:
        """Delete sessions whose latest entry is older than ``cutoff``; how many."""
        ...

    async def close(self) -> None: ...
