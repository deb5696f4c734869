"""The native prefilter for UTF-16 digits (``labelgate_native.wide_digit_runs`` and
``wide_digit_runs_raw``, ``proxy/native/src/wide_digits.rs``) names exactly the texts
``other_encodings.digit_encoding`` reads as UTF-16 digits, and never fewer.

``digit_encoding`` is the rule (a run of ``RUN_DIGITS`` digits with only fillers between, over
``_UNIT_KINDS``); the extension reads the same kinds, handed over at import, and the classifier
asks Python about the texts it names only (``read_as_digits``). A text it missed would go out
unread: so every text ``digit_encoding`` reads must be among them, for any bytes, ASCII text
that folds to itself (Devanagari's digits are ``f\\t``..``o\\t`` in UTF-16-LE) above all.
"""

from __future__ import annotations

import random
import string
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate.classify import classify_outputs, native
from labelgate.classify.other_encodings import (
    _UNIT_KINDS,
    RUN_DIGITS,
    digit_encoding,
    digit_reads,
    may_read_digits,
    raw_digit_rows,
    read_as_digits,
    reads_as_digits,
)
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG, DETECTORS
from tests.classify.test_self_folding_wide_digits import CASES, ORDINARY, _decoded

pytestmark = pytest.mark.skipif(not native.digit_runs_available(), reason="labelgate_native is not installed")

_OTHER, _FILLER, _DIGIT = 0, 1, 2


def _ascii_units(kind: int) -> list[bytes]:
    """The UTF-16-LE bytes of each code unit of ``kind`` (``_UNIT_KINDS``) whose two bytes are
    ASCII and not NUL: what ASCII text is made of when a client reads it as UTF-16."""
    return [
        bytes([low, high])
        for high in range(1, 0x80)
        for low in range(1, 0x80)
        if _UNIT_KINDS[high << 8 | low] == kind
    ]


DIGITS = _ascii_units(_DIGIT)
FILLERS = _ascii_units(_FILLER)
OTHERS = _ascii_units(_OTHER)
ASCII_TEXT = string.printable  # letters, digits, punctuation, whitespace (tab, newline, return...)


def _packed(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _read(elements: Sequence[bytes]) -> set[int]:
    """The rule: the elements ``digit_encoding`` reads as UTF-16 digits."""
    return {index for index, element in enumerate(elements) if digit_encoding(element) is not None}


def _read_quoted(elements: Sequence[bytes]) -> set[int]:
    """The rule with ``quoted``: from the first byte, or holding a quote from the second."""
    return {index for index, element in enumerate(elements) if reads_as_digits(element, quoted=True)}


def _native(elements: list[bytes], quoted: bool = False) -> tuple[list[int], list[int]]:
    """The extension's answer for ``elements`` as a list and as a raw buffer."""
    found: list[int] | None
    with native.digit_runs_forced(True):
        if quoted:
            answer = native.quoted_digit_runs(elements)
            assert answer is not None
            found, escaped = answer
            named = set(found)
            assert escaped == [
                index
                for index, element in enumerate(elements)
                if index not in named
                and b'"' in element
                and b"\\" in element
                and len(element) > 2 * RUN_DIGITS
            ]
        else:
            found = native.wide_digit_runs(elements)
        raw = native.wide_digit_runs_raw(_packed(elements), len(elements), quoted)
    assert found is not None and raw is not None
    return found, raw


def _units(draw: st.DrawFn) -> bytes:
    """Units a run is made of, in one byte order: digits and fillers, now and then a unit of
    neither kind (which ends a run), so some hold a run and some fall short."""
    kinds = st.sampled_from(DIGITS) | st.sampled_from(FILLERS) | st.sampled_from(OTHERS)
    units = draw(st.lists(kinds, min_size=RUN_DIGITS - 1, max_size=3 * RUN_DIGITS))
    if draw(st.booleans()):
        units = [unit[::-1] for unit in units]  # UTF-16-BE
    return b"".join(units)


@st.composite
def _elements(draw: st.DrawFn) -> bytes:
    """An element: pieces of ASCII text (tabs, newlines), planted runs of ASCII digit units
    in either byte order, and random bytes (any byte, NULs and past ASCII too), in any order:
    a piece of odd length puts the next out of step with the element's code units."""
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("text", "run", "run", "noise")))
        if kind == "text":
            pieces.append(draw(st.text(ASCII_TEXT, max_size=20)).encode())
        elif kind == "run":
            pieces.append(_units(draw))
        else:
            pieces.append(draw(st.binary(max_size=20)))
    return b"".join(pieces)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_elements(), max_size=12))
