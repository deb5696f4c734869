"""gRPC server reflection behind the gateway's own handler (``gateway/reflection.py``), on a
gateway in this process: what grpcurl-style clients ask still works; an anonymous client can
no longer make the gateway hold what it likes, nor read what a route's descriptors say.

Found by review: registered as grpcio-reflection ships it, an anonymous client writing one
15 MiB request (``file_containing_symbol``) per stream and never reading held ~50 MiB per
stream (40 streams: 720 MiB -> 2.9 GiB RSS), counted by no bound of the gateway. And it
answered from protobuf's default pool, where every route's descriptor set is loaded: a client
with no token read an unrouted service of a route's set (``InternalAdmin.WipeAllRecords``) and
every field's ``labelgate.v1.labels`` option (which fields are confidential or restricted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

from labelgate.config import GatewaySettings
from labelgate.gateway.reflection import MAX_REQUEST_BYTES
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from tests.support.procs import REPO, free_port

INFERENCE = "inference.GRPCInferenceService"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"


@contextlib.asynccontextmanager
async def serving(routes: list[dict[str, Any]] | None = None, **limits: int) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": f"127.0.0.1:{free_port()}"},  # nothing there: not asked
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "reflection-test-hash-key-0123456789"},
        limits=limits,
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        routes=routes or [],
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(0)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """One place of each kind of stream: reflection's, the health watches', the callers'."""
    async with serving(max_open_streams=1, max_health_watches=1, max_reflection_streams=1) as gateway:
        yield gateway


@pytest.fixture
async def roomy_gateway() -> AsyncIterator[Gateway]:
    """The default bounds: grpcio-reflection's client opens a stream per request and leaves
    each to be cancelled when it has its answer."""
    async with serving() as gateway:
        yield gateway


def address(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


def list_services() -> reflection_pb2.ServerReflectionRequest:
    return reflection_pb2.ServerReflectionRequest(host="", list_services="")


async def test_a_client_lists_and_describes_the_gateways_services(roomy_gateway: Gateway) -> None:
    """What grpcurl does: list the services, then describe one from its file descriptors."""
    gateway = roomy_gateway
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
        await stream.write(list_services())
        listed = await stream.read()
        await stream.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=INFERENCE))
        described = await stream.read()
        await stream.done_writing()
        assert await stream.read() == grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
    names = {service.name for service in listed.list_services_response.service}
    assert {INFERENCE, "grpc.health.v1.Health", REFLECTION} <= names
    assert described.file_descriptor_response.file_descriptor_proto
    assert described.original_request.file_containing_symbol == INFERENCE

    # grpcio-reflection's own client (a blocking channel: on a thread, the gateway runs here).
    def describe() -> tuple[list[str], list[str]]:
        with grpc.insecure_channel(address(gateway)) as blocking:
            database = ProtoReflectionDescriptorDatabase(blocking)
            pool = descriptor_pool.DescriptorPool(database)
            service = pool.FindServiceByName(INFERENCE)
            return list(database.get_services()), [method.name for method in service.methods]

    services, methods = await asyncio.to_thread(describe)
    assert INFERENCE in services
    assert "ModelInfer" in methods and "ModelStreamInfer" in methods


async def test_a_request_larger_than_any_reflection_request_is_refused_unread(gateway: Gateway) -> None:
    oversized = reflection_pb2.ServerReflectionRequest(file_containing_symbol="s" * (1 << 20))
    assert oversized.ByteSize() > MAX_REQUEST_BYTES
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
        await stream.write(oversized)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.read()
    info = error_info(refused.value)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info is not None and info.reason == "REQUEST_TOO_LARGE"
    assert gateway.pipeline.request_bytes.in_use == 0


