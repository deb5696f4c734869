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
import contextlib
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from labelgate.bundle.build import MANIFEST, SIGNATURES, Bundle, build_bundle, write_tarball
from labelgate.bundle.signing import Signer
from labelgate.errors import ConfigError, InvalidInput
from labelgate.policy import bundle_client, bundle_mark
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.bundle_mark import BundleMark, read_mark
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
    async with serving() as state:
        yield state


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Served]:
    """A bundle server on loopback handing out what the test puts in front of it."""
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


# How long a start that refuses every revision waits before it gives up, naming the last
# refusal: long enough for a first attempt on a loaded machine (2 s once was not, in a run
# beside other work), and waited in full by each test that expects the refusal.
REFUSING_START = 8


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


async def test_the_revision_in_force_signed_again_later_raises_the_floor(
    served: Served, follow: Any, keys: KeyPair, signer: Signer, tmp_path: Path
) -> None:
    """A revert (review, eighth round): N is in force, M is published while this gateway is
    cut off, then M is reverted: N's content signed again with a sequence above M's. The
    gateway, still on N, must then refuse M replayed to it, and so must it after a restart."""
    state_file = tmp_path / "state" / "bundle.json"
    in_force = build_bundle(policy(False), signer)
    revoked = build_bundle(policy(True), signer)  # published while the gateway was cut off
    reverted = build_bundle(policy(False), signer)
    assert reverted.revision == in_force.revision
    assert (in_force.sequence or 0) < (revoked.sequence or 0) < (reverted.sequence or 0)
    served.serve(in_force)
    engine = await follow(served.url, key=key_of(keys), state_file=state_file)
    assert engine.bundle is not None
    status = engine.bundle.status

    served.honour_etag = False  # the re-signed bundle may carry the same ETag: read it, not 304
    served.serve(reverted)
    await eventually(lambda: status.sequence == reverted.sequence, "the re-signed revision's sequence")
    await eventually(
        lambda: read_mark(state_file) == BundleMark(reverted.revision, reverted.sequence or -1),
        "the re-signed revision's mark",
    )
    refused = status.refused
    served.serve(revoked)  # replayed by anyone answering the bundle URL
    await eventually(lambda: status.refused > refused, "the revoked revision to be refused")
    assert status.last_error == "BUNDLE_ROLLBACK"
    assert engine.revision == in_force.revision and not await allows(engine)
    assert status.loaded == 1  # the re-signed revision changed no decision


