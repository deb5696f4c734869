"""What a session store does, whichever the backend (files or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from labelgate.recording.entries import Admission

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


class SessionStore(Protocol):
    async def open(self) -> None: ...

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        """Append in order under the session's size cap; what happened to each entry. With
        ``seal``, each stored entry (the marker too) is sealed at its position, counted from 1
        over the session's stored entries, and measured against the cap as sealed."""
        ...

    async def sessions(self) -> list[SessionInfo]: ...

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        """Every entry of a session in order (the marker included), None if there is no such session."""
        ...

    async def sweep(self, cutoff: datetime) -> int:
        """Delete sessions whose latest entry is older than ``cutoff``; how many."""
        ...

    async def close(self) -> None: ...