def test_the_native_candidates_are_the_elements_digit_encoding_reads(elements: list[bytes]) -> None:
    """A superset, never missing an element the rule reads, and in fact the same elements
    (the same rule), whatever the bytes: the list and the raw buffer alike."""
    read = _read(elements)
    found, raw = _native(elements)
    assert read <= set(found), "an element digit_encoding reads was not named"
    assert set(found) == read
    assert found == sorted(found) and raw == found
    ascii_read = {index for index in read if elements[index].isascii() and 0 not in elements[index]}
    assert ascii_read == {index for index in found if elements[index].isascii() and 0 not in elements[index]}
    with native.digit_runs_forced(True):
        assert digit_reads(elements)[0] == read
    # Read from the second byte too where an element holds a quote (a JSON string's start):
    # the same rule, natively and in Python, with the extension and without it.
    quoted = _read_quoted(elements)
    found, raw = _native(elements, quoted=True)
    assert set(found) == quoted and found == sorted(found) and raw == found
    for use_native in (True, False):
        with native.digit_runs_forced(use_native):
            first, second, _ = digit_reads(elements, quoted=True)
        assert first == read and first | second == quoted
        assert second == {
            index
            for index, element in enumerate(elements)
            if b'"' in element and digit_encoding(element[1:]) is not None
        }


def test_planted_runs_in_ascii_text_are_found_in_step_and_not_out_of_it() -> None:
    """Thousands of ASCII elements, runs planted in them at random offsets: many are read (the
    property above is not vacuous), many are not, and the extension names exactly those."""
    rng = random.Random(20261207)
    elements: list[bytes] = []
    for _ in range(4000):
        units = [rng.choice(rng.choice((DIGITS, DIGITS, FILLERS, OTHERS))) for _ in range(rng.randint(3, 12))]
        big_endian = rng.random() < 0.5
        run = b"".join(unit[::-1] if big_endian else unit for unit in units)
        before = "".join(rng.choice(ASCII_TEXT) for _ in range(rng.randint(0, 9))).encode()
        after = "".join(rng.choice(ASCII_TEXT) for _ in range(rng.randint(0, 9))).encode()
        elements.append(before + run + after)
    read = _read(elements)
    assert 500 < len(read) < 3500
    found, raw = _native(elements)
    assert set(found) == read and raw == found


def test_planted_runs_after_a_quote_are_found_from_either_byte() -> None:
    """Runs planted after a quote at random offsets (a JSON string's start): the quoted
    reading names those out of step with the element's units too, and only where a quote is."""
    rng = random.Random(20261208)
    elements: list[bytes] = []
    for _ in range(3000):
        units = [rng.choice(rng.choice((DIGITS, DIGITS, FILLERS))) for _ in range(rng.randint(4, 10))]
        run = b"".join(unit[::-1] for unit in units) if rng.random() < 0.5 else b"".join(units)
        before = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(0, 9))).encode()
        quote = b'"' if rng.random() < 0.8 else b"'"
        elements.append(before + quote + run + quote)
    first, quoted = _read(elements), _read_quoted(elements)
    shifted = quoted - first
    assert len(shifted) > 500 and all(b'"' in elements[index] for index in shifted)
    found, raw = _native(elements, quoted=True)
    assert set(found) == quoted and raw == found
    assert set(_native(elements)[0]) == first