async def test_a_request_that_does_not_parse_is_refused(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stream = channel.stream_stream(f"/{REFLECTION}/ServerReflectionInfo")(timeout=10)
        await stream.write(b"\xff\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.read()
    info = error_info(refused.value)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info is not None and info.reason == "REQUEST_NOT_PARSED"


async def test_an_open_stream_holds_its_request_of_the_request_budget(gateway: Gateway) -> None:
    request = reflection_pb2.ServerReflectionRequest(host="h" * 4000, file_containing_symbol=INFERENCE)
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
        await stream.write(request)
        await stream.read()  # answered: the handler read the request before answering it
        assert gateway.pipeline.request_bytes.in_use == request.ByteSize()
        stream.cancel()


async def test_reflection_streams_are_bounded_and_counted_apart(gateway: Gateway) -> None:
    """Reflection is not authenticated: its streams have their own bound, so an anonymous
    client holding them all leaves the callers' streams and the health watches free."""
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        first = stub.ServerReflectionInfo(timeout=30)
        await first.write(list_services())
        assert (await first.read()).list_services_response.service
        second = stub.ServerReflectionInfo(timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        info = error_info(refused.value)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info is not None and info.reason == "TOO_MANY_STREAMS"
        assert "limits.max_reflection_streams" in (refused.value.details() or "")
        # The health watch's one place and the callers' one place are still free.
        watching = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert (await watching.read()).status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        stream = channel.stream_stream(f"/{INFERENCE}/ModelStreamInfer")(timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stream.read()
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watching.cancel()
        # The first stream still answers.
        await first.write(list_services())
        assert (await first.read()).list_services_response.service
        await first.done_writing()


def large_bytes_held() -> int:
    """Bytes objects of more than 512 KiB that some object the collector tracks refers to."""
    return sum(
        1
        for holder in gc.get_objects()
        for held in gc.get_referents(holder)
        if isinstance(held, bytes) and len(held) > (512 << 10)
    )


async def test_a_refused_request_is_not_kept_once_its_stream_is_refused(gateway: Gateway) -> None:
    """grpc's request iterator holds the last message it yielded, in a reference cycle: read
    through it, each refused request stayed until the cyclic collector ran (40 refused 15 MiB
    requests: ~600 MiB, more each time a client repeated them). No collection runs here."""
    oversized = reflection_pb2.ServerReflectionRequest(file_containing_symbol="s" * (1 << 20))
    before = large_bytes_held()
    async with grpc.aio.insecure_channel(address(gateway)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        streams = []
        for _ in range(3):  # the client keeps each one's side open, as the review's did
            stream = stub.ServerReflectionInfo(timeout=10)
            streams.append(stream)
            await stream.write(oversized)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stream.read()  # the status: the handler has ended
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert large_bytes_held() <= before
        for stream in streams:
            stream.cancel()


# A route's descriptor set with a service the route does not serve, and labelled fields. Its
# own package and file name: protobuf's default pool is one per process, shared by every test.
ROUTED_PROTO = """
syntax = "proto3";
package reflected.hr;
import "labelgate/v1/classification.proto";

message EmployeeRequest { int64 id = 1; }
message Employee {
  int64 id = 1 [(labelgate.v1.labels) = "public"];
  string ssn = 2 [(labelgate.v1.labels) = "confidential"];
  int64 salary_cents = 3 [(labelgate.v1.labels) = "restricted"];
}
message WipeRequest { string reason = 1; }
message WipeReply {}
service Directory { rpc GetEmployee(EmployeeRequest) returns (Employee); }
service InternalAdmin { rpc WipeAllRecords(WipeRequest) returns (WipeReply); }
"""
ROUTED_FILE = "reflected/hr.proto"


def routed_descriptor_set(folder: Path) -> Path:
    (folder / "reflected").mkdir()
    (folder / ROUTED_FILE).write_text(ROUTED_PROTO)
    out = folder / "hr.binpb"
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", ROUTED_FILE]) == 0
    return out


async def test_reflection_answers_from_the_gateways_own_services_not_a_routes_descriptors(
    tmp_path: Path,
) -> None:
    """Routed services are not listed, and nothing of their descriptor sets is described:
    not the unrouted service, not the routed one, not the file nor its labelled messages."""
    route = {
        "method_prefix": "/reflected.hr.Directory/",
        "descriptor_set": str(routed_descriptor_set(tmp_path)),
    }
    asked = [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="reflected.hr.InternalAdmin"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="reflected.hr.InternalAdmin.WipeAllRecords"
        ),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="reflected.hr.Directory"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="reflected.hr.Employee"),
        reflection_pb2.ServerReflectionRequest(file_by_filename=ROUTED_FILE),
        reflection_pb2.ServerReflectionRequest(
            file_containing_extension=reflection_pb2.ExtensionRequest(
                containing_type="reflected.hr.Employee", extension_number=1
            )
        ),
        reflection_pb2.ServerReflectionRequest(all_extension_numbers_of_type="reflected.hr.Employee"),
    ]
    async with (
        serving(routes=[route]) as gateway,
        grpc.aio.insecure_channel(address(gateway)) as channel,  # no token
    ):
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
        answers = []
        for request in asked:
            await stream.write(request)
            answers.append(await stream.read())
        await stream.write(list_services())
        listed = await stream.read()
        await stream.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=INFERENCE))
        described = await stream.read()
        await stream.done_writing()
    for request, answer in zip(asked, answers, strict=True):
        assert answer.WhichOneof("message_response") == "error_response", (request, answer)
        assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    names = {service.name for service in listed.list_services_response.service}
    assert names == {INFERENCE, "grpc.health.v1.Health", REFLECTION}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert "inference/open_inference.proto" in {file.name for file in files}
    assert INFERENCE.rpartition(".")[2] in {service.name for file in files for service in file.service}
    assert not [file.name for file in files if file.package == "reflected.hr"]
