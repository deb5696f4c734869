"""How a protobuf message's numbers are read (``messages``): which number fields are worth
scanning (``smallest_scanned``, ``number_types``, ``large_numbers``), a repeated field's
integers (or a float field's whole numbers: ``as_integers``) read one after another as a
caller prints them (``digit_runs``, ``across_values``), and read as characters without the
cover chance cursor movements give records' counts (``no_cursor_cover``).

Apart from the walk since these readings are shared: an inference reply's shape is read as
digit runs too (``output_names.check_output_shapes``), and a held message's integers are read
as the walk reads them (``held_integers``).

A float or double field is read as an integer field is (repeated, across
repeated messages, a map's values), when every value is a whole number an int64 or a uint64
holds (``as_integers``, ``integer_text.whole_numbers``): a JavaScript client's
``String.fromCharCode(...xs)`` and ``xs.join(" ")`` read ``[49.0, 50.0, 51.0]`` and
``[4111.0, 1111.0, 1111.0, 1111.0]`` as an int list (``String(4111.0)`` is "4111"). A list
holding a fraction (or a NaN, an infinity, a number past 2**64) is not: embeddings and
probabilities cost one ``float.is_integer`` more. The residual: one such value planted among
code points or digits, which ``fromCharCode`` reads as a character (truncated) and ``join``
prints apart from the rest.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.integer_text import CHARACTER_DTYPES, FLOAT_CPP_TYPES, whole_numbers
from labelgate.classify.numbers import DIGIT_RUN_DETECTORS, SMALLEST_DETECTABLE

# Scalar fields read as numbers (bools are not: no digits).
NUMBER_CPP_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
        FieldDescriptor.CPPTYPE_DOUBLE,
        FieldDescriptor.CPPTYPE_FLOAT,
        FieldDescriptor.CPPTYPE_ENUM,
    }
)
# Those that can hold a number of 2**32 or more (a float too: it reaches 3.4e38).
WIDE_NUMBER_CPP_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT64,
        FieldDescriptor.CPPTYPE_DOUBLE,
        FieldDescriptor.CPPTYPE_FLOAT,
    }
)
# Fewer digits than the shortest value a detector looks for (an SSN's nine): a shape such as
# [100] or [1, 100, 7] says nothing, and most shapes and integer lists are never scanned.
RUN_DIGITS = 9
# How a caller prints integers one after another: run together, or joined by these.
RUN_SEPARATORS = ("", " ", "-", ",")


def digit_runs(numbers: Sequence[int]) -> list[bytes]:
    """``numbers`` read one after another, as a caller prints a shape or a list: run together
    and joined by each of ``RUN_SEPARATORS`` (a negative number brings its own hyphen). None
    for fewer than two numbers (one is scanned as itself) or fewer than ``RUN_DIGITS`` digits.
    Shared by inference replies' shapes (``classifier.check_output_shapes``) and messages'
    repeated integer fields, so both read digits the same way."""
    if len(numbers) < 2:
        return []
    texts = list(map(str, numbers))
    if sum(map(len, texts)) < RUN_DIGITS:
        return []
    return [separator.join(texts).encode("ascii") for separator in RUN_SEPARATORS]


def smallest_scanned(detectors: DetectorSet) -> int | None:
    """The smallest magnitude of a number worth scanning, or None when no detector can fire on
    one. A number's text is digits (a sign, a dot): of the built-ins only ``credit_card`` can
    fire on that (an SSN, a phone number or an IP address needs separators, an IBAN letters,
    an email an ``@``), and a card has 13 digits at least (``numbers.SMALLEST_DETECTABLE``, as
    numeric tensors). A custom pattern may match any digits: then every number is scanned."""
    return _smallest_for(detectors.names)


@functools.lru_cache(maxsize=64)
def _smallest_for(names: tuple[str, ...]) -> int | None:
    if not BUILTIN_LABELS.keys() >= set(names):
        return 0
    return SMALLEST_DETECTABLE if DIGIT_RUN_DETECTORS.intersection(names) else None


def number_types(smallest: int | None) -> frozenset[int]:
    """The number field types worth scanning: none, or only those that can hold a number of
    ``smallest`` or more (a 32-bit integer never holds a card)."""
    if smallest is None:
        return frozenset()
    return WIDE_NUMBER_CPP_TYPES if smallest >= 2**32 else NUMBER_CPP_TYPES


def no_cursor_cover(found: list[Detection], count: int, detectors: DetectorSet) -> list[Detection]:
    """``found`` without the cover every detector gets over all ``count`` values when, read
    as characters, an ESC and what follows move a terminal's cursor (``characters``): in
    records' numbers (statistics' counts: a 27 then a letter's code, 9 replies in 200 of
    random small counts) that is chance, not text, and would label an ordinary reply with
    every detector. A value they spell is still found as written and folded."""
    whole = {hit.detector for hit in found if hit.start == 0 and hit.end == count}
    if not whole or not whole >= set(detectors.names):
        return found
    return [hit for hit in found if not (hit.start == 0 and hit.end == count)]


def may_be_integers(cpp_type: int) -> bool:
    """Whether a field of ``cpp_type`` is read as integers (``as_integers``)."""
    return cpp_type in CHARACTER_DTYPES or cpp_type in FLOAT_CPP_TYPES


def as_integers(cpp_type: int, values: Any) -> tuple[Any, np.dtype[Any]] | None:
    """A repeated field's ``values`` (or a field's across repeated messages, or a map's) as the
    integers it is read as, and the dtype to read them as characters with; None when it is not
    read so. An integer field as it is; a float or double field when every value is a whole
    number (``integer_text.whole_numbers``): ``[49.0, 50.0, 51.0]`` prints, and reads back as
    code points, as ``[49, 50, 51]`` does."""
    dtype = CHARACTER_DTYPES.get(cpp_type)
    if dtype is not None:
        return values, dtype
    return whole_numbers(values) if cpp_type in FLOAT_CPP_TYPES else None


def large_numbers(values: Any, smallest: int) -> list[tuple[int, Any]]:
    """(index, number) of the ``values`` at least ``smallest`` in magnitude. ``max`` and
    ``min`` (in C) rule out the usual case, none, without a step in Python per number; a NaN
    makes them inconclusive, and then each number is looked at."""
    if not values:
        return []
    if smallest and max(values) < smallest and min(values) > -smallest:
        return []
    return [(index, number) for index, number in enumerate(values) if abs(number) >= smallest]


def across_values(
    values: Sequence[int], separator: str, hits: list[Detection], smallest: int
) -> list[Detection]:
    """The ``hits`` in ``values`` joined by ``separator`` (``digit_runs``) but those within the
    digits of one value of at least ``smallest``: that number is scanned, and masked, alone."""
    texts = list(map(str, values))
    starts = list(itertools.accumulate((len(text) + len(separator) for text in texts), initial=0))
    kept = []
    for hit in hits:
        index = bisect.bisect_right(starts, hit.start) - 1
        if hit.end > starts[index] + len(texts[index]) or abs(values[index]) < smallest:
            kept.append(hit)
    return kept
