"""The HTTP contract of the bundle server, in process (the real app, real OPA validation).

OPA's side of the same contract is exercised with real OPA processes in
``test_opa_integration.py``; here every header, status code and problem body is checked.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from labelgate.bundle.access import Credentials
from labelgate.bundle.build import read_tarball
from labelgate.bundle.fleet import FleetStore
from labelgate.bundle.reports import decision_events, status_report
from labelgate.bundle.server import BUNDLE_MEDIA_TYPE, ServerSettings, create_app, etag_matches, prefer_wait
from labelgate.bundle.signing import Signer
from labelgate.errors import ConfigError, InvalidInput
from tests.bundle.helpers import (
    INSTANCE,
    READER_TOKEN,
    TABLES,
    TOKEN,
    make_key_pair,
    set_plain_ttl,
    write_atomically,
)
from tests.support.procs import opa_binary

BUNDLE = "/bundles/labelgate"
JSON = {"Content-Type": "application/json"}


def credentials() -> Credentials:
    creds = Credentials()
    creds.add("instance", INSTANCE, TOKEN)
    creds.add("reader", "auditor", READER_TOKEN)
    return creds


class Served:
    """The app in process; ``client`` acts as the OPA instance ``opa``, ``reader`` as a reader."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, reader: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.reader = reader

    @property
    def revision(self) -> str:
        return self.app.state.publisher.current.revision

    async def wait(self, check: Any, what: str, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)


def server_settings(policy_source: Path, tmp_path: Path, **overrides: Any) -> ServerSettings:
    settings: dict[str, Any] = {
        "source": policy_source,
        "credentials": credentials(),
        "allowed_hosts": ("bundles",),
        "state_dir": tmp_path / "state",
        "opa": opa_binary(),
        "poll_interval": 0.05,
        "max_upload_bytes": 64 * 1024,
        "max_events_per_batch": 100,
    }
    return ServerSettings(**{**settings, **overrides})


