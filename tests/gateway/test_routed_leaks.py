"""Routed replies the upstream shapes to slip past the gateway, through real gRPC servers on
loopback: the gateway's typed handler (``routes.typed_handler``) with the in-process test
pipeline in front of an upstream answering raw bytes.

- proto2 required fields: grpc's deserializer does not check them, and its serializer
  refuses a message missing one outside the handler (``UNKNOWN`` with grpc's own text, the
  record saying the reply was delivered). What the caller gets and what the record says
  must agree, with the gateway's reason when the call is refused.
- a token stream (``split_values: hold``) with a value split across its messages inside
  Anys, a PEM key's lines in a bytes field, or a proto2 string that is not UTF-8 (review s15
  rev-routed-fuzz): refused with the gateway's reason before any piece leaves, and recorded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate.classify.split_values import SplitValues
from labelgate.config import UpstreamSettings
from labelgate.enforce.messages import MASKED_REQUIRED_FIELD, MESSAGE_REQUIRED_MISSING
from labelgate.gateway.routes import typed_handler
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import Upstream
from tests.classify.numbers_proto import RECORDS, Part, Plain, Record
from tests.classify.secret_values import pem_value
from tests.classify.split_values_proto import TOKENS, Note, Token
from tests.gateway.test_pipeline import make_pipeline

METHOD = "/labelgaterequired.Records/Get"
WHOLE = Record(
    name="alice", acct=4111111111111111, rank=3, part=Part(code="c"), plain=Plain(note="n"), count=1
)


class _Only(grpc.GenericRpcHandler):
    def __init__(self, handler: Any, method: str = METHOD) -> None:
        self.handler, self.method = handler, method

    def service(self, details: Any) -> Any:
        return self.handler if details.method == self.method else None


async def _call(upstream_bytes: bytes, mask_labels: frozenset[str]) -> tuple[Any, list]:
    """The caller's reply (or its error) and the records, for an upstream answering ``upstream_bytes``."""
    upstream_server = grpc.aio.server()

    async def answer(request: bytes, context: Any) -> bytes:
        return upstream_bytes

    upstream_server.add_generic_rpc_handlers([_Only(grpc.unary_unary_rpc_method_handler(answer))])
    upstream_port = upstream_server.add_insecure_port("127.0.0.1:0")
    await upstream_server.start()
    pipeline, _, _, recorder = make_pipeline(mask_labels)
    upstream = Upstream(UpstreamSettings(address=f"127.0.0.1:{upstream_port}"), 4 << 20)
    gateway = grpc.aio.server()
    method = RECORDS.methods_by_name["Get"]
    gateway.add_generic_rpc_handlers([_Only(typed_handler(pipeline, upstream, METHOD, method))])
    gateway_port = gateway.add_insecure_port("127.0.0.1:0")
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            get = channel.unary_unary(
                METHOD, request_serializer=Plain.SerializeToString, response_deserializer=Record.FromString
            )
            try:
                got: Any = await get(Plain(), timeout=10)
            except grpc.aio.AioRpcError as error:
                got = error
    finally:
        await gateway.stop(None)
        await upstream_server.stop(None)
        await upstream.close()
    return got, recorder.records


def test_a_masked_required_number_is_released_as_its_default() -> None:
    got, [record] = asyncio.run(_call(WHOLE.SerializeToString(), frozenset({"confidential"})))
    assert isinstance(got, Record), got
    assert (got.name, got.acct, got.rank, got.part.code) == ("alice", 0, 7, "c")
    assert (record.outcome, record.refusal, record.delivered) == ("mask", None, got)


