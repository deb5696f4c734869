"""Text packed into the bytes of a routed reply's number fields, through a real gateway.

An upstream answers a routed unary method and a server stream with replies whose ``repeated
double``, ``float``, ``fixed64``, ``int64`` fields (and a ``map<string, double>``) carry
``SSN 123-45-6789 card 4111111111111111`` in their values' little-endian bytes, or in NaN
payloads; every field is labelled public. A client reading them back with
``np.array(reply.xs, "<f8").tobytes()`` read the SSN and the card (review); now what is found
labels the field (``classify/message_bytes.py``) and a caller with no groups gets its values
zeroed (a map cleared), on unary calls and on streams of either ``split_values`` kind. An
embedding's random floats come back as they were.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc  # type: ignore[import-untyped]

from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO

SERVICE = "labelgate.test.packed.Packed"
PACKED_PROTO = """syntax = "proto3";
package labelgate.test.packed;
import "labelgate/v1/classification.proto";
service Packed {
  rpc Get(Ask) returns (Reading) {}
  rpc Stream(Ask) returns (stream Reading) {}
}
message Ask {}
message Reading {
  string note = 1 [(labelgate.v1.labels) = "public"];
  repeated double embedding = 2 [(labelgate.v1.labels) = "public"];
  repeated float scores = 3 [(labelgate.v1.labels) = "public"];
  repeated fixed64 ids = 4 [(labelgate.v1.labels) = "public"];
  repeated int64 counts = 5 [(labelgate.v1.labels) = "public"];
  map<string, double> weights = 6 [(labelgate.v1.labels) = "public"];
}
"""
SECRET = b"SSN 123-45-6789 card 4111111111111111 "
# Field -> the dtype a client packs its values back in.
DTYPES = {"embedding": "<f8", "scores": "<f4", "ids": "<u8", "counts": "<i8"}


def packed_descriptor_set(folder: Path) -> Path:
    (folder / "packed.proto").write_text(PACKED_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "packed.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "packed.proto"]) == 0
    return out


def reading_type(descriptors: Path) -> Any:
    """``Reading`` from a pool of its own (the gateway loads the set itself)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("labelgate.test.packed.Reading"))


def packed(dtype: str) -> list[Any]:
    size = np.dtype(dtype).itemsize
    values: list[Any] = np.frombuffer(SECRET + b" " * (-len(SECRET) % size), dtype=dtype).tolist()
    return values


def nan_payloads() -> list[float]:
    chunks = [SECRET[start : start + 6].ljust(6) for start in range(0, len(SECRET), 6)]
    return [struct.unpack("<d", chunk + b"\xf8\x7f")[0] for chunk in chunks]


def shown(reading: Any) -> bytes:
    """Every byte a client reads back out of ``reading``'s number fields."""
    numbers = b"".join(
        np.array(getattr(reading, name), dtype=dtype).tobytes() for name, dtype in DTYPES.items()
    )
    mantissas = b"".join(np.array([value], dtype="<f8").tobytes()[:6] for value in reading.embedding)
    return numbers + mantissas + np.array(list(reading.weights.values()), dtype="<f8").tobytes()


def leaked(reading: Any) -> bool:
    data = shown(reading)
    return any(piece in data for piece in (b"123-45", b"45-6789", b"4111111", b"1111111111"))


def planted(Reading: Any) -> list[Any]:
    """One reply per way of packing the text, as the upstream sends them."""
    return [
        *(Reading(note="a reply", **{name: packed(dtype)}) for name, dtype in DTYPES.items()),
        Reading(embedding=nan_payloads()),
        Reading(weights={f"k{index}": value for index, value in enumerate(packed("<f8"))}),
    ]


@pytest.mark.parametrize("split_values", ["per_message", "hold"])
async def test_text_packed_in_number_fields_does_not_reach_a_caller_without_groups(
    tmp_path: Path, split_values: str
) -> None:
    descriptors = packed_descriptor_set(tmp_path)
    Reading = reading_type(descriptors)
    replies = planted(Reading)
    assert all(leaked(reply) for reply in replies)  # what the caller read before
    embedding = [random.Random(3).gauss(0.0, 1.0) for _ in range(256)]
    control = Reading(note="a reply", embedding=embedding, scores=[0.25, 0.75], counts=[3, 1, 224, 224])
    sent: list[Any] = []

    async def get(request: bytes, context: Any) -> bytes:
        answer: bytes = sent[-1].SerializeToString()
        return answer

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for reply in [*replies, control]:
            yield reply.SerializeToString()

    handlers: dict[str, Any] = {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    route = {
        "method_prefix": f"/{SERVICE}/",
        "descriptor_set": str(descriptors),
        "split_values": split_values,
    }
    async with (
        serving_grpc(SERVICE, handlers) as (upstream, _),
        gateway_in_process(upstream, routes=[route]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        unary: Any = channel.unary_unary(f"/{SERVICE}/Get")
        streaming: Any = channel.unary_stream(f"/{SERVICE}/Stream")
        for reply in replies:
            sent.append(reply)
            got = Reading.FromString(await unary(b"", metadata=token("alice"), timeout=10))
            assert not leaked(got)
            assert got.note == reply.note  # the rest of the reply stays
        sent.append(control)
        assert Reading.FromString(await unary(b"", metadata=token("alice"), timeout=10)) == control
        streamed = [
            Reading.FromString(message)
            async for message in streaming(b"", metadata=token("alice"), timeout=10)
        ]
    assert len(streamed) == len(replies) + 1
    assert not any(leaked(got) for got in streamed)
    assert streamed[-1] == control
