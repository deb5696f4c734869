"""Test-only message types: numbers of every kind, proto2 ``required`` fields, an extension.

Built at import into the default descriptor pool (their own files and packages, so they
cannot clash with real protos or with ``order_proto``).
"""

from __future__ import annotations

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate._proto.labelgate.v1 import classification_pb2
from tests.classify.proto_files import add_map

_OPTIONAL, _REPEATED, _REQUIRED = F.LABEL_OPTIONAL, F.LABEL_REPEATED, F.LABEL_REQUIRED
_NUMBERS_PACKAGE = "labelgatenumbers"
# Each scalar number field of ``Numbers``: name -> type.
NUMBER_FIELDS = {
    "i64": F.TYPE_INT64,
    "u64": F.TYPE_UINT64,
    "f64": F.TYPE_FIXED64,
    "s64": F.TYPE_SINT64,
    "sf64": F.TYPE_SFIXED64,
    "d": F.TYPE_DOUBLE,
    "f": F.TYPE_FLOAT,
    "i32": F.TYPE_INT32,
}


def _numbers_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/numbers.proto",
        package=_NUMBERS_PACKAGE,
        syntax="proto3",
        dependency=[any_pb2.DESCRIPTOR.name, struct_pb2.DESCRIPTOR.name, wrappers_pb2.DESCRIPTOR.name],
    )
    numbers = file.message_type.add(name="Numbers")
    for number, (name, kind) in enumerate(NUMBER_FIELDS.items(), start=1):
        numbers.field.add(name=name, number=number, type=kind, label=_OPTIONAL)
    numbers.field.add(name="many", number=20, type=F.TYPE_INT64, label=_REPEATED)
    numbers.field.add(name="doubles", number=21, type=F.TYPE_DOUBLE, label=_REPEATED)
    owner = f"{_NUMBERS_PACKAGE}.Numbers"
    add_map(numbers, owner, "by_name", 22, F.TYPE_STRING, F.TYPE_INT64)
    add_map(numbers, owner, "ratios", 23, F.TYPE_STRING, F.TYPE_DOUBLE)
    add_map(numbers, owner, "anys", 29, F.TYPE_STRING, F.TYPE_MESSAGE, ".google.protobuf.Any")
    for number, (name, type_name) in enumerate(
        [
            ("wrapped", ".google.protobuf.Int64Value"),
            ("doc", ".google.protobuf.Struct"),
            ("extra", ".google.protobuf.Any"),
            ("child", f".{_NUMBERS_PACKAGE}.Numbers"),
        ],
        start=24,
    ):
        numbers.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=type_name)
    numbers.field.add(name="text", number=28, type=F.TYPE_STRING, label=_OPTIONAL)
    return file


def _required_file() -> descriptor_pb2.FileDescriptorProto:
    """proto2: required fields (one labelled, so a policy masks it) and an extension."""
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/required.proto",
        package="labelgaterequired",
        syntax="proto2",
        dependency=["labelgate/v1/classification.proto", any_pb2.DESCRIPTOR.name],
    )
    part = file.message_type.add(name="Part")
    part.field.add(name="code", number=1, type=F.TYPE_STRING, label=_REQUIRED)
    plain = file.message_type.add(name="Plain")
    plain.field.add(name="note", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    record = file.message_type.add(name="Record")
    record.field.add(name="name", number=1, type=F.TYPE_STRING, label=_REQUIRED)
    for name, number, kind, label in [
        ("acct", 2, F.TYPE_INT64, "confidential"),
        ("rank", 3, F.TYPE_INT32, "confidential"),
    ]:
        field = record.field.add(name=name, number=number, type=kind, label=_REQUIRED)
        field.options.Extensions[classification_pb2.labels].append(label)
    record.field[-1].default_value = "7"  # rank: a declared default
    for name, number, type_name in [("part", 4, "Part"), ("plain", 5, "Plain")]:
        field = record.field.add(
            name=name,
            number=number,
            type=F.TYPE_MESSAGE,
            label=_REQUIRED,
            type_name=f".labelgaterequired.{type_name}",
        )
        field.options.Extensions[classification_pb2.labels].append("restricted")
    record.field.add(name="count", number=6, type=F.TYPE_INT64, label=_REQUIRED)
    # A message that nests itself and takes extensions: one at any depth of an Any's contents.
    box = file.message_type.add(name="Box")
    box.field.add(name="note", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    box.field.add(
        name="child", number=2, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".labelgaterequired.Box"
    )
    box.field.add(
        name="extra", number=3, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".google.protobuf.Any"
    )
    box.extension_range.add(start=100, end=200)
    file.extension.add(
        name="hidden", number=100, type=F.TYPE_STRING, label=_OPTIONAL, extendee=".labelgaterequired.Box"
    )
    # A routed service answering Records.
    service = file.service.add(name="Records")
    service.method.add(
        name="Get", input_type=".labelgaterequired.Plain", output_type=".labelgaterequired.Record"
    )
    return file


def _message(name: str) -> type:
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))


descriptor_pool.Default().Add(_numbers_file())
descriptor_pool.Default().Add(_required_file())
Numbers = _message("labelgatenumbers.Numbers")
Record = _message("labelgaterequired.Record")
Part = _message("labelgaterequired.Part")
Plain = _message("labelgaterequired.Plain")
Box = _message("labelgaterequired.Box")
HIDDEN = descriptor_pool.Default().FindExtensionByName("labelgaterequired.hidden")
RECORDS = descriptor_pool.Default().FindServiceByName("labelgaterequired.Records")
