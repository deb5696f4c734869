"""Values written backwards inside a RIGHT-TO-LEFT OVERRIDE, through a real gateway.

A browser or any bidi-aware renderer shows ``ssn \\u202e9876-54-321\\u202c`` as ``ssn
123-45-6789``: the override reverses its run. An upstream answering a ``ModelInfer`` BYTES
output and a routed typed string field so (an SSN, a card and a ``sk_live_`` key each
reversed in its own override, and the same behind a right-to-left isolate) must not reach a
caller with no groups as it is: ``folding`` reads the text in the order a reader sees it
(``display_order``), and a value only that order shows spans the text whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc  # type: ignore[import-untyped]

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.gateway.test_routes import gateway_in_process, token
from tests.support.grpc_servers import serving_services
from tests.support.procs import REPO

SERVICE = "labelgate.test.bidi.Notes"
INFERENCE = "inference.GRPCInferenceService"
NOTES_PROTO = """syntax = "proto3";
package labelgate.test.bidi;
import "labelgate/v1/classification.proto";
service Notes { rpc Get(Ask) returns (Note) {} }
message Ask {}
message Note { string text = 1 [(labelgate.v1.labels) = "public"]; }
"""
SSN, CARD, KEY = "123-45-6789", "4111 1111 1111 1111", "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
RLO, PDF, RLI, PDI = "\u202e", "\u202c", "\u2067", "\u2069"
TEXTS = {
    "plain": f"ssn {SSN} card {CARD} key {KEY}",
    "overridden": f"ssn {RLO}{SSN[::-1]}{PDF} card {RLO}{CARD[::-1]}{PDF} key {RLO}{KEY[::-1]}{PDF}",
    "isolated": f"ssn {RLI}{RLO}{SSN[::-1]}{PDF}{PDI} card {RLI}{RLO}{CARD[::-1]}{PDF}{PDI}",
}
# What the caller must not get, as written and as shown: the values, reversed or not.
WRITTEN = [value.encode() for value in (SSN, CARD, KEY)]
NEEDLES = [*WRITTEN, *(value[::-1] for value in WRITTEN)]


def notes_descriptor_set(folder: Path) -> Path:
    (folder / "notes.proto").write_text(NOTES_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    out = folder / "notes.binpb"
    args = ["protoc", f"-I{folder}", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "notes.proto"]) == 0
    return out


def note_type(descriptors: Path) -> Any:
    """``Note`` from a pool of its own (the gateway loads the set itself)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("labelgate.test.bidi.Note"))


# The catalog labels every output of this model public: what the caller gets is what the
# detectors leave of it.
MODEL = "sentiment"


def infer_reply(text: str) -> bytes:
    reply = pb.ModelInferResponse(model_name=MODEL, id="1")
    oip.encode_outputs(reply, [Tensor("text", "BYTES", [1], [text.encode()])], raw=True)
    return reply.SerializeToString()


