"""A decision's masks, compiled once: ``Mask`` objects and their ``MaskIndex``.

With the decision cache on, every call of one persona to one model gets the very same
``Decision`` object back, masks tuple included. Coercing those masks and indexing them
(globs compiled, exact paths sorted) is then the same work on every call, done twice (the
pipeline's own index for reply parameters and markers, and ``apply_masks``'s): keyed by the
identity of the decision's masks tuple, it is done once. Tuples of frozen masks cannot
change, and the memo holds the tuple itself, so an identity match is the same masks.
Bounded: past ``MEMO_SIZE`` tuples (e.g. decisions without cache) it starts over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from labelgate.enforce.strategies import Mask, MaskIndex
from labelgate.policy.contract import DecidedMask

MEMO_SIZE = 256

MaskLike = Mask | DecidedMask | Mapping[str, Any]
_memo: dict[int, tuple[tuple[MaskLike, ...], tuple[Mask, ...], MaskIndex]] = {}


def compile_masks(masks: Iterable[MaskLike]) -> tuple[tuple[Mask, ...], MaskIndex]:
    """The masks as ``Mask`` objects and their index; memoized for tuples (see above)."""
    if isinstance(masks, tuple):
        entry = _memo.get(id(masks))
        if entry is not None and entry[0] is masks:
            return entry[1], entry[2]
    coerced = tuple(Mask.coerce(mask) for mask in masks)
    index = MaskIndex(coerced)
    if isinstance(masks, tuple):
        if len(_memo) >= MEMO_SIZE:
            _memo.clear()
        _memo[id(masks)] = (masks, coerced, index)
    return coerced, index
