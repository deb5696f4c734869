"""Issue 19, findings 1-3, against the real app in process: hostile requests, refused or bounded.

1. Secure by default: no start without credentials; instance and reader credentials apart;
   ``application/json`` required on POSTs; ``Host`` checked (DNS rebinding).
2. Decision events keyed by (instance, decision_id), the instance taken from the credential;
   a conflicting event is kept and flagged, never dropped, whichever arrived first.
3. Strict JSON with problem responses (never a 500), bounded batches and bodies, reads that
   cannot be broken by what was posted (or by what an older version stored), retention.

The same attacks over real TCP against the real process, with a real OPA reporting, are in
``test_hostile_clients.py``.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from labelgate.bundle.access import Credentials, HostCheck, host_name, token_digest
from labelgate.bundle.fleet import DAY, FleetStore, Retention
from labelgate.bundle.reports import parse_json
from labelgate.bundle.server import SafeJSONResponse, ServerSettings, create_app
from labelgate.errors import ConfigError, InvalidInput
from tests.bundle.helpers import READER_TOKEN, TOKEN
from tests.support.procs import opa_binary

FORGER_TOKEN = "another-instance-token-0003"
JSON = {"Content-Type": "application/json"}
REAL = {"decision_id": "3f1c-real", "labels": {"id": "uuid-a"}, "path": "labelgate/decision/result"}


def credentials() -> Credentials:
    creds = Credentials()
    creds.add("instance", "opa", TOKEN)
    creds.add("instance", "forger", FORGER_TOKEN)
    creds.add("reader", "auditor", READER_TOKEN)
    return creds


class Clients:
    def __init__(self, app: FastAPI, transport: httpx.ASGITransport) -> None:
        self.app = app
        self.transport = transport

    def as_(self, token: str | None, host: str = "bundles") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=self.transport, base_url=f"http://{host}", headers=headers)


async def started(settings: ServerSettings) -> AsyncIterator[Clients]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # raise_app_exceptions=False: a 500 must show up as a response the test can see.
        yield Clients(app, httpx.ASGITransport(app=app, raise_app_exceptions=False))


@pytest.fixture
async def app(policy_source: Path, tmp_path: Path) -> AsyncIterator[Clients]:
    settings = ServerSettings(
        source=policy_source,
        credentials=credentials(),
        allowed_hosts=("bundles",),
        state_dir=tmp_path / "state",
        opa=opa_binary(),
        poll_interval=0.05,
        max_upload_bytes=1024 * 1024,
        max_events_per_batch=50,
    )
    async for clients in started(settings):
        yield clients


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["reason"] == reason and body["title"] and body["detail"]
    return body


async def fleet_of(clients: Clients) -> list[dict[str, Any]]:
    async with clients.as_(READER_TOKEN) as reader:
        response = await reader.get("/fleet")
    assert response.status_code == 200, response.text
    return response.json()["instances"]


# ---------------------------------------------------------------------------------------------
# 1. Secure by default


def test_the_server_does_not_start_without_credentials(policy_source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        create_app(ServerSettings(source=policy_source, state_dir=tmp_path))
    assert missing.value.reason == "BUNDLE_AUTH_REQUIRED"
    assert "--insecure-no-auth" in missing.value.message
    with pytest.raises(ConfigError) as both:
        create_app(
            ServerSettings(
                source=policy_source, credentials=credentials(), insecure_no_auth=True, state_dir=tmp_path
            )
        )
    assert both.value.reason == "BUNDLE_AUTH_CONFLICT"
    assert not (tmp_path / "fleet.sqlite3").exists()  # refused before anything was opened


def test_credentials_are_one_per_holder_and_not_guessable(tmp_path: Path) -> None:
    creds = Credentials()
    creds.add("instance", "opa-1", "a-long-enough-token-1")
    with pytest.raises(ConfigError) as reused:
        creds.add("reader", "auditor", "a-long-enough-token-1")  # one token for both roles: refused
    assert reused.value.reason == "BUNDLE_TOKEN_REUSED"
    with pytest.raises(ConfigError) as weak:
        creds.add("instance", "opa-2", "short")
    assert weak.value.reason == "BUNDLE_TOKEN_WEAK"
    with pytest.raises(ConfigError) as named:
        creds.add("instance", "bad name!", "a-long-enough-token-2")
    assert named.value.reason == "BUNDLE_TOKENS_INVALID"

    # The file may hold digests only; presented tokens are checked by digest.
    path = tmp_path / "tokens.yaml"
    path.write_text(
        f"instances:\n  opa-east-1: sha256:{token_digest('east-secret-token-1')}\n"
        f"readers:\n  auditor: reader-secret-token-1\n"
    )
    loaded = Credentials.from_file(path)
    assert loaded.check("Bearer east-secret-token-1", "instance", "post").name == "opa-east-1"
    assert loaded.check("bearer reader-secret-token-1", "reader", "read").name == "auditor"
    for text in ("admins:\n  x: some-long-token-value\n", "instances: [a, b]\n", "{"):
        path.write_text(text)
        with pytest.raises(ConfigError):
            Credentials.from_file(path)


async def test_instances_and_readers_cannot_do_each_others_part(app: Clients) -> None:
    async with app.as_(TOKEN) as instance, app.as_(READER_TOKEN) as reader:
        # A reader token trying to write (or to pull the policy).
        for method, path in (("POST", "/logs"), ("POST", "/status"), ("GET", "/bundles/labelgate")):
            response = await reader.request(method, path, json=[REAL] if path == "/logs" else {})
            body = assert_problem(response, 403, "BUNDLE_ROLE_FORBIDDEN")
            assert "reader credential 'auditor'" in body["detail"]
        # An instance token trying to read decisions, the fleet or the publish status.
        assert (await instance.post("/logs", json=[REAL])).status_code == 200
        decision = f"/decisions/{REAL['decision_id']}"
        for path in (decision, "/fleet", "/fleet/page", "/status", "/fleet/opa/history"):
            assert_problem(await instance.get(path), 403, "BUNDLE_ROLE_FORBIDDEN")
        assert (await reader.get(decision)).status_code == 200
        assert (await instance.get("/bundles/labelgate")).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",  # what a page's fetch(..., {mode: "no-cors"}) sends
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
        "application/jsonp",
        "text/json",
    ],
)
async def test_posts_must_be_declared_json(app: Clients, content_type: str | None) -> None:
    body = json.dumps([REAL]).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with app.as_(TOKEN) as instance:
        for path in ("/logs", "/status"):
            response = await instance.post(path, content=body, headers=headers)
            assert_problem(response, 415, "CONTENT_TYPE_UNSUPPORTED")
        utf8 = {"Content-Type": "application/json; charset=UTF-8"}
        assert (await instance.post("/logs", content=body, headers=utf8)).status_code == 200
    (only,) = await fleet_of(app)
    assert only["decision_logs"]["count"] == 1  # the refused posts stored nothing


async def test_host_must_name_the_server(app: Clients) -> None:
    # DNS rebinding: the attacker's name resolves to this server. The Host check refuses before
    # authentication, whatever token the request carries.
    for host in ("rebind.attacker.example", "bundles.attacker.example", "bundles-x"):
        async with app.as_(READER_TOKEN, host=host) as client:
            for path in ("/fleet", "/decisions/x", "/status", "/bundles/labelgate"):
                assert_problem(await client.get(path), 421, "HOST_NOT_ALLOWED")
            assert_problem(await client.post("/logs", json=[REAL]), 421, "HOST_NOT_ALLOWED")
    for host in ("bundles", "BUNDLES.", "bundles:8282", "127.0.0.1:8282", "[::1]:8282", "10.0.0.5"):
        async with app.as_(READER_TOKEN, host=host) as client:
            assert (await client.get("/fleet")).status_code == 200, host
    async with app.as_(None, host="rebind.attacker.example") as anyone:  # probes: no data behind them
        assert (await anyone.get("/healthz")).status_code == 200
        assert (await anyone.get("/metrics")).status_code == 200


def test_host_names_are_parsed_strictly() -> None:
    assert host_name("Bundles.Example.:8282") == "bundles.example"
    assert host_name("[::1]:80") == "::1"
    for bad in ("", "a:b", "[::1", "x/y", "user@host", "a b", "bundles:\u00b2", "[::1]:\u00b2"):
        assert host_name(bad) is None
    check = HostCheck.of(["bundles", "127.0.0.1"])
    assert check.allows("bundles:1") and check.allows("192.168.1.1") and not check.allows("other")
    assert not check.allows(None)


# ---------------------------------------------------------------------------------------------
# 2. Decision events: keyed by (instance, decision_id), conflicts kept and flagged


async def test_a_forged_event_posted_first_does_not_hide_the_real_one(app: Clients) -> None:
    decision_id = REAL["decision_id"]
    forged = {**REAL, "labels": {"id": "uuid-a"}, "result": {"allow": True}}  # claims OPA's own id
    real = {**REAL, "result": {"allow": False}}
    async with app.as_(FORGER_TOKEN) as forger, app.as_(TOKEN) as opa, app.as_(READER_TOKEN) as reader:
        first = (await forger.post("/logs", json=[forged])).json()
        assert first == {"received": 1, "stored": 1, "duplicates": 0, "conflicts": 0}
        second = (await opa.post("/logs", json=[real])).json()
        assert second == {"received": 1, "stored": 1, "duplicates": 0, "conflicts": 1}

        found = (await reader.get(f"/decisions/{decision_id}")).json()
        assert found["conflict"] is True and "event" not in found  # no version is picked silently
        versions = {v["instance"]: v["event"]["result"] for v in found["events"]}
        assert versions == {"forger": {"allow": True}, "opa": {"allow": False}}  # filed by credential
        ours = (await reader.get(f"/decisions/{decision_id}", params={"instance": "opa"})).json()
        assert ours["conflict"] is True and ours["instance"] == "opa"
        assert ours["event"]["result"] == {"allow": False}
        metrics = (await reader.get("/metrics")).text
        assert "labelgate_bundle_decision_conflicts_total 1.0" in metrics
    by_id = {i["id"]: i for i in await fleet_of(app)}
    assert by_id["opa"]["decision_logs"]["conflicts"] == 1
    assert by_id["forger"]["decision_logs"]["conflicts"] == 1


async def test_a_conflicting_duplicate_from_the_same_instance_is_kept_and_flagged(app: Clients) -> None:
    async with app.as_(TOKEN) as opa, app.as_(READER_TOKEN) as reader:
        assert (await opa.post("/logs", json=[{**REAL, "result": 1}])).json()["stored"] == 1
        resent = (await opa.post("/logs", json=[{**REAL, "result": 1}])).json()  # OPA retrying: no conflict
        assert resent == {"received": 1, "stored": 0, "duplicates": 1, "conflicts": 0}
        changed = (await opa.post("/logs", json=[{**REAL, "result": 2}])).json()
        assert changed == {"received": 1, "stored": 1, "duplicates": 0, "conflicts": 1}
        found = (await reader.get(f"/decisions/{REAL['decision_id']}")).json()
    assert found["conflict"] is True
    assert [(v["instance"], v["event"]["result"]) for v in found["events"]] == [("opa", 1), ("opa", 2)]


async def test_without_auth_events_are_marked_unauthenticated(policy_source: Path, tmp_path: Path) -> None:
    settings = ServerSettings(
        source=policy_source,
        insecure_no_auth=True,
        allowed_hosts=("bundles",),
        state_dir=tmp_path / "state",
        opa=opa_binary(),
        poll_interval=0.05,
    )
    async for clients in started(settings):
        async with clients.as_(None) as anyone:
            assert (await anyone.post("/logs", json=[REAL])).status_code == 200
            other = {**REAL, "labels": {"id": "uuid-b"}}
            assert (await anyone.post("/logs", json=[other])).status_code == 200
            found = (await anyone.get(f"/decisions/{REAL['decision_id']}")).json()
        assert found["conflict"] is True
        assert {(v["instance"], v["authenticated"]) for v in found["events"]} == {
            ("uuid-a", False),
            ("uuid-b", False),
        }


# ---------------------------------------------------------------------------------------------
# 3. Strict JSON, bounded, never a 500, reads that cannot break


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def dumped(value: Any) -> bytes:
    return json.dumps(value).encode()


STATUS_OK = {"labels": {"id": "uuid-a"}, "bundles": {"labelgate": {"active_revision": "r1"}}}
MALFORMED_STATUS: list[tuple[bytes, str]] = [
    (b'{"labels": {"id": "x"}, "bundles": {"labelgate": {"active_revision": NaN}}}', "BODY_NOT_JSON"),
    (b'{"labels": {"id": "x", "n": Infinity}}', "BODY_NOT_JSON"),
    (b'{"labels": {"id": "x"}, "metrics": -Infinity}', "BODY_NOT_JSON"),
    (b'{"labels": {"id": "x"}, "metrics": 1e400}', "BODY_NOT_JSON"),  # overflows to inf
    (b'{"labels": {"id": "x"}, "labels": {"id": "y"}}', "BODY_NOT_JSON"),  # duplicate key
    (b'{"labels": {"id": "\\ud800"}}', "BODY_NOT_JSON"),  # lone surrogate
    ("\ufeff{}".encode(), "BODY_NOT_JSON"),
    ('{"labels": {}}'.encode("utf-16"), "BODY_NOT_JSON"),
    (b"\xff\xfe", "BODY_NOT_JSON"),
    (b'{"n": ' + b"9" * 5000 + b"}", "BODY_NOT_JSON"),
    (deep(200_000), "JSON_TOO_DEEP"),
    (b'{"a":' * 65 + b"1" + b"}" * 65, "JSON_TOO_DEEP"),
    (dumped({"labels": {"id": {"nested": "object"}}}), "STATUS_REPORT_INVALID"),
    (dumped({"labels": {"id": "x", "team": 7}}), "STATUS_REPORT_INVALID"),
    (dumped({"labels": "x"}), "STATUS_REPORT_INVALID"),
    (dumped({"bundles": {"labelgate": {"active_revision": {"o": 1}}}}), "STATUS_REPORT_INVALID"),
    (dumped({"bundles": {"labelgate": {"message": ["a"]}}}), "STATUS_REPORT_INVALID"),
    (dumped({"bundles": {"labelgate": {"errors": "many"}}}), "STATUS_REPORT_INVALID"),
    (dumped({"bundles": {"labelgate": {"errors": [{"location": {"row": "1"}}]}}}), "STATUS_REPORT_INVALID"),
    (dumped({"bundles": []}), "STATUS_REPORT_INVALID"),
    (dumped({"plugins": {"bundle": {"state": 1}}}), "STATUS_REPORT_INVALID"),
    (dumped({"labels": {f"k{n}": "v" for n in range(65)}}), "STATUS_REPORT_INVALID"),
    (dumped([1]), "STATUS_REPORT_INVALID"),
]
MALFORMED_LOGS: list[tuple[bytes, str]] = [
    (b'[{"decision_id": "a", "result": NaN}]', "BODY_NOT_JSON"),
    (b'[{"decision_id": "a", "decision_id": "b"}]', "BODY_NOT_JSON"),
    (deep(200_000), "JSON_TOO_DEEP"),
    (dumped([{"decision_id": 7}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a b"}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "x" * 129}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "path": {"o": 1}}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "timestamp": 1}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "labels": {"id": ["x"]}}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "req_id": "1"}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "req_id": True}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "metrics": {"t": "fast"}}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "bundles": {"b": {"revision": 3}}}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "a", "erased": [1]}]), "DECISION_LOGS_INVALID"),
    (dumped([{"decision_id": "ok"}, "not an event"]), "DECISION_LOGS_INVALID"),
    (dumped({"decision_id": "a"}), "DECISION_LOGS_INVALID"),
]
GZIP = {**JSON, "Content-Encoding": "gzip"}


async def test_malformed_status_reports_get_problems_and_the_fleet_stays_readable(app: Clients) -> None:
    async with app.as_(TOKEN) as opa:
        assert (await opa.post("/status", json=STATUS_OK)).status_code == 200
        for body, reason in MALFORMED_STATUS:
            assert_problem(await opa.post("/status", content=body, headers=JSON), 400, reason)
            assert_problem(await opa.post("/status", content=gzip.compress(body), headers=GZIP), 400, reason)
    (only,) = await fleet_of(app)  # the good report, untouched by any of the bad ones
    assert only["revision"] == "r1" and only["status_reports"] == 1


async def test_malformed_decision_logs_get_problems_and_store_nothing(app: Clients) -> None:
    async with app.as_(TOKEN) as opa:
        for body, reason in MALFORMED_LOGS:
            assert_problem(await opa.post("/logs", content=body, headers=JSON), 400, reason)
            assert_problem(await opa.post("/logs", content=gzip.compress(body), headers=GZIP), 400, reason)
    assert await fleet_of(app) == []  # a batch is stored whole or not at all


async def test_depth_is_bounded_not_forbidden(app: Clients) -> None:
    def nested(levels: int) -> Any:
        value: Any = "leaf"
        for _ in range(levels):
            value = {"k": value}
        return value

    async with app.as_(TOKEN) as opa:
        # The batch array (1) + the event (2) + 62 levels of input = 64: accepted; one more is not.
        fits = [{"decision_id": "deep-ok", "input": nested(62)}]
        assert (await opa.post("/logs", json=fits)).status_code == 200
        too_deep = [{"decision_id": "deep-no", "input": nested(63)}]
        assert_problem(await opa.post("/logs", json=too_deep), 400, "JSON_TOO_DEEP")


async def test_batches_and_bodies_are_bounded_on_the_wire_and_after_gunzip(app: Clients) -> None:
    async with app.as_(TOKEN) as opa:
        too_many = [{"decision_id": f"e-{n}"} for n in range(51)]
        assert_problem(await opa.post("/logs", json=too_many), 413, "TOO_MANY_EVENTS")
        assert (await opa.post("/logs", json=too_many[:50])).json()["stored"] == 50

        # The bomb: ~1.6 MB of gzip that inflated to 621k tiny events.
        events = b"[" + b",".join(b'{"decision_id":"b%d"}' % n for n in range(621_000)) + b"]"
        bomb = gzip.compress(events, 9)
        assert len(bomb) < 4 * 1024 * 1024
        assert_problem(await opa.post("/logs", content=bomb, headers=GZIP), 413, "BODY_TOO_LARGE")
        # Under the wire limit, over the inflated one.
        inflates = gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]")
        assert_problem(await opa.post("/logs", content=inflates, headers=GZIP), 413, "BODY_TOO_LARGE")
        trailing = gzip.compress(b"[]") + b"garbage"
        assert_problem(await opa.post("/logs", content=trailing, headers=GZIP), 400, "BODY_NOT_GZIP")
    (only,) = await fleet_of(app)
    assert only["decision_logs"]["count"] == 50


async def test_no_hostile_body_gets_a_500(app: Clients) -> None:
    bodies = [body for body, _ in MALFORMED_STATUS + MALFORMED_LOGS] + [
        b"",
        b"null",
        b"[][][]",
        b'"' + b"\\" * 10,
        b"[" + b"{}," * 5000 + b"{}]",
        dumped({"labels": {"id": "x"}, "bundles": {"labelgate": {"errors": [None, 1, "x"]}}}),
        dumped([{"decision_id": "a", "metrics": {"t": 10**400}}]),
    ]
    async with app.as_(TOKEN) as opa:
        for path in ("/status", "/logs"):
            for body in bodies:
                response = await opa.post(path, content=body, headers=JSON)
                assert response.status_code < 500, (path, body[:60], response.text)
                if response.status_code >= 400:
                    assert response.headers["content-type"] == "application/problem+json"
    await fleet_of(app)


async def test_reads_survive_what_an_older_version_stored(policy_source: Path, tmp_path: Path) -> None:
    """The issue's state: a NaN status report stored by the old server made GET /fleet 500 for good."""
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "fleet.sqlite3")
    old.executescript(
        """CREATE TABLE instances (id TEXT PRIMARY KEY, labels TEXT NOT NULL, bundles TEXT NOT NULL,
               plugins TEXT NOT NULL, first_seen REAL NOT NULL, last_checkin REAL NOT NULL,
               reports INTEGER NOT NULL);
           CREATE TABLE decisions (decision_id TEXT PRIMARY KEY, instance_id TEXT, path TEXT, timestamp TEXT,
               received_at REAL NOT NULL, event TEXT NOT NULL);"""
    )
    now = __import__("time").time()
    old.execute(
        "INSERT INTO instances VALUES ('opa-old', ?, ?, '{}', ?, ?, 3)",
        (
            '{"id": "opa-old", "team": "\\ud800"}',
            '{"labelgate": {"active_revision": NaN, "errors": [Infinity]}}',
            now,
            now,
        ),
    )
    old.execute(
        "INSERT INTO decisions VALUES ('old-1', 'opa-old', 'p', 't', ?, ?)",
        (now, '{"decision_id": "old-1", "result": NaN}'),
    )
    old.commit()
    old.close()
    settings = ServerSettings(
        source=policy_source,
        credentials=credentials(),
        allowed_hosts=("bundles",),
        state_dir=state,
        opa=opa_binary(),
        poll_interval=0.05,
    )
    async for clients in started(settings):
        async with clients.as_(READER_TOKEN) as reader:
            fleet = await reader.get("/fleet")
            assert fleet.status_code == 200, fleet.text
            (old_row,) = fleet.json()["instances"]
            assert old_row["id"] == "opa-old" and old_row["authenticated"] is False
            assert old_row["bundles"]["labelgate"]["active_revision"] is None
            assert old_row["labels"]["team"] == "\ufffd"
            assert (await reader.get("/fleet/page")).status_code == 200
            migrated = await reader.get("/decisions/old-1")
            assert migrated.status_code == 200, migrated.text
            assert migrated.json()["event"]["result"] is None
            assert migrated.json()["authenticated"] is False


