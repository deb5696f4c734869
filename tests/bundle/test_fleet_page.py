"""The fleet page (``GET /fleet/page``): the real app in process, real OPA validation of the source."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from labelgate.bundle.access import Credentials
from labelgate.bundle.server import ServerSettings, age, create_app
from tests.bundle.helpers import READER_TOKEN
from tests.support.procs import opa_binary

PAGE = "/fleet/page"


EAST, WEST = "east-instance-token-0001", "west-instance-token-0002"


def credentials() -> Credentials:
    creds = Credentials()
    creds.add("instance", "opa-east-1", EAST)
    creds.add("instance", "opa-west-2", WEST)
    creds.add("reader", "auditor", READER_TOKEN)
    return creds


@asynccontextmanager
async def serving(
    source: Path, state: Path, authenticated: bool = True
) -> AsyncIterator[tuple[FastAPI, Callable[[str | None], httpx.AsyncClient]]]:
    """The app in process and a maker of clients by token (the reader's is the default)."""
    app = create_app(
        ServerSettings(
            source=source,
            credentials=credentials() if authenticated else None,
            insecure_no_auth=not authenticated,
            allowed_hosts=("bundles",),
            state_dir=state,
            opa=opa_binary(),
            poll_interval=0.05,
        )
    )
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        transport = httpx.ASGITransport(app=app)

        def client(token: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            made = httpx.AsyncClient(transport=transport, base_url="http://bundles", headers=headers)
            stack.push_async_callback(made.aclose)
            return made

        yield app, client


def report(instance: str, revision: str, **labels: str) -> dict:
    return {
        "labels": {"id": instance, **labels},
        "bundles": {"labelgate": {"name": "labelgate", "active_revision": revision}},
        "plugins": {"bundle": {"state": "OK"}},
    }


async def test_the_page_lists_reporting_instances_with_revision_and_decision_counts(
    policy_source: Path, tmp_path: Path
) -> None:
    async with serving(policy_source, tmp_path / "state") as (app, client):
        revision = app.state.publisher.current.revision
        reader, east, west = client(READER_TOKEN), client(EAST), client(WEST)
        empty = await reader.get(PAGE)
        assert empty.status_code == 200 and "No OPA has reported yet" in empty.text
        await east.post("/status", json=report("4a1b-uuid", revision, version="1.22.3"))
        await west.post("/status", json=report("opa-west-2", "an-old-revision"))
        await east.post("/logs", json=[{"decision_id": f"d-{n}", "labels": {"id": "x"}} for n in range(3)])
        # The same decision from the other instance: both kept, both flagged on the page.
        await west.post("/logs", json=[{"decision_id": "d-0", "result": "forged"}])

        page = await reader.get(PAGE)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        html = page.text
        assert f'<code data-testid="revision">{revision}</code>' in html
        east_row = html[html.index('data-instance="opa-east-1"') :]
        east_row = east_row[: east_row.index("</tr>")]
        assert revision in east_row and "current" in east_row and "version=1.22.3" in east_row
        assert "opa id=4a1b-uuid" in east_row and "unauthenticated" not in east_row
        assert re.search(r">\d+ s ago<", east_row)  # an age, not a timestamp
        assert '<td data-label="Decision logs" class="num">3' in east_row
        assert '<span class="state state-bad" data-testid="conflicts">1 in conflict</span>' in east_row
        west_row = html[html.index('data-instance="opa-west-2"') :]
        west_row = west_row[: west_row.index("</tr>")]
        assert "an-old-revision" in west_row and "behind" in west_row
        assert '<td data-label="Decision logs" class="num">1' in west_row


async def test_instance_labels_are_escaped(policy_source: Path, tmp_path: Path) -> None:
    attack = "<script>alert(1)</script>"
    async with serving(policy_source, tmp_path / "state") as (app, client):
        revision = app.state.publisher.current.revision
        sent = report(attack, revision, team='"><img src=x onerror=alert(2)>')
        assert (await client(EAST).post("/status", json=sent)).status_code == 200
        html = (await client(READER_TOKEN).get(PAGE)).text
    assert attack not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


async def test_an_instances_bundle_errors_show_each_file_and_line(
    policy_source: Path, tmp_path: Path
) -> None:
    """OPA's status names each activation error with its location; the page shows those, not
    OPA's "2 errors occurred" summary."""
    async with serving(policy_source, tmp_path / "state") as (_app, client):
        sent = report("opa-east-1", "r-broken")
        sent["bundles"]["labelgate"].update(
            message="bundle labelgate: 2 errors occurred",
            errors=[
                {
                    "code": "rego_type_error",
                    "message": "undefined function lower2",
                    "location": {"file": "labelgate/decision/x.rego", "row": 7, "col": 3},
                },
                {
                    "code": "rego_unsafe_var_error",
                    "message": "var y is unsafe",
                    "location": {"file": "labelgate/decision/y.rego", "row": 12, "col": 1},
                },
            ],
        )
        assert (await client(EAST).post("/status", json=sent)).status_code == 200
        html = (await client(READER_TOKEN).get(PAGE)).text
    row = html[html.index('data-instance="opa-east-1"') :]
    row = row[: row.index("</tr>")]
    assert "labelgate/decision/x.rego:7: undefined function lower2" in row
    assert "labelgate/decision/y.rego:12: var y is unsafe" in row
    assert "errors occurred" not in row


async def test_the_page_needs_a_reader_token(policy_source: Path, tmp_path: Path) -> None:
    async with serving(policy_source, tmp_path / "state") as (_, client):
        anonymous = client(None)
        missing = await anonymous.get(PAGE)
        assert missing.status_code == 401 and missing.json()["reason"] == "BUNDLE_TOKEN_MISSING"
        wrong = await anonymous.get(PAGE, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["reason"] == "BUNDLE_TOKEN_INVALID"
        in_url = await anonymous.get(PAGE, params={"token": READER_TOKEN})  # never accepted in the URL
        assert in_url.status_code == 401
        instance = await client(EAST).get(PAGE)  # an OPA's credential does not read the fleet
        assert instance.status_code == 403 and instance.json()["reason"] == "BUNDLE_ROLE_FORBIDDEN"
        assert (await client(READER_TOKEN).get(PAGE)).status_code == 200


async def test_without_auth_the_page_is_open_and_shows_a_rejected_edit(
    policy_source: Path, tmp_path: Path
) -> None:
    async with serving(policy_source, tmp_path / "state", authenticated=False) as (app, client):
        publisher = app.state.publisher
        before = publisher.current.revision
        anonymous = client(None)
        await anonymous.post("/status", json=report("self-named", before))
        healthy = await anonymous.get(PAGE)
        assert healthy.status_code == 200 and 'data-testid="publish-error"' not in healthy.text
        assert "unauthenticated" in healthy.text  # what an instance claims is marked as such
        broken = policy_source / "labelgate" / "decision" / "broken.rego"
        broken.write_text("package labelgate.decision\n\nbroken if {\n")
        deadline = time.monotonic() + 20
        while publisher.failure is None:
            assert time.monotonic() < deadline, "the edit was never rejected"
            await asyncio.sleep(0.02)
        html = (await anonymous.get(PAGE)).text
    assert 'data-testid="publish-error"' in html and "POLICY_CHECK_FAILED" in html
    assert f'<code data-testid="revision">{before}</code>' in html and "last edit rejected" in html


def test_ages_read_like_a_person_would_say_them() -> None:
    stamp = "2026-01-01T09:00:00.000Z"
    start = 1767258000.0  # that instant
    assert age(stamp, start + 5) == "5 s"
    assert age(stamp, start + 125) == "2 min"
    assert age(stamp, start + 3 * 3600 + 300) == "3 h 05 min"
    assert age(stamp, start + 2 * 86400 + 4 * 3600) == "2 d 4 h"
    assert age(None, start) == ""
