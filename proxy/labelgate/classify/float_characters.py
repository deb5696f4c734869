"""Float tensors read as code points, as integer tensors are (``characters``). Pure.

A client turns an FP32 output of ``[115.0, 115.0, 110.0, 32.0, 49.0, ...]`` into ``ssn 1...``
with ``chr(int(x))`` or ``String.fromCharCode(...xs)`` as readily as an INT32 output's, and
typed double fields are read so already (``integer_text.whole_numbers``). So FP16, BF16,
FP32 and FP64 tensors are read as characters too, an element at a time: a whole number from
0 to U+10FFFF is that code point, anything else (a fraction, a negative, NaN, an infinity)
a character that joins nothing (``code_points_of``). Unlike a typed field's list, read only
when every value is whole, one fraction does not turn the reading off: an upstream would add
one to a list of code points. What is read then is read as a wider integer tensor's code
points are (``numbers.character_detections``: folded, in display order, row by row).

Binary (found by review of this reading): an image as floats 0-255 (un-normalised pixels) is whole
numbers in range too, and read as text its pixels made terminal sequences (ESC then ``[``)
that failed it closed as us_ssn, secret, iban and credit_card, at 0.3-0.7 s an image, where
the same pixels as UINT8 are binary and pass. So code points are told text from binary by
the rule bytes are (``reads_as_noise``: more than one in ``_NOISE_STRAY``, plus
``_NOISE_SLACK``, NULs aside, a control character or no character, as
``other_encodings.legacy_readings`` and ``binary_pieces.is_noise`` count; or, when every one
is a byte, those bytes not text as a UINT8 tensor's are told, ``numbers``). Binary code points
are read as a UINT8 tensor's binary bytes are (``binary_forms``: as written and with their
control characters dropped; bytes also as a UINT8 tensor's, ``numbers``): not folded, not
reordered, a cursor movement failing nothing closed. So junk hides what only those readings
show at the price it does in bytes: past one character in 32 (THREAT-MODEL).

Cost: embeddings, scores and probabilities hold no whole number, or none but C0 controls (a
ReLU's zeros are NULs, which fold to nothing; small class ids): a few vectorized passes find
so (``code_points_of``), 10-20 µs for 10,000 FP32 values. FP16 and BF16 hold every ASCII
code point exactly, few beyond (BF16 none past 256 but the even ones up to 512). Telling
binary is a few more passes (about 1 ms for an image of 150,528 values).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from labelgate.classify.folding import CONTROLS
from labelgate.oip.tensor import Tensor

FLOAT_DATATYPES: Final = frozenset({"FP16", "BF16", "FP32", "FP64"})
_RAW: Final[dict[str, np.dtype[Any]]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BF16_SIZE: Final = 2
_PAST_CODE_POINTS: Final = 0x110000
_FIRST_SHOWN: Final = 0x20  # the C0 controls before it show nothing on their own
_NO_CHARACTER: Final = -1  # ``characters.code_points`` reads a negative as no character
# Code points are binary when more than one in this many (plus ``_NOISE_SLACK``), NULs aside,
# is junk (``_JUNK``, or no character): the rule bytes are told by (``reads_as_noise``).
_NOISE_STRAY: Final = 32
_NOISE_SLACK: Final = 4
# Per code point below U+00A0, whether it is junk: a control character folding drops (C0 but
# tab, newline and carriage return; DEL; C1, which bytes do not hold but code points do:
# an image's pixels 128-159). NUL is padding, counted apart; U+00A0 and past are no control.
_PAST_CONTROLS: Final = 0xA0
_JUNK: Final = np.array(
    [(code != 0 and code in CONTROLS) or code >= 0x80 for code in range(_PAST_CONTROLS)] + [False]
)
_SURROGATES: Final = (0xD800, 0xDFFF)
_OTHER: Final = 0x80  # a character binary forms read as nothing a detector matches (non-ASCII)


def float_values(tensor: Tensor) -> np.ndarray[Any, Any] | None:
    """A float tensor's values as a float32 or float64 array: from its raw buffer when at
    hand (FP16 widened, BF16 the upper half of a float32), else from its values; None for
    values that are no numbers (never from the decoder)."""
    raw = tensor.raw_form()
    datatype = tensor.datatype
    if raw is not None:
        if datatype == "BF16" and len(raw) == tensor.size * _BF16_SIZE:
            widened: np.ndarray[Any, Any] = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
            return widened.view("<f4")
        dtype = _RAW.get(datatype)
        if dtype is not None and len(raw) == tensor.size * dtype.itemsize:
            values: np.ndarray[Any, Any] = np.frombuffer(raw, dtype=dtype)
            return values.astype(np.float32) if datatype == "FP16" else values
    try:
        return np.asarray(tensor.values, dtype=np.float64).ravel()
    except (OverflowError, TypeError, ValueError):
        return None


def code_points_of(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """``values`` (floats) as int64 code points: a whole number from 0 to U+10FFFF as itself,
    anything else as ``_NO_CHARACTER``; None when none is a character past the C0 controls,
    which alone show nothing a detector reads and start no terminal sequence (a ReLU's zeros,
    class ids below 32). A vectorized check, and nothing more, for most float tensors: those
    holding no whole number (embeddings, scores), or none but such controls."""
    with np.errstate(invalid="ignore"):
        whole = np.trunc(values) == values  # NaN is not; an infinity is, and is out of range
        if not whole.any():
            return None
        in_range = whole & (values < _PAST_CODE_POINTS)
        if not (in_range & (values >= _FIRST_SHOWN)).any():
            return None
        return np.where(in_range & (values >= 0), values, _NO_CHARACTER).astype(np.int64)


def reads_as_noise(points: np.ndarray[Any, Any]) -> bool:
    """Whether code points (``code_points_of``) are binary by the rule bytes are told by
    (``other_encodings.legacy_readings``, ``binary_pieces.is_noise``): more than one in
    ``_NOISE_STRAY``, plus ``_NOISE_SLACK``, NULs aside, a control character (``_JUNK``) or no
    character (a fraction, a negative, a surrogate). An image's dark pixels and C1 values, a
    count's or a coordinate's small numbers are; text, with an SSN hidden in it by a few of
    them, is not. Vectorized passes."""
    nuls = int(np.count_nonzero(points == 0))
    junk = _JUNK[np.clip(points, 0, _PAST_CONTROLS)] | (points < 0)
    junk |= (points >= _SURROGATES[0]) & (points <= _SURROGATES[1])
    return int(np.count_nonzero(junk)) > (len(points) - nuls) // _NOISE_STRAY + _NOISE_SLACK


def byte_values(points: np.ndarray[Any, Any]) -> bytes | None:
    """Code points that are each a byte (0-255: un-normalised pixels) as those bytes, which a
    client also reads them as (``astype(np.uint8).tobytes()``); None when one is not."""
    if not len(points) or points.min() < 0 or points.max() > 0xFF:
        return None
    return points.astype(np.uint8).tobytes()


def binary_forms(points: np.ndarray[Any, Any]) -> tuple[bytes, bytes, bytes]:
    """Code points read as binary, a byte each as a UINT8 tensor's binary bytes are read
    (``numbers._text_detections``): as written (ASCII as it is, any other character or none
    ``_OTHER``, so offsets are elements), without the C0 controls and DEL (as such bytes are
    read), and without the C1 controls too (which bytes do not hold)."""
    written = np.where((points >= 0) & (points < _OTHER), points, _OTHER).astype(np.uint8)
    controls = _JUNK[np.clip(points, 0, _PAST_CONTROLS)]
    c0 = controls & (points < _OTHER)
    return written.tobytes(), written[~c0].tobytes(), written[~controls].tobytes()
