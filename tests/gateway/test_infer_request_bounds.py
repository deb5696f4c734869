"""An Open Inference Protocol request is parsed only once its caller is authenticated, and only
when its wire bytes show that the parse stays within its bounds (``gateway/wire_bounds.py``,
``gateway/inference.py``).

Parsed first (its model routes and names the call), 16 MiB of empty ``inputs`` cost an
anonymous caller's ModelInfer 1.6 s of the event loop and 704 MiB, and ``limits.max_inputs``
(1,024) was checked only once all of it was parsed (review). The repository and directory
methods parsed first too, and ModelStreamInfer's messages were parsed unbounded.

What a parse builds is bounded too (``limits.max_message_bytes``) and charged to the call's
lease of the request bytes budget: counted by their wire bytes, 60 inference calls of 50,000
request parameters each (439 KB) held by their upstream took a gateway +456 MiB."""

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
from google.protobuf.message import Message

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput
from labelgate.gateway import inflight, wire_bounds
from labelgate.gateway.status import error_info
from tests.gateway.test_routed_request_bounds import none_kept_once_the_calls_end, peak_rss_mib
from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port, labelgate_command, running

SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
STREAM_INFER = f"/{SERVICE}/ModelStreamInfer"
Metadata = tuple[tuple[str, str], ...]
DEFAULT_MAX_VALUES = 100_000  # limits.max_message_values
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # limits.max_message_bytes
REPLY = pb.ModelInferResponse(model_name="customer-profile").SerializeToString()
# 16 MiB of empty inputs (``\x2a\x00``: two bytes of wire each, about 88 once parsed).
AMPLIFYING = b"\x2a\x00" * (8 * 1024 * 1024 - 64)
# As many empty request parameters (map entries): no inputs at all, values past the bound.
MANY_PARAMETERS = b"\x22\x00" * (DEFAULT_MAX_VALUES + 1)
# Empty request parameters within the value bound: upb builds an entry and its parameter for
# each (the walk's estimate: 20 MB).
WIDE_PARAMETERS = b"\x22\x00" * (DEFAULT_MAX_VALUES - 100)
NOT_PROTOBUF = b"\x2a\x05\x00"  # a field cut short


def analyst() -> Metadata:
    return token("ann", "analysts")


@contextlib.asynccontextmanager
async def inference_upstream() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An upstream answering ModelInfer (and each ModelStreamInfer message) with ``REPLY``,
    without parsing anything; what reached it is kept."""
    received: list[bytes] = []

    async def infer(request: bytes, _: Any) -> bytes:
        received.append(request)
        return REPLY

    async def stream_infer(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            received.append(request)
            yield pb.ModelStreamInferResponse(
                infer_response=pb.ModelInferResponse.FromString(REPLY)
            ).SerializeToString()

    handlers: dict[str, Any] = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream_infer),
    }
    async with serving_grpc(SERVICE, handlers) as (address, _):
        yield address, received


async def unary(channel: grpc.aio.Channel, method: str, body: bytes, metadata: Metadata) -> bytes:
    call: Any = channel.unary_unary(f"/{SERVICE}/{method}")
    reply: bytes = await call(body, metadata=metadata, timeout=30)
    return reply


async def streamed(channel: grpc.aio.Channel, body: bytes, metadata: Metadata) -> list[bytes]:
    """``body`` sent raw as ModelStreamInfer's one message; the replies."""

    async def one() -> AsyncIterator[bytes]:
        yield body

    call: Any = channel.stream_stream(STREAM_INFER)
    answer = call(one(), metadata=metadata, timeout=30)
    return [reply async for reply in answer]


