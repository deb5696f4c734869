"""Work started in the background and held until it finishes.

An event loop keeps only weak references to its tasks, so a task nobody holds may vanish
before it runs; and whoever started background work must be able to wait for it when it
stops (records still being written, notifications in flight). One small holder for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``work`` in the background, held until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self, seconds: float) -> set[asyncio.Future[Any]]:
        """Wait, at most ``seconds``, for the work started so far; what is still running."""
        if not self._tasks:
            return set()
        _, late = await asyncio.wait(set(self._tasks), timeout=seconds)
        return late
