"""The session pages of the web inbox (``labelgate.recording.web``), in process: the real admin
app, real JWTs (dev key), a FileSessionStore written by the real SessionRecorder, and each
recorded response shown through the real embedded engine's replay decision for the viewer."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest

from labelgate.admin.app import build_admin_app
from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.web import issue_session
from labelgate.auth import Authenticator, Subject
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.calls import CallRecord
from labelgate.classify import Catalog, Classifier, DetectorSet
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.opa import OpaEngine
from labelgate.recording import SessionRecorder
from labelgate.recording.entries import recording_key
from labelgate.recording.files import FileSessionStore
from labelgate.recording.viewing import ReplayPolicy
from tests.recording.conftest import Clock, delivered_response, make_call, make_outcome
from tests.support.procs import REPO, free_port

ATTACK = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


async def _ready() -> dict[str, bool]:
    return {"ok": True}


KEY = b"session-page-test-key-0123456789abcdef"
PEER = make_call().peer
# The recording key of nora's (make_outcome's subject) session "s-plain": bound to her.
PLAIN = recording_key(make_outcome().subject, PEER, "s-plain")


def context(service: ApprovalService, authenticator: Authenticator) -> ApprovalsContext:
    return ApprovalsContext(service, authenticator, session_key=KEY)


@contextlib.asynccontextmanager
async def approval_service(*viewer_groups: str) -> AsyncIterator[ApprovalService]:
    """A started service on an in-memory store: the inbox asks it whether a session was
    signed out before any page reads the session."""
    service = ApprovalService(
        SqliteDatabase(None), node_id="t", link_base="http://t", admin_groups=viewer_groups
    )
    await service.start(sweep=False)
    try:
        yield service
    finally:
        await service.close()


def cookie(sub: str, *groups: str) -> dict[str, str]:
    """A signed-in person's session cookie: a derived session token, never a bearer token."""
    person = Subject(sub, groups, "jwt", {"iss": "labelgate-dev"})
    value = issue_session(SimpleNamespace(session_key=KEY), person, time.time() + 600)
    return {"cookie": f"labelgate_session={value}"}


def replay_policy(engine: EmbeddedEngine | OpaEngine) -> ReplayPolicy:
    catalog = Catalog.from_file(REPO / "rego/labelgate/catalog/data.json")
    classifier = Classifier(catalog, DetectorSet.default())
    return ReplayPolicy(
        decide=engine.decide,
        classifier=lambda: classifier,  # the same one until a catalog replaces it
        hash_key=b"session-page-hash-key-0123456789",
        deadline_seconds=5,
    )


@pytest.fixture
async def engine() -> AsyncIterator[EmbeddedEngine]:
    """The embedded engine on the repository's policy pack (``auditors`` may replay)."""
    started = EmbeddedEngine(REPO / "rego", watch_interval=None)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def client(tmp_path: Path, engine: EmbeddedEngine) -> AsyncIterator[httpx.AsyncClient]:
    """Two sessions recorded (one with hostile text in it), the admin app with viewer groups
    ``auditors`` and ``ops`` (whom the policy pack does not let replay)."""
    clock = Clock()
    recorder = SessionRecorder(FileSessionStore(tmp_path / "sessions"), clock=clock)
    await recorder.record(CallRecord.of(make_call("s-plain"), make_outcome(), None, clock()))
    masked_only = make_outcome(delivered=delivered_response(notes="second call"))
    await recorder.record(CallRecord.of(make_call("s-plain"), masked_only, None, clock()))
    hostile = make_outcome(delivered=delivered_response(notes=IMG))
    hostile.subject = Subject(ATTACK, ("analysts",), "jwt")
    await recorder.record(CallRecord.of(make_call(f"s-{ATTACK}"), hostile, None, clock()))
    await recorder.close()

    async with approval_service("auditors", "ops") as service:
        authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
        app = build_admin_app(_ready, context(service, authenticator))
        app.state.session_store = FileSessionStore(tmp_path / "sessions")
        app.state.replay_policy = replay_policy(engine)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            yield http


async def test_an_auditor_sees_the_timeline_with_the_tensors_as_policy_masks_them(
    client: httpx.AsyncClient,
) -> None:
    listing = await client.get("/inbox/sessions", headers=cookie("ana", "auditors"))
    assert listing.status_code == 200
    assert f'href="/inbox/sessions/{quote(PLAIN, safe="")}"' in listing.text
    page = await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("ana", "auditors"))
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    html = page.text
    assert html.count('class="card request"') == 2
    first = html[html.index('id="call-1"') : html.index('id="call-2"')]
    assert "2026-01-01T09:00:00.000Z" in first and "/inference.GRPCInferenceService/ModelInfer" in first
    assert "<code>customer-profile</code>" in first
    assert '<span class="state state-pending" data-testid="outcome">mask</span>' in first
    assert re.search(
        r'<code class="field field-confidential"[^>]*>outputs.ssn</code> <span class="muted">partial', first
    )
    # nora (an analyst) got the last SSN digits, the notes and the score; an auditor's replay
    # decision redacts confidential and internal values (FP32 zeroed), and shows public ones
    cells = re.findall(r"<td>([^<]*)</td>", first)
    assert cells == ["1", "[REDACTED]", "0.0", "[REDACTED]", "2", "[REDACTED]", "0.0", "[REDACTED]"]
    assert "masked: redact" in first and "6789" not in first and "plain note" not in first
    assert re.search(
        r'data-testid="replay"><span class="state state-pending">masked</span>\s*allowed for replay', first
    )
    assert "second call" not in html


