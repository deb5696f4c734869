"""Typed replies (model metadata and config) through a real gateway, on gRPC and REST.

An upstream of raw bytes answers ``ModelMetadata`` and ``ModelConfig`` with what a test
plants. Digits hidden in repeated integers (shapes, dims, versions) are masked on both
transports (``classify/messages.py``: ``digit_runs``), and a reply holding more values than
``limits.max_message_values`` is refused, UNAVAILABLE / 502 ``MESSAGE_TOO_MANY_VALUES``,
before its classification can hold the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
SERVICE = "inference.GRPCInferenceService"
MAX_VALUES = 1_000
SSN_PARTS = [123, 45, 6789]
CARD_PARTS = [4111, 1111, 1111, 1111]


def as_analyst() -> dict[str, str]:
    token = mint_dev_token("ana", ["analysts"], 300, DEV_KEYS)
    return {"authorization": f"Bearer {token}"}


class PlantedReplies:
    """An upstream answering each method with the bytes ``replies[method]`` holds."""

    def __init__(self) -> None:
        self.replies: dict[str, bytes] = {}
        self.server = grpc.aio.server()
        handlers = {method: self._handler(method) for method in ("ModelMetadata", "ModelConfig")}
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        async def answer(request: bytes, context: Any) -> bytes:
            return self.replies[method]

        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Gateway, PlantedReplies]]:
    upstream = PlantedReplies()
    await upstream.server.start()
    gateway = Gateway(
        GatewaySettings(
            listen=f"127.0.0.1:{free_port()}",
            rest_listen=f"127.0.0.1:{free_port()}",
            admin_listen=None,
            upstream={"address": upstream.address},
            policy={"dir": str(REPO / "rego")},
            classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
            masking={"hash_key": "typed-replies-test-hash-key-0123456789"},
            auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
            limits={"max_message_values": MAX_VALUES},
        )
    )
    await gateway.start()
    try:
        yield gateway, upstream
    finally:
        await gateway.stop(0)
        await upstream.server.stop(0)


async def grpc_call(gateway: Gateway, method: str, request: Any, reply_type: Any) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        return await stub(request, metadata=tuple(as_analyst().items()))


async def rest_get(gateway: Gateway, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{gateway.settings.rest_listen}{path}", headers=as_analyst())


async def test_metadata_shapes_spelling_values_are_masked_on_grpc_and_rest(
    stack: tuple[Gateway, PlantedReplies],
) -> None:
    gateway, upstream = stack
    planted = pb.ModelMetadataResponse(name="m", platform="p", versions=["1"])
    planted.outputs.add(name="out", datatype="BYTES", shape=SSN_PARTS)
    planted.outputs.add(name="card", datatype="BYTES", shape=CARD_PARTS)
    upstream.replies["ModelMetadata"] = planted.SerializeToString()
    request = pb.ModelMetadataRequest(name="m")
    reply = await grpc_call(gateway, "ModelMetadata", request, pb.ModelMetadataResponse)
    assert [list(output.shape) for output in reply.outputs] == [[0, 0, 0], [0, 0, 0, 0]]
    answer = await rest_get(gateway, "/v2/models/m")
    assert answer.status_code == 200, answer.text
    assert [output["shape"] for output in answer.json()["outputs"]] == [[0, 0, 0], [0, 0, 0, 0]]


async def test_config_dims_and_versions_spelling_values_are_masked_on_grpc_and_rest(
    stack: tuple[Gateway, PlantedReplies],
) -> None:
    gateway, upstream = stack
    planted = ext.ModelConfigResponse()
    planted.config.name, planted.config.platform = "m", "p"
    planted.config.output.add(name="out", data_type=ext.TYPE_STRING, dims=SSN_PARTS)
    planted.config.input.add(name="in", data_type=ext.TYPE_STRING, dims=CARD_PARTS)
    planted.config.version_policy.specific.versions.extend(SSN_PARTS)
    upstream.replies["ModelConfig"] = planted.SerializeToString()
    reply = await grpc_call(gateway, "ModelConfig", ext.ModelConfigRequest(name="m"), ext.ModelConfigResponse)
    assert list(reply.config.output[0].dims) == [0, 0, 0]
    assert list(reply.config.input[0].dims) == [0, 0, 0, 0]
    assert list(reply.config.version_policy.specific.versions) == [0, 0, 0]
    answer = await rest_get(gateway, "/v2/models/m/config")
    assert answer.status_code == 200, answer.text
    config = answer.json()
    assert config["output"][0]["dims"] == [0, 0, 0] and config["input"][0]["dims"] == [0, 0, 0, 0]
    assert config["version_policy"]["specific"]["versions"] == [0, 0, 0]


async def test_a_reply_of_more_values_than_the_limit_is_refused_on_grpc_and_rest(
    stack: tuple[Gateway, PlantedReplies],
) -> None:
    gateway, upstream = stack
    # 3 values, and 6 per output (itself, name, datatype, shape and its 2 dims).
    at_limit = (MAX_VALUES - 3) // 6
    for outputs, refused in ((at_limit, False), (at_limit + 1, True)):
        planted = pb.ModelMetadataResponse(name="m", platform="p")
        for index in range(outputs):
            planted.outputs.add(name=f"o{index}", datatype="FP32", shape=[1, 2])
        upstream.replies["ModelMetadata"] = planted.SerializeToString()
        request = pb.ModelMetadataRequest(name="m")
        answer = await rest_get(gateway, "/v2/models/m")
        if not refused:
            reply = await grpc_call(gateway, "ModelMetadata", request, pb.ModelMetadataResponse)
            assert len(reply.outputs) == outputs
            assert answer.status_code == 200 and len(answer.json()["outputs"]) == outputs
            continue
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_call(gateway, "ModelMetadata", request, pb.ModelMetadataResponse)
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info is not None and info.reason == "MESSAGE_TOO_MANY_VALUES"
        assert (answer.status_code, answer.json()["reason"]) == (502, "MESSAGE_TOO_MANY_VALUES")
