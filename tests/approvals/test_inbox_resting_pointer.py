"""A vote in the inbox comes only from a card the approver came onto. Real gateway, real
browser.

Cards never move (``test_inbox_cards_stay_put.py``), but what follows the list does: a new
request is added at the end of the list and pushes "Recent decisions" and "Next page" down,
so a requester's card appeared under a pointer resting on the recent decisions, and once the
1 s settle guard had passed the click meant for the table approved the request and released
the requester's call in clear (review of the stay-put fix). Now a card's buttons take no click
until the pointer has moved onto the card from outside it since the card appeared or moved (or
keyboard focus entered it): a change of the page moves content, never the pointer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.approvals.conftest import Stack, held, person, token
from tests.approvals.test_inbox_browser import SSN, open_signed_in
from tests.approvals.test_inbox_cards_stay_put import (
    approve_button,
    ask_async,
    rest_pointer_on,
    under_pointer,
    wait_enabled,
)
from tests.support.browser import chromium

# Where the element under a point sits: in which request's card, or else what it is.
WHAT_IS_AT = """([x, y]) => {
  const element = document.elementFromPoint(x, y);
  const card = element.closest("li[data-approval-id]");
  if (card) return card.dataset.approvalId;
  return element.closest("table.recent, .pager, #pending-list, main")?.className ?? "";
}"""

IN_VIEW = """s => {
  const r = document.querySelector(s).getBoundingClientRect();
  return r.top > 0 && r.bottom < innerHeight;
}"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile", viewport={"width": 1280, "height": 1400}) as context:
        yield context


def card_of(approval_id: str) -> str:
    return f"li[data-approval-id='{approval_id}']"


def scroll_to(page: Any, selector: str) -> None:
    """The approver scrolls with the wheel until the element is in view (other tests' requests
    may wait above it)."""
    box = page.locator(selector).bounding_box()
    if box["y"] > 100 and box["y"] + box["height"] < 1300:
        return
    page.mouse.wheel(0, box["y"] - 600)
    page.wait_for_function(IN_VIEW, arg=selector)
    page.wait_for_timeout(500)  # the scroll has ended


def no_vote_sent(page: Any) -> None:
    page.wait_for_timeout(1500)
    assert "flash" not in page.url


def test_a_card_added_under_a_pointer_resting_below_the_list_takes_no_click(
    stack: Stack, browser: Any
) -> None:
    owner, mallory = person("olivia"), person("mallory")
    owner_token = token(owner, "data-owners")
    for _ in range(4):  # the "Recent decisions" table under the list
        done = ask_async(stack, person("steward"))
        assert stack.api.deny(done, owner_token, "old").status_code == 200
    a_id = ask_async(stack, person("steward"))
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    page.locator(card_of(a_id)).evaluate("card => card.scrollIntoView()")  # A, the newest, is last
    card = page.locator(card_of(a_id)).bounding_box()
    button = page.locator(approve_button(a_id)).bounding_box()
    list_end = page.evaluate("document.querySelector('ul.requests').getBoundingClientRect().bottom")
    gap = page.evaluate("parseFloat(getComputedStyle(document.querySelector('ul.requests')).rowGap)")
    # Where the Approve button of a card added after A will be: now a row of the table below.
    x, y = (
        button["x"] + button["width"] / 2,
        list_end + gap + (button["y"] - card["y"]) + button["height"] / 2,
    )
    page.mouse.move(2, 2)
    page.mouse.move(x, y)  # the approver reads the recent decisions
    assert page.evaluate(WHAT_IS_AT, [x, y]) == "recent"

    call_m = held(stack.grpc, token(mallory, "data-stewards"), timeout=120)
    m_id = stack.api.pending_of(mallory, owner_token)["id"]
    page.locator(card_of(m_id)).wait_for(timeout=15_000)
    assert under_pointer(page, x, y) == f"approve-{m_id}"  # the page moved Mallory's card there

    page.mouse.move(x + 3, y + 2)  # the hand on the mouse is never quite still: moves inside her card
    page.mouse.move(x, y)
    page.wait_for_timeout(1200)  # past the settle guard
    page.mouse.click(x, y)  # the click meant for the recent decisions
    no_vote_sent(page)
    assert stack.api.show(m_id, owner_token)["state"] == "pending"
    assert page.locator(approve_button(m_id)).is_disabled()

    assert stack.api.deny(m_id, owner_token, "test over").status_code == 200
    assert call_m.result(timeout=60)["error"]["code"] == "PERMISSION_DENIED"
    page.close()


