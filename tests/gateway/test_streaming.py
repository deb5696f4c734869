"""``ModelStreamInfer`` (bidirectional) through the gateway: every streamed message is
classified, decided and masked on its own, and a refusal mid-stream ends the stream with
the refusal's status, releasing nothing more.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.demo.data import customer
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from tests.classify.secret_values import pem_value
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
from tests.gateway.test_pipeline import FakeStream, collect, make_pipeline, reply, request, stream_reply
from tests.gateway.test_routes import DIRECTORY, descriptor_set, directory_serving, gateway_in_process
from tests.gateway.test_routes import token as route_token
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


# A PEM key whose BEGIN marker and lines a stream puts in different replies, elements or
# outputs (``classify/carried_keys.py``: ``CoveredTensor``), through the pipeline: the engine
# masks what is confidential or restricted, for a caller who may read the output's label.
_KEY = pem_value(random.Random(7), "RSA PRIVATE KEY", 4).split("\n")
_BEGIN, _BODY, _END = _KEY[0], _KEY[1:-1], _KEY[-1]
KEY_STREAMS: dict[str, list[dict[str, list[bytes]]]] = {
    "a JSON object opens it, text lines follow": [
        {"text": [json.dumps({"t": _BEGIN}).encode()]},
        *({"text": [(body + "\n").encode()]} for body in _BODY),
        {"text": [_END.encode()]},
    ],
    "it closes in its own element, a later element held the lines": [
        {"text": [(_BEGIN + "\n").encode(), "".join(body + "\n" for body in _BODY).encode()]},
        {"text": [_END.encode(), b""]},
        {"text": [b"", b""]},
    ],
    "one output opens it, another carries the lines": [
        {"text": [(_BEGIN + "\n").encode()]},
        *({"other": [(body + "\n").encode()]} for body in _BODY),
        {"text": [_END.encode()]},
    ],
    "one reply, two outputs": [
        {"text": [(_BEGIN + "\n").encode()], "other": ["".join(body + "\n" for body in _BODY).encode()]}
    ],
    # A BEGIN marker no element holds whole, split across element indices: in one reply
    # whose block runs into later ones, and across replies.
    "a marker split across elements of one reply, lines later": [
        {"text": [_BEGIN[:18].encode(), (_BEGIN[18:] + "\n").encode()]},
        *({"text": [b"", (body + "\n").encode()]} for body in _BODY),
        {"text": [b"", _END.encode()]},
    ],
    "a marker split across replies and elements": [
        {"text": [_BEGIN[:18].encode(), b"", b""]},
        {"text": [b"", (_BEGIN[18:] + "\n").encode(), b""]},
        *({"text": [b"", b"", (body + "\n").encode()]} for body in _BODY),
        {"text": [b"", b"", _END.encode()]},
    ],
}


@pytest.mark.parametrize("name", KEY_STREAMS)
async def test_no_line_of_a_key_a_stream_puts_apart_from_its_marker_is_released(name: str) -> None:
    replies = KEY_STREAMS[name]
    pipeline, _, _, _ = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        out = []
        for position, outputs in enumerate(replies):
            tensors = [Tensor(output, "BYTES", [len(values)], values) for output, values in outputs.items()]
            message = reply("chat", tensors, sent.id)
            message.parameters["triton_final_response"].bool_param = position == len(replies) - 1
            out.append(stream_reply(message))
        return out

    got = await collect(pipeline, FakeStream(answer), request("chat"))
    seen = b"".join(
        bytes(value)
        for r in got
        for tensor in decode_outputs(r.infer_response)
        for value in tensor.values
        if value
    )
    assert len(got) == len(replies)  # answered, not refused
    for body in _BODY:
        for at in range(len(body) - 11):
            assert body[at : at + 12].encode() not in seen, (name, body)


async def test_a_routed_hold_stream_with_a_key_across_fields_ends_refused(tmp_path: Path) -> None:
    """A routed ``split_values: hold`` stream: the BEGIN marker in message 1's ``notes``, the
    key's lines in later messages' ``name`` (which analysts read): the stream ends
    ``STREAM_VALUE_SPLIT`` before any of them leaves (``classify/split_values.py``)."""
    messages = [dict(notes=_BEGIN + "\n"), *(dict(name=body + "\n") for body in _BODY), dict(notes=_END)]

    async def upstream_stream(
        ask: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        for number, fields in enumerate(messages):
            yield demo_pb2.Customer(customer_id=number, **fields).SerializeToString()

    route = {
        "method_prefix": DIRECTORY,
        "descriptor_set": str(descriptor_set(tmp_path)),
        "split_values": "hold",
    }
    got: list[Any] = []
    async with (
        directory_serving(upstream_stream) as upstream,
        gateway_in_process(upstream, routes=[route]) as listen,
        grpc.aio.insecure_channel(listen) as stub_channel,
    ):
        stub = demo_pb2_grpc.CustomerDirectoryStub(stub_channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            ask = demo_pb2.ListCustomersRequest(customer_ids=[0])
            async for customer_reply in stub.ListCustomers(ask, metadata=route_token("ann", "analysts")):
                got.append(customer_reply)
    info = error_info(refused.value)
    assert info is not None and info.reason == "STREAM_VALUE_SPLIT"
    assert not any(body[:24] in c.name for c in got for body in _BODY)
