"""A typed reply's number values read in document order, as the bytes a client packs them in:
pure.

``message_bytes`` reads a field's values (a repeated field, one field across repeated
messages, a map's values) as a column. A client walking the reply packs what it meets as it
meets it, and a column is not all it meets (review: text went out in ``rows[i].xs`` of one
value each and of two values spanning rows, in ``rows[i].a, rows[i].b`` interleaved, in a
``Struct``'s numbers read by sorted key, in a ``Point``'s ``x, y, z, w``). So the walk
(``messages``) also notes every number value of a ``packs`` type in document order
(``DocumentOrder``): depth first, a message's fields in field-number order (``ListFields``'),
a repeated field's values in order, each value at its declared width; rows across, fields
interleaved, single values and a message's separate scalars alike. A map, and a ``Struct``
(a map of ``Value``), has no order of its own: its entries are read in the map's order, and
again by key (``integer_text.key_order``), every map of the reply at once.

Those bytes are read as one field's are (``message_bytes.read_forms``, by the tensor rules),
and a float's or a double's mantissa bytes too, each datatype's values in document order
(``mantissas``). Not read: a reading that is one field's values only (``message_bytes``
reads it), and integers that are all ASCII code points (``integer_text``'s text: one
character a separate scalar, ``Point{x: 83, y: 83, z: 78}``, is not read joined).

A hit's bytes are mapped back to the values they touch, and each touched value's field is
labelled ``<path>{<detector>}`` with a leaf for each touched value (``apply``), so masking
zeroes those values; a value inside a folded message (a map's value, an Any's contents)
labels that map or Any, as everything in it does, and masking clears it. A value only another
form of the bytes shows (without NULs, decoded: its offsets are not the bytes') spans every
value read, as it spans a whole tensor. A PEM block these bytes open covers the reply
(``messages``: every value read here then spans ``secret``).

Not failed closed here: a reading that names every detector over all the bytes (text that
cannot be folded, a terminal's cursor moved: ``message_numbers.no_cursor_cover``). Records'
small counts and the NULs above them read as UTF-32 text, and an unassigned code point or an
ESC and a letter there is chance (1 reply in 200 of rows of counts under 60 and 5,000,
measured), not text. Within one field the per-field readings still fail it closed; across
fields, a value hidden so is the residual.

Cost: one ``struct.pack`` of every value (the walk already counted each), a scan of the bytes
as ``message_bytes`` scans a field's, charged to the walk's budget as a field read as bytes
is (``message_bytes.PACKED_STEP_VALUES``, and a value per ``TEXT_BYTES_PER_VALUE`` bytes)
once per order read. Where each value lies is worked out only for a hit (``_Layout``).
Measured (classify, before -> after): statistics of 1 model 0.34 -> 0.37 ms, of 1,024 models
251 -> 260-270 ms; a config 0.22 -> 0.25 ms; 10,000 doubles in one field 1.3 ms, unchanged
(one field is not read again); 5,000 tokens (id, logprob) 27 -> 31 ms; a Struct of 2,000
numbers (read in both orders) 7.9 -> 12.5 ms.
"""

from __future__ import annotations

import bisect
import functools
import struct
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import FieldSet, LeafSpans, detector_source
from labelgate.classify.hidden_values import unfoldable_spans
from labelgate.classify.integer_text import key_order
from labelgate.classify.jsonpaths import Location
from labelgate.classify.mantissas import Form, forms
from labelgate.classify.message_bytes import PACKED_DATATYPES, PACKED_STEP_VALUES, read_forms
from labelgate.classify.message_numbers import no_cursor_cover
from labelgate.classify.message_values import TEXT_BYTES_PER_VALUE, MessageValues

# A number field's type -> its ``struct`` code (little-endian, its declared width).
_CODES: Final[dict[int, str]] = {
    FieldDescriptor.CPPTYPE_INT32: "i",
    FieldDescriptor.CPPTYPE_ENUM: "i",
    FieldDescriptor.CPPTYPE_UINT32: "I",
    FieldDescriptor.CPPTYPE_INT64: "q",
    FieldDescriptor.CPPTYPE_UINT64: "Q",
    FieldDescriptor.CPPTYPE_FLOAT: "f",
    FieldDescriptor.CPPTYPE_DOUBLE: "d",
}
# By field type (an index), a value's bytes.
_WIDTHS: Final = np.zeros(max(_CODES) + 1, dtype=np.int64)
_WIDTHS[list(_CODES)] = [struct.calcsize(code) for code in _CODES.values()]
_FLOATS: Final = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)
# Types of an order's items that are not a field's values (``DocumentOrder``).
_ENTRIES: Final = -1  # messages folded apart: ``_Entries``
_MAP: Final = -2  # a map's number values: ``_NumberMap``


