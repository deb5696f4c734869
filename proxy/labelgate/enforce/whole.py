"""Whole-output masks on BYTES tensors, written as raw bytes at once. Pure.

A mask on ``outputs.<t>`` rewrites every element the same way, so the per-element work of
``Masker.raw_all`` and of encoding the result again can mostly go: ``null`` and ``redact``
make one repeated element (its raw form is one prefixed string repeated), and ``partial``
on a column whose elements all have one length and are ASCII (ids, SSNs, card numbers:
the usual case) stars the same byte columns of every element in one numpy assignment over
the decoded raw buffer; with the Rust extension (``labelgate.oip.native``), ``partial`` on
ASCII elements of any lengths is one call that writes the raw form too. Anything else
(``hash``, mixed lengths without the extension, non-ASCII text, an element with a NUL, which
may read as UTF-16 or UTF-32) goes element by element as before. The result is exactly
``Masker.raw_all``'s; ``tests/enforce/test_whole.py`` checks that on every path.
"""

from __future__ import annotations

import struct

import numpy as np

from labelgate.enforce.strategies import Mask, Masker
from labelgate.oip import native
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decoded_bytes, fixed_width_elements

_PREFIX = struct.Struct("<I")
_STAR = ord("*")
# Below this many elements numpy's fixed cost is more than starring them one by one.
_NUMPY_MIN_COUNT = 16


def mask_whole_bytes(tensor: Tensor, mask: Mask, masker: Masker) -> Tensor:
    """``tensor`` (BYTES) with every element masked by ``mask``."""
    if mask.strategy in ("null", "redact"):
        # One element per element whatever they held: not read (a decoded tensor's are not
        # even built).
        count = tensor.size
        element = b"" if mask.strategy == "null" else mask.replacement.encode("utf-8")
        masked = tensor.with_values([element] * count)
        return masked.remember_raw((_PREFIX.pack(len(element)) + element) * count)
    if mask.strategy == "partial":
        source = tensor.raw_source()
        starred_raw = None if source is None else native.partial_all_raw(source, tensor.size, mask.keep_last)
        if starred_raw is not None:
            # Straight from the buffer the values were decoded from to the masked one: no
            # element is built on either side unless something reads them later.
            return decoded_bytes(tensor.name, list(tensor.shape), starred_raw, tensor.size)
    values = tensor.byte_elements()
    if mask.strategy == "partial":
        # The extension stars ASCII elements of any lengths and writes their raw form;
        # otherwise numpy does equal-length ASCII columns (both measured faster than the rest).
        starred = native.partial_all(values, mask.keep_last)
        if starred is None:
            starred = _partial_fixed_width(tensor.raw_form(), values, mask.keep_last)
        if starred is not None:
            return tensor.with_values(starred[0]).remember_raw(starred[1])
    return tensor.with_values(masker.raw_all(values, mask))


def _partial_fixed_width(
    raw: bytes | None, values: list[bytes], keep_last: int
) -> tuple[list[bytes], bytes] | None:
    """``partial`` over a raw buffer of equal-length ASCII elements: (values, raw), else None."""
    if raw is None or len(values) < _NUMPY_MIN_COUNT or len(set(map(len, values))) != 1:
        return None
    length = len(values[0])
    stride = 4 + length
    if len(raw) != stride * len(values):
        return None  # not the buffer these values came from: never guess
    grid = np.frombuffer(raw, dtype=np.uint8).reshape(len(values), stride)
    if length and (int(grid[:, 4:].max()) >= 0x80 or int(grid[:, 4:].min()) == 0):
        # Characters, not bytes, are kept: the general path counts them; and an element with
        # a NUL may read as UTF-16 or UTF-32, which it stars whole (``other_encodings.reads_wide``).
        return None
    hidden = length if length <= keep_last else length - keep_last
    out = grid.copy()
    out[:, 4 : 4 + hidden] = _STAR
    data = out.tobytes()
    return fixed_width_elements(data, len(values), length), data