async def refused(
    channel: grpc.aio.Channel, method: str, body: bytes, metadata: Metadata
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method == "ModelStreamInfer":
            await streamed(channel, body, metadata)
        else:
            await unary(channel, method, body, metadata)
    return caught.value


def reason(error: grpc.aio.AioRpcError) -> tuple[str, str | None]:
    info = error_info(error)
    return error.code().name, info.reason if info else None


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The request types (and body sizes) protobuf parsed in this process: the gateway parses
    with these classes, and the test's upstream parses nothing."""
    seen: list[tuple[str, int]] = []
    for message_type in (
        pb.ModelInferRequest,
        pb.ModelMetadataRequest,
        ext.RepositoryIndexRequest,
        ext.RepositoryModelLoadRequest,
    ):
        parse = message_type.FromString

        def counted(body: bytes, parse: Any = parse, name: str = message_type.__name__) -> Message:
            seen.append((name, len(body)))
            return parse(body)  # type: ignore[no-any-return]

        monkeypatch.setattr(message_type, "FromString", counted)
    return seen


# -- the walk of an inference request, alone ----------------------------------------------


def infer_bounds() -> wire_bounds.MessageBounds:
    from labelgate.gateway.inference import infer_bounds as bounds  # the defaults' bounds

    return bounds(1024, 64)


def test_a_tensors_contents_are_data_and_its_inputs_and_outputs_have_their_own_bounds(
    parses: list[tuple[str, int]],
) -> None:
    # A legitimate tensor of two million INT64 elements (packed varints) and one of a million
    # BYTES elements: a few values each, not millions.
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="ids", datatype="INT64", shape=[2_000_000]).contents.int64_contents.extend(
        [7] * 2_000_000
    )
    request.inputs.add(name="texts", datatype="BYTES", shape=[1_000_000]).contents.bytes_contents.extend(
        [b"abc"] * 1_000_000
    )
    body = request.SerializeToString()
    bounds = infer_bounds()
    assert wire_bounds.count_values(pb.ModelInferRequest, body, DEFAULT_MAX_VALUES, bounds) == 1 + 2 * 5
    parsed = wire_bounds.parse_within(
        pb.ModelInferRequest, body, DEFAULT_MAX_VALUES, bounds, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
    )
    assert len(parsed.inputs[1].contents.bytes_contents) == 1_000_000
    assert parses == [("ModelInferRequest", len(body))]
    del parses[:]
    # Past the inputs' or the requested outputs' own bound: their own reasons, as once parsed
    # (``bounds.check_target``), nothing parsed; past the values' bound, MESSAGE_TOO_MANY_VALUES.
    for wire, expected, limit in (
        (AMPLIFYING, "TOO_MANY_INPUTS", "limits.max_inputs"),
        (b"\x32\x00" * (DEFAULT_MAX_VALUES + 1), "TOO_MANY_OUTPUTS", "limits.max_requested_outputs"),
        (MANY_PARAMETERS, "MESSAGE_TOO_MANY_VALUES", "limits.max_message_values"),
    ):
        with pytest.raises(InvalidInput) as caught:
            wire_bounds.parse_within(
                pb.ModelInferRequest,
                wire,
                DEFAULT_MAX_VALUES,
                bounds,
                max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES,
            )
        assert caught.value.reason == expected and limit in caught.value.message
    assert parses == []


