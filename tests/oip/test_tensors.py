"""The tensor codec: every datatype round-trips in both representations; bad data is refused."""

from __future__ import annotations

import struct

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput
from labelgate.oip.tensors import (
    DATATYPES,
    Tensor,
    decode_inputs,
    decode_outputs,
    encode_inputs,
    encode_outputs,
    split_raw_bytes,
    tensor_to_contents,
    tensor_to_raw,
    uses_raw_inputs,
    uses_raw_outputs,
)

# Values at the edges of each datatype, all exactly representable in it.
SAMPLES: dict[str, list] = {
    "BOOL": [True, False, True, True],
    "INT8": [-128, 0, 1, 127],
    "INT16": [-32768, -1, 2, 32767],
    "INT32": [-(2**31), 0, 7, 2**31 - 1],
    "INT64": [-(2**63), -5, 6, 2**63 - 1],
    "UINT8": [0, 1, 200, 255],
    "UINT16": [0, 1, 40000, 65535],
    "UINT32": [0, 1, 3_000_000_000, 2**32 - 1],
    "UINT64": [0, 1, 2**63, 2**64 - 1],
    "FP16": [0.0, -1.5, 0.333251953125, 65504.0],
    "BF16": [0.0, -2.0, 1.5, 3.3895313892515355e38],
    "FP32": [0.0, -1.25, 3.4028234663852886e38, 0.10000000149011612],
    "FP64": [0.0, -1e-300, 1e300, 0.1],
    "BYTES": [b"", b"hello", "ünïcode".encode(), b"\x00\xff binary"],
}


def test_every_datatype_has_samples() -> None:
    assert set(SAMPLES) == DATATYPES


def wire(message):
    """Serialize and parse, so the test also covers what travels on the network."""
    return type(message).FromString(message.SerializeToString())


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_outputs_round_trip(datatype: str, raw: bool) -> None:
    tensors = [
        Tensor("x", datatype, [2, 2], SAMPLES[datatype]),
        Tensor("ids", "INT64", [2], [1, 2]),
    ]
    response = pb.ModelInferResponse(model_name="m")
    encode_outputs(response, tensors, raw=raw)
    response = wire(response)
    assert uses_raw_outputs(response) is raw
    assert decode_outputs(response) == tensors


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_inputs_round_trip(datatype: str, raw: bool) -> None:
    tensors = [Tensor("in", datatype, [4], SAMPLES[datatype])]
    request = pb.ModelInferRequest(model_name="m")
    encode_inputs(request, tensors, raw=raw)
    request = wire(request)
    assert uses_raw_inputs(request) is raw
    assert decode_inputs(request) == tensors


def test_python_types_per_datatype() -> None:
    response = pb.ModelInferResponse()
    tensors = [Tensor(name, name, [4], SAMPLES[name]) for name in sorted(SAMPLES)]
    for raw in (True, False):
        encode_outputs(response, tensors, raw=raw)
        decoded = {t.name: t.values for t in decode_outputs(response)}
        assert all(type(v) is bool for v in decoded["BOOL"])
        assert all(type(v) is int for v in decoded["UINT64"] + decoded["INT8"])
        assert all(type(v) is float for v in decoded["FP16"] + decoded["FP32"] + decoded["BF16"])
        assert all(type(v) is bytes for v in decoded["BYTES"])


def test_raw_layout_matches_the_protocol() -> None:
    assert tensor_to_raw(Tensor("s", "BYTES", [2], [b"hi", b""])) == b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    assert tensor_to_raw(Tensor("i", "INT32", [2], [1, -1])) == struct.pack("<ii", 1, -1)
    assert tensor_to_raw(Tensor("b", "BOOL", [2], [True, False])) == b"\x01\x00"
    assert tensor_to_raw(Tensor("h", "FP16", [1], [1.0])) == b"\x00\x3c"
    assert tensor_to_raw(Tensor("bf", "BF16", [1], [1.0])) == b"\x80\x3f"


def test_contents_use_the_protocol_fields() -> None:
    assert list(tensor_to_contents(Tensor("i", "INT8", [1], [-3])).int_contents) == [-3]
    assert list(tensor_to_contents(Tensor("u", "UINT16", [1], [9])).uint_contents) == [9]
    assert list(tensor_to_contents(Tensor("h", "FP16", [1], [0.5])).fp32_contents) == [0.5]
    assert list(tensor_to_contents(Tensor("s", "BYTES", [1], ["text"])).bytes_contents) == [b"text"]


def test_scalar_and_empty_shapes() -> None:
    tensors = [Tensor("scalar", "INT64", [], [42]), Tensor("empty", "BYTES", [0, 0], [])]
    for raw in (True, False):
        response = pb.ModelInferResponse()
        encode_outputs(response, tensors, raw=raw)
        assert decode_outputs(wire(response)) == tensors


