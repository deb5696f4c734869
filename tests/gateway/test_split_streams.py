"""A routed token stream through the pipeline: a value split across its messages never
leaves in pieces (``routes.held``, ``classify/split_values.py``), and its end is recorded once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from google.protobuf import wrappers_pb2

from labelgate.calls import Target
from labelgate.errors import LabelgateError, UpstreamError
from labelgate.gateway.routes import held
from tests.gateway.test_pipeline import make_call, make_pipeline

TARGET = Target(service="rev.Chat")
SPLIT = ["card 4111 11", "11 1111 1111, ssn 123-4", "5-6789, iban DE89 3704 00", "44 0532 0130 00 thanks"]


async def run(pieces: list[str], fail_with: LabelgateError | None = None) -> tuple[list[str], list, object]:
    """(what the caller got, the records after admission, the error that ended the stream)."""
    pipeline, _, _, recorder = make_pipeline()
    call = make_call("/rev.Chat/Stream")
    subject = await pipeline.admit_stream(call, TARGET, contextlib.ExitStack())
    admitted = len(recorder.records)

    async def upstream() -> AsyncIterator[wrappers_pb2.StringValue]:
        for piece in pieces:
            yield wrappers_pb2.StringValue(value=piece)
        if fail_with is not None:
            raise fail_with

    got, ended = [], None
    replies = pipeline.upstream_replies(call, subject, TARGET, held(upstream(), pipeline.split_values()))
    try:
        async for reply in replies:
            got.append((await pipeline.release_reply(call, subject, TARGET, reply)).value)
    except LabelgateError as error:
        ended = error
    return got, recorder.records[admitted:], ended


async def test_a_value_split_across_messages_ends_the_stream_and_no_piece_leaves() -> None:
    got, records, ended = await run(SPLIT)
    assert got == []
    assert isinstance(ended, LabelgateError) and ended.reason == "STREAM_VALUE_SPLIT"
    assert [record.refusal for record in records] == ["STREAM_VALUE_SPLIT"]


@pytest.mark.parametrize(
    "pieces",
    [
        ["card ４１１１ １１", "１１ １１１１ １１１１ thanks"],  # full-width digits: held to the end
        ["card 4111\u200b11", "11\u200b1111\u200b1111 thanks"],  # zero-width spaces
        ["ssn &#49;&#50;&#51;-4", "5-6789 thanks"],  # character references
    ],
)
async def test_a_value_split_in_a_hidden_form_ends_the_stream_too(pieces: list[str]) -> None:
    got, _, ended = await run(pieces)
    assert got == [] and isinstance(ended, LabelgateError) and ended.reason == "STREAM_VALUE_SPLIT"


async def test_values_within_one_message_are_masked_and_every_message_leaves_in_order() -> None:
    whole = ["card 4111 1111 1111 1111 ", "and a long enough sentence with nothing in it at all. " * 2, "bye"]
    got, _, ended = await run(whole)
    assert ended is None and len(got) == 3 and got[1:] == whole[1:]
    assert "4111 1111 1111 1111" not in got[0]


@pytest.mark.parametrize("pieces", [["plain text ", "and more"], ["card 4111 11"]])
async def test_what_is_held_when_the_upstream_fails_is_released_first_and_the_end_recorded_once(
    pieces: list[str],
) -> None:
    failure = UpstreamError("UPSTREAM_UNAVAILABLE", "the upstream failed with UNAVAILABLE")
    got, records, ended = await run(pieces, failure)
    assert ended is failure and got == pieces  # no later piece can come: each stands alone
    assert [record.refusal for record in records][-1:] == ["UPSTREAM_UNAVAILABLE"]
    assert [record.refusal for record in records].count("UPSTREAM_UNAVAILABLE") == 1


async def test_a_split_value_held_when_the_upstream_fails_is_refused_once() -> None:
    failure = UpstreamError("UPSTREAM_UNAVAILABLE", "the upstream failed with UNAVAILABLE")
    got, records, ended = await run(["card 4111 11", "11 1111 1111 1111"], failure)
    assert got == [] and isinstance(ended, LabelgateError) and ended.reason == "STREAM_VALUE_SPLIT"
    assert [record.refusal for record in records] == ["STREAM_VALUE_SPLIT"]


@pytest.mark.parametrize(
    "pieces",
    [
        ["ssn 123-45-", "6789 and 321-54-9876", "1 bye"],  # the decoy's SSN is none once joined
        ["card 4111 1111 ", "1111 1111 and 5555 5555 5555 4444", "7 bye"],
        ["ssn １２３-４５-", "６７８９ and ３２１-５４-９８７６", "１ bye"],  # folded
        ["ssn &#49;&#50;&#51;-4", "5-6789 and &#51;&#50;&#49;-54-9876", "1 bye"],  # references
    ],
)
async def test_a_decoy_value_does_not_let_a_split_value_out(pieces: list[str]) -> None:
    """A whole value in one piece that the next piece's first character joins into no value
    stood in for a value split across two others: counted, the pieces alone held as many."""
    got, records, ended = await run(pieces)
    assert got == [] and isinstance(ended, LabelgateError) and ended.reason == "STREAM_VALUE_SPLIT"
    assert [record.refusal for record in records] == ["STREAM_VALUE_SPLIT"]


@pytest.mark.parametrize("value", ["212-55-4462", "123-45-6789"])
async def test_a_value_reaching_into_a_message_held_for_its_long_tail_ends_the_stream(value: str) -> None:
    """The second message's tail, longer than the carry window, moves the cut past the value:
    the first message was released while the second was held, neither read with the other."""
    got, records, ended = await run(["x " + value[:7], value[7:] + " " + "z " * 300])
    assert got == [] and isinstance(ended, LabelgateError) and ended.reason == "STREAM_VALUE_SPLIT"
    assert [record.refusal for record in records] == ["STREAM_VALUE_SPLIT"]
