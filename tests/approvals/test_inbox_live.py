"""The inbox follows what happens without a reload (``/inbox/live``, polled by inbox.js), and
pages through long lists with a next-page link. Real gateway, real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.approvals.conftest import Stack, grpc_infer, person, token
from tests.approvals.test_inbox_browser import open_signed_in
from tests.support.browser import chromium


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    with chromium(tmp_path / "profile", viewport={"width": 1280, "height": 860}) as context:
        yield context


def ask_async(stack: Stack, requester: str) -> str:
    """Open an approval request without holding a call; its id."""
    answer = grpc_infer(stack.grpc, token(requester, "data-stewards"), **{"x-labelgate-approval": "async"})
    assert answer.code == "FAILED_PRECONDITION", answer
    return answer.metadata["approval_id"]


def test_a_new_request_appears_and_a_decided_one_leaves_without_a_reload(stack: Stack, browser) -> None:
    owner, other_owner = person("olivia"), person("otto")
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", token(owner, "data-owners"))
    page.evaluate("window.labelgateNotReloaded = true")

    approval_id = ask_async(stack, person("steward"))
    card = page.locator(f"li[data-approval-id='{approval_id}']")
    card.wait_for(timeout=15_000)
    assert card.locator(f"[data-testid='approve-{approval_id}']").is_visible()

    assert stack.api.approve(approval_id, token(other_owner, "data-owners")).status_code == 200
    card.wait_for(state="detached", timeout=15_000)
    assert page.evaluate("window.labelgateNotReloaded") is True  # the same page all along


def test_the_live_list_needs_a_session(stack: Stack) -> None:
    import httpx

    answer = httpx.get(f"{stack.api.base}/inbox/live", timeout=10)
    assert answer.status_code == 401 and "SESSION_EXPIRED" in answer.text


def test_the_inbox_pages_with_a_next_link(stack: Stack, browser) -> None:
    owner, steward = person("olivia"), person("steward")
    oldest, middle, newest = (ask_async(stack, steward) for _ in range(3))
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", token(owner, "data-owners"))
    page.goto(f"{stack.api.base}/inbox?limit=2")
    shown = page.locator("li.request").evaluate_all("cards => cards.map(c => c.dataset.approvalId)")
    assert set(shown) == {middle, newest}
    page.click("[data-testid='next-page']")
    page.wait_for_url(re.compile(r"/inbox\?cursor="))
    assert page.locator(f"li[data-approval-id='{oldest}']").count() == 1
    assert page.locator(f"li[data-approval-id='{newest}']").count() == 0
