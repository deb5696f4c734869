"""A released parameter reaches a caller only in the types it was released with, end to end.

Found by review: ``release.parameters`` released ``triton_final_response`` (labelled public)
whatever its type, so an upstream putting text there (a name and a diagnosis, which no
detector finds) reached every caller, even one for whom the model's outputs are redacted. By
default the flag is released as a bool only: any other value is dropped unseen, and the reply
goes on without it.

A real ``labelgate serve`` (durable audit, session recording) in front of the planted gRPC
upstream (``planted_upstream.py``) and the planted REST upstream (``planted_rest_upstream.py``,
JSON parameters), called on unary gRPC and on the REST binding. The model is one the catalog
does not know (internal) and the caller has no group: its outputs are redacted for it, the
public flag is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
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

GRPC_MODEL = "typed-uncatalogued"  # served by the gRPC upstream
REST_MODEL = "rest-typed-uncatalogued"  # routed to the REST upstream (rest-*)
FINAL = "triton_final_response"
PROFILE = "Jane Doe lives at 42 Elm Street, diagnosis HIV+"  # no detector finds it
OUTPUT_TEXT = "the model's own answer"  # internal: redacted for a caller without groups
PERSONA = "no-group"


@dataclass(frozen=True)
class Stack:
    audited: AuditedStack
    grpc_upstream: str
    rest_upstream: str
    rest_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("released-parameter-types")
    rest_listen = f"127.0.0.1:{free_port()}"
    with (
        run_planted_upstream(directory) as (grpc_address, _),
        run_planted_rest_upstream(directory) as rest_address,
        run_audited_gateway(
            directory,
            grpc_address,
            token_issuer,
            rest_listen=rest_listen,
            upstreams=[
                {"name": "planted-rest", "address": rest_address, "protocol": "rest", "models": ["rest-*"]}
            ],
        ) as audited,
    ):
        yield Stack(audited, grpc_address, rest_address, f"http://{rest_listen}")


def plant(upstream: str, flag: Any) -> str:
    """The request parameter ``plant``: a reply whose flag (and its output's) is ``flag``."""
    if upstream == "grpc":
        output = {"name": "text", "datatype": "BYTES", "values": [OUTPUT_TEXT], "parameters": {FINAL: flag}}
        return plant_parameter({"reply": {"parameters": {FINAL: flag}, "outputs": [output]}})
    output = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [1],
        "data": [OUTPUT_TEXT],
        "parameters": {FINAL: flag},
    }
    return plant_parameter(
        {"json": {"model_name": REST_MODEL, "parameters": {FINAL: flag}, "outputs": [output]}}
    )


@dataclass
class Answer:
    """What the caller got: every byte, and the reply's and its output's parameters."""

    blob: bytes
    parameters: dict[str, Any]
    output_parameters: dict[str, Any]


def values(parameters: Any) -> dict[str, Any]:
    return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()}


async def call(stack: Stack, caller: str, upstream: str, flag: Any) -> Answer:
    model = GRPC_MODEL if upstream == "grpc" else REST_MODEL
    planted = plant(upstream, flag)
    headers = stack.audited.headers(PERSONA)
    if caller == "grpc":
        request = plant_request(None, model=model, request_id="typed")
        request.parameters["plant"].string_param = planted
        received = await capture_unary(stack.audited.address, request, headers)
        assert received.code == grpc.StatusCode.OK, (received.code, received.details)
        reply = pb.ModelInferResponse.FromString(received.messages[0])
        (output,) = reply.outputs
        return Answer(received.blob(), values(reply.parameters), values(output.parameters))
    body = {
        "id": "typed",
        "parameters": {"plant": planted},
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}],
    }
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{stack.rest_url}/v2/models/{model}/infer", json=body, headers=headers)
    assert response.status_code == 200, response.text
    document = json.loads(response.content)
    (output,) = document["outputs"]
    blob = b"\n".join([*(k + b": " + v for k, v in response.headers.raw), response.content])
    return Answer(blob, document.get("parameters", {}), output.get("parameters", {}))


async def directly(stack: Stack, upstream: str, flag: Any) -> bytes:
    """What the upstream itself answers: the planted value must be there, or nothing was tested."""
    planted = plant(upstream, flag)
    if upstream == "grpc":
        request = plant_request(None, model=GRPC_MODEL)
        request.parameters["plant"].string_param = planted
        return (await capture_unary(stack.grpc_upstream, request, {})).blob()
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"http://{stack.rest_upstream}/v2/models/{REST_MODEL}/infer",
            json={"parameters": {"plant": planted}, "inputs": []},
        )
    return response.content


ROUTES = [("grpc", "grpc"), ("rest", "grpc"), ("grpc", "rest"), ("rest", "rest")]


@pytest.mark.parametrize(("caller", "upstream"), ROUTES)
async def test_a_final_flag_holding_text_does_not_reach_the_caller(
    stack: Stack, caller: str, upstream: str
) -> None:
    assert PROFILE.encode() in await directly(stack, upstream, PROFILE), "the upstream did plant it"
    answer = await call(stack, caller, upstream, PROFILE)
    assert PROFILE.encode() not in answer.blob
    assert FINAL not in answer.parameters and FINAL not in answer.output_parameters
    assert OUTPUT_TEXT.encode() not in answer.blob, "the outputs are redacted for this caller"


@pytest.mark.parametrize(("caller", "upstream"), ROUTES)
async def test_a_final_flag_holding_a_number_does_not_reach_the_caller(
    stack: Stack, caller: str, upstream: str
) -> None:
    answer = await call(stack, caller, upstream, 4111)  # a number below any detector's length
    assert FINAL not in answer.parameters and FINAL not in answer.output_parameters


@pytest.mark.parametrize(("caller", "upstream"), ROUTES)
@pytest.mark.parametrize("flag", [True, False])
async def test_a_bool_final_flag_still_reaches_the_caller(
    stack: Stack, caller: str, upstream: str, flag: bool
) -> None:
    answer = await call(stack, caller, upstream, flag)
    assert answer.parameters[FINAL] is flag and answer.output_parameters[FINAL] is flag
    assert OUTPUT_TEXT.encode() not in answer.blob, "the outputs are redacted for this caller"
