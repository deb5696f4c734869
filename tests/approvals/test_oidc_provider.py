"""Inbox sign-in: how ``OidcSignin`` reaches the identity provider, against a small provider
served by aiohttp on loopback (the whole flow, with a real provider and browser, is in
``test_oidc_signin.py``).

No request follows a redirect (discovery, JWKS, token endpoint), and the endpoints discovery
names must be https, http only on loopback when the issuer itself is http on loopback: the
configured issuer was checked to be https, and a redirect or an http endpoint would fetch the
keys, or send the code and its verifier, in clear.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from labelgate.admin.app import build_admin_app
from labelgate.approvals import reasons, signed
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.oidc import OidcSignin, OidcUnavailable, Pending, endpoint_allowed, seal
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.web import MAX_COOKIE_BYTES, SESSION_FORMAT, open_session
from labelgate.auth import Authenticator
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.config import OidcSettings
from tests.support.http import serving
from tests.support.pki import SigningKey, jwks, rsa_signing_key
from tests.support.procs import free_port

CLIENT_ID = "labelgate-inbox"
NONCE = "nonce-of-this-sign-in"


@pytest.fixture(scope="module")
def provider_key() -> SigningKey:
    return rsa_signing_key("provider-1")


@dataclass
class FakeProvider:
    """Discovery at the usual path, JWKS at /jwks, token endpoint at /token. ``moved`` maps
    one of them ("/discovery", "/jwks", "/token") to the status of a redirect it answers with,
    to the same path under /moved, which serves what the original would have."""

    issuer: str
    key: SigningKey
    moved: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
        }

    # How long the ID tokens it issues last (negative: already expired when issued).
    lifetime: int = 300

    def id_token(self, sub: str = "olivia") -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "iat": now, "exp": now + self.lifetime}
        return self.key.sign({**claims, "nonce": NONCE, "groups": ["data-owners"]})


@contextlib.asynccontextmanager
async def fake_provider(key: SigningKey) -> AsyncIterator[FakeProvider]:
    port = free_port()
    provider = FakeProvider(f"http://127.0.0.1:{port}", key)

    def answer(name: str, body: Callable[[], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            provider.requests.append(request.path)
            status = provider.moved.get(name)
            if status is not None and not request.path.startswith("/moved/"):
                return web.Response(status=status, headers={"location": f"/moved{request.path}"})
            return web.json_response(body())

        return handle

    app = web.Application()
    for prefix in ("", "/moved"):
        app.router.add_get(
            f"{prefix}/.well-known/openid-configuration", answer("/discovery", provider.discovery)
        )
        app.router.add_get(f"{prefix}/jwks", answer("/jwks", lambda: jwks(key)))
        app.router.add_post(f"{prefix}/token", answer("/token", lambda: {"id_token": provider.id_token()}))
    async with serving(app, port):
        yield provider


def signin_for(issuer: str) -> OidcSignin:
    return OidcSignin(OidcSettings(issuer=issuer, client_id=CLIENT_ID))


def pending() -> Pending:
    return Pending(
        state="state-of-this-sign-in",
        nonce=NONCE,
        verifier="v" * 64,
        next_url="/inbox",
        redirect_uri="http://127.0.0.1:9090/inbox/oidc/callback",
        expires_at=time.time() + 60,
    )


async def finish(signin: OidcSignin) -> Any:
    return await signin.finish(pending(), {"state": "state-of-this-sign-in", "code": "the-code"})


async def test_a_sign_in_reaches_the_provider_without_redirects(provider_key: SigningKey) -> None:
    async with fake_provider(provider_key) as provider:
        person = await finish(signin_for(provider.issuer))
    assert person.id == f"jwt:{provider.issuer}#olivia" and person.groups == ("data-owners",)
    assert not any(path.startswith("/moved") for path in provider.requests)


@pytest.mark.parametrize(
    ("moved", "what"),
    [
        ("/discovery", "discovery document"),
        ("/jwks", "JWKS (jwks_uri)"),
        ("/token", "token endpoint"),
    ],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_from_the_provider_is_refused_not_followed(
    provider_key: SigningKey, moved: str, what: str, status: int
) -> None:
    async with fake_provider(provider_key) as provider:
        provider.moved[moved] = status
        with pytest.raises(OidcUnavailable) as caught:
            await finish(signin_for(provider.issuer))
    assert caught.value.reason == reasons.OIDC_PROVIDER_ERROR
    assert caught.value.message == (
        f"the identity provider's {what} answered {status}, a redirect: redirects are not followed"
    )
    # Where the redirect pointed was never asked: no keys from there, no code or verifier sent there.
    assert not any(path.startswith("/moved") for path in provider.requests), provider.requests


@pytest.mark.parametrize("endpoint", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://login.example.com", "http://login.example.com/endpoint"),  # https issuer, http endpoint
        ("https://login.example.com", "http://127.0.0.1:8080/endpoint"),  # even on loopback
        ("http://127.0.0.1:9000", "http://idp.example.com/endpoint"),  # loopback issuer, remote http
    ],
)
async def test_an_http_endpoint_in_discovery_is_refused(
    monkeypatch: pytest.MonkeyPatch, issuer: str, url: str, endpoint: str
) -> None:
    signin = signin_for(issuer)
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        endpoint: url,
    }

    async def discovered(url: str, what: str) -> dict[str, Any]:
        return document

    monkeypatch.setattr(signin, "_get_json", discovered)
    with pytest.raises(OidcUnavailable) as caught:
        await signin.metadata()
    assert caught.value.reason == reasons.OIDC_PROVIDER_ERROR
    assert f"{endpoint} is not https" in caught.value.message


@pytest.mark.parametrize(
    ("url", "issuer", "allowed"),
    [
        ("https://login.example.com/token", "https://login.example.com", True),
        ("https://other.example.com/token", "http://127.0.0.1:9000", True),
        ("http://127.0.0.1:9000/token", "http://127.0.0.1:9000", True),
        ("http://[::1]:9000/token", "http://localhost:9000", True),
        ("http://127.0.0.1:9000/token", "https://login.example.com", False),
        ("http://login.example.com/token", "https://login.example.com", False),
        ("http://127.0.0.2:9000/token", "http://127.0.0.1:9000", False),  # not a loopback name here
        ("https:///token", "https://login.example.com", False),
        ("http://[::1/token", "http://127.0.0.1:9000", False),
    ],
)
def test_which_endpoints_the_inbox_may_use(url: str, issuer: str, allowed: bool) -> None:
    assert endpoint_allowed(url, issuer) is allowed


KEY = b"oidc-session-test-key-0123456789abcdef"


async def _ready() -> dict[str, bool]:
    return {"ok": True}


@contextlib.asynccontextmanager
async def inbox_for(
    provider: FakeProvider, folder: Path
) -> AsyncIterator[tuple[ApprovalsContext, httpx.AsyncClient]]:
    """The real admin app, in process, signing approvers in with ``provider``."""
    service = ApprovalService(
        SqliteDatabase(folder / "approvals.db"), node_id="n", link_base="http://inbox.test"
    )
    await service.start(sweep=False)
    authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
    await authenticator.start()
    ctx = ApprovalsContext(service, authenticator, session_key=KEY, oidc=signin_for(provider.issuer))
    transport = httpx.ASGITransport(app=build_admin_app(_ready, ctx), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9090") as client:
            yield ctx, client
    finally:
        await service.close()
        await authenticator.close()


async def callback(client: httpx.AsyncClient) -> httpx.Response:
    """The provider's redirect back, with the pending sign-in's cookie this browser holds."""
    return await client.get(
        "/inbox/oidc/callback",
        params={"state": "state-of-this-sign-in", "code": "the-code"},
        headers={"cookie": f"labelgate_oidc={seal(KEY, pending())}"},
    )


async def test_an_oidc_session_ends_when_the_id_token_does(provider_key: SigningKey, tmp_path: Path) -> None:
    """Review finding: an OpenID Connect session lasted ``admin.session_max_seconds`` (8 h)
    whatever the ID token's ``exp``, carrying the groups it named all that time. Now it ends
    by the ID token's expiry, as a session opened with a pasted bearer token ends by its."""
    async with fake_provider(provider_key) as provider, inbox_for(provider, tmp_path) as (ctx, client):
        before = int(time.time())
        answer = await callback(client)
        after = int(time.time())
    assert answer.status_code == 200, answer.text
    value = answer.cookies.get("labelgate_session")
    claims = signed.verify(KEY, b"session", SESSION_FORMAT, value, MAX_COOKIE_BYTES)
    assert claims is not None and claims["sub"]["id"] == f"jwt:{provider.issuer}#olivia"
    assert before + provider.lifetime <= claims["exp"] <= after + provider.lifetime
    max_age = int(answer.headers["set-cookie"].partition("Max-Age=")[2].partition(";")[0])
    assert 0 < max_age <= provider.lifetime
    assert open_session(ctx, value, now=claims["exp"] - 1) is not None
    assert open_session(ctx, value, now=claims["exp"]) is None


async def test_an_id_token_already_expired_within_the_leeway_opens_no_session(
    provider_key: SigningKey, tmp_path: Path
) -> None:
    async with fake_provider(provider_key) as provider, inbox_for(provider, tmp_path) as (_, client):
        provider.lifetime = -10  # within the 30 s leeway the ID token is verified with
        answer = await callback(client)
    assert answer.status_code == 401 and reasons.OIDC_ID_TOKEN_INVALID in answer.text
    assert "labelgate_session" not in answer.cookies