@pytest.mark.parametrize(
    ("upstream_bytes", "mask_labels", "code", "reason"),
    [
        # The upstream leaves out the required name (and more): it parses, it cannot be encoded.
        pytest.param(
            b"\x10\x2a", frozenset(), grpc.StatusCode.UNAVAILABLE, MESSAGE_REQUIRED_MISSING, id="upstream"
        ),
        # A masked Part is an empty one, still missing its required code.
        pytest.param(
            WHOLE.SerializeToString(),
            frozenset({"restricted"}),
            grpc.StatusCode.PERMISSION_DENIED,
            MASKED_REQUIRED_FIELD,
            id="mask",
        ),
    ],
)
def test_a_reply_missing_a_required_field_is_refused_with_the_gateways_reason_and_recorded_so(
    upstream_bytes: bytes, mask_labels: frozenset[str], code: grpc.StatusCode, reason: str
) -> None:
    got, [record] = asyncio.run(_call(upstream_bytes, mask_labels))
    assert isinstance(got, grpc.aio.AioRpcError), got
    info = error_info(got)
    assert (got.code(), info.reason if info else None) == (code, reason)
    assert "EncodeError" not in (got.details() or "")
    assert (record.refusal, record.status_code, record.delivered) == (reason, code.name, None)


HOLD_METHOD = "/labelgateheld.Tokens/Stream"


