"""A real browser (Playwright driving Debian's Chromium) approves and denies held tritonclient calls.

The approver follows the deep link from the Slack webhook, signs in by pasting a token,
and clicks one button; the caller (a real ``tritonclient`` in a child process) is held
until then.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.approvals.conftest import Stack, dev_id, held, person, token
from tests.support.browser import chromium
from tests.support.procs import REPO

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1280, "height": 860}
    ) as context:
        yield context


def open_signed_in(page, link: str, bearer: str) -> None:
    """Open a notification's deep link; sign in with the token when the inbox asks."""
    page.goto(link)
    if page.locator("textarea#token").count():
        page.fill("textarea#token", bearer)
        page.click("button:has-text('Sign in')")
    page.wait_for_url(link)


def come_onto(page: Any, approval_id: str) -> None:
    """Move the pointer onto a request's card from outside it, as a person does before clicking
    one of its buttons: ``inbox.js`` takes no vote from a card the pointer has not come onto
    since it appeared (a card the page put under a resting pointer)."""
    page.mouse.move(2, 2)  # the left margin: on no card
    page.locator(f"li[data-approval-id='{approval_id}']").hover()


def vote(page: Any, approval_id: str, action: str, flash: str) -> None:
    """Click a card's vote button as a person does: come onto the card, wait for its buttons
    to take clicks, click. The page disables a card's buttons again whenever the card moves (a
    countdown text that unwraps a line, a window resized by a full-page screenshot, a card
    added above by the live list), and a person then comes onto it again; so does this, a
    few times, until the page has taken the vote (it goes to ``/inbox?flash=<flash>``)."""
    button = f"[data-testid='{action}-{approval_id}']"
    landed = re.compile(rf"/inbox\?flash={flash}")
    for _ in range(5):
        come_onto(page, approval_id)
        try:
            page.wait_for_selector(f"{button}:enabled", timeout=10_000)
            page.click(button, timeout=5_000)
            page.wait_for_url(landed, timeout=15_000)
            return
        except PlaywrightTimeout:
            if landed.search(page.url):
                return
    raise AssertionError(f"the inbox never took the {action} vote on {approval_id}")


def link_from_slack(stack: Stack, requester: str) -> str:
    slack = stack.receiver.wait_for(
        "/slack", lambda b: requester in b["text"] and "Approval needed" in b["text"]
    )
    return next(
        e["url"] for block in slack["blocks"] if block["type"] == "actions" for e in block["elements"]
    )


def test_an_approver_clicks_approve_and_the_held_call_sees_clear_values(
    stack: Stack, browser, tmp_path: Path
) -> None:
    steward, owner = person("steward"), person("olivia")
    owner_token = token(owner, "data-owners")
    call = held(
        stack.grpc,
        token(steward, "data-stewards"),
        timeout=60,
        **{"x-labelgate-justification": "Chargeback dispute CS-1042: verify the card on file"},
    )
    link = link_from_slack(stack, steward)
    approval_id = link.rsplit("/", 1)[1]

    page = browser.new_page()
    open_signed_in(page, link, owner_token)
    assert page.locator("h1").inner_text().startswith(dev_id(steward))
    assert "Chargeback dispute CS-1042" in page.content()

    page.goto(f"{stack.api.base}/inbox")
    card = page.locator(f"li[data-approval-id='{approval_id}']")
    assert "confidential" in card.inner_text() and "outputs.ssn" in card.inner_text()
    come_onto(page, approval_id)  # its buttons take clicks now (and show so in the screenshot)
    page.wait_for_selector(f"[data-testid='approve-{approval_id}']:enabled")
    page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
    if os.environ.get("LABELGATE_UPDATE_DOCS_SCREENSHOT"):  # tests never write into the repo otherwise
        shutil.copy(tmp_path / "inbox.png", REPO / "docs" / "approvals-inbox.png")
    assert not call.done()

    vote(page, approval_id, "approve", "granted")
    assert "held call is released" in page.locator(".alert.ok").inner_text()

    result = call.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
    assert stack.api.show(approval_id, owner_token)["votes"][0]["approver"] == dev_id(owner)
    page.close()


def test_an_approver_clicks_deny_and_the_caller_gets_permission_denied(stack: Stack, browser) -> None:
    steward, owner = person("steward"), person("omar")
    call = held(stack.grpc, token(steward, "data-stewards"), timeout=60)
    link = link_from_slack(stack, steward)
    approval_id = link.rsplit("/", 1)[1]

    page = browser.new_page()
    open_signed_in(page, link, token(owner, "data-owners"))
    page.goto(f"{stack.api.base}/inbox")
    card = page.locator(f"li[data-approval-id='{approval_id}']")
    card.locator("input[name=reason]").fill("not covered by a ticket")
    vote(page, approval_id, "deny", "denied")

    result = call.result(timeout=60)
    assert result["error"]["code"] == "PERMISSION_DENIED"
    assert "not covered by a ticket" in result["error"]["message"]
    page.close()
