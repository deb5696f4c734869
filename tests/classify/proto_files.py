"""What the test-only message types (``numbers_proto``, ``codes_proto``) build their
descriptors with, as protoc would write them."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F


def add_map(
    message: descriptor_pb2.DescriptorProto,
    owner: str,
    name: str,
    number: int,
    key_type: int,
    value_type: int,
    value_type_name: str = "",
) -> None:
    """A map field ``name`` on ``message`` (whose full name is ``owner``): a repeated nested
    ``<Name>Entry`` message with ``key`` and ``value``, marked as a map entry."""
    entry = message.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=key_type, label=F.LABEL_OPTIONAL)
    value = entry.field.add(name="value", number=2, type=value_type, label=F.LABEL_OPTIONAL)
    if value_type_name:
        value.type_name = value_type_name
    message.field.add(
        name=name,
        number=number,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=f".{owner}.{entry.name}",
    )
