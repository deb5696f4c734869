"""Triton's shared-memory extension through the gateway: refused, never forwarded.

A gateway cannot see what a client put in shared memory, so it cannot classify it. The six
shared-memory RPCs (called here by name with raw bytes: their messages are never parsed),
and inference requests that point at shared memory, are refused with FAILED_PRECONDITION
``SHARED_MEMORY_UNSUPPORTED`` after authentication, and no upstream sees them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.policy.contract import Decision
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
AUTH = {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}}
SECRET_MODEL = "secret-model"


@dataclass
class TritonServicer(pb_grpc.GRPCInferenceServiceServicer):
    """A Triton-like upstream: its repository lists ``models``; it records each call."""

    models: list[str]
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def ModelInfer(self, request, context):
        self.calls.append(("ModelInfer", request.model_name))
        return pb.ModelInferResponse(model_name=request.model_name)


class DenySecretModel:
    """The real engine, except that inference on ``secret-model`` is denied to anyone outside
    the ``insiders`` group, and a decision on ``broken-model`` fails (raises)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        request = policy_input["request"]
        if request["model"] == "broken-model":
            raise RuntimeError("engine failure")
        if (
            request["method"].endswith("/ModelInfer")
            and request["model"] == SECRET_MODEL
            and "insiders" not in policy_input["subject"]["groups"]
        ):
            return Decision.deny("TEST_DENIED", "denied by the test policy")
        return await self.inner.decide(policy_input)


async def start_servicer(servicer: TritonServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@dataclass
class Stack:
    gateway: Gateway
    first: TritonServicer
    second: TritonServicer
    stub: pb_grpc.GRPCInferenceServiceStub


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    # `first` serves customer-* and the secret model; `second` serves sentiment. `first` also
    # lists a stale sentiment, which routes elsewhere and must not appear twice.
    first = TritonServicer(["customer-profile", "sentiment", SECRET_MODEL, "broken-model"])
    second = TritonServicer(["sentiment"])
    (server_a, address_a), (server_b, address_b) = await start_servicer(first), await start_servicer(second)
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstreams=[
            {"name": "a", "address": address_a, "models": ["customer-*", SECRET_MODEL, "broken-model"]},
            {"name": "b", "address": address_b, "models": ["sentiment"]},
        ],
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "triton-test-hash-key-0123456789"},
        auth=AUTH,
    )
    gateway = Gateway(settings)
    gateway.pipeline.engine = DenySecretModel(gateway.pipeline.engine)  # type: ignore[assignment]
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield Stack(gateway, first, second, pb_grpc.GRPCInferenceServiceStub(channel))
    finally:
        await channel.close()
        await gateway.stop(0)
        await server_a.stop(0)
        await server_b.stop(0)


def auth(*groups: str, sub: str = "ana") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_dev_token(sub, list(groups), 300, DEV_KEYS)}"),)


async def refused(call: Any) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    return caught.value.code(), info.reason if info else "", caught.value.details() or ""


SHARED_MEMORY_RPCS = [
    f"/inference.GRPCInferenceService/{kind}SharedMemory{action}"
    for kind in ("System", "Cuda")
    for action in ("Status", "Register", "Unregister")
]


async def test_shared_memory_rpcs_are_refused(stack: Stack) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.gateway.port}")
    try:
        for method in SHARED_MEMORY_RPCS:
            call = channel.unary_unary(method)(b"\x0a\x02r0", metadata=auth("analysts"))
            code, reason, details = await refused(call)
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SHARED_MEMORY_UNSUPPORTED")
            assert "cannot inspect shared memory" in details
        # Unauthenticated callers learn nothing more than that they are not.
        code, _, _ = await refused(channel.unary_unary(SHARED_MEMORY_RPCS[0])(b""))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()
    assert not stack.first.calls and not stack.second.calls


async def test_inference_that_points_at_shared_memory_is_refused(stack: Stack) -> None:
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.parameters["shared_memory_region"].string_param = "r0"
    tensor.parameters["shared_memory_byte_size"].int64_param = 8
    code, reason, _ = await refused(stack.stub.ModelInfer(request, metadata=auth("analysts")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SHARED_MEMORY_UNSUPPORTED")
    output = pb.ModelInferRequest(model_name="sentiment")
    output.outputs.add(name="label").parameters["shared_memory_region"].string_param = "o0"
    stream = stack.stub.ModelStreamInfer(iter([output]), metadata=auth("analysts"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None and info.reason == "SHARED_MEMORY_UNSUPPORTED"
    assert not stack.first.calls and not stack.second.calls


async def test_the_classification_extension_is_refused_on_grpc_as_on_rest(stack: Stack) -> None:
    """tritonclient's ``class_count`` sets ``classification`` on an output: REST refused it,
    gRPC passed it on to an upstream that would change the output's datatype (review)."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(1)
    request.outputs.add(name="risk_score").parameters["classification"].int64_param = 2
    code, reason, _ = await refused(stack.stub.ModelInfer(request, metadata=auth("analysts")))
    assert reason == "CLASSIFICATION_UNSUPPORTED", code
    assert not stack.first.calls and not stack.second.calls


def shared_memory_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.parameters["shared_memory_region"].string_param = "r0"
    return request


def class_count_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(1)
    request.outputs.add(name="risk_score").parameters["classification"].int64_param = 2
    return request


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (shared_memory_request, "SHARED_MEMORY_UNSUPPORTED"),
        (class_count_request, "CLASSIFICATION_UNSUPPORTED"),
    ],
)
async def test_a_grpc_inference_the_gateway_cannot_serve_is_refused_after_authentication_and_recorded(
    stack: Stack, caplog: pytest.LogCaptureFixture, make: Any, reason: str
) -> None:
    # gRPC refused these before authenticating the caller, and recorded nothing (REST and
    # ModelStreamInfer did both; found by review).
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        anonymous, _, _ = await refused(stack.stub.ModelInfer(make()))
        code, got, _ = await refused(stack.stub.ModelInfer(make(), metadata=auth("analysts")))
    assert anonymous == grpc.StatusCode.UNAUTHENTICATED, "an anonymous caller learns nothing of its request"
    assert (code, got) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    logged = [
        (r.__dict__["subject"], r.__dict__["reason"])
        for r in caplog.records
        if r.name == "labelgate.decision" and r.getMessage() == "call"
    ]
    assert logged == [(None, "NO_CREDENTIALS"), ("jwt:labelgate-dev#ana", reason)]
    assert not stack.first.calls and not stack.second.calls
