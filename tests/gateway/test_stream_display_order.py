"""A right-to-left letter or a bidi control at a stream's message boundary, through the pipeline
(``classify/display_context.py``; the residual of ``docs/THREAT-MODEL.md``: ``ssn \\u202eא``
then ``9876-54-321`` as ``ModelStreamInfer`` replies or ``Int64Value`` messages went out). A
client joining the pieces shows ``ssn 123-45-6789``: the stream ends (``STREAM_VALUE_SPLIT``)
before the piece that completes it leaves, and what left shows no value in any order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from labelgate.calls import Target
from labelgate.errors import LabelgateError
from labelgate.gateway.routes import held
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from tests.classify.test_carryover_display_order import shows
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

PIECES = ["ssn \u202e\u05d0", "9876-54-321", " ok"]
ROUTED = Target(service="rev.Chat")


def code_point_replies(pieces: list[str], datatype: str, sent_id: str) -> list[Any]:
    replies = []
    for position, piece in enumerate(pieces):
        points = [ord(char) for char in piece]
        message = reply("chat", [Tensor("text", datatype, [1, len(points)], points)], sent_id)
        message.parameters["triton_final_response"].bool_param = position == len(pieces) - 1
        replies.append(stream_reply(message))
    return replies


@pytest.mark.parametrize("datatype", ["INT32", "INT64"])
async def test_model_stream_infer_code_points_reordered_across_replies_do_not_leave(datatype: str) -> None:
    pipeline, _, _, recorder = make_pipeline()
    stream = FakeStream(lambda sent: code_point_replies(PIECES, datatype, sent.id))
    got, ended = "", None
    try:
        async for released in pipeline.stream_infer(make_call(STREAM), requests_of(request("chat")), stream):
            for output in decode_outputs(released.infer_response):
                got += "".join(chr(code) for code in output.values if 0 < code < 0x110000)
            if released.error_message:
                ended = released.error_message
    except LabelgateError as error:
        ended = error.reason
    assert ended is not None, got
    assert not shows(got, "us_ssn"), got
    assert "STREAM_VALUE_SPLIT" in [record.refusal for record in recorder.records]


@pytest.mark.parametrize("form", ["Int64Value", "StringValue"])
async def test_a_routed_hold_stream_reordered_across_messages_does_not_leave(form: str) -> None:
    pipeline, _, _, recorder = make_pipeline()
    call = make_call("/rev.Chat/Stream")
    subject = await pipeline.admit_stream(call, ROUTED, contextlib.ExitStack())

    async def upstream() -> AsyncIterator[Any]:
        if form == "Int64Value":
            for char in "".join(PIECES):
                yield wrappers_pb2.Int64Value(value=ord(char))
        else:
            # Released as ASCII before the letter came, then reordered by it.
            for piece in ["6789 45 123 ", "hello world " * 30, "\u05d0"]:
                yield wrappers_pb2.StringValue(value=piece)

    got, ended = "", None
    replies = pipeline.upstream_replies(call, subject, ROUTED, held(upstream(), pipeline.split_values()))
    try:
        async for message in replies:
            released = await pipeline.release_reply(call, subject, ROUTED, message)
            got += chr(released.value) if form == "Int64Value" else released.value
    except LabelgateError as error:
        ended = error.reason
    assert ended == "STREAM_VALUE_SPLIT", got
    assert not shows(got, "us_ssn"), got
    assert recorder.records[-1].refusal == "STREAM_VALUE_SPLIT"
