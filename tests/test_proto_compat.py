"""Our Open Inference Protocol protos are wire-compatible with Triton's (as shipped in tritonclient).

Ours declare a subset of Triton's extension messages (``model_extensions.proto``): every field
we declare must have Triton's name, number, type and label, and every enum value Triton's
number, so a wrong number fails here; fields we leave out are simply dropped on the wire.

tritonclient's protos cannot be imported next to ours (both register ``inference.*`` in
protobuf's default pool), so a child process hands over tritonclient's serialized
``FileDescriptorProto`` as JSON; parsing it into a ``descriptor_pb2.FileDescriptorProto``
registers nothing, so both can be compared here field by field and method by method.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from labelgate._proto.inference import model_extensions_pb2, open_inference_pb2

CHILD = """
import base64, json, sys
from tritonclient.grpc import model_config_pb2, service_pb2
files = [service_pb2.DESCRIPTOR.serialized_pb, model_config_pb2.DESCRIPTOR.serialized_pb]
json.dump({"files": [base64.b64encode(f).decode() for f in files]}, sys.stdout)
"""

# Fields of ours that Triton's proto does not have. Wire-compatible (parsers skip unknown
# fields), but listed one by one so that any new divergence fails this test.
ONLY_IN_OURS = {
    ".inference.ModelMetadataResponse.properties",
    ".inference.ModelMetadataResponse.PropertiesEntry",
}

FieldShape = tuple[int, int, int, str, str | None]


def triton_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """Triton's grpc_service.proto, then its model_config.proto."""
    completed = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return [
        descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
        for serialized in json.loads(completed.stdout)["files"]
    ]


def our_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """Our service file, then the file of Triton's extension messages."""
    return [
        descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        for module in (open_inference_pb2, model_extensions_pb2)
    ]


def all_messages(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, dict[str, FieldShape]]:
    return {name: fields for file in files for name, fields in messages(file).items()}


def enums(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, dict[str, int]]:
    """Full enum name (top level or nested in a message) -> value name -> number."""
    found: dict[str, dict[str, int]] = {}

    def walk(prefix: str, message_types, enum_types) -> None:
        for enum in enum_types:
            found[f"{prefix}.{enum.name}"] = {value.name: value.number for value in enum.value}
        for message in message_types:
            walk(f"{prefix}.{message.name}", message.nested_type, message.enum_type)

    for file in files:
        walk(f".{file.package}", file.message_type, file.enum_type)
    return found


def messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, dict[str, FieldShape]]:
    """Full message name -> field name -> (number, type, label, type name, real oneof)."""
    found: dict[str, dict[str, FieldShape]] = {}

    def walk(prefix: str, message_types) -> None:
        for message in message_types:
            name = f"{prefix}.{message.name}"
            fields = {}
            for field in message.field:
                # proto3 `optional` makes a synthetic oneof; it changes presence, not the wire.
                oneof = None
                if field.HasField("oneof_index") and not field.proto3_optional:
                    oneof = message.oneof_decl[field.oneof_index].name
                fields[field.name] = (field.number, field.type, field.label, field.type_name, oneof)
            found[name] = fields
            walk(name, message.nested_type)

    walk(f".{file.package}", file.message_type)
    return found


def methods(file: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple[str, str, bool, bool]]:
    return {
        f"{service.name}.{method.name}": (
            method.input_type,
            method.output_type,
            method.client_streaming,
            method.server_streaming,
        )
        for service in file.service
        for method in service.method
    }


@pytest.fixture(scope="module")
def files() -> tuple[list[descriptor_pb2.FileDescriptorProto], list[descriptor_pb2.FileDescriptorProto]]:
    return our_files(), triton_files()


def test_same_package(files) -> None:
    ours, triton = files
    assert {f.package for f in ours} == {f.package for f in triton} == {"inference"}


def test_every_message_field_matches_triton(files) -> None:
    ours, triton = all_messages(files[0]), all_messages(files[1])
    problems = []
    for message, fields in ours.items():
        if message in ONLY_IN_OURS:
            continue
        if message not in triton:
            problems.append(f"{message}: not in Triton's proto")
            continue
        theirs = triton[message]
        their_names_by_number = {shape[0]: name for name, shape in theirs.items()}
        for name, shape in fields.items():
            if f"{message}.{name}" in ONLY_IN_OURS:
                assert shape[0] not in their_names_by_number, (
                    f"{message}.{name}: Triton uses number {shape[0]}"
                )
                continue
            if name not in theirs:
                problems.append(f"{message}.{name}: not in Triton's proto")
            elif theirs[name] != shape:
                problems.append(f"{message}.{name}: ours {shape}, Triton {theirs[name]}")
            if their_names_by_number.get(shape[0], name) != name:
                problems.append(
                    f"{message}.{name}: number {shape[0]} is {their_names_by_number[shape[0]]} in Triton"
                )
    assert not problems, "\n".join(problems)
    # The comparison covered the messages that matter, so it can fail.
    assert {
        ".inference.ModelInferRequest.InferInputTensor",
        ".inference.ModelStreamInferResponse",
        ".inference.ModelConfig",
        ".inference.ModelInput",
        ".inference.ModelStatistics",
        ".inference.InferStatistics",
        ".inference.RepositoryIndexResponse.ModelIndex",
        ".inference.RepositoryModelLoadRequest",
        ".inference.ModelRepositoryParameter",
    } <= set(ours)


def test_every_enum_value_matches_triton(files) -> None:
    ours, triton = enums(files[0]), enums(files[1])
    assert {".inference.DataType", ".inference.ModelInput.Format"} <= set(ours)
    for name, values in ours.items():
        assert name in triton, f"{name}: not in Triton's protos"
        assert values.items() <= triton[name].items(), f"{name}: ours {values}, Triton {triton[name]}"


def test_every_method_matches_triton(files) -> None:
    ours, triton = methods(files[0][0]), methods(files[1][0])
    assert "GRPCInferenceService.ModelStreamInfer" in ours
    for name, shape in ours.items():
        assert triton.get(name) == shape, f"{name}: ours {shape}, Triton {triton.get(name)}"
    assert ours["GRPCInferenceService.ModelStreamInfer"][2:] == (True, True)
    extensions = ("ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad")
    assert {f"GRPCInferenceService.{name}" for name in extensions} <= set(ours)


def test_allowed_divergences_are_still_divergences(files) -> None:
    # When Triton gains a field we list, the list must shrink (and be compared again).
    triton = all_messages(files[1])
    assert "properties" not in triton[".inference.ModelMetadataResponse"]
    assert ".inference.ModelMetadataResponse.PropertiesEntry" not in triton