async def test_the_viewers_clearance_decides_what_the_page_shows(client: httpx.AsyncClient) -> None:
    analyst = (
        await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("al", "auditors", "analysts"))
    ).text
    assert "plain note" in analyst and "second call" in analyst and "6789" in analyst  # partial: the last 4
    steward = (
        await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("sam", "auditors", "data-stewards"))
    ).text
    assert (
        "Approval required" in steward and "confidential data needs 1 approval(s) from data-owners" in steward
    )
    assert "6789" not in steward and "plain note" in steward  # ssn nulled, internal notes in clear


async def test_a_viewer_the_policy_denies_sees_none_of_the_values(client: httpx.AsyncClient) -> None:
    page = await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("otto", "ops"))
    assert page.status_code == 200  # a viewer group reaches the page ...
    html = page.text
    assert html.count('data-testid="withheld"') == 2  # ... and the policy shows them nothing
    assert "may not view recorded calls" in html
    assert "<td>" not in html and "plain note" not in html and "6789" not in html


async def test_a_signed_in_person_outside_the_admin_groups_gets_403(client: httpx.AsyncClient) -> None:
    for path in ("/inbox/sessions", f"/inbox/sessions/{PLAIN}"):
        refused = await client.get(path, headers=cookie("olga", "data-owners", "analysts"))
        assert refused.status_code == 403, path
        assert "SESSIONS_ADMIN_ONLY" in refused.text and "plain note" not in refused.text
    anonymous = await client.get(f"/inbox/sessions/{PLAIN}")
    assert anonymous.status_code == 200 and "Sign in" in anonymous.text and "plain note" not in anonymous.text
    missing = await client.get("/inbox/sessions/no-such-session", headers=cookie("ana", "auditors"))
    assert missing.status_code == 404 and "SESSION_NOT_FOUND" in missing.text


async def test_without_a_replay_policy_or_with_a_broken_engine_nothing_is_shown(
    client: httpx.AsyncClient,
) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    app.state.replay_policy = None
    refused = await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("ana", "auditors"))
    assert refused.status_code == 503 and "SESSIONS_NO_POLICY" in refused.text
    assert "plain note" not in refused.text and "<td>" not in refused.text
    dead = OpaEngine(f"http://127.0.0.1:{free_port()}", timeout=1, retries=0)
    await dead.start()
    try:
        app.state.replay_policy = replay_policy(dead)
        failed = await client.get(f"/inbox/sessions/{PLAIN}", headers=cookie("ana", "auditors"))
    finally:
        await dead.close()
    assert failed.status_code == 200 and failed.text.count('data-testid="withheld"') == 2
    assert "policy engine unavailable" in failed.text and "<td>" not in failed.text


async def test_recorded_text_is_escaped(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/inbox/sessions", headers=cookie("ana", "auditors"))).text
    assert ATTACK not in listing and "s-&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    href = re.search(r'href="(/inbox/sessions/s-%3Cscript[^"]+)"', listing)
    assert href, "the hostile session id is linked, URL-encoded"
    page = await client.get(href.group(1), headers=cookie("ana", "auditors", "analysts"))  # sees notes
    assert page.status_code == 200
    assert ATTACK not in page.text and IMG not in page.text
    assert "&lt;img src=x onerror=alert(2)&gt;" in page.text  # the delivered value, shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the subject id


async def test_without_a_recording_store_the_page_says_so(tmp_path: Path) -> None:
    async with approval_service("auditors") as service:
        authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
        app = build_admin_app(_ready, context(service, authenticator))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            page = await http.get("/inbox/sessions", headers=cookie("ana", "auditors"))
    assert page.status_code == 404 and "SESSIONS_NOT_RECORDED" in page.text


async def test_with_no_admin_group_configured_nobody_sees_sessions(tmp_path: Path) -> None:
    async with approval_service() as service:
        authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
        app = build_admin_app(_ready, context(service, authenticator))
        app.state.session_store = FileSessionStore(tmp_path)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            page = await http.get("/inbox/sessions", headers=cookie("ana", "auditors", "admins"))
    assert page.status_code == 403 and "SESSIONS_NO_ADMIN_GROUP" in page.text


async def test_a_damaged_line_says_why_it_is_damaged(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """The store names what is wrong with a line (``note``); the page used to call every damaged
    line one torn by a crash."""
    (recording,) = [p for p in (tmp_path / "sessions").rglob("*.jsonl") if "s-plain" in p.read_text()]
    with recording.open("a") as file:
        file.write("[]\n")
    page = await client.get(f"/inbox/sessions/{quote(PLAIN)}", headers=cookie("ana", "auditors"))
    assert page.status_code == 200
    assert "is damaged: " in page.text and "torn by a crash" not in page.text