@pytest.mark.parametrize("raw", [True, False])
def test_an_empty_outputs_shape_carries_nothing_the_upstream_chose(raw: bool) -> None:
    """With no elements, one zero frees every other dimension: ``[0, 4111111111111111]`` carried
    a card through a ``null`` mask. An empty output is released as zeros of its rank; a caller's
    empty input keeps its shape (it is the caller's own)."""
    chosen = [0, 4111111111111111, 123456789, 3]
    response = pb.ModelInferResponse()
    encode_outputs(response, [Tensor("secret", "BYTES", [0], [])], raw=raw)
    response.outputs[0].shape[:] = chosen
    assert decode_outputs(wire(response)) == [Tensor("secret", "BYTES", [0, 0, 0, 0], [])]
    request = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT64", shape=[0, 7])]
    )
    request.raw_input_contents.append(b"")
    assert decode_inputs(request)[0].shape == [0, 7]


def test_an_output_of_more_dimensions_than_any_model_gives_is_refused() -> None:
    many = output("x", "INT64", [1] * 33, int64_contents=[5])
    assert_malformed(pb.ModelInferResponse(outputs=[many]), "has 33 dimensions; at most 32")
    assert decode_outputs(pb.ModelInferResponse(outputs=[output("x", "INT64", [1] * 32, int64_contents=[5])]))


def test_encode_keeps_parameters_and_drops_missing_outputs() -> None:
    response = pb.ModelInferResponse(id="r1")
    encode_outputs(response, [Tensor("a", "BYTES", [1], [b"x"]), Tensor("b", "INT64", [1], [1])], raw=False)
    response.outputs[0].parameters["labelgate.labels"].string_param = "confidential"
    encode_outputs(response, [Tensor("a", "BYTES", [1], [b"[REDACTED]"])], raw=True)
    assert [o.name for o in response.outputs] == ["a"]
    assert response.outputs[0].parameters["labelgate.labels"].string_param == "confidential"
    assert not response.outputs[0].HasField("contents")
    assert decode_outputs(response) == [Tensor("a", "BYTES", [1], [b"[REDACTED]"])]
    assert response.id == "r1"


def test_encode_switches_representation_both_ways() -> None:
    tensors = [Tensor("a", "FP32", [2], [1.0, 2.0])]
    response = pb.ModelInferResponse()
    encode_outputs(response, tensors, raw=True)
    encode_outputs(response, tensors, raw=False)
    assert not uses_raw_outputs(response)
    assert list(response.outputs[0].contents.fp32_contents) == [1.0, 2.0]
    encode_outputs(response, tensors, raw=True)
    assert uses_raw_outputs(response)
    assert not response.outputs[0].HasField("contents")


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([Tensor("a", "INT64", [2], [1])], "has 1 values; shape [2] needs 2"),
        ([Tensor("a", "INT128", [1], [1])], "unknown datatype"),
        ([Tensor("a", "INT8", [1], [128])], "outside -128..127"),
        ([Tensor("a", "UINT64", [1], [-1])], "outside 0.."),
        ([Tensor("a", "INT64", [1], [2**70])], "outside"),
        ([Tensor("a", "INT32", [1], [1.5])], "needs integers"),
        ([Tensor("a", "FP32", [1], ["x"])], "needs numbers"),
        ([Tensor("a", "BOOL", [1], [1])], "non-bool"),
        ([Tensor("a", "BYTES", [1], [3])], "has a int value"),
        ([Tensor("a", "INT64", [1], [1]), Tensor("a", "INT64", [1], [1])], "more than once"),
        ([Tensor("a", "INT64", [-1], [])], "negative dimension"),
    ],
)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
def test_encode_refuses_bad_tensors_and_changes_nothing(
    tensors: list[Tensor], message: str, raw: bool
) -> None:
    response = pb.ModelInferResponse()
    encode_outputs(response, [Tensor("keep", "INT64", [1], [7])], raw=True)
    before = response.SerializeToString()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        encode_outputs(response, tensors, raw=raw)
    assert response.SerializeToString() == before


def test_encode_refuses_to_change_datatype_or_shape() -> None:
    response = pb.ModelInferResponse()
    encode_outputs(response, [Tensor("a", "FP32", [1], [1.0])], raw=True)
    with pytest.raises(ValueError, match="must not change datatype or shape"):
        encode_outputs(response, [Tensor("a", "BYTES", [1], [b"x"])], raw=True)
    with pytest.raises(ValueError, match="must not change datatype or shape"):
        encode_outputs(response, [Tensor("a", "FP32", [1, 1], [1.0])], raw=True)


# --- malformed data from the wire ------------------------------------------------------


def output(name: str, datatype: str, shape: list[int], **contents) -> pb.ModelInferResponse.InferOutputTensor:
    message = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
    if contents:
        message.contents.CopyFrom(pb.InferTensorContents(**contents))
    return message


def raw_response(*pairs: tuple) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(outputs=[p[0] for p in pairs], raw_output_contents=[p[1] for p in pairs])