class NumberRun(NamedTuple):
    """Values of one field met together in document order: a scalar's one value, a repeated
    field's values. ``location``: the field's (None inside a folded message: ``path`` then
    names the map or Any it labels); ``repeated``: a value's leaf is ``(*location, index)``."""

    location: Location | None
    path: str
    cpp_type: int
    values: Sequence[Any]
    repeated: bool

    def leaves(self, indices: Sequence[int]) -> list[Location]:
        """The leaves of the values at ``indices``."""
        if self.location is None:
            return []
        if not self.repeated:
            return [self.location]
        return [(*self.location, index) for index in indices]


class DocumentHit(NamedTuple):
    """A detection in the document-order bytes: the run it touches, which of its values."""

    run: NumberRun
    indices: tuple[int, ...]
    hit: Detection


class DocumentOrder:
    """The number values a walk meets, in its order (module docstring), an item a field (or
    folded messages, a map's values): its location (None inside a folded message), path (or
    the folded field's of the reply's own walk, ``owner``, which it labels), type, value (a
    scalar's) or values and how many (0: a scalar); ``specials``: the items that are folded
    messages or a map's values. Kept as lists, not an object an item: a reply of 40,000
    scalars made as many tuples, and the garbage collector's passes over them cost more than
    reading them (statistics of 1,024 models: 250 -> 415 ms)."""

    __slots__ = ("locations", "owner", "paths", "sizes", "specials", "types", "values")

    def __init__(self, owner: str | None = None) -> None:
        self.locations: list[Location | None] = []
        self.paths: list[str] = []
        self.types: list[int] = []
        self.values: list[Any] = []
        self.sizes: list[int] = []
        self.specials: list[int] = []
        self.owner = owner

    def add_value(self, location: Location, path: str, cpp_type: int, value: Any) -> None:
        """A scalar field's value, met now (kept only for a type read as bytes)."""
        if cpp_type in _CODES:
            self._add(location, path, cpp_type, value, 0)

    def add_values(self, location: Location, path: str, cpp_type: int, values: Sequence[Any]) -> None:
        """A repeated field's values, met now (kept only for a type read as bytes)."""
        if cpp_type in _CODES and len(values):
            self._add(location, path, cpp_type, values, len(values))

    def add_map(self, path: str, cpp_type: int, mapping: Any) -> None:
        """A map's number values, met now: they label the map."""
        if cpp_type in _CODES and len(mapping):
            keys = list(mapping)
            self._special(
                _MAP, _NumberMap(self.owner or path, cpp_type, keys, [mapping[key] for key in keys])
            )

    def fold(self, path: str, keys: list[Any] | None) -> FoldedOrder:
        """The order of messages folded at ``path`` (a map's values under ``keys``, an Any's
        contents: None), met now, for their walk to fill (``FoldedOrder.next`` before each)."""
        folded = FoldedOrder(keys, DocumentOrder(self.owner or path), [])
        self._special(_ENTRIES, folded)
        return folded

    def _special(self, kind: int, item: Any) -> None:
        self.specials.append(len(self.types))
        self._add(None, "", kind, item, 0)

    def _add(self, location: Location | None, path: str, cpp_type: int, value: Any, size: int) -> None:
        if self.owner is not None:
            location, path = None, self.owner
        self.locations.append(location)
        self.paths.append(path)
        self.types.append(cpp_type)
        self.values.append(value)
        self.sizes.append(size)

    def run(self, index: int) -> NumberRun:
        """Item ``index`` (a field's values) as a run."""
        size, value = self.sizes[index], self.values[index]
        values = value if size else (value,)
        return NumberRun(self.locations[index], self.paths[index], self.types[index], values, size > 0)


class FoldedOrder(NamedTuple):
    """Messages folded apart (a map's values under ``keys``; None: an Any's contents), all in
    ``order``, the items of each from ``starts``."""

    keys: list[Any] | None
    order: DocumentOrder
    starts: list[int]

    def next(self) -> None:
        """The next message's items follow."""
        self.starts.append(len(self.order.types))


class _NumberMap(NamedTuple):
    """A map's number values: a run of the map's path, in the map's order or by key."""

    path: str
    cpp_type: int
    keys: list[Any]
    values: list[Any]


