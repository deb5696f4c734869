"""A routed token stream (``split_values: hold``) through real gRPC servers on loopback: a
value split across two messages nested 17 to 32 ``google.protobuf.Any``s deep reached the
caller whole (review, rev-routed ``hold_any_depth``): the hold counted each Any twice and
stopped reading quietly past 32, while each message passed its own classification. It now
ends the stream before either piece leaves, and a reply deeper than the classifier accepts
is refused as it refuses it (``MESSAGE_TOO_DEEP``)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from labelgate.classify.messages import MAX_MESSAGE_DEPTH
from labelgate.gateway.status import error_info
from tests.classify import split_values_proto
from tests.gateway.test_routed_leaks import _held_stream

# Built at run time: fields mypy cannot see.
Token: Any = split_values_proto.Token


def nested(text: str, anys: int) -> bytes:
    message = Token(text=text)
    for _ in range(anys):
        holder = Token()
        holder.extra.Pack(message)
        message = holder
    serialized: bytes = message.SerializeToString()
    return serialized


@pytest.mark.parametrize(
    ("anys", "reason"),
    [
        (16, "STREAM_VALUE_SPLIT"),
        (17, "STREAM_VALUE_SPLIT"),
        (MAX_MESSAGE_DEPTH, "STREAM_VALUE_SPLIT"),
        (MAX_MESSAGE_DEPTH + 1, "MESSAGE_TOO_DEEP"),
    ],
)
def test_a_value_split_deep_in_anys_is_refused_before_any_piece_leaves(anys: int, reason: str) -> None:
    replies = [nested("my ssn is 123-45-", anys), nested("6789 thanks", anys)]
    got, failed, records = asyncio.run(_held_stream(replies))
    assert failed is not None, [str(reply) for reply in got]
    assert got == []
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (grpc.StatusCode.UNAVAILABLE, reason)
    assert (records[-1].refusal, records[-1].status_code) == (reason, "UNAVAILABLE")
