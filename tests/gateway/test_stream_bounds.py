"""What a stream may hold of the gateway: the backend labels a ``ModelStreamInfer`` request
keeps, how long a stream may wait on its caller, how many streams are open at once.

In process: the pipeline with scripted stages (``test_pipeline``), then a gateway in this
process in front of an upstream in this process, on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.calls import Target
from labelgate.config import LimitSettings
from labelgate.errors import Overloaded, ResourceExhausted, UpstreamError
from labelgate.gateway.streams import (
    IdleClock,
    OpenRequest,
    OpenStreams,
    StreamIdle,
    StreamLedger,
    keep_backend_labels,
)
from labelgate.oip.tensor import Tensor
from tests.gateway.aio import Refusal, refusal_of
from tests.gateway.test_pipeline import (
    STREAM,
    FakeStream,
    make_call,
    make_pipeline,
    reply,
    request,
    requests_of,
    stream_reply,
)
from tests.gateway.test_routes import DIRECTORY, descriptor_set, gateway_in_process, token
from tests.support.grpc_servers import serving_services

# -- backend labels a streamed request keeps --------------------------------------------------


def labelled_reply(upstream_id: str, names: list[str], final: bool = False) -> Any:
    """A decoupled reply: ``text`` plus ``names``, every output labelled public by the upstream."""
    message = reply("chat", [Tensor(name, "BYTES", [1], [b""]) for name in ["text", *names]], upstream_id)
    for output in message.outputs:
        output.parameters["labelgate.labels"].string_param = "public"
    message.parameters["triton_final_response"].bool_param = final
    return stream_reply(message)


@pytest.fixture
def opened_requests(monkeypatch: pytest.MonkeyPatch) -> list[OpenRequest]:
    """Every request a stream's ledger opens, to look at what it keeps."""
    opened: list[OpenRequest] = []
    open_request = StreamLedger.open

    def noting(ledger: StreamLedger, target: Target, call: Any) -> str:
        upstream_id = open_request(ledger, target, call)
        opened.append(ledger.match(upstream_id))
        return upstream_id

    monkeypatch.setattr(StreamLedger, "open", noting)
    return opened


async def test_a_request_keeps_labels_only_of_the_outputs_it_can_release(
    opened_requests: list[OpenRequest],
) -> None:
    # The upstream names fresh outputs the caller did not ask for on every reply: they are
    # never released, so nothing of them is kept (kept, 800 replies of ten 100 KB names
    # held 800 MB until the request's final reply).
    pipeline, _, _, _ = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        names = [[f"x{i}-{j}" for j in range(5)] for i in range(20)]
        return [labelled_reply(sent.id, extra, final=i == 19) for i, extra in enumerate(names)]

    stream = pipeline.stream_infer(
        make_call(STREAM), requests_of(request("chat", outputs=("text",))), FakeStream(answer)
    )
    replies = [r async for r in stream]
    assert len(replies) == 20
    assert all([o.name for o in r.infer_response.outputs] == ["text"] for r in replies)
    (kept,) = opened_requests
    assert kept.backend == {"text": {"public"}}


async def test_a_request_whose_replies_name_too_many_outputs_is_refused(
    opened_requests: list[OpenRequest],
) -> None:
    # Naming none, a request releases every output: each reply's names are kept, up to
    # limits.max_fields of them in all. The upstream named them: its fault, not the caller's.
    pipeline, _, _, recorder = make_pipeline()
    pipeline.limits = LimitSettings(max_fields=8)

    def answer(sent: Any) -> list[Any]:
        return [labelled_reply(sent.id, [f"fresh-{i}"]) for i in range(20)]

    released = []
    with pytest.raises(UpstreamError) as refused:
        async for item in pipeline.stream_infer(
            make_call(STREAM), requests_of(request("chat")), FakeStream(answer)
        ):
            released.append(item)
    assert refused.value.reason == "UPSTREAM_TOO_MANY_FIELDS"
    assert (refused.value.code, refused.value.http_status) == (grpc.StatusCode.UNAVAILABLE, 502)
    assert len(released) == 7, "text and seven fresh names fill eight; the eighth is refused"
    assert recorder.records[-1].refusal == "UPSTREAM_TOO_MANY_FIELDS"
    (kept,) = opened_requests
    assert len(kept.backend) <= 8


