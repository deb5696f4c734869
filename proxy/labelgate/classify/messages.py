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
such a text zeroed would leave NULs, which a reader drops, between the rest). A map's integer
values are read so too, in the map's order and in its keys' order, labelling the map.

A PEM private key is the one value that spans texts (``key_blocks``): a text that opens a
block it does not close makes every text of the whole reply, in every pass and every folded
message, count as found by ``secret`` (fail closed): each string, bytes or scanned number
spans ``secret`` whole, each integer field (read as characters or not) gets
``<path>[]{secret}`` (so its values are all zeroed), and each map and folded field is
labelled so. A text that cannot be folded spans every detector whole, and is read for a
BEGIN marker as it is and decoded, as a tensor's elements are.

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
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate._proto.labelgate.v1 import classification_pb2
from labelgate.classify import reasons
from labelgate.classify.catalog import Catalog
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.fields import (
    SOURCE_CATALOG,
    Classification,
    FieldSet,
    LeafSpans,
    detector_source,
    fail_closed_source,
)
from labelgate.classify.folding import hidden_by_folding
from labelgate.classify.integer_text import (
    CHARACTER_DTYPES,
    CharacterRead,
    character_hits,
    character_points,
    key_order,
    worth_reading,
)
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import Location, may_escape, scannable
from labelgate.classify.key_blocks import SECRET, crosses_texts
from labelgate.classify.labels import LABELS, check_default_label, is_label
from labelgate.classify.numbers import DIGIT_RUN_DETECTORS, SMALLEST_DETECTABLE
from labelgate.errors import ConfigError, UpstreamError

FIELD_LABELS_INVALID = reasons.FIELD_LABELS_INVALID
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

_option_cache: dict[FieldDescriptor, frozenset[str]] = {}


def option_labels(descriptor: FieldDescriptor) -> frozenset[str]:
    """The ``(labelgate.v1.labels)`` option of a field; unknown labels are a ConfigError."""
    cached = _option_cache.get(descriptor)
    if cached is None:
        # The generated stubs type an extension as a plain FieldDescriptor.
        option: list[str] = descriptor.GetOptions().Extensions[classification_pb2.labels]  # type: ignore[index]
        labels: frozenset[str] = frozenset(option)
        unknown = sorted(label for label in labels if not is_label(label))
        if unknown:
            raise ConfigError(
                FIELD_LABELS_INVALID,
                f"field {descriptor.full_name} has (labelgate.v1.labels) {unknown}; "
                f"expected some of {list(LABELS)}",
            )
        cached = _option_cache[descriptor] = labels
    return cached


def is_map(descriptor: FieldDescriptor) -> bool:
    return descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry


def is_message(descriptor: FieldDescriptor) -> bool:
    return descriptor.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)