def test_the_leak_cases_and_ordinary_text() -> None:
    cases = [data for data, _, _ in CASES.values()]
    found, raw = _native([*cases, *ORDINARY])
    assert (
        found
        == raw
        == [index for index in range(len(cases) + len(ORDINARY)) if index in _read([*cases, *ORDINARY])]
    )
    assert set(range(len(cases))) <= set(found)


def test_short_and_odd_texts() -> None:
    """Too few units for a run, an odd last byte (no unit: a decoder's replacement character),
    a run cut short by it."""
    devanagari = "\u0966\u0967\u0968\u0969".encode("utf-16-le")  # f\tg\th\ti\t
    elements = [
        b"",
        b"f",
        devanagari[:-1],
        devanagari,
        devanagari + b"x",
        b"x" + devanagari,
        devanagari[::-1],
    ]
    assert _native(elements)[0] == sorted(_read(elements)) == [3, 4, 6]


def test_a_malformed_buffer_is_refused() -> None:
    data = _packed([b"f\tg\th\ti\t", b"ok"])
    with native.digit_runs_forced(True):
        assert native.wide_digit_runs_raw(data, 2) == [0]
        for count in (0, 1, 3):
            assert native.wide_digit_runs_raw(data, count) is None
        assert native.wide_digit_runs_raw(data[:-1], 2) is None
        assert native.wide_digit_runs_raw(data + b"\x00", 2) is None
        not_bytes: list[Any] = [b"f\tg\th\ti\t", bytearray(b"x")]
        assert native.wide_digit_runs(not_bytes) is None  # the caller asks Python then


def test_unit_kinds_are_checked() -> None:
    """A table that is not 65,536 kinds of 0, 1 or 2, or a run of no digit, is refused (and
    the one in place stays)."""
    kernel = native._DIGIT_SWITCH.kernel
    assert kernel is not None
    kinds = _UNIT_KINDS.tobytes()
    for bad in ((kinds[:-1], RUN_DIGITS), (kinds[:-1] + b"\x03", RUN_DIGITS), (kinds, 0)):
        with pytest.raises(ValueError):
            kernel.set_unit_kinds(*bad)
    assert _native([b"f\tg\th\ti\t"])[0] == [0]


def test_without_the_extension_python_reads_the_same() -> None:
    """The fallback: ``read_as_digits`` places candidates itself, and the raw gate answers
    None (any element may) when ``may_read_digits`` cannot rule the buffer out."""
    elements = [data for data, _, _ in CASES.values()] + list(ORDINARY)
    with native.digit_runs_forced(False):
        assert native.wide_digit_runs(elements) is None
        assert digit_reads(elements)[0] == _read(elements)
        assert read_as_digits(elements) == _read_quoted(elements) == _read(elements)
        data = _packed(elements)
        assert raw_digit_rows(data, len(elements)) is None and may_read_digits(data)
        assert raw_digit_rows(_packed([b"plain text", b"more"]), 2) == []
    with native.digit_runs_forced(True):
        assert read_as_digits(elements) == _read(elements)
        assert raw_digit_rows(data, len(elements)) == sorted(_read_quoted(elements))


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
def test_the_classifier_finds_each_case_without_the_extension(raw: bool) -> None:
    """With the prefilter off, the classifier's gates ask Python (``may_read_digits``,
    ``read_as_digits``) and find the same values."""
    with native.digit_runs_forced(False):
        for case, (data, _, detector) in CASES.items():
            elements = [b"retail", data]
            tensor = _decoded("segment", elements) if raw else Tensor("segment", "BYTES", [2], elements)
            spans = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS).spans.get(
                "segment", {}
            )
            assert [(hit.detector, hit.start, hit.end) for hit in spans.get(1, [])] == [
                (detector, 0, len(data))
            ], case
            assert 0 not in spans
