"""The leak check: for every persona the default policy does not clear for confidential or
restricted data, none of those values the backend produced appears anywhere in the bytes the
client receives: not in the real Triton client's view (its full JSON dump), not in the
serialized response on the wire, not in a refusal's message, details or trailers.

The values come from a direct call to the backend, so the check follows whatever the backend
really sends.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from tests.gateway.aio import infer, infer_wire_bytes, outputs_of, texts
from tests.gateway.expected import (
    CUSTOMER_OUTPUTS,
    column,
    confidential_and_restricted,
    customer_request,
)
from tests.gateway.harness import (
    ENGINES,
    PERSONAS,
    GatewayPool,
    TokenIssuer,
)
from tests.support.triton import run_probe

IDS = list(range(30))  # five rows of each notes variant
TYPED_OUTPUTS = [name for name in CUSTOMER_OUTPUTS if name != "account_secret"]
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
CARD = re.compile(r"\b\d{16}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}\d{10,30}\b")


def secrets_of_direct_call(backend: str) -> list[str]:
    """Confidential and restricted values in a direct backend response: columns, and what the
    notes hide (SSNs, card numbers, IBANs, in free text and in nested JSON)."""
    direct = outputs_of(asyncio.run(infer(backend, customer_request(IDS))))
    found = [value for name in ("ssn", "card_number", "account_secret") for value in texts(direct[name])]
    for notes in texts(direct["notes"]):
        found += SSN.findall(notes) + CARD.findall(notes) + IBAN.findall(notes)
    return sorted(set(found))


@pytest.fixture(scope="module")
def secrets(backend: str) -> list[str]:
    found = secrets_of_direct_call(backend)
    # The extraction must catch everything the demo data hides, or the check proves nothing.
    missing = set(confidential_and_restricted(IDS)) - set(found)
    assert not missing, f"the direct call lacks {len(missing)} expected values"
    return found


async def wire_bytes(address: str, headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [
        ("wire/raw", await infer_wire_bytes(address, customer_request(IDS), headers)),
        (
            "wire/typed",
            await infer_wire_bytes(address, customer_request(IDS, TYPED_OUTPUTS, raw=False), headers),
        ),
        (
            "wire/secret-by-name",
            await infer_wire_bytes(address, customer_request(IDS, ["account_secret"]), headers),
        ),
    ]


@pytest.fixture(scope="module", params=ENGINES)
def received(
    request: pytest.FixtureRequest, gateways: GatewayPool, token_issuer: TokenIssuer
) -> dict[str, list[tuple[str, bytes]]]:
    """persona -> every (what, bytes) the client received through the gateway of one engine."""
    gateway = gateways.get(request.param)
    calls: list[dict[str, Any]] = []
    for persona in PERSONAS:
        headers = token_issuer.headers(persona)
        base = {"op": "infer", "model": "customer-profile", "customer_ids": IDS, "headers": headers}
        calls += [base, {**base, "outputs": TYPED_OUTPUTS, "binary": False}]
    results = iter(run_probe(calls, url=gateway.address))
    seen: dict[str, list[tuple[str, bytes]]] = {}
    for persona in PERSONAS:
        seen[persona] = [
            ("tritonclient/raw", json.dumps(next(results)).encode()),
            ("tritonclient/typed", json.dumps(next(results)).encode()),
            *asyncio.run(wire_bytes(gateway.address, token_issuer.headers(persona))),
        ]
    return seen


@pytest.mark.parametrize("persona", list(PERSONAS))
def test_no_confidential_or_restricted_value_reaches_the_client(
    received: dict[str, list[tuple[str, bytes]]], secrets: list[str], persona: str
) -> None:
    for what, data in received[persona]:
        assert data, f"{what}: nothing received"
        leaked = [value for value in secrets if value.encode() in data]
        assert not leaked, f"{persona} {what}: {len(leaked)} values leaked, e.g. {leaked[0][:4]}..."


def test_no_internal_value_reaches_a_caller_without_groups(
    received: dict[str, list[tuple[str, bytes]]],
) -> None:
    internal = column("name", IDS) + column("email", IDS)
    for what, data in received["no-group"]:
        leaked = [value for value in internal if value.encode() in data]
        assert not leaked, f"no-group {what}: {len(leaked)} internal values leaked"


def test_the_check_sees_values_when_they_are_there(backend: str, secrets: list[str]) -> None:
    """The same scan over a direct call finds every value: the leak check can fail."""
    direct = asyncio.run(infer_wire_bytes(backend, customer_request(IDS)))
    assert all(value.encode() in direct for value in secrets)
