"""Our Open Inference Protocol proto is wire-compatible with Triton's (as shipped in tritonclient).

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

from labelgate._proto.inference import open_inference_pb2

CHILD = """
import base64, json, sys
from tritonclient.grpc import service_pb2
json.dump({"file": base64.b64encode(service_pb2.DESCRIPTOR.serialized_pb).decode()}, sys.stdout)
"""

# Fields of ours that Triton's proto does not have. Wire-compatible (parsers skip unknown
# fields), but listed one by one so that any new divergence fails this test.
ONLY_IN_OURS = {
    ".inference.ModelMetadataResponse.properties",
    ".inference.ModelMetadataResponse.PropertiesEntry",
}

FieldShape = tuple[int, int, int, str, str | None]


def triton_file() -> descriptor_pb2.FileDescriptorProto:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    serialized = base64.b64decode(json.loads(completed.stdout)["file"])
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def our_file() -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(open_inference_pb2.DESCRIPTOR.serialized_pb)


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
def files() -> tuple[descriptor_pb2.FileDescriptorProto, descriptor_pb2.FileDescriptorProto]:
    return our_file(), triton_file()


def test_same_package(files) -> None:
    ours, triton = files
    assert ours.package == triton.package == "inference"


def test_every_message_field_matches_triton(files) -> None:
    ours, triton = messages(files[0]), messages(files[1])
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
    assert {".inference.ModelInferRequest.InferInputTensor", ".inference.ModelStreamInferResponse"} <= set(
        ours
    )


def test_every_method_matches_triton(files) -> None:
    ours, triton = methods(files[0]), methods(files[1])
    assert "GRPCInferenceService.ModelStreamInfer" in ours
    for name, shape in ours.items():
        assert triton.get(name) == shape, f"{name}: ours {shape}, Triton {triton.get(name)}"
    assert ours["GRPCInferenceService.ModelStreamInfer"][2:] == (True, True)


def test_allowed_divergences_are_still_divergences(files) -> None:
    # When Triton gains a field we list, the list must shrink (and be compared again).
    triton = messages(files[1])
    assert "properties" not in triton[".inference.ModelMetadataResponse"]
    assert ".inference.ModelMetadataResponse.PropertiesEntry" not in triton
