"""A private key written one line per element is covered whatever kind of element opens it.

A BYTES tensor's elements are scanned in three sets (plain text, the leaves of JSON objects,
opaque elements), and a PEM block carried from one text to the next of its own set only: a
BEGIN marker in an opaque element (invalid JSON, a duplicate key), in a JSON leaf or in a
text left the key's lines in the elements of the other kinds after it in clear, on the
native and the Python path alike, to a caller who may see the output and not ``restricted``.
A BEGIN marker only a decoded or folded form shows carried into no later text either
(``key_blocks.carried_across``, ``json_elements.carry_key_blocks``).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, native
from labelgate.classify.fields import Classification
from labelgate.enforce import apply_masks
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.classify.secret_values import pem_value
from tests.classify.test_native_raw_scan import decoded, packed

DETECTORS = DetectorSet.default()
HASH_KEY = b"0123456789abcdef0123456789abcdef"
CATALOG = Catalog.from_data(
    {"default_label": "internal", "entries": [{"model": "m", "path": "outputs.t", "labels": ["public"]}]}
)
# Everything but what the key is: the caller the key's lines must not reach.
VISIBLE = frozenset({"public", "internal", "confidential"})
STRATEGIES = {"null": {}, "redact": {}, "hash": {}, "partial": {"keep_last": 4}}

_LINES = pem_value(random.Random(11), "RSA PRIVATE KEY", 3).split("\n")
BEGIN, BODY, END = _LINES[0], _LINES[1:-1], _LINES[-1]
AFTER = "PLTafter7c1d"  # past the END marker: stays readable
BEFORE = "PLTbefore9e2a "  # before a BEGIN marker split across elements: stays readable


def text(value: str) -> bytes:
    return value.encode()


def leaf(value: str, key: str = "line") -> bytes:
    return json.dumps({key: value}).encode()


def invalid(value: str) -> bytes:
    """JSON that is opaque from the start: an unterminated string."""
    return b'{"a": "' + json.dumps(value)[1:-1].encode()


def duplicate(value: str) -> bytes:
    return b'{"a": "x", "a": ' + json.dumps(value).encode() + b"}"


# name: the tensor's elements; each holds the key's base64 lines (BODY) after its BEGIN
# marker, and AFTER past its END marker. A JSON leaf holding a marker is at a path of its
# own: the ``secret`` found in it labels its path, and a mask on that path reaches the leaf at
# it in every element (the lines would be masked for that alone).
CASES: dict[str, list[bytes]] = {
    "opaque (invalid JSON), then text": [
        invalid(BEGIN + "\n"),
        *map(text, BODY),
        text(END),
        text(AFTER),
    ],
    "opaque (invalid JSON), then JSON": [
        invalid(BEGIN + "\n"),
        *map(leaf, BODY),
        leaf(END, "end"),
        leaf(AFTER, "after"),
    ],
    "opaque (duplicate key), then mixed": [
        duplicate(BEGIN),
        text(BODY[0]),
        leaf(BODY[1]),
        text(BODY[2]),
        leaf(BODY[3]),
        text(END + " " + AFTER),
    ],
    "text before the opaque one, then JSON": [
        text(AFTER),
        invalid(BEGIN),
        *map(leaf, BODY),
        leaf(END, "end"),
    ],
    "JSON, then text": [leaf(BEGIN), *map(text, BODY), text(END), text(AFTER)],
    "text, then JSON": [
        text(BEGIN),
        *map(leaf, BODY),
        json.dumps({"e": END, "x": 1}).encode(),
        leaf(AFTER, "after"),
    ],
    "text, then opaque": [
        text(BEGIN),
        invalid(BODY[0]),
        *map(text, BODY[1:]),
        text(END),
        leaf(AFTER, "after"),
    ],
    "JSON, then opaque, then text": [
        leaf(BEGIN),
        duplicate(BODY[0]),
        *map(text, BODY[1:]),
        leaf(END, "end"),
        text(AFTER),
    ],
    "a JSON key's lines in one leaf of each object": [
        text(BEGIN),
        *(json.dumps({"n": 1, "line": line, "z": ""}).encode() for line in BODY),
        json.dumps({"end": END, "after": AFTER}).encode(),
    ],
    "text with an escaped BEGIN marker, then text": [
        text(BEGIN.replace("-", "\\u002d", 1)),
        *map(text, BODY),
        text(END),
        text(AFTER),
    ],
    "text with a full-width BEGIN marker, then text": [
        text(BEGIN.replace("-", "\uff0d")),
        *map(text, BODY),
        text(END.replace("-", "\uff0d")),
        text(AFTER),
    ],
    # A BEGIN marker split across elements (found by review, rev-fixes 1): the elements read in
    # order are one text, and that text opens the block.
    "a BEGIN marker split over two elements": [
        text(BEFORE + BEGIN[:18]),
        text(BEGIN[18:] + "\n"),
        *map(text, BODY),
        text(END),
        text(AFTER),
    ],
    "a BEGIN marker one character an element": [
        *map(text, BEGIN),
        text("\n"),
        *map(text, BODY),
        text(END),
        text(AFTER),
    ],
    "a BEGIN marker split across empty elements": [
        text(BEGIN[:5]),
        b"",
        text(BEGIN[5:12]),
        b"",
        b"",
        text(BEGIN[12:]),
        *map(text, BODY),
        text(END + " " + AFTER),
    ],
    "a split BEGIN marker after a block that closed": [
        text(BEGIN),
        text(BODY[0]),
        text(END + "\n" + BEGIN[:20]),
        text(BEGIN[20:]),
        *map(text, BODY[1:]),
        text(END),
        text(AFTER),
    ],
    "a split BEGIN marker, then JSON": [
        text(BEGIN[:9]),
        text(BEGIN[9:]),
        *map(leaf, BODY),
        leaf(END, "end"),
        text(AFTER),
    ],
    "a split BEGIN marker, then opaque": [
        text(BEGIN[:30]),
        text(BEGIN[30:]),
        invalid(BODY[0]),
        *map(text, BODY[1:]),
        text(END),
        text(AFTER),
    ],
}


def classify(tensor: Tensor) -> Classification:
    return classify_outputs("m", [tensor], CATALOG, DETECTORS)


def released(elements: list[bytes], tensor: Tensor, strategy: str) -> bytes:
    """The tensor's text as a caller who may not see ``restricted`` gets it."""
    classification = classify(tensor)
    masks: list[dict[str, Any]] = [
        {"path": field.path, "strategy": strategy, "params": STRATEGIES[strategy]}
        for field in classification.fields
        if not field.labels <= VISIBLE
    ]
    [out] = apply_masks(
        [Tensor("t", "BYTES", [len(elements)], list(elements))], classification, masks, HASH_KEY
    )
    return b"\x00".join(out.byte_elements())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("case", CASES)
