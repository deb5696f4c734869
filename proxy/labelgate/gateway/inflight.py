"""Request bytes in flight: how much of the gateway's memory callers' requests hold at once.

grpc hands a handler a request's whole body before anything of the call is known, and the
pipeline parses it, serializes it again for the upstream and keeps it until the reply is
released: a call pins about four times its request. Bounded per message only
(``limits.max_message_bytes``), 60 concurrent 15 MiB calls of callers who never
authenticate took a gateway to 2.6 GB. So every request's bytes count against one budget
per process (``limits.max_request_bytes_in_flight``) from the moment the handler has them
until the call ends; a request that does not fit is refused at once (RESOURCE_EXHAUSTED,
``REQUEST_BYTES_EXHAUSTED``), before it is parsed, so its bytes are freed at once too.

A request's parse builds more than its wire bytes, up to thousands of times more (a
message takes its type's whole layout however little of it the wire sets): what it is
estimated to build (``wire_bounds``) is held by its call's lease too, taken before the parse
(``parse_held``), so calls whose parses would not fit are shed the same way.

A stream holds the bytes of the message it is working on (and of its parse): each message
read replaces the last one's. A call held for approval hands its bytes to the approval
service's own bound (``approvals.max_held_bytes``), so calls waiting for a person do not
shed everyone else's, and takes them back when the hold ends.

The messages a ``split_values: hold`` route's stream holds while a value may still straddle
them (``classify/split_values.py``) count against a budget of their own
(``limits.max_stream_held_bytes``, ``HeldBytes``): each stream is bounded by
``limits.max_message_bytes``, but 40 streams holding 6.5 MiB of binary each took a gateway
from 181 to 970 MiB (review). A stream whose hold would pass it ends (RESOURCE_EXHAUSTED,
``STREAM_HELD_BYTES_EXHAUSTED``), nothing of what it holds released.

Pure bookkeeping: one event loop per process, so no lock.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import ClassVar

from prometheus_client import Gauge

from labelgate.errors import Overloaded
from labelgate.gateway import metrics, reasons
from labelgate.logs import get_logger

log = get_logger(__name__)


class Lease:
    """The bytes one call (or one stream's current message) holds of the budget."""

    __slots__ = ("_budget", "ended", "size")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.size = 0
        self.ended = False  # its call ended: nothing is taken back (``take_back``)

    def hold(self, size: int) -> None:
        """Hold ``size`` bytes instead of what this lease held (a stream's next message)."""
        self.release()
        self._budget.take(size)
        self.size = size

    def grow(self, size: int) -> None:
        """Hold ``size`` bytes more than this lease holds; as it was when they do not fit."""
        self._budget.take(size)
        self.size += size

    def release(self) -> None:
        if self.size:
            self._budget.give_back(self.size)
            self.size = 0


_CURRENT: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "labelgate_request_lease", default=None
)


class ByteBudget:
    """One process's bound on bytes of one kind, ``limit`` in all: what is taken counts in a
    gauge, and what does not fit is refused (RESOURCE_EXHAUSTED with the budget's reason)
    and counted in ``labelgate_requests_shed_total`` under the budget's bound."""

    bound: ClassVar[str]  # its label in labelgate_requests_shed_total
    reason: ClassVar[str]
    refusal: ClassVar[str]
    gauge: ClassVar[Gauge]
    logged: ClassVar[str]

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self, size: int) -> None:
        if self.in_use + size > self.limit:
            metrics.REQUESTS_SHED.labels(self.bound).inc()
            log.warning(self.logged, bound=self.bound, bytes=size, in_flight=self.in_use, limit=self.limit)
            raise Overloaded(self.reason, self.refusal)
        self.take_anyway(size)

    def take_anyway(self, size: int) -> None:
        """``size`` bytes taken whether or not they fit (``take_back``)."""
        self.in_use += size
        self.gauge.set(self.in_use)

    def give_back(self, size: int) -> None:
        self.in_use -= size
        self.gauge.set(self.in_use)