@pytest.fixture
async def served(policy_source: Path, tmp_path: Path) -> AsyncIterator[Served]:
    app = create_app(server_settings(policy_source, tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://bundles", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as client,
            httpx.AsyncClient(
                transport=transport,
                base_url="http://bundles",
                headers={"Authorization": f"Bearer {READER_TOKEN}"},
            ) as reader,
        ):
            yield Served(app, client, reader)


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["reason"] == reason and body["detail"]
    return body


async def test_bundle_reply_carries_etag_and_the_long_polling_media_type(served: Served) -> None:
    response = await served.client.get(BUNDLE)
    assert response.status_code == 200
    assert response.headers["etag"] == f'"{served.revision}"'
    assert response.headers["content-type"] == BUNDLE_MEDIA_TYPE
    files = read_tarball(response.content)
    assert json.loads(files[".manifest"])["revision"] == served.revision


async def test_matching_etag_gets_304_with_etag_and_media_type(served: Served) -> None:
    etag = f'"{served.revision}"'
    for header in (etag, f"W/{etag}", f'"older", {etag}', "*"):
        response = await served.client.get(BUNDLE, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        # OPA keeps long polling only while replies carry this type, 304s included.
        assert response.headers["content-type"] == BUNDLE_MEDIA_TYPE
    stale = await served.client.get(BUNDLE, headers={"If-None-Match": '"older"'})
    assert stale.status_code == 200


async def test_long_poll_times_out_with_304(served: Served) -> None:
    started = time.monotonic()
    response = await served.client.get(
        BUNDLE, headers={"If-None-Match": f'"{served.revision}"', "Prefer": "modes=snapshot,delta;wait=1"}
    )
    assert response.status_code == 304
    assert time.monotonic() - started >= 0.9  # it was held, not answered at once


async def test_long_poll_is_answered_by_the_next_revision(served: Served, policy_source: Path) -> None:
    before = served.revision
    poll = asyncio.create_task(
        served.client.get(BUNDLE, headers={"If-None-Match": f'"{before}"', "Prefer": "wait=60"})
    )
    await asyncio.sleep(0.1)
    assert not poll.done()  # held while nothing changed
    set_plain_ttl(policy_source, 61)
    response = await asyncio.wait_for(poll, 30)
    assert response.status_code == 200
    assert response.headers["etag"] != f'"{before}"'
    tables = json.loads(read_tarball(response.content)["labelgate/tables/data.json"])
    assert tables["cache_ttl_seconds"]["plain"] == 61


async def test_a_revert_signed_anew_is_fetched_by_a_client_holding_the_older_signing(
    policy_source: Path, tmp_path: Path
) -> None:
    """A revert publishes the earlier content (its revision) signed with a fresh sequence. A
    client still holding that revision's earlier signing must get the new one, not a 304,
    so that its rollback floor rises past the revision the revert revoked (review, eighth
    round)."""
    keys = make_key_pair("RS256")
    signer = Signer.from_pem(keys.private_pem, "RS256")
    app = create_app(server_settings(policy_source, tmp_path, signer=signer))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bundles", headers=headers
        ) as client:
            served = Served(app, client, client)
            first = await client.get(BUNDLE)
            original, original_etag = served.revision, first.headers["etag"]
            assert original_etag != f'"{original}"'  # signed: the sequence is in the ETag
            tables = policy_source / TABLES
            as_it_was = tables.read_bytes()
            set_plain_ttl(policy_source, 61)
            await served.wait(lambda: served.revision != original, "the edit to be published")
            write_atomically(tables, as_it_was)  # the revert
            await served.wait(lambda: served.revision == original, "the revert to be published")
            response = await client.get(BUNDLE, headers={"If-None-Match": original_etag})
            assert response.status_code == 200
            assert json.loads(read_tarball(response.content)[".manifest"])["revision"] == original
            assert response.headers["etag"] not in (original_etag, f'"{original}"')
            again = await client.get(BUNDLE, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304


async def test_a_rejected_edit_is_never_served_and_is_reported(served: Served, policy_source: Path) -> None:
    before = served.revision
    broken = policy_source / "labelgate" / "decision" / "broken.rego"
    broken.write_text("package labelgate.decision\n\nbroken if {\n")
    await served.wait(lambda: served.app.state.publisher.failure is not None, "the rejection")
    assert served.revision == before
    status = (await served.reader.get("/status")).json()
    assert status["healthy"] is False and status["revision"] == before
    assert status["error"]["reason"] == "POLICY_CHECK_FAILED"
    assert "broken.rego" in status["error"]["message"]
    response = await served.client.get(BUNDLE)
    assert response.headers["etag"] == f'"{before}"'
    assert "labelgate/decision/broken.rego" not in read_tarball(response.content)
    metrics = (await served.reader.get("/metrics")).text
    assert "labelgate_bundle_source_rejected 1.0" in metrics
    assert 'labelgate_bundle_publish_total{outcome="rejected"} 1.0' in metrics

    broken.unlink()  # back to the served content: healthy again, same revision
    await served.wait(lambda: served.app.state.publisher.failure is None, "recovery")
    assert served.revision == before
    assert "labelgate_bundle_source_rejected 0.0" in (await served.reader.get("/metrics")).text


async def test_a_failing_opa_test_is_never_served(served: Served, policy_source: Path) -> None:
    before = served.revision
    set_plain_ttl(policy_source, -5)
    await served.wait(lambda: served.app.state.publisher.failure is not None, "the rejection")
    assert served.revision == before
    error = (await served.reader.get("/status")).json()["error"]
    assert error["reason"] == "POLICY_TEST_FAILED"
    assert "test_plain_cache_ttl_is_not_negative" in error["output"]


async def test_a_vanished_source_folder_keeps_the_served_revision(
    served: Served, policy_source: Path, tmp_path: Path
) -> None:
    before = served.revision
    moved = tmp_path / "moved-away"
    await asyncio.to_thread(policy_source.rename, moved)
    await served.wait(lambda: served.app.state.publisher.failure is not None, "the missing source")
    assert served.app.state.publisher.failure.reason == "BUNDLE_SOURCE_MISSING"
    assert (await served.client.get(BUNDLE)).headers["etag"] == f'"{before}"'
    await asyncio.to_thread(moved.rename, policy_source)
    await served.wait(lambda: served.app.state.publisher.failure is None, "the source to come back")
    assert served.revision == before
    metrics = (await served.reader.get("/metrics")).text
    assert 'labelgate_bundle_publish_total{outcome="rejected"} 1.0' in metrics  # reported once


async def test_bearer_token_is_required(served: Served) -> None:
    transport = served.client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://bundles") as anonymous:
        for method, path in [("GET", BUNDLE), ("POST", "/logs"), ("POST", "/status"), ("GET", "/fleet")]:
            response = await anonymous.request(method, path)
            body = assert_problem(response, 401, "BUNDLE_TOKEN_MISSING")
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert body["title"] == "Unauthorized"
        wrong = await anonymous.get(BUNDLE, headers={"Authorization": "Bearer nope"})
        assert_problem(wrong, 401, "BUNDLE_TOKEN_INVALID")
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_malformed_requests_get_clear_problems(served: Served) -> None:
    assert_problem(await served.client.get("/bundles/other"), 404, "BUNDLE_NOT_FOUND")
    assert_problem(await served.client.get(BUNDLE, headers={"Prefer": "wait=soon"}), 400, "PREFER_INVALID")
    assert_problem(await served.client.get("/nowhere"), 404, "HTTP_404")
    assert_problem(await served.client.delete(BUNDLE), 405, "HTTP_405")
    assert_problem(
        await served.client.post("/logs", content=b"{not json", headers=JSON), 400, "BODY_NOT_JSON"
    )
    not_gzip = await served.client.post("/logs", content=b"[]", headers={**JSON, "Content-Encoding": "gzip"})
    assert_problem(not_gzip, 400, "BODY_NOT_GZIP")
    brotli = await served.client.post("/logs", content=b"[]", headers={**JSON, "Content-Encoding": "br"})
    assert_problem(brotli, 400, "CONTENT_ENCODING_UNSUPPORTED")
    assert_problem(await served.client.post("/logs", json={"not": "a list"}), 400, "DECISION_LOGS_INVALID")
    assert_problem(await served.client.post("/logs", json=[{"no": "id"}]), 400, "DECISION_LOGS_INVALID")
    assert_problem(await served.client.post("/status", json={"labels": []}), 400, "STATUS_REPORT_INVALID")
    assert_problem(await served.reader.get("/decisions/bad id!"), 400, "DECISION_ID_INVALID")
    assert_problem(await served.reader.get("/decisions/unknown"), 404, "DECISION_NOT_FOUND")


@pytest.mark.parametrize("digit", ["\u00b2", "\u00b3", "\u00b9"])
async def test_digits_that_are_not_ascii_are_a_clear_problem_not_a_500(served: Served, digit: str) -> None:
    """``str.isdigit()`` accepts "²", which ``int()`` refuses: ``Prefer: wait=²`` (latin-1
    byte 0xB2 on the wire) was a 500."""
    etag = f'"{served.revision}"'.encode()
    prefer = f"wait={digit}".encode("latin-1")
    response = await served.client.get(BUNDLE, headers=[(b"If-None-Match", etag), (b"Prefer", prefer)])
    assert_problem(response, 400, "PREFER_INVALID")
    # A Content-Length like it (h11 refuses one on the wire; another server might not) is
    # not trusted either: the body is read, and bounded, as it arrives.
    body = b'{"labels": {"id": "x"}, "bundles": {}}'
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", digit.encode("latin-1"))]
    posted = await served.client.post("/status", content=body, headers=headers)
    assert posted.status_code == 200, posted.text


def test_prefer_wait_takes_ascii_digits_only() -> None:
    for digits in ("\u00b2", "\u0661", "\uff11", "1\u00b2", "\U0001d7d9"):
        assert digits[-1].isdigit()
        with pytest.raises(InvalidInput, match="whole seconds"):
            prefer_wait([f"wait={digits}"], 300)


async def test_oversized_and_gzip_bomb_bodies_are_refused(served: Served) -> None:
    big = await served.client.post("/logs", content=b" " * (65 * 1024), headers=JSON)
    assert_problem(big, 413, "BODY_TOO_LARGE")
    bomb = gzip.compress(b"[" + b" " * (10 * 1024 * 1024) + b"]")  # tiny on the wire, 10 MiB inflated
    response = await served.client.post("/logs", content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    assert_problem(response, 413, "BODY_TOO_LARGE")


async def test_decision_logs_are_stored_and_found_by_decision_id(served: Served) -> None:
    events = [
        {
            "decision_id": f"d-{n}",
            "labels": {"id": "opa-1", "version": "1.22.3"},
            "bundles": {"labelgate": {"revision": served.revision}},
            "path": "labelgate/decision/result",
            "result": {"allow": n % 2 == 0},
            "timestamp": "2026-01-01T00:00:00Z",
        }
        for n in range(3)
    ]
    body = gzip.compress(json.dumps(events).encode())
    response = await served.client.post("/logs", content=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json() == {"received": 3, "stored": 3, "duplicates": 0, "conflicts": 0}
    again = await served.client.post("/logs", json=events[:2])  # OPA re-sends after a failure
    assert again.json() == {"received": 2, "stored": 0, "duplicates": 2, "conflicts": 0}
    found = (await served.reader.get("/decisions/d-1")).json()
    assert found["decision_id"] == "d-1" and found["conflict"] is False
    assert found["instance"] == INSTANCE and found["authenticated"] is True  # the credential's name
    assert found["event"]["result"] == {"allow": False}
    assert found["event"]["bundles"]["labelgate"]["revision"] == served.revision
    assert [v["instance"] for v in found["events"]] == [INSTANCE]


async def test_status_reports_build_the_fleet_view(served: Served) -> None:
    report = {
        "labels": {"id": "opa-1", "version": "1.22.3"},
        "bundles": {"labelgate": {"name": "labelgate", "active_revision": served.revision}},
        "plugins": {"bundle": {"state": "OK"}},
    }
    # Stored under the credential's instance name, whatever id the report claims.
    assert (await served.client.post("/status", json=report)).json() == {"instance": INSTANCE}
    await served.client.post("/logs", json=[{"decision_id": "e-1", "labels": {"id": "opa-1"}}])
    fleet = (await served.reader.get("/fleet")).json()
    assert fleet["bundle"] == {"name": "labelgate", "revision": served.revision}
    (ours,) = fleet["instances"]
    assert ours["id"] == INSTANCE and ours["reported_id"] == "opa-1" and ours["authenticated"] is True
    assert ours["revision"] == served.revision and ours["up_to_date"] is True
    assert ours["plugins"] == {"bundle": "OK"}
    assert ours["decision_logs"]["count"] == 1
    assert ours["last_checkin"].endswith("Z")
    stale = {"labels": {"id": "opa-2"}, "bundles": {"labelgate": {"active_revision": "old", "code": "x"}}}
    await served.client.post("/status", json=stale)
    (ours,) = (await served.reader.get("/fleet")).json()["instances"]
    assert ours["up_to_date"] is False and ours["reported_id"] == "opa-2"
    assert ours["bundles"]["labelgate"]["code"] == "x"
    history = (await served.reader.get(f"/fleet/{INSTANCE}/history")).json()["reports"]
    assert [h["reported_id"] for h in history] == ["opa-2", "opa-1"]  # newest first


async def test_a_source_that_never_passed_serves_nothing_until_fixed(
    policy_source: Path, tmp_path: Path
) -> None:
    set_plain_ttl(policy_source, -5)
    app = create_app(
        ServerSettings(
            source=policy_source,
            insecure_no_auth=True,
            allowed_hosts=("bundles",),
            state_dir=tmp_path,
            opa=opa_binary(),
            poll_interval=0.05,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bundles") as client:
            response = await client.get(BUNDLE)
            assert_problem(response, 503, "BUNDLE_NOT_READY")
            assert response.headers["retry-after"]
            assert (await client.get("/healthz")).status_code == 503
            assert (await client.get("/status")).json()["error"]["reason"] == "POLICY_TEST_FAILED"
            set_plain_ttl(policy_source, 60)
            served = Served(app, client, client)
            await served.wait(lambda: app.state.publisher.current is not None, "the fixed source")
            assert (await client.get(BUNDLE)).status_code == 200


def test_server_settings_are_checked(policy_source: Path, tmp_path: Path) -> None:
    creds = credentials()
    bad = [
        ServerSettings(source=tmp_path / "missing", credentials=creds),
        ServerSettings(source=policy_source, bundle_name="a/b", credentials=creds),
        ServerSettings(source=policy_source, poll_interval=0, credentials=creds),
        ServerSettings(source=policy_source, max_events_per_batch=0, credentials=creds),
        ServerSettings(source=policy_source, allowed_hosts=("evil.example:80",), credentials=creds),
    ]
    for settings in bad:
        with pytest.raises(ConfigError):
            create_app(settings)


def test_fleet_store_survives_a_restart(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "fleet.sqlite3")
    store.store_decisions(decision_events([{"decision_id": "kept"}], 10), "opa-1", authenticated=True)
    store.record_status(status_report({"labels": {"id": "x"}, "bundles": {}}), "opa-1", authenticated=True)
    store.close()
    reopened = FleetStore(tmp_path / "fleet.sqlite3")
    assert reopened.decision("kept")["event"]["decision_id"] == "kept"
    assert [i["id"] for i in reopened.instances("labelgate", None)] == ["opa-1"]
    reopened.close()


def test_prefer_and_etag_parsing() -> None:
    assert prefer_wait(["modes=snapshot,delta;wait=10"], 300) == 10
    assert prefer_wait(["wait=10"], 300) == 10
    assert prefer_wait(["modes=snapshot,delta"], 300) == 0
    assert prefer_wait(["respond-async, wait=900"], 300) == 300
    with pytest.raises(InvalidInput):
        prefer_wait(["wait=-1"], 300)
    assert prefer_wait(["wait=0010"], 300) == 10
    assert prefer_wait(["wait=" + "9" * 5000], 300) == 300  # more digits than int() takes
    assert prefer_wait(["wait=" + "0" * 5000 + "7"], 300) == 7
    assert etag_matches('"abc"', "abc") and etag_matches('W/"abc"', "abc")
    assert not etag_matches("", "abc") and not etag_matches('"abcd"', "abc")
