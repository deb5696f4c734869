"""The one retry policy: capped exponential backoff with jitter, built on tenacity.

Every component that calls another over the network and may try again uses it: approval
webhooks (``approvals/notify.py``), the audit export forwarder (``audit/export/forwarder.py``),
the bundle client (``policy/bundle_client.py``) and OPA over HTTP (``policy/opa.py``). Each
has a ``retry:`` setting of this one model; what differs is only what counts as worth
retrying (the caller says, by the exception type it raises) and the hard limit around it:

- a limit on attempts (``max_attempts``; a component that must never drop work, such as the
  forwarder, asks for ``forever``),
- a deadline: no attempt starts and no sleep runs past it (an OPA decision has one; its
  retry never outlives it),
- a stop signal (a process shutting down stops sleeping at once).

Jitter: each wait is ``min(max_seconds, initial_seconds * 2**n + uniform(0, jitter_seconds))``
so clients that failed together do not come back together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

Sleep = Callable[[float], Awaitable[None]]


class RetrySettings(BaseModel):
    """``retry:`` of one component: how often and how far apart it tries again."""

    model_config = ConfigDict(extra="forbid")

    # Attempts in all, the first one included (1: never retry).
    max_attempts: int = Field(5, ge=1, le=1000)
    initial_seconds: float = Field(0.5, gt=0, le=600)
    max_seconds: float = Field(30.0, gt=0, le=3600)
    jitter_seconds: float = Field(0.5, ge=0, le=600)

    @model_validator(mode="after")
    def _initial_within_max(self) -> RetrySettings:
        if self.initial_seconds > self.max_seconds:
            raise ValueError("retry.initial_seconds is larger than retry.max_seconds")
        return self


class _StopAt(stop_base):
    """Stop when the next wait would end past ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        upcoming = retry_state.upcoming_sleep or 0.0
        return time.monotonic() + upcoming >= self.deadline


class _StopWhen(stop_base):
    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.stopping = stopping

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.stopping()


def policy(
    settings: RetrySettings,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    *,
    forever: bool = False,
    deadline: float | None = None,
    stopping: Callable[[], bool] | None = None,
    sleep: Sleep = asyncio.sleep,
    before_sleep: Callable[[RetryCallState], Any] | None = None,
) -> AsyncRetrying:
    """An async retrying loop: ``await policy(...)(function, *args)``.

    Only ``retry_on`` exceptions are retried; anything else, and the last failure when the
    limits are reached, is raised as is (``reraise``), so callers handle one error type.
    """
    stop: stop_base = stop_never if forever else stop_after_attempt(settings.max_attempts)
    if deadline is not None:
        stop = stop | _StopAt(deadline)
    if stopping is not None:
        stop = stop | _StopWhen(stopping)
    return AsyncRetrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=settings.initial_seconds, max=settings.max_seconds, jitter=settings.jitter_seconds
        ),
        retry=retry_if_exception_type(retry_on),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
