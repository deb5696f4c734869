"""The fleet page (``GET /fleet/page``): the real app in process, real OPA validation of the source."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from labelgate.bundle.server import ServerSettings, age, create_app
from tests.bundle.helpers import TOKEN
from tests.support.procs import opa_binary

PAGE = "/fleet/page"


@asynccontextmanager
async def serving(
    source: Path, state: Path, token: str | None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(
        ServerSettings(source=source, token=token, state_dir=state, opa=opa_binary(), poll_interval=0.05)
    )
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bundles", headers=headers
        ) as client:
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
    async with serving(policy_source, tmp_path / "state", TOKEN) as (app, client):
        revision = app.state.publisher.current.revision
        empty = await client.get(PAGE)
        assert empty.status_code == 200 and "No OPA has reported yet" in empty.text
        await client.post("/status", json=report("opa-east-1", revision, version="1.22.3"))
        await client.post("/status", json=report("opa-west-2", "an-old-revision"))
        await client.post(
            "/logs", json=[{"decision_id": f"d-{n}", "labels": {"id": "opa-east-1"}} for n in range(3)]
        )

        page = await client.get(PAGE)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        html = page.text
        assert f'<code data-testid="revision">{revision}</code>' in html
        east = html[html.index('data-instance="opa-east-1"') :]
        east = east[: east.index("</tr>")]
        assert revision in east and "current" in east and "version=1.22.3" in east
        assert re.search(r">\d+ s ago<", east)  # an age, not a timestamp
        assert '<td data-label="Decision logs" class="num">3' in east
        west = html[html.index('data-instance="opa-west-2"') :]
        west = west[: west.index("</tr>")]
        assert "an-old-revision" in west and "behind" in west
        assert '<td data-label="Decision logs" class="num">0' in west


async def test_instance_labels_are_escaped(policy_source: Path, tmp_path: Path) -> None:
    attack = "<script>alert(1)</script>"
    async with serving(policy_source, tmp_path / "state", TOKEN) as (app, client):
        revision = app.state.publisher.current.revision
        sent = report(attack, revision, team='"><img src=x onerror=alert(2)>')
        assert (await client.post("/status", json=sent)).status_code == 200
        html = (await client.get(PAGE)).text
    assert attack not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


async def test_with_a_token_configured_the_page_needs_it(policy_source: Path, tmp_path: Path) -> None:
    async with serving(policy_source, tmp_path / "state", TOKEN) as (app, client):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bundles") as anonymous:
            missing = await anonymous.get(PAGE)
            assert missing.status_code == 401 and missing.json()["reason"] == "BUNDLE_TOKEN_MISSING"
            wrong = await anonymous.get(PAGE, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["reason"] == "BUNDLE_TOKEN_INVALID"
            in_url = await anonymous.get(PAGE, params={"token": TOKEN})  # never accepted in the URL
            assert in_url.status_code == 401
        assert (await client.get(PAGE)).status_code == 200


async def test_without_a_token_the_page_is_open_and_shows_a_rejected_edit(
    policy_source: Path, tmp_path: Path
) -> None:
    async with serving(policy_source, tmp_path / "state", None) as (app, client):
        publisher = app.state.publisher
        before = publisher.current.revision
        healthy = await client.get(PAGE)
        assert healthy.status_code == 200 and 'data-testid="publish-error"' not in healthy.text
        broken = policy_source / "labelgate" / "decision" / "broken.rego"
        broken.write_text("package labelgate.decision\n\nbroken if {\n")
        deadline = time.monotonic() + 20
        while publisher.failure is None:
            assert time.monotonic() < deadline, "the edit was never rejected"
            await asyncio.sleep(0.02)
        html = (await client.get(PAGE)).text
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
