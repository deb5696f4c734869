"""The upstream edge: what of the caller's metadata travels, and what an upstream error says
(and a failure grpc raises on the gateway's side)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings, UpstreamSettings
from labelgate.errors import ResourceExhausted
from labelgate.gateway.server import Gateway
from labelgate.gateway.upstream import Upstream, UpstreamStatus, upstream_error
from tests.gateway.harness import CATALOG
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"

CALLER = (
    ("authorization", "Bearer caller-token"),
    ("x-forwarded-user", "mallory"),
    ("x-remote-user", "mallory"),
    ("x-user-id", "42"),
    ("x-goog-api-key", "AIza-secret"),
    ("x-auth-token", "t0k3n"),
    ("authorization-bin", b"\x00secret"),
    ("x-labelgate-session", "s-1"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("X-Request-Id", "req-7"),
)


async def test_only_allow_listed_caller_metadata_travels_with_the_gateways_credential() -> None:
    upstream = Upstream(UpstreamSettings(token="gateway-own"), 1 << 20)
    try:
        sent = dict(upstream.metadata(CALLER))
    finally:
        await upstream.close()
    assert sent == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-request-id": "req-7",
        "authorization": "Bearer gateway-own",
    }


async def test_an_allow_list_cannot_let_credentials_through() -> None:
    settings = UpstreamSettings(forward_metadata=["authorization", "x-labelgate-session", "x-user-id"])
    upstream = Upstream(settings, 1 << 20)
    try:
        sent = dict(upstream.metadata(CALLER))
    finally:
        await upstream.close()
    assert sent == {"x-user-id": "42"}


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
def test_an_upstream_error_keeps_its_code_and_loses_its_text(code: grpc.StatusCode) -> None:
    error = upstream_error(FakeRpcError(code, "row for ssn 123-45-6789 not found"))
    assert isinstance(error, UpstreamStatus)
    assert error.code == code and error.reason == f"UPSTREAM_{code.name}"
    assert "123-45-6789" not in str(error) and "row for" not in error.message


def test_a_size_error_worded_by_an_upstream_says_only_the_gateways_words() -> None:
    text = "CLIENT: Received message larger than max (1 vs. 2) 4111 1111 1111 1111"
    error = upstream_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, text), 1024)
    assert "4111" not in error.message and "1024" in error.message


@contextlib.asynccontextmanager
async def echo_upstream(
    abort: tuple[grpc.StatusCode, str] | None = None,
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A real gRPC server on loopback answering every method with what it was sent (or
    aborting with ``abort``), in every call shape; what reached it is kept."""
    received: list[bytes] = []

    async def answer(context: grpc.aio.ServicerContext) -> bytes:
        if abort is not None:
            await context.abort(*abort)
        return b"".join(received)

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        received.append(request)
        return await answer(context)

    async def client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        async for request in requests:
            received.append(request)
        return await answer(context)

    async def both_streams(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            received.append(request)
            yield request

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "BothStreams": grpc.stream_stream_rpc_method_handler(both_streams),
    }
    async with serving_grpc("test.Echo", handlers) as (address, _):
        yield address, received


async def _messages(*messages: bytes) -> AsyncIterator[bytes]:
    for message in messages:
        yield message


async def test_a_request_grpc_would_not_send_is_the_gateways_refusal_not_the_upstreams() -> None:
    """Decided from the gateway's own facts: the request's serialized size against the limit,
    before anything is sent (unary, client stream, streamed writes), never from a status text."""
    limit, small, large = 100, b"x" * 10, b"y" * 101
    async with echo_upstream() as (address, received):
        upstream = Upstream(UpstreamSettings(address=address), limit)
        try:
            refusals = []
            unary = upstream.unary_unary("/test.Echo/Unary", None, None)
            assert await unary(small, timeout=10) == small, "the control: within the limit it is sent"
            with pytest.raises(ResourceExhausted) as caught:
                await unary(large, timeout=10)
            refusals.append(caught.value)
            client_stream = upstream.stream_unary("/test.Echo/ClientStream", None, None)
            with pytest.raises(ResourceExhausted) as caught:
                await client_stream(_messages(small, large), timeout=10)
            refusals.append(caught.value)
            both = upstream.stream_stream("/test.Echo/BothStreams", None, None)
            with pytest.raises(ResourceExhausted) as caught:
                async for _ in both(_messages(small, large), timeout=10):
                    pass
            refusals.append(caught.value)
            written = both(timeout=10)
            with pytest.raises(ResourceExhausted) as caught:
                await written.write(large)
            written.cancel()
            refusals.append(caught.value)
        finally:
            await upstream.close()
    for error in refusals:
        assert (error.reason, error.http_status) == ("REQUEST_TOO_LARGE", 413)
        assert f"({limit} bytes)" in error.message
    assert large not in received, "nothing over the limit reached the upstream"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "CLIENT: Sent message larger than max (1 vs. 0)"),
        (grpc.StatusCode.INTERNAL, "failed to deserialize"),
        (grpc.StatusCode.INTERNAL, "Exception deserializing request!"),
    ],
)
async def test_an_upstream_cannot_word_its_failure_into_another_reason(
    code: grpc.StatusCode, text: str
) -> None:
    """An upstream aborting with grpc's own words for a request too large to send made the
    caller's record say REQUEST_TOO_LARGE (and "deserialize", UPSTREAM_MALFORMED): the
    request was sent, and the failure is the upstream's, ``UPSTREAM_<CODE>``."""
    assert upstream_error(FakeRpcError(code, text), 100).reason == f"UPSTREAM_{code.name}"
    async with echo_upstream(abort=(code, text)) as (address, received):
        upstream = Upstream(UpstreamSettings(address=address), 100)
        try:
            with pytest.raises(UpstreamStatus) as caught:
                await upstream.unary_unary("/test.Echo/Unary", None, None)(b"x", timeout=10)
        finally:
            await upstream.close()
    assert (caught.value.code, caught.value.reason) == (code, f"UPSTREAM_{code.name}")
    assert text not in caught.value.message and received == [b"x"]