def read_document(
    order: DocumentOrder, detectors: DetectorSet, budget: MessageValues | None = None
) -> tuple[list[DocumentHit], bool]:
    """What ``detectors`` find in the reply's number values in document order, maps in their
    order and (where some map's keys would reorder them) by key, and whether those bytes leave
    a PEM block open."""
    if not order.specials:
        return _read(order, detectors, budget)
    in_order = DocumentOrder()
    reorders = _flatten(order, 0, len(order.types), False, in_order)
    found, opens = _read(in_order, detectors, budget)
    if reorders:
        by_key = DocumentOrder()
        _flatten(order, 0, len(order.types), True, by_key)
        more, opened = _read(by_key, detectors, budget)
        found, opens = found + more, opens or opened
    return found, opens


def every_value(order: DocumentOrder, detector: Detection) -> list[DocumentHit]:
    """``detector`` over every value in ``order`` (a PEM block crosses the reply's texts)."""
    flat = DocumentOrder()
    _flatten(order, 0, len(order.types), False, flat)
    return [
        DocumentHit(run, tuple(range(len(run.values))), detector)
        for run in map(flat.run, range(len(flat.types)))
    ]


def apply(found: list[DocumentHit], fields: FieldSet, spans: list[LeafSpans]) -> None:
    """Label what ``found`` touches (module docstring): each run's field per detector, and a
    leaf a touched value, so masking zeroes it; a run in a folded message labels its field."""
    for run, indices, hit in found:
        source = detector_source(hit.detector)
        if run.location is None:
            fields.add(run.path, [hit.label], source)
            continue
        fields.add(f"{run.path}{{{hit.detector}}}", [hit.label], source)
        per_value = (Detection(hit.detector, hit.label, 0, 1),)
        spans.extend(LeafSpans(leaf, run.path, per_value) for leaf in run.leaves(indices))


def _flatten(order: DocumentOrder, start: int, end: int, by_key: bool, out: DocumentOrder) -> bool:
    """Items ``start:end`` of ``order`` into ``out`` as fields' values, folded messages' in
    place, each map's entries by key if ``by_key``; whether some map of two entries or more
    holding numbers is met (its keys may reorder them). Fields are copied as slices, and a
    map's entries holding no map by one gather: a Struct of 2,000 numbers is one fold of
    2,000 items."""
    reorders = False
    position = start
    specials = order.specials
    for index in specials[bisect.bisect_left(specials, start) : bisect.bisect_left(specials, end)]:
        _copy(order, range(position, index), out)
        position = index + 1
        item = order.values[index]
        if isinstance(item, _NumberMap):
            reorders = reorders or len(item.keys) > 1
            values = [item.values[at] for at in _by_key(item.keys)] if by_key else item.values
            out._add(None, item.path, item.cpp_type, values, len(values))
            continue
        inner, bounds = item.order, [*item.starts, len(item.order.types)]
        if item.keys is not None:
            # Entries holding no number (a config's string parameters) reorder nothing.
            reorders = reorders or len(set(bounds)) > 2
        if not by_key or item.keys is None:
            reorders = _flatten(inner, 0, len(inner.types), by_key, out) or reorders
            continue
        entries = [(bounds[at], bounds[at + 1]) for at in _by_key(item.keys)]
        if inner.specials:
            for first, last in entries:
                reorders = _flatten(inner, first, last, by_key, out) or reorders
        else:
            _copy(inner, [at for first, last in entries for at in range(first, last)], out)
    _copy(order, range(position, end), out)
    return reorders


def _copy(order: DocumentOrder, items: Sequence[int], out: DocumentOrder) -> None:
    """Items ``items`` of ``order`` (fields' values) onto ``out``, in that order."""
    if not items:
        return
    if isinstance(items, range):
        picked = slice(items.start, items.stop)
        out.locations += order.locations[picked]
        out.paths += order.paths[picked]
        out.types += order.types[picked]
        out.values += order.values[picked]
        out.sizes += order.sizes[picked]
        return
    out.locations += map(order.locations.__getitem__, items)
    out.paths += map(order.paths.__getitem__, items)
    out.types += map(order.types.__getitem__, items)
    out.values += map(order.values.__getitem__, items)
    out.sizes += map(order.sizes.__getitem__, items)


def _by_key(keys: list[Any]) -> list[int]:
    """The positions of ``keys`` in key order (``integer_text.key_order``)."""
    ranks = list(map(key_order, keys))
    return sorted(range(len(keys)), key=ranks.__getitem__)


