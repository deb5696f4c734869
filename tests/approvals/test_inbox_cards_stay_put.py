"""A click in the inbox lands on the request the approver saw in that place. Real gateway,
real browser.

The inbox follows the pending list without a reload (``static/inbox.js``). It used to swap the
whole list in, sorted soonest-to-expire first: a requester who opened a request with an
earlier deadline (a held call with a 30 s deadline) moved their card into the place of the
one under the approver's pointer, and the click meant for it released their call in clear.
Now a card shown never moves: new requests are added at the end (the server lists them in the
order they arrived, so a reload agrees), one no longer waiting stays in place, disabled, while
the approver points at the list, and a card that just appeared or moved takes no click until
the approver's pointer has come onto it (``test_inbox_resting_pointer.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.approvals.conftest import Stack, grpc_infer, held, person, token
from tests.approvals.test_inbox_browser import come_onto, open_signed_in
from tests.support.browser import chromium

SHOWN_IDS = "cards => cards.map(c => c.dataset.approvalId)"
# Resolves with what the first card added to the list looked like the moment it was added.
FIRST_NEW_CARD = """() => {
  const list = document.querySelector("ul.requests");
  const known = new Set([...list.children].map(c => c.dataset.approvalId));
  window.firstNewCard = new Promise(resolve => {
    setTimeout(() => resolve(null), 15000);
    new MutationObserver((changes, observer) => {
      const card = [...list.children].find(c => !known.has(c.dataset.approvalId));
      if (!card) return;
      observer.disconnect();
      const buttons = [...card.querySelectorAll("form.vote button")];
      resolve({ id: card.dataset.approvalId, last: card === list.lastElementChild,
                buttons: buttons.length, disabled: buttons.every(b => b.disabled) });
    }).observe(list, { childList: true });
  });
}"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile", viewport={"width": 1280, "height": 860}) as context:
        yield context


def ask_async(stack: Stack, requester: str) -> str:
    answer = grpc_infer(stack.grpc, token(requester, "data-stewards"), **{"x-labelgate-approval": "async"})
    assert answer.code == "FAILED_PRECONDITION", answer
    return answer.metadata["approval_id"]


def approve_button(approval_id: str) -> str:
    return f"[data-testid='approve-{approval_id}']"


def wait_enabled(page: Any, approval_id: str, enabled: bool = True) -> None:
    page.wait_for_function(
        "([selector, enabled]) => document.querySelector(selector)?.disabled === !enabled",
        arg=[approve_button(approval_id), enabled],
        timeout=15_000,
    )


def rest_pointer_on(page: Any, approval_id: str) -> tuple[float, float]:
    """The approver moves onto a request's card and rests the pointer on its Approve button,
    once that takes clicks."""
    button = page.locator(approve_button(approval_id))
    button.wait_for(timeout=15_000)
    come_onto(page, approval_id)
    wait_enabled(page, approval_id)
    box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    return x, y


def under_pointer(page: Any, x: float, y: float) -> str:
    return str(page.evaluate("([x, y]) => document.elementFromPoint(x, y).dataset.testid || ''", [x, y]))


def shown_ids(page: Any) -> list[str]:
    return list(page.locator("li.request").evaluate_all(SHOWN_IDS))


def test_a_click_meant_for_one_request_never_approves_a_sooner_expiring_one(
    stack: Stack, browser: Any
) -> None:
    owner, steward, mallory = person("olivia"), person("steward"), person("mallory")
    owner_token = token(owner, "data-owners")
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    a_id = ask_async(stack, steward)
    x, y = rest_pointer_on(page, a_id)

    # Mallory's call is held with a 30 s deadline: it expires long before A does.
    call_b = held(stack.grpc, token(mallory, "data-stewards"), timeout=30)
    b_id = stack.api.pending_of(mallory, owner_token)["id"]
    page.locator(f"li[data-approval-id='{b_id}']").wait_for(timeout=15_000)
    assert under_pointer(page, x, y) == f"approve-{a_id}"

    page.mouse.click(x, y)  # the click meant for A
    page.wait_for_url(re.compile(r"/inbox\?flash="), timeout=15_000)
    assert page.url.endswith(f"id={a_id}")
    assert stack.api.show(a_id, owner_token)["state"] == "granted"
    assert stack.api.show(b_id, owner_token)["state"] == "pending"
    assert not call_b.done()

    assert stack.api.deny(b_id, owner_token, "not this one").status_code == 200
    assert call_b.result(timeout=60)["error"]["code"] == "PERMISSION_DENIED"
    page.close()


def test_a_new_request_appears_after_the_shown_ones_and_takes_clicks_once_pointed_at(
    stack: Stack, browser: Any
) -> None:
    owner, steward, mallory = person("olivia"), person("steward"), person("mallory")
    owner_token = token(owner, "data-owners")
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    page.evaluate("window.labelgateNotReloaded = true")
    a_id = ask_async(stack, steward)
    rest_pointer_on(page, a_id)
    a_box = page.locator(approve_button(a_id)).bounding_box()

    page.evaluate(FIRST_NEW_CARD)
    call_b = held(stack.grpc, token(mallory, "data-stewards"), timeout=30)
    b_id = stack.api.pending_of(mallory, owner_token)["id"]
    first = page.evaluate("window.firstNewCard")
    assert first == {"id": b_id, "last": True, "buttons": 2, "disabled": True}  # appeared: no click yet
    page.wait_for_timeout(1500)
    assert page.locator(approve_button(b_id)).is_disabled()  # nor later, while nobody pointed at it
    assert page.locator(approve_button(a_id)).bounding_box() == a_box
    rest_pointer_on(page, b_id)  # ... the approver moves onto it: it takes one
    assert page.evaluate("window.labelgateNotReloaded") is True  # the inbox followed without a reload
    live = shown_ids(page)
    assert live.index(a_id) < live.index(b_id)

    page.reload()  # the server lists them as the page kept them (B expires first, yet comes after A)
    reloaded = shown_ids(page)
    assert [i for i in reloaded if i in live] == [i for i in live if i in reloaded]
    assert reloaded.index(a_id) < reloaded.index(b_id)

    assert stack.api.deny(b_id, owner_token, "not this one").status_code == 200
    assert call_b.result(timeout=60)["error"]["code"] == "PERMISSION_DENIED"
    page.close()


def test_a_request_decided_under_the_pointer_stays_put_and_cannot_be_approved(
    stack: Stack, browser: Any
) -> None:
    owner, other_owner = person("olivia"), person("otto")
    owner_token = token(owner, "data-owners")
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    a_id = ask_async(stack, person("steward"))
    b_id = ask_async(stack, person("steward"))
    page.locator(approve_button(b_id)).wait_for(timeout=15_000)
    x, y = rest_pointer_on(page, a_id)
    b_box = page.locator(approve_button(b_id)).bounding_box()

    assert stack.api.deny(a_id, token(other_owner, "data-owners"), "no ticket").status_code == 200
    wait_enabled(page, a_id, enabled=False)  # greyed in place: B stays where it was
    assert page.locator(approve_button(b_id)).bounding_box() == b_box
    assert under_pointer(page, x, y) == f"approve-{a_id}"
    page.mouse.click(x, y)
    page.wait_for_timeout(1500)
    assert "flash" not in page.url
    assert len(stack.api.show(a_id, owner_token)["votes"]) == 1  # the other owner's denial only

    page.mouse.move(5, 5)  # off the list: the decided card leaves
    page.locator(f"li[data-approval-id='{a_id}']").wait_for(state="detached", timeout=15_000)
    assert stack.api.deny(b_id, owner_token, "test over").status_code == 200
    page.close()