async def test_a_caller_value_an_upstream_cannot_take_is_left_out() -> None:
    """A REST caller's header arrives as latin-1 text: ``caf\\xe9`` would make grpc refuse the
    whole call (ExecuteBatchError) after policy allowed it. Such values are dropped, for every
    kind of upstream, and the rest of the call goes on."""
    settings = UpstreamSettings(forward_metadata=["x-request-id", "traceparent", "x-tenant", "x-trace-bin"])
    upstream = Upstream(settings, 1 << 20)
    try:
        sent = upstream.metadata(
            (
                ("x-request-id", "caf\xe9"),
                ("traceparent", "00-a\x7fb"),
                ("x-tenant", "ok"),
                ("x-trace-bin", "text under a binary name"),
            )
        )
        assert dict(sent) == {"x-tenant": "ok"}
        assert dict(upstream.metadata((("x-trace-bin", b"\x00\xff"), ("x-request-id", "r-1")))) == {
            "x-trace-bin": b"\x00\xff",
            "x-request-id": "r-1",
        }
    finally:
        await upstream.close()


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_tracing_off_a_callers_tracestate_never_travels_and_its_traceparent_only_as_w3c(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Free text a caller chose reached the upstream (and its logs) unvetted: a ``tracestate``
    always (it was in the default allow-list), and anything under ``traceparent``."""
    # Built past the config check (which refuses to name tracestate): the edge drops it anyway.
    settings = UpstreamSettings.model_construct(
        forward_metadata=["traceparent", "tracestate", "x-request-id"]
    )
    upstream = Upstream(settings, 1 << 20)
    planted = "ssn:078-05-1120"
    try:
        good = upstream.metadata((("traceparent", TRACEPARENT), ("tracestate", f"acme={planted}")))
        assert [(k, v) for k, v in good if k in ("traceparent", "tracestate")] == [
            ("traceparent", TRACEPARENT)
        ]
        bad = [
            f"00-{'0' * 32}-b7ad6b7169203331-01",  # the all-zero trace id is invalid
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
            f"{TRACEPARENT}-{planted}",  # version 00 has nothing after its flags
            f"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-{planted}",
            f"ff{TRACEPARENT[2:]}",
            planted,
        ]
        for value in bad:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="labelgate.tracing"):
                sent = upstream.metadata((("traceparent", value), ("x-request-id", "r-1")))
            assert [k for k, _ in sent if k != "x-labelgate-subject-assertion"] == ["x-request-id"], value
            (line,) = [r for r in caplog.records if r.getMessage() == "caller header not forwarded"]
            fields = {k: getattr(line, k) for k in ("why", "upstream", "header")}
            assert fields == {"why": "not a W3C traceparent", "upstream": "default", "header": "traceparent"}
            assert planted not in caplog.text
        two = upstream.metadata((("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)))
        assert "traceparent" not in dict(two), "two traceparents are no W3C trace context"
    finally:
        await upstream.close()


async def test_a_failure_grpc_raises_on_the_gateways_side_is_a_status_not_a_500() -> None:
    """grpc raises ExecuteBatchError for metadata it will not send and UsageError on a closed
    channel, neither an AioRpcError: each is the caller's UNAVAILABLE, in fixed text."""
    upstream = Upstream(UpstreamSettings(address=f"127.0.0.1:{free_port()}"), 1 << 20)
    ready = upstream.unary_unary("/inference.GRPCInferenceService/ServerReady", None, None)
    try:
        with pytest.raises(UpstreamStatus) as caught:
            await ready(b"", metadata=(("x-request-id", "caf\xe9"),), timeout=2)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.message == "the upstream failed with UNAVAILABLE"
        assert "caf" not in str(caught.value)
    finally:
        await upstream.close()
    with pytest.raises(UpstreamStatus) as caught:
        await ready(b"", timeout=2)  # the channel is closed now
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(UpstreamStatus) as caught:
        upstream.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer", None, None)(timeout=2)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_rest_caller_header_grpc_cannot_send_does_not_fail_the_call(backend: str) -> None:
    """The reviewer's repro: a REST caller's ``x-request-id: caf\\xe9`` (one latin-1 byte) in
    front of a gRPC upstream was a 500 INTERNAL_ERROR after policy allowed the call."""
    listen = f"127.0.0.1:{free_port()}"
    gateway = Gateway(
        GatewaySettings(
            listen=f"127.0.0.1:{free_port()}",
            rest_listen=listen,
            admin_listen=None,
            upstream={"address": backend},
            policy={"dir": str(REPO / "rego")},
            classification={"catalog_file": str(CATALOG)},
            masking={"hash_key": "upstream-test-hash-key-0123456789"},
            auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        )
    )
    await gateway.start()
    try:
        token = mint_dev_token("ana", ["analysts"], 300, DEV_KEYS)
        body = json.dumps(
            {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1], "data": [1]}]}
        ).encode()
        for path, content in (("/v2/health/ready", b""), ("/v2/models/customer-profile/infer", body)):
            head = (
                f"{'POST' if content else 'GET'} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(content)}\r\n"
            ).encode()
            reply = await _raw_http(listen, head + b"X-Request-Id: caf\xe9\r\n\r\n" + content)
            assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK", reply[:300]
    finally:
        await gateway.stop(0)


