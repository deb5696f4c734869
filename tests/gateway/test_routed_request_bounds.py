"""A routed request is parsed only once its caller is authenticated and admitted, and only
when its wire bytes show that the parse stays within ``limits.max_message_values`` and that
what it builds stays within ``limits.max_message_bytes``, charged to the call's lease of the
request bytes budget (``gateway/wire_bounds.py``).

Parsed first, 16 MiB of empty sub-messages (``\\x12\\x00`` repeated) cost an anonymous
caller's call 0.25 s of the event loop and 384 MiB (24 times its bytes, which were all the
request bytes budget counted): 24 such anonymous calls took a gateway 0.8-1.3 GiB, and 8
open server streams of them 3.5 GiB (review). Bounded by its values only, 100,000 empty
sub-messages (195 KiB) of a type of 500 text fields parsed to 783 MiB, and 50,000 of them
(parsed at once, unwalked, being small) held the event loop 1.5 s (review)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_tools import protoc

from labelgate.auth import Subject
from labelgate.calls import PROVEN, Proven
from labelgate.errors import InvalidInput, Overloaded
from labelgate.gateway import inflight, wire_bounds
from labelgate.gateway.routes import load_descriptor_set
from labelgate.gateway.status import error_info
from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port, labelgate_command, running

NESTING = "/labelgate.test.nesting.Nesting/"
NESTING_PROTO = (
    """syntax = "proto3";
package labelgate.test.nesting;
import "labelgate/v1/classification.proto";
service Nesting {
  rpc Get(Query) returns (Answer) {}
  rpc List(Query) returns (stream Answer) {}
  rpc Chat(stream Query) returns (stream Answer) {}
  rpc Send(stream Query) returns (Answer) {}
  rpc Fill(Rows) returns (Answer) {}
  rpc Follow(Rows) returns (stream Answer) {}
}
message Query {
  string q = 1;
  repeated Query kids = 2;
  repeated int64 ids = 3;
  repeated double weights = 4;
}
message Answer { string text = 1 [(labelgate.v1.labels) = "public"]; }
// A table of wide rows: an empty row is two bytes of wire, and 500 text fields' layout parsed.
message Rows {
  repeated Row rows = 1;
  map<string, Row> by_key = 2;
  repeated string tags = 3;
  repeated int64 ids = 4;
}
message Row {
"""
    + "".join(f"  string c{number} = {number};\n" for number in range(1, 501))
    + """}
