"""Tokens already verified, until they expire: one signature check per token, not per call.

A client sends the same bearer token on every call until it expires, and checking its
signature (ECDSA or RSA) is the largest part of authenticating one. The memo is exact: it is
keyed by the whole token string, and an entry holds only while

- the token has not reached its ``exp`` (without the verifier's leeway, so a hit never
  accepts what a full check would refuse: after ``exp`` the full check decides again), and
- the verifier still trusts the same set of keys (a JWKS refresh that drops a key makes
  every token verified under the old set go through the full check again).

Only successful verifications are kept; a refusal is always recomputed (and costs no
signature check in the common refusals). Bounded: past ``max_entries`` the oldest go first.

Thread-safe: the gateway's verifier is used from the event loop and from the admin listener's
worker threads (``asyncio.to_thread``), and an unguarded OrderedDict raises ``KeyError`` when
one thread evicts the entry another is moving. One lock around each short critical section (a
dict lookup, a move, an insert) costs far less than the signature check it saves.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from labelgate.auth.subject import Subject

DEFAULT_MAX_ENTRIES = 10_000


class VerifiedTokens:
    """token -> (Subject, expiry, the key set that verified it); LRU, bounded."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._clock = clock  # wall clock: ``exp`` is seconds since the epoch
        self._entries: OrderedDict[str, tuple[Subject, float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, keys: object) -> Subject | None:
        """The subject ``token`` was verified as under ``keys``, if that still holds."""
        now = self._clock()  # outside the lock: a clock is the caller's code
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            subject, expires, verified_with = entry
            if verified_with is not keys or now >= expires:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return subject

    def put(self, token: str, keys: object, subject: Subject, expires: float) -> None:
        if self._clock() >= expires:
            return  # accepted within the leeway only: leave it to the full check every time
        with self._lock:
            self._entries[token] = (subject, expires, keys)
            self._entries.move_to_end(token)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