def assert_malformed(response: pb.ModelInferResponse, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_outputs(response)
    assert caught.value.reason == "MALFORMED_TENSOR"
    assert message in caught.value.message


def test_raw_entry_count_must_match_outputs() -> None:
    response = pb.ModelInferResponse(
        outputs=[output("a", "INT64", [1]), output("b", "INT64", [1])],
        raw_output_contents=[struct.pack("<q", 1)],
    )
    assert_malformed(response, "raw_output_contents has 1 entries for 2 outputs")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x05\x00\x00\x00hello\x02\x00", "ends at byte 11 inside the length prefix of element 1"),
        (b"\x05\x00\x00\x00hel", "element 0 declares 5 bytes but only 3 remain"),
        (b"\xff\xff\xff\xff", "element 0 declares 4294967295 bytes but only 0 remain"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x00", "1 unexpected bytes after the 2 raw BYTES elements"),
        (b"", "ends at byte 0 inside the length prefix of element 0"),
    ],
)
def test_malformed_raw_bytes(data: bytes, message: str) -> None:
    assert_malformed(raw_response((output("notes", "BYTES", [2]), data)), message)


def test_malformed_raw_bytes_names_the_tensor() -> None:
    assert_malformed(raw_response((output("notes", "BYTES", [1]), b"\x09")), "output 'notes'")


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT64", b"\x00" * 12, "has 12 raw bytes; INT64 shape [2] needs 16 (2 x 8)"),
        ("FP32", b"\x00" * 9, "needs 8 (2 x 4)"),
        ("FP16", b"\x00" * 3, "needs 4 (2 x 2)"),
        ("BF16", b"", "needs 4 (2 x 2)"),
        ("BOOL", b"\x01\x02", "raw BOOL byte other than 0 or 1"),
        ("UINT8", b"\x01\x02\x03", "needs 2 (2 x 1)"),
    ],
)
def test_malformed_raw_numbers(datatype: str, data: bytes, message: str) -> None:
    assert_malformed(raw_response((output("x", datatype, [2]), data)), message)


def test_raw_and_contents_together_are_refused() -> None:
    response = raw_response((output("x", "INT64", [1], int64_contents=[1]), struct.pack("<q", 1)))
    assert_malformed(response, "both raw_output_contents and contents (int64_contents)")


@pytest.mark.parametrize(
    ("message_tensor", "message"),
    [
        (
            output("x", "INT64", [3], int64_contents=[1, 2]),
            "has 2 elements in int64_contents; shape [3] needs 3",
        ),
        (output("x", "INT64", [1], fp32_contents=[1.0]), "is INT64 but carries fp32_contents"),
        (output("x", "INT8", [1], int_contents=[300]), "outside the INT8 range -128..127"),
        (output("x", "UINT16", [1], uint_contents=[70000]), "outside the UINT16 range"),
        (output("x", "COMPLEX", [1]), "unknown datatype 'COMPLEX'"),
        (output("x", "INT64", [-1]), "negative dimension"),
        (output("", "INT64", [0]), "output #0 has no name"),
        (output("x", "BYTES", [1]), "has 0 elements in bytes_contents; shape [1] needs 1"),
    ],
)
def test_malformed_contents(message_tensor, message: str) -> None:
    assert_malformed(pb.ModelInferResponse(outputs=[message_tensor]), message)


def test_duplicate_output_names_are_refused() -> None:
    response = pb.ModelInferResponse(
        outputs=[output("x", "INT64", [1], int64_contents=[1]), output("x", "INT64", [1], int64_contents=[2])]
    )
    assert_malformed(response, "output 'x' appears more than once")


def test_malformed_inputs_say_input() -> None:
    request = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequest.InferInputTensor(name="ids", datatype="INT64", shape=[2])],
        raw_input_contents=[b"\x00"],
    )
    with pytest.raises(InvalidInput, match="input 'ids' has 1 raw bytes"):
        decode_inputs(request)


def test_split_raw_bytes_directly() -> None:
    assert split_raw_bytes(b"\x01\x00\x00\x00a\x00\x00\x00\x00", 2) == [b"a", b""]
    with pytest.raises(InvalidInput, match="tensor: raw BYTES element 0"):
        split_raw_bytes(b"\x02\x00\x00\x00a", 1)


def test_an_element_count_stops_multiplying_at_its_cap() -> None:
    """A shape's dimensions are the caller's or the upstream's: multiplied out in full, 1 MiB
    of 2**62 dimensions is a 8-million-bit number, built quadratically (review)."""
    from labelgate.oip.tensors import COUNT_CAP, element_count, shown_shape

    assert element_count([]) == 1 and element_count([3, 4]) == 12 and element_count([2] * 10) == 1024
    assert element_count([2**62] * 100_000) == COUNT_CAP
    assert element_count([2**62] * 1_000 + [0]) == 0, "a zero dimension holds nothing, however large the rest"
    assert element_count([-1] + [2**62] * 9) == -COUNT_CAP
    assert element_count(iter([5, 5, 5, 5, 5])) == 3125
    assert shown_shape([1] * 20_000) == "[1, 1, 1, 1, 1, 1, 1, 1, ... (20000 dimensions)]"
    assert shown_shape([2, 3]) == "[2, 3]"
