"""A routed request is parsed only once its caller is authenticated and admitted, and only
when its wire bytes show that the parse stays within ``limits.max_message_values``
(``gateway/wire_bounds.py``).

Parsed first, 16 MiB of empty sub-messages (``\\x12\\x00`` repeated) cost an anonymous
caller's call 0.25 s of the event loop and 384 MiB (24 times its bytes, which were all the
request bytes budget counted): 24 such anonymous calls took a gateway 0.8-1.3 GiB, and 8
open server streams of them 3.5 GiB (review)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_tools import protoc

from labelgate.errors import InvalidInput
from labelgate.gateway import wire_bounds
from labelgate.gateway.routes import load_descriptor_set
from labelgate.gateway.status import error_info
from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port, labelgate_command, running

NESTING = "/labelgate.test.nesting.Nesting/"
NESTING_PROTO = """syntax = "proto3";
package labelgate.test.nesting;
import "labelgate/v1/classification.proto";
service Nesting {
  rpc Get(Query) returns (Answer) {}
  rpc List(Query) returns (stream Answer) {}
  rpc Chat(stream Query) returns (stream Answer) {}
  rpc Send(stream Query) returns (Answer) {}
}
message Query {
  string q = 1;
  repeated Query kids = 2;
  repeated int64 ids = 3;
  repeated double weights = 4;
}
message Answer { string text = 1 [(labelgate.v1.labels) = "public"]; }
"""
METHODS = ["Get", "List", "Chat", "Send"]
Metadata = tuple[tuple[str, str], ...]
ANSWER = b"\x0a\x02ok"  # Answer(text="ok")
DEFAULT_MAX_VALUES = 100_000  # limits.max_message_values


def empty_kids(count: int) -> bytes:
    """A Query of ``count`` empty sub-messages: two bytes of wire each, about 48 parsed."""
    return b"\x12\x00" * count


def nesting_descriptor_set(folder: Path) -> Path:
    (folder / "nesting.proto").write_text(NESTING_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "nesting.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "nesting.proto"]) == 0
    return out


def query_type(folder: Path) -> type[Message]:
    """The ``Query`` class the gateway parses with (one per process: the default pool)."""
    load_descriptor_set(nesting_descriptor_set(folder))
    found = descriptor_pool.Default().FindMessageTypeByName("labelgate.test.nesting.Query")
    return message_factory.GetMessageClass(found)


def route(folder: Path) -> dict[str, str]:
    return {
        "method_prefix": NESTING,
        "descriptor_set": str(nesting_descriptor_set(folder)),
        "split_values": "per_message",
    }


@contextlib.asynccontextmanager
async def nesting_upstream() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Every method of ``Nesting``, answering ``ANSWER``; what reached it is kept."""
    received: list[bytes] = []

    async def get(request: bytes, _: Any) -> bytes:
        received.append(request)
        return ANSWER

    async def list_(request: bytes, _: Any) -> AsyncIterator[bytes]:
        received.append(request)
        yield ANSWER

    async def chat(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            received.append(request)
            yield ANSWER

    async def send(requests: AsyncIterator[bytes], _: Any) -> bytes:
        async for request in requests:
            received.append(request)
        return ANSWER

    handlers: dict[str, Any] = {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "List": grpc.unary_stream_rpc_method_handler(list_),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Send": grpc.stream_unary_rpc_method_handler(send),
    }
    async with serving_grpc(NESTING.strip("/"), handlers) as (address, _):
        yield address, received


async def call(channel: grpc.aio.Channel, method: str, body: bytes, metadata: Metadata) -> list[bytes]:
    """``body`` sent raw to ``method`` (as a client stream's one message); the replies."""

    async def one() -> AsyncIterator[bytes]:
        yield body

    path = NESTING + method
    shape: Any = {
        "Get": channel.unary_unary,
        "List": channel.unary_stream,
        "Chat": channel.stream_stream,
        "Send": channel.stream_unary,
    }[method]
    answer = shape(path)(one() if method in ("Chat", "Send") else body, metadata=metadata, timeout=30)
    if method in ("Get", "Send"):
        return [await answer]
    return [reply async for reply in answer]


async def refused(
    channel: grpc.aio.Channel, method: str, body: bytes, metadata: Metadata
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, method, body, metadata)
    return caught.value


@pytest.fixture
def parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the ``Query`` bodies protobuf parsed in this process (the gateway's
    handlers parse with this class)."""
    query = query_type(tmp_path)
    parse = query.FromString
    seen: list[int] = []

    def counted(body: bytes) -> Message:
        seen.append(len(body))
        return parse(body)

    monkeypatch.setattr(query, "FromString", counted)
    return seen


# -- the walk, alone ----------------------------------------------------------------------


def test_the_walk_counts_fields_elements_and_nested_messages(tmp_path: Path) -> None:
    query = query_type(tmp_path)
    kids = [query(q="x" * 5000)] * 3  # type: ignore[call-arg]
    message = query(q="a", kids=kids, ids=list(range(1000)), weights=[0.5] * 1000)  # type: ignore[call-arg]
    body = message.SerializeToString()
    # q, 3 kids and their q, 1000 ids (packed varints: each parses to 8 bytes), the weights
    # field once (packed doubles: copied as they are).
    assert wire_bounds.count_values(query, body, 10_000) == 1 + 3 * 2 + 1000 + 1
    with pytest.raises(wire_bounds.TooManyValues):
        wire_bounds.count_values(query, body, 1000)
    with pytest.raises(wire_bounds.Malformed):
        wire_bounds.count_values(query, b"\x12\x05\x00", 10_000)  # cut short


def test_an_amplifying_body_is_refused_without_being_parsed(parses: list[int], tmp_path: Path) -> None:
    query = query_type(tmp_path)
    body = empty_kids(8 * 1024 * 1024 - 16)  # 16 MiB: 384 MiB and 0.25 s once parsed
    with pytest.raises(InvalidInput) as caught:
        wire_bounds.parse_within(query, body, DEFAULT_MAX_VALUES)
    assert caught.value.reason == "MESSAGE_TOO_MANY_VALUES"
    assert "limits.max_message_values" in caught.value.message
    assert parses == []
    # A body within the bound parses, without a walk when it is no larger than the bound.
    assert len(wire_bounds.parse_within(query, empty_kids(1000), DEFAULT_MAX_VALUES).kids) == 1000  # type: ignore[attr-defined]
    assert parses == [2000]


# -- through a gateway in this process: what was parsed is counted --------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_an_anonymous_callers_request_is_refused_unparsed(
    parses: list[int], tmp_path: Path, method: str
) -> None:
    """Whatever its body: not parsed, not walked; UNAUTHENTICATED."""
    async with (
        nesting_upstream() as (upstream, received),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        for body in (empty_kids(300_000), b"\x12\x05\x00"):  # amplifying; not protobuf
            error = await refused(channel, method, body, ())
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert parses == [] and received == []


@pytest.mark.parametrize("method", METHODS)
async def test_an_authenticated_amplifying_request_is_refused_before_it_is_parsed(
    parses: list[int], tmp_path: Path, method: str
) -> None:
    async with (
        nesting_upstream() as (upstream, received),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        metadata = token("ann", "analysts")
        error = await refused(channel, method, empty_kids(DEFAULT_MAX_VALUES + 1), metadata)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        info = error_info(error)
        assert info is not None and info.reason == "MESSAGE_TOO_MANY_VALUES"
        assert "limits.max_message_values" in (error.details() or "")
        assert parses == [] and received == []
        # Within the bound: parsed once, and sent on.
        within = empty_kids(DEFAULT_MAX_VALUES)
        assert await call(channel, method, within, metadata) == [ANSWER]
        assert parses == [len(within)] and received == [within]


async def none_kept_once_the_calls_end(size: int, *apart: bytes) -> None:
    """No ``bytes`` of ``size`` is referred to, once grpc's server tasks have ended: the client
    has its status a moment before the server's task ends and drops its handler task, whose
    context holds the body as the call's noted request. A kept body stays kept: this waits up
    to 20 s for the count to fall, however slow the machine, and fails if it never does."""
    for _ in range(400):
        if bytes_kept(size, *apart) == 0:
            return
        await asyncio.sleep(0.05)
    assert bytes_kept(size, *apart) == 0


def bytes_kept(size: int, *apart: bytes) -> int:
    """How many ``bytes`` of ``size`` some object of this process refers to, ``apart`` aside."""
    kept = {
        id(found)
        for holder in gc.get_objects()
        for found in gc.get_referents(holder)
        if isinstance(found, bytes) and len(found) == size and all(found is not a for a in apart)
    }
    return len(kept)


async def test_a_refused_requests_bytes_are_not_kept_past_its_call(tmp_path: Path) -> None:
    """Nothing of a refused call refers to its request once it ended: the gateway's collector
    runs rarely (``gateway/heap.py``), and a closure over the request in a refusal's traceback
    kept 16 MiB a call until it did (``routes.ParsedOnceAdmitted``)."""
    body = empty_kids(DEFAULT_MAX_VALUES + 12_345)  # a size nothing else has
    async with (
        nesting_upstream() as (upstream, _),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        metadata = token("ann", "analysts")
        # The method's admission decided once, and cached (a decision's deadline timer keeps
        # its task's context, with the request noted in it, until it would have fired).
        assert await call(channel, "Get", b"\x0a\x01w", metadata) == [ANSWER]
        gc.disable()
        try:
            for _ in range(3):
                error = await refused(channel, "Get", body, metadata)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            del error
            await none_kept_once_the_calls_end(len(body), body)
        finally:
            gc.enable()


# -- a real gateway: what its process held --------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``): what it held at its worst, not when
    it happened to be sampled."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def gateway_process(tmp: Path, upstream: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": None,
        "upstream": {"address": upstream},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "routed-request-bounds-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "routes": [route(tmp)],
    }
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(tmp / "gateway.yaml"))
    with running(command, tmp / "gateway.log", port=port) as process:
        yield f"127.0.0.1:{port}", process.pid


# 16 MiB of empty sub-messages (within limits.max_message_bytes): 384 MiB once parsed.
AMPLIFYING = empty_kids(8 * 1024 * 1024 - 64)
AT_ONCE = 2
# What a gateway may grow by receiving such requests, two at a time, unparsed: their wire
# bytes in grpc's buffers and as Python bytes, and what its allocators keep of them (measured:
# 100-200 MiB). Parsed, one such request alone grew it by 384 MiB.
MARGIN_MIB = 384


async def test_amplifying_requests_leave_a_real_gateways_memory_as_it_was(tmp_path: Path) -> None:
    callers = {"anonymous": (), "ann": token("ann", "analysts")}
    options = [("grpc.max_send_message_length", 64 << 20)]
    refusals: dict[str, set[tuple[str, str | None]]] = {name: set() for name in callers}
    async with nesting_upstream() as (upstream, received):
        with gateway_process(tmp_path, upstream) as (listen, pid):
            async with grpc.aio.insecure_channel(listen, options=options) as channel:
                assert await call(channel, "Get", b"\x0a\x04warm", callers["ann"]) == [ANSWER]
                before = peak_rss_mib(pid)
                for method in ("Get", "List", "Get", "List"):
                    for name, metadata in callers.items():
                        batch = [refused(channel, method, AMPLIFYING, metadata) for _ in range(AT_ONCE)]
                        for error in await asyncio.gather(*batch):
                            info = error_info(error)
                            refusals[name].add((error.code().name, info.reason if info else None))
                grown = peak_rss_mib(pid) - before
    assert grown < MARGIN_MIB, f"the gateway's peak memory grew by {grown:.0f} MiB"
    assert {code for code, _ in refusals["anonymous"]} == {"UNAUTHENTICATED"}, refusals
    assert refusals["ann"] == {("INVALID_ARGUMENT", "MESSAGE_TOO_MANY_VALUES")}, refusals
    assert received == [b"\x0a\x04warm"]