class RequestBytes(ByteBudget):
    """Callers' request bytes (``limits.max_request_bytes_in_flight``)."""

    bound = "request_bytes"
    reason = reasons.REQUEST_BYTES_EXHAUSTED
    refusal = (
        "the gateway holds as many request bytes as it may (limits.max_request_bytes_in_flight); retry later"
    )
    gauge = metrics.REQUEST_BYTES_IN_FLIGHT
    logged = "request shed"

    @contextmanager
    def call(self, size: int = 0) -> Iterator[Lease]:
        """A call's lease from here to its end: ``size`` bytes of a unary request now, or a
        stream's messages as they are read (``message_read``)."""
        lease = Lease(self)
        lease.hold(size)
        token = _CURRENT.set(lease)
        try:
            yield lease
        finally:
            lease.release()
            lease.ended = True  # a task of the call may outlive it (``take_back``)
            # A stream handler's generator may be closed from another task than the one that
            # ran it (asyncio finalizes a generator left suspended at a write its caller
            # cancelled): there the reset fails, and the bytes, given back first, must not
            # depend on it (they stayed counted for good: a few such streams refused every call).
            with suppress(ValueError):
                _CURRENT.reset(token)


def message_read(size: int) -> None:
    """A stream's message of ``size`` bytes was read: it replaces the previous one in its
    call's lease. Raises ``Overloaded`` when it does not fit (the stream ends with it).
    Outside a call's lease (a pipeline driven without a transport) nothing is counted."""
    lease = _CURRENT.get()
    if lease is not None:
        lease.hold(size)


def parse_held(size: int) -> None:
    """The current call's request (or stream's message), once parsed, holds about ``size``
    bytes besides its wire bytes (``wire_bounds``: what upb builds of its messages, which
    100,000 empty ones of a wide type made 783 MiB of 195 KiB of wire): its lease holds them
    too, until its next message or its end. Raises ``Overloaded`` before the parse when they
    do not fit. Outside a call's lease nothing is counted."""
    lease = _CURRENT.get()
    if lease is not None and size:
        lease.grow(size)


def held_apart(size: int) -> Lease | None:
    """A lease of its own of ``size`` bytes from the current call's budget, for a request
    kept beyond its stream's next message (a streamed request in flight at a REST upstream,
    ``rest_streams.py``): the holder releases it. Raises ``Overloaded`` when it does not fit;
    None outside a call's lease."""
    current = _CURRENT.get()
    if current is None:
        return None
    lease = Lease(current._budget)
    lease.hold(size)
    return lease


def set_aside() -> int:
    """The current call is held for approval: its bytes count against the approval
    service's bound from here on, not against this one. The bytes set aside (``take_back``)."""
    lease = _CURRENT.get()
    if lease is None:
        return 0
    size = lease.size
    lease.release()
    return size


def take_back(size: int) -> None:
    """The current call's hold ended: the ``size`` bytes it set aside count here again until
    it ends (a granted call runs upstream for as long as its deadline lets it, counted by no
    bound otherwise). Taken even past the limit: the call was admitted and granted, and what
    held calls keep is bounded (``approvals.max_held_bytes``), so the budget is over by at
    most that while they run, and new requests are shed meanwhile. Nothing when the call's
    lease holds bytes again already (a stream that read its next message), or when the call
    ended while the hold did (a task of a stream, or of a REST call whose caller hung up,
    may end after it: taken then, the bytes stayed counted for good)."""
    lease = _CURRENT.get()
    if lease is not None and size and not lease.size and not lease.ended:
        lease._budget.take_anyway(size)
        lease.size = size


class HeldBytes(ByteBudget):
    """The bytes the hold streams of one process hold (``SplitValues.held_bytes``, as the
    stream's own ``hold_limit`` counts them; ``limits.max_stream_held_bytes``)."""

    bound = "stream_held_bytes"
    reason = reasons.STREAM_HELD_BYTES_EXHAUSTED
    refusal = (
        "the gateway's token streams hold as many bytes as they may "
        "(limits.max_stream_held_bytes); retry later"
    )
    gauge = metrics.STREAM_HELD_BYTES
    logged = "hold stream refused"


class HeldShare:
    """What one hold stream holds of its process's ``HeldBytes``."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: HeldBytes) -> None:
        self._budget = budget
        self.size = 0

    def hold(self, size: int) -> None:
        """The stream holds ``size`` bytes now. Raises ``Overloaded`` when what it holds grew
        past what is left (its share stays as it was: the stream ends, and gives it back)."""
        grown = size - self.size
        if grown > 0:
            self._budget.take(grown)
        elif grown < 0:
            self._budget.give_back(-grown)
        self.size = size

    def release(self) -> None:
        self.hold(0)

    def handed_over(self) -> HeldShare:
        """A share holding what this one held, which holds nothing from here on: for what
        outlives the stream (its end read in a thread the stream no longer waits for)."""
        other = HeldShare(self._budget)
        other.size, self.size = self.size, 0
        return other
