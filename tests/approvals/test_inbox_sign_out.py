"""Signing out of the inbox ends the session on the server, not only in the browser.

Review finding (THREAT-MODEL 2E, left): sign-out deleted the cookie in the browser and nothing
else, so a copy taken before it (a shared machine, a proxy log, a stolen browser profile) still
showed held requests and granted them until the session's end. Now the session's id is recorded
as signed out in the approval store every gateway shares: a copied cookie is refused for
viewing and for voting, on the gateway that signed it out and on another one over the same
store; a store that cannot say accepts no session; the records go once the session has ended.
The real admin app, in process, over real services on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import httpx

from labelgate.admin.app import build_admin_app
from labelgate.admin.bridge import BridgedApprovalService, LoopBridge
from labelgate.approvals import reasons
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.model import State
from labelgate.approvals.service import SIGNED_OUT_KEPT_PAST_END_SECONDS, ApprovalService
from labelgate.auth import Authenticator
from labelgate.auth.settings import AuthSettings, JwtSettings
from tests.approvals.conftest import token
from tests.approvals.test_service import Clock, draft, new_database  # noqa: F401 - a fixture

KEY = b"sign-out-test-key-0123456789abcdef"  # shared by the gateways behind one inbox URL
OLIVIA = token("olivia", "data-owners")


async def ready() -> dict[str, bool]:
    return {"ok": True}


@contextlib.asynccontextmanager
async def gateway(
    store: Callable, *, bridged: bool = False, clock: Clock | None = None
) -> AsyncIterator[tuple[ApprovalService, httpx.AsyncClient]]:
    """One gateway's approval service (its own connection to the shared store) and admin app;
    ``bridged``: the app reaches the service as the gateway's admin listener does."""
    service = ApprovalService(
        store(), node_id="n", link_base="http://inbox.test", **({"clock": clock} if clock else {})
    )
    await service.start(sweep=False)
    authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
    await authenticator.start()
    seen = BridgedApprovalService(service, LoopBridge(asyncio.get_running_loop())) if bridged else service
    app = build_admin_app(ready, ApprovalsContext(seen, authenticator, session_key=KEY))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9090") as client:
            yield service, client
    finally:
        await service.close()
        await authenticator.close()


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} field in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient) -> tuple[str, str]:
    """Sign in; the session cookie and the CSRF token of its pages, as someone copying them would."""
    page = await client.get("/inbox")
    answer = await client.post(
        "/inbox/signin", data={"csrf": hidden(page.text, "csrf"), "next": "/inbox", "token": OLIVIA}
    )
    assert answer.status_code == 303, answer.text
    inbox = await client.get("/inbox")
    assert "Sign out" in inbox.text
    return client.cookies["labelgate_session"], hidden(inbox.text, "csrf")


