"""A gateway following signed bundles never goes back to an older revision.

Revisions are content hashes: nothing in them says which came first. The builder signs an
ordering (``labelgate_sequence`` in the ``.manifest`` metadata) and the bundle client refuses a
signed revision whose sequence is not above the one in force, so whoever answers the bundle
URL (the server, or anyone on the path when TLS is off) cannot replay a revoked, more
permissive signed policy. Served here by a small in-process HTTP server that hands out
whatever bundle the test puts in front of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from labelgate.bundle.build import MANIFEST, SIGNATURES, Bundle, build_bundle, write_tarball
from labelgate.bundle.signing import Signer
from labelgate.errors import ConfigError
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.source import BundleKey
from tests.bundle.helpers import KeyPair, make_key_pair

REQUEST = {"phase": "request"}


def policy(allow: bool) -> list[tuple[str, bytes]]:
    result = {"allow": allow, "reason": f"allow-{allow}".lower(), "mask": [], "require_approval": None}
    rego = f"package labelgate.decision\n\nresult := {json.dumps({**result, 'cache_ttl_seconds': 0})}\n"
    return [("labelgate/decision/p.rego", rego.encode())]


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return make_key_pair("RS256")


@pytest.fixture(scope="module")
def signer(keys: KeyPair) -> Signer:
    return Signer.from_pem(keys.private_pem, "RS256")


@dataclass
class Served:
    """The bundle the server hands out; ``honour_etag`` off answers 200 even to a matching ETag."""

    bundle: Bundle | None = None
    tarball: bytes = b""
    honour_etag: bool = True
    url: str = ""
    requests: int = 0

    def serve(self, bundle: Bundle) -> None:
        self.bundle, self.tarball = bundle, bundle.tarball


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    state = Served()

    async def handler(request: web.Request) -> web.StreamResponse:
        state.requests += 1
        assert state.bundle is not None
        etag = state.bundle.etag
        if state.honour_etag and request.headers.get("If-None-Match") == etag:
            await asyncio.sleep(0.05)
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=state.tarball, headers={"ETag": etag, "Content-Type": "application/gzip"})

    app = web.Application()
    app.router.add_get("/bundles/labelgate", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def follow() -> AsyncIterator[Callable[..., Any]]:
    started: list[EmbeddedEngine] = []

    async def start(url: str, **kwargs: Any) -> EmbeddedEngine:
        kwargs.setdefault("wait_seconds", 1)
        kwargs.setdefault("start_timeout", 5)
        engine = EmbeddedEngine(bundle=BundleClient(url, retry_min=0.05, retry_max=0.1, **kwargs))
        started.append(engine)
        await engine.start()
        return engine

    yield start
    for engine in started:
        await engine.close()


async def eventually(check: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def allows(engine: EmbeddedEngine) -> bool:
    return (await engine.decide(REQUEST)).allow


def key_of(keys: KeyPair) -> BundleKey:
    return BundleKey(keys.public_pem, keys.algorithm)


async def test_an_older_signed_revision_replayed_is_refused_and_the_newer_keeps_deciding(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    revoked = build_bundle(policy(True), signer)  # signed first: allowed everything
    current = build_bundle(policy(False), signer)  # signed later: denies
    served.serve(current)
    engine = await follow(served.url, key=key_of(keys))
    assert engine.revision == current.revision and not await allows(engine)
    assert engine.bundle is not None
    status = engine.bundle.status

    served.serve(revoked)  # replayed by the server or by anyone answering its URL
    await eventually(lambda: status.refused >= 2, "the replayed revision to be refused (and asked again)")
    assert status.last_error == "BUNDLE_ROLLBACK"
    assert current.revision[:12] in (status.last_error_detail or "")
    assert revoked.revision[:12] in (status.last_error_detail or "")
    assert engine.revision == current.revision and status.revision == current.revision
    assert not await allows(engine)
    assert status.loaded == 1


async def test_a_newer_signed_revision_applies_even_when_its_content_is_an_older_ones(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    first = build_bundle(policy(True), signer)
    served.serve(first)
    engine = await follow(served.url, key=key_of(keys))
    assert await allows(engine)
    assert engine.bundle is not None
    status = engine.bundle.status

    second = build_bundle(policy(False), signer)
    served.serve(second)
    await eventually(lambda: status.revision == second.revision, "the newer revision to apply")
    assert not await allows(engine)

    # Going back to the first content on purpose means publishing it again: signed anew, it is
    # newer than what is in force and applies (the same content hash as `first`).
    reverted = build_bundle(policy(True), signer)
    assert reverted.revision == first.revision
    served.serve(reverted)
    await eventually(lambda: status.revision == reverted.revision, "the re-signed older content to apply")
    assert await allows(engine)
    assert (status.loaded, status.refused) == (3, 0)


async def test_the_revision_in_force_served_with_an_older_sequence_changes_nothing(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    before_restart = build_bundle(policy(False), signer)
    after_restart = build_bundle(policy(False), signer)  # the server restarted: signed again
    served.serve(after_restart)
    engine = await follow(served.url, key=key_of(keys))
    assert engine.bundle is not None
    status = engine.bundle.status

    served.honour_etag = False  # 200 every time, so the bundle is read, not 304'd
    served.serve(before_restart)
    asked = served.requests
    await eventually(lambda: served.requests >= asked + 3, "a few polls of the same revision")
    assert (status.loaded, status.refused, status.last_error) == (1, 0, None)
    assert engine.revision == after_restart.revision


def signed_without_sequence(files: list[tuple[str, bytes]], signer: Signer) -> bytes:
    """What a signer that knows no ordering writes (e.g. ``opa build --signing-key``)."""
    bundle = build_bundle(files, signer)
    members = dict(bundle.files)
    manifest = json.loads(members[MANIFEST])
    manifest.pop("metadata", None)
    members[MANIFEST] = json.dumps(manifest).encode()
    ordered = [(name, content) for name, content in members.items() if name != SIGNATURES]
    return write_tarball([ordered[0], (SIGNATURES, signer.signatures_file(ordered)), *ordered[1:]])


async def test_a_signed_bundle_without_a_sequence_is_refused(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    bundle = build_bundle(policy(False), signer)
    served.bundle, served.tarball = bundle, signed_without_sequence(policy(False), signer)
    with pytest.raises(ConfigError) as refused:
        await follow(served.url, key=key_of(keys), start_timeout=2)
    assert refused.value.reason == "POLICY_BUNDLE_UNAVAILABLE"
    assert "BUNDLE_SEQUENCE_MISSING" in refused.value.message


async def test_without_a_key_any_revision_is_followed_as_before(
    served: Served, follow: Any, signer: Signer
) -> None:
    # Documented: rollback protection needs signing; an unsigned manifest proves no order.
    revoked = build_bundle(policy(True))
    current = build_bundle(policy(False), signer)
    served.serve(current)
    engine = await follow(served.url)
    assert not await allows(engine)
    assert engine.bundle is not None
    served.serve(revoked)
    await eventually(lambda: engine.revision == revoked.revision, "the unsigned revision to apply")
    assert await allows(engine)
