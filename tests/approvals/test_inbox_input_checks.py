"""What the inbox takes from a browser before it trusts it: CSRF values and approval ids.

A CSRF value (or an OIDC ``state``) that is not ASCII is a wrong one (403), not a crash: it
is compared as bytes. The request page takes only approval ids: anything else (a NUL, which
PostgreSQL refuses in text) is not found, never a store failure. The real admin app, in
process, over a real service on both stores.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from labelgate.admin.app import build_admin_app
from labelgate.approvals import reasons
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.oidc import OidcSignin
from labelgate.approvals.service import ApprovalService
from labelgate.auth import Authenticator
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.config import OidcSettings
from labelgate.errors import PermissionDenied
from tests.approvals.conftest import token
from tests.approvals.test_oidc_provider import pending
from tests.approvals.test_service import draft, new_database  # noqa: F401 - a fixture

NON_ASCII = "\u00e9"  # what the form's %C3%A9 decodes to


async def ready() -> dict[str, bool]:
    return {"ok": True}


@contextlib.asynccontextmanager
async def inbox(store: Callable) -> AsyncIterator[tuple[ApprovalService, httpx.AsyncClient]]:
    service = ApprovalService(store(), node_id="n", link_base="http://inbox.test")
    await service.start(sweep=False)
    authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
    await authenticator.start()
    app = build_admin_app(ready, ApprovalsContext(service, authenticator, session_key=b"k" * 32))
    # Errors answered as the server would (a crash is a 500, not an exception in the test).
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


async def sign_in(client: httpx.AsyncClient, bearer: str) -> None:
    page = await client.get("/inbox")
    answer = await client.post(
        "/inbox/signin", data={"csrf": hidden(page.text, "csrf"), "next": "/inbox", "token": bearer}
    )
    assert answer.status_code == 303, answer.text


@pytest.mark.parametrize("new_database", ["sqlite"], indirect=True)
async def test_a_non_ascii_csrf_value_is_a_wrong_one_not_a_crash(new_database: Callable) -> None:  # noqa: F811
    async with inbox(new_database) as (service, client):
        request = await service.open(draft(mode="async"))
        await client.get("/inbox")  # the sign-in form's cookie
        signin = await client.post("/inbox/signin", data={"csrf": NON_ASCII, "token": "x"})
        assert signin.status_code == 403 and "sign-in form expired" in signin.text
        await sign_in(client, token("olivia", "data-owners"))
        for path in (f"/inbox/{request.id}/approve", f"/inbox/{request.id}/deny", "/inbox/signout"):
            answer = await client.post(path, data={"csrf": NON_ASCII, "reason": "r"})
            assert answer.status_code == 403 and reasons.CSRF_TOKEN_INVALID in answer.text, path
        assert (await service.get(request.id)).votes == ()


async def test_a_non_ascii_oidc_state_is_a_mismatch_not_a_crash() -> None:
    signin = OidcSignin(OidcSettings(issuer="https://idp.example", client_id="inbox"))
    with pytest.raises(PermissionDenied) as refused:
        await signin.finish(pending(), {"state": NON_ASCII, "code": "x"})
    assert refused.value.reason == reasons.OIDC_STATE_MISMATCH


async def test_the_request_page_takes_only_approval_ids(new_database: Callable) -> None:  # noqa: F811
    async with inbox(new_database) as (service, client):
        request = await service.open(draft(mode="async"))
        await sign_in(client, token("olivia", "data-owners"))
        assert (await client.get(f"/inbox/{request.id}")).status_code == 200
        for path in ("/inbox/%00", f"/inbox/{request.id}%00", f"/inbox/{request.id}%0A", "/inbox/apr-x"):
            answer = await client.get(path)
            assert answer.status_code == 404 and reasons.APPROVAL_NOT_FOUND in answer.text, path
