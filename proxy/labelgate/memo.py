"""A memo bounded in entries and in weight, that starts over when full.

The data path remembers what it works out per JSON shape (``classify/jsonpaths.py``: a
shape per key signature and per native signature; ``enforce/native.py``: a mask plan per
shape). Those keys come from backend data, so each memo is bounded twice: in entries, and
in a weight its owner counts per entry (signature tokens or bytes, leaves), since one
entry's memory grows with the width of its element. An entry heavier than
``max_entry_weight`` is never kept: it is worked out per call.

Past either bound the memo clears instead of evicting the least recently used entry:

- the hit path, per element and per call, stays one plain dict lookup (``entries.get`` or
  ``entries[key]``); LRU would pay recency bookkeeping on every hit;
- a model's shapes are few and stable, so a memo fills only under data with no stable
  shapes, where LRU would churn as well; starting over costs a relearn on the exact path,
  never a wrong answer;
- every step is one dict operation, safe under the GIL for callers that share a memo
  across threads (a racing reader misses and relearns; a key two threads put at once
  counts twice, which only clears the memo sooner).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """At most ``max_entries`` entries of at most ``max_weight`` weight in all.

    Look up through ``entries`` (read only: write through ``put`` alone, which keeps
    ``weight``, the sum of the weights of the entries, within its bound).
    """

    __slots__ = ("entries", "max_entries", "max_entry_weight", "max_weight", "weight")

    def __init__(self, max_entries: int, max_weight: int, max_entry_weight: int) -> None:
        self.entries: dict[K, V] = {}
        self.weight = 0
        self.max_entries = max_entries
        self.max_weight = max_weight
        # An entry heavier than the whole memo may hold is not kept either.
        self.max_entry_weight = min(max_entry_weight, max_weight)

    def keeps(self, weight: int) -> bool:
        """Whether ``put`` would keep an entry of ``weight`` (a caller may skip working out
        a value it could not keep)."""
        return weight <= self.max_entry_weight

    def put(self, key: K, value: V, weight: int) -> bool:
        """Remember ``value`` for ``key`` (a key just missed), first clearing the memo if it
        would pass a bound; False, keeping nothing, for an entry heavier than allowed."""
        if weight > self.max_entry_weight:
            return False
        if len(self.entries) >= self.max_entries or self.weight + weight > self.max_weight:
            self.clear()
        self.entries[key] = value
        self.weight += weight
        return True

    def clear(self) -> None:
        """Forget every entry."""
        self.entries.clear()
        self.weight = 0
