"""Stage: hold for approval.

The interface the pipeline uses when a decision says ``require_approval``. The gateway
plugs in ``labelgate.approvals.stage.HoldForApproval`` (held calls, approvers, grants);
``RefuseUntilApproved`` is what it uses when approvals are off or not configured: such
calls are refused at once, saying that approval is required.

The request a held call carries stays in memory for the whole hold (with what the gateway
made of it), so held calls are bounded by bytes as well as by count. Its size is what the
transport read: ``note_request`` keeps the current call's request in a context variable, as
the deadline is kept, and ``request_bytes`` measures it only when a call is held. gRPC notes
the body it read (``approvals.deadline.DeadlineInterceptor``); REST the message it parsed
from the body (``gateway/rest.py``), in the task that runs the call or before it is created
(a task runs in a copy of its creator's context). A call with nothing noted is not held.
A call held in its response phase keeps the upstream's reply as well (decoded and classified,
the masks still to apply): ``reply_kept`` notes it for that phase, and it counts with the
request (an upstream's reply may be megabytes where the request was a few bytes).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import Message

from labelgate.policy.contract import Decision

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.calls import Call

Reevaluate = Callable[[dict[str, Any]], Awaitable[Decision]]


class LastRead:
    """The message a client stream read last, for the tasks serving the stream that do not read
    it (a reply's response phase, held in the handler's task): kept until the next is read or
    the stream ends, as the stream's lease of the request-bytes budget keeps its size."""

    __slots__ = ("message",)

    def __init__(self) -> None:
        self.message: bytes | Message | None = None


# The body as it came (bytes), the message a transport parsed or a stream read, or a stream's
# last read; a reference only: nothing is measured unless the call is held.
_request: contextvars.ContextVar[bytes | Message | LastRead | None] = contextvars.ContextVar(
    "labelgate_request", default=None
)


def note_request(request: bytes | Message | LastRead | None) -> None:
    """The current call's request, as its transport read it (None: none to measure)."""
    _request.set(request)


# The upstream's reply a response phase decides on, while it decides (``reply_kept``).
_reply: contextvars.ContextVar[Message | None] = contextvars.ContextVar("labelgate_reply", default=None)


@contextlib.contextmanager
def reply_kept(reply: Message) -> Iterator[None]:
    """``reply`` is kept for as long as the current response phase lasts, a hold included."""
    token = _reply.set(reply)
    try:
        yield
    finally:
        _reply.reset(token)


def request_bytes() -> int | None:
    """The bytes the current call keeps while it is held: its request's size, and in a response
    phase its upstream reply's as well; None when its transport noted no request."""
    request = _request.get()
    if isinstance(request, LastRead):
        request = request.message
    if request is None:
        return None
    # Only for a held call: upb serializes to measure (a few ms a MiB).
    size = len(request) if isinstance(request, bytes) else request.ByteSize()
    reply = _reply.get()
    return size if reply is None else size + reply.ByteSize()


# The grants the current call is released under, noted by the approval stage as it uses them
# (``grants_noted``): the pipeline puts them in the call's own audit record, which is durable
# before anything is released (the approval records go through a background sink).
_released_under: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "labelgate_released_under", default=None
)


@contextlib.contextmanager
def grants_noted() -> Iterator[list[tuple[str, str]]]:
    """A list that holds (grant id, approval id) of each grant the call is released under, once
    ``note_grants_used`` is called within this block (in the same task)."""
    noted: list[tuple[str, str]] = []
    token = _released_under.set(noted)
    try:
        yield noted
    finally:
        _released_under.reset(token)


def note_grants_used(grants: list[tuple[str, str]]) -> None:
    """(grant id, approval id) of every grant used together to release the current call."""
    noted = _released_under.get()
    if noted is not None:
        noted[:] = grants


class ApprovalStage(Protocol):
    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        """Wait for the approval the decision asks for; return the decision to enforce.

        On a grant, ``reevaluate`` asks policy again with ``approval.state = granted``.
        Denied or expired: return a decision that does not allow.
        """
        ...


class RefuseUntilApproved:
    """No approval service: the call is refused with the policy's reason (APPROVAL_REQUIRED)."""

    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        return decision