def test_a_kept_name_is_bounded_like_a_field_path() -> None:
    held = OpenRequest("lg-1", Target(service="s", model="chat"), make_call(STREAM))
    limits = LimitSettings(max_path_bytes=32)
    keep_backend_labels(held, {"short": {"public"}}, limits)
    with pytest.raises(UpstreamError) as refused:
        keep_backend_labels(held, {"n" * 30: {"public"}}, limits)
    assert refused.value.reason == "UPSTREAM_PATH_TOO_LONG", "the upstream's fault, not the caller's"
    assert "n" * 30 not in refused.value.message, "the upstream's text stays out of the message"
    assert "38" not in refused.value.message, "nor the length it chose (outputs. and 30 bytes)"
    keep_backend_labels(held, {"short": {"confidential"}}, limits)
    assert held.backend == {"short": {"public", "confidential"}}, "a later reply cannot lower them"


# -- a stream waiting on its caller -----------------------------------------------------------


async def silence() -> AsyncIterator[Any]:
    await asyncio.Event().wait()  # the caller keeps its stream open, writing nothing
    yield request()  # pragma: no cover


async def test_a_stream_that_sends_nothing_ends_idle_and_is_recorded() -> None:
    pipeline, _, _, recorder = make_pipeline()
    pipeline.limits = LimitSettings(stream_idle_seconds=0.2)
    upstream = FakeStream(lambda sent: [])
    with pytest.raises(StreamIdle) as ended:
        # Bounded only so that a stream held for ever fails the test instead of hanging it.
        await asyncio.wait_for(anext(pipeline.stream_infer(make_call(STREAM), silence(), upstream)), 30)
    assert (ended.value.code, ended.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")
    assert upstream.sent == []
    assert [record.refusal for record in recorder.records] == ["STREAM_IDLE"]


async def test_a_stream_idles_once_its_requests_are_answered_not_while_one_is_open() -> None:
    pipeline, _, _, recorder = make_pipeline()
    pipeline.limits = LimitSettings(stream_idle_seconds=0.2)
    answer_now, written = asyncio.Event(), asyncio.Event()

    class HeldStream(FakeStream):
        """Answers only once the test lets it: the request stays unanswered until then."""

        async def write(self, message: Any) -> None:
            self.sent.append(message)
            self.answering = asyncio.create_task(self.answer_later(message.id))

        async def answer_later(self, upstream_id: str) -> None:
            written.set()  # taken: the pump goes back to waiting on the caller
            await answer_now.wait()
            await self.queue.put(labelled_reply(upstream_id, [], final=True))

    async def one_then_silence() -> AsyncIterator[Any]:
        yield request("chat", outputs=("text",))
        async for item in silence():
            yield item  # pragma: no cover

    stream = pipeline.stream_infer(make_call(STREAM), one_then_silence(), HeldStream(lambda sent: []))
    first = asyncio.create_task(anext(stream))
    await written.wait()
    # Five idle periods with the request unanswered: the upstream's deadline bounds this, not
    # the idle clock (a wrong clock ends the stream here, however fast the machine).
    await asyncio.sleep(1.0)
    assert not first.done()
    answer_now.set()
    answered = await asyncio.wait_for(first, 30)
    assert [o.name for o in answered.infer_response.outputs] == ["text"]
    with pytest.raises(StreamIdle):
        await asyncio.wait_for(anext(stream), 30)
    assert [record.refusal for record in recorder.records] == [None, None, "STREAM_IDLE"]


def test_the_idle_clock_runs_only_while_waiting_on_the_caller_with_nothing_unanswered() -> None:
    now = [100.0]
    clock = IdleClock(5.0, now=lambda: now[0])
    assert clock.left(unanswered=False) == math.inf, "not waiting yet"
    clock.waiting()
    now[0] += 2
    assert clock.left(unanswered=False) == 3.0
    assert clock.left(unanswered=True) == math.inf
    clock.busy()  # a request was read
    now[0] += 10
    assert clock.left(unanswered=False) == math.inf
    clock.waiting()
    now[0] += 4
    clock.answered()  # a reply restarts the wait
    assert clock.left(unanswered=False) == 5.0
    now[0] += 6
    assert clock.left(unanswered=False) == -1.0


# -- streams open at once ---------------------------------------------------------------------


def test_past_the_bound_a_stream_is_refused_and_a_closed_one_frees_its_place() -> None:
    streams = OpenStreams(2)
    with streams.opened(), streams.opened():
        with pytest.raises(Overloaded) as refused, streams.opened():
            pass  # pragma: no cover
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_STREAMS",
        )
        assert streams.count == 2
    assert streams.count == 0
    with streams.opened():
        assert streams.count == 1


