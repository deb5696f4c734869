"""The data-path REST binding refuses what a browser sends for a web page (an ``Origin``
header, a ``Sec-Fetch-Site`` of another site); programs (curl, tritonclient.http) send neither.

Found by review (REST front): the binding reads ``text/plain`` and form bodies as JSON (what
``curl -d`` sends), so a page on any site could POST an inference, or a model load, as a CORS
"simple" request with no preflight, and a browser holding a client certificate for the
gateway (mTLS) would attach it. The admin listener (approvals inbox) is another app."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.test_input_bounds import Listens, backend, listens  # noqa: F401  (fixtures)
from tests.gateway.test_rest import json_request, token

IDS = [1, 2, 3]
BROWSER_PAGES = [
    {"origin": "https://evil.example"},
    {"origin": "null"},  # a sandboxed frame, a file: page
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},  # a sibling subdomain's page
    {"Sec-Fetch-Site": "Cross-Site"},
    {"origin": "http://gateway.example", "sec-fetch-site": "same-origin"},  # any Origin at all
]


@pytest.fixture
def served(listens: Listens) -> Listens:  # noqa: F811  (the gateway of test_input_bounds)
    return listens


def infer_url(at: Listens) -> str:
    return f"http://{at.rest}/v2/models/customer-profile/infer"


@pytest.mark.parametrize("headers", BROWSER_PAGES)
async def test_a_cross_site_simple_post_is_refused_before_anything_is_read(
    served: Listens, headers: dict[str, str]
) -> None:
    """The attack: a form's or fetch's text/plain POST, no preflight, credentials attached."""
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            infer_url(served),
            content=json.dumps(json_request(IDS)),
            headers={**token("ana", "analysts"), "content-type": "text/plain", **headers},
        )
    assert (reply.status_code, reply.json()["reason"]) == (403, "REST_BROWSER_REQUEST_REFUSED"), reply.text
    assert "web pages" in reply.json()["error"]
    assert "ssn" not in reply.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/customer-profile/load"),
        ("POST", "/v2/repository/index"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/customer-profile"),
        ("OPTIONS", "/v2/models/customer-profile/infer"),  # a preflight gets no CORS grant either
    ],
)
async def test_every_route_of_the_binding_refuses_a_page(served: Listens, method: str, path: str) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.request(
            method,
            f"http://{served.rest}{path}",
            headers={**token("steve", "data-stewards"), "origin": "https://evil.example"},
        )
    assert (reply.status_code, reply.json()["reason"]) == (403, "REST_BROWSER_REQUEST_REFUSED"), reply.text
    assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, tritonclient.http
        {"content-type": "application/x-www-form-urlencoded"},  # curl -d, as the README shows
        {"sec-fetch-site": "none"},  # typed into the address bar: no page made it
        {"sec-fetch-site": "same-origin"},
    ],
)
async def test_programs_and_requests_no_page_made_are_served(
    served: Listens, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            infer_url(served),
            content=json.dumps(json_request(IDS)),
            headers={**token("ana", "analysts"), **headers},
        )
        ready = await client.get(
            f"http://{served.rest}/v2/health/ready", headers={**token("ana", "analysts"), **headers}
        )
    assert reply.status_code == 200, reply.text
    assert [o["name"] for o in reply.json()["outputs"]][:1] == ["customer_id"]
    assert ready.status_code == 200, ready.text


async def test_the_admin_listener_is_another_app_and_unaffected(served: Listens) -> None:
    async with httpx.AsyncClient() as client:
        alive = await client.get(
            f"http://{served.admin}/healthz",
            headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
        )
    assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