def _read(
    order: DocumentOrder, detectors: DetectorSet, budget: MessageValues | None
) -> tuple[list[DocumentHit], bool]:
    """What ``detectors`` find in the values of ``order`` (fields' only: ``_flatten``) packed
    one after another; nothing for fewer than two fields (one field's values:
    ``message_bytes`` reads them). Where each value lies is worked out only as needed
    (``_Layout``): an ordinary reply's integers need none of it."""
    types, sizes = order.types, order.sizes
    if len(types) < 2:
        return [], False
    flat = order.values
    if any(sizes):
        flat = []
        for value, size in zip(order.values, sizes, strict=True):
            if size:
                flat.extend(value)
            else:
                flat.append(value)
    codes = [
        _CODES[cpp_type] if size == 0 else f"{size}{_CODES[cpp_type]}"
        for cpp_type, size in zip(types, sizes, strict=True)
    ]
    try:
        data = struct.pack("<" + "".join(codes), *flat)
    except (struct.error, TypeError):  # no numbers (never from protobuf): anything, fail closed
        spans = unfoldable_spans(1, detectors)
        return [
            DocumentHit(order.run(index), tuple(range(size or 1)), hit)
            for index, size in enumerate(sizes)
            for hit in spans
        ], False
    layout = _Layout(order)
    read: list[tuple[Form, np.ndarray[Any, Any] | None]] = []  # (form, its values' indices; None: bytes)
    floats = [cpp_type for cpp_type in _FLOATS if cpp_type in types]
    if floats or not _code_points(data, layout):
        read.append((Form(data, 1, whole=True), None))
    for cpp_type in floats:
        if types.count(cpp_type) < 2:
            continue  # one field's: read with it (``message_bytes``)
        indices = np.flatnonzero(layout.kinds == cpp_type)
        size = int(_WIDTHS[cpp_type])
        picked = np.frombuffer(data, dtype=np.uint8)[
            (layout.starts[indices][:, None] + np.arange(size)).ravel()
        ]
        read += [(form, indices) for form in forms(PACKED_DATATYPES[cpp_type], picked.tobytes())]
    if not read:
        return [], False
    if budget is not None:
        budget.take(PACKED_STEP_VALUES + sum(len(form.data) for form, _ in read) // TEXT_BYTES_PER_VALUE)
    results = read_forms([(slot, form) for slot, (form, _) in enumerate(read)], len(read), detectors, budget)
    found: list[DocumentHit] = []
    for (form, picked_at), (hits, _) in zip(read, results, strict=True):
        # Every detector over every value: an unfoldable reading, a cursor moved, chance in
        # records' numbers as ``no_cursor_cover`` says, not text (module docstring).
        for hit in no_cursor_cover(hits, len(form.data) if picked_at is None else len(picked_at), detectors):
            if picked_at is None:  # offsets bytes
                first, last = np.searchsorted(layout.ends, [hit.start, hit.end - 1], "right")
                touched = np.arange(first, last + 1)
            else:
                touched = picked_at[hit.start : hit.end]
            found += _by_run(order, layout.run_ends, touched, hit)
    return found, any(opens for _, opens in results)


class _Layout:
    """Where the values of an order's fields lie, worked out when first asked: each field's
    count (``counts``), the index past its last value (``run_ends``), and by value its type
    (``kinds``) and the bytes it starts and ends at (``starts``, ``ends``)."""

    def __init__(self, order: DocumentOrder) -> None:
        self.order = order

    @functools.cached_property
    def counts(self) -> np.ndarray[Any, Any]:
        counts = np.array(self.order.sizes)
        counts[counts == 0] = 1
        return counts

    @functools.cached_property
    def run_ends(self) -> np.ndarray[Any, Any]:
        return np.cumsum(self.counts)

    @functools.cached_property
    def kinds(self) -> np.ndarray[Any, Any]:
        return np.repeat(np.array(self.order.types), self.counts)

    @functools.cached_property
    def ends(self) -> np.ndarray[Any, Any]:
        return np.cumsum(_WIDTHS[self.kinds])

    @functools.cached_property
    def starts(self) -> np.ndarray[Any, Any]:
        starts: np.ndarray[Any, Any] = self.ends - _WIDTHS[self.kinds]
        return starts


def _by_run(
    order: DocumentOrder, run_ends: np.ndarray[Any, Any], touched: np.ndarray[Any, Any], hit: Detection
) -> list[DocumentHit]:
    """``hit`` on the values at ``touched`` (indices over every field's), by field."""
    owners = np.searchsorted(run_ends, touched, "right")
    found = []
    for owner in np.unique(owners).tolist():
        first = int(run_ends[owner]) - (order.sizes[owner] or 1)
        indices = tuple((touched[owners == owner] - first).tolist())
        found.append(DocumentHit(order.run(owner), indices, hit))
    return found


def _code_points(data: bytes, layout: _Layout) -> bool:
    """Whether every value (integers' bytes ``data``, laid out as ``layout`` says) is an ASCII
    code point: ``integer_text``'s text, NULs between (module docstring)."""
    if not data.isascii():
        return False
    return len(data) - data.count(0) == int(
        np.count_nonzero(np.frombuffer(data, dtype=np.uint8)[layout.starts])
    )
