"""The pipeline's clock, moved on by a test: a credential expires when the test says, never
waited for (``still_valid`` reads ``time.time()`` through ``gateway/credential_expiry.py``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labelgate.gateway import credential_expiry


class PipelineClock:
    """The pipeline's ``time`` module, ``ahead`` of the real clock as far as the test says:
    only what the pipeline reads is moved (``still_valid``), not the approval service's clock
    nor the token verifier's."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def moved_clock(monkeypatch: pytest.MonkeyPatch) -> PipelineClock:
    """A ``PipelineClock`` in place of the pipeline's, until ``monkeypatch`` undoes it."""
    clock = PipelineClock()
    monkeypatch.setattr(credential_expiry, "time", clock)
    return clock