@pytest.mark.parametrize("name", list(TEXTS))
async def test_values_reversed_in_an_override_are_masked_for_a_caller_without_groups(
    tmp_path: Path, name: str
) -> None:
    descriptors = notes_descriptor_set(tmp_path)
    Note = note_type(descriptors)
    text = TEXTS[name]

    async def note(request: bytes, context: Any) -> bytes:
        reply: bytes = Note(text=text).SerializeToString()
        return reply

    async def infer(request: bytes, context: Any) -> bytes:
        return infer_reply(text)

    services: dict[str, dict[str, Any]] = {
        SERVICE: {"Get": grpc.unary_unary_rpc_method_handler(note)},
        INFERENCE: {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},
    }
    route = {"method_prefix": f"/{SERVICE}/", "descriptor_set": str(descriptors)}
    async with (
        serving_services(services) as (upstream, _),
        gateway_in_process(upstream, routes=[route]) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        get: Any = channel.unary_unary(f"/{SERVICE}/Get")
        routed = await get(b"", metadata=token("alice"), timeout=10)
        model_infer: Any = channel.unary_unary(f"/{INFERENCE}/ModelInfer")
        request = pb.ModelInferRequest(model_name=MODEL, id="1")
        inferred = await model_infer(request.SerializeToString(), metadata=token("alice"), timeout=10)
    assert inferred, f"{name}: nothing released"  # a masked field may clear a message whole
    for what, data in (("routed string field", routed), ("ModelInfer BYTES output", inferred)):
        leaked = [needle for needle in NEEDLES if needle in data]
        assert not leaked, f"{name} {what}: released {leaked}"
    assert Note.FromString(routed).text != text
    [output] = oip.decode_outputs(pb.ModelInferResponse.FromString(inferred))
    assert output.values != [text.encode()]


def code_point_reply(text: str, datatype: str) -> bytes:
    """``text`` as a tensor of its code points (a character-level model's output; floats
    are read back with ``chr(int(x))``)."""
    reply = pb.ModelInferResponse(model_name=MODEL, id="1")
    codes: list[Any] = [ord(char) for char in text]
    if datatype.startswith("FP"):
        codes = [float(code) for code in codes]
    oip.encode_outputs(reply, [Tensor("text", datatype, [len(text)], codes)], raw=True)
    return reply.SerializeToString()


# FP32 and FP64 after review (ninth round): float code points went out (FP16 and BF16 cannot
# hold the override's code point; ``classify/test_float_code_points.py`` reads them too).
@pytest.mark.parametrize("datatype", ["INT32", "UINT32", "INT64", "FP32", "FP64"])
@pytest.mark.parametrize("name", ["overridden", "isolated", "harmless"])
async def test_values_reversed_in_an_override_as_code_points_are_masked(name: str, datatype: str) -> None:
    """The same texts as an integer tensor of code points: a client turning them into text
    with ``chr`` shows the values forwards, so the tensor is read in display order too
    (10,000 token ids hold right-to-left code points and the controls' own all the time:
    the native algorithm reads them in about a millisecond). Text without a value in any
    order comes through as it is."""
    text = {**TEXTS, "harmless": f"note {RLO}olleh{PDF} \u05d0 12 34"}[name]

    async def infer(request: bytes, context: Any) -> bytes:
        return code_point_reply(text, datatype)

    services = {INFERENCE: {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}}
    async with (
        serving_services(services) as (upstream, _),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        model_infer: Any = channel.unary_unary(f"/{INFERENCE}/ModelInfer")
        request = pb.ModelInferRequest(model_name=MODEL, id="1")
        inferred = await model_infer(request.SerializeToString(), metadata=token("alice"), timeout=10)
    [output] = oip.decode_outputs(pb.ModelInferResponse.FromString(inferred))
    shown = "".join(chr(int(code)) for code in output.values if 0 < code < 0x110000)
    if name == "harmless":
        assert shown == text
    else:
        assert not [value for value in (SSN, CARD, KEY) if value[::-1] in shown], f"released {shown!r}"


def encoded_reply(data: bytes, datatype: str) -> bytes:
    reply = pb.ModelInferResponse(model_name=MODEL, id="1")
    tensor = (
        Tensor("text", "BYTES", [1], [data])
        if datatype == "BYTES"
        else Tensor("text", "UINT8", [len(data)], list(data))
    )
    oip.encode_outputs(reply, [tensor], raw=True)
    return reply.SerializeToString()


@pytest.mark.parametrize("datatype", ["BYTES", "UINT8"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-be", "gb18030"])
@pytest.mark.parametrize("name", ["overridden", "isolated", "harmless"])
async def test_values_reversed_in_an_override_in_another_encoding_are_masked(
    name: str, encoding: str, datatype: str
) -> None:
    """The same texts in UTF-16, UTF-32 or GB18030 (review, ninth round: decoded otherwise
    than as UTF-8 they were not read in display order, and went out): a reader decoding
    them so shows the values forwards. Text without a value in any order comes through."""
    text = {**TEXTS, "harmless": f"note {RLO}olleh{PDF} \u05d0 12 34"}[name]
    data = text.encode(encoding)

    async def infer(request: bytes, context: Any) -> bytes:
        return encoded_reply(data, datatype)

    services: dict[str, dict[str, Any]] = {
        INFERENCE: {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    }
    async with (
        serving_services(services) as (upstream, _),
        gateway_in_process(upstream) as listen,
        grpc.aio.insecure_channel(listen) as channel,
    ):
        model_infer: Any = channel.unary_unary(f"/{INFERENCE}/ModelInfer")
        request = pb.ModelInferRequest(model_name=MODEL, id="1")
        inferred = await model_infer(request.SerializeToString(), metadata=token("alice"), timeout=10)
    [output] = oip.decode_outputs(pb.ModelInferResponse.FromString(inferred))
    released = (output.values[0] or b"") if datatype == "BYTES" else bytes(output.values)
    if name == "harmless":
        assert released == data
    else:
        needles = [value.encode(encoding) for value in (SSN, CARD, KEY)]
        needles += [value[::-1].encode(encoding) for value in (SSN, CARD, KEY)]
        leaked = [needle for needle in needles if needle in released]
        assert not leaked, f"{name} {encoding} {datatype}: released {leaked}"
