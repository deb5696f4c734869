"""A test-only message type with nesting, repeated fields, a map, bytes and numbers.

Built at import into the default descriptor pool (a separate file and package, so it
cannot clash with real protos), with ``(labelgate.v1.labels)`` options on some fields.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate._proto.labelgate.v1 import classification_pb2

_OPTIONAL, _REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED


def _build() -> None:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/order.proto",
        package="labelgatetest",
        syntax="proto3",
        dependency=["labelgate/v1/classification.proto", any_pb2.DESCRIPTOR.name],
    )
    item = file.message_type.add(name="Item")
    ssn = item.field.add(name="ssn", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    ssn.options.Extensions[classification_pb2.labels].append("confidential")
    item.field.add(name="note", number=2, type=F.TYPE_STRING, label=_OPTIONAL)
    item.field.add(name="quantity", number=3, type=F.TYPE_INT32, label=_OPTIONAL)

    order = file.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    order.field.add(
        name="items", number=2, type=F.TYPE_MESSAGE, label=_REPEATED, type_name=".labelgatetest.Item"
    )
    order.field.add(name="tags", number=3, type=F.TYPE_STRING, label=_REPEATED)
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=_OPTIONAL)
    order.field.add(
        name="attrs",
        number=4,
        type=F.TYPE_MESSAGE,
        label=_REPEATED,
        type_name=".labelgatetest.Order.AttrsEntry",
    )
    amount = order.field.add(name="amount", number=5, type=F.TYPE_INT64, label=_OPTIONAL)
    amount.options.Extensions[classification_pb2.labels].append("restricted")
    order.field.add(name="blob", number=6, type=F.TYPE_BYTES, label=_OPTIONAL)
    order.field.add(
        name="primary", number=7, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".labelgatetest.Item"
    )
    order.field.add(name="paid", number=8, type=F.TYPE_BOOL, label=_OPTIONAL)
    order.field.add(name="scores", number=9, type=F.TYPE_DOUBLE, label=_REPEATED)
    # A map whose values are messages, an Any, and a type that nests itself.
    items = order.nested_type.add(name="ByKeyEntry")
    items.options.map_entry = True
    items.field.add(name="key", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    items.field.add(
        name="value", number=2, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".labelgatetest.Item"
    )
    order.field.add(
        name="by_key",
        number=10,
        type=F.TYPE_MESSAGE,
        label=_REPEATED,
        type_name=".labelgatetest.Order.ByKeyEntry",
    )
    order.field.add(
        name="extra", number=11, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".google.protobuf.Any"
    )
    node = file.message_type.add(name="Node")
    node.field.add(
        name="child", number=1, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".labelgatetest.Node"
    )
    node.field.add(name="text", number=2, type=F.TYPE_STRING, label=_OPTIONAL)
    order.field.add(
        name="tree", number=12, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".labelgatetest.Node"
    )
    bad = file.message_type.add(name="BadLabels")
    secret = bad.field.add(name="secret", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    secret.options.Extensions[classification_pb2.labels].append("top-secret")
    descriptor_pool.Default().Add(file)
    # proto2 does not check that a string is UTF-8: protobuf hands such a value over as bytes.
    legacy = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/legacy.proto", package="labelgatetest", syntax="proto2"
    )
    note = legacy.message_type.add(name="Legacy")
    note.field.add(name="name", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    descriptor_pool.Default().Add(legacy)


_build()
Order = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName("labelgatetest.Order")
)
# A field whose option names a label outside the vocabulary.
BadLabels = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName("labelgatetest.BadLabels")
)
Item = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName("labelgatetest.Item"))
Node = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName("labelgatetest.Node"))
Legacy = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName("labelgatetest.Legacy")
)