def test_safe_json_response_never_fails() -> None:
    body = SafeJSONResponse({"x": float("nan"), "y": ["\ud800", float("inf")]}).body
    assert json.loads(body) == {"x": None, "y": ["\ufffd", None]}


def test_retention_removes_old_decisions_status_history_and_silent_instances(tmp_path: Path) -> None:
    from labelgate.bundle.reports import decision_events, status_report

    retention = Retention(decisions_seconds=10 * DAY, status_seconds=20 * DAY)
    store = FleetStore(tmp_path / "fleet.sqlite3", retention)
    t0 = 1_000_000_000.0

    def log(decision_id: str, at: float) -> None:
        store.store_decisions(
            decision_events([{"decision_id": decision_id}], 10), "opa", authenticated=True, now=at
        )

    log("old", t0)
    log("recent", t0 + 12 * DAY)
    store.record_status(status_report(STATUS_OK), "opa", authenticated=True, now=t0)
    store.record_status(status_report(STATUS_OK), "gone", authenticated=True, now=t0)
    store.record_status(status_report(STATUS_OK), "opa", authenticated=True, now=t0 + 15 * DAY)

    removed = store.prune(now=t0 + 21 * DAY)
    assert removed == {"decisions": 1, "status_history": 2, "instances": 1}
    assert store.decision("old") is None and store.decision("recent") is not None
    assert [i["id"] for i in store.instances("labelgate", None)] == ["opa"]
    assert len(store.history("opa")) == 1
    store.close()


