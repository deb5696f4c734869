"""Signing out of the inbox ends the session on the server, not only in the browser.

Review finding (THREAT-MODEL 2E, left): sign-out deleted the cookie in the browser and nothing
else, so a copy taken before it (a shared machine, a proxy log, a stolen browser profile) still
showed held requests and granted them until the session's end. Now the sign-out is recorded in
the approval store every gateway shares, as one row per subject: its sessions issued at or
before the signed-out one (``iat``) are refused for viewing and for voting, on the gateway that
signed it out and on another one over the same store, while sessions signed in later keep
working; a vote whose form arrives after the sign-out is refused too; a store that cannot say
accepts no session; the row goes once those sessions have ended, an hour later still (clocks of
gateways differ). Review of that fix: a row per session let anyone fill the store by signing in
and out in a loop; a vote already past the session check was counted after a sign-out; a
sweeper whose clock ran 5 minutes ahead let a signed-out cookie back in.
The real admin app, in process, over real services on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import httpx

from labelgate.admin.app import build_admin_app
from labelgate.admin.bridge import BridgedApprovalService, LoopBridge
from labelgate.approvals import reasons, signed
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.model import State
from labelgate.approvals.service import SIGNED_OUT_KEPT_PAST_END_SECONDS, ApprovalService
from labelgate.approvals.web import SESSION_FORMAT, csrf_token
from labelgate.auth import Authenticator
from labelgate.auth.settings import AuthSettings, JwtSettings
from tests.approvals.conftest import token
from tests.approvals.test_inbox_input_checks import hidden
from tests.approvals.test_service import Clock, draft, new_database  # noqa: F401 - a fixture

KEY = b"sign-out-test-key-0123456789abcdef"  # shared by the gateways behind one inbox URL


async def ready() -> dict[str, bool]:
    return {"ok": True}


@contextlib.asynccontextmanager
async def gateway(
    store: Callable,
    *,
    bridged: bool = False,
    clock: Callable[[], float] | None = None,
    session_max_seconds: int = 8 * 3600,
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
    context = ApprovalsContext(
        seen,  # type: ignore[arg-type]
        authenticator,
        session_key=KEY,
        session_max_seconds=session_max_seconds,
    )
    app = build_admin_app(ready, context)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9090") as client:
            yield service, client
    finally:
        await service.close()
        await authenticator.close()


async def sign_in(client: httpx.AsyncClient) -> tuple[str, str]:
    """Sign in; the session cookie and the CSRF token of its pages, as someone copying them would."""
    page = await client.get("/inbox")
    # Minted when it is sent: one minted at import lapsed (15 minutes) before a long run got here.
    olivia = token("olivia", "data-owners")
    answer = await client.post(
        "/inbox/signin", data={"csrf": hidden(page.text, "csrf"), "next": "/inbox", "token": olivia}
    )
    assert answer.status_code == 303, answer.text
    inbox = await client.get("/inbox")
    assert "Sign out" in inbox.text
    return client.cookies["labelgate_session"], hidden(inbox.text, "csrf")


def claims(cookie: str) -> dict[str, Any]:
    found = signed.verify(KEY, b"session", SESSION_FORMAT, cookie, 8192)
    assert found is not None
    return found


async def signed_out_rows(service: ApprovalService) -> list[dict[str, Any]]:
    async with service.db.transaction() as tx:
        return await tx.fetch("SELECT * FROM inbox_signed_out_sessions")


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
        cookie, csrf = await sign_in(client)
        await sign_out(client, csrf)
        (row,) = await signed_out_rows(service)
        issued_at = claims(cookie)["iat"]
        subject, ends_at = row["subject_id"], float(row["ends_at"])
        assert subject == claims(cookie)["sub"]["id"] and float(row["signed_out_through"]) == issued_at
        # The end of the last session it ended: none outlives its issue + session_max_seconds.
        assert ends_at == issued_at + 8 * 3600

        # Kept while the cookie could still be taken as unexpired somewhere (clocks differ) ...
        clock.now = ends_at + SIGNED_OUT_KEPT_PAST_END_SECONDS - 1
        await service.sweep()
        assert await service.session_signed_out(subject, issued_at)
        # ... then swept with the other expired rows.
        clock.now = ends_at + SIGNED_OUT_KEPT_PAST_END_SECONDS + 1
        await service.sweep()
        assert not await service.session_signed_out(subject, issued_at)
        assert await signed_out_rows(service) == []


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


async def test_a_vote_whose_form_arrives_after_the_sign_out_is_refused(new_database: Callable) -> None:  # noqa: F811
    """The vote passes the session check with its headers, then its body is held back until
    the sign-out has committed (a slow link, a stalled upload): it is refused (401) and counts
    for nothing. Through the admin listener's bridge, as the gateway runs it."""
    async with gateway(new_database, bridged=True) as (service, client):
        request = await service.open(draft(mode="async"))
        cookie, csrf = await sign_in(client)
        client.cookies.clear()
        headers = {"cookie": f"labelgate_session={cookie}"}
        body = urlencode({"csrf": csrf, "reason": "sent late"}).encode()
        reading, signed_out = asyncio.Event(), asyncio.Event()

        async def slow_form() -> AsyncIterator[bytes]:
            reading.set()  # the inbox reads the body: the session was checked already
            await signed_out.wait()
            yield body

        # A declared length (the admin listener takes no chunked body), the bytes held back.
        form = {
            **headers,
            "content-type": "application/x-www-form-urlencoded",
            "content-length": str(len(body)),
        }
        vote = asyncio.create_task(
            client.post(f"/inbox/{request.id}/approve", content=slow_form(), headers=form)
        )
        read = asyncio.create_task(reading.wait())
        await asyncio.wait([vote, read], return_when=asyncio.FIRST_COMPLETED)
        assert read.done() and not vote.done(), vote.result().text if vote.done() else ""
        answer = await client.post("/inbox/signout", data={"csrf": csrf}, headers=headers)
        assert answer.status_code == 303
        signed_out.set()
        late = await vote
        assert late.status_code == 401 and reasons.SESSION_EXPIRED in late.text
        found = await service.get(request.id)
        assert found is not None and found.state is State.PENDING and found.votes == ()