"""
)
METHODS = ["Get", "List", "Chat", "Send"]
Metadata = tuple[tuple[str, str], ...]
ANSWER = b"\x0a\x02ok"  # Answer(text="ok")
DEFAULT_MAX_VALUES = 100_000  # limits.max_message_values


def empty_kids(count: int) -> bytes:
    """A Query of ``count`` empty sub-messages: two bytes of wire each, about 48 parsed."""
    return b"\x12\x00" * count


def empty_rows(count: int) -> bytes:
    """Rows of ``count`` empty rows: two bytes of wire each, about 8 KiB parsed (the review's)."""
    return b"\x0a\x00" * count


def empty_entries(count: int) -> bytes:
    """Rows of ``count`` empty ``by_key`` entries: upb makes each one's Row, present or not."""
    return b"\x12\x00" * count


DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # limits.max_message_bytes


def nesting_descriptor_set(folder: Path) -> Path:
    (folder / "nesting.proto").write_text(NESTING_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "nesting.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "nesting.proto"]) == 0
    return out


def nesting_type(folder: Path, name: str) -> type[Message]:
    """The class of ``name`` the gateway parses with (one per process: the default pool)."""
    load_descriptor_set(nesting_descriptor_set(folder))
    found = descriptor_pool.Default().FindMessageTypeByName(f"labelgate.test.nesting.{name}")
    return message_factory.GetMessageClass(found)


def query_type(folder: Path) -> type[Message]:
    return nesting_type(folder, "Query")


def rows_type(folder: Path) -> type[Message]:
    return nesting_type(folder, "Rows")


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
        "Fill": grpc.unary_unary_rpc_method_handler(get),
        "Follow": grpc.unary_stream_rpc_method_handler(list_),
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
        "Fill": channel.unary_unary,
        "Follow": channel.unary_stream,
    }[method]
    answer = shape(path)(one() if method in ("Chat", "Send") else body, metadata=metadata, timeout=30)
    if method in ("Get", "Send", "Fill"):
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
    """The sizes of the ``Query`` and ``Rows`` bodies protobuf parsed in this process (the
    gateway's handlers parse with these classes)."""
    seen: list[int] = []
    for message_type in (query_type(tmp_path), rows_type(tmp_path)):
        parse = message_type.FromString

        def counted(body: bytes, parse: Any = parse) -> Message:
            seen.append(len(body))
            return parse(body)  # type: ignore[no-any-return]

        monkeypatch.setattr(message_type, "FromString", counted)
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
        wire_bounds.parse_within(query, body, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES)
    assert caught.value.reason == "MESSAGE_TOO_MANY_VALUES"
    assert "limits.max_message_values" in caught.value.message
    assert parses == []
    # A body within the bound parses.
    within = wire_bounds.parse_within(
        query, empty_kids(1000), DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
    )
    assert len(within.kids) == 1000  # type: ignore[attr-defined]
    assert parses == [2000]


# -- what a parse builds: estimated from the descriptors, bounded, charged -----------------

# A fresh process parses one body and prints what its resident memory grew by: upb allocates
# outside Python's allocator (tracemalloc does not see it).
MEASURE = """
import gc, sys
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
files = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read())
pool = descriptor_pool.DescriptorPool()
for file in files.file:
    pool.Add(file)
message_type = message_factory.GetMessageClass(pool.FindMessageTypeByName(sys.argv[2]))
body = open(sys.argv[3], "rb").read()
def resident():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
gc.collect()
before = resident()
parsed = message_type.FromString(body)
print(resident() - before)
"""


def resident_growth(tmp: Path, type_name: str, body: bytes) -> int:
    """What parsing ``body`` as ``type_name`` grew a fresh process's resident memory by."""
    (tmp / "body.bin").write_bytes(body)
    command = [
        sys.executable,
        "-c",
        MEASURE,
        str(nesting_descriptor_set(tmp)),
        f"labelgate.test.nesting.{type_name}",
        str(tmp / "body.bin"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


# Arrays are at their worst just past a power of two (131,072): grown, and what they outgrew
# kept in the arena.
PAST_A_DOUBLING = 131_073
# type -> a body of it, as upb builds it at its most per byte
SHAPES = {
    "empty wide rows": ("Rows", empty_rows(2_000)),
    "empty map entries of wide rows": ("Rows", empty_entries(2_000)),
    "rows that set a few fields": ("Rows", b"\x0a\x0c\x0a\x05alpha\xa2\x1f\x02xy" * 2_000),
    "empty texts": ("Rows", b"\x1a\x00" * PAST_A_DOUBLING),
    "packed one-byte int64s": ("Rows", b"\x22" + varint(PAST_A_DOUBLING) + b"\x01" * PAST_A_DOUBLING),
    "empty sub-messages": ("Query", empty_kids(PAST_A_DOUBLING)),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_of_what_a_parse_builds_is_at_least_what_upb_builds(tmp_path: Path, shape: str) -> None:
    """And not far above it: what it charges a call is what the call holds."""
    type_name, body = SHAPES[shape]
    estimate = wire_bounds.cost_of(nesting_type(tmp_path, type_name), body, 10**9).parsed_bytes
    built = resident_growth(tmp_path, type_name, body)
    assert built > 1 << 20, built  # well above the page-sized noise of a measure
    assert built <= estimate <= 4 * built, (built, estimate)


# The review's shapes: within the value bound (a row counts one), but each row is built with
# its 500 text fields. 100,000 of them parsed to 783 MiB; 50,000 (parsed at once, unwalked,
# being no larger than the bound) to 391 MiB, holding the event loop 1.5 s.
WIDE = {
    "empty rows at the value bound": empty_rows(DEFAULT_MAX_VALUES),
    "empty rows once parsed at once": empty_rows(DEFAULT_MAX_VALUES // 2 - 1),
    "empty map entries once parsed at once": empty_entries(DEFAULT_MAX_VALUES // 2 - 1),
}


@pytest.mark.parametrize("shape", list(WIDE))
def test_empty_messages_of_a_wide_type_are_refused_by_what_their_parse_builds(
    parses: list[int], tmp_path: Path, shape: str
) -> None:
    rows = rows_type(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        wire_bounds.parse_within(
            rows, WIDE[shape], DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
        )
    assert caught.value.reason == "REQUEST_TOO_LARGE"
    assert "limits.max_message_bytes" in caught.value.message
    assert parses == []


def ordinary_rows(tmp: Path, count: int) -> bytes:
    """Rows of ``count`` rows that set a few of their fields, as a client's would."""
    rows = rows_type(tmp)
    row = {"c1": "alpha", "c2": "beta", "c250": "gamma", "c500": "delta"}
    return rows(rows=[row] * count, tags=["a", "b"], ids=list(range(100))).SerializeToString()  # type: ignore[call-arg]


async def test_what_a_parse_builds_is_held_by_its_calls_lease(parses: list[int], tmp_path: Path) -> None:
    rows, query = rows_type(tmp_path), query_type(tmp_path)
    walked = ordinary_rows(tmp_path, 1_000)  # 8 MB parsed of 35 KB of wire
    cost = wire_bounds.cost_of(rows, walked, DEFAULT_MAX_VALUES)
    assert cost.parsed_bytes > 1_000 * 8_000
    budget = inflight.RequestBytes(128 << 20)
    with budget.call(len(walked)) as lease:
        await wire_bounds.parsed(rows, walked, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES)
        assert lease.size == len(walked) + cost.parsed_bytes
    # A small body, parsed at once without a walk, holds the most its bytes can build.
    small = query(q="hello", kids=[query(q="x")] * 3).SerializeToString()  # type: ignore[call-arg]
    at_most = wire_bounds.parsed_bytes_at_most(query, small)
    assert wire_bounds.cost_of(query, small, 100).parsed_bytes <= at_most <= wire_bounds.INLINE_PARSED_BYTES
    with budget.call(len(small)) as lease:
        await wire_bounds.parsed(query, small, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES)
        assert lease.size == len(small) + at_most
    assert budget.in_use == 0 and parses == [len(walked), len(small)]
    # Its wire bytes fit; with its parse they do not: shed, before the parse.
    tight = inflight.RequestBytes(cost.parsed_bytes)
    with tight.call(len(walked)) as lease:
        with pytest.raises(Overloaded) as caught:
            await wire_bounds.parsed(
                rows, walked, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
            )
        assert caught.value.reason == "REQUEST_BYTES_EXHAUSTED"
        assert lease.size == len(walked)
    assert tight.in_use == 0 and parses == [len(walked), len(small)]


async def test_one_callers_walks_do_not_keep_anothers_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's walks take one walk thread at a time, whatever it sends: another caller's
    walk runs meanwhile. Before, every walk queued for the one thread: a caller's hundreds
    of calls kept everyone else's waiting (review)."""
    query = query_type(tmp_path)
    flooding, other = empty_kids(60_000), empty_kids(60_001)  # each walked: larger than the bound
    walking, go_on = threading.Event(), threading.Event()
    cost_of, event_loops_thread = wire_bounds.cost_of, threading.current_thread()

    def held(message_type: type[Message], body: bytes, *rest: Any) -> wire_bounds.Cost:
        if body is flooding and threading.current_thread() is not event_loops_thread:
            walking.set()  # mallory's walks in a worker thread do not end until told to
            go_on.wait(30)
        return cost_of(message_type, body, *rest)

    monkeypatch.setattr(wire_bounds, "cost_of", held)

    async def parse_as(caller: str, body: bytes) -> Message:
        PROVEN.set(Proven(Subject(id=caller), "a-request"))  # as the call's authentication does
        return await wire_bounds.parsed(
            query, body, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
        )

    floods = [asyncio.create_task(parse_as("jwt:test#mallory", flooding)) for _ in range(4)]
    try:
        assert await asyncio.to_thread(walking.wait, 10)
        answer = await asyncio.wait_for(parse_as("jwt:test#ann", other), 10)
        assert len(answer.kids) == 60_001  # type: ignore[attr-defined]
        assert not any(flood.done() for flood in floods)
    finally:
        go_on.set()
        assert all(len(done.kids) == 60_000 for done in await asyncio.gather(*floods))  # type: ignore[attr-defined]


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


@pytest.mark.parametrize("method", ["Fill", "Follow"])
async def test_an_authenticated_wide_request_is_refused_before_it_is_parsed(
    parses: list[int], tmp_path: Path, method: str
) -> None:
    async with (
        nesting_upstream() as (upstream, received),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        metadata = token("ann", "analysts")
        for body in WIDE.values():
            error = await refused(channel, method, body, metadata)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            info = error_info(error)
            assert info is not None and info.reason == "REQUEST_TOO_LARGE"
            assert "limits.max_message_bytes" in (error.details() or "")
        assert parses == [] and received == []
        # Rows that set their fields go through.
        ordinary = ordinary_rows(tmp_path, 1_000)
        assert await call(channel, method, ordinary, metadata) == [ANSWER]
        assert parses == [len(ordinary)] and received == [ordinary]


@contextlib.asynccontextmanager
async def held_upstream(release: asyncio.Event) -> AsyncIterator[tuple[str, list[bytes]]]:
    """``Fill``, answered once ``release`` is set; what reached it is kept."""
    received: list[bytes] = []

    async def fill(request: bytes, _: Any) -> bytes:
        received.append(request)
        await release.wait()
        return ANSWER

    handlers: dict[str, Any] = {"Fill": grpc.unary_unary_rpc_method_handler(fill)}
    async with serving_grpc(NESTING.strip("/"), handlers) as (address, _):
        yield address, received


async def test_calls_whose_parses_together_pass_the_budget_are_shed(
    parses: list[int], tmp_path: Path
) -> None:
    """Each is within its own bound (15 MB built of 3 KB of wire), and the upstream holds them:
    the request bytes budget (128 MiB) holds eight, the others are shed before they are
    parsed. Counted by their wire bytes, every one was parsed (and 700 such calls fit)."""
    body = empty_rows(1_500)
    cost = wire_bounds.cost_of(
        rows_type(tmp_path), body, DEFAULT_MAX_VALUES, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
    )
    fit = (128 << 20) // (len(body) + cost.parsed_bytes)
    assert fit == 8
    release = asyncio.Event()
    async with (
        held_upstream(release) as (upstream, received),
        gateway_in_process(upstream, routes=[route(tmp_path)]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        metadata = token("ann", "analysts")
        calls = [asyncio.ensure_future(call(channel, "Fill", body, metadata)) for _ in range(fit + 4)]
        for _ in range(400):  # until each call is upstream or refused
            if len(received) + sum(done.done() for done in calls) >= len(calls):
                break
            await asyncio.sleep(0.05)
        release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    shed = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert [(error.code(), getattr(error_info(error), "reason", None)) for error in shed] == [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_BYTES_EXHAUSTED")
    ] * 4
    assert len(received) == fit and len(parses) == fit


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


# What a gateway may grow by receiving the review's shapes, two at a time: their wire bytes
# (100-200 KB) and grpc's buffers. Parsed, one of them alone grew it by 783 MiB.
WIDE_MARGIN_MIB = 96


async def outcome(
    channel: grpc.aio.Channel, method: str, body: bytes, metadata: Metadata
) -> tuple[str, str | None]:
    """What the call ended with: OK, or its status and reason."""
    try:
        await call(channel, method, body, metadata)
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        return error.code().name, info.reason if info else None
    return "OK", None


async def test_wide_requests_leave_a_real_gateways_memory_as_it_was(tmp_path: Path) -> None:
    metadata = token("ann", "analysts")
    ordinary = ordinary_rows(tmp_path, 100)
    outcomes: set[tuple[str, str | None]] = set()
    async with nesting_upstream() as (upstream, received):
        with gateway_process(tmp_path, upstream) as (listen, pid):
            async with grpc.aio.insecure_channel(listen) as channel:
                assert await call(channel, "Fill", ordinary, metadata) == [ANSWER]  # warmed up
                before = peak_rss_mib(pid)
                for method in ("Fill", "Follow"):
                    for body in WIDE.values():
                        batch = [outcome(channel, method, body, metadata) for _ in range(AT_ONCE)]
                        outcomes.update(await asyncio.gather(*batch))
                grown = peak_rss_mib(pid) - before
                assert await call(channel, "Follow", ordinary, metadata) == [ANSWER]  # served as before
    assert grown < WIDE_MARGIN_MIB, f"the gateway's peak memory grew by {grown:.0f} MiB"
    assert outcomes == {("INVALID_ARGUMENT", "REQUEST_TOO_LARGE")}, outcomes
    assert received == [ordinary, ordinary]
