"""The work of classifying a typed reply is bounded: ``max_values`` (``limits.max_message_values``).

The walk runs in Python on the gateway's event loop, a step per value: every present field,
repeated element and map entry counts one, counted before it is looked at, and a reply holding
more is refused (``MESSAGE_TOO_MANY_VALUES``) without walking the rest. Scanning counts too:
a text's bytes before it is scanned, each detection before any is handed out (one string of
14 MB holding two million e-mail addresses counted five values and took seconds). These tests
count work (values, the walk's calls, the scan's hand-outs), never time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_message, detectors, messages
from labelgate.classify.messages import (
    COLONS_PER_VALUE,
    DECODED_TEXT_WEIGHT,
    DETECTION_VALUES,
    FIXED_STEP_VALUES,
    MAP_STEP_VALUES,
    MESSAGE_TOO_MANY_VALUES,
    TEXT_BYTES_PER_VALUE,
)
from labelgate.config import LimitSettings
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


def versions(*texts: str) -> pb.ModelMetadataResponse:
    """name, platform, versions and its elements: 3 + len(texts) values, and their text."""
    return pb.ModelMetadataResponse(name="m", platform="p", versions=list(texts))


def test_a_texts_bytes_count_before_it_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 values walked, and a value per TEXT_BYTES_PER_VALUE bytes ("m" and "p" add two bytes).
    reply = versions("a" * (TEXT_BYTES_PER_VALUE * 1_000))
    assert not refused(reply, 4 + 1_000)
    scanned: list[int] = []
    real = DetectorSet.scan_each

    def counting(self, texts):
        scanned.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(DetectorSet, "scan_each", counting)
    assert refused(reply, 4 + 999)
    assert scanned == []  # refused as it was queued: no scan ran


def test_a_texts_first_bytes_ride_on_its_own_value() -> None:
    # A thousand texts just short of TEXT_BYTES_PER_VALUE: a value each, as the walk counts.
    short = versions(*["a" * (TEXT_BYTES_PER_VALUE - 1)] * 1_000)
    assert not refused(short, 3 + 1_000)
    # A byte more each: a value more each.
    longer = versions(*["a" * TEXT_BYTES_PER_VALUE] * 1_000)
    assert not refused(longer, 3 + 1_000 + 1_000)
    assert refused(longer, 3 + 1_000 + 999)


def test_text_read_again_decoded_weighs_more() -> None:
    # Not ASCII, or holding escapes or character references: decoded and folded too.
    size = TEXT_BYTES_PER_VALUE * 1_000 // DECODED_TEXT_WEIGHT
    for text in ("\\" * size, "&#" * (size // 2), "\u00e9" * (size // 2)):
        assert len(text.encode()) == size
        assert not refused(versions(text), 4 + 1_000)
        assert refused(versions(text), 4 + 999)
    # The same bytes as plain ASCII weigh DECODED_TEXT_WEIGHT times less.
    assert not refused(versions("a" * size), 4 + 1_000 // DECODED_TEXT_WEIGHT)


def test_a_texts_colons_count_before_it_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    # IPv6 candidates are confirmed in Python, each found or not, and hold two colons at least:
    # near misses (12.7 MB of "1::2::3 ") passed the byte charge and cost seconds (review).
    text = "1::2::3 " * 1_000
    charge = len(text) // TEXT_BYTES_PER_VALUE + text.count(":") // COLONS_PER_VALUE
    assert charge == 62 + 2_000
    confirmed: list[bytes] = []
    from labelgate.classify import patterns

    real = patterns._address_ok

    def confirming(*args, **kwargs):
        confirmed.append(args[0] if args else b"")
        return real(*args, **kwargs)

    monkeypatch.setattr(patterns, "_address_ok", confirming)
    assert refused(versions(text), 4 + charge - 1)
    assert confirmed == []  # refused as it was queued: no candidate was confirmed
    assert not refused(versions(text), 4 + charge)
    assert confirmed, "the candidates are confirmed where ipaddress is asked"


def test_each_detection_counts_before_any_is_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not refused(versions("a@b.io x@y.io"), 4 + 2 * DETECTION_VALUES)
    assert refused(versions("a@b.io x@y.io"), 4 + 2 * DETECTION_VALUES - 1)
    # Ten thousand addresses in one text of 70,000 bytes (546 values of bytes): refused once
    # the scan has them, before the Python step per hit (handing out, merging, labelling).
    handed_out: list[int] = []
    for name in ("_share_out_each", "_share_out", "_merge_overlaps"):
        real = getattr(detectors, name)

        def counting(*args, real=real):
            handed_out.append(1)
            return real(*args)

        monkeypatch.setattr(detectors, name, counting)
    many = versions("a@b.io " * 10_000)
    assert refused(many, 5_000)
    assert handed_out == []
    assert refused(many, 4 + 546 + 10_000 * DETECTION_VALUES - 1)
    assert handed_out == []
    assert not refused(many, 4 + 546 + 10_000 * DETECTION_VALUES)
    assert handed_out


def test_detections_only_a_decoded_reading_shows_count_too() -> None:
    # A JSON escape hides each address from the raw scan; the decoded reading finds a thousand.
    hidden = versions("a\\u0040b.io " * 1_000)
    text_values = 12_000 * DECODED_TEXT_WEIGHT // TEXT_BYTES_PER_VALUE
    assert text_values < 500
    assert refused(hidden, 4 + text_values + 1_000 * DETECTION_VALUES - 1)
    assert not refused(hidden, 4 + text_values + 1_000 * DETECTION_VALUES)


def test_map_texts_and_an_unreadable_anys_bytes_count() -> None:
    mapped = Codes(attrs={"k": "a" * (TEXT_BYTES_PER_VALUE * 1_000)})
    assert refused(mapped, 1_000)
    assert not refused(mapped, 1_000 + 2 + MAP_STEP_VALUES + 1)
    opaque = any_pb2.Any(
        type_url="type.googleapis.com/nowhere.Unknown", value=b"a" * (TEXT_BYTES_PER_VALUE * 1_000)
    )
    assert refused(Codes(extra=opaque), 1_000)
    assert not refused(Codes(extra=opaque), 2_000)


def statistics(models: int) -> ext.ModelStatisticsResponse:
    """A statistics reply as a server of ``models`` models sends it (every duration set, three
    batch sizes each)."""
    reply = ext.ModelStatisticsResponse()
    for index in range(models):
        model = reply.model_stats.add(
            name=f"resnet50-variant-{index:04d}",
            version="3",
            last_inference=1_733_500_000_000 + index,
            inference_count=52_341 + index,
            execution_count=50_000 + index,
        )
        duration = ext.StatisticDuration(count=1_000 + index, ns=123_456_789 + index)
        for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            getattr(model.inference_stats, name).CopyFrom(duration)
        for name in ("cache_hit", "cache_miss"):
            getattr(model.inference_stats, name).CopyFrom(duration)
        for size in (1, 4, 8):
            model.batch_stats.add(
                batch_size=size, compute_input=duration, compute_infer=duration, compute_output=duration
            )
    return reply


def test_ordinary_replies_stay_under_the_default_bound() -> None:
    default = LimitSettings().max_message_values
    assert not refused(statistics(LimitSettings().max_index_models), default)
    config = ext.ModelConfig(name="resnet50", platform="onnxruntime_onnx", max_batch_size=8)
    config.input.add(name="input__0", data_type=ext.TYPE_FP32, dims=[3, 224, 224])
    for index in range(100):
        config.parameters[f"param_{index}"].string_value = f"value {index}: https://example.com/m?x=1&y=2"
    assert not refused(config, default // 20)
    assert not refused(metadata(1_000), default // 10)