async def sign_out(client: httpx.AsyncClient, csrf: str) -> None:
    answer = await client.post("/inbox/signout", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/inbox?flash=signed-out"
    assert 'labelgate_session=""' in answer.headers["set-cookie"]  # and gone from this browser


async def copied_cookie_works(client: httpx.AsyncClient, cookie: str, approval_id: str) -> None:
    client.cookies.clear()
    headers = {"cookie": f"labelgate_session={cookie}"}
    shown = await client.get(f"/inbox/{approval_id}", headers=headers)
    assert shown.status_code == 200 and f"approve-{approval_id}" in shown.text


async def assert_copied_cookie_refused(
    service: ApprovalService, client: httpx.AsyncClient, cookie: str, csrf: str, approval_id: str
) -> None:
    """A cookie copied before the sign-out, with the CSRF token of its pages: it shows
    nothing (the sign-in page, as for an expired session) and grants nothing (401)."""
    client.cookies.clear()
    headers = {"cookie": f"labelgate_session={cookie}"}
    for path in ("/inbox", f"/inbox/{approval_id}"):
        page = await client.get(path, headers=headers)
        assert page.status_code == 200 and "Sign in" in page.text, path
        assert f"approve-{approval_id}" not in page.text and "Sign out" not in page.text, path
    live = await client.get("/inbox/live", headers=headers)
    assert live.status_code == 401 and reasons.SESSION_EXPIRED in live.text
    for verdict in ("approve", "deny"):
        vote = await client.post(
            f"/inbox/{approval_id}/{verdict}", data={"csrf": csrf, "reason": "r"}, headers=headers
        )
        assert vote.status_code == 401 and reasons.SESSION_EXPIRED in vote.text, verdict
    found = await service.get(approval_id)
    assert found is not None and found.state is State.PENDING and found.votes == ()


async def test_a_cookie_copied_before_sign_out_neither_shows_nor_grants_after_it(
    new_database: Callable,  # noqa: F811
) -> None:
    async with gateway(new_database) as (service, client):
        request = await service.open(draft(mode="async"))
        cookie, csrf = await sign_in(client)
        # A sign-out with a wrong CSRF token signs nobody out.
        forged = await client.post("/inbox/signout", data={"csrf": "0" * 64})
        assert forged.status_code == 403 and reasons.CSRF_TOKEN_INVALID in forged.text
        await copied_cookie_works(client, cookie, request.id)

        client.cookies.set("labelgate_session", cookie)
        await sign_out(client, csrf)
        await assert_copied_cookie_refused(service, client, cookie, csrf, request.id)
        # Signing out a signed-out copy again is harmless: it only clears that browser's cookie.
        again = await client.post("/inbox/signout", headers={"cookie": f"labelgate_session={cookie}"})
        assert again.status_code == 303

        # A new sign-in is a new session, not the signed-out one.
        fresh, fresh_csrf = await sign_in(client)
        assert fresh != cookie
        done = await client.post(f"/inbox/{request.id}/approve", data={"csrf": fresh_csrf, "reason": "ok"})
        assert done.status_code == 303 and "flash=granted" in done.headers["location"]


async def test_a_sign_out_on_one_gateway_ends_the_session_on_another(new_database: Callable) -> None:  # noqa: F811
    """Two gateways behind one inbox URL (one session key), each with its own connection to
    the one store; the second reaches its service through the admin listener's bridge."""
    async with (
        gateway(new_database) as (service_a, client_a),
        gateway(new_database, bridged=True) as (service_b, client_b),
    ):
        request = await service_a.open(draft(mode="async"))
        cookie, csrf = await sign_in(client_a)
        await copied_cookie_works(client_b, cookie, request.id)

        client_a.cookies.set("labelgate_session", cookie)
        await sign_out(client_a, csrf)
        await assert_copied_cookie_refused(service_b, client_b, cookie, csrf, request.id)


async def test_signed_out_sessions_are_forgotten_after_the_session_ends(new_database: Callable) -> None:  # noqa: F811
    clock = Clock()
    async with gateway(new_database, clock=clock) as (service, client):
        _, csrf = await sign_in(client)
        await sign_out(client, csrf)
        async with service.db.transaction() as tx:
            (row,) = await tx.fetch("SELECT session_id, ends_at FROM inbox_signed_out_sessions")
        ends_at = float(row["ends_at"])
        assert clock.now < ends_at <= clock.now + 8 * 3600  # the session's own end

        # Kept while the cookie could still be taken as unexpired somewhere (clocks differ) ...
        clock.now = ends_at + SIGNED_OUT_KEPT_PAST_END_SECONDS - 1
        await service.sweep()
        assert await service.session_signed_out(row["session_id"])
        # ... then swept with the other expired rows.
        clock.now = ends_at + SIGNED_OUT_KEPT_PAST_END_SECONDS + 1
        await service.sweep()
        assert not await service.session_signed_out(row["session_id"])
        async with service.db.transaction() as tx:
            assert await tx.fetch("SELECT session_id FROM inbox_signed_out_sessions") == []


async def test_a_store_that_cannot_say_whether_a_session_was_signed_out_accepts_none(
    new_database: Callable,  # noqa: F811
) -> None:
    """Fail closed: the signed-out sessions cannot be read (here their table is gone), so a
    valid session shows and grants nothing: a problem answer (503), never a traceback."""
    async with gateway(new_database) as (service, client):
        request = await service.open(draft(mode="async"))
        _, csrf = await sign_in(client)
        async with service.db.transaction() as tx:
            await tx.execute("DROP TABLE inbox_signed_out_sessions")
        page = await client.get(f"/inbox/{request.id}")
        assert page.status_code == 503 and reasons.APPROVALS_STORE_ERROR in page.text
        assert "text/html" in page.headers["content-type"] and "Sign out" not in page.text
        live = await client.get("/inbox/live")
        assert live.status_code == 503 and reasons.APPROVALS_STORE_ERROR in live.text
        vote = await client.post(f"/inbox/{request.id}/approve", data={"csrf": csrf, "reason": "r"})
        assert vote.status_code == 503
        found = await service.get(request.id)
        assert found is not None and found.votes == ()
