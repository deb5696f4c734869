"""BackgroundTasks holds work until it is done and lets its owner wait for it."""

from __future__ import annotations

import asyncio

from labelgate.background import BackgroundTasks


async def test_work_is_held_until_done_and_waited_for() -> None:
    tasks = BackgroundTasks()
    release = asyncio.Event()
    done: list[str] = []

    async def work(name: str) -> None:
        await release.wait()
        done.append(name)

    tasks.start(work("a"))
    tasks.start(work("b"))
    assert len(tasks) == 2
    late = await tasks.wait(0)
    assert len(late) == 2 and not done, "nothing finished yet: both are still running"
    asyncio.get_running_loop().call_soon(release.set)
    assert await tasks.wait(10) == set()
    assert sorted(done) == ["a", "b"] and len(tasks) == 0


async def test_waiting_with_nothing_started_returns_at_once() -> None:
    assert await BackgroundTasks().wait(10) == set()
