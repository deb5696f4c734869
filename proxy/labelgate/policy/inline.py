"""Which decisions an in-process engine runs on the event loop rather than in its worker pool.

Inline saves the ~50-100 µs thread hop, which only pays for a decision that blocks the loop
no longer than the hop would cost. A revision's running average under the budget says the
policy was fast on the inputs it has seen, not that it is fast on the next one: a policy
quadratic in the fields decided 200 one-field inputs in microseconds, then one input of 512
fields in 0.94 s on the loop, stalling every other call (review). So an input goes inline
only when the average is under the budget *and* the input is no larger than the largest one
decided within the budget; every other input goes to the pool, where its decision teaches
the gate too. A decision over the budget lowers that size below its own input's, so a size
that was once slow goes to the pool until a decision of it is fast again there.

The size is what the engine has at hand: the wasm engine's JSON text length (it encodes
every input anyway), the embedded engine's ``input_size`` (values in the input, a string
counting one more per 64 characters), counted only up to the size it is compared with.
What is not bounded: a policy whose cost depends on the values rather than the size (a
branch only some input takes); the first such decision on the loop lowers the size for the
next ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_BUDGET = 0.0001  # seconds: about what the thread hop costs
UNBOUNDED = 1 << 62
_CHARACTERS_PER_UNIT = 64


def input_size(value: Any, limit: int = UNBOUNDED) -> int:
    """The number of values in ``value`` (an object's keys too, a string one more per 64
    characters); once it exceeds ``limit``, some number above ``limit`` (the walk stops there,
    so measuring an input costs no more than the largest one that fits)."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        size += 1
        kind = type(item)
        if kind is dict:
            size += len(item)
            if size > limit:
                return size
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            if size + len(item) > limit:
                return size + len(item)
            stack.extend(item)
        elif kind is str:
            size += len(item) // _CHARACTERS_PER_UNIT
        if size > limit:
            return size
    return size


def known_size(size: int) -> Callable[[int], int]:
    """A measure (see ``InlineGate.record``) of an input whose size is known already."""
    return lambda limit: size


class InlineGate:
    """One revision's record of what its decisions cost, and the rule above.

    Updated from the loop and from worker threads without a lock: a lost update only makes
    the record slightly stale, and every field holds a value some decision gave it.
    """

    def __init__(self, budget: float = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.average_seconds: float | None = None  # None until a decision is measured
        self.largest_fast = -1  # the largest input size decided within the budget (-1: none)
        self.inline = 0  # decisions taken on the event loop
        self.pooled = 0  # decisions sent to the worker pool

    @property
    def open(self) -> bool:
        """Whether some input may go inline (else measuring one is not worth it)."""
        average = self.average_seconds
        return average is not None and average <= self.budget and self.largest_fast >= 0

    def inline_size(self, measure: Callable[[int], int]) -> int | None:
        """The input's size when it is decided on the event loop, else None (the worker pool).

        ``measure(limit)`` sizes the input as ``input_size`` does; it is called only when some
        input may go inline."""
        if self.open:
            largest = self.largest_fast
            size = measure(largest)
            if size <= largest:
                self.inline += 1
                return size
        self.pooled += 1
        return None

    def record(self, elapsed: float, size: Callable[[int], int]) -> None:
        """Account one decision that took ``elapsed`` seconds; ``size(limit)`` measures its
        input as ``input_size`` does (exactly up to ``limit``, some number above it beyond)."""
        previous = self.average_seconds
        self.average_seconds = elapsed if previous is None else previous * 0.9 + elapsed * 0.1
        largest = self.largest_fast
        if elapsed <= self.budget:
            # Decided within the budget, so small: measuring it whole costs less than that.
            measured = size(UNBOUNDED)
            if measured > largest:
                self.largest_fast = measured
        elif largest >= 0:
            measured = size(largest)
            if measured <= largest:
                self.largest_fast = measured - 1
