"""A protobuf field as the message walk reads it off its descriptor: its
``(labelgate.v1.labels)`` option (``option_labels``), whether it is a map or a message,
the message type it holds; and a message stripped of its extensions (``without_extensions``),
which no walk classifies.

Apart from the walk (``messages``) since release (``enforce.messages``) and the walk of a held
message (``split_values``) read descriptors the same way.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from labelgate._proto.labelgate.v1 import classification_pb2
from labelgate.classify import reasons
from labelgate.classify.labels import LABELS, is_label
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
