"""The native scan of a BYTES tensor's raw buffer finds exactly what the per-element scan finds.

``DetectorSet.spans_raw`` hands the extension one buffer (4-byte little-endian length, then
the bytes, per element: ``Tensor.raw_form``) instead of a ``bytes`` object per element. It
must give what ``spans_at`` gives natively and ``scan_each`` gives in Python (same
detections, element indices, order, the passes left to Python run), refuse anything but a
well-formed buffer of exactly the element count, and make the classifier take its usual
path whenever it refuses (and with the extension off).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, classify_outputs, native
from labelgate.classify.classifier import Classification
from labelgate.classify.detectors import BUILTIN_LABELS, CustomPattern, Detection, DetectorSet
from labelgate.oip import native as tensor_native
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.classify.test_native import (
    _IBAN_HEAVY,
    _RAW,
    _TEXTS,
    EVERY_SUBSET,
    LONG,
    NATIONAL_IBANS,
    SPAN_CORPUS,
)

STOP = b"{\\"


def packed(elements: Sequence[bytes]) -> bytes:
    """The raw form of ``elements``, written here (not by the code under test)."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def raw_spans(
    detectors: DetectorSet, data: bytes, texts: list[bytes], stop: bytes = b""
) -> tuple[dict[int, list[Detection]], set[str]] | None:
    """``DetectorSet.spans_raw`` on ``data``, the raw form of ``texts``."""
    return detectors.spans_raw(data, len(texts), lambda: texts, stop)


def raw_agrees(detectors: DetectorSet, texts: list[bytes]) -> dict[int, list[Detection]]:
    """``spans_raw`` on the packed texts against ``spans_at`` (native, per element) and
    ``scan_each`` (Python): the same detections in the same order, the same names."""
    keys = list(range(len(texts)))
    with native.forced(True):
        from_raw = raw_spans(detectors, packed(texts), texts)
        per_element = detectors.spans_at(texts, keys)
    assert from_raw is not None and per_element is not None
    with native.forced(False):
        assert raw_spans(detectors, packed(texts), texts) is None  # the classifier's own path then
        expected = dict(sorted(detectors.scan_each(texts).items()))
    spans, names = from_raw
    assert list(spans.items()) == list(per_element[0].items()) == list(expected.items()), texts
    assert all(type(hit) is Detection for hits in spans.values() for hit in hits)
    assert names == per_element[1] == {hit.detector for hits in expected.values() for hit in hits}
    return spans


# Empty elements, NULs, non-ASCII (valid or not), hits at both edges of an element and of
# the buffer, elements whose length prefix holds a stop byte ("{" = 123, "\" = 92).
RAW_CORPUS = [
    b"",
    *SPAN_CORPUS,
    b"",
    b"\x00123-45-6789\x00",
    b"4111111111111111",
    b"a@b.co",
    "ünïcødé 123-45-6789 ✓".encode(),
    b"\xff\xfe 10.0.0.1 \xc3",
    b"x" * 123,
    b"y" * 92 + b" 123-45-6789",
    b"123-45-6789",
]


def test_raw_scan_agrees_for_the_hand_corpus() -> None:
    every = DetectorSet()
    spans = raw_agrees(every, RAW_CORPUS)
    assert any(len(hits) > 1 for hits in spans.values())  # merging is exercised
    assert 0 not in spans and len(RAW_CORPUS) - 1 in spans  # edges of the buffer
    for wanted in EVERY_SUBSET[1:]:
        raw_agrees(DetectorSet({name: BUILTIN_LABELS[name] for name in wanted}), RAW_CORPUS)
    for text in RAW_CORPUS:
        raw_agrees(every, [text])
    raw_agrees(every, [LONG, b"123-45-6789"])  # the GIL-free scan
    raw_agrees(every, [])


def test_passes_left_to_python_run_on_the_right_elements() -> None:
    texts = [b"none", b"v6 2001:db8::1 x", b"", *(f"pay {value}".encode() for value in NATIONAL_IBANS)]
    spans = raw_agrees(DetectorSet(), texts)
    assert [hit.detector for hit in spans[1]] == ["ip_address"]
    assert all([hit.detector for hit in spans[index]] == ["iban"] for index in range(3, len(texts)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.one_of(_TEXTS, _IBAN_HEAVY, _RAW).filter(lambda text: not set(text) & set(STOP)), max_size=8
    ),
    wanted=st.sets(st.sampled_from(sorted(BUILTIN_LABELS)), min_size=1).map(frozenset),
)
def test_generated_raw_scans_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    raw_agrees(DetectorSet({name: BUILTIN_LABELS[name] for name in wanted}), texts)


def malformed(texts: list[bytes]) -> list[bytes]:
    good = packed(texts)
    return [
        good[:-1],  # the last element cut short
        good + b"\x00",  # a byte after the last element
        good + struct.pack("<I", 0),  # one element more than the count
        good[4 + len(texts[0]) :],  # one element fewer
        good[:2],  # inside a prefix
        struct.pack("<I", 2**32 - 1) + good[4:],  # a length past the end
        struct.pack("<I", len(texts[0]) + 1) + good[4:],  # lengths off by one
        b"",
    ]


def test_malformed_raw_buffers_are_refused() -> None:
    texts = [b"ssn 123-45-6789", b"card 4111111111111111", b"a@b.co"]
    with native.forced(True):
        for data in malformed(texts):
            assert raw_spans(DetectorSet(), data, texts) is None, data
        assert raw_spans(DetectorSet(), bytearray(packed(texts)), texts) is None  # type: ignore[arg-type]