async def test_signing_in_and_out_again_and_again_keeps_one_row_per_subject(new_database: Callable) -> None:  # noqa: F811
    """Any valid token may sign in and out in a loop: the store keeps one row for its subject
    (the latest session signed out), not one per session."""
    async with gateway(new_database) as (service, client):
        for _ in range(50):
            client.cookies.clear()
            cookie, csrf = await sign_in(client)
            await sign_out(client, csrf)
        (row,) = await signed_out_rows(service)
        assert float(row["signed_out_through"]) == claims(cookie)["iat"]
        assert float(row["ends_at"]) == claims(cookie)["iat"] + 8 * 3600


async def test_signing_out_ends_that_session_and_older_ones_not_later_ones(new_database: Callable) -> None:  # noqa: F811
    """One approver, several browsers: signing out of one ends it and the sessions signed in
    before it, on every gateway; a session signed in after it, before or after the sign-out,
    keeps working."""
    async with (
        gateway(new_database) as (service, client),
        gateway(new_database, bridged=True) as (_, other),
    ):
        request = await service.open(draft(mode="async"))
        sessions = {}
        for name in ("older", "signing-out", "later"):
            client.cookies.clear()
            sessions[name] = await sign_in(client)
        for cookie, _ in sessions.values():
            await copied_cookie_works(other, cookie, request.id)

        cookie, csrf = sessions["signing-out"]
        client.cookies.set("labelgate_session", cookie)
        await sign_out(client, csrf)
        for name in ("older", "signing-out"):
            await assert_copied_cookie_refused(service, other, *sessions[name], request.id)
        await copied_cookie_works(other, sessions["later"][0], request.id)

        client.cookies.clear()
        fresh, fresh_csrf = await sign_in(client)
        await copied_cookie_works(other, fresh, request.id)
        done = await other.post(
            f"/inbox/{request.id}/approve",
            data={"csrf": fresh_csrf, "reason": "ok"},
            headers={"cookie": f"labelgate_session={fresh}"},
        )
        assert done.status_code == 303 and "flash=granted" in done.headers["location"]
        assert len(await signed_out_rows(service)) == 1


async def test_a_cookie_issued_before_iat_is_ended_by_any_sign_out_of_its_subject(
    new_database: Callable,  # noqa: F811
) -> None:
    """A cookie as the previous release issued it (no ``iat``, no ``sid``) works until its
    subject signs out of any session, then counts as issued at 0: refused."""
    async with gateway(new_database) as (service, client):
        request = await service.open(draft(mode="async"))
        cookie, csrf = await sign_in(client)
        issued = claims(cookie)
        legacy = signed.sign(KEY, b"session", SESSION_FORMAT, {"sub": issued["sub"], "exp": issued["exp"]})
        await copied_cookie_works(client, legacy, request.id)

        client.cookies.set("labelgate_session", cookie)
        await sign_out(client, csrf)
        legacy_csrf = csrf_token(SimpleNamespace(session_key=KEY), legacy)  # type: ignore[arg-type]
        await assert_copied_cookie_refused(service, client, legacy, legacy_csrf, request.id)

        # Signing out with such a cookie (its subject never signed out before): it and every
        # other such cookie, all issued before now, are refused until they could all have ended.
        client.cookies.clear()
        async with service.db.transaction() as tx:
            await tx.execute("DELETE FROM inbox_signed_out_sessions")
        await copied_cookie_works(client, legacy, request.id)
        client.cookies.set("labelgate_session", legacy)
        before = time.time()
        await sign_out(client, legacy_csrf)
        (row,) = await signed_out_rows(service)
        assert float(row["signed_out_through"]) == 0 and float(row["ends_at"]) >= before + 8 * 3600
        await assert_copied_cookie_refused(service, client, legacy, legacy_csrf, request.id)


async def test_a_sweeper_whose_clock_runs_ahead_lets_no_signed_out_cookie_back_in(
    new_database: Callable,  # noqa: F811
) -> None:
    """The gateway that sweeps runs 30 minutes ahead of another whose clock is behind: to the
    sweeper the session ended long ago, to the other it is still open (its last two minutes).
    The sign-out is still on record there: the copied cookie stays refused."""
    async with (
        gateway(new_database, clock=lambda: time.time() + 1800) as (sweeper, _),
        gateway(new_database, session_max_seconds=120) as (service, client),
    ):
        cookie, csrf = await sign_in(client)
        assert claims(cookie)["exp"] <= time.time() + 120  # the session ends within two minutes
        await sign_out(client, csrf)
        await sweeper.sweep()
        request = await service.open(draft(mode="async"))  # after the sweep, which would expire it
        await assert_copied_cookie_refused(service, client, cookie, csrf, request.id)
        assert len(await signed_out_rows(service)) == 1
