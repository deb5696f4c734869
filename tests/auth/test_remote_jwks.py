"""A JWKS served over HTTP by a real aiohttp server on loopback: start, rotation, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from labelgate.auth import JwtSettings, reasons
from labelgate.auth.jwks import MAX_JWKS_BYTES
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.remote_jwks import RemoteJwks
from labelgate.errors import ConfigError, Unauthenticated
from tests.auth.conftest import AUDIENCE, ISSUER
from tests.support.http import serving
from tests.support.pki import SigningKey, claims, jwks, rsa_signing_key
from tests.support.procs import free_port


@dataclass
class JwksServer:
    url: str
    document: Any
    status: int = 200
    requests: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def jwks_server(document: Any) -> AsyncIterator[JwksServer]:
    port = free_port()
    served = JwksServer(f"http://127.0.0.1:{port}/jwks.json", document)

    async def handle(request: web.Request) -> web.Response:
        served.requests.append(request.path)
        return web.json_response(served.document, status=served.status)

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    async with serving(app, port):
        yield served


@contextlib.asynccontextmanager
async def http_server(
    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> AsyncIterator[str]:
    """A loopback server with the given GET handlers; yields its base URL."""
    port = free_port()
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    async with serving(app, port):
        yield f"http://127.0.0.1:{port}"


def in_two_pieces(body: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that sends ``body`` in two writes with a pause between them, the way a
    network delivers a document larger than one read (the client sees the first piece alone)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 3])
        await asyncio.sleep(0.2)  # not a timing assertion: the pause only splits the body
        await response.write(body[len(body) // 3 :])
        await response.write_eof()
        return response

    return handle


def remote_verifier(url: str) -> JwtVerifier:
    return JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url))


def reason_of(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value.reason


async def test_keys_are_fetched_at_start_and_used_without_network(rsa_key: SigningKey) -> None:
    async with jwks_server(jwks(rsa_key)) as server:
        verifier = remote_verifier(server.url)
        assert (
            reason_of(verifier, rsa_key.sign(claims())) == reasons.TOKEN_KEYS_UNAVAILABLE
        )  # not started yet
        await verifier.start()
        try:
            fetched = len(server.requests)
            for _ in range(5):
                assert verifier.verify(rsa_key.sign(claims())).attributes["key_source"] == "jwks_url"
            assert len(server.requests) == fetched == 1  # verification never fetches
        finally:
            await verifier.close()


async def test_an_unknown_kid_triggers_one_early_refresh_and_rotation_is_picked_up(rsa_key) -> None:
    rotated = rsa_signing_key("rsa-2")
    async with jwks_server(jwks(rsa_key)) as server:
        verifier = remote_verifier(server.url)
        await verifier.start()
        try:
            server.document = jwks(rotated)  # the provider rotates its key
            token = rotated.sign(claims())
            assert reason_of(verifier, token) == reasons.TOKEN_UNKNOWN_KEY  # this call still fails...
            assert verifier.remote is not None and verifier.remote.early_refresh is not None
            assert await verifier.remote.early_refresh  # ...but a refresh is under way
            assert verifier.verify(token).name == "alice"
            # Invented kids can't make the gateway hammer the provider: one refresh per interval.
            requests = len(server.requests)
            for number in range(3):
                reason_of(verifier, rsa_signing_key(f"invented-{number}").sign(claims()))
            assert len(server.requests) == requests
            # The old key is gone with the rotation.
            assert reason_of(verifier, rsa_key.sign(claims())) == reasons.TOKEN_UNKNOWN_KEY
        finally:
            await verifier.close()


async def test_a_failed_refresh_keeps_the_last_good_keys(rsa_key) -> None:
    async with jwks_server(jwks(rsa_key)) as server:
        verifier = remote_verifier(server.url)
        await verifier.start()
        try:
            server.status = 503
            assert verifier.remote is not None and not await verifier.remote.refresh()
            server.status, server.document = 200, {"keys": []}
            assert not await verifier.remote.refresh()  # an empty key set is a failure too
            assert verifier.verify(rsa_key.sign(claims())).name == "alice"
        finally:
            await verifier.close()


@pytest.mark.parametrize(("status", "document"), [(500, {}), (200, {"no": "keys"}), (200, "text")])
async def test_start_fails_loudly_when_the_keys_cannot_be_loaded(status, document) -> None:
    async with jwks_server(document) as server:
        server.status = status
        verifier = remote_verifier(server.url)
        with pytest.raises(ConfigError) as caught:
            await verifier.start()
    assert caught.value.reason == "JWKS_UNAVAILABLE"
    assert server.url in caught.value.message


async def test_start_fails_when_nothing_listens() -> None:
    verifier = remote_verifier(f"http://127.0.0.1:{free_port()}/jwks.json")
    with pytest.raises(ConfigError, match="fetch failed"):
        await verifier.start()


async def test_the_background_refresh_picks_up_new_keys(rsa_key) -> None:
    rotated = rsa_signing_key("rsa-3")
    async with jwks_server(jwks(rsa_key)) as server:
        remote = RemoteJwks(
            server.url,
            algorithms=["RS256"],
            issuer=ISSUER,
            audience=AUDIENCE,
            refresh_seconds=0.01,
            timeout_seconds=5,
        )
        await remote.start()
        try:
            server.document = jwks(rotated)
            for _ in range(500):  # poll for the outcome; the bound only stops a hang
                if remote.index is not None and remote.index.kids() == {"rsa-3"}:
                    break
                await asyncio.sleep(0.01)
            assert remote.index is not None and remote.index.kids() == {"rsa-3"}
        finally:
            await remote.close()
        assert remote.early_refresh is None


async def test_a_jwks_arriving_in_pieces_is_read_to_its_end(rsa_key, ec_key) -> None:
    body = json.dumps(jwks(rsa_key, ec_key)).encode()
    async with http_server({"/jwks.json": in_two_pieces(body)}) as base:
        verifier = remote_verifier(f"{base}/jwks.json")
        await verifier.start()  # one read would cut the body: "response is not JSON"
        try:
            assert verifier.remote is not None and verifier.remote.index is not None
            assert verifier.remote.index.kids() == {"rsa-1", "ec-1"}
            assert verifier.verify(rsa_key.sign(claims())).name == "alice"
        finally:
            await verifier.close()


async def test_a_jwks_over_the_size_bound_is_refused_however_it_arrives() -> None:
    body = b'{"keys": [], "padding": "' + b"x" * MAX_JWKS_BYTES + b'"}'
    async with http_server({"/jwks.json": in_two_pieces(body)}) as base:
        verifier = remote_verifier(f"{base}/jwks.json")
        with pytest.raises(ConfigError, match=f"response larger than {MAX_JWKS_BYTES} bytes"):
            await verifier.start()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_refused_not_followed(rsa_key, status: int) -> None:
    """jwks_url is checked to be https (http only on loopback); a redirect could lead anywhere,
    https -> http included, so the keys it leads to are never fetched."""
    followed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"location": "/elsewhere.json"})

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response(jwks(rsa_key))

    async with http_server({"/jwks.json": moved, "/elsewhere.json": elsewhere}) as base:
        verifier = remote_verifier(f"{base}/jwks.json")
        with pytest.raises(ConfigError) as caught:
            await verifier.start()
    assert caught.value.reason == "JWKS_UNAVAILABLE"
    assert f"HTTP {status}" in caught.value.message
    assert "redirects are not followed" in caught.value.message
    assert followed == []
