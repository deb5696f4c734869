"""A protobuf message's number fields read as the raw bytes a client gets back (``messages``):
pure.

A client reads a ``repeated double`` back with ``np.array(reply.xs, "<f8").tobytes()`` as
readily as an FP64 tensor's raw bytes, so text an upstream packs into a number field's values
reaches it as text packed into a tensor does (found by review: an SSN and a card in the bytes
of ``repeated double``, ``float``, ``fixed64``, ``fixed32``, ``sfixed64`` went out unmasked).
The wire's encoding (varint, zigzag, fixed) does not matter: the client gets the values, and
packs them back in their declared width (``PACKED_DATATYPES``). So the values are read as a
tensor of that datatype is (``numbers.packed_detections``): bytes that read as text as an
8-bit tensor's are, binary data (embeddings, ids) raw and with its control characters
dropped, ``ip_address`` and ``email`` counting there from 16 bytes only. Integers that are all
ASCII code points are the text ``integer_text`` reads, and not read again.

A float's or a double's mantissa holds whole bytes whatever its exponent (a NaN's payload
does too): a double carries 6 a value, a float 2 (``MANTISSA_BYTES``), which a client reads
as the first bytes of each value's ``tobytes()``. Those bytes, one value's after the other's,
are read the same way. (Tensors' FP32 and FP64 outputs are not read so: ``numbers``.)

Which values are read is the walk's (``messages``): a repeated field's, one field's across
the elements of repeated messages (``rows[].x``), a map's number values in the map's order and
in its keys'; two at least. One value (a scalar, a list of one) is 8 bytes at most, and a
message's separate fields are not read joined, as a reply's outputs are not.

Cost: the fields of a walk are read together (``read_fields``), the binary ones in one native
scan; whether bytes are binary is told without decoding them where a lower bound on what a
decoder replaces says so (``_surely_binary``: 64 KB of floats decode in 2.5 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify import credentials
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import CONTROLS
from labelgate.classify.hidden_values import uncovered, unfoldable_spans
from labelgate.classify.key_blocks import SECRET, names_secret, opens_key_block
from labelgate.classify.message_values import TEXT_BYTES_PER_VALUE, MessageValues

# ``numbers``' own rules, not copies: the reading must stay the one tensors get.
from labelgate.classify.numbers import (
    _SAMPLE,
    _STRAY,
    _characters_only,
    _kept,
    _reads_as_text,
    packed_detections,
    packed_item_size,
    packed_reading,
)
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import RAW_DTYPES

# A number field's type -> the tensor datatype of its declared width (bools are not read:
# a byte each, 0 or 1).
PACKED_DATATYPES: Final[dict[int, str]] = {
    FieldDescriptor.CPPTYPE_INT32: "INT32",
    FieldDescriptor.CPPTYPE_ENUM: "INT32",
    FieldDescriptor.CPPTYPE_UINT32: "UINT32",
    FieldDescriptor.CPPTYPE_INT64: "INT64",
    FieldDescriptor.CPPTYPE_UINT64: "UINT64",
    FieldDescriptor.CPPTYPE_FLOAT: "FP32",
    FieldDescriptor.CPPTYPE_DOUBLE: "FP64",
}
# The whole bytes of a float's and a double's mantissa: the first of its little-endian ones.
MANTISSA_BYTES: Final[dict[int, int]] = {FieldDescriptor.CPPTYPE_FLOAT: 2, FieldDescriptor.CPPTYPE_DOUBLE: 6}
# What reading a field's values as bytes counts for against ``max_values``
# (``message_values``), beyond the values themselves: a step of PACKED_STEP_VALUES (its
# setup, 5-8 µs for a few values: the scan is shared), and its bytes, mantissas' too, a value
# per ``TEXT_BYTES_PER_VALUE`` (binary scans at about 13 ns a byte, measured: 10,000 doubles
# and their mantissas, 140 KB, in 1.8 ms); bytes that read as text are charged again as
# scanned text is (``read_fields``: decoded and folded, they cost more).
PACKED_STEP_VALUES: Final = 4
# Mantissa bytes are read as a 16-bit float tensor's bytes are: ``packed_detections`` reads
# that datatype's bytes in no other way (no ``characters`` text to leave them to, no digits).
_BYTES_DATATYPE: Final = "FP16"
_DTYPES: Final = {cpp_type: np.dtype(RAW_DTYPES[datatype]) for cpp_type, datatype in PACKED_DATATYPES.items()}
# Bytes no UTF-8 sequence holds (each decodes to a replacement character of its own), and
# continuation bytes (one right after an ASCII byte is such a character too).
_NEVER_UTF8: Final = np.zeros(256, dtype=bool)
_NEVER_UTF8[[0xC0, 0xC1, *range(0xF5, 0x100)]] = True
# Below this many bytes, decoding to tell costs less than the bound's numpy calls.
_BOUND_FROM: Final = 512


class PackedRead(NamedTuple):
    """What reading a field's values as bytes found (offsets are values), and whether those
    bytes leave a PEM block open (``key_blocks``: it covers the reply's other texts)."""

    found: list[Detection]
    opens: bool


def packs(cpp_type: int) -> bool:
    """Whether values of a field of ``cpp_type`` are read as bytes."""
    return cpp_type in PACKED_DATATYPES


def packed_cost(cpp_type: int, count: int) -> int:
    """What reading ``count`` values of a field of ``cpp_type`` as bytes counts for
    (``PACKED_STEP_VALUES``), unless they are ASCII code points (not read: ``read_fields``)."""
    size = (_DTYPES[cpp_type].itemsize + MANTISSA_BYTES.get(cpp_type, 0)) * count
    return PACKED_STEP_VALUES + size // TEXT_BYTES_PER_VALUE


def read_fields(
    fields: Sequence[tuple[int, Any]], detectors: DetectorSet, budget: MessageValues | None = None
) -> list[PackedRead]:
    """What ``detectors`` find in each field's values (of a ``packs`` type) as a client's
    ``tobytes()`` of them, and in a float's or a double's mantissa bytes (module docstring),
    by field. Bytes that read as text are read as ``numbers.packed_detections`` reads them;
    binary ones as it reads them too (raw, and without control characters), all in one scan.
    Integers that are all ASCII code points are not read (``numbers`` leaves them to
    ``characters``, as ``messages`` leaves them to ``integer_text``). ``budget``: each field
    read is charged to it first (``packed_cost``), and bytes that read as text again as
    scanned text is (``MessageValues.take_text``: decoded and folded, they cost more)."""
    found: list[list[Detection]] = [[] for _ in fields]
    opens = [False] * len(fields)
    binary: list[tuple[int, bytes, int]] = []  # (field, bytes, bytes a value)
    for index, (cpp_type, values) in enumerate(fields):
        pieces = _pieces(cpp_type, values)
        if pieces is None:  # no numbers (never from protobuf): anything, fail closed
            found[index] = unfoldable_spans(len(values), detectors)
            continue
        if cpp_type not in MANTISSA_BYTES and _characters_only(pieces[0][1], pieces[0][2]):
            continue
        if budget is not None:
            budget.take(packed_cost(cpp_type, len(values)))
        for datatype, data, per_value in pieces:
            if _surely_binary(data) or not _reads_as_text(data):
                binary.append((index, data, per_value))
                continue
            if budget is not None:
                budget.take_text(data)
            tensor = _tensor(datatype, data)
            hits = packed_detections(tensor, detectors)
            found[index] += [_in_values(hit, packed_item_size(datatype), per_value) for hit in hits]
            opens[index] = opens[index] or (_secret(hits, detectors) and _text_opens(tensor))
    if binary:
        # Bytes without control characters scanned only where there were some to drop.
        shown = [data.translate(None, CONTROLS) for _, data, _ in binary]
        texts = [
            text
            for (_, data, _), without in zip(binary, shown, strict=True)
            for text in (data, b"" if without == data else without)
        ]
        scanned = detectors.scan_each(texts)
        for position in sorted({text // 2 for text in scanned}):  # usually none
            index, data, per_value = binary[position]
            hits = _binary_hits(data, scanned.get(2 * position, []), scanned.get(2 * position + 1, []))
            found[index] += [_in_values(hit, 1, per_value) for hit in hits]
            opens[index] = opens[index] or (_secret(hits, detectors) and _binary_opens(data, shown[position]))
    return [PackedRead(list(dict.fromkeys(hits)), opened) for hits, opened in zip(found, opens, strict=True)]


def _pieces(cpp_type: int, values: Any) -> list[tuple[str, bytes, int]] | None:
    """The bytes read of ``values``: (datatype read as, bytes, bytes a value), or None when
    they are no numbers."""
    try:
        array = np.array(values, dtype=_DTYPES[cpp_type])
    except (OverflowError, TypeError, ValueError):
        return None
    pieces = [(PACKED_DATATYPES[cpp_type], array.tobytes(), array.itemsize)]
    width = MANTISSA_BYTES.get(cpp_type)
    if width is not None and len(array):
        mantissas = array.view(np.uint8).reshape(len(array), -1)[:, :width].tobytes()
        pieces.append((_BYTES_DATATYPE, mantissas, width))
    return pieces


def _binary_hits(data: bytes, raw: list[Detection], shown: list[Detection]) -> list[Detection]:
    """Binary bytes' detections as ``numbers.packed_detections`` makes them: those found in the
    bytes (``ip_address`` and ``email`` from ``_LOOSE_SHORTEST`` bytes), and a value only the
    bytes without control characters show spanning them whole. Offsets are bytes."""
    hits = _kept(raw)
    named = uncovered(_kept(shown), hits, len(data), None)
    return [*hits, *(Detection(name, label, 0, len(data)) for name, label in sorted(named.items()))]


def _surely_binary(data: bytes) -> bool:
    """Whether ``data`` does not read as text (``numbers``: once its NULs are dropped, more
    than one in ``_STRAY`` of its first ``_SAMPLE`` bytes decodes to a replacement character),
    told by a lower bound on those characters: bytes UTF-8 never holds, and continuation
    bytes right after an ASCII one (each one such character; the decoded text is no longer
    than the bytes). False: not known (then ``numbers._reads_as_text`` decodes them)."""
    if len(data) < _BOUND_FROM:
        return False
    head = np.frombuffer(data.translate(None, b"\0")[:_SAMPLE], dtype=np.uint8)
    if len(head) < _BOUND_FROM:
        return False
    lone = ((head[1:] & 0xC0) == 0x80) & (head[:-1] < 0x80)
    replaced = int(np.count_nonzero(_NEVER_UTF8[head])) + int(np.count_nonzero(lone))
    return replaced * _STRAY > len(head)


def _tensor(datatype: str, data: bytes) -> Tensor:
    count = len(data) // packed_item_size(datatype)
    return Tensor.decoded("", datatype, [count], data, count, _unread)


def _unread() -> list[Any]:
    # ``packed_detections`` reads a tensor whose raw form is whole by that form alone.
    raise AssertionError("a number field's bytes are read by their raw form")


def _in_values(hit: Detection, size: int, per_value: int) -> Detection:
    """``hit`` (offsets in pieces of ``size`` bytes) with offsets in values of ``per_value`` bytes."""
    if size == per_value:
        return hit
    return hit._replace(start=hit.start * size // per_value, end=-(-hit.end * size // per_value))


def _secret(hits: list[Detection], detectors: DetectorSet) -> bool:
    return SECRET in detectors.names and names_secret(hits)


def _binary_opens(data: bytes, shown: bytes) -> bool:
    """Whether binary bytes, raw or without control characters, open a PEM block they do not
    close: asked only when ``secret`` found something there."""
    return any(credentials.open_pem(form) is not None for form in (data, shown))


def _text_opens(tensor: Tensor) -> bool:
    """Whether bytes that read as text, in a form the scan read them in, open a PEM block they
    do not close: asked only when ``secret`` found something there."""
    reading = packed_reading(tensor)
    if reading is None:
        return False
    data = reading[0]
    return any(opens_key_block(form) for form in dict.fromkeys((data, data.translate(None, CONTROLS))))
