"""Whole numbers in float and double fields of a routed typed reply, through a real gateway.

An upstream answers a routed unary method with what a test plants: code points or a split
card in ``repeated double`` / ``repeated float`` fields (and in a double field of repeated
messages), every field labelled public. A JavaScript client reads those back as it reads an
int list (``String.fromCharCode``, ``join``), so a caller with no groups gets them zeroed,
as integer fields are (``classify/messages.py``: ``_as_integers``); an embedding's
fractions pass as they are.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc  # type: ignore[import-untyped]

from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO

SERVICE = "labelgate.test.floats.Floats"
FLOATS_PROTO = """syntax = "proto3";
package labelgate.test.floats;
import "labelgate/v1/classification.proto";
service Floats { rpc Get(Ask) returns (Reading) {} }
message Ask {}
message Point { double v = 1 [(labelgate.v1.labels) = "public"]; }
message Reading {
  repeated double codes = 1 [(labelgate.v1.labels) = "public"];
  repeated float parts = 2 [(labelgate.v1.labels) = "public"];
  repeated double embedding = 3 [(labelgate.v1.labels) = "public"];
  repeated Point points = 4 [(labelgate.v1.labels) = "public"];
}
"""
SSN_CODES = [float(ord(character)) for character in "123-45-6789"]
CARD_PARTS = [4111.0, 1111.0, 1111.0, 1111.0]


def floats_descriptor_set(folder: Path) -> Path:
    (folder / "floats.proto").write_text(FLOATS_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "floats.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "floats.proto"]) == 0
    return out


def reading_types(descriptors: Path) -> tuple[Any, Any]:
    """``Reading`` and ``Point`` from a pool of their own (the gateway loads the set itself)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file:
        pool.Add(file)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"labelgate.test.floats.{name}"))
        for name in ("Reading", "Point")
    )


async def test_whole_numbers_in_float_fields_are_zeroed_for_a_caller_without_groups(tmp_path: Path) -> None:
    descriptors = floats_descriptor_set(tmp_path)
    Reading, Point = reading_types(descriptors)
    embedding = [random.Random(3).uniform(-1.0, 1.0) for _ in range(64)]
    planted: list[bytes] = []

    async def answer(request: bytes, context: Any) -> bytes:
        return planted[-1]

    handlers: dict[str, Any] = {"Get": grpc.unary_unary_rpc_method_handler(answer)}
    route = {"method_prefix": f"/{SERVICE}/", "descriptor_set": str(descriptors)}
    async with (
        serving_grpc(SERVICE, handlers) as (upstream, _),
        gateway_in_process(upstream, routes=[route]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        get: Any = channel.unary_unary(f"/{SERVICE}/Get")

        async def call(reading: Any) -> Any:
            planted.append(reading.SerializeToString())
            return Reading.FromString(await get(b"", metadata=token("alice"), timeout=10))

        got = await call(Reading(codes=SSN_CODES, parts=CARD_PARTS, embedding=embedding))
        assert list(got.codes) == [0.0] * len(SSN_CODES)
        assert list(got.parts) == [0.0] * len(CARD_PARTS)
        assert list(got.embedding) == embedding  # fractions: not read as integers, kept
        got = await call(Reading(points=[Point(v=code) for code in SSN_CODES]))
        assert [point.v for point in got.points] == [0.0] * len(SSN_CODES)
        control = Reading(parts=[1.0, 3.0, 224.0, 224.0], embedding=embedding)
        assert await call(control) == control  # a shape stored as floats is no data
