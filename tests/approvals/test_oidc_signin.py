"""Approvers sign in to the inbox through a real OpenID Provider (npm's oidc-provider, its
development login pages) in Debian's chromium, then approve a call a real tritonclient made.

The provider's login page takes any login; ``accounts`` gives each login its groups. The
gateway trusts the dev key for callers (tritonclient) and the provider for approvers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import yaml

from tests.approvals.conftest import (
    Api,
    gateway_config,
    grpc_infer,
    held,
    person,
    running_gateway,
    token,
)
from tests.approvals.test_inbox_browser import vote
from tests.support.browser import chromium
from tests.support.oidc import Provider, running_provider
from tests.support.procs import free_port, labelgate_command, running

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
OWNER = "olivia-oidc"
NOBODY = "mallory-oidc"


@dataclass
class OidcStack:
    grpc: str
    api: Api
    provider: Provider


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcStack]:
    folder = tmp_path_factory.mktemp("oidc-stack")
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    approvals = {"sqlite_file": str(folder / "approvals.db"), "hold_timeout_seconds": 60}
    config, address, admin = gateway_config(folder, backend, approvals)
    callback = f"{admin}/inbox/oidc/callback"
    accounts = {OWNER: ["data-owners"], NOBODY: ["analysts"]}
    with (
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
        running_provider(folder, [callback], accounts) as provider,
    ):
        settings = yaml.safe_load(config.read_text())
        settings["admin"] = {
            "oidc": {
                "issuer": provider.issuer,
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
            }
        }
        config.write_text(yaml.safe_dump(settings))
        with running_gateway(config, address, folder / "gateway.log"):
            yield OidcStack(address, Api(admin), provider)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    with chromium(tmp_path / "profile", viewport={"width": 1280, "height": 860}) as context:
        # Only loopback: the provider's dev pages import a web font nobody needs here.
        context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
        yield context


def sign_in(page, stack: OidcStack, login: str) -> None:
    """From the inbox's sign-in page through the provider's login and consent pages, back."""
    page.goto(f"{stack.api.base}/inbox")
    assert page.locator("textarea#token").count() == 0  # no token pasting with OIDC
    page.click("#oidc-signin")
    page.wait_for_url(re.compile(re.escape(stack.provider.issuer) + "/interaction/"))
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the provider's dev login page")
    page.click("button[type=submit]")
    page.click("button:has-text('Continue')")  # consent to openid + groups


def rewrite_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def issuer_id(stack: OidcStack, login: str) -> str:
    return f"jwt:{stack.provider.issuer}#{login}"


def test_an_approver_signs_in_with_the_provider_and_releases_a_held_tritonclient_call(
    oidc_stack: OidcStack, browser
) -> None:
    steward = person("steward")
    call = held(oidc_stack.grpc, token(steward, "data-stewards"), timeout=60)
    page = browser.new_page()
    sign_in(page, oidc_stack, OWNER)
    page.wait_for_url(f"{oidc_stack.api.base}/inbox")
    assert issuer_id(oidc_stack, OWNER) in page.locator(".who").inner_text()
    assert "data-owners" in page.locator(".who").inner_text()

    card = page.locator("li.request", has_text=steward)
    card.wait_for()
    approval_id = card.get_attribute("data-approval-id")
    assert not call.done()
    vote(page, approval_id, "approve", "granted")

    result = call.result(timeout=60)
    assert "error" not in result, result
    assert all(SSN.match(value) for value in result["outputs"]["ssn"]["values"])
    # The approver's API token from the same issuer would name the same person.
    page.goto(f"{oidc_stack.api.base}/inbox/{approval_id}")
    assert issuer_id(oidc_stack, OWNER) in page.locator(".votes, main").first.inner_text()


def test_a_user_without_the_approver_group_cannot_vote(oidc_stack: OidcStack, browser) -> None:
    steward = person("steward")
    pending = grpc_infer(
        oidc_stack.grpc, token(steward, "data-stewards"), **{"x-labelgate-approval": "async"}
    )
    approval_id = pending.metadata["approval_id"]
    page = browser.new_page()
    sign_in(page, oidc_stack, NOBODY)
    page.wait_for_url(f"{oidc_stack.api.base}/inbox")
    assert page.locator(f"li[data-approval-id='{approval_id}']").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.request.post(
        f"{oidc_stack.api.base}/inbox/{approval_id}/approve",
        form={"csrf": csrf or "", "reason": "let me in"},
        max_redirects=0,
    )
    assert refused.status == 404 and "APPROVAL_NOT_FOUND" in refused.text()
    owner_view = oidc_stack.api.show(approval_id, token("admin-check", "data-owners"))
    assert owner_view["state"] == "pending" and owner_view["votes"] == []


def forge_authorization_request(page, stack: OidcStack, **changes: str) -> None:
    """Rewrite what the inbox asks the provider (the browser follows redirects on its own, so
    the inbox's own answer is intercepted and its Location changed): the provider then
    answers a request the inbox did not make."""

    def rewrite(route) -> None:
        answer = route.fetch(max_redirects=0)
        headers = {**answer.headers, "location": rewrite_query(answer.headers["location"], **changes)}
        route.fulfill(response=answer, headers=headers)

    page.route(re.compile(re.escape(stack.api.base) + r"/inbox/oidc/login.*"), rewrite)


@pytest.mark.parametrize(
    ("changed", "reason"), [("state", "OIDC_STATE_MISMATCH"), ("nonce", "OIDC_NONCE_MISMATCH")]
)
def test_an_answer_to_another_state_or_nonce_is_refused(
    oidc_stack: OidcStack, browser, changed: str, reason: str
) -> None:
    page = browser.new_page()
    forge_authorization_request(page, oidc_stack, **{changed: "forged-by-someone-else"})
    sign_in(page, oidc_stack, OWNER)
    page.locator("code", has_text=reason).wait_for()
    page.goto(f"{oidc_stack.api.base}/inbox")
    assert page.locator("#oidc-signin").count() == 1  # still signed out


def test_a_callback_without_the_pending_login_is_refused(oidc_stack: OidcStack) -> None:
    started = httpx.get(f"{oidc_stack.api.base}/inbox/oidc/login", timeout=10)
    assert started.status_code == 303
    state = dict(parse_qsl(urlsplit(started.headers["location"]).query))["state"]
    answer = httpx.get(f"{oidc_stack.api.base}/inbox/oidc/callback", params={"state": state, "code": "x"})
    assert answer.status_code == 401 and "OIDC_LOGIN_EXPIRED" in answer.text


def test_token_pasting_is_off_when_oidc_is_configured(oidc_stack: OidcStack) -> None:
    answer = httpx.post(
        f"{oidc_stack.api.base}/inbox/signin",
        data={"token": token(OWNER, "data-owners"), "csrf": "x"},
        cookies={"labelgate_signin": "x"},
        timeout=10,
    )
    assert answer.status_code == 403 and "TOKEN_SIGNIN_DISABLED" in answer.text
