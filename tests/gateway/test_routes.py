"""Routed (non-inference) gRPC services through a real gateway and a real demo backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_tools import protoc

from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings, RouteSettings, UpstreamSettings
from labelgate.demo.data import customer
from labelgate.errors import ConfigError
from labelgate.gateway.routes import RoutedServices
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import Upstream
from tests.gateway.harness import recorded_calls
from tests.gateway.pipeline_clock import moved_clock
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port, labelgate_command, running

DIRECTORY = "/labelgate.v1.demo.CustomerDirectory/"


def descriptor_set(tmp_path: Path) -> Path:
    out = tmp_path / "demo.binpb"
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "labelgate/v1/demo.proto"]) == 0
    return out


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = labelgate_command("demo-backend", "--listen", f"127.0.0.1:{port}")
    with running(command, tmp_path_factory.mktemp("backend") / "backend.log", port=port):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def gateway_with_routes(
    tmp: Path, backend: str, routes: list[dict], extra: dict[str, Any] | None = None
) -> Iterator[str]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": None,
        "upstream": {"address": backend},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "routes-test-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "routes": routes,
        **(extra or {}),
    }
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(tmp / "gateway.yaml"))
    with running(command, tmp / "gateway.log", port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def routed_gateway(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("routes")
    records = "per_message"  # each ListCustomers message is a whole customer
    descriptors = str(descriptor_set(tmp))
    routes = [{"method_prefix": DIRECTORY, "descriptor_set": descriptors, "split_values": records}]
    with gateway_with_routes(tmp, backend, routes) as target:
        yield target


def token(sub: str, *groups: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {mint_dev_token(sub, list(groups), 300)}"),)


async def list_customers(target: str, ids: list[int], metadata: tuple) -> list[demo_pb2.Customer]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
        request = demo_pb2.ListCustomersRequest(customer_ids=ids)
        return [c async for c in stub.ListCustomers(request, metadata=metadata, timeout=10)]


def test_server_streaming_masks_every_message_by_field_options(routed_gateway: str) -> None:
    ids = [1, 2, 4]
    received = asyncio.run(list_customers(routed_gateway, ids, token("ann", "analysts")))
    assert [c.customer_id for c in received] == ids
    for got in received:
        row = customer(got.customer_id)
        assert got.name == row.name  # internal: analysts see it
        assert got.ssn == "*" * (len(row.ssn) - 4) + row.ssn[-4:]  # confidential: partial
        assert got.card_number.endswith(row.card_number[-4:]) and row.card_number not in got.card_number
        assert got.account_secret == ""  # restricted: null
        assert row.account_secret not in got.SerializeToString().decode("utf-8", "replace")


def test_unary_method_is_classified_for_a_caller_without_groups(routed_gateway: str) -> None:
    async def get() -> demo_pb2.Customer:
        async with grpc.aio.insecure_channel(routed_gateway) as channel:
            stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
            request = demo_pb2.GetCustomerRequest(customer_id=7)
            return await stub.GetCustomer(request, metadata=token("alice"), timeout=10)

    got = asyncio.run(get())
    row = customer(7)
    assert got.customer_id == 7 and got.segment == row.segment  # public
    assert got.name == "[REDACTED]" and got.ssn == "[REDACTED]"
    assert got.account_secret == ""


def test_opaque_method_is_denied_unless_policy_allows_it(tmp_path: Path, backend: str) -> None:
    """Without descriptors nothing can be classified: the default policy denies the method."""
    with (
        gateway_with_routes(tmp_path, backend, [{"method_prefix": DIRECTORY}]) as target,
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        asyncio.run(list_customers(target, [1], token("ann", "analysts")))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(caught.value)
    assert info is not None and info.reason == "POLICY_DENIED"
    assert "opaque" in (caught.value.details() or "") or "method" in (caught.value.details() or "")


def opaque_policy(tmp: Path) -> Path:
    """The default pack with the directory's methods allowed opaque to analysts."""
    policy = tmp / "rego"
    shutil.copytree(REPO / "rego", policy)
    tables_file = policy / "labelgate/tables/data.json"
    tables = json.loads(tables_file.read_text())
    tables["opaque_methods"] = {DIRECTORY + m: ["analysts"] for m in ("GetCustomer", "ListCustomers")}
    tables_file.write_text(json.dumps(tables))
    return policy


ListCustomers = Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[bytes]]


