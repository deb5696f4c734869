"""Classification of generic (non-inference) protobuf messages, by descriptor: pure.

Paths name fields from the message root: ``name``, ``contact.email``, ``items[].ssn``;
``[]`` follows a repeated field (``tags[]`` for repeated scalars). Only fields that are
present (``ListFields``) are data and get a field. Extensions are not walked: release
strips them (``without_extensions``), from an Any's contents too (``unpacked_any``).

Labels per field: the ``(labelgate.v1.labels)`` field option and catalog entries whose
``message`` is the root message's full name (path from the root) or a nested message
type's full name (path from that message), both with source ``catalog``: the option is a
catalog entry that travels with the proto. Scalar fields nobody labels get the default
label. String and bytes fields are scanned: a detector that fires adds ``<path>{<detector>}``
with its label, and its spans are kept for masking, as for text tensors. So are numbers
(integers, enums, doubles and floats; wrapper types and ``Struct`` numbers are such fields),
as their decimal digits (``jsonpaths.scannable``, as a number in a tensor, a JSON reply or a
released parameter is read): a card in an ``int64`` is a card. Enforcement zeroes a number
found to hold something; it never rewrites part of one. Only numbers a detector could
fire on are scanned (``smallest_scanned``), so ordinary numbers cost no scan.

A repeated integer field is also read as text, a character a value, as a client reads it back
with ``chr`` (``integer_text``): what is found adds ``<path>[]{<detector>}``, and a leaf for
every value of the field, so masking zeroes them all, as it zeroes a whole tensor (part of
such a text zeroed would leave NULs, which a reader drops, between the rest). It is read as
digits too, its values one after another as a caller prints them (``digit_runs``: run
together, and joined by a space, a hyphen and a comma, as an inference reply's shape is):
``dims: [123, 45, 6789]`` is an SSN, ``[4111, 1111, 1111, 1111]`` a card; what that finds is
labelled and masked the same way. A map's integer values are read both ways too, in the
map's order and in its keys' order, labelling the map.

A float or double field of whole numbers is read so too, wherever an integer field is
(``message_numbers``: which lists hold whole numbers, and why).

Every repeated number field (integers of 32 and 64 bits, enums, floats, doubles: not bools),
one across repeated messages (``rows[].x``) and a map's number values (in both orders) are
also read as the little-endian bytes a client packs them back in (``np.array(xs,
"<f8").tobytes()``), as a tensor's raw bytes are, and floats' and doubles' mantissa bytes (a
NaN's payload) too (``message_bytes``): what is found adds ``<path>[]{<detector>}`` and a leaf
for every value (a map: labels the map), so masking zeroes them all, and no byte is left.
Every number value of the reply is also read so in document order, as a client walking the
reply packs what it meets (``message_order``: rows across, fields interleaved, single values
and separate scalars; maps in their order and by key): a hit labels ``<path>{<detector>}`` of
each field it touches, with a leaf for each touched value (a folded message's: its map or Any).

So is an integer field of a repeated message, one value an element: ``chars[].c`` of
``repeated Char chars`` (``Char { int32 c; }``) reads back as text as ``repeated int32`` does.
Its values, across the elements in order (at any depth of repeated messages: ``a[].b[].c``,
``a[].b.c``), are read as characters as one field's values are: what is found adds
``<path>{<detector>}`` and a leaf for every value (``chars[].c`` of each element), so masking
zeroes them all. A map's message values are read so too (``attrs{}.c``, in the map's order
only), labelling the map. Not as digit runs: records of counts joined read as cards too often
(``_read_digit_runs``), so a value split over such numbers (``[4111, 1111, 1111, 1111]`` as
four records' ids) is not found.

A PEM private key is the one value that spans texts (``key_blocks``): a text that opens a
block it does not close makes every text of the whole reply, in every pass and every folded
message, count as found by ``secret`` (fail closed): each string, bytes or scanned number
spans ``secret`` whole, each integer field (read as characters or not) and each field
read as bytes gets ``<path>[]{secret}`` (so its values are all zeroed), and each map and
folded field is labelled so; a block a field's bytes open is such a block. A text that
cannot be folded spans every detector whole, and is read for a BEGIN marker as it is and
decoded, as a tensor's elements are.

Some fields are one field whose contents label it, and masking it clears it:

- a map (``attrs``): its keys and string or bytes values are scanned, and message values
  are walked as nested messages would be (from the value type's own labels and catalog
  entries, and the root's under ``attrs{}.``);
- a ``google.protobuf.Any``: its packed message, found by its type URL in the message's
  descriptor pool, is walked the same way, and catalog entries naming the Any's own fields
  (``payload.value``) label it too. Release re-encodes it from what was parsed (fields the
  type does not know dropped, each field written once), so its bytes are what was
  classified. An Any whose type is not in the pool, or that does not parse, cannot be
  re-encoded: it fails closed, ``restricted`` (source ``catalog:fail_closed:<reason>``),
  since nothing else can say what it holds. An Any that packs an Any is read through to
  the message at the end. A reply that is itself an Any is one such field, ``value``
  (``ANY_REPLY_FIELD``): masking it clears the reply.

A reply nested deeper than ``MAX_MESSAGE_DEPTH`` is refused (``MESSAGE_TOO_DEEP``):
protobuf's ``DiscardUnknownFields``, which release relies on, stops at about 60 levels.
The walk runs in Python, a step per value, on the gateway's event loop: given ``max_values``,
it counts what it comes to and what it scans before looking at it, and refuses a reply
holding more (``MESSAGE_TOO_MANY_VALUES``, ``message_values``).

Moved apart: what a walk may cost (``message_values``); how a field is read off its
descriptor, and extensions stripped (``message_fields``); which numbers are scanned and how
integers are read as digit runs and as characters (``message_numbers``); and number fields
read as their bytes (``message_bytes``), and in document order (``message_order``). What
stays here is the walk itself (``_Walker``, whose lookups tests patch here) and reading an Any.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate.classify import reasons
from labelgate.classify.catalog import Catalog
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import (
    SOURCE_CATALOG,
    Classification,
    FieldSet,
    LeafSpans,
    detector_source,
    fail_closed_source,
)
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.integer_text import (
    FLOAT_CPP_TYPES,
    CharacterRead,
    character_array,
    character_hits,
    key_order,
    worth_reading,
)
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import Location, may_escape, scannable
from labelgate.classify.key_blocks import SECRET, crosses_texts
from labelgate.classify.labels import LABELS, check_default_label
from labelgate.classify.message_bytes import cover_packed, packs, read_packed
from labelgate.classify.message_fields import (
    FIELD_LABELS_INVALID,
    is_map,
    is_message,
    message_type_of,
    option_labels,
    without_extensions,
)
from labelgate.classify.message_numbers import (
    RUN_DIGITS,
    RUN_SEPARATORS,
    across_values,
    as_integers,
    digit_runs,
    large_numbers,
    may_be_integers,
    no_cursor_cover,
    number_types,
    smallest_scanned,
)
from labelgate.classify.message_order import DocumentOrder, apply, every_value, read_document
from labelgate.classify.message_values import (
    COLONS_PER_VALUE,
    DECODED_TEXT_WEIGHT,
    DETECTION_VALUES,
    FIXED_STEP_VALUES,
    MAP_STEP_VALUES,
    MESSAGE_TOO_MANY_VALUES,
    TEXT_BYTES_PER_VALUE,
    MessageValues,
)
from labelgate.errors import UpstreamError

__all__ = [
    "ANY_REPLY_FIELD",
    "ANY_TYPE",
    "COLONS_PER_VALUE",
    "DECODED_TEXT_WEIGHT",
    "DETECTION_VALUES",
    "FIELD_LABELS_INVALID",
    "FIXED_STEP_VALUES",
    "MAP_STEP_VALUES",
    "MAX_MESSAGE_DEPTH",
    "MESSAGE_STRING_INVALID",
    "MESSAGE_TOO_DEEP",
    "MESSAGE_TOO_MANY_VALUES",
    "RUN_DIGITS",
    "RUN_SEPARATORS",
    "TEXT_BYTES_PER_VALUE",
    "MessageValues",
    "classify_message",
    "digit_runs",
    "is_map",
    "is_message",
    "message_type_of",
    "no_cursor_cover",
    "option_labels",
    "smallest_scanned",
    "unpacked_any",
    "without_extensions",
]

MESSAGE_TOO_DEEP = reasons.MESSAGE_TOO_DEEP
MESSAGE_STRING_INVALID = reasons.MESSAGE_STRING_INVALID

# Well under the ~60 levels protobuf's DiscardUnknownFields reaches (see the docstring).
MAX_MESSAGE_DEPTH = 32
ANY_TYPE = "google.protobuf.Any"
# What an Any that cannot be read is labelled: every label but public (it may hold anything,
# and a caller who may see one label need not see another).
OPAQUE_ANY_LABELS = tuple(label for label in LABELS if label != "public")
# The one field of a reply that is itself an Any.
ANY_REPLY_FIELD = "value"


def classify_message(
    message: Message,
    catalog: Catalog,
    detectors: DetectorSet,
    default_label: str | None = None,
    max_values: int | None = None,
) -> Classification:
    """``max_values``: the most values the walk may visit (see the module docstring); None
    leaves it unbounded (a reply already released, read again)."""
    values = MessageValues(max_values)
    if max_values is not None:
        detectors = detectors.counting(values.found)
    walker = _Walker(catalog, detectors, smallest_scanned(detectors), values)
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        walker.any_reply(message)
    else:
        walker.walk(message, "", (), [(message.DESCRIPTOR.full_name, "")])
    walker.scan(cover_open_keys=True)
    return Classification(
        fields=walker.fields.fields(check_default_label(default_label or catalog.default_label)),
        message_spans=walker.spans,
    )


class _Walker:
    def __init__(
        self,
        catalog: Catalog,
        detectors: DetectorSet,
        smallest: int | None,
        values: MessageValues,
        depth: int = 0,
    ) -> None:
        self.catalog = catalog
        self.detectors = detectors
        self.values = values  # the reply's, so folded messages count against it too
        # The number fields scanned, by type, and the smallest magnitude scanned in them.
        self.number_types = number_types(smallest)
        self.smallest = smallest or 0
        self.depth = depth  # of the messages this walker starts at (folded ones start deeper)
        self.fields = FieldSet()
        self.spans: list[LeafSpans] = []
        # String, bytes and number leaves waiting for one batched scan: (location, path, bytes).
        self._texts: list[tuple[Location, str, bytes]] = []
        # Map fields: (path, texts) whose hits label the map field itself.
        self._maps: list[tuple[str, list[bytes]]] = []
        # Repeated integer fields (and float ones of whole numbers, as ints: ``as_integers``):
        # (location, item path, values, dtype to read them as characters with, None when not
        # worth it: ``integer_text.worth_reading``);
        # and maps' integer values read so, in each order, labelling the map: (path, values, dtype).
        # Both are read as digits too (``digit_runs``); maps' values in each order: (path, runs).
        self._characters: list[tuple[Location, str, Any, np.dtype[Any] | None]] = []
        self._map_characters: list[tuple[str, list[list[int]], np.dtype[Any]]] = []
        self._map_runs: list[tuple[str, list[bytes]]] = []
        # Repeated fields whose numbers are scanned one by one too (``number_types``).
        self._scanned_alone: set[Location] = set()
        # Number fields read as their bytes (``message_bytes``): (location, item path, field
        # type, values), a repeated field's or gathered ones' (``_read_gathered``); and maps'
        # values so, in each order, labelling the map: (path, field type, orders).
        self._packed: list[tuple[Location, str, int, Any]] = []
        self._map_packed: list[tuple[str, int, list[list[Any]]]] = []
        # Integer fields of repeated messages (``chars[].c``), by path and type, gathered as the
        # walk meets them: their values' locations and the values, read together on ``scan``.
        self._gathered: dict[tuple[str, int], tuple[list[Location], list[int]]] = {}
        # The leaves of what was gathered, by the key it is read under in ``_characters``.
        self._gathered_leaves: dict[Location, list[Location]] = {}
        # Every number value in document order (``message_order``), read on the reply's ``scan``.
        self.order = DocumentOrder()
        # Fields whose folded messages (map values, Anys' contents) this walker scanned apart.
        self._folds: list[str] = []
        # Whether a PEM block crosses texts here, or in a message folded into this one.
        self.key_open = False

    def walk(
        self,
        message: Message,
        prefix: str,
        location: Location,
        scopes: list[tuple[str, str]],
        depth: int = 0,
    ) -> None:
        """``scopes``: (message full name, path prefix where it starts) for catalog lookups."""
        if self.depth + depth > MAX_MESSAGE_DEPTH:
            raise UpstreamError(
                MESSAGE_TOO_DEEP, f"the upstream's reply nests messages deeper than {MAX_MESSAGE_DEPTH}"
            )
        present = message.ListFields()
        # Counted before any is looked at: a field of a million elements is refused at once.
        self.values.take(len(present) + sum(len(value) for field, value in present if field.is_repeated))
        # Under a repeated message (or a map's message values) an integer field has a value per
        # element, which a client reads one after another as it reads a repeated field.
        gathering = "[]." in prefix or "{}." in prefix
        for descriptor, value in present:
            if descriptor.is_extension:
                continue
            path = prefix + descriptor.name
            here = (*location, descriptor.name)
            labels = set(option_labels(descriptor))
            for name, start in scopes:
                labels |= self.catalog.labels_for_message(name, path[len(start) :])
            if is_map(descriptor):
                self.values.take(MAP_STEP_VALUES)
                self._label(path, labels, touch=True)
                map_texts = self._map_texts(path, descriptor, value)
                for text in map_texts:
                    self.values.take_text(text)
                self._maps.append((path, map_texts))
                value_field = message_type_of(descriptor).fields_by_name["value"]
                if is_message(value_field):
                    self._fold(path, list(value.values()), scopes, depth, list(value))
            elif is_message(descriptor) and message_type_of(descriptor).full_name == ANY_TYPE:
                # Entries for the Any's own fields (``payload.value``, or ``value`` of the Any
                # type) label the Any: it is classified, and masked, as one field.
                for part in ("type_url", "value"):
                    labels |= self.catalog.labels_for_message(ANY_TYPE, part)
                    for name, start in scopes:
                        labels |= self.catalog.labels_for_message(name, f"{path}.{part}"[len(start) :])
                self._label(path, labels, touch=True)
                for item in value if descriptor.is_repeated else [value]:
                    self._fold_any(path, item, scopes, depth)
            elif is_message(descriptor):
                self._label(path, labels, touch=False)
                nested_scopes = [*scopes, (message_type_of(descriptor).full_name, "")]
                if descriptor.is_repeated:
                    for index, item in enumerate(value):
                        inner = path + "[]."
                        self.walk(item, inner, (*here, index), _rebase(nested_scopes, inner), depth + 1)
                else:
                    self.walk(value, path + ".", here, _rebase(nested_scopes, path + "."), depth + 1)
            elif descriptor.is_repeated:
                item_path = path + "[]"
                for label_scope, start in scopes:
                    labels |= self.catalog.labels_for_message(label_scope, item_path[len(start) :])
                self._label(item_path, labels, touch=True)
                if descriptor.cpp_type in self.number_types:
                    self._scanned_alone.add(here)
                    for index, number in large_numbers(value, self.smallest):
                        self._queue_text((*here, index), item_path, _number_text(number))
                elif descriptor.cpp_type == FieldDescriptor.CPPTYPE_STRING:  # string and bytes
                    for index, item in enumerate(value):
                        self._queue(descriptor, (*here, index), item_path, item)
                integers = as_integers(descriptor.cpp_type, value)
                if integers is not None:  # read as digits, and as characters if worth it
                    self._characters.append((here, item_path, *self._worth_reading(*integers)))
                if packs(descriptor.cpp_type) and len(value) > 1:
                    self._packed.append((here, item_path, descriptor.cpp_type, value))
                self.order.add_values(here, item_path, descriptor.cpp_type, value)
            else:
                self._label(path, labels, touch=True)
                self._queue(descriptor, here, path, value)
                self.order.add_value(here, path, descriptor.cpp_type, value)
                if gathering and may_be_integers(descriptor.cpp_type):
                    leaves, numbers = self._gathered.setdefault((path, descriptor.cpp_type), ([], []))
                    leaves.append(here)
                    numbers.append(value)

    def _label(self, path: str, labels: set[str], touch: bool) -> None:
        if touch:
            self.fields.touch(path)
        if labels:
            self.fields.add(path, labels, SOURCE_CATALOG)

    def _map_texts(self, path: str, descriptor: FieldDescriptor, value: Any) -> list[bytes]:
        """A map's keys and its string, bytes and number values, to scan (message values are
        walked); its integer values are also queued to read as characters."""
        value_field = message_type_of(descriptor).fields_by_name["value"]
        texts = [_text(key) for key in value]
        if value_field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            texts.extend(_text(item) for item in value.values())
        elif value_field.cpp_type in self.number_types:
            numbers = large_numbers(list(value.values()), self.smallest)
            texts.extend(_number_text(number) for _, number in numbers)
        self.order.add_map(path, value_field.cpp_type, value)
        if packs(value_field.cpp_type) and len(value) > 1:
            # In the map's order and in its keys' (a map has no order of its own).
            orders = [list(value.values()), [value[key] for key in sorted(value, key=key_order)]]
            self._map_packed.append((path, value_field.cpp_type, orders))
        integers = None
        if may_be_integers(value_field.cpp_type):
            integers = as_integers(value_field.cpp_type, list(value.values()))
        if integers is not None:
            in_order, dtype = integers
            runs = digit_runs(in_order)  # the same digits in any order: none, none by key either
            characters = worth_reading(in_order, self.detectors)
            if runs or characters:
                # A map has no order of its own: as it iterates (and is written), and by key.
                by_key = [value[key] for key in sorted(value, key=key_order)]
                if value_field.cpp_type in FLOAT_CPP_TYPES:  # whole numbers (``whole_numbers``)
                    by_key = list(map(int, by_key))
                orders = [in_order, by_key]
                if characters:
                    self.values.take(FIXED_STEP_VALUES * len(orders))
                    self._map_characters.append((path, orders, dtype))
                if runs:
                    self._map_runs.append((path, [*runs, *digit_runs(orders[1])]))
        return texts

    def _read_gathered(self) -> None:
        """Queue the integer fields of repeated messages gathered by ``walk`` to be read as a
        repeated integer field is, charged as one is: each under its path and type as its
        key, a location no field has (a field name holds no ``[]``), whose values' leaves are
        kept apart (``_characters_found``). One value says nothing read with others."""
        for (path, cpp_type), (leaves, numbers) in self._gathered.items():
            if len(numbers) < 2:
                continue
            key: Location = (path, cpp_type)
            if packs(cpp_type):  # read as bytes, fractions or not
                self._gathered_leaves[key] = leaves
                self._packed.append((key, path, cpp_type, numbers))
            integers = as_integers(cpp_type, numbers)
            if integers is None:  # a float field holding a fraction
                continue
            if cpp_type in self.number_types:  # each number was scanned alone too (``_queue``)
                self._scanned_alone.add(key)
            self._gathered_leaves[key] = leaves
            self._characters.append((key, path, *self._worth_reading(*integers)))
        self._gathered.clear()

    def _worth_reading(self, numbers: Any, dtype: np.dtype[Any]) -> tuple[Any, np.dtype[Any] | None]:
        """``numbers`` and the dtype to read them as characters with, charged for that, or None
        when not worth it (``integer_text.worth_reading``): they are read as digits either way."""
        if not worth_reading(numbers, self.detectors):
            return numbers, None
        self.values.take(FIXED_STEP_VALUES)
        return numbers, dtype

    def _queue(self, descriptor: FieldDescriptor, location: Location, path: str, value: Any) -> None:
        if descriptor.type == FieldDescriptor.TYPE_BYTES:
            self._queue_text(location, path, value)
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                # protobuf hands a proto2 string that is not valid UTF-8 over as bytes.
                raise UpstreamError(
                    MESSAGE_STRING_INVALID,
                    f"the upstream's reply has a string field ({path}) that is not UTF-8",
                )
            self._queue_text(location, path, value.encode("utf-8", "surrogatepass"))
        elif descriptor.cpp_type in self.number_types and abs(value) >= self.smallest:
            self._queue_text(location, path, _number_text(value))

    def _queue_text(self, location: Location, path: str, text: bytes) -> None:
        self.values.take_text(text)  # the scan's cost, before it is queued
        self._texts.append((location, path, text))

    def _fold(
        self, path: str, messages: list[Message], scopes: list[tuple[str, str]], depth: int, keys: Any = None
    ) -> None:
        """Walk ``messages`` (a map's values under ``keys``, an Any's contents) as nested
        messages at ``path{}.``, and give every label found in them to ``path`` itself:
        masking cannot reach inside such a field, only clear it."""
        self.values.take(FIXED_STEP_VALUES)
        inner = path + "{}."
        folded = _Walker(self.catalog, self.detectors, self.smallest, self.values, self.depth + depth + 1)
        entries = self.order.fold(path, keys)
        folded.order = entries.order
        for item in messages:
            entries.next()
            if item.DESCRIPTOR.full_name == ANY_TYPE:  # a map of Any values
                folded._fold_any(path, item, scopes, 0)
                continue
            nested = _rebase([*scopes, (item.DESCRIPTOR.full_name, "")], inner)
            folded.walk(item, inner, (), nested)
        folded.scan()
        self.key_open = self.key_open or folded.key_open
        self._folds.append(path)
        for by_label in folded.fields.labelled():
            for label, sources in by_label.items():
                for source in sources:
                    self.fields.add(path, (label,), source)

    def _fold_any(self, path: str, packed: Message, scopes: list[tuple[str, str]], depth: int) -> None:
        """An Any at ``path``: its type URL is scanned (it is text the upstream chose), and its
        contents are folded into ``path`` (see the module docstring)."""
        type_url: str = packed.type_url  # type: ignore[attr-defined]
        self.values.take(MAP_STEP_VALUES)  # its type URL is scanned apart, as a map's texts are
        url_text = _text(type_url)
        self.values.take_text(url_text)
        self._maps.append((path, [url_text]))
        # Extensions are left in: the walk passes them by, and stripping them first would visit
        # every message in the contents before the walk counts one (``max_values``).
        contents, reason = unpacked_any(packed, keep_extensions=True)
        if contents is None:
            self.fields.add(path, OPAQUE_ANY_LABELS, fail_closed_source(reason))
            opaque: bytes = packed.value  # type: ignore[attr-defined]
            self.values.take_text(opaque)
            self._maps.append((path, [opaque]))
            return
        self._fold(path, [contents], scopes, depth)

    def any_reply(self, packed: Message) -> None:
        """A reply that is itself an Any: one field, ``ANY_REPLY_FIELD``, labelled as an Any
        field is (the Any type's catalog entries, its type URL, what it packs)."""
        labels: set[str] = set()
        for part in ("type_url", "value"):
            labels |= self.catalog.labels_for_message(ANY_TYPE, part)
        self._label(ANY_REPLY_FIELD, labels, touch=True)
        self._fold_any(ANY_REPLY_FIELD, packed, [(ANY_TYPE, "")], 0)

    def scan(self, cover_open_keys: bool = False) -> None:
        """Scan what ``walk`` queued. ``cover_open_keys``: this is the reply's own walker, the
        last to scan (folded messages were scanned by theirs as they were walked), and a PEM
        block crossing texts anywhere in the reply covers every text of it (the module docstring)."""
        self._read_gathered()
        texts = [text for _, _, text in self._texts]
        found_per_text = self.detectors.scan_many(texts)
        # JSON escapes and character references hide values from a raw scan, as in output
        # text: what only their decoded form shows spans the whole string.
        if any(map(may_escape, texts)):
            for position, hidden in hidden_by_escapes(texts, self.detectors).items():
                found_per_text[position] = [*found_per_text[position], *hidden]
        # Digits of other scripts, invisible and control characters hide values too (folding.py).
        for position, hidden in hidden_by_folding(
            texts, self.detectors, dict(enumerate(found_per_text))
        ).items():
            found_per_text[position] = [*found_per_text[position], *hidden]
        found_in_maps = [(path, map_texts, self._scan_map(map_texts)) for path, map_texts in self._maps]
        maps_found = any(found for _, _, found in found_in_maps) if found_in_maps else False
        read = self._read_characters() if self._characters or self._map_characters else []
        runs, maps_runs = self._read_digit_runs()
        packed, maps_packed, packed_opens = read_packed(
            self._packed, self._map_packed, self.detectors, self.values, self._gathered_leaves
        )
        in_order, order_opens = (
            read_document(self.order, self.detectors, self.values) if cover_open_keys else ([], False)
        )
        if (
            not self.key_open
            and SECRET in self.detectors.names
            and (read or maps_found or any(found_per_text))
        ):
            self.key_open = crosses_texts(texts, found_per_text, found_in_maps, read)
        self.key_open = self.key_open or packed_opens or order_opens
        cover = cover_open_keys and self.key_open
        if cover:
            found_per_text, read = self._covered(found_per_text, read)
            cover_packed(self._packed, self.detectors.label_of(SECRET), packed)
            in_order += every_value(self.order, Detection(SECRET, self.detectors.label_of(SECRET), 0, 1))
        apply(in_order, self.fields, self.spans)
        for location, (path, count, in_bytes) in packed.items():  # the field whole, as runs mask it
            runs.setdefault(location, (path, count, []))[2].extend(in_bytes)
        for (location, path, _), found in zip(self._texts, found_per_text, strict=True):
            if not found:
                continue
            self.spans.append(LeafSpans(location, path, tuple(found)))
            for hit in found:
                self.fields.add(f"{path}{{{hit.detector}}}", [hit.label], detector_source(hit.detector))
        if maps_found:
            for path, _, found_in_map in found_in_maps:
                for hits in found_in_map.values():
                    for hit in hits:
                        self.fields.add(path, [hit.label], detector_source(hit.detector))
        for at, path, [(values, _), *_], found in read:
            if at is None:  # a map's values: they label the map
                for hit in found:
                    self.fields.add(path, [hit.label], detector_source(hit.detector))
            else:
                _, _, in_runs = runs.pop(at, (path, 0, []))
                if found or in_runs:
                    self._characters_found(at, path, len(values), [*found, *in_runs])
        for at, (path, count, in_runs) in runs.items():  # fields not worth reading as characters
            self._characters_found(at, path, count, in_runs)
        for path, in_runs in [*maps_runs, *maps_packed]:
            for hit in in_runs:
                self.fields.add(path, [hit.label], detector_source(hit.detector))
        if cover:
            # Every map (its keys, values, an Any's type URL) and every folded message.
            for path in dict.fromkeys([*(path for path, _ in self._maps), *self._folds]):
                self.fields.add(path, [self.detectors.label_of(SECRET)], detector_source(SECRET))

    def _scan_map(self, map_texts: list[bytes]) -> dict[int, list[Detection]]:
        """What the detectors find in a map's texts, as they are, folded and decoded, by index."""
        found = self.detectors.scan_each(map_texts)
        folded_in_map = hidden_by_folding(map_texts, self.detectors, found)
        escaped_in_map = (
            hidden_by_escapes(map_texts, self.detectors) if any(map(may_escape, map_texts)) else {}
        )
        for more in (folded_in_map, escaped_in_map):
            for index, hits in more.items():
                found[index] = [*found.get(index, ()), *hits]
        return found

    def _read_characters(self) -> list[CharacterRead]:
        """The integer fields read as characters (those worth it, ``integer_text.worth_reading``), and
        maps' integer values (read in each order)."""
        detectors = self.detectors
        read: list[CharacterRead] = []
        for location, path, values, dtype in self._characters:
            if dtype is not None:
                array = character_array(values, dtype)
                found = character_hits(array, detectors)
                if location in self._gathered_leaves:
                    found = no_cursor_cover(found, len(values), detectors)
                read.append(CharacterRead(location, path, [(values, array)], found))
        for path, orders, dtype in self._map_characters:
            arrays = [(values, character_array(values, dtype)) for values in orders]
            found = [hit for _, array in arrays for hit in character_hits(array, detectors)]
            read.append(CharacterRead(None, path, arrays, found))
        return read

    def _read_digit_runs(
        self,
    ) -> tuple[dict[Location, tuple[str, int, list[Detection]]], list[tuple[str, list[Detection]]]]:
        """What the detectors find in repeated integer fields read as digits (``digit_runs``):
        by field location, its item path, value count and hits; and per map, its path and hits.
        One scan for all of them."""
        runs: list[bytes] = []
        # Whose each run is: a field's location (None: a map's), path, values and separator.
        owners: list[tuple[Location | None, str, Any, str]] = []
        for location, path, values, _ in self._characters:
            if location in self._gathered_leaves:
                # One value an element of a repeated message (statistics' counts, a record's
                # id): read as characters only. Numbers of four digits joined read as a card one
                # window in ten or so, and records of counts hold many (every ModelStatistics
                # reply of 1,024 models did): a value split over such numbers is the residual.
                continue
            for run, separator in zip(digit_runs(values), RUN_SEPARATORS, strict=False):  # none, or all
                runs.append(run)
                owners.append((location, path, values, separator))
        for path, map_runs in self._map_runs:
            runs.extend(map_runs)
            owners.extend((None, path, (), "") for _ in map_runs)
        if not runs:
            return {}, []
        fields: dict[Location, tuple[str, int, list[Detection]]] = {}
        maps: dict[str, list[Detection]] = {}
        for index, hits in self.detectors.scan_each(runs).items():
            at, path, values, separator = owners[index]
            if at is None:
                maps.setdefault(path, []).extend(hits)
                continue
            if at in self._scanned_alone:
                hits = across_values(values, separator, hits, self.smallest)
            if hits:
                fields.setdefault(at, (path, len(values), []))[2].extend(hits)
        return fields, list(maps.items())

    def _covered(
        self, found_per_text: list[list[Detection]], read: list[CharacterRead]
    ) -> tuple[list[list[Detection]], list[CharacterRead]]:
        """``found_per_text`` and ``read`` with ``secret`` spanning every text, and every
        repeated integer field (read as characters or not: its values may be a key's
        characters all the same) whole (a PEM block crosses texts: the module docstring); maps
        keep their own (their paths are labelled)."""
        label = self.detectors.label_of(SECRET)
        texts = [
            [*found, Detection(SECRET, label, 0, len(text))] if text else found
            for (_, _, text), found in zip(self._texts, found_per_text, strict=True)
        ]
        found_at = {entry.location: entry.found for entry in read if entry.location is not None}
        fields = [
            CharacterRead(
                at, path, [(values, None)], [*found_at.get(at, ()), Detection(SECRET, label, 0, len(values))]
            )
            for at, path, values, _ in self._characters
            if len(values)
        ]
        fields += [entry for entry in read if entry.location is None]
        return texts, fields

    def _characters_found(self, location: Location, path: str, count: int, found: list[Detection]) -> None:
        """What reading the ``count`` values of the repeated field at ``location`` (or gathered
        under that key: ``_read_gathered``) as characters found: a field per detector, and a
        leaf per value, so a mask zeroes every value (the module docstring); each leaf's
        detections span its one value."""
        for hit in found:
            self.fields.add(f"{path}{{{hit.detector}}}", [hit.label], detector_source(hit.detector))
        per_value = tuple(dict.fromkeys(Detection(hit.detector, hit.label, 0, 1) for hit in found))
        leaves = self._gathered_leaves.get(location)
        if leaves is None:
            leaves = [(*location, index) for index in range(count)]
        self.spans.extend(LeafSpans(leaf, path, per_value) for leaf in leaves)


def unpacked_any(packed: Message, *, keep_extensions: bool = False) -> tuple[Message | None, str]:
    """The message an Any holds, without the fields its type does not know and without
    extensions (neither is classified), or None and why it cannot be read: its type is looked
    up in the pool the Any's own type comes from (a routed service's descriptor set, or the
    default pool). Release re-encodes a readable Any from this (``enforce.messages``), so what
    leaves is what was classified. Required fields are not checked: the contents is released
    as it was read (an Any's bytes need not be a whole message to be encoded).
    ``keep_extensions``: for a reader that passes extensions by itself (the classifier's walk)."""
    type_url: str = packed.type_url  # type: ignore[attr-defined]
    name = type_url.rsplit("/", 1)[-1]
    try:
        descriptor = packed.DESCRIPTOR.file.pool.FindMessageTypeByName(name)
    except KeyError:
        return None, "any_type_unknown"
    contents = message_factory.GetMessageClass(descriptor)()  # type: ignore[arg-type]
    try:
        contents.ParseFromString(packed.value)  # type: ignore[attr-defined]
    except DecodeError:
        return None, "any_invalid"
    contents.DiscardUnknownFields()
    return (contents if keep_extensions else without_extensions(contents)), ""


def _rebase(scopes: list[tuple[str, str]], nested_prefix: str) -> list[tuple[str, str]]:
    """The newest scope (the nested message type) starts at ``nested_prefix``."""
    *outer, (name, _) = scopes
    return [*outer, (name, nested_prefix)]


def _number_text(number: int | float) -> bytes:
    """A number as detectors read it: its decimal digits (``jsonpaths.scannable``)."""
    text = scannable(number)
    return b"" if text is None else text.encode("ascii")


def _text(value: Any) -> bytes:
    """A scalar as scanned: bytes as they are (a proto2 string that is not UTF-8 comes as
    bytes too), anything else as its UTF-8 text."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
