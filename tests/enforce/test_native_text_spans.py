"""Plain-text elements masked natively (``labelgate.oip.native.partial_spans``) are byte for
byte what the Python loop of ``enforce.masking._mask_tensor`` gives.

``apply_masks`` runs with the extension's tensor kernels on and off on the same tensors,
classification and masks; the masked values (and which of them are the very input objects)
must be equal. A hand corpus covers what the extension masks (one ASCII span anywhere in an
element, at its edges, keep_last 0 and past any length) and what it must leave to Python
(non-ASCII spans, several detections, overlaps, other strategies, opaque elements, spans out
of range or empty, values that are not ``bytes``); ``left_positions`` checks which is which,
so a path silently falling back cannot pass for the native one. Hypothesis then generates
texts, masks and spans.

The extension is required: the Makefile installs it, and a missing one fails here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate.classify import Catalog, DetectorSet, classify_outputs
from labelgate.classify import native as classify_native
from labelgate.classify.detectors import BUILTIN_LABELS, Detection
from labelgate.classify.fields import OPAQUE_JSON, Classification
from labelgate.enforce import apply_masks
from labelgate.enforce.strategies import STRATEGIES
from labelgate.oip import native
from labelgate.oip.tensor import Tensor

HASH_KEY = b"0123456789abcdef0123456789abcdef"
CATALOG = Catalog.from_data({"entries": []})
DETECTORS = DetectorSet(dict.fromkeys(BUILTIN_LABELS, "restricted"))  # every built-in scans
SSN, CARD, IBAN, EMAIL, PHONE = (
    "123-45-6789",
    "4111111111111111",
    "DE89370400440532013000",
    "x.y@ex.com",
    "212-555-1234",
)


def tensor(elements: Sequence[Any]) -> Tensor:
    return Tensor("t", "BYTES", [len(elements)], list(elements))


def classify(elements: Sequence[bytes]) -> Classification:
    with classify_native.forced(True):
        return classify_outputs("m", [tensor(elements)], CATALOG, DETECTORS)


def masked_both_ways(
    elements: Sequence[Any], classification: Classification, masks: Sequence[dict[str, Any]]
) -> list[bytes]:
    """The masked elements, after checking both paths agree byte for byte (and on which
    elements are the input objects themselves)."""
    results: list[Any] = []
    for use_native in (True, False):
        with native.forced(use_native):
            try:
                results.append(
                    apply_masks([tensor(elements)], classification, tuple(masks), HASH_KEY)[0].values
                )
            except Exception as error:  # a position past the tensor: the same error both ways
                results.append(error)
    on, off = results
    if isinstance(off, Exception):
        assert (type(on), str(on)) == (type(off), str(off))
        return []
    assert on == off
    assert [type(value) for value in on] == [type(value) for value in off]
    assert [a is b for a, b in zip(on, elements, strict=True)] == [
        a is b for a, b in zip(off, elements, strict=True)
    ]
    return list(on)


def left_positions(
    elements: Sequence[Any], spans: dict[int, list[Any]], partial: dict[str, int], unmasked: set[str]
) -> list[int]:
    """The positions the extension leaves to Python (and that it did not touch them)."""
    values = list(elements)
    masked = list(values)
    with native.forced(True):
        left = native.partial_spans(values, masked, spans, partial, unmasked, Detection)
    assert left is not None
    for position in left:
        if 0 <= position < len(values):
            assert masked[position] is values[position]
    return left


def mask(detector: str, strategy: str = "partial", **params: Any) -> dict[str, Any]:
    return {"path": f"outputs.t{{{detector}}}", "strategy": strategy, "params": params}


# --- the hand corpus --------------------------------------------------------------------------

CORPUS = [
    f"ssn {SSN} on file".encode(),
    SSN.encode(),  # the span is the whole element
    f"{SSN} first".encode(),
    f"last {CARD}".encode(),
    f"iban {IBAN}.".encode(),
    f"mail {EMAIL} now".encode(),
    f"call {PHONE}".encode(),
    b"nothing to see",
    b"",
    f"Gr\u00fc\u00dfe {SSN} \u53f7".encode(),  # non-ASCII around an ASCII span
    f"\u00e9{CARD}\u00e9".encode(),
    f"{SSN} and {CARD}".encode(),  # several hits
    f"+1 {CARD}".encode(),  # overlapping hits, merged
    f"two {SSN} {SSN}".encode(),
    f"{PHONE} {EMAIL} {IBAN}".encode(),
    f"key -----BEGIN RSA PRIVATE KEY----- {SSN} {EMAIL}".encode(),  # one span, three detectors
]
EVERY_MASK_SET = [
    [mask(name) for name in ("us_ssn", "credit_card", "iban")],
    [mask(name, keep_last=0) for name in BUILTIN_LABELS],
    [mask(name, keep_last=10**30) for name in BUILTIN_LABELS],
    [mask(name, keep_last=7) for name in ("us_ssn", "email", "phone")],
    *([mask(name, strategy) for name in BUILTIN_LABELS] for strategy in STRATEGIES),
    [mask("us_ssn", "hash"), mask("credit_card", "redact", replacement="[X]"), mask("iban", "null")],
    [mask("us_ssn"), mask("credit_card", "redact"), mask("email", keep_last=1)],
    [mask("*")],
    [],
]


@pytest.mark.parametrize("masks", EVERY_MASK_SET, ids=range(len(EVERY_MASK_SET)))
def test_the_hand_corpus_masks_the_same(masks: list[dict[str, Any]]) -> None:
    classification = classify(CORPUS)
    assert len(classification.spans["t"]) > 10
    masked_both_ways(CORPUS, classification, masks)


def test_what_the_extension_masks_and_what_it_leaves() -> None:
    classification = classify(CORPUS)
    spans = classification.spans["t"]
    partial = {"us_ssn": 4, "credit_card": 0, "iban": 4}
    left = left_positions(CORPUS, spans, partial, {"email"})
    # One ASCII span of a partial detector, also beside non-ASCII text: native. An unmasked
    # detector alone: nothing to do. A detector neither names, several hits: Python's.
    assert left == [6, 11, 13, 14, 15]
    masked = masked_both_ways(
        CORPUS, classification, [mask("us_ssn"), mask("credit_card", keep_last=0), mask("iban")]
    )
    assert masked[0] == b"ssn *******6789 on file"
    assert masked[1] == b"*******6789"
    assert masked[3] == b"last ****************"
    assert masked[9] == "Gr\u00fc\u00dfe *******6789 \u53f7".encode()
    assert masked[11] == b"*******6789 and ****************"
    # The key block's span, given to the SSN too, under the SSN's mask (the key's is none).
    assert masked[15] == b"key " + b"*" * (len(CORPUS[15]) - 8) + CORPUS[15][-4:]


def test_spans_the_extension_refuses_are_left_to_python() -> None:
    values: list[Any] = [
        b"0123456789",
        b"0123456789",
        b"0123456789",
        "\u00e9\u00e9\u00e9\u00e9".encode(),
        b"0123",
        "x",
        b"ab",
    ]
    spans: dict[int, list[Any]] = {
        0: [Detection("us_ssn", "confidential", 4, 4)],  # empty
        1: [Detection("us_ssn", "confidential", 4, 11)],  # past the end
        2: [("us_ssn", "confidential", 0, 4)],  # not a Detection
        3: [Detection("us_ssn", "confidential", 0, 4)],  # not ASCII
        4: [Detection(OPAQUE_JSON, "confidential", 0, 4)],  # opaque: never the usual element
        5: [Detection("us_ssn", "confidential", 0, 1)],  # not bytes
        9: [Detection("us_ssn", "confidential", 0, 1)],  # no such element
        6: [Detection("us_ssn", "confidential", 1, 2)],  # this one is native
    }
    assert left_positions(values, spans, {"us_ssn": 4}, set()) == [0, 1, 2, 3, 4, 5, 9]
    assert left_positions(values, spans, {"us_ssn": 4}, {OPAQUE_JSON}) == [0, 1, 2, 3, 5, 9]
    with native.forced(False):
        assert native.partial_spans(values, list(values), spans, {"us_ssn": 4}, set(), Detection) is None


# An ASCII span in elements that may read as UTF-16 or UTF-32 (review F1): a NUL anywhere, a
# byte order mark at the start. Python decides (``other_encodings.reads_wide``) and stars the span
# whole where the element does read so.
MAY_READ_WIDE = [
    ("SSN " + SSN).encode("utf-16-le"),  # NULs: UTF-16 by them
    b"\xff\xfe" + ("SSN " + SSN).encode("utf-16-le"),
    b"\xfe\xff\x00S" + b"\x00" + SSN.encode(),
    b"\xff\xfe" + SSN.encode(),  # a mark, then ASCII: UTF-16 by its mark
    b"123\x00-45-6789",  # one NUL: no UTF-16, the tail is kept as ever
]


def test_spans_of_elements_that_may_read_wide_are_left_to_python() -> None:
    spans: dict[int, list[Any]] = {
        index: [Detection("us_ssn", "confidential", len(value) - 4, len(value))]
        for index, value in enumerate(MAY_READ_WIDE)
    }
    assert left_positions(MAY_READ_WIDE, spans, {"us_ssn": 2}, set()) == list(range(len(MAY_READ_WIDE)))
    classification = Classification(fields=[], spans={"t": spans}, element_counts={"t": len(MAY_READ_WIDE)})
    masked = masked_both_ways(MAY_READ_WIDE, classification, [mask("us_ssn", keep_last=2)])
    assert masked[:4] == [value[:-4] + b"****" for value in MAY_READ_WIDE[:4]]
    assert masked[4] == b"123\x00-45-**89"


@pytest.mark.parametrize("keep_last", [0, 1, 4, 11, 12, 10**30])
def test_hand_made_spans_mask_the_same(keep_last: int) -> None:
    values = [b"0123456789a", b"0123456789a", "\u00e9\u00e9 0123".encode(), b"abc", b"0123456789a"]
    classification = Classification(
        fields=[],
        spans={
            "t": {
                0: [Detection("us_ssn", "confidential", 0, 11)],
                1: [Detection("us_ssn", "confidential", 10, 11)],
                2: [Detection("us_ssn", "confidential", 5, 9)],
                3: [Detection("us_ssn", "confidential", 2, 7)],  # out of range: fails closed in Python
                4: [Detection("us_ssn", "confidential", 3, 3)],
            }
        },
        element_counts={"t": len(values)},
    )
    masked_both_ways(values, classification, [mask("us_ssn", keep_last=keep_last)])


# --- generated texts, masks and spans ----------------------------------------------------------

_PARTS = st.one_of(
    st.sampled_from(
        [SSN, CARD, IBAN, EMAIL, PHONE, f"+1 {CARD}", "é", "号", " ", "x", "10.0.0.1", "fe80::1"]
    ),
    st.text(alphabet="abc 0123456789-.@", max_size=12),
)
_ELEMENTS = st.lists(st.lists(_PARTS, max_size=6).map(lambda parts: "".join(parts).encode()), max_size=12)
_MASKS = st.lists(
    st.builds(
        lambda name, strategy, keep: mask(
            name, strategy, **({"keep_last": keep} if keep is not None else {})
        ),
        st.sampled_from([*BUILTIN_LABELS, "*"]),
        st.sampled_from(STRATEGIES),
        st.one_of(st.none(), st.integers(0, 40), st.just(10**30)),
    ).map(lambda built: built if built["strategy"] == "partial" else {**built, "params": {}}),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=_ELEMENTS, masks=_MASKS)
def test_generated_texts_mask_the_same(elements: list[bytes], masks: list[dict[str, Any]]) -> None:
    masked_both_ways(elements, classify(elements), masks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elements=st.lists(st.binary(max_size=12), min_size=1, max_size=6),
    spans=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 14), st.integers(0, 14)), max_size=8),
    keep_last=st.integers(0, 16),
)
def test_generated_spans_mask_the_same(
    elements: list[bytes], spans: list[tuple[int, int, int]], keep_last: int
) -> None:
    by_position: dict[int, list[Detection]] = {}
    for position, start, end in spans:
        by_position.setdefault(position % len(elements), []).append(
            Detection("us_ssn", "confidential", start, end)
        )
    classification = Classification(fields=[], spans={"t": by_position}, element_counts={"t": len(elements)})
    masked_both_ways(elements, classification, [mask("us_ssn", keep_last=keep_last)])


def test_a_position_past_the_tensor_fails_the_same_way() -> None:
    values = [b"0123456789"]
    spans = {
        "t": {0: [Detection("us_ssn", "confidential", 0, 4)], 3: [Detection("us_ssn", "confidential", 0, 4)]}
    }
    classification = Classification(fields=[], spans=spans, element_counts={"t": 1})
    assert masked_both_ways(values, classification, [mask("us_ssn")]) == []
    with native.forced(True), pytest.raises(IndexError):
        apply_masks([tensor(values)], classification, (mask("us_ssn"),), HASH_KEY)