async def test_an_instance_over_its_quota_is_refused_not_others(policy_source: Path, tmp_path: Path) -> None:
    settings = ServerSettings(
        source=policy_source,
        credentials=credentials(),
        allowed_hosts=("bundles",),
        state_dir=tmp_path / "state",
        opa=opa_binary(),
        poll_interval=0.05,
        retention=Retention(max_decisions_per_instance=3),
    )
    async for clients in started(settings):
        async with clients.as_(FORGER_TOKEN) as flooder, clients.as_(TOKEN) as opa:
            three = [{"decision_id": f"f{n}"} for n in range(3)]
            assert (await flooder.post("/logs", json=three)).status_code == 200
            full = await flooder.post("/logs", json=[{"decision_id": "f3"}])
            assert_problem(full, 507, "DECISION_QUOTA_EXCEEDED")
            assert full.headers["retry-after"]
            assert (await opa.post("/logs", json=[REAL])).status_code == 200


def test_parse_json_is_strict_and_plain_json_still_parses() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x", null, true]}', 64) == {"a": [1, 2.5, "x", None, True]}
    assert parse_json(b'{"a": "\\ud83d\\ude00"}', 64) == {"a": "\U0001f600"}  # a valid pair
    with pytest.raises(InvalidInput):
        parse_json(b"NaN", 64)
