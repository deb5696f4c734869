"""Routed replies with proto2 required fields, through real gRPC servers on loopback.

The gateway's typed handler (``routes.typed_handler``) with the in-process test pipeline in
front of an upstream answering raw bytes: grpc's deserializer does not check required
fields, and its serializer refuses a message missing one outside the handler (``UNKNOWN``
with grpc's own text, the record saying the reply was delivered). What the caller gets
and what the record says must agree, with the gateway's reason when the call is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from labelgate.config import UpstreamSettings
from labelgate.enforce.messages import MASKED_REQUIRED_FIELD, MESSAGE_REQUIRED_MISSING
from labelgate.gateway.routes import typed_handler
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import Upstream
from tests.classify.numbers_proto import RECORDS, Part, Plain, Record
from tests.gateway.test_pipeline import make_pipeline

METHOD = "/labelgaterequired.Records/Get"
WHOLE = Record(
    name="alice", acct=4111111111111111, rank=3, part=Part(code="c"), plain=Plain(note="n"), count=1
)


class _Only(grpc.GenericRpcHandler):
    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def service(self, details: Any) -> Any:
        return self.handler if details.method == METHOD else None


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
