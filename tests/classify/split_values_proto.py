"""Test-only message types for routed token streams (``split_values: hold``): a proto2 token
with a string, a bytes field, Anys (single, repeated, map values) and a nested message, and a
service streaming them. proto2, so a string that is not UTF-8 parses (protobuf hands it over
as bytes).

Built at import into the default descriptor pool (its own file and package).
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from tests.classify.proto_files import add_map

_PACKAGE = "labelgateheld"
_OPTIONAL, _REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
_ANY = ".google.protobuf.Any"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/held.proto",
        package=_PACKAGE,
        syntax="proto2",
        dependency=[any_pb2.DESCRIPTOR.name],
    )
    note = file.message_type.add(name="Note")
    note.field.add(name="text", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    note.field.add(name="data", number=2, type=F.TYPE_BYTES, label=_OPTIONAL)
    token = file.message_type.add(name="Token")
    token.field.add(name="text", number=1, type=F.TYPE_STRING, label=_OPTIONAL)
    token.field.add(name="data", number=2, type=F.TYPE_BYTES, label=_OPTIONAL)
    token.field.add(name="extra", number=3, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=_ANY)
    token.field.add(name="extras", number=4, type=F.TYPE_MESSAGE, label=_REPEATED, type_name=_ANY)
    token.field.add(
        name="note", number=5, type=F.TYPE_MESSAGE, label=_OPTIONAL, type_name=f".{_PACKAGE}.Note"
    )
    token.field.add(name="chunks", number=6, type=F.TYPE_BYTES, label=_REPEATED)
    owner = f"{_PACKAGE}.Token"
    add_map(token, owner, "anys", 7, F.TYPE_STRING, F.TYPE_MESSAGE, _ANY)
    add_map(token, owner, "blobs", 8, F.TYPE_STRING, F.TYPE_BYTES)
    add_map(token, owner, "tags", 9, F.TYPE_STRING, F.TYPE_STRING)
    service = file.service.add(name="Tokens")
    service.method.add(
        name="Stream",
        input_type=f".{_PACKAGE}.Note",
        output_type=f".{_PACKAGE}.Token",
        server_streaming=True,
    )
    return file


descriptor_pool.Default().Add(_file())
Note = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.Note"))
Token = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.Token"))
TOKENS = descriptor_pool.Default().FindServiceByName(f"{_PACKAGE}.Tokens")