@contextlib.asynccontextmanager
async def directory_serving(list_customers: ListCustomers) -> AsyncIterator[str]:
    """An in-process directory upstream whose ListCustomers is ``list_customers``."""
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(list_customers)
    service = grpc.method_handlers_generic_handler(DIRECTORY.strip("/"), {"ListCustomers": handler})
    server.add_generic_rpc_handlers([service])
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    try:
        yield address
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def gateway_in_process(
    upstream: str, *, upstream_timeout: float = 30, **overrides: Any
) -> AsyncIterator[str]:
    """A gateway in this process in front of ``upstream``; its listen address."""
    settings = GatewaySettings(
        **{
            "listen": f"127.0.0.1:{free_port()}",
            "admin_listen": None,
            "upstream": {"address": upstream, "timeout_seconds": upstream_timeout},
            "policy": {"dir": str(REPO / "rego")},
            "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
            "masking": {"hash_key": "routes-test-hash-key"},
            "auth": {"jwt": {"trust_dev_key": True}},
            **overrides,
        }
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield settings.listen
    finally:
        await gateway.stop(0)


async def refuse_negative_or_stall(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    """Refuses negative ids, else sends one customer and stalls."""
    if any(i < 0 for i in demo_pb2.ListCustomersRequest.FromString(request).customer_ids):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "negative id")
    yield demo_pb2.Customer(customer_id=1, name="one").SerializeToString()
    await asyncio.Event().wait()


async def test_an_opaque_streams_end_by_the_upstream_or_the_caller_is_recorded(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    metadata = (*token("ann", "analysts"), ("x-labelgate-session", "opaque-ends"))
    policy = {"dir": str(opaque_policy(tmp_path))}
    async with (
        directory_serving(refuse_negative_or_stall) as upstream,
        gateway_in_process(
            upstream, policy=policy, routes=[{"method_prefix": DIRECTORY}], recording={"dir": str(sessions)}
        ) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
        failing = stub.ListCustomers(demo_pb2.ListCustomersRequest(customer_ids=[-5]), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as upstream_failed:
            async for _ in failing:
                pass
        assert upstream_failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        left = stub.ListCustomers(demo_pb2.ListCustomersRequest(customer_ids=[1]), metadata=metadata)
        async for _ in left:
            break  # the upstream stalls after this one: the caller leaves
        left.cancel()
        for _ in range(300):
            if len(recorded_calls(sessions, "opaque-ends")) >= 5:
                break
            await asyncio.sleep(0.05)
    recorded = recorded_calls(sessions, "opaque-ends")
    ends = [(entry["decision"]["outcome"], entry["decision"]["reason"]) for entry in recorded]
    allowed, released = ("allow", "allowed; every field is visible"), ("allow", None)  # no decision
    assert ends == [
        allowed,
        ("deny", "UPSTREAM_INVALID_ARGUMENT"),
        allowed,
        released,  # the one reply the caller got, recorded before it left (``release_opaque_reply``)
        ("error", "CancelledError"),
    ]


@pytest.mark.parametrize("split_values", ["hold", "per_message"])
async def test_a_value_a_routed_stream_splits_across_messages_never_leaves_in_pieces(
    tmp_path: Path, split_values: str
) -> None:
    pieces = ["card 4111 11", "11 1111 1111, ssn 123-4", "5-6789 thanks"]

    async def one_customer_a_piece(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for number, piece in enumerate(pieces):
            yield demo_pb2.Customer(customer_id=number, notes=piece).SerializeToString()

    route = {
        "method_prefix": DIRECTORY,
        "descriptor_set": str(descriptor_set(tmp_path)),
        "split_values": split_values,
    }
    got: list[str] = []
    refused = None
    async with (
        directory_serving(one_customer_a_piece) as upstream,
        gateway_in_process(upstream, routes=[route]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
        try:
            ask = demo_pb2.ListCustomersRequest(customer_ids=[0, 1, 2])
            async for customer in stub.ListCustomers(ask, metadata=token("ann", "analysts")):
                got.append(customer.notes)
        except grpc.aio.AioRpcError as error:
            refused = error
    if split_values == "per_message":  # records: each message alone, the pieces go out
        assert (got, refused) == (pieces, None)
        return
    assert got == [] and refused is not None
    info = error_info(refused)
    assert info is not None and info.reason == "STREAM_VALUE_SPLIT"


async def test_a_route_with_server_streams_must_say_what_their_messages_carry(tmp_path: Path) -> None:
    """Token stream or records: nothing in a descriptor says, and guessing fails either way."""
    route = RouteSettings(method_prefix=DIRECTORY, descriptor_set=descriptor_set(tmp_path))
    upstream = Upstream(UpstreamSettings(address="127.0.0.1:1"), 1 << 20)
    with pytest.raises(ConfigError) as refused:
        RoutedServices.from_settings(None, [route], lambda name: upstream)  # type: ignore[arg-type]
    assert refused.value.reason == "ROUTE_INVALID"
    assert "ListCustomers" in refused.value.message and "split_values" in refused.value.message
    for choice in ("hold", "per_message"):
        chosen = route.model_copy(update={"split_values": choice})
        assert RoutedServices.from_settings(None, [chosen], lambda name: upstream).routes  # type: ignore[arg-type]
    await upstream.close()


def test_unauthenticated_routed_call_is_refused(routed_gateway: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(list_customers(routed_gateway, [1], ()))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", ["GetCustomer", "ListCustomers"])
def test_a_routed_body_that_does_not_parse_is_refused_with_a_reason(routed_gateway: str, method: str) -> None:
    """Typed methods parse their request in the handler: not grpc's UNKNOWN "Unexpected
    DecodeError", but INVALID_ARGUMENT with the gateway's reason (unary and server streaming)."""

    async def call() -> None:
        async with grpc.aio.insecure_channel(routed_gateway) as channel:
            send: Any = channel.unary_unary if method == "GetCustomer" else channel.unary_stream
            answer: Any = send(DIRECTORY + method)(b"\x08\xff", metadata=token("ann", "analysts"), timeout=10)
            if method == "GetCustomer":
                await answer
            else:
                async for _ in answer:
                    pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(call())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None and info.reason == "REQUEST_NOT_PARSED"


UPLOADS = "/labelgate.test.uploads.Uploads/"
UPLOADS_PROTO = """syntax = "proto3";
package labelgate.test.uploads;
import "labelgate/v1/classification.proto";
service Uploads {
  rpc Exchange(stream Chunk) returns (stream Receipt) {}
  rpc Upload(stream Chunk) returns (Receipt) {}
}
message Chunk { int64 number = 1; }
message Receipt { int64 chunks = 1 [(labelgate.v1.labels) = "public"]; }
"""


def uploads_descriptor_set(folder: Path) -> Path:
    """``UPLOADS_PROTO`` compiled (with its imports) into a descriptor set in ``folder``."""
    (folder / "uploads.proto").write_text(UPLOADS_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "uploads.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "uploads.proto"]) == 0
    return out


@contextlib.asynccontextmanager
async def exchange_upstream() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A real gRPC server of the bidirectional ``Uploads/Exchange``: one receipt per message,
    every message kept (for the test to see what arrived)."""
    received: list[bytes] = []

    async def exchange(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for chunk in requests:
            received.append(chunk)
            yield bytes([8, len(received)])

    async def upload(requests: AsyncIterator[bytes], _: Any) -> bytes:
        async for chunk in requests:
            received.append(chunk)
        return bytes([8, len(received)])

    handlers: dict[str, Any] = {
        "Exchange": grpc.stream_stream_rpc_method_handler(exchange),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
    }
    async with serving_grpc(UPLOADS.strip("/"), handlers) as (address, _):
        yield address, received


async def test_a_client_stream_message_that_does_not_parse_is_refused_with_a_reason(tmp_path: Path) -> None:
    """A client stream's messages are parsed as the upstream call reads them: grpc's request
    pump would swallow the error and cancel that call; the caller gets the gateway's refusal."""
    out = uploads_descriptor_set(tmp_path)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"\x08\x01"  # number: 1
        yield b"\x08\xff"  # a varint cut short

    async with exchange_upstream() as (upstream, received):
        routes = [{"method_prefix": UPLOADS, "descriptor_set": str(out), "split_values": "per_message"}]
        with gateway_with_routes(tmp_path, upstream, routes) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                exchange: Any = channel.stream_stream(UPLOADS + "Exchange")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in exchange(chunks(), metadata=token("ann", "analysts"), timeout=10):
                        pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    info = error_info(caught.value)
    assert info is not None and info.reason == "REQUEST_NOT_PARSED"
    assert b"\x08\xff" not in received


async def test_a_routed_client_stream_with_one_reply_is_relayed_and_classified(tmp_path: Path) -> None:
    """``stream Chunk -> Receipt``: the gateway had no upstream call for this shape, and
    answered UNKNOWN with an AttributeError's text; found by review."""
    out = uploads_descriptor_set(tmp_path)

    async def chunks() -> AsyncIterator[bytes]:
        for number in (1, 2, 3):
            yield bytes([8, number])

    async with exchange_upstream() as (upstream, received):
        routes = [{"method_prefix": UPLOADS, "descriptor_set": str(out), "split_values": "per_message"}]
        with gateway_with_routes(tmp_path, upstream, routes) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                upload: Any = channel.stream_unary(UPLOADS + "Upload")
                reply = await upload(chunks(), metadata=token("ann", "analysts"), timeout=10)
    assert reply == bytes([8, 3]), "the receipt, released: its one field is public"
    assert received == [bytes([8, number]) for number in (1, 2, 3)]


def expired_within_leeway(sub: str, *groups: str) -> tuple[tuple[str, str]]:
    """A token the verifier still accepts (its ``exp`` passed 2 s ago, within the 30 s
    leeway) and a stream refuses at its first reply (``still_valid``: TOKEN_EXPIRED)."""
    token = mint_dev_token(sub, list(groups), 300, now=time.time() - 302)
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def stalling_upstream(
    *replies: demo_pb2.Customer, arrived: Callable[[], None] = lambda: None
) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A directory upstream whose ListCustomers sends ``replies``, then waits until it is
    cancelled, which sets the event it yields: the upstream's own view of its stream ending.
    ``arrived`` is called as a request reaches it, before any reply is sent."""
    cancelled = asyncio.Event()

    async def send_then_stall(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        arrived()
        # Cancelled wherever it is: the gateway may refuse the first reply while later ones
        # are still being sent (it stalled only once all were out, and a cancel that came
        # before went unseen: the test waited out its 20 s). Cancelled while grpc writes a
        # reply, the generator is closed at its yield instead (GeneratorExit).
        try:
            for reply in replies:
                yield reply.SerializeToString()
            await asyncio.Event().wait()
        except (asyncio.CancelledError, GeneratorExit):
            cancelled.set()
            raise

    async with directory_serving(send_then_stall) as upstream:
        yield upstream, cancelled


async def _refused(listen: str, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(listen) as channel:
        stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            ask = demo_pb2.ListCustomersRequest(customer_ids=[1])
            # The caller's deadline bounds the upstream call too: far beyond the tests' waits.
            async for _ in stub.ListCustomers(ask, metadata=metadata, timeout=CALLER_DEADLINE):
                pass
    return caught.value


# Far beyond how long the tests wait (20 s): an upstream stream ending is the gateway's cancel.
LONG_UPSTREAM_TIMEOUT = 3600
CALLER_DEADLINE = 120


@pytest.mark.parametrize(
    ("split_values", "reason"), [("per_message", "TOKEN_EXPIRED"), ("hold", "STREAM_VALUE_SPLIT")]
)
async def test_a_routed_stream_the_gateway_refuses_is_cancelled_upstream(
    tmp_path: Path, split_values: str, reason: str
) -> None:
    """A refusal mid-stream (a reply refused as it is released, or a value split across
    replies found while they are held) ended the caller's stream, but the upstream's ran on
    until the upstream timeout: the refusal's traceback kept the handler's frame, and the
    upstream call with it, alive. Now it is cancelled, as ``ModelStreamInfer``'s is."""
    # The last piece is longer than the carry window: the pieces before it are scanned then.
    words = " thanks" * 100
    pieces = [demo_pb2.Customer(notes=piece) for piece in ("card 4111 11", "11 1111 1111", words)]
    route = {
        "method_prefix": DIRECTORY,
        "descriptor_set": str(descriptor_set(tmp_path)),
        "split_values": split_values,
    }
    async with (
        stalling_upstream(*pieces) as (upstream, cancelled),
        gateway_in_process(upstream, upstream_timeout=LONG_UPSTREAM_TIMEOUT, routes=[route]) as listen,
    ):
        # Minted once the gateway is up: a slow start must not take the token past its leeway
        # (then refused before the upstream stream opens, which is never cancelled).
        expiring = reason == "TOKEN_EXPIRED"
        metadata = expired_within_leeway("ann", "analysts") if expiring else token("ann", "analysts")
        refused = await _refused(listen, metadata)
        info = error_info(refused)
        assert info is not None and info.reason == reason, refused
        await asyncio.wait_for(cancelled.wait(), 20)


async def test_an_opaque_stream_the_gateway_refuses_is_cancelled_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opaque route's end by the token that opened it (TOKEN_EXPIRED) likewise left the
    upstream's stream open until the upstream timeout. The token expires once the request is
    upstream (the pipeline's clock moved an hour on): one already expired as the request is
    read sends nothing upstream (``pipeline.while_valid``)."""
    clock = moved_clock(monkeypatch)

    def an_hour_later() -> None:
        clock.ahead = 3600

    policy = {"dir": str(opaque_policy(tmp_path))}
    async with (
        stalling_upstream(demo_pb2.Customer(customer_id=1), arrived=an_hour_later) as (upstream, cancelled),
        gateway_in_process(
            upstream,
            upstream_timeout=LONG_UPSTREAM_TIMEOUT,
            policy=policy,
            routes=[{"method_prefix": DIRECTORY}],
        ) as listen,
    ):
        refused = await _refused(listen, token("ann", "analysts"))
        info = error_info(refused)
        assert info is not None and info.reason == "TOKEN_EXPIRED", refused
        await asyncio.wait_for(cancelled.wait(), 20)