def message_type_of(descriptor: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field."""
    message_type = descriptor.message_type
    if message_type is None:
        raise TypeError(f"{descriptor.full_name} is not a message field")
    return message_type


def classify_message(
    message: Message, catalog: Catalog, detectors: DetectorSet, default_label: str | None = None
) -> Classification:
    walker = _Walker(catalog, detectors, smallest_scanned(detectors))
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        walker.any_reply(message)
    else:
        walker.walk(message, "", (), [(message.DESCRIPTOR.full_name, "")])
    walker.scan(cover_open_keys=True)
    return Classification(
        fields=walker.fields.fields(check_default_label(default_label or catalog.default_label)),
        message_spans=walker.spans,
    )


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


def _number_types(smallest: int | None) -> frozenset[int]:
    """The number field types worth scanning: none, or only those that can hold a number of
    ``smallest`` or more (a 32-bit integer never holds a card)."""
    if smallest is None:
        return frozenset()
    return WIDE_NUMBER_CPP_TYPES if smallest >= 2**32 else NUMBER_CPP_TYPES


class _Walker:
    def __init__(
        self, catalog: Catalog, detectors: DetectorSet, smallest: int | None, depth: int = 0
    ) -> None:
        self.catalog = catalog
        self.detectors = detectors
        # The number fields scanned, by type, and the smallest magnitude scanned in them.
        self.number_types = _number_types(smallest)
        self.smallest = smallest or 0
        self.depth = depth  # of the messages this walker starts at (folded ones start deeper)
        self.fields = FieldSet()
        self.spans: list[LeafSpans] = []
        # String, bytes and number leaves waiting for one batched scan: (location, path, bytes).
        self._texts: list[tuple[Location, str, bytes]] = []
        # Map fields: (path, texts) whose hits label the map field itself.
        self._maps: list[tuple[str, list[bytes]]] = []
        # Repeated integer fields, to read as characters: (location, item path, values, dtype);
        # and maps' integer values read so, in each order, labelling the map: (path, values, dtype).
        self._characters: list[tuple[Location, str, Any, np.dtype[Any]]] = []
        self._map_characters: list[tuple[str, list[list[int]], np.dtype[Any]]] = []
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
        for descriptor, value in message.ListFields():
            if descriptor.is_extension:
                continue
            path = prefix + descriptor.name
            here = (*location, descriptor.name)
            labels = set(option_labels(descriptor))
            for name, start in scopes:
                labels |= self.catalog.labels_for_message(name, path[len(start) :])
            if is_map(descriptor):
                self._label(path, labels, touch=True)
                self._maps.append((path, self._map_texts(path, descriptor, value)))
                value_field = message_type_of(descriptor).fields_by_name["value"]
                if is_message(value_field):
                    self._fold(path, list(value.values()), scopes, depth)
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
                    for index, number in _large_numbers(value, self.smallest):
                        self._texts.append(((*here, index), item_path, _number_text(number)))
                elif descriptor.cpp_type == FieldDescriptor.CPPTYPE_STRING:  # string and bytes
                    for index, item in enumerate(value):
                        self._queue(descriptor, (*here, index), item_path, item)
                dtype = CHARACTER_DTYPES.get(descriptor.cpp_type)
                if dtype is not None:  # read as characters, if worth it (``_read_characters``)
                    self._characters.append((here, item_path, value, dtype))
            else:
                self._label(path, labels, touch=True)
                self._queue(descriptor, here, path, value)

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
            numbers = _large_numbers(list(value.values()), self.smallest)
            texts.extend(_number_text(number) for _, number in numbers)
        dtype = CHARACTER_DTYPES.get(value_field.cpp_type)
        if dtype is not None and worth_reading(value.values(), self.detectors):
            # A map has no order of its own: as it iterates (and is written), and by key.
            orders = [list(value.values()), [value[key] for key in sorted(value, key=key_order)]]
            self._map_characters.append((path, orders, dtype))
        return texts

    def _queue(self, descriptor: FieldDescriptor, location: Location, path: str, value: Any) -> None:
        if descriptor.type == FieldDescriptor.TYPE_BYTES:
            self._texts.append((location, path, value))
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                # protobuf hands a proto2 string that is not valid UTF-8 over as bytes.
                raise UpstreamError(
                    MESSAGE_STRING_INVALID,
                    f"the upstream's reply has a string field ({path}) that is not UTF-8",
                )
            self._texts.append((location, path, value.encode("utf-8", "surrogatepass")))
        elif descriptor.cpp_type in self.number_types and abs(value) >= self.smallest:
            self._texts.append((location, path, _number_text(value)))

    def _fold(self, path: str, messages: list[Message], scopes: list[tuple[str, str]], depth: int) -> None:
        """Walk ``messages`` (a map's values, an Any's contents) as nested messages at
        ``path{}.``, and give every label found in them to ``path`` itself: masking cannot
        reach inside such a field, only clear it."""
        inner = path + "{}."
        folded = _Walker(self.catalog, self.detectors, self.smallest, self.depth + depth + 1)
        for item in messages:
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
        self._maps.append((path, [_text(type_url)]))
        contents, reason = unpacked_any(packed)
        if contents is None:
            self.fields.add(path, OPAQUE_ANY_LABELS, fail_closed_source(reason))
            self._maps.append((path, [packed.value]))  # type: ignore[attr-defined]
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
        if (
            not self.key_open
            and SECRET in self.detectors.names
            and (read or maps_found or any(found_per_text))
        ):
            self.key_open = crosses_texts(texts, found_per_text, found_in_maps, read)
        cover = cover_open_keys and self.key_open
        if cover:
            found_per_text, read = self._covered(found_per_text, read)
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
            elif found:
                self._characters_found(at, path, len(values), found)
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
        points = character_points(detectors.names) if detectors else frozenset()
        read: list[CharacterRead] = []
        for location, path, values, dtype in self._characters:
            if points is None or not points.isdisjoint(values):  # ``integer_text.worth_reading``
                array = np.fromiter(values, dtype=dtype, count=len(values))
                read.append(
                    CharacterRead(location, path, [(values, array)], character_hits(array, detectors))
                )
        for path, orders, dtype in self._map_characters:
            arrays = [(values, np.fromiter(values, dtype=dtype, count=len(values))) for values in orders]
            found = [hit for _, array in arrays for hit in character_hits(array, detectors)]
            read.append(CharacterRead(None, path, arrays, found))
        return read

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
        """What reading the ``count`` values of the repeated field at ``location`` as characters
        found: a field per detector, and a leaf per value, so a mask zeroes every value (the
        module docstring); each leaf's detections span its one value."""
        for hit in found:
            self.fields.add(f"{path}{{{hit.detector}}}", [hit.label], detector_source(hit.detector))
        per_value = tuple(dict.fromkeys(Detection(hit.detector, hit.label, 0, 1) for hit in found))
        self.spans.extend(LeafSpans((*location, index), path, per_value) for index in range(count))


def unpacked_any(packed: Message) -> tuple[Message | None, str]:
    """The message an Any holds, without the fields its type does not know and without
    extensions (neither is classified), or None and why it cannot be read: its type is looked
    up in the pool the Any's own type comes from (a routed service's descriptor set, or the
    default pool). Release re-encodes a readable Any from this (``enforce.messages``), so what
    leaves is what was classified. Required fields are not checked: the contents is released
    as it was read (an Any's bytes need not be a whole message to be encoded)."""
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
    return without_extensions(contents), ""


def without_extensions(message: Message) -> Message:
    """``message`` with every extension removed, at any depth, in place.

    The classifier walks a message's declared fields only, so an extension (like an unknown
    field) is something it never saw."""
    for descriptor, value in message.ListFields():
        if descriptor.is_extension:
            # ListFields() is typed as plain FieldDescriptors; this one is an extension's.
            message.ClearExtension(descriptor)  # type: ignore[arg-type]
        elif is_message(descriptor):
            if is_map(descriptor):
                if is_message(message_type_of(descriptor).fields_by_name["value"]):
                    for item in value.values():
                        without_extensions(item)
            elif descriptor.is_repeated:
                for item in value:
                    without_extensions(item)
            else:
                without_extensions(value)
    return message


def _rebase(scopes: list[tuple[str, str]], nested_prefix: str) -> list[tuple[str, str]]:
    """The newest scope (the nested message type) starts at ``nested_prefix``."""
    *outer, (name, _) = scopes
    return [*outer, (name, nested_prefix)]


def _large_numbers(values: Any, smallest: int) -> list[tuple[int, Any]]:
    """(index, number) of the ``values`` at least ``smallest`` in magnitude. ``max`` and
    ``min`` (in C) rule out the usual case, none, without a step in Python per number; a NaN
    makes them inconclusive, and then each number is looked at."""
    if not values:
        return []
    if smallest and max(values) < smallest and min(values) > -smallest:
        return []
    return [(index, number) for index, number in enumerate(values) if abs(number) >= smallest]


def _number_text(number: int | float) -> bytes:
    """A number as detectors read it: its decimal digits (``jsonpaths.scannable``)."""
    text = scannable(number)
    return b"" if text is None else text.encode("ascii")


def _text(value: Any) -> bytes:
    """A scalar as scanned: bytes as they are (a proto2 string that is not UTF-8 comes as
    bytes too), anything else as its UTF-8 text."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