async def test_two_signings_of_the_revision_in_force_are_not_fetched_in_a_loop(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    """Two bundle servers behind one URL sign the same revision with their own sequences, so
    neither's ETag matches what the other answered (review of the revert fix: 5,861 downloads
    in 20 s). A 200 that changes nothing is followed by a pause of retry_max."""
    first, second = build_bundle(policy(False), signer), build_bundle(policy(False), signer)
    assert first.revision == second.revision and first.etag != second.etag
    served.serve(second)
    engine = EmbeddedEngine(
        bundle=BundleClient(served.url, key=key_of(keys), retry_min=0.05, retry_max=0.5, wait_seconds=1)
    )
    await engine.start()
    assert engine.bundle is not None
    status = engine.bundle.status
    served.honour_etag = False  # each answer a 200, as from the other server
    served.serve(first)
    asked = served.requests
    await asyncio.sleep(1.6)
    # Without the pause: a request every few milliseconds. With it: one per 0.5 s at most.
    assert served.requests - asked <= 5
    assert (status.loaded, status.refused, status.sequence) == (1, 0, second.sequence)
    await engine.close()


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
        await follow(served.url, key=key_of(keys), start_timeout=REFUSING_START)
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


async def test_a_restart_with_a_state_file_still_refuses_an_older_signed_revision(
    served: Served, follow: Any, keys: KeyPair, signer: Signer, tmp_path: Path
) -> None:
    state_file = tmp_path / "state" / "bundle.json"
    revoked = build_bundle(policy(True), signer)
    current = build_bundle(policy(False), signer)
    served.serve(current)
    first = await follow(served.url, key=key_of(keys), state_file=state_file)
    assert not await allows(first)
    await first.close()
    assert read_mark(state_file) == BundleMark(current.revision, current.sequence or -1)

    # The gateway restarts while whoever answers the bundle URL replays the revoked revision.
    served.serve(revoked)
    with pytest.raises(ConfigError) as refused:
        await follow(served.url, key=key_of(keys), state_file=state_file, start_timeout=REFUSING_START)
    assert refused.value.reason == "POLICY_BUNDLE_UNAVAILABLE"
    assert "BUNDLE_ROLLBACK" in refused.value.message
    assert "applied before this start" in refused.value.message

    # The revision in force before the restart is taken again, and newer ones after it.
    served.serve(current)
    restarted = await follow(served.url, key=key_of(keys), state_file=state_file)
    assert restarted.revision == current.revision and not await allows(restarted)
    newer = build_bundle(policy(True), signer)
    served.serve(newer)
    await eventually(lambda: restarted.revision == newer.revision, "the newer revision to apply")
    # The mark is written (in a worker thread) once the revision is in force, not before.
    newer_mark = BundleMark(newer.revision, newer.sequence or -1)
    await eventually(lambda: read_mark(state_file) == newer_mark, "the newer revision's mark")


async def test_without_a_state_file_a_restart_takes_the_first_signed_revision_served(
    served: Served, follow: Any, keys: KeyPair, signer: Signer
) -> None:
    # Documented limit (docs/THREAT-MODEL.md 1e): the order is then kept in memory only.
    revoked = build_bundle(policy(True), signer)
    current = build_bundle(policy(False), signer)
    served.serve(current)
    await (await follow(served.url, key=key_of(keys))).close()
    served.serve(revoked)
    restarted = await follow(served.url, key=key_of(keys))
    assert restarted.revision == revoked.revision and await allows(restarted)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"revision": "abc"}', "sequence"),
        (b'{"revision": "abc", "sequence": "12"}', "sequence"),
        (b'{"revision": "abc", "sequence": 1.5}', "sequence"),
        (b'{"revision": "abc", "sequence": true}', "sequence"),
        (b'{"revision": "abc", "sequence": -1}', "sequence"),
        (b'{"sequence": 3}', "no revision"),
        (b"[1, 2]", "no revision"),
        (b" " * 5000, "over 4096 bytes"),
    ],
)
def test_a_state_file_that_cannot_be_read_stops_the_start(
    tmp_path: Path, keys: KeyPair, content: bytes, why: str
) -> None:
    state_file = tmp_path / "bundle.json"
    state_file.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        BundleClient("http://127.0.0.1:1", key=key_of(keys), state_file=state_file)
    assert refused.value.reason == "BUNDLE_STATE_INVALID"
    assert why in refused.value.message and str(state_file) in refused.value.message


def test_a_state_file_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        BundleClient("http://127.0.0.1:1", state_file=tmp_path / "bundle.json")
    assert refused.value.reason == "BUNDLE_CLIENT_CONFIG_INVALID"


async def test_a_state_file_that_cannot_be_written_keeps_the_revision_and_says_so(
    served: Served, follow: Any, keys: KeyPair, signer: Signer, tmp_path: Path
) -> None:
    folder = tmp_path / "state"
    served.serve(build_bundle(policy(False), signer))
    engine = await follow(served.url, key=key_of(keys), state_file=folder / "bundle.json")
    assert engine.bundle is not None
    status = engine.bundle.status
    shutil.rmtree(folder)
    folder.write_text("a file where the state folder was")  # so the next write fails, as root too

    newer = build_bundle(policy(True), signer)
    served.serve(newer)
    await eventually(lambda: status.revision == newer.revision, "the newer revision to apply")
    assert engine.revision == newer.revision and await allows(engine)
    assert status.last_error == "BUNDLE_STATE_UNWRITTEN" and str(folder) in (status.last_error_detail or "")


def tagged(allow: bool, tag: int) -> list[tuple[str, bytes]]:
    """``policy(allow)`` with a module of its own, so equal policies are distinct revisions."""
    return [*policy(allow), ("labelgate/tag/t.rego", f"package labelgate.tag\n\ntag := {tag}\n".encode())]


