"""The web inbox's session cookie, CSRF protection and page rules, over plain HTTP."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx

from tests.approvals.conftest import Stack, grpc_infer, person, token


def ask_async(stack: Stack, bearer: str) -> str:
    answer = grpc_infer(stack.grpc, bearer, **{"x-labelgate-approval": "async"})
    assert answer.code == "FAILED_PRECONDITION", answer
    return answer.metadata["approval_id"]


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} field in the page"
    return match.group(1)


@contextlib.contextmanager
def signed_in(stack: Stack, bearer: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api.base, timeout=10) as client:
        page = client.get("/inbox")
        assert "Sign in" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        form = {"csrf": hidden(page.text, "csrf"), "next": "/inbox", "token": bearer}
        response = client.post("/inbox/signin", data=form)
        assert response.status_code == 303 and response.headers["location"] == "/inbox"
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "session" in v)
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/inbox" in cookie
        # A derived session token, never the bearer token (nor its signature).
        assert bearer not in cookie and bearer.rsplit(".", 1)[1] not in cookie
        yield client


def test_sign_in_needs_the_forms_own_csrf_value_and_a_valid_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api.base, timeout=10) as client:
        page = client.get("/inbox")
        forged = client.post(
            "/inbox/signin", data={"csrf": "guess", "token": token(person("o"), "data-owners")}
        )
        assert forged.status_code == 403 and "labelgate_session" not in forged.headers.get("set-cookie", "")
        page = client.get("/inbox")
        bad = client.post("/inbox/signin", data={"csrf": hidden(page.text, "csrf"), "token": "nonsense"})
        assert bad.status_code == 401 and "That token was refused" in bad.text


def test_votes_from_the_inbox_need_the_session_csrf_token_and_the_same_origin(stack: Stack) -> None:
    steward, owner = person("steward"), person("owner")
    approval_id = ask_async(stack, token(steward, "data-stewards"))
    owner_token = token(owner, "data-owners")
    with signed_in(stack, owner_token) as client:
        page = client.get(f"/inbox/{approval_id}")
        assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
        csrf = hidden(page.text, "csrf")

        missing = client.post(f"/inbox/{approval_id}/approve", data={"reason": "x"})
        assert missing.status_code == 403 and "CSRF_TOKEN_INVALID" in missing.text
        other_site = client.post(
            f"/inbox/{approval_id}/approve", data={"csrf": csrf}, headers={"origin": "https://evil.example"}
        )
        assert other_site.status_code == 403 and "CROSS_ORIGIN_FORM" in other_site.text
        assert stack.api.show(approval_id, owner_token)["state"] == "pending"

        done = client.post(f"/inbox/{approval_id}/approve", data={"csrf": csrf, "reason": "fine"})
        assert done.status_code == 303 and "flash=granted" in done.headers["location"]
    assert stack.api.show(approval_id, owner_token)["votes"][0]["reason"] == "fine"


def test_the_requesters_own_page_has_no_buttons_and_a_forced_vote_is_refused(stack: Stack) -> None:
    ada = person("ada")
    ada_token = token(ada, "data-stewards", "data-owners", "admins")
    approval_id = ask_async(stack, ada_token)
    with signed_in(stack, ada_token) as client:
        page = client.get(f"/inbox/{approval_id}")
        assert f"approve-{approval_id}" not in page.text and "someone else" in page.text
        forced = client.post(f"/inbox/{approval_id}/approve", data={"csrf": hidden(page.text, "csrf")})
        assert forced.status_code == 403 and "SELF_APPROVAL" in forced.text
        assert "text/html" in forced.headers["content-type"]


def test_a_person_who_may_not_see_a_request_gets_not_found(stack: Stack) -> None:
    approval_id = ask_async(stack, token(person("steward"), "data-stewards"))
    with signed_in(stack, token(person("analyst"), "analysts")) as client:
        assert client.get(f"/inbox/{approval_id}").status_code == 404
        assert approval_id not in client.get("/inbox").text


def test_a_vote_reason_with_a_lone_surrogate_never_reaches_the_record(stack: Stack) -> None:
    """A reason goes into the vote's audit event, which the audit client refuses when it holds
    text with no UTF-8 form (a lone surrogate): the record would be lost. Neither way in lets
    one through: the API refuses it (400), the inbox form decodes it as U+FFFD."""
    steward, owner = person("steward"), person("owner")
    approval_id = ask_async(stack, token(steward, "data-stewards"))
    owner_token = token(owner, "data-owners")
    refused = httpx.post(
        f"{stack.api.base}/api/v1/approvals/{approval_id}/approve",
        headers={"authorization": f"Bearer {owner_token}", "content-type": "application/json"},
        content=b'{"reason": "\\ud800 fine"}',
        timeout=10,
    )
    assert refused.status_code == 400 and refused.json()["reason"] == "INVALID_REQUEST"
    assert stack.api.show(approval_id, owner_token)["votes"] == []
    with signed_in(stack, owner_token) as client:
        csrf = hidden(client.get(f"/inbox/{approval_id}").text, "csrf")
        form = b"csrf=" + csrf.encode() + b"&reason=%ED%A0%80a\xed\xa0\x80"  # escaped and raw
        done = client.post(
            f"/inbox/{approval_id}/approve",
            content=form,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 303, done.text
    (vote,) = stack.api.show(approval_id, owner_token)["votes"]
    assert vote["reason"] == "\ufffd" * 3 + "a" + "\ufffd" * 3