def test_no_line_of_a_key_reaches_a_caller_who_may_not_see_restricted(
    case: str, use_native: bool, strategy: str
) -> None:
    elements = CASES[case]
    with native.forced(use_native):
        out = released(elements, Tensor("t", "BYTES", [len(elements)], list(elements)), strategy)
    for line in BODY:
        assert line.encode() not in out, (case, line, out[:400])


@pytest.mark.parametrize("case", CASES)
def test_what_follows_the_end_marker_stays_readable(case: str) -> None:
    """The block ends at its END marker: a value past it is not masked for nothing (at a
    path of its own: a mask on a leaf's path, which a ``secret`` found at it labels, reaches
    that leaf in every element). Not past an END marker in an element of another kind than
    the one that opened the block: that kind's own scan, which never meets the END marker,
    still covers its later elements (fail closed, as before)."""
    elements = CASES[case]
    for use_native in (True, False):
        with native.forced(use_native):
            out = released(elements, Tensor("t", "BYTES", [len(elements)], list(elements)), "redact")
        assert AFTER.encode() in out, (case, use_native)


@pytest.mark.parametrize("case", CASES)
def test_native_and_python_classify_alike(case: str) -> None:
    elements = CASES[case]
    results = []
    for use_native in (True, False):
        with native.forced(use_native):
            results.append(classify(Tensor("t", "BYTES", [len(elements)], list(elements))))
    on, off = results
    assert on.fields == off.fields
    assert [(name, list(spans.items())) for name, spans in on.spans.items()] == [
        (name, list(spans.items())) for name, spans in off.spans.items()
    ]
    assert on.json_elements == off.json_elements


RAW_CASES = {
    "a full-width BEGIN marker": CASES["text with a full-width BEGIN marker, then text"],
    "a BEGIN marker split over two elements": CASES["a BEGIN marker split over two elements"],
    "a BEGIN marker one character an element": CASES["a BEGIN marker one character an element"],
    "a BEGIN marker split across empty elements": CASES["a BEGIN marker split across empty elements"],
    "a BEGIN marker in character references": [
        text(BEGIN.replace("-", "&#45;", 1)),
        *map(text, BODY),
        text(END),
        text(AFTER),
    ],
}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("case", RAW_CASES)
def test_a_raw_text_tensor_carries_a_block_only_another_form_opens(case: str, use_native: bool) -> None:
    """A tensor decoded from raw contents, scanned in one native call: a BEGIN marker only a
    folded or decoded form shows runs into the later elements too."""
    elements = RAW_CASES[case]
    with native.forced(use_native):
        out = released(elements, decoded(elements), "redact")
    for line in BODY:
        assert line.encode() not in out, (case, line)
    assert AFTER.encode() in out


def test_a_key_in_plain_text_alone_is_masked_as_before() -> None:
    """No other kind of element: the text scan's own spans, unchanged."""
    elements = [text(BEGIN), *map(text, BODY), text(END), text(AFTER + " 078-05-1121")]
    for use_native in (True, False):
        with native.forced(use_native):
            spans = classify(Tensor("t", "BYTES", [len(elements)], list(elements))).spans["t"]
        assert [hit.detector for hit in spans[len(elements) - 1]] == ["us_ssn"]
        assert all([hit.detector for hit in spans[index]] == ["secret"] for index in range(len(elements) - 1))


