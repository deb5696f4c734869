"""Floats' mantissa bytes, read as the bytes a client gets back: pure.

A float's low bytes are its mantissa's, whatever its exponent: an upstream can put text there
and a client reads it back with ``np.frombuffer(raw, "<f8").view("<u8") & 0xffffffffffff``
(or ``[:, :6]`` of its bytes) as readily as a tensor's ``tobytes()``. The sign and exponent
bytes between each value's piece break the text a reading of the raw bytes sees
(``numbers.packed_detections``), so each value's low bytes are also read joined, one value's
after the other's (``forms``), in two widths:

- The mantissa's whole bytes (``whole``): a double's 6, a float's 2, a half's 1. A NaN's
  payload holds them (``0x7ff8`` above 6 bytes of text is a NaN), as any finite value does.
  Read as a value's raw bytes are: as text when they read as text, else as binary data, as
  written and without control characters.
- All but the top byte (sign and exponent): a double's 7, a float's 3. A finite value carries
  them with its top byte set apart (``0xc0`` above 7 bytes of text is a double near -2**N);
  the byte below the top holds the exponent's lowest bits, which any text byte fits with an
  exponent of its own. Read as written only, and as text only when they hold no NUL: an
  image's whole numbers (pixels 0-255 as floats) leave the bytes under that byte NUL and spell
  digits and letters there (a float's 176.0-185.0 are ``0``-``9``), so the reading without
  control characters would find cards in a grey image, and a NUL-free text reading is one no
  whole number under 2**15 (a float) or 2**44 (a double) makes.

Both are read joined only, not a row at a time as a tensor's raw bytes are too; a hit every
value of which repeats one byte is dropped (``repeating``: a normalised image, tenths).

BF16 has no whole mantissa byte (7 bits), and its low byte is the byte below the top: an
image's pixels 128-255 are that byte's ASCII as they are (digits from 176), NUL-free, so it is
not read so (THREAT-MODEL). Used by ``numbers`` (tensors) and ``message_bytes`` (a typed
reply's ``repeated float`` and ``double`` fields), so both read the same bytes.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import numpy as np


class Form(NamedTuple):
    """Each value's low ``per_value`` bytes, joined (``data``); ``whole``: the mantissa's whole
    bytes (read as a value's raw bytes are), else all but the top byte (module docstring).
    ``datatype``, ``values``: the values' own datatype and raw bytes, for ``repeating``
    (empty for a form that is a tensor's raw bytes themselves)."""

    data: bytes
    per_value: int
    whole: bool
    datatype: str = ""
    values: bytes = b""


# A float datatype's bytes per value -> the low bytes of each read, and whether whole.
_READ: Final[dict[str, tuple[tuple[int, bool], ...]]] = {
    "FP64": ((6, True), (7, False)),
    "FP32": ((2, True), (3, False)),
    "FP16": ((1, True),),
}
_SIZES: Final = {"FP64": 8, "FP32": 4, "FP16": 2}
DATATYPES: Final = frozenset(_READ)
_MANTISSA_BITS: Final = 0x7F  # a float's third byte but its exponent's lowest bit


def per_value(datatype: str) -> int:
    """The bytes ``forms`` reads of each value of ``datatype`` (0 for a datatype it does not
    read): what reading them costs beside the raw bytes."""
    return sum(count for count, _ in _READ.get(datatype, ()))


def forms(datatype: str, data: bytes) -> list[Form]:
    """The low bytes of each value of ``data`` (the little-endian bytes of whole values of
    ``datatype``), joined, in each width read (module docstring); none for other datatypes."""
    readings = _READ.get(datatype)
    if readings is None or not data:
        return []
    values = np.frombuffer(data, dtype=np.uint8).reshape(-1, _SIZES[datatype])
    return [Form(values[:, :count].tobytes(), count, whole, datatype, data) for count, whole in readings]


def repeating(form: Form) -> np.ndarray[Any, Any] | None:
    """By value of ``form``, whether its mantissa repeats one byte: a double's bytes 1-5 (byte
    0 is rounded), a float's bytes 0 and 1 and its third byte's mantissa bits. A fraction
    whose denominator divides 255 makes them (a pixel / 255.0, a third, a fifth, a tenth:
    ``0.3`` is ``0x3fd3333333333333``), and a normalised image's or a flat grey's repeated
    digits (``333333``, ``444444555555``) pass as cards; the bytes of no card, SSN or IBAN
    are made of such pieces alone, whatever their alignment (the check reads their bytes,
    not the exponent's). None: no such check (a half's single byte, raw bytes)."""
    if form.datatype not in ("FP64", "FP32") or not form.values:
        return None
    values = np.frombuffer(form.values, dtype=np.uint8).reshape(-1, _SIZES[form.datatype])
    if form.datatype == "FP64":
        repeats: np.ndarray[Any, Any] = (values[:, 2:6] == values[:, 1:2]).all(axis=1)
        return repeats
    third = values[:, 2] & _MANTISSA_BITS
    doubled: np.ndarray[Any, Any] = (values[:, 0] == values[:, 1]) & (third == values[:, 1] & _MANTISSA_BITS)
    return doubled


def all_repeat(repeats: np.ndarray[Any, Any], start: int, end: int, per_value: int) -> bool:
    """Whether every value bytes ``start:end`` of a form of ``per_value`` bytes a value touch
    repeats (``repeating``)."""
    first, last = in_values(start, end, per_value)
    return bool(repeats[first:last].all()) if last > first else False


def in_values(start: int, end: int, per_value: int) -> tuple[int, int]:
    """Byte offsets in a form of ``per_value`` bytes a value as the values they touch."""
    return start // per_value, -(-end // per_value)