def test_an_approver_who_moves_onto_a_new_card_approves_it_with_one_click(stack: Stack, browser: Any) -> None:
    owner, steward = person("olivia"), person("steward")
    owner_token = token(owner, "data-owners")
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    a_id = ask_async(stack, person("steward"))
    rest_pointer_on(page, a_id)

    call_b = held(stack.grpc, token(steward, "data-stewards"), timeout=60)
    b_id = stack.api.pending_of(steward, owner_token)["id"]
    button = page.locator(approve_button(b_id))
    button.wait_for(timeout=15_000)
    scroll_to(page, approve_button(b_id))
    box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.wait_for_timeout(500)  # the approver sees it appear (a pointer already on its way when
    # it appeared, within 0.1 s, did not come onto it: it has to leave and come back)
    page.mouse.move(x, y)  # from A's Approve straight onto B's
    wait_enabled(page, b_id)
    page.mouse.click(x, y)  # one click

    page.wait_for_url(re.compile(r"/inbox\?flash=granted"), timeout=15_000)
    assert page.url.endswith(f"id={b_id}")
    result = call_b.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
    assert stack.api.show(a_id, owner_token)["state"] == "pending"
    assert stack.api.deny(a_id, owner_token, "test over").status_code == 200
    page.close()


def test_a_card_the_approver_came_onto_takes_no_click_once_something_moved_it(
    stack: Stack, browser: Any
) -> None:
    """Any layout change (here a block inserted above the list, as a flash message or a
    wrapped line would) that moves a card under the pointer leaves it without a click."""
    owner = person("olivia")
    owner_token = token(owner, "data-owners")
    a_id = ask_async(stack, person("steward"))
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    # A at the top of the view, so that A moved down by its own height is still in view (other
    # tests' requests may wait above it, and a card at the bottom would be moved out of it).
    page.locator(card_of(a_id)).evaluate("card => card.scrollIntoView({block: 'start'})")
    x, y = rest_pointer_on(page, a_id)  # the approver came onto A: it takes clicks
    bottom = page.locator(card_of(a_id)).bounding_box()
    shift = bottom["y"] + bottom["height"] - y + 30
    assert y + shift < page.evaluate("innerHeight") - 10, "A moved by the block would leave the view"
    page.mouse.move(x, y + shift)  # and moved on, below A
    assert page.evaluate(WHAT_IS_AT, [x, y + shift]) != a_id

    page.evaluate(
        """shift => {
          document.documentElement.style.overflowAnchor = "none";  // Chrome would scroll to hide it
          const block = document.createElement("div");
          block.style.height = shift + "px";
          document.querySelector("main").prepend(block);
        }""",
        shift,
    )
    assert under_pointer(page, x, y + shift) == f"approve-{a_id}"
    page.mouse.click(x, y + shift)  # at once, before anything noticed the move
    no_vote_sent(page)
    assert stack.api.show(a_id, owner_token)["state"] == "pending"
    assert page.locator(approve_button(a_id)).is_disabled()
    assert stack.api.deny(a_id, owner_token, "test over").status_code == 200
    page.close()


def test_enter_in_a_reason_votes_on_nothing_and_a_keyboard_approver_tabs_to_approve(
    stack: Stack, browser: Any
) -> None:
    owner = person("olivia")
    owner_token = token(owner, "data-owners")
    a_id = ask_async(stack, person("steward"))
    page = browser.new_page()
    open_signed_in(page, f"{stack.api.base}/inbox", owner_token)
    page.locator(f"{card_of(a_id)} a.title").focus()
    page.keyboard.press("Tab")  # into A's reason field: the keyboard came onto A
    assert page.evaluate("document.activeElement.name") == "reason"
    wait_enabled(page, a_id)
    page.keyboard.type("ticket CS-1042")
    page.keyboard.press("Enter")  # in the reason field: not a vote
    no_vote_sent(page)
    assert stack.api.show(a_id, owner_token)["state"] == "pending"

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.testid") == f"approve-{a_id}"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/inbox\?flash=granted"), timeout=15_000)
    shown = stack.api.show(a_id, owner_token)
    assert shown["state"] == "granted" and shown["votes"][0]["reason"] == "ticket CS-1042"
    page.close()
