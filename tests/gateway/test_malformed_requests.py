"""A gRPC request body that does not parse as its method's message: refused INVALID_ARGUMENT
``REQUEST_NOT_PARSED`` with the gateway's ``ErrorInfo`` (not grpc's UNKNOWN "Unexpected
DecodeError"), recorded like any refusal, and only once the caller is authenticated: an
anonymous caller is refused as unauthenticated whatever its body.

A real gateway (embedded engine, JWT, durable audit) in front of the demo backend; the bodies
go on the wire as raw bytes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from tests.gateway.aio import Refusal, channel, refusal_of
from tests.gateway.harness import AuditedStack, TokenIssuer, run_audited_gateway
from tests.support.procs import wait_until

SERVICE = "/inference.GRPCInferenceService/"
# Field 1 (model_name, a string) declared 16 bytes long, 3 there: no parser accepts it.
TRUNCATED = b"\x0a\x10abc"
GARBAGE = b"\xff\xff\xff\xff\x0f"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer
) -> Iterator[AuditedStack]:
    with run_audited_gateway(tmp_path_factory.mktemp("malformed"), backend, token_issuer) as audited:
        yield audited


async def unary(address: str, method: str, body: bytes, headers: dict[str, str]) -> Refusal:
    async with channel(address) as opened:
        try:
            send: Any = opened.unary_unary(SERVICE + method)
            await send(body, metadata=tuple(headers.items()), timeout=10)
        except grpc.aio.AioRpcError as error:
            return refusal_of(error)
    raise AssertionError(f"{method}: a body that does not parse was answered")


def recorded_refusal(stack: AuditedStack, session: str) -> dict[str, object]:
    wait_until(lambda: bool(stack.records(session)), 10, f"the record of session {session}")
    [record] = stack.records(session)
    return record


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("ModelInfer", TRUNCATED),
        ("ModelInfer", GARBAGE),
        ("ServerMetadata", b"\xff"),
        ("ModelMetadata", TRUNCATED),
        ("ModelConfig", TRUNCATED),
        ("RepositoryIndex", TRUNCATED),  # fanned out to every upstream (gateway/repository.py)
        ("ModelStatistics", TRUNCATED),
    ],
)
async def test_a_body_that_does_not_parse_is_refused_with_a_reason(
    stack: AuditedStack, method: str, body: bytes
) -> None:
    session = f"s-{uuid.uuid4().hex}"
    refusal = await unary(stack.address, method, body, stack.headers("analyst", session))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_NOT_PARSED")
    assert "DecodeError" not in refusal.message and "Unexpected" not in refusal.message
    record = recorded_refusal(stack, session)
    assert (record["reason"], record["method"]) == ("REQUEST_NOT_PARSED", SERVICE + method)
    assert record["subject"], "recorded under the authenticated caller"


async def test_an_anonymous_caller_learns_nothing_of_how_its_body_parses(stack: AuditedStack) -> None:
    session = f"s-{uuid.uuid4().hex}"
    malformed = await unary(stack.address, "ModelInfer", TRUNCATED, {"x-labelgate-session": session})
    well_formed = await unary(
        stack.address,
        "ModelInfer",
        pb.ModelInferRequest(model_name="customer-profile").SerializeToString(),
        {"x-labelgate-session": session},
    )
    assert malformed.code == grpc.StatusCode.UNAUTHENTICATED
    assert (malformed.code, malformed.reason, malformed.message) == (
        well_formed.code,
        well_formed.reason,
        well_formed.message,
    )
    wait_until(lambda: len(stack.records(session)) == 2, 10, "both refusals recorded")
    assert {record["reason"] for record in stack.records(session)} == {well_formed.reason}


async def test_a_stream_message_that_does_not_parse_ends_the_stream_with_a_reason(
    stack: AuditedStack,
) -> None:
    session = f"s-{uuid.uuid4().hex}"

    async def messages() -> AsyncIterator[bytes]:
        yield TRUNCATED

    async with channel(stack.address) as opened:
        stream: Any = opened.stream_stream(SERVICE + "ModelStreamInfer")
        call = stream(messages(), metadata=tuple(stack.headers("analyst", session).items()), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                raise AssertionError("a stream of a message that does not parse was answered")
    refusal = refusal_of(raised.value)
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_NOT_PARSED")
    record = recorded_refusal(stack, session)
    assert record["reason"] == "REQUEST_NOT_PARSED"
