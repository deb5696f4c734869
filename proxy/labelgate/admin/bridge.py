"""Calls from the admin web app's event loop into the gateway's.

The admin listener runs on a thread and event loop of its own (``listener.py``), so nothing
sent to it can delay an inference call. What it serves, though, lives on the gateway's loop:
the approval service (its store connections, the ``asyncio.Event`` each held call waits on,
the webhook tasks), the session store, the readiness checks. Those objects are not
thread-safe, so the admin side never touches them directly: ``LoopBridge.call`` submits the
coroutine to the gateway's loop (``asyncio.run_coroutine_threadsafe``) and awaits the result
on the admin loop (``asyncio.wrap_future``). A vote therefore runs exactly where a held call
waits, and wakes it as before.

Only callers that passed authentication reach the bridge (the approvals API checks the
bearer token first, the inbox the session cookie); health and metrics never cross it, and
``/readyz`` crosses it at most once per ``READY_CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
READY_CACHE_SECONDS = 1.0


class LoopBridge:
    """Runs coroutines on ``loop`` (the gateway's) for code on any other loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def call(self, make: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:  # already there (tests, the standalone server's own loop)
            return await make(*args, **kwargs)
        future = asyncio.run_coroutine_threadsafe(make(*args, **kwargs), self.loop)
        # Not cancelled with the admin request: a vote half-applied is worse than one finished.
        return await asyncio.shield(asyncio.wrap_future(future))


class BridgedApprovalService:
    """The approval service as the admin app sees it: every coroutine runs on the service's loop.

    Plain attributes (``admin_groups``, ``link``) are immutable strings and tuples, read directly.
    """

    def __init__(self, service: Any, bridge: LoopBridge) -> None:
        self._service = service
        self._bridge = bridge

    @property
    def admin_groups(self) -> tuple[str, ...]:
        return tuple(self._service.admin_groups)

    @property
    def link_base(self) -> str:
        return str(self._service.link_base)

    def link(self, request_id: str) -> str:
        return str(self._service.link(request_id))

    async def visible_to(self, viewer: Any, states: Sequence[Any] = ()) -> Any:
        if states:
            return await self._bridge.call(self._service.visible_to, viewer, states)
        return await self._bridge.call(self._service.visible_to, viewer)

    async def page(self, viewer: Any, states: Sequence[Any], *, limit: int, cursor: str | None) -> Any:
        return await self._bridge.call(self._service.page, viewer, states, limit=limit, cursor=cursor)

    async def show(self, viewer: Any, request_id: str) -> Any:
        return await self._bridge.call(self._service.show, viewer, request_id)

    async def approve(
        self, approver: Any, request_id: str, reason: str = "", *, session_issued_at: float | None = None
    ) -> Any:
        return await self._bridge.call(
            self._service.approve, approver, request_id, reason, session_issued_at=session_issued_at
        )

    async def deny(
        self, approver: Any, request_id: str, reason: str, *, session_issued_at: float | None = None
    ) -> Any:
        return await self._bridge.call(
            self._service.deny, approver, request_id, reason, session_issued_at=session_issued_at
        )

    async def get(self, request_id: str) -> Any:
        return await self._bridge.call(self._service.get, request_id)

    async def healthy(self) -> bool:
        return await self._bridge.call(self._service.healthy)

    async def sign_out_session(self, subject_id: str, issued_at: float, ends_at: float) -> None:
        await self._bridge.call(self._service.sign_out_session, subject_id, issued_at, ends_at)

    async def session_signed_out(self, subject_id: str, issued_at: float) -> bool:
        return bool(await self._bridge.call(self._service.session_signed_out, subject_id, issued_at))


class BridgedSessionStore:
    """A recording store's read side (the inbox's session pages), run on the gateway's loop."""

    def __init__(self, store: Any, bridge: LoopBridge) -> None:
        self._store = store
        self._bridge = bridge

    async def sessions(self) -> Any:
        return await self._bridge.call(self._store.sessions)

    async def sessions_page(self, limit: int, cursor: str | None = None) -> Any:
        return await self._bridge.call(self._store.sessions_page, limit, cursor)

    async def entries(self, session_id: str) -> Any:
        return await self._bridge.call(self._store.entries, session_id)


def bridged_ready(
    ready: Callable[[], Coroutine[Any, Any, dict[str, bool]]], bridge: LoopBridge
) -> Callable[[], Awaitable[dict[str, bool]]]:
    """``ready`` run on the gateway's loop, its answer reused for ``READY_CACHE_SECONDS``: an
    unauthenticated ``/readyz`` flood costs the gateway one check per second at most."""
    last: list[Any] = [0.0, None]
    lock = asyncio.Lock()  # created lazily on the admin loop (3.10+: not bound at creation)

    async def checked() -> dict[str, bool]:
        async with lock:
            if last[1] is None or time.monotonic() - last[0] >= READY_CACHE_SECONDS:
                last[1] = await bridge.call(ready)
                last[0] = time.monotonic()
            return dict(last[1])

    return checked