def large_tensors() -> bytes:
    """A legitimate request: a million INT64 elements and 100,000 BYTES ones."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="ids", datatype="INT64", shape=[1_000_000]).contents.int64_contents.extend(
        range(1_000_000)
    )
    request.inputs.add(name="texts", datatype="BYTES", shape=[100_000]).contents.bytes_contents.extend(
        [b"abc"] * 100_000
    )
    return request.SerializeToString()


async def test_what_an_inference_requests_parse_builds_is_bounded_and_charged(
    parses: list[tuple[str, int]],
) -> None:
    bounds = infer_bounds()

    async def parse(body: bytes) -> pb.ModelInferRequest:
        return await wire_bounds.parsed(
            pb.ModelInferRequest, body, DEFAULT_MAX_VALUES, bounds, max_parsed_bytes=DEFAULT_MAX_MESSAGE_BYTES
        )

    # Past what one request may build: refused, not parsed.
    with pytest.raises(InvalidInput) as caught:
        await parse(WIDE_PARAMETERS)
    assert caught.value.reason == "REQUEST_TOO_LARGE" and "limits.max_message_bytes" in caught.value.message
    assert parses == []
    # Half as many (100 KB: once parsed at once, unwalked): walked, and charged what it builds.
    half = WIDE_PARAMETERS[: len(WIDE_PARAMETERS) // 2]
    cost = wire_bounds.cost_of(pb.ModelInferRequest, half, DEFAULT_MAX_VALUES, bounds)
    budget = inflight.RequestBytes(128 << 20)
    with budget.call(len(half)) as lease:
        await parse(half)
        assert lease.size == len(half) + cost.parsed_bytes > 50 * len(half)
    # Large tensors build their data (bounded by their bytes), not messages: charged little.
    tensors = large_tensors()
    with budget.call(len(tensors)) as lease:
        parsed = await parse(tensors)
        assert len(parsed.inputs[0].contents.int64_contents) == 1_000_000
        assert len(tensors) < lease.size < len(tensors) + 4096
    assert parses == [("ModelInferRequest", len(half)), ("ModelInferRequest", len(tensors))]
    assert budget.in_use == 0


# -- through a gateway in this process: what was parsed is counted --------------------------

# method -> (an amplifying body of its request, what an authenticated caller is refused with)
AMPLIFIED = {
    "ModelInfer": (AMPLIFYING, ("INVALID_ARGUMENT", "TOO_MANY_INPUTS")),
    "ModelStreamInfer": (AMPLIFYING, ("INVALID_ARGUMENT", "TOO_MANY_INPUTS")),
    # A one-model method and a directory method: unknown fields, each a value.
    "ModelMetadata": (
        b"\x18\x00" * (DEFAULT_MAX_VALUES + 1),
        ("INVALID_ARGUMENT", "MESSAGE_TOO_MANY_VALUES"),
    ),
    "RepositoryIndex": (
        b"\x18\x00" * (DEFAULT_MAX_VALUES + 1),
        ("INVALID_ARGUMENT", "MESSAGE_TOO_MANY_VALUES"),
    ),
    # Empty repository parameters (map entries).
    "RepositoryModelLoad": (
        b"\x1a\x00" * (DEFAULT_MAX_VALUES + 1),
        ("INVALID_ARGUMENT", "MESSAGE_TOO_MANY_VALUES"),
    ),
}


@pytest.mark.parametrize("method", list(AMPLIFIED))
async def test_an_anonymous_callers_request_is_refused_unparsed(
    parses: list[tuple[str, int]], method: str
) -> None:
    """Whatever its body: not parsed, not walked; UNAUTHENTICATED."""
    amplifying, _ = AMPLIFIED[method]
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen, options=[("grpc.max_send_message_length", 64 << 20)]) as channel,
    ):
        for body in (amplifying, NOT_PROTOBUF):
            error = await refused(channel, method, body, ())
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert parses == [] and received == []


@pytest.mark.parametrize("method", list(AMPLIFIED))
async def test_an_authenticated_amplifying_request_is_refused_before_it_is_parsed(
    parses: list[tuple[str, int]], method: str
) -> None:
    amplifying, expected = AMPLIFIED[method]
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen, options=[("grpc.max_send_message_length", 64 << 20)]) as channel,
    ):
        error = await refused(channel, method, amplifying, analyst())
        assert reason(error) == expected, error.details()
    assert parses == [] and received == []


@pytest.mark.parametrize("method", ["ModelInfer", "ModelStreamInfer"])
async def test_an_inference_request_whose_parse_builds_too_much_is_refused_unparsed(
    parses: list[tuple[str, int]], method: str
) -> None:
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        error = await refused(channel, method, WIDE_PARAMETERS, analyst())
        assert reason(error) == ("INVALID_ARGUMENT", "REQUEST_TOO_LARGE"), error.details()
        assert "limits.max_message_bytes" in (error.details() or "")
    assert parses == [] and received == []


async def test_a_large_legitimate_inference_request_is_parsed_once_and_sent_on(
    parses: list[tuple[str, int]],
) -> None:
    """Its tensors' elements are its data, not values of the bound: a million INT64s go
    through (parsed off the event loop: it is larger than the bound; within the test
    upstream's 4 MiB)."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="ids", datatype="INT64", shape=[1_000_000]).contents.int64_contents.extend(
        range(1_000_000)
    )
    body = request.SerializeToString()
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen, options=[("grpc.max_send_message_length", 64 << 20)]) as channel,
    ):
        await unary(channel, "ModelInfer", body, analyst())
        assert [name for name, _ in parses] == ["ModelInferRequest"]
        assert [
            pb.ModelInferRequest.FromString(sent).inputs[0].contents.int64_contents[-1] for sent in received
        ] == [999_999]


