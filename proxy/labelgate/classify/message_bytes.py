"""A protobuf message's number fields read as the raw bytes a client gets back (``messages``):
pure.

A client reads a ``repeated double`` back with ``np.array(reply.xs, "<f8").tobytes()`` as
readily as an FP64 tensor's raw bytes, so text an upstream packs into a number field's values
reaches it as text packed into a tensor does (found by review: an SSN and a card in the bytes
of ``repeated double``, ``float``, ``fixed64``, ``fixed32``, ``sfixed64`` went out unmasked).
The wire's encoding (varint, zigzag, fixed) does not matter: the client gets the values, and
packs them back in their declared width (``PACKED_DATATYPES``). So the values are read as a
tensor of that datatype is (``numbers.form_detections``): bytes that read as text as an
8-bit tensor's are, binary data (embeddings, ids) raw and with its control characters
dropped, ``ip_address`` and ``email`` counting there from 16 bytes only. Integers that are all
ASCII code points are the text ``integer_text`` reads, and not read again.

A float's or a double's mantissa holds whole bytes whatever its exponent (a NaN's payload
does too): a double carries 6 a value, a float 2, and all but its top byte (7, 3) when finite,
which a client reads as the first bytes of each value's ``tobytes()``. Those bytes, one
value's after the other's, are read as tensors' FP32 and FP64 outputs' are
(``classify.mantissas``, ``numbers.form_detections``).

Which values are read is the walk's (``messages``): a repeated field's, one field's across
the elements of repeated messages (``rows[].x``), a map's number values in the map's order and
in its keys'; two at least. Every value of the reply, in the order a client walking it packs
them (single values, separate scalars, rows across), is read so too (``message_order``, which
reads its bytes here: ``read_forms``). One field across repeated messages is records' numbers:
there every detector over every value (UTF-32 text that cannot be folded, a cursor moved) is
chance and dropped (``read_packed``), as it is when they are read as characters.

Cost: the fields of a walk are read together (``read_fields``), the binary ones in one native
scan; whether bytes are binary is told without decoding them where a lower bound on what a
decoder replaces says so (``numbers._surely_binary``: 64 KB of floats decode in 2.5 ms).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify import credentials
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import CONTROLS
from labelgate.classify.hidden_values import unfoldable_spans
from labelgate.classify.jsonpaths import Location
from labelgate.classify.key_blocks import SECRET, names_secret, opens_key_block
from labelgate.classify.mantissas import DATATYPES as MANTISSA_DATATYPES
from labelgate.classify.mantissas import Form, forms, in_values, per_value
from labelgate.classify.message_numbers import no_cursor_cover
from labelgate.classify.message_values import TEXT_BYTES_PER_VALUE, MessageValues

# ``numbers``' own rules, not copies: the reading must stay the one tensors get.
from labelgate.classify.numbers import (
    _characters_only,
    binary_form_detections,
    form_detections,
    form_reads_as_text,
)
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
# What reading a field's values as bytes counts for against ``max_values``
# (``message_values``), beyond the values themselves: a step of PACKED_STEP_VALUES (its
# setup, 5-8 µs for a few values: the scan is shared), and its bytes, mantissas' too, a value
# per ``TEXT_BYTES_PER_VALUE`` (binary scans at about 13 ns a byte, measured: 10,000 doubles
# and their 6-byte mantissas, 140 KB, in 1.8 ms; with their 7 low bytes too, 210 KB); bytes
# that read as text are charged again as
# scanned text is (``read_fields``: decoded and folded, they cost more).
PACKED_STEP_VALUES: Final = 4
_DTYPES: Final = {cpp_type: np.dtype(RAW_DTYPES[datatype]) for cpp_type, datatype in PACKED_DATATYPES.items()}


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
    size = (_DTYPES[cpp_type].itemsize + per_value(PACKED_DATATYPES[cpp_type])) * count
    return PACKED_STEP_VALUES + size // TEXT_BYTES_PER_VALUE


# A walk's fields read as bytes: (location, item path, field type, values); its maps': (path,
# field type, values in each order); and what was found by field: location -> (item path,
# value count, hits) (``messages``).
WalkFields = Sequence[tuple[Location, str, int, Any]]
FoundInFields = dict[Location, tuple[str, int, list[Detection]]]


def read_packed(
    fields: WalkFields,
    maps: Sequence[tuple[str, int, list[list[Any]]]],
    detectors: DetectorSet,
    budget: MessageValues | None = None,
    records: Collection[Location] = (),
) -> tuple[FoundInFields, list[tuple[str, list[Detection]]], bool]:
    """What ``detectors`` find in a walk's number fields and maps read as their bytes, in one
    reading (``read_fields``): by field; per map, its path and hits; and whether some field's
    bytes leave a PEM block open. ``records``: the fields that are one field across repeated
    messages (``rows[].x``), where every detector over every value is chance, not text
    (``message_numbers.no_cursor_cover``: statistics' counts and the NULs above them read as
    UTF-32 text that cannot be folded, 15 of 400 replies of twelve models or fewer, measured)."""
    if not (fields or maps):
        return {}, [], False
    in_orders = [(path, cpp_type, values) for path, cpp_type, orders in maps for values in orders]
    read = read_fields(
        [(cpp_type, values) for _, _, cpp_type, values in fields]
        + [(cpp_type, values) for _, cpp_type, values in in_orders],
        detectors,
        budget,
    )
    found: FoundInFields = {}
    for (location, path, _, values), (hits, _) in zip(fields, read, strict=False):
        if hits and location in records:
            hits = no_cursor_cover(hits, len(values), detectors)
        if hits:
            found[location] = (path, len(values), hits)
    in_maps = [
        (path, hits) for (path, _, _), (hits, _) in zip(in_orders, read[len(fields) :], strict=True) if hits
    ]
    return found, in_maps, any(opens for _, opens in read)


def cover_packed(fields: WalkFields, label: str, found: FoundInFields) -> None:
    """Every field of ``fields`` spans ``secret`` (of ``label``) whole, in ``found`` (a PEM block
    crosses the reply's texts: ``messages``); maps are labelled so apart."""
    for location, path, _, values in fields:
        found.setdefault(location, (path, len(values), []))[2].append(
            Detection(SECRET, label, 0, len(values))
        )


def read_fields(
    fields: Sequence[tuple[int, Any]], detectors: DetectorSet, budget: MessageValues | None = None
) -> list[PackedRead]:
    """What ``detectors`` find in each field's values (of a ``packs`` type) as a client's
    ``tobytes()`` of them, and in a float's or a double's mantissa bytes (module docstring),
    by field. Bytes that read as text are read as ``numbers.form_detections`` reads them;
    binary ones as it reads them too (raw, and without control characters), all in one scan.
    Integers that are all ASCII code points are not read (``numbers`` leaves them to
    ``characters``, as ``messages`` leaves them to ``integer_text``). ``budget``: each field
    read is charged to it first (``packed_cost``), and bytes that read as text again as
    scanned text is (``MessageValues.take_text``: decoded and folded, they cost more)."""
    failed: dict[int, list[Detection]] = {}
    read: list[tuple[int, Form]] = []  # (field, bytes read)
    for index, (cpp_type, values) in enumerate(fields):
        pieces = _pieces(cpp_type, values)
        if pieces is None:  # no numbers (never from protobuf): anything, fail closed
            failed[index] = unfoldable_spans(len(values), detectors)
            continue
        raw = pieces[0]
        if PACKED_DATATYPES[cpp_type] not in MANTISSA_DATATYPES and _characters_only(raw.data, raw.per_value):
            continue
        if budget is not None:
            budget.take(packed_cost(cpp_type, len(values)))
        read += [(index, form) for form in pieces]
    results = read_forms(read, len(fields), detectors, budget)
    for index, hits in failed.items():
        results[index] = PackedRead(hits, False)
    return results


def read_forms(
    forms: Sequence[tuple[int, Form]], slots: int, detectors: DetectorSet, budget: MessageValues | None = None
) -> list[PackedRead]:
    """What ``detectors`` find in numbers' bytes read in ``forms`` ((slot, form): a field's
    raw bytes, mantissas' bytes, a reply's values in document order: ``message_order``), by
    slot of ``slots``, offsets values of the form. Bytes that read as text are read as
    ``numbers.form_detections`` reads them, charged to ``budget`` as scanned text is; binary
    ones as it reads them too (raw, and without control characters), all in one scan."""
    found: list[list[Detection]] = [[] for _ in range(slots)]
    opens = [False] * slots
    binary: list[tuple[int, Form]] = []
    for index, form in forms:
        if not form_reads_as_text(form):
            binary.append((index, form))
            continue
        if budget is not None:
            budget.take_text(form.data)
        hits = form_detections([form], detectors)  # offsets values
        found[index] += hits
        opens[index] = opens[index] or (_secret(hits, detectors) and _text_opens(form.data))
    if binary:
        scanned = binary_form_detections([form for _, form in binary], detectors)
        for (index, form), hits in zip(binary, scanned, strict=True):
            if not hits:
                continue  # the usual answer
            found[index] += [_in_values(hit, form.per_value) for hit in hits]
            opens[index] = opens[index] or (_secret(hits, detectors) and _binary_opens(form.data))
    return [PackedRead(list(dict.fromkeys(hits)), opened) for hits, opened in zip(found, opens, strict=True)]


def _pieces(cpp_type: int, values: Any) -> list[Form] | None:
    """The bytes read of ``values``: their raw bytes first, then a float's or a double's
    mantissa bytes (``mantissas.forms``); None when they are no numbers."""
    try:
        array = np.array(values, dtype=_DTYPES[cpp_type])
    except (OverflowError, TypeError, ValueError):
        return None
    data = array.tobytes()
    return [Form(data, array.itemsize, whole=True), *forms(PACKED_DATATYPES[cpp_type], data)]


def _in_values(hit: Detection, per_value: int) -> Detection:
    """``hit`` (offsets bytes of a form of ``per_value`` bytes a value) with offsets values."""
    start, end = in_values(hit.start, hit.end, per_value)
    return hit._replace(start=start, end=end)


def _secret(hits: list[Detection], detectors: DetectorSet) -> bool:
    return SECRET in detectors.names and names_secret(hits)


def _binary_opens(data: bytes) -> bool:
    """Whether binary bytes, raw or without control characters, open a PEM block they do not
    close: asked only when ``secret`` found something there."""
    return any(credentials.open_pem(form) is not None for form in (data, data.translate(None, CONTROLS)))


def _text_opens(data: bytes) -> bool:
    """Whether bytes that read as text, as written or without control characters (forms the
    scan read them in), open a PEM block they do not close: asked only when ``secret`` found
    something there."""
    return any(opens_key_block(form) for form in dict.fromkeys((data, data.translate(None, CONTROLS))))
