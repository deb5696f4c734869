"""Replies are built from decided parts: nothing of the upstream's message object survives."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Classification
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.parameters import Parameter, classify_parameters, released_parameters
from labelgate.enforce import apply_masks
from labelgate.enforce import replies as build
from labelgate.enforce.strategies import Mask, Masker, MaskIndex
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs

KEY = b"replies-test-hash-key-0123456789"


def test_the_reply_holds_the_callers_id_and_model_and_only_decided_parts() -> None:
    tensors = [Tensor("score", "FP32", [2], [0.25, 0.5]), Tensor("text", "BYTES", [1], [b"hello"])]
    reply = build.infer_response(
        model="m", model_version="2", caller_id="caller-1", tensors=tensors, raw=True
    )
    assert (reply.model_name, reply.model_version, reply.id) == ("m", "2", "caller-1")
    assert not reply.parameters
    assert [t.values for t in decode_outputs(reply)] == [[0.25, 0.5], [b"hello"]]


def test_masked_outputs_are_marked() -> None:
    tensors = [Tensor("score", "FP32", [1], [0.75]), Tensor("ok", "INT64", [1], [3])]
    masks = [Mask("outputs.score", "null")]
    masked = apply_masks(tensors, Classification(fields=[]), masks, KEY)
    markers = build.masked_markers(tensors, masked, MaskIndex(masks))
    assert markers == {"score": "null"}
    reply = build.infer_response(
        model="m", model_version="", caller_id="", tensors=masked, raw=False, markers=markers
    )
    assert reply.outputs[0].parameters[build.MASKED_PARAMETER].string_param == "null"
    assert build.MASKED_PARAMETER not in reply.outputs[1].parameters
    assert reply.outputs[0].contents.fp32_contents[:] == [0.0]


def test_parameters_masked_by_policy_are_dropped_or_rewritten() -> None:
    upstream = pb.ModelInferResponse()
    upstream.parameters["note"].string_param = "call 123-45-6789 now"
    upstream.parameters["count"].int64_param = 123456789
    released = {"note": "internal", "count": "internal"}
    classified = classify_parameters(released_parameters(upstream, released), released, DetectorSet.default())
    masks = [Mask("parameters.note{us_ssn}", "redact"), Mask("parameters.count", "null")]
    kept = build.decided_parameters(classified, MaskIndex(masks), Masker(KEY, masks))
    assert [(p.name, p.value) for p in kept] == [("note", "call [REDACTED] now")]


def test_stream_errors_carry_a_stable_text_and_the_callers_id() -> None:
    reply = build.stream_error("mine", "customer-profile")
    assert reply.error_message == build.STREAM_ERROR_TEXT
    assert (reply.infer_response.id, reply.infer_response.model_name) == ("mine", "customer-profile")
    assert not reply.infer_response.outputs and not reply.infer_response.parameters


def test_extensions_are_removed_at_any_depth() -> None:
    # FieldOptions is extendable, and descriptor.proto's own tests do not depend on ours.
    message = descriptor_pb2.FileDescriptorProto(name="a.proto")
    field = message.message_type.add(name="M").field.add(name="f")
    from labelgate._proto.labelgate.v1 import classification_pb2

    field.options.Extensions[classification_pb2.labels].append("secret-label")
    assert field.options.ListFields()
    build.without_extensions(message)
    assert not message.message_type[0].field[0].options.ListFields()


def _large_reply() -> pb.ModelInferResponse:
    rows = 20_000  # raw outputs past the size from which they are joined, not re-buffered
    tensors = [
        Tensor("id", "INT64", [rows], list(range(rows))),
        Tensor("note", "BYTES", [rows], [f"row {i} ".encode() * (i % 7) for i in range(rows)]),
        Tensor("empty", "BYTES", [0], []),
    ]
    parameters = [
        Parameter("", "sequence_end", True),
        Parameter("note", "source", "crm"),
    ]
    return build.infer_response(
        model="customer-profile",
        model_version="3",
        caller_id="caller-7",
        tensors=tensors,
        raw=True,
        parameters=parameters,
        markers={"note": build.MASKED_IN_PARTS},
    )


def test_a_large_reply_serializes_to_the_bytes_upb_writes() -> None:
    reply = _large_reply()
    assert sum(len(content) for content in reply.raw_output_contents) > 256 * 1024
    assert build.serialized_infer_response(reply) == reply.SerializeToString(deterministic=True)


def test_a_large_reply_parses_back_to_the_same_message() -> None:
    reply = _large_reply()
    again = pb.ModelInferResponse.FromString(build.serialized_infer_response(reply))
    assert again == reply
    assert again.outputs[1].parameters[build.MASKED_PARAMETER].string_param == build.MASKED_IN_PARTS
    assert [t.values for t in decode_outputs(again)] == [t.values for t in decode_outputs(reply)]


def test_small_and_typed_replies_serialize_as_upb_does() -> None:
    tensors = [Tensor("score", "FP32", [2], [0.25, 0.5]), Tensor("text", "BYTES", [1], [b"hello"])]
    for raw in (True, False):
        reply = build.infer_response(model="m", model_version="", caller_id="c", tensors=tensors, raw=raw)
        assert build.serialized_infer_response(reply) == reply.SerializeToString(deterministic=True)
    assert build.serialized_infer_response(pb.ModelInferResponse()) == b""


def test_parameters_are_written_in_key_order() -> None:
    # upb's own order follows its hash tables: two routes over equal replies could differ.
    reply = _large_reply()
    keys = [f"k{i:03d}" for i in range(64)]
    for key in reversed(keys):
        reply.parameters[key].string_param = key
    again = pb.ModelInferResponse()
    again.CopyFrom(reply)
    assert build.serialized_infer_response(reply) == build.serialized_infer_response(again)
    small = pb.ModelInferResponse(model_name="m")
    for key in reversed(keys):
        small.parameters[key].string_param = key
    written = build.serialized_infer_response(small)
    assert [p.key for p in _parameter_entries(written)] == sorted(keys)


def _parameter_entries(data: bytes) -> list[pb.ModelInferResponse.ParametersEntry]:
    """The parameters map entries in the order they were written (field 4)."""
    entries = []
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        length, position = _read_varint(data, position)
        if tag >> 3 == 4:
            entries.append(
                pb.ModelInferResponse.ParametersEntry.FromString(data[position : position + length])
            )
        position += length
    return entries


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position
