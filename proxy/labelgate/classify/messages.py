"""Classification of generic (non-inference) protobuf messages, by descriptor: pure.

Paths name fields from the message root: ``name``, ``contact.email``, ``items[].ssn``;
``[]`` follows a repeated field (``tags[]`` for repeated scalars). Only fields that are
present (``ListFields``) are data and get a field.

Labels per field: the ``(labelgate.v1.labels)`` field option and catalog entries whose
``message`` is the root message's full name (path from the root) or a nested message
type's full name (path from that message), both with source ``catalog``: the option is a
catalog entry that travels with the proto. Scalar fields nobody labels get the default
label. String fields are scanned: a detector that fires adds ``<path>{<detector>}`` with
its label, and its spans are kept for masking, as for text tensors. Map fields are one
field (``attrs``) whose keys and string values are scanned; a hit labels the map field
itself, and masking a map clears it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from labelgate._proto.labelgate.v1 import classification_pb2
from labelgate.classify import reasons
from labelgate.classify.catalog import Catalog
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.fields import (
    SOURCE_CATALOG,
    Classification,
    FieldSet,
    LeafSpans,
    detector_source,
)
from labelgate.classify.jsonpaths import Location
from labelgate.classify.labels import LABELS, check_default_label, is_label
from labelgate.errors import ConfigError

FIELD_LABELS_INVALID = reasons.FIELD_LABELS_INVALID

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
    walker = _Walker(catalog, detectors)
    walker.walk(message, "", (), [(message.DESCRIPTOR.full_name, "")])
    walker.scan()
    return Classification(
        fields=walker.fields.fields(check_default_label(default_label or catalog.default_label)),
        message_spans=walker.spans,
    )


class _Walker:
    def __init__(self, catalog: Catalog, detectors: DetectorSet) -> None:
        self.catalog = catalog
        self.detectors = detectors
        self.fields = FieldSet()
        self.spans: list[LeafSpans] = []
        # String leaves waiting for one batched scan: (location, path, UTF-8 text).
        self._strings: list[tuple[Location, str, bytes]] = []
        # Map fields: (path, texts) whose hits label the map field itself.
        self._maps: list[tuple[str, list[bytes]]] = []

    def walk(self, message: Message, prefix: str, location: Location, scopes: list[tuple[str, str]]) -> None:
        """``scopes``: (message full name, path prefix where it starts) for catalog lookups."""
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
                self._maps.append((path, _map_texts(descriptor, value)))
            elif is_message(descriptor):
                self._label(path, labels, touch=False)
                nested_scopes = [*scopes, (message_type_of(descriptor).full_name, "")]
                if descriptor.is_repeated:
                    for index, item in enumerate(value):
                        inner = path + "[]."
                        self.walk(item, inner, (*here, index), _rebase(nested_scopes, inner))
                else:
                    self.walk(value, path + ".", here, _rebase(nested_scopes, path + "."))
            elif descriptor.is_repeated:
                item_path = path + "[]"
                for label_scope, start in scopes:
                    labels |= self.catalog.labels_for_message(label_scope, item_path[len(start) :])
                self._label(item_path, labels, touch=True)
                for index, item in enumerate(value):
                    self._queue(descriptor, (*here, index), item_path, item)
            else:
                self._label(path, labels, touch=True)
                self._queue(descriptor, here, path, value)

    def _label(self, path: str, labels: set[str], touch: bool) -> None:
        if touch:
            self.fields.touch(path)
        if labels:
            self.fields.add(path, labels, SOURCE_CATALOG)

    def _queue(self, descriptor: FieldDescriptor, location: Location, path: str, value: Any) -> None:
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            self._strings.append((location, path, value.encode("utf-8", "surrogatepass")))

    def scan(self) -> None:
        found_per_string = self.detectors.scan_many([text for _, _, text in self._strings])
        for (location, path, _), found in zip(self._strings, found_per_string, strict=True):
            if not found:
                continue
            self.spans.append(LeafSpans(location, path, tuple(found)))
            for hit in found:
                self.fields.add(f"{path}{{{hit.detector}}}", [hit.label], detector_source(hit.detector))
        for path, texts in self._maps:
            for found in self.detectors.scan_many(texts):
                for hit in found:
                    self.fields.add(path, [hit.label], detector_source(hit.detector))


def _rebase(scopes: list[tuple[str, str]], nested_prefix: str) -> list[tuple[str, str]]:
    """The newest scope (the nested message type) starts at ``nested_prefix``."""
    *outer, (name, _) = scopes
    return [*outer, (name, nested_prefix)]


def _map_texts(descriptor: FieldDescriptor, value: Any) -> list[bytes]:
    value_field = message_type_of(descriptor).fields_by_name["value"]
    texts = [str(key).encode("utf-8", "surrogatepass") for key in value]
    if value_field.type == FieldDescriptor.TYPE_STRING:
        texts.extend(item.encode("utf-8", "surrogatepass") for item in value.values())
    return texts