def test_a_caller_past_its_share_is_refused_and_others_are_not() -> None:
    streams = OpenStreams(10, per_caller=2)
    with streams.of_caller("jwt:a#ann"), streams.of_caller("jwt:a#ann"):
        with pytest.raises(ResourceExhausted) as refused, streams.of_caller("jwt:a#ann"):
            pass  # pragma: no cover
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "CALLER_STREAMS_EXHAUSTED",
        )
        assert "limits.max_open_streams_per_caller" in refused.value.message
        with streams.of_caller("jwt:a#bob"):
            assert (streams.of("jwt:a#ann"), streams.of("jwt:a#bob")) == (2, 1)
    assert (streams.of("jwt:a#ann"), streams.of("jwt:a#bob")) == (0, 0)
    with streams.of_caller("jwt:a#ann"):  # a closed stream frees its place
        assert streams.of("jwt:a#ann") == 1


INFER_SERVICE = "inference.GRPCInferenceService"


@contextlib.asynccontextmanager
async def upstream_serving(stalled: asyncio.Event) -> AsyncIterator[str]:
    """An upstream in this process: ModelStreamInfer answers each request at once (final);
    the directory's ListCustomers sends one customer, then stalls (``stalled`` set)."""

    async def model_stream_infer(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            sent = pb.ModelInferRequest.FromString(raw)
            answer = pb.ModelInferResponse(model_name=sent.model_name, id=sent.id)
            output = answer.outputs.add(name="text", datatype="BYTES", shape=[1])
            output.contents.bytes_contents.append(b"ok")
            yield pb.ModelStreamInferResponse(infer_response=answer).SerializeToString()

    async def list_customers(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield demo_pb2.Customer(customer_id=1, name="one").SerializeToString()
        stalled.set()
        await asyncio.Event().wait()

    services = {
        INFER_SERVICE: {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(model_stream_infer)},
        DIRECTORY.strip("/"): {"ListCustomers": grpc.unary_stream_rpc_method_handler(list_customers)},
    }
    async with serving_services(services) as (address, _):
        yield address


def chat_request() -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="chat")
    prompt = message.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    prompt.contents.bytes_contents.append(b"hi")
    message.outputs.add(name="text")
    return message


def open_stream(channel: grpc.aio.Channel) -> Any:
    stub = channel.stream_stream(
        f"/{INFER_SERVICE}/ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    return stub(metadata=token("ann", "analysts"), timeout=60)


async def refusal_of_stream(call: Any) -> Refusal:
    """Read a stream that wrote nothing: for a refusal made before any request is read (see
    ``test_streaming.refusal_before_any_request`` for why nothing is written first)."""
    try:
        got = await call.read()
    except grpc.aio.AioRpcError as error:
        return refusal_of(error)
    raise AssertionError(f"the stream was answered: {got}")


def open_streams() -> float | None:
    """The gateway's open streams, as its metrics show them (one gateway in this process)."""
    return REGISTRY.get_sample_value("labelgate_active_streams")


async def wait_for_open_streams(count: int) -> None:
    """A stream's end reaches the gateway's handler a few turns of the loop after the caller's."""
    for _ in range(1000):
        if open_streams() == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{open_streams()} streams open, expected {count}")


def directory_route(tmp_path: Path) -> dict[str, str]:
    """The demo directory routed with its descriptors: ListCustomers streams records."""
    return {
        "method_prefix": DIRECTORY,
        "descriptor_set": str(descriptor_set(tmp_path)),
        "split_values": "per_message",
    }


async def test_streams_past_the_bound_are_refused_before_anything_opens_upstream(tmp_path: Path) -> None:
    stalled = asyncio.Event()
    route = directory_route(tmp_path)
    async with (
        upstream_serving(stalled) as upstream,
        gateway_in_process(upstream, routes=[route], limits={"max_open_streams": 3}) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        assert open_streams() == 0
        held = [open_stream(channel) for _ in range(2)]
        for call in held:  # answered: open at the gateway, and held open by the caller
            await call.write(chat_request())
            assert [o.name for o in (await call.read()).infer_response.outputs] == ["text"]
        listing = demo_pb2_grpc.CustomerDirectoryStub(channel).ListCustomers(
            demo_pb2.ListCustomersRequest(customer_ids=[1]), metadata=token("ann", "analysts"), timeout=60
        )
        assert (await listing.read()).customer_id == 1  # a routed stream counts too
        await stalled.wait()
        assert open_streams() == 3

        refusal = await refusal_of_stream(open_stream(channel))
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
        routed = demo_pb2_grpc.CustomerDirectoryStub(channel).ListCustomers(
            demo_pb2.ListCustomersRequest(customer_ids=[1]), metadata=token("ann", "analysts"), timeout=60
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await routed.read()
        assert refusal_of(caught.value).reason == "TOO_MANY_STREAMS"

        held[0].cancel()
        await wait_for_open_streams(2)
        again = open_stream(channel)
        await again.write(chat_request())
        assert [o.name for o in (await again.read()).infer_response.outputs] == ["text"]
        for call in [*held, listing, again]:
            call.cancel()
        await wait_for_open_streams(0)


async def test_one_caller_cannot_take_every_stream(tmp_path: Path) -> None:
    stalled = asyncio.Event()
    route = directory_route(tmp_path)
    limits = {"max_open_streams": 10, "max_open_streams_per_caller": 2}

    def listing(channel: grpc.aio.Channel, who: str) -> Any:
        return demo_pb2_grpc.CustomerDirectoryStub(channel).ListCustomers(
            demo_pb2.ListCustomersRequest(customer_ids=[1]), metadata=token(who, "analysts"), timeout=60
        )

    async with (
        upstream_serving(stalled) as upstream,
        gateway_in_process(upstream, routes=[route], limits=limits) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        first = open_stream(channel)
        await first.write(chat_request())
        assert [o.name for o in (await first.read()).infer_response.outputs] == ["text"]
        routed = listing(channel, "ann")
        assert (await routed.read()).customer_id == 1
        await stalled.wait()

        refusal = await refusal_of_stream(open_stream(channel))
        assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal.reason == "CALLER_STREAMS_EXHAUSTED"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await listing(channel, "ann").read()
        assert refusal_of(caught.value).reason == "CALLER_STREAMS_EXHAUSTED"
        # Another caller has places of their own.
        theirs = listing(channel, "bob")
        assert (await theirs.read()).customer_id == 1

        first.cancel()
        await wait_for_open_streams(2)
        again = open_stream(channel)
        await again.write(chat_request())
        assert [o.name for o in (await again.read()).infer_response.outputs] == ["text"]
        for call in [routed, theirs, again]:
            call.cancel()
        await wait_for_open_streams(0)


async def test_a_stream_that_sends_nothing_ends_with_the_idle_reason(tmp_path: Path) -> None:
    async with (
        upstream_serving(asyncio.Event()) as upstream,
        gateway_in_process(upstream, limits={"stream_idle_seconds": 0.2}) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        refusal = await asyncio.wait_for(refusal_of_stream(open_stream(channel)), 30)
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")
        await wait_for_open_streams(0)