def test_stop_bytes_in_an_element_refuse_but_not_in_a_prefix() -> None:
    with native.forced(True):
        assert raw_spans(DetectorSet(), packed([b"a", b'{"k": 1}']), [b"a", b'{"k": 1}'], STOP) is None
        assert raw_spans(DetectorSet(), packed([b"a\\u0031"]), [b"a\\u0031"], STOP) is None
        prefixed = [b"x" * 123, b"y" * 92]
        assert raw_spans(DetectorSet(), packed(prefixed), prefixed, STOP) == ({}, set())


def test_raw_scan_gives_way_to_custom_detectors_and_no_detectors() -> None:
    custom = DetectorSet(custom=[CustomPattern("ticket", r"T-\d+", "internal")])
    with native.forced(True):
        assert raw_spans(custom, packed([b"T-1 123-45-6789"]), [b"T-1 123-45-6789"]) is None
        assert raw_spans(DetectorSet.none(), packed([b"123-45-6789"]), [b"123-45-6789"]) is None


# --- the classifier: the raw path where it applies, today's path elsewhere -----------------


def classified(tensor: Tensor, use_native: bool, detectors: DetectorSet | None = None) -> Classification:
    with native.forced(use_native):
        return classify_outputs("m", [tensor], Catalog.from_data({"entries": []}), detectors or DetectorSet())


def assert_same(on: Classification, off: Classification) -> None:
    assert on.fields == off.fields
    assert [(name, list(spans.items())) for name, spans in on.spans.items()] == [
        (name, list(spans.items())) for name, spans in off.spans.items()
    ]
    assert on.json_elements == off.json_elements


def decoded(elements: list[bytes]) -> Tensor:
    """``elements`` as the gateway gets them: a raw output decoded (its raw form kept)."""
    response = pb.ModelInferResponse(
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="t", datatype="BYTES", shape=[len(elements)])],
        raw_output_contents=[packed(elements)],
    )
    (tensor,) = oip.decode_outputs(response)
    assert tensor.raw_form() == packed(elements)
    return tensor


@pytest.mark.parametrize(
    "elements",
    [
        RAW_CORPUS,
        [b'{"a": "123-45-6789"}', *RAW_CORPUS, b'{"b": "4111111111111111"}'],  # JSON: today's path
        [b"esc \\u0031\\u0032\\u0033-45-6789", *RAW_CORPUS],  # escapes: today's path
        [b"nothing here", b"nor here"],
    ],
)
def test_decoded_tensors_classify_as_without_raw_and_without_native(elements: list[bytes]) -> None:
    tensor = decoded(elements)
    plain = Tensor("t", "BYTES", [len(elements)], list(elements))  # no raw form
    with_raw = classified(tensor, True)
    assert_same(with_raw, classified(plain, True))
    assert_same(with_raw, classified(tensor, False))
    assert_same(with_raw, classified(plain, False))
    takes_raw = b"{" not in b"".join(elements) and b"\\" not in b"".join(elements)
    with native.forced(True):  # the raw scan is the path taken exactly where it applies
        assert (raw_spans(DetectorSet(), packed(elements), elements, STOP) is not None) is takes_raw


def test_a_raw_form_that_does_not_match_is_not_trusted() -> None:
    """A buffer the extension refuses sends the classifier to the values themselves, and
    values assigned after decoding drop the raw form (``Tensor.raw_form``)."""
    values = [b"ssn 123-45-6789", b"card 4111111111111111"]
    for data in malformed(values):
        tensor = Tensor("t", "BYTES", [2], list(values)).remember_raw(data)
        assert_same(classified(tensor, True), classified(Tensor("t", "BYTES", [2], list(values)), False))
    tensor = decoded([b"nothing", b"here"])
    tensor.values = list(values)
    on = classified(tensor, True)
    assert set(on.spans["t"]) == {0, 1}
    assert_same(on, classified(tensor, False))


RESTRICTED = Catalog.from_data({"entries": [{"model": "m", "path": "outputs.t", "labels": ["restricted"]}]})


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize(
    "elements",
    [
        RAW_CORPUS,
        [b"x" * 123, b"y" * 91],  # a "{" (123) in a length prefix only
        [b'{"a": "123-45-6789"}', *RAW_CORPUS],  # a JSON object: its keys are still read
        [b"esc \\u0031\\u0032\\u0033-45-6789"],
    ],
)
def test_an_output_with_nothing_to_scan_for_classifies_as_its_values_do(
    elements: list[bytes], use_native: bool
) -> None:
    """On a restricted output with only restricted detectors there is nothing to scan for
    (every other detector would run: ``DetectorSet.besides``): without a "{" anywhere in its
    raw form its elements are not even built, and the result is the values' own."""
    plain = Tensor("t", "BYTES", [len(elements)], list(elements))
    only_restricted = DetectorSet(builtins={"secret": "restricted"})
    with native.forced(use_native):
        tensor = decoded(elements)
        from_raw = classify_outputs("m", [tensor], RESTRICTED, only_restricted)
        from_values = classify_outputs("m", [plain], RESTRICTED, only_restricted)
    assert_same(from_raw, from_values)
    # Decoding splits at once without the extension (it has no check for the whole buffer).
    assert tensor.values_built is (b"{" in packed(elements) or not tensor_native.active())
