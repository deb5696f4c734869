"""Backend rules that tritonclient cannot exercise (typed inputs, parameters), on an in-process server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.demo.backend import DemoServer, start
from labelgate.demo.data import customer
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs, uses_raw_outputs


@pytest.fixture
async def backend() -> AsyncIterator[DemoServer]:
    server = await start("127.0.0.1:0")
    try:
        yield server
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def channel(backend: DemoServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.port}") as channel:
        yield channel


def profile_request(
    ids: list[int], *, raw_inputs: bool, outputs: tuple[str, ...] = ("ssn",)
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile", id="r1")
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(ids)], ids)], raw=raw_inputs)
    for name in outputs:
        request.outputs.add(name=name)
    return request


async def invalid_argument(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details()


async def test_outputs_mirror_the_input_representation(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    for raw in (True, False):
        response = await stub.ModelInfer(profile_request([2, 3], raw_inputs=raw))
        assert uses_raw_outputs(response) is raw
        assert decode_outputs(response) == [
            Tensor("ssn", "BYTES", [2], [customer(2).ssn.encode(), customer(3).ssn.encode()])
        ]
        assert response.id == "r1"


async def test_binary_data_parameters_override_the_default(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = profile_request([1], raw_inputs=False)
    request.parameters["binary_data_output"].bool_param = True
    assert uses_raw_outputs(await stub.ModelInfer(request))

    request = profile_request([1], raw_inputs=True, outputs=("ssn", "risk_score"))
    for output in request.outputs:
        output.parameters["binary_data"].bool_param = False
    response = await stub.ModelInfer(request)
    assert not uses_raw_outputs(response)
    assert list(response.outputs[1].contents.fp32_contents) == [customer(1).risk_score]


async def test_contradictory_or_mistyped_parameters_are_refused(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = profile_request([1], raw_inputs=True, outputs=("ssn", "name"))
    request.outputs[0].parameters["binary_data"].bool_param = True
    request.outputs[1].parameters["binary_data"].bool_param = False
    assert "disagree on binary_data" in await invalid_argument(stub, request)

    request = profile_request([1], raw_inputs=True)
    request.parameters["binary_data_output"].string_param = "false"
    assert "binary_data_output must be a bool_param" in await invalid_argument(stub, request)

    request = profile_request([1], raw_inputs=True, outputs=("ssn", "ssn"))
    assert "requested more than once" in await invalid_argument(stub, request)


async def test_typed_input_element_count_must_match_shape(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[3])
    tensor.contents.int64_contents.extend([1, 2])
    message = await invalid_argument(stub, request)
    assert message == "input 'customer_ids' has 2 elements in int64_contents; shape [3] needs 3"


async def test_debug_metadata_sees_this_call_and_earlier_ones(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    await stub.ModelInfer(profile_request([1], raw_inputs=True), metadata=[("x-labelgate-role", "admin")])
    await stub.ServerLive(pb.ServerLiveRequest(), metadata=[("trace-bin", b"\x00\xff")])
    response = await stub.ModelInfer(
        pb.ModelInferRequest(model_name="_debug-metadata"), metadata=[("x-mine", "1")]
    )
    outputs = {t.name: t.values for t in decode_outputs(response)}
    assert (b"x-mine", b"1") in zip(outputs["key"], outputs["value"], strict=True)
    recent = [json.loads(item) for item in outputs["recent"]]
    assert recent[0]["method"] == "ServerLive" and ["trace-bin", "AP8="] in recent[0]["metadata"]
    assert (
        recent[1]
        == {
            "method": "ModelInfer",
            "model": "customer-profile",
            "metadata": recent[1]["metadata"],
        }
        and ["x-labelgate-role", "admin"] in recent[1]["metadata"]
    )
    assert len(recent) == 2


async def test_stream_error_keeps_the_stream_and_echoes_the_id(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    bad = pb.ModelInferRequest(model_name="nope", id="bad-1")
    good = profile_request([4], raw_inputs=True)
    replies = [reply async for reply in stub.ModelStreamInfer(iter([bad, good]))]
    assert replies[0].error_message.startswith("no model named 'nope'")
    assert replies[0].infer_response.id == "bad-1"
    assert replies[1].error_message == ""
    assert decode_outputs(replies[1].infer_response)[0].values == [customer(4).ssn.encode()]


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name async for reply in replies for service in reply.list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "labelgate.v1.demo.CustomerDirectory",
        "grpc.health.v1.Health",
    } <= names


@pytest.mark.parametrize("asked", [False, True])
async def test_the_metadata_echoing_debug_model_is_served_only_when_asked(asked: bool) -> None:
    # It echoes recent calls' metadata, other callers' subject assertions included: served
    # by `make run`'s backend, it let one analyst read another's (found by review).
    server = await start("127.0.0.1:0", debug_model=asked)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            ready = pb_grpc.GRPCInferenceServiceStub(channel).ModelReady
            assert (await ready(pb.ModelReadyRequest(name="customer-profile"))).ready
            if asked:
                assert (await ready(pb.ModelReadyRequest(name="_debug-metadata"))).ready
            else:
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await ready(pb.ModelReadyRequest(name="_debug-metadata"))
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(grace=None)
