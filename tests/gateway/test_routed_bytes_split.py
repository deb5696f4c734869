"""A token stream (``split_values: hold``) with a value split across its messages' bytes fields,
through real gRPC servers on loopback (``test_routed_leaks._held_stream``): the hold read only
string fields across messages, so ``ssn 123-45-`` / ``6789`` in a bytes field (or an Any's)
reached the caller in pieces, each masked on its own. Refused with the gateway's reason before
any piece leaves, and recorded; bytes whose pieces make no value still flow."""

from __future__ import annotations

import asyncio

import pytest

from labelgate.gateway.status import error_info
from tests.classify.split_values_proto import Note, Token
from tests.gateway.test_routed_leaks import _held_stream


def _in_any(data: bytes) -> Token:
    token = Token()
    token.extra.Pack(Note(data=data))
    return token


SPLIT = {
    "a bytes field": [Token(data=b"ssn 123-45-"), Token(data=b"6789 thanks")],
    "repeated bytes": [Token(chunks=[b"card 4111 1111"]), Token(chunks=[b" 1111 1111 end"])],
    "a map's bytes value": [Token(blobs={"k": b"ssn 123-4"}), Token(blobs={"k": b"5-6789 end"})],
    "bytes inside an Any": [_in_any(b"ssn 123-45-"), _in_any(b"6789 thanks")],
}


@pytest.mark.parametrize("name", SPLIT)
def test_a_value_split_across_bytes_fields_never_leaves_in_pieces(name: str) -> None:
    got, failed, records = asyncio.run(_held_stream([m.SerializeToString() for m in SPLIT[name]]))
    assert failed is not None, [str(reply) for reply in got]
    info = error_info(failed)
    assert info is not None and info.reason == "STREAM_VALUE_SPLIT"
    assert not any(reply.data or reply.chunks or reply.blobs or reply.HasField("extra") for reply in got)
    assert records[-1].refusal == "STREAM_VALUE_SPLIT"


def test_bytes_whose_pieces_make_no_value_reach_the_caller_whole_and_in_order() -> None:
    pieces = [b"The weather ", b"is fine, ", b"and tomorrow ", b"it will rain."]
    got, failed, _ = asyncio.run(_held_stream([Token(data=piece).SerializeToString() for piece in pieces]))
    assert failed is None
    assert [reply.data for reply in got] == pieces