async def test_a_body_that_does_not_parse_is_still_refused_with_its_reason(
    parses: list[tuple[str, int]],
) -> None:
    async with (
        inference_upstream() as (upstream, received),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        for method in ("ModelInfer", "ModelStreamInfer", "RepositoryIndex"):
            error = await refused(channel, method, NOT_PROTOBUF, analyst())
            assert reason(error) == ("INVALID_ARGUMENT", "REQUEST_NOT_PARSED"), (method, error.details())
    assert received == []


# -- a real gateway: what its process held --------------------------------------------------


@contextlib.contextmanager
def gateway_process(tmp: Path, upstream: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": None,
        "upstream": {"address": upstream},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "infer-request-bounds-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
    }
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(tmp / "gateway.yaml"))
    with running(command, tmp / "gateway.log", port=port) as process:
        yield f"127.0.0.1:{port}", process.pid


AT_ONCE = 2
# What a gateway may grow by receiving such requests, two at a time, unparsed: their wire
# bytes in grpc's buffers and as Python bytes, and what its allocators keep of them (measured
# for routed requests: 100-200 MiB). Parsed, one such request alone grew it by 704 MiB.
MARGIN_MIB = 384


async def test_amplifying_requests_leave_a_real_gateways_memory_as_it_was(tmp_path: Path) -> None:
    callers: dict[str, Metadata] = {"anonymous": (), "ann": analyst()}
    options = [("grpc.max_send_message_length", 64 << 20)]
    refusals: dict[str, set[tuple[str, str | None]]] = {name: set() for name in callers}
    async with inference_upstream() as (upstream, received):
        with gateway_process(tmp_path, upstream) as (listen, pid):
            async with grpc.aio.insecure_channel(listen, options=options) as channel:
                with pytest.raises(grpc.aio.AioRpcError):  # warmed up: its first call's imports
                    await unary(channel, "ModelInfer", NOT_PROTOBUF, callers["ann"])
                before = peak_rss_mib(pid)
                for method in ("ModelInfer", "ModelStreamInfer", "ModelInfer", "ModelStreamInfer"):
                    for name, metadata in callers.items():
                        if method == "ModelStreamInfer" and not metadata:
                            # Refused before its message is read (as it was): the client's
                            # write then races the stream's end (INTERNAL, on its side).
                            continue
                        batch = [refused(channel, method, AMPLIFYING, metadata) for _ in range(AT_ONCE)]
                        for error in await asyncio.gather(*batch):
                            refusals[name].add(reason(error))
                grown = peak_rss_mib(pid) - before
    assert grown < MARGIN_MIB, f"the gateway's peak memory grew by {grown:.0f} MiB"
    assert {code for code, _ in refusals["anonymous"]} == {"UNAUTHENTICATED"}, refusals
    assert refusals["ann"] == {("INVALID_ARGUMENT", "TOO_MANY_INPUTS")}, refusals
    assert received == []


