"""A routed token stream (``split_values: hold``) walks each reply before its classification
does: that walk is bounded by ``limits.max_message_values`` too, counted as the classifier
counts (each present field, repeated element and map entry, before it is looked at), and a
reply past it ends the stream (``MESSAGE_TOO_MANY_VALUES``). A metadata-like reply whose
shape held four million dims took seconds of the event loop in ``SplitValues.hold``, no
limit hit: ``hold_limit`` counts text bytes, ``max_paths`` string paths. These tests count
work (values, the walk's calls), never time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import message_texts, messages
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.messages import FIXED_STEP_VALUES, MESSAGE_TOO_MANY_VALUES
from labelgate.classify.split_values import SplitValues
from labelgate.errors import UpstreamError
from labelgate.gateway.routes import held
from tests.classify.split_values_proto import Note, Token
from tests.classify.test_message_values import metadata


def splitter() -> SplitValues:
    return SplitValues(DetectorSet(), lambda text: len(text))


def refused(message: Message, max_values: int | None) -> bool:
    try:
        splitter().hold(message, max_values)
    except UpstreamError as error:
        assert error.reason == MESSAGE_TOO_MANY_VALUES
        assert str(max_values) in error.message and "limits.max_message_values" in error.message
        return True
    return False


def test_a_reply_is_counted_as_the_classifier_counts_it() -> None:
    # metadata(10): 3 + 10 * 6 values, the classifier's count of it (test_message_values).
    assert not refused(metadata(10), 3 + 10 * 6)
    assert refused(metadata(10), 3 + 10 * 6 - 1)


def test_a_long_field_is_refused_before_any_of_its_items_is_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_at: list[str] = []
    real = message_texts._value

    def counting(descriptor, *args, **kwargs):
        looked_at.append(descriptor.name)
        return real(descriptor, *args, **kwargs)

    monkeypatch.setattr(message_texts, "_value", counting)
    shapes = pb.ModelMetadataResponse(name="m", platform="p")
    shapes.outputs.add(name="o", datatype="BYTES", shape=[1] * 100_000)
    assert refused(shapes, 1_000)
    # The root's values walked, the output reached: its 100,000 dims counted whole, none walked.
    assert looked_at == ["name", "platform", "outputs"]
    looked_at.clear()
    texts = pb.ModelMetadataResponse(name="m", platform="p", versions=["1"] * 100_000)
    assert refused(texts, 1_000)
    assert looked_at == []


def test_the_walk_stops_where_the_count_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[str] = []
    real = message_texts._walk

    def counting(message, prefix, *args, **kwargs):
        walked.append(prefix)
        return real(message, prefix, *args, **kwargs)

    monkeypatch.setattr(message_texts, "_walk", counting)
    # The root: 3 + 20 values; each output: name, datatype, shape and its 2 dims (5).
    assert refused(metadata(20), 23 + 2 * 5)
    assert walked == ["", "outputs[0].", "outputs[1].", "outputs[2]."]


def test_an_anys_contents_count_on_the_same_budget_unstripped(monkeypatch: pytest.MonkeyPatch) -> None:
    def stripping(message):
        raise AssertionError("the hold's walk stripped an Any's contents")

    monkeypatch.setattr(messages, "without_extensions", stripping)
    token = Token()
    token.extra.Pack(Note(text="a"))
    # The root's extra (1), the Any parsed apart (FIXED_STEP_VALUES), the note's text (1).
    assert not refused(token, 2 + FIXED_STEP_VALUES)
    assert refused(token, 1 + FIXED_STEP_VALUES)
    many = Token()
    for _ in range(1_000):
        many.extras.add().Pack(Note(text="a"))
    assert refused(many, 5_000)
    packed = any_pb2.Any()
    packed.Pack(many)
    assert refused(packed, 5_000)  # a reply that is itself an Any


def test_without_a_bound_nothing_is_refused() -> None:
    assert not refused(metadata(100), None)
    stream = splitter()
    assert stream.hold(metadata(100)) + stream.flush()  # as before: the bound is the caller's


async def test_the_routed_stream_passes_the_bound_to_each_hold() -> None:
    async def replies() -> AsyncIterator[Message]:
        yield metadata(1)
        yield metadata(100)

    sent = []
    with pytest.raises(UpstreamError) as refusal:
        async for reply in held(replies(), splitter(), 3 + 6 + 1):
            sent.append(reply)
    assert refusal.value.reason == MESSAGE_TOO_MANY_VALUES
    assert [len(reply.outputs) for reply in sent] == [1]
