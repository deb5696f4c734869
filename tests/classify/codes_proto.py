"""Test-only message type: repeated integers of every kind, packed and not, maps with integer
values, nesting and strings, for integers read as character codes (``classify.messages``).

Built at import into the default descriptor pool (its own file and package, so it cannot
clash with real protos or with the other test protos).
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from tests.classify.proto_files import add_map

_OPTIONAL, _REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
_PACKAGE = "labelgatecodes"
# Each repeated integer field of ``Codes``: name -> type (proto3 packs them; ``*_unpacked`` not).
INTEGER_FIELDS = {
    "i32": F.TYPE_INT32,
    "s32": F.TYPE_SINT32,
    "u32": F.TYPE_UINT32,
    "f32": F.TYPE_FIXED32,
    "sf32": F.TYPE_SFIXED32,
    "i64": F.TYPE_INT64,
    "s64": F.TYPE_SINT64,
    "u64": F.TYPE_UINT64,
    "f64": F.TYPE_FIXED64,
    "sf64": F.TYPE_SFIXED64,
    "i32_unpacked": F.TYPE_INT32,
    "i64_unpacked": F.TYPE_INT64,
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/codes.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[any_pb2.DESCRIPTOR.name],
    )
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_NONE", number=0)
    codes = file.message_type.add(name="Codes")
    for number, (name, kind_type) in enumerate(INTEGER_FIELDS.items(), start=1):
        field = codes.field.add(name=name, number=number, type=kind_type, label=_REPEATED)
        if name.endswith("_unpacked"):
            field.options.packed = False
    codes.field.add(name="kinds", number=20, type=F.TYPE_ENUM, label=_REPEATED, type_name=f".{_PACKAGE}.Kind")
    codes.field.add(name="flags", number=21, type=F.TYPE_BOOL, label=_REPEATED)
    codes.field.add(name="doubles", number=22, type=F.TYPE_DOUBLE, label=_REPEATED)
    owner = f"{_PACKAGE}.Codes"
    add_map(codes, owner, "by_name", 23, F.TYPE_STRING, F.TYPE_INT64)
    add_map(codes, owner, "by_id", 24, F.TYPE_INT32, F.TYPE_UINT32)
    add_map(codes, owner, "nested", 25, F.TYPE_STRING, F.TYPE_MESSAGE, f".{_PACKAGE}.Codes")
    add_map(codes, owner, "attrs", 26, F.TYPE_STRING, F.TYPE_STRING)
    codes.field.add(
        name="children", number=27, type=F.TYPE_MESSAGE, label=_REPEATED, type_name=f".{_PACKAGE}.Codes"
    )
    codes.field.add(
        name="child", number=28, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=f".{_PACKAGE}.Codes"
    )
    codes.field.add(name="text", number=29, type=F.TYPE_STRING, label=_OPTIONAL)
    codes.field.add(name="lines", number=30, type=F.TYPE_STRING, label=_REPEATED)
    codes.field.add(name="blob", number=31, type=F.TYPE_BYTES, label=_OPTIONAL)
    codes.field.add(
        name="extra", number=32, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=".google.protobuf.Any"
    )
    return file


descriptor_pool.Default().Add(_file())
Codes = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.Codes"))