def test_an_unparsed_requests_refusal_names_the_model_of_its_first_field() -> None:
    """What an anonymous caller's refusal is recorded and traced under, read without a parse."""
    name = "customer-profile-" + "x" * 300
    body = pb.ModelInferRequest(model_name=name).SerializeToString() + AMPLIFYING[:1000]
    assert wire_bounds.leading_text(body, 1) == name
    assert wire_bounds.leading_text(AMPLIFYING, 1) == ""  # the first field is an input
    assert wire_bounds.leading_text(b"\x0a\x05ab", 1) == ""  # cut short
    assert wire_bounds.leading_text(b"\x0a\x02\xff\xfe", 1) == ""  # not UTF-8


async def test_a_refused_requests_bytes_are_not_kept_past_its_call() -> None:
    """Nothing of a refused call (anonymous, or refused at its parse) refers to its request
    once it ended: the gateway's collector runs rarely (``gateway/heap.py``)."""
    body = AMPLIFYING[: 2 * 123_457]  # a size nothing else has
    async with (
        inference_upstream() as (upstream, _),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError):  # its first call's imports and caches
            await unary(channel, "ModelInfer", NOT_PROTOBUF, analyst())
        gc.disable()
        try:
            for metadata in ((), analyst(), (), analyst()):
                error = await refused(channel, "ModelInfer", body, metadata)
                assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
            del error
            await none_kept_once_the_calls_end(len(body), body)
        finally:
            gc.enable()


def distinct_parameters(count: int) -> bytes:
    """A ModelInfer of ``count`` request parameters of distinct names and no value: 439 KB
    for 50,000, which parsed and held take a gateway 7.6 MB (its estimate: 13 MB)."""
    entries = (b"\x0a" + bytes([len(name)]) + name for name in (str(n).encode() for n in range(count)))
    head = pb.ModelInferRequest(model_name="customer-profile").SerializeToString()
    return head + b"".join(b"\x22" + bytes([len(entry)]) + entry for entry in entries)


HELD_CALLS = 60
# What a gateway may grow by holding 60 such calls, the budget shedding all but a few: their
# wire bytes (26 MB), grpc's buffers, the few parsed (measured: 100 MiB). Counted by their
# wire bytes, all 60 were held: +456 MiB.
HELD_MARGIN_MIB = 224


async def test_inference_calls_whose_parses_pass_the_budget_leave_a_real_gateways_memory(
    tmp_path: Path,
) -> None:
    body = distinct_parameters(49_999)  # an entry and its name: two values each
    cost = wire_bounds.cost_of(pb.ModelInferRequest, body, DEFAULT_MAX_VALUES, infer_bounds())
    fit = (128 << 20) // (len(body) + cost.parsed_bytes)
    release = asyncio.Event()
    received: list[int] = []

    async def infer(request: bytes, _: Any) -> bytes:
        received.append(len(request))
        await release.wait()
        return REPLY

    handlers: dict[str, Any] = {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with serving_grpc(SERVICE, handlers) as (upstream, _):
        with gateway_process(tmp_path, upstream) as (listen, pid):
            async with grpc.aio.insecure_channel(listen, options=options) as channel:
                with pytest.raises(grpc.aio.AioRpcError):  # warmed up: its first call's imports
                    await unary(channel, "ModelInfer", NOT_PROTOBUF, analyst())
                before = peak_rss_mib(pid)
                calls = [
                    asyncio.ensure_future(unary(channel, "ModelInfer", body, analyst()))
                    for _ in range(HELD_CALLS)
                ]
                for _ in range(1200):  # until each call is upstream or refused
                    if len(received) + sum(done.done() for done in calls) >= HELD_CALLS:
                        break
                    await asyncio.sleep(0.05)
                grown = peak_rss_mib(pid) - before
                release.set()
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert grown < HELD_MARGIN_MIB, f"the gateway's peak memory grew by {grown:.0f} MiB"
    shed = [reason(outcome) for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert set(shed) == {("RESOURCE_EXHAUSTED", "REQUEST_BYTES_EXHAUSTED")}
    # The calls' wire bytes are held from their arrival: fewer may fit than their parses alone.
    assert 1 <= len(received) <= fit and len(received) + len(shed) == HELD_CALLS
