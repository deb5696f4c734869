"""``ModelStreamInfer`` (bidirectional) through the gateway: every streamed message is
classified, decided and masked on its own, and a refusal mid-stream ends the stream with
the refusal's status, releasing nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.demo.data import customer
from tests.gateway.aio import Refusal, channel, outputs_of, refusal_of, texts
from tests.gateway.expected import (
    analyst_notes,
    confidential_and_restricted,
    customer_request,
    partial,
)
from tests.gateway.harness import (
    Gateway,
    TokenIssuer,
)
from tests.support.triton import run_probe

# One stream, three messages: an SSN and a card number in the notes, JSON notes, an IBAN.
BATCHES = {"first": [1, 2], "second": [5], "third": [4, 6]}


def stream_call(headers: dict[str, str]) -> dict[str, Any]:
    requests = [
        {"model": "customer-profile", "customer_ids": ids, "request_id": request_id}
        for request_id, ids in BATCHES.items()
    ]
    return {"op": "stream_infer", "headers": headers, "requests": requests}


def notes_match(customer_id: int, notes: str) -> bool:
    expected = analyst_notes(customer_id)
    return json.loads(notes) == expected if isinstance(expected, dict) else notes == expected


def test_each_streamed_message_is_masked_for_the_real_client(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    analyst, nobody = run_probe(
        [stream_call(token_issuer.headers("analyst")), stream_call(token_issuer.headers("no-group"))],
        url=gateway.address,
    )
    by_id = {response["id"]: response for response in analyst["responses"]}
    assert sorted(by_id) == sorted(BATCHES), analyst
    for request_id, ids in BATCHES.items():
        outputs = by_id[request_id]["outputs"]
        assert outputs["customer_id"]["values"] == ids
        assert outputs["name"]["values"] == [customer(i).name for i in ids], "internal: clear for analysts"
        assert outputs["ssn"]["values"] == [partial(customer(i).ssn) for i in ids]
        assert outputs["account_secret"]["values"] == [""] * len(ids)
        assert all(notes_match(i, notes) for i, notes in zip(ids, outputs["notes"]["values"], strict=True))

    assert len(nobody["responses"]) == len(BATCHES)
    for response in nobody["responses"]:
        assert set(response["outputs"]["ssn"]["values"]) == {"[REDACTED]"}
        assert set(response["outputs"]["notes"]["values"]) == {"[REDACTED]"}

    received = json.dumps([analyst, nobody])
    every_id = [i for ids in BATCHES.values() for i in ids]
    leaked = [value for value in confidential_and_restricted(every_id) if value in received]
    assert not leaked, f"{len(leaked)} sensitive values reached the client"


async def test_a_refusal_mid_stream_ends_the_stream(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    async with channel(gateway.address) as opened:
        stream = pb_grpc.GRPCInferenceServiceStub(opened).ModelStreamInfer(
            metadata=tuple(token_issuer.headers("analyst").items()), timeout=10
        )
        await stream.write(customer_request([1], request_id="allowed"))
        first = await stream.read()
        assert not first.error_message
        assert texts(outputs_of(first.infer_response)["ssn"]) == [partial(customer(1).ssn)]

        # Asking for a restricted output by name is denied outright: the stream ends there.
        await stream.write(customer_request([2], ["customer_id", "account_secret"], request_id="refused"))
        try:
            reply = await stream.read()
        except grpc.aio.AioRpcError as error:
            refusal = refusal_of(error)
        else:
            raise AssertionError(f"the stream went on after a refusal: {reply}")
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    assert "account_secret" in refusal.message
    assert customer(2).account_secret not in refusal.message


async def first_reply_refusal(gateway: Gateway, headers: dict[str, str]) -> Refusal:
    """Open a stream, send one request and expect the stream to end with a refusal (one the
    gateway makes once it has read that request; see ``refusal_before_any_request``)."""
    async with channel(gateway.address) as opened:
        stream = pb_grpc.GRPCInferenceServiceStub(opened).ModelStreamInfer(
            metadata=tuple(headers.items()), timeout=10
        )
        try:
            await stream.write(customer_request([1]))
            reply = await stream.read()
        except grpc.aio.AioRpcError as error:
            return refusal_of(error)
    raise AssertionError(f"the stream was answered: {reply}")


async def test_a_stream_of_a_steward_needs_an_approval(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    refusal = await first_reply_refusal(gateway, token_issuer.headers("steward"))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED")


async def refusal_before_any_request(gateway: Gateway, headers: dict[str, str]) -> Refusal:
    """Open a stream and read, writing nothing: for a refusal the gateway makes before it reads
    any request (authentication), which must reach the caller on its own.

    Writing first would race that refusal: a grpc.aio ``write()`` that reaches grpc's core
    after the server's status has ended the stream fails, and grpc.aio then reports INTERNAL
    ("Internal error from Core", ``Failed "execute_batch": (...SendMessageOperation...)``) in
    place of the status the server sent (grpc/grpc#36066), also to a later ``read()`` or
    ``code()``. The gateway sent and recorded the refusal either way.
    """
    async with channel(gateway.address) as opened:
        stream = pb_grpc.GRPCInferenceServiceStub(opened).ModelStreamInfer(
            metadata=tuple(headers.items()), timeout=10
        )
        try:
            reply = await stream.read()
        except grpc.aio.AioRpcError as error:
            return refusal_of(error)
    raise AssertionError(f"the stream was answered: {reply}")


async def test_a_stream_without_credentials_is_unauthenticated(gateway: Gateway) -> None:
    refusal = await refusal_before_any_request(gateway, {})
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAUTHENTICATED, "NO_CREDENTIALS")
