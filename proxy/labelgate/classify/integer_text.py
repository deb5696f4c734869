"""Repeated integer fields of a message read as text, a character a value: pure.

A client reads a repeated integer field back with ``chr`` as easily as a tensor:
``shape: [83, 83, 78, 32, ...]`` is ``SSN ...``. So ``messages`` reads every repeated
integer field (``int32`` and wider, signed or not, fixed or varint, packed or not, and
enums, whose proto3 values need not be named ones) as a wider integer tensor is read
(``numbers.character_detections``), and a map's integer values in the map's order and in
its keys' order (``key_order``). Reading is skipped when no value reads as a character a
built-in detector needs (``character_points``), so the usual shapes and counts cost one
C-level set operation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify import characters, credentials
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.jsonpaths import Location
from labelgate.classify.numbers import character_detections

# By field type, the little-endian dtype of the values. Protobuf has no integer of fewer than
# 32 bits; an enum is an int32 on the wire.
CHARACTER_DTYPES: dict[int, np.dtype[Any]] = {
    FieldDescriptor.CPPTYPE_INT32: np.dtype("<i4"),
    FieldDescriptor.CPPTYPE_ENUM: np.dtype("<i4"),
    FieldDescriptor.CPPTYPE_UINT32: np.dtype("<u4"),
    FieldDescriptor.CPPTYPE_INT64: np.dtype("<i8"),
    FieldDescriptor.CPPTYPE_UINT64: np.dtype("<u8"),
}
# Float and double fields: read as integers are when every value is a whole number
# (``whole_numbers``).
FLOAT_CPP_TYPES = frozenset({FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE})
_INT64: np.dtype[Any] = np.dtype("<i8")
_UINT64: np.dtype[Any] = np.dtype("<u8")
# What an int64 or a uint64 field holds: the integers the integer readers take.
_LOWEST, _PAST_HIGHEST = -(2.0**63), 2.0**64
# What a character a built-in match needs reads as (``characters.points_reading_as``); what a
# PEM marker needs: a "K" (of "PRIVATE KEY"), or an escape that may decode to one; and what
# a secret needs besides: a vendor token's or a JWT's first letter (``AKIA`` and 16 capitals
# hold no digit).
_MATCHED_BYTES = b"0123456789@"
_MARKER_BYTES = b"K\\&"
_SECRET_BYTES = _MARKER_BYTES + bytes(sorted({prefix[0] for prefix in credentials.PREFIXES}))


class CharacterRead(NamedTuple):
    """An integer field read as characters: its values and their array (a map's values, once
    in each order read), and what was found in them."""

    location: Location | None  # None: a map's values, which label the map
    path: str
    orders: Sequence[tuple[Any, np.ndarray[Any, Any] | None]]
    found: list[Detection]


def worth_reading(values: Any, detectors: DetectorSet) -> bool:
    """Whether integer ``values`` are worth reading as characters: with a custom detector
    (which may match any character) always, as a tensor's; else when one of them reads as
    something a built-in match or a PEM marker needs (``character_points``). A C-level set
    operation: the usual shapes and counts cost no more."""
    points = character_points(detectors.names) if detectors else frozenset()
    return points is None or not points.isdisjoint(values)


@functools.lru_cache(maxsize=64)
def character_points(names: tuple[str, ...]) -> frozenset[int] | None:
    """The code points one of which integer values must hold to be read as characters (None:
    any, with a custom detector): with built-ins only, ``characters.detections`` finds nothing
    without one reading as a digit or an "@", and a PEM marker (``secret``) needs a "K"."""
    if not BUILTIN_LABELS.keys() >= set(names):
        return None
    marker = _SECRET_BYTES if credentials.NAME in names else b""
    return characters.points_reading_as(_MATCHED_BYTES + marker)


def character_hits(array: np.ndarray[Any, Any], detectors: DetectorSet) -> list[Detection]:
    """What ``detectors`` find in integers read as characters, as a wider integer tensor's
    elements are (``numbers.character_detections``; offsets are values)."""
    return character_detections(array, detectors, array.tobytes()) if len(array) else []


def unread_marker(values: Any) -> bool:
    """Whether integer ``values`` may spell a PEM marker that reading them as characters with
    built-in detectors did not look for: ``characters.detections`` scans nothing (``secret``
    included) unless some value reads as a digit or an "@", which a marker alone need not
    hold; then a value reading as its "K" (or an escape's) is asked for. (With a custom
    detector everything was scanned: this only asks again.)"""
    return characters.points_reading_as(_MATCHED_BYTES).isdisjoint(values) and not (
        characters.points_reading_as(_MARKER_BYTES).isdisjoint(values)
    )


def key_order(key: Any) -> tuple[int, int, str]:
    """A map key's place in key order: numbers by value; text that is digits first, by length
    then digits (by value, without reading a number of any length), then other text."""
    if isinstance(key, int):
        return 0, key, ""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    return (0, len(text), text) if text.isdecimal() else (1, 0, text)


def whole_numbers(values: Any) -> tuple[list[int], np.dtype[Any]] | None:
    """A float or double field's ``values`` as the integers a client reads them as, and the
    dtype to read those as characters with (``character_array``): a JavaScript client's
    ``String.fromCharCode(...xs)`` and ``xs.join(" ")`` read ``[49.0, 50.0]`` and ``[4111.0,
    1111.0]`` as an int list (``String(4111.0)`` is "4111"). None unless every value is a
    whole number an int64 or a uint64 field could hold: a list holding a fraction (embeddings,
    probabilities) is not read so, and costs one ``float.is_integer`` at its first fraction."""
    if not all(map(float.is_integer, values)):  # NaN and infinities are not whole either
        return None
    if not values:
        return [], _INT64
    low, high = min(values), max(values)
    if low < _LOWEST or high >= _PAST_HIGHEST:
        return None
    # Both signs past 2**63 (``[-1.0, 2.0**63, ...]``) fit neither: int64, the large ones read
    # as no character (``character_array``), as they would be in any dtype.
    dtype = _UINT64 if low >= 0 and high >= 2.0**63 else _INT64
    return list(map(int, values)), dtype


def character_array(values: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Integer ``values`` as a ``dtype`` array to read as characters (``character_hits``). Whole
    numbers of a float field may span int64 and uint64 (``whole_numbers``): one past int64 is
    no character, so it is read as -1, which is none either."""
    try:
        return np.fromiter(values, dtype=dtype, count=len(values))
    except OverflowError:
        past = 2**63
        return np.fromiter(
            (-1 if value >= past else value for value in values), dtype=dtype, count=len(values)
        )
