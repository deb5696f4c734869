"""The API docs in process: off by default, pinned assets, a changed asset turns them off
(issue 19, finding 5; the browser test is test_docs_browser.py)."""

from __future__ import annotations

from pathlib import Path

import httpx

from labelgate.admin.app import build_admin_app
from labelgate.admin.docs import PINNED, load_assets, sri
from labelgate.config import AdminSettings


async def test_docs_are_off_by_default_and_in_process() -> None:
    async def ready() -> dict[str, bool]:
        return {}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_admin_app(ready)), base_url="http://a"
    ) as client:
        assert (await client.get("/api-docs/")).status_code == 404
    on = build_admin_app(ready, settings=AdminSettings(api_docs=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=on), base_url="http://a") as client:
        page = await client.get("/api-docs/")
        assert page.status_code == 200 and "sandbox allow-scripts" in page.headers["content-security-policy"]
        asset = await client.get("/api-docs/assets/swagger-ui-bundle.js")
        assert sri(asset.content) == PINNED["swagger-ui-bundle.js"][1]
        assert asset.headers["access-control-allow-origin"] == "*"


def test_a_changed_asset_turns_the_docs_off(tmp_path: Path) -> None:
    assets, problems = load_assets()
    assert problems == []
    for name in PINNED:
        (tmp_path / name).write_bytes(assets[name][1])
    (tmp_path / "swagger-ui-bundle.js").write_bytes(assets["swagger-ui-bundle.js"][1] + b"\n//evil")
    _, problems = load_assets(tmp_path)
    assert problems == ["swagger-ui-bundle.js does not match its pinned digest"]