# Elements a key's lines may be spread over, of every kind: what opens the block, its lines,
# what closes it, and what holds nothing of it.
_OPENERS = [
    text(BEGIN),
    leaf(BEGIN),
    invalid(BEGIN),
    duplicate(BEGIN),
    text(BEGIN.replace("-", "\\u002d", 1)),
    text(BEGIN.replace("-", "\uff0d")),
    text(BEGIN.replace("-", "&#45;", 1)),
]
_CLOSERS = [text(END), leaf(END, "end"), invalid(END), text(END + " " + AFTER)]
_PIECES = st.one_of(
    st.sampled_from(_OPENERS),
    st.sampled_from(_CLOSERS),
    st.builds(
        lambda kind, line: kind(line),
        st.sampled_from([text, leaf, invalid, duplicate]),
        st.sampled_from(BODY),
    ),
    st.sampled_from([text(AFTER), leaf(AFTER, "after"), text("078-05-1121"), leaf("a@b.co", "mail")]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=st.lists(_PIECES, min_size=2, max_size=8))
def test_generated_tensors_cover_every_line_inside_a_block_alike_on_both_paths(elements: list[bytes]) -> None:
    """Any mix of kinds and orders: the two paths classify alike, and each of the key's lines
    in an element after the first that opens a block and before the first that closes it
    is masked."""
    tensor = Tensor("t", "BYTES", [len(elements)], list(elements))
    results = []
    for use_native in (True, False):
        with native.forced(use_native):
            results.append(classify(tensor))
    on, off = results
    assert on.fields == off.fields
    assert [(name, list(spans.items())) for name, spans in on.spans.items()] == [
        (name, list(spans.items())) for name, spans in off.spans.items()
    ]
    assert on.json_elements == off.json_elements
    opening = next((index for index, value in enumerate(elements) if value in _OPENERS), None)
    if opening is None:
        return
    closing = next(
        (index for index in range(opening + 1, len(elements)) if b"END RSA" in elements[index]), len(elements)
    )
    with native.forced(False):
        out = released(elements, Tensor("t", "BYTES", [len(elements)], list(elements)), "redact")
    shown = out.split(b"\x00")
    for index in range(opening + 1, closing):
        for line in BODY:
            assert line.encode() not in shown[index], (index, elements)


SPLIT = CASES["a BEGIN marker split over two elements"]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_a_split_begin_marker_is_covered_from_where_it_starts(use_native: bool, raw: bool) -> None:
    """The block a BEGIN marker split across elements opens runs from the marker's start to
    its END marker, as one in a single element does: the text before it stays readable."""
    tensor = decoded(SPLIT) if raw else Tensor("t", "BYTES", [len(SPLIT)], list(SPLIT))
    with native.forced(use_native):
        spans = classify(tensor).spans["t"]
    assert [(hit.detector, hit.start, hit.end) for hit in spans[0]] == [
        ("secret", len(BEFORE), len(SPLIT[0]))
    ]
    assert all(
        [(hit.detector, hit.start, hit.end) for hit in spans[index]] == [("secret", 0, len(SPLIT[index]))]
        for index in range(1, len(SPLIT) - 1)
    )
    assert len(SPLIT) - 1 not in spans


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_a_split_begin_marker_left_open_covers_the_other_outputs(use_native: bool, raw: bool) -> None:
    """A block a split marker opens and no later element closes covers the reply's other
    text outputs (``key_blocks.left_open``), as one opened in a single element does."""
    opening = [text(BEGIN[:18]), text(BEGIN[18:])]
    lines = [text(line) for line in BODY]
    if raw:
        response = pb.ModelInferResponse(
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name="t", datatype="BYTES", shape=[2]),
                pb.ModelInferResponse.InferOutputTensor(name="u", datatype="BYTES", shape=[len(lines)]),
            ],
            raw_output_contents=[packed(opening), packed(lines)],
        )
        tensors = oip.decode_outputs(response)
    else:
        tensors = [Tensor("t", "BYTES", [2], opening), Tensor("u", "BYTES", [len(lines)], lines)]
    with native.forced(use_native):
        result = classify_outputs("m", tensors, CATALOG, DETECTORS)
    assert sorted(result.spans["u"]) == list(range(len(lines)))
    assert all(hits[0].detector == "secret" for hits in result.spans["u"].values())


def test_text_without_a_split_marker_asks_for_no_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common tensor holds no PRIVATE KEY: the carry never runs on it."""
    from labelgate.classify import key_blocks

    def refused(values: list[bytes]) -> dict[int, key_blocks.SplitOpening]:
        raise AssertionError("asked")

    monkeypatch.setattr(key_blocks, "split_openings", refused)
    elements = [b"hello there", b"an answer about keys", b"078-05-1121"]
    for use_native in (True, False):
        with native.forced(use_native):
            classify(decoded(elements))
            classify(Tensor("t", "BYTES", [len(elements)], list(elements)))
