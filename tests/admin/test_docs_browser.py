"""The API docs cannot reach the inbox (issue 19, finding 5), in a real browser (Playwright
driving Debian's Chromium) against a real ``labelgate serve``.

An approver is signed in to the inbox in the same browser. On the docs page (Swagger UI and
ReDoc from local, pinned assets, with SRI), a script can read neither the session cookie nor
an inbox page (with its CSRF token), cannot open the inbox in a window, and no script other
than the pinned files runs at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.admin.conftest import Admin
from tests.approvals.conftest import grpc_infer, person, token
from tests.support.browser import chromium

playwright = pytest.importorskip("playwright.sync_api")

PROBE_SCRIPT = """async () => {
  const out = {origin: self.origin};
  try { out.cookie = document.cookie; } catch (e) { out.cookie = "blocked: " + e.name; }
  try {
    const r = await fetch("/inbox", {credentials: "include"});
    const text = await r.text();
    out.inbox = text.includes('name="csrf"') ? "READ THE CSRF TOKEN" : "read, no token: " + r.status;
  } catch (e) { out.inbox = "blocked: " + e.name; }
  try {
    const r = await fetch("/api/v1/approvals", {credentials: "include"});
    out.api = "answered " + r.status;
  } catch (e) { out.api = "blocked: " + e.name; }
  try { out.popup = window.open("/inbox") === null ? "blocked" : "OPENED"; }
  catch (e) { out.popup = "blocked: " + e.name; }
  return out;
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with chromium(tmp_path_factory.mktemp("chromium-docs-profile")) as context:
        yield context


def test_a_script_on_the_docs_page_cannot_reach_the_inbox(admin: Admin, browser) -> None:
    steward, owner = person("steward"), person("olivia")
    answer = grpc_infer(admin.grpc, token(steward, "data-stewards"), **{"x-labelgate-approval": "async"})
    assert answer.code == "FAILED_PRECONDITION", answer
    approval_id = answer.metadata["approval_id"]

    inbox = browser.new_page()
    inbox.goto(f"{admin.base}/inbox")
    inbox.fill("textarea#token", token(owner, "data-owners"))
    inbox.click("button:has-text('Sign in')")
    inbox.wait_for_url(f"{admin.base}/inbox")
    assert approval_id in inbox.content()  # signed in, with a request to vote on
    session = next(c for c in browser.cookies() if c["name"] == "labelgate_session")
    assert session["httpOnly"] and session["path"] == "/inbox" and session["sameSite"] == "Strict"

    docs = browser.new_page()
    blocked: list[str] = []
    docs.on("console", lambda message: blocked.append(message.text) if message.type == "error" else None)
    response = docs.goto(f"{admin.base}/api-docs/")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "sandbox allow-scripts" in csp and "frame-ancestors 'none'" in csp
    html = docs.content()
    assert 'integrity="sha384-' in html and "cdn" not in html.lower()
    docs.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "labelgate admin" in docs.inner_text(".swagger-ui .info .title")
    assert docs.locator(".opblock-tag", has_text="approvals").count() == 1

    found = docs.evaluate(PROBE_SCRIPT)
    assert found["origin"] == "null", found  # sandboxed: an opaque origin, not the inbox's
    assert found["cookie"].startswith("blocked"), found
    assert found["inbox"].startswith("blocked"), found
    assert found["api"].startswith("blocked"), found
    assert found["popup"].startswith("blocked"), found
    # An injected script does not run: only the pinned files may (script-src 'self').
    with pytest.raises(playwright.Error):
        docs.add_script_tag(content="window.injected = true;")
    assert docs.evaluate("() => window.injected === undefined")

    redoc = browser.new_page()
    redoc.goto(f"{admin.base}/api-docs/redoc")
    redoc.wait_for_selector("#redoc h1", timeout=20_000)
    assert "labelgate admin" in redoc.inner_text("#redoc h1")

    # The request is untouched, and the inbox still works for the person signed in to it.
    inbox.reload()
    assert approval_id in inbox.content()
    state = httpx.get(
        f"{admin.base}/api/v1/approvals/{approval_id}",
        headers={"authorization": f"Bearer {token(owner, 'data-owners')}"},
        timeout=10,
    ).json()["state"]
    assert state == "pending"
    assert not [m for m in blocked if "integrity" in m.lower()], blocked


def test_the_old_docs_path_is_gone(admin: Admin) -> None:
    assert httpx.get(f"{admin.base}/api/v1/docs", timeout=10).status_code == 404
    assert httpx.get(f"{admin.base}/api/v1/openapi.json", timeout=10).status_code == 200
