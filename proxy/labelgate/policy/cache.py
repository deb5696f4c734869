"""A decision cache in front of any PolicyEngine.

The key is the decision-relevant part of the input: everything except values that differ
on every call without changing what the policy can decide (``request.request_id``,
``request.session_id``, ``request.peer``, ``request.digest``, ``context.time_ns``), as
canonical JSON, hashed.
``subject.attributes`` stay in the key: a policy may use them.

The policy says how long its answer holds (``cache_ttl_seconds``; 0 means never cache) and
fail-closed denies are never cached, so an outage is not remembered after it ends. The
whole cache is dropped the moment the inner engine reports a new revision (checked on
every call: one string comparison). For OPA the revision is what its last answer
reported, so a bundle update is seen on the next miss; entries cached before it live at
most their TTL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from labelgate.logs import get_logger
from labelgate.policy.contract import Decision
from labelgate.policy.engine import PolicyEngine

log = get_logger(__name__)

# ``digest`` identifies the query for approval grants (input values included); the policy
# may not decide on it (the contract says so), and keying on it would cache per query.
_VOLATILE_REQUEST_KEYS = frozenset({"request_id", "session_id", "peer", "digest"})
# Per-token claims: every new token of one person would otherwise be a new key (a cache miss,
# and a new "distinct" input for impact analysis). Time is not a key either (``time_ns``):
# a policy that decides on time or expiry must set a cache TTL that fits.
_VOLATILE_SUBJECT_ATTRIBUTES = frozenset({"jti", "iat", "exp", "nbf"})


def cache_key(doc: dict[str, Any]) -> bytes | None:
    """sha256 of the canonical decision-relevant input; None when it is not JSON."""
    relevant = dict(doc)
    request = relevant.get("request")
    if isinstance(request, dict):
        relevant["request"] = {k: v for k, v in request.items() if k not in _VOLATILE_REQUEST_KEYS}
    subject = relevant.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("attributes"), dict):
        attributes = {k: v for k, v in subject["attributes"].items() if k not in _VOLATILE_SUBJECT_ATTRIBUTES}
        relevant["subject"] = {**subject, "attributes": attributes}
    context = relevant.get("context")
    if isinstance(context, dict):
        relevant["context"] = {k: v for k, v in context.items() if k != "time_ns"}
    try:
        text = json.dumps(
            relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).digest()


class CachingEngine:
    """PolicyEngine wrapper: LRU of decisions, honouring each decision's TTL."""

    def __init__(
        self,
        inner: PolicyEngine,
        max_entries: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.inner = inner
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._revision = inner.revision
        self.hits = 0
        self.misses = 0
        self.revision_drops = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def revision(self) -> str:
        return self.inner.revision

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self._entries),
            "revision_drops": self.revision_drops,
        }

    def clear(self) -> None:
        self._entries.clear()

    async def start(self) -> None:
        await self.inner.start()
        self._sync_revision()

    async def close(self) -> None:
        await self.inner.close()

    async def healthy(self) -> bool:
        """The inner engine's health; an unhealthy engine also empties the cache (the
        gateway checks every couple of seconds), so an outage is not hidden by old answers."""
        ok = await self.inner.healthy()
        if not ok:
            self.clear()
        return ok

    async def decide(self, input: dict[str, Any]) -> Decision:
        self._sync_revision()
        key = cache_key(input)
        if key is not None:
            entry = self._entries.get(key)
            if entry is not None:
                expires, decision = entry
                if self._clock() < expires:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return decision
                del self._entries[key]
        self.misses += 1
        decision = await self.inner.decide(input)
        if decision.failed_closed:
            # The engine is failing: stop answering from what it said while it was well, so
            # every caller sees the outage (fail closed) rather than only the new ones.
            self.clear()
            return decision
        # The inner engine may have learnt of a new revision while deciding (OPA reports it
        # per answer): drop what the old one decided before storing anything.
        self._sync_revision()
        if key is not None and decision.cache_ttl_seconds > 0 and decision.revision == self._revision:
            self._entries[key] = (
                self._clock() + decision.cache_ttl_seconds,
                dataclasses.replace(decision, cached=True),
            )
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return decision

    def _sync_revision(self) -> None:
        revision = self.inner.revision
        if revision != self._revision:
            if self._entries:
                log.info(
                    "policy_cache_dropped", old_revision=self._revision, revision=revision, entries=len(self)
                )
                self.revision_drops += 1
            self._entries.clear()
            self._revision = revision