async def _held_stream(
    replies: list[bytes],
    split_values: Callable[[], SplitValues] | None = None,
    service: Any = TOKENS,
    method_path: str = HOLD_METHOD,
    reply_type: Any = Token,
) -> tuple[list[Any], grpc.aio.AioRpcError | None, list]:
    """What a caller of a ``hold`` route gets (the messages, then the error if any) and the
    records, for an upstream streaming ``replies``; ``split_values`` stands in for the
    pipeline's own splitter. ``service``' ``Stream`` method at ``method_path``, replying
    ``reply_type``: another service's."""
    upstream_server = grpc.aio.server()

    async def answer(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for reply in replies:
            yield reply

    upstream_server.add_generic_rpc_handlers(
        [_Only(grpc.unary_stream_rpc_method_handler(answer), method_path)]
    )
    upstream_port = upstream_server.add_insecure_port("127.0.0.1:0")
    await upstream_server.start()
    pipeline, _, _, recorder = make_pipeline()
    if split_values is not None:
        pipeline.split_values = split_values
    upstream = Upstream(UpstreamSettings(address=f"127.0.0.1:{upstream_port}"), 4 << 20)
    gateway = grpc.aio.server()
    method = service.methods_by_name["Stream"]
    handler = typed_handler(pipeline, upstream, method_path, method, hold_split_values=True)
    gateway.add_generic_rpc_handlers([_Only(handler, method_path)])
    gateway_port = gateway.add_insecure_port("127.0.0.1:0")
    await gateway.start()
    got: list[Any] = []
    failed = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            stream = channel.unary_stream(
                method_path, request_serializer=bytes, response_deserializer=reply_type.FromString
            )
            try:
                async for reply in stream(b"", timeout=10):
                    got.append(reply)
            except grpc.aio.AioRpcError as error:
                failed = error
    finally:
        await gateway.stop(None)
        await upstream_server.stop(None)
        await upstream.close()
    return got, failed, recorder.records


def _packed(text: str) -> bytes:
    token = Token()
    token.extra.Pack(Note(text=text))
    return token.SerializeToString()


def _in_map(text: str) -> bytes:
    token = Token()
    token.anys["k"].Pack(Note(text=text))
    return token.SerializeToString()


_PEM = pem_value(random.Random(11), "RSA PRIVATE KEY", 3).split("\n")
HELD_LEAKS = {
    "value split inside Anys": [_packed("ssn 123-4"), _packed("5-6789 end")],
    "value split inside a map of Any": [_in_map("ssn 123-4"), _in_map("5-6789 end")],
    "key lines in a bytes field": [
        Token(text=_PEM[0] + "\n").SerializeToString(),
        Token(data=_PEM[1].encode()).SerializeToString(),
        Token(text=_PEM[-1]).SerializeToString(),
    ],
}


@pytest.mark.parametrize("name", HELD_LEAKS)
def test_a_hold_stream_refuses_what_its_messages_would_leak_in_pieces(name: str) -> None:
    got, failed, records = asyncio.run(_held_stream(HELD_LEAKS[name]))
    assert failed is not None, [str(reply) for reply in got]
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (
        grpc.StatusCode.UNAVAILABLE,
        "STREAM_VALUE_SPLIT",
    )
    assert not any(reply.data or reply.HasField("extra") or reply.anys for reply in got)
    assert (records[-1].refusal, records[-1].status_code) == ("STREAM_VALUE_SPLIT", "UNAVAILABLE")


def test_a_hold_streams_string_that_is_not_utf8_is_refused_with_a_reason_and_recorded() -> None:
    """It ended INTERNAL (an AttributeError in the hold), and no record said how it ended."""
    bad = b"\x0a\x0c\xff123-45-6789"  # Token.text, proto2: parsed as bytes
    got, failed, records = asyncio.run(_held_stream([Token(text="hi").SerializeToString(), bad]))
    assert failed is not None and got == []
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (
        grpc.StatusCode.UNAVAILABLE,
        "MESSAGE_STRING_INVALID",
    )
    assert (records[-1].refusal, records[-1].status_code) == ("MESSAGE_STRING_INVALID", "UNAVAILABLE")


class _Failing:
    """A splitter that fails as nothing in the gateway should: the exception's text quotes data."""

    def hold(self, message: Any) -> list[Any]:
        raise RuntimeError("the upstream's ssn 123-45-6789")

    def flush(self) -> list[Any]:
        return []


def test_an_unexpected_failure_ending_a_routed_stream_is_internal_and_recorded() -> None:
    got, failed, records = asyncio.run(_held_stream([Token(text="hi").SerializeToString()], _Failing))
    assert failed is not None and got == []
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR")
    assert failed.details() == "internal error in the gateway"
    last = records[-1]
    assert (last.refusal, last.status_code, last.outcome, last.delivered) == (
        "INTERNAL_ERROR",
        "INTERNAL",
        "deny",
        None,
    )


def _integer_tokens() -> tuple[Any, Any]:
    """A token of integers (``codes``, a character a value; ``n``, one a message) and a
    service streaming them, in the default pool (its own file and package)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/held_codes.proto", package="labelgateheldcodes", syntax="proto3"
    )
    codes = file.message_type.add(name="Codes")
    codes.field.add(name="codes", number=1, type=F.TYPE_INT32, label=F.LABEL_REPEATED)
    codes.field.add(name="n", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    file.service.add(name="CodeStream").method.add(
        name="Stream",
        input_type=".labelgateheldcodes.Codes",
        output_type=".labelgateheldcodes.Codes",
        server_streaming=True,
    )
    pool = descriptor_pool.Default()
    pool.Add(file)
    reply_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("labelgateheldcodes.Codes"))
    return pool.FindServiceByName("labelgateheldcodes.CodeStream"), reply_type


CODES_SERVICE, Codes = _integer_tokens()


@pytest.mark.parametrize(
    "replies",
    [
        [{"codes": [ord(c) for c in "ssn 123-4"]}, {"codes": [ord(c) for c in "5-6789 ok"]}],
        [{"n": ord(c)} for c in "ssn 123-45-6789 ok"],
    ],
    ids=["repeated", "scalar"],
)
def test_a_hold_stream_refuses_a_value_split_across_integer_fields_before_any_piece_leaves(
    replies: list[dict[str, Any]],
) -> None:
    """The review's: each message masked on its own, the SSN went out in clear."""
    got, failed, records = asyncio.run(
        _held_stream(
            [Codes(**reply).SerializeToString() for reply in replies],
            service=CODES_SERVICE,
            method_path="/labelgateheldcodes.CodeStream/Stream",
            reply_type=Codes,
        )
    )
    assert failed is not None, [str(reply) for reply in got]
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (
        grpc.StatusCode.UNAVAILABLE,
        "STREAM_VALUE_SPLIT",
    )
    assert "".join(chr(code) for reply in got for code in [*reply.codes, reply.n] if code) == ""
    assert (records[-1].refusal, records[-1].status_code) == ("STREAM_VALUE_SPLIT", "UNAVAILABLE")
