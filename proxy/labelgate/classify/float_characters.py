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

Cost: embeddings, scores and probabilities hold no whole number, or none but C0 controls (a
ReLU's zeros are NULs, which fold to nothing; small class ids): a few vectorized passes find
so (``code_points_of``), 10-20 µs for 10,000 FP32 values. FP16 and BF16 hold every ASCII
code point exactly, few beyond (BF16 none past 256 but the even ones up to 512).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

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
