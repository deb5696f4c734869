"""The current call's deadline, as the gateway keeps it: set per call by
``approvals.deadline.DeadlineInterceptor`` (gRPC consumes ``grpc-timeout`` itself; only the
servicer context knows the time left), read by what must not outlive it (the approval hold)
and by what records how a call ended (``calls``: a call cancelled past its deadline is
recorded ``DEADLINE_EXCEEDED``). A context variable: the handler's task, and everything it
awaits, sees its own call's."""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("labelgate_deadline", default=None)
# Whether a reply sent past the deadline is dropped: gRPC's is (its caller already has
# DEADLINE_EXCEEDED); a REST reply past its ``timeout`` parameter still reaches its caller.
_late_reply_dropped: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "labelgate_late_reply_dropped", default=False
)


def seconds_left(now: float | None = None) -> float | None:
    """Seconds until the current call's deadline; None when the caller set none."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline - (time.time() if now is None else now)


def set_deadline(
    seconds: float | None, *, late_reply_dropped: bool = False
) -> contextvars.Token[float | None]:
    """``late_reply_dropped``: the transport drops a reply sent past the deadline (gRPC)."""
    _late_reply_dropped.set(late_reply_dropped)
    return _deadline.set(None if seconds is None else time.time() + seconds)


def reply_too_late() -> bool:
    """Whether a reply released now would never reach its caller: the transport drops a reply
    past the caller's deadline, and that deadline has passed."""
    if not _late_reply_dropped.get():
        return False
    left = seconds_left()
    return left is not None and left <= 0


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    """Put back what ``set_deadline`` replaced."""
    _deadline.reset(token)
