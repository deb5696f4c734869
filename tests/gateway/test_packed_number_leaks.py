"""Text an upstream packs into the raw bytes of numbers wider than 8 bits does not reach the
caller (``classify.numbers``: the raw bytes of INT16..UINT64, FP16, BF16, FP32 and FP64 are
read as text too, as a UINT8 tensor's are).

One real audited gateway in front of the planted gRPC upstream and the planted REST
upstream (``protocol: rest``), both on a model whose outputs are catalogued public, so only
what the scan finds can mask them; a caller cleared for ``public`` only. Each reply's output
is the planted text's bytes labelled with one datatype; no planted value may be in any byte
the caller gets (gRPC ``raw_output_contents``, the REST binary body). An embedding's random
FP32 values come back as they were.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests.classify.test_numbers_packed import CARD, IBAN, KEY_LINE, SIZES, SSN, TEXT, TOKEN
from tests.gateway.harness import (
    AuditedStack,
    TokenIssuer,
    capture_unary,
    run_audited_gateway,
    run_planted_upstream,
)
from tests.gateway.planted_upstream import plant_parameter, plant_request
from tests.gateway.test_rest_leak_fuzzer import run_planted_rest_upstream
from tests.support.procs import free_port

GRPC_PUBLIC = "packed-public"  # the default route: the planted gRPC upstream
REST_PUBLIC = "rest-packed-public"  # routed to the planted REST upstream
# The planted text is the unit tests' (every datatype a whole number of elements of it).
VALUES = {"ssn": SSN, "card": CARD, "iban": IBAN, "token": TOKEN, "key": KEY_LINE}
EMBEDDING = np.random.default_rng(7).standard_normal(1024).astype("<f4").tobytes()


@dataclass(frozen=True)
class Stack:
    audited: AuditedStack
    rest_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("packed-number-leaks")
    rest_listen = f"127.0.0.1:{free_port()}"
    with (
        run_planted_upstream(directory) as (grpc_address, _),
        run_planted_rest_upstream(directory) as rest_address,
        run_audited_gateway(
            directory,
            grpc_address,
            token_issuer,
            catalog_entries=[
                {"model": model, "path": "outputs.*", "labels": ["public"]}
                for model in (GRPC_PUBLIC, REST_PUBLIC)
            ],
            rest_listen=rest_listen,
            upstreams=[
                {"name": "planted-rest", "address": rest_address, "protocol": "rest", "models": ["rest-*"]}
            ],
        ) as audited,
    ):
        yield Stack(audited, f"http://{rest_listen}")


def shown(data: bytes) -> list[str]:
    """The planted values in ``data`` (each as written: what ``tobytes()`` shows)."""
    return [name for name, value in VALUES.items() if value.encode() in data]


def grpc_call(stack: Stack, datatype: str, data: bytes, token_issuer: TokenIssuer) -> bytes:
    output = {
        "name": "text",
        "datatype": datatype,
        "shape": [len(data) // SIZES[datatype]],
        "raw_hex": data.hex(),
    }
    request = plant_request({"reply": {"raw": True, "outputs": [output]}}, model=GRPC_PUBLIC)
    received = asyncio.run(capture_unary(stack.audited.address, request, token_issuer.headers("no-group")))
    assert received.code.name == "OK", received.details
    return received.blob()


def rest_call(stack: Stack, datatype: str, data: bytes, token_issuer: TokenIssuer) -> bytes:
    reply = {
        "json": {
            "model_name": REST_PUBLIC,
            "outputs": [
                {
                    "name": "text",
                    "datatype": datatype,
                    "shape": [len(data) // SIZES[datatype]],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
        },
        "binary_hex": data.hex(),
    }
    document = {
        "parameters": {"plant": plant_parameter(reply), "binary_data_output": True},
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}],
    }
    response = httpx.post(
        f"{stack.rest_url}/v2/models/{REST_PUBLIC}/infer",
        content=json.dumps(document),
        headers={**token_issuer.headers("no-group"), "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    head = b"".join(f"{key}: {value}\n".encode() for key, value in response.headers.items())
    return head + response.content


CALLS = {"grpc-raw": grpc_call, "rest-binary": rest_call}


@pytest.mark.parametrize("binding", sorted(CALLS))
@pytest.mark.parametrize("datatype", sorted(SIZES))
def test_text_packed_in_wider_numbers_does_not_reach_the_caller(
    stack: Stack, token_issuer: TokenIssuer, binding: str, datatype: str
) -> None:
    assert shown(TEXT) == list(VALUES)  # planted as written
    received = CALLS[binding](stack, datatype, TEXT, token_issuer)
    assert shown(received) == []


@pytest.mark.parametrize("binding", sorted(CALLS))
def test_an_embeddings_random_floats_come_back_as_they_were(
    stack: Stack, token_issuer: TokenIssuer, binding: str
) -> None:
    received = CALLS[binding](stack, "FP32", EMBEDDING, token_issuer)
    assert EMBEDDING in received