async def _raw_http(address: str, request: bytes) -> bytes:
    """Send bytes as they are (httpx would not send a latin-1 header byte) and read to the end."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("code", "asked", "said"),
    [
        (
            grpc.StatusCode.NOT_FOUND,
            pb.ModelInferRequest(model_name="nope"),
            'the upstream has no model "nope"',
        ),
        (
            grpc.StatusCode.NOT_FOUND,
            pb.ModelMetadataRequest(name="m", version="3"),
            'the upstream has no model "m" version "3"',
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ModelInferRequest(model_name='a"b'),
            'the upstream refused this request\'s inputs or outputs for model "a\\"b"'
            " (their names, datatypes or shapes)",
        ),
        # Not an inference: nothing to say of inputs or outputs.
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ModelReadyRequest(name="m"),
            "the upstream failed with INVALID_ARGUMENT",
        ),
        # Names not repeated: too long, unprintable, none; bytes (an opaque route's).
        (
            grpc.StatusCode.NOT_FOUND,
            pb.ModelInferRequest(model_name="x" * 129),
            "the upstream failed with NOT_FOUND",
        ),
        (
            grpc.StatusCode.NOT_FOUND,
            pb.ModelInferRequest(model_name="a\nb"),
            "the upstream failed with NOT_FOUND",
        ),
        (
            grpc.StatusCode.NOT_FOUND,
            pb.ModelInferRequest(model_name="m", model_version="\x1b[2J"),
            "the upstream failed with NOT_FOUND",
        ),
        (grpc.StatusCode.NOT_FOUND, pb.ModelMetadataRequest(), "the upstream failed with NOT_FOUND"),
        (grpc.StatusCode.NOT_FOUND, b"\x0a\x04nope", "the upstream failed with NOT_FOUND"),
        (
            grpc.StatusCode.UNAVAILABLE,
            pb.ModelInferRequest(model_name="m"),
            "the upstream failed with UNAVAILABLE",
        ),
    ],
)
async def test_an_upstream_error_names_only_what_the_caller_asked_for(
    code: grpc.StatusCode, asked: Message | bytes, said: str
) -> None:
    """The reviewer's repro: ``--model nope`` was "the upstream failed with NOT_FOUND". The
    model asked for is named (the caller's own string, when short and printable); the
    upstream's text still never is, and the reason is still ``UPSTREAM_<CODE>``."""
    text = "no model nope; ssn 123-45-6789"
    async with echo_upstream(abort=(code, text)) as (address, _):
        upstream = Upstream(UpstreamSettings(address=address), 1 << 20)
        serialize = None if isinstance(asked, bytes) else type(asked).SerializeToString
        try:
            with pytest.raises(UpstreamStatus) as caught:
                await upstream.unary_unary("/test.Echo/Unary", serialize, None)(asked, timeout=10)
        finally:
            await upstream.close()
    assert (caught.value.code, caught.value.reason) == (code, f"UPSTREAM_{code.name}")
    assert caught.value.message == said
    assert "123-45-6789" not in caught.value.message
