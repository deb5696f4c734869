"""A routed token stream (``split_values: hold``) through real gRPC servers on loopback: a
value split across two messages' map keys (``Token(tags={"my ssn is 123-45-": "a"})`` then
``Token(tags={"6789 thanks": "b"})``), or across values under a key that changes, reached the
caller in two pieces: the hold followed a map's values by key only and its keys not at all,
and each message passed its own classification. It now ends the stream before either piece
leaves; an ordinary stream with a map in every message still flows."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from labelgate.gateway.status import error_info
from tests.classify import split_values_proto
from tests.gateway.test_routed_leaks import _held_stream

# Built at run time: fields mypy cannot see.
Token: Any = split_values_proto.Token

SPLIT = {
    "in the keys": [{"my ssn is 123-45-": "a"}, {"6789 thanks": "b"}],
    "under a key that changes": [{"chunk_0": "my ssn is 123-45-"}, {"chunk_1": "6789 thanks"}],
    "in a key beside others": [{"my ssn is 123-45-": "a", "zz": "b"}, {"00": "c", "6789 thanks": "d"}],
}


@pytest.mark.parametrize("name", SPLIT)
def test_a_value_split_across_map_keys_is_refused_before_any_piece_leaves(name: str) -> None:
    replies = [Token(tags=tags).SerializeToString() for tags in SPLIT[name]]
    got, failed, records = asyncio.run(_held_stream(replies))
    assert failed is not None, [str(reply) for reply in got]
    assert got == []
    info = error_info(failed)
    assert (failed.code(), info.reason if info else None) == (
        grpc.StatusCode.UNAVAILABLE,
        "STREAM_VALUE_SPLIT",
    )
    assert "123-45" not in (failed.details() or "")  # the map is named by its path, not by a key
    assert (records[-1].refusal, records[-1].status_code) == ("STREAM_VALUE_SPLIT", "UNAVAILABLE")


def test_a_stream_with_a_map_in_every_message_flows_whole() -> None:
    pieces = ["The weather ", "is fine today, ", "and tomorrow ", "it will rain ", "in the afternoon."]
    replies = [
        Token(text=piece, tags={"model": "small model", "role": "assistant"}).SerializeToString()
        for piece in pieces
    ]
    got, failed, _ = asyncio.run(_held_stream(replies))
    assert failed is None
    assert [reply.SerializeToString() for reply in got] == replies