async def test_workers_sharing_a_state_file_never_go_below_the_shared_mark(
    follow: Any, keys: KeyPair, signer: Signer, tmp_path: Path
) -> None:
    # Two workers of one `serve` share the state file. Worker A applies R1, R2, R3 (R3 revokes
    # R2): the mark says R3. Worker B applied R1 and missed R2 and R3; R2 replayed to it was
    # taken (found by review: B compared with its own floor only), though A had replaced it.
    state_file = tmp_path / "state" / "bundle.json"
    r1 = build_bundle(tagged(False, 1), signer)
    r2 = build_bundle(tagged(True, 2), signer)  # later revoked
    r3 = build_bundle(tagged(False, 3), signer)
    async with serving() as served_a, serving() as served_b:
        served_a.serve(r1)
        served_b.serve(r1)
        worker_a = await follow(served_a.url, key=key_of(keys), state_file=state_file)
        worker_b = await follow(served_b.url, key=key_of(keys), state_file=state_file)
        assert worker_a.bundle is not None and worker_b.bundle is not None
        status_a, status_b = worker_a.bundle.status, worker_b.bundle.status
        served_a.serve(r2)
        await eventually(lambda: status_a.revision == r2.revision, "worker A to apply R2")
        served_a.serve(r3)
        await eventually(lambda: status_a.revision == r3.revision, "worker A to apply R3")
        assert read_mark(state_file) == BundleMark(r3.revision, r3.sequence or -1)

        served_b.serve(r2)  # replayed to the worker that missed R2 and R3
        await eventually(
            lambda: status_b.refused >= 2, "the replayed revision to be refused (and asked again)"
        )
        assert status_b.last_error == "BUNDLE_ROLLBACK"
        detail = status_b.last_error_detail or ""
        assert r2.revision[:12] in detail and r3.revision[:12] in detail and str(state_file) in detail
        assert worker_b.revision == r1.revision and not await allows(worker_b)  # lags, never below

        served_b.serve(r3)  # catching up to the mark is taken, and newer ones after it
        await eventually(lambda: status_b.revision == r3.revision, "worker B to catch up to R3")
        r4 = build_bundle(tagged(True, 4), signer)
        served_b.serve(r4)
        await eventually(lambda: status_b.revision == r4.revision, "worker B to apply R4")
        assert await allows(worker_b)
        assert read_mark(state_file) == BundleMark(r4.revision, r4.sequence or -1)


async def test_the_highest_shared_mark_read_stays_the_floor_when_the_file_goes(
    keys: KeyPair, signer: Signer, tmp_path: Path
) -> None:
    state_file = tmp_path / "bundle.json"
    r1, r2, r3 = (build_bundle(tagged(allow, n), signer) for n, allow in ((1, False), (2, True), (3, False)))
    worker_a = BundleClient("http://127.0.0.1:1", key=key_of(keys), state_file=state_file)
    worker_b = BundleClient("http://127.0.0.1:1", key=key_of(keys), state_file=state_file)
    applied: list[str] = []

    async def apply(source: Any) -> bool:
        applied.append(source.revision)
        return True

    await worker_a._apply(r1.tarball, apply)
    await worker_b._apply(r1.tarball, apply)
    await worker_a._apply(r2.tarball, apply)
    await worker_a._apply(r3.tarball, apply)
    for _ in range(2):
        with pytest.raises(InvalidInput) as refused:
            await worker_b._apply(r2.tarball, apply)
        assert refused.value.reason == "BUNDLE_ROLLBACK"
        state_file.unlink(missing_ok=True)  # the mark B read stays its floor
    assert applied == [r1.revision, r1.revision, r2.revision, r3.revision]
    assert worker_b.status.revision == r1.revision


async def test_a_revision_is_reported_in_force_only_once_its_mark_is_on_disk(
    keys: KeyPair, signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another worker reading the state file while this one reports R2 in force must not find
    # R1 there (CI saw the status run ahead of the file). The write is held on an event.
    state_file = tmp_path / "bundle.json"
    r1, r2 = (build_bundle(tagged(allow, n), signer) for n, allow in ((1, False), (2, True)))
    client = BundleClient("http://127.0.0.1:1", key=key_of(keys), state_file=state_file)

    async def apply(source: Any) -> bool:
        return True

    await client._apply(r1.tarball, apply)
    writing, release = threading.Event(), threading.Event()

    def held_write(path: Path, mark: BundleMark) -> None:
        writing.set()
        release.wait(10)
        bundle_mark.write_mark(path, mark)

    monkeypatch.setattr(bundle_client, "write_mark", held_write)
    applying = asyncio.create_task(client._apply(r2.tarball, apply))
    assert await asyncio.to_thread(writing.wait, 10)
    assert client.status.revision == r1.revision  # not reported while the file still says R1
    release.set()
    await applying
    assert client.status.revision == r2.revision
    assert read_mark(state_file) == BundleMark(r2.revision, r2.sequence or -1)
