"""The work of classifying a typed reply is bounded: ``max_values`` (``limits.max_message_values``).

The walk runs in Python on the gateway's event loop, a step per value: every present field,
repeated element and map entry counts one, counted before it is looked at, and a reply holding
more is refused (``MESSAGE_TOO_MANY_VALUES``) without walking the rest. These tests count
work (values, the walk's calls), never time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_message, messages
from labelgate.classify.messages import FIXED_STEP_VALUES, MAP_STEP_VALUES, MESSAGE_TOO_MANY_VALUES
from labelgate.errors import UpstreamError
from tests.classify.codes_proto import Codes

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()


def metadata(outputs: int) -> pb.ModelMetadataResponse:
    """name, platform and outputs (3), and per output: itself, name, datatype, shape and 2 dims (6)."""
    reply = pb.ModelMetadataResponse(name="m", platform="p")
    for index in range(outputs):
        reply.outputs.add(name=f"o{index}", datatype="FP32", shape=[1, 2])
    return reply


def refused(message, max_values: int) -> bool:
    try:
        classify_message(message, CATALOG, DETECTORS, max_values=max_values)
    except UpstreamError as error:
        assert error.reason == MESSAGE_TOO_MANY_VALUES
        assert str(max_values) in error.message and "limits.max_message_values" in error.message
        return True
    return False


def test_a_reply_of_exactly_the_limit_passes_and_one_more_value_is_refused() -> None:
    reply = metadata(10)
    values = 3 + 10 * 6
    assert not refused(reply, values)
    assert refused(reply, values - 1)


def test_without_a_limit_nothing_is_refused() -> None:
    classify_message(metadata(1000), CATALOG, DETECTORS)  # a released reply read again


def test_a_long_field_is_refused_before_any_of_its_items_is_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100,000 outputs against a limit of 1,000: the root's fields are counted, the outputs
    # field whole, before any of them is looked at.
    looked_at: list[str] = []
    real = messages.option_labels

    def counting(descriptor):
        looked_at.append(descriptor.full_name)
        return real(descriptor)

    monkeypatch.setattr(messages, "option_labels", counting)
    assert refused(metadata(100_000), 1_000)
    assert looked_at == []


def test_the_walk_stops_where_the_count_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nested messages are counted as each is reached: past the limit, no further one is walked.
    walked: list[str] = []
    real = messages._Walker.walk

    def counting(self, message, prefix, *args, **kwargs):
        walked.append(prefix)
        return real(self, message, prefix, *args, **kwargs)

    monkeypatch.setattr(messages._Walker, "walk", counting)
    parent = Codes()
    for _ in range(10):
        parent.children.add(text="a", lines=["b"] * 49)  # the root counts each child once
    # The root: 11 values; each child: 2 fields and 49 lines. At 100 the second child runs
    # out, at 113 the third: no child after it is walked.
    assert refused(parent, 100)
    assert walked == ["", "children[].", "children[]."]
    walked.clear()
    assert refused(parent, 11 + 2 * 51)
    assert walked == ["", "children[].", "children[].", "children[]."]


def test_folded_messages_count_against_the_same_limit() -> None:
    # A map's message values and an Any's contents are walked apart, on the reply's count.
    inner = Codes(lines=["x"] * 500)
    in_a_map = Codes(nested={"k": inner})
    packed = any_pb2.Any()
    packed.Pack(inner)
    in_an_any = Codes(extra=packed)
    for message in (in_a_map, in_an_any):
        assert refused(message, 400)
        assert not refused(message, 1_000)


def test_an_any_is_counted_before_its_contents_are_stripped_of_extensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stripping visits every message it holds: it must not run ahead of the count.
    def stripping(message):
        raise AssertionError("the classifier walk stripped an Any's contents")

    monkeypatch.setattr(messages, "without_extensions", stripping)
    inner = Codes()
    for _ in range(1_000):
        inner.children.add()
    packed = any_pb2.Any()
    packed.Pack(inner)
    assert refused(Codes(extra=packed), 500)


def test_steps_that_cost_more_than_a_value_count_for_more() -> None:
    # A field read as characters (digits' code points): its 3 values, its field, and a fixed step.
    read = Codes(i64=[ord(digit) for digit in "123"])
    assert not refused(read, 1 + 3 + FIXED_STEP_VALUES)
    assert refused(read, 3 + FIXED_STEP_VALUES)
    # A map of one entry: its field, the entry, and the scan of its keys and values apart.
    mapped = Codes(by_name={"k": 1})
    assert not refused(mapped, 2 + MAP_STEP_VALUES)
    assert refused(mapped, 1 + MAP_STEP_VALUES)
