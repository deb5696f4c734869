"""A decoded tensor keeps the raw bytes it was validated from, and encoding reuses them
only while they are the raw form of exactly its values: a changed tensor is encoded anew.
Its values are built only when first read, equal to what reading them at once gave."""

from __future__ import annotations

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.oip import native
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

TENSORS = [
    Tensor("ids", "INT64", [3], [1, -2, 3]),
    Tensor("score", "FP32", [2], [0.5, -1.25]),
    Tensor("flags", "BOOL", [2], [True, False]),
    Tensor("half", "BF16", [2], [1.0, -2.0]),
    Tensor("text", "BYTES", [3], [b"", b"a\x00b", "é".encode()]),
]


def round_trip(tensors: list[Tensor]) -> tuple[pb.ModelInferResponse, list[Tensor]]:
    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, tensors, raw=True)
    return reply, oip.decode_outputs(reply)


@pytest.mark.parametrize("tensor", TENSORS, ids=lambda tensor: tensor.datatype)
def test_a_decoded_raw_tensor_encodes_to_the_bytes_it_came_from(tensor: Tensor) -> None:
    reply, (decoded,) = round_trip([tensor])
    assert decoded.raw_form() == reply.raw_output_contents[0]
    fresh = Tensor(decoded.name, decoded.datatype, list(decoded.shape), list(decoded.values))
    assert fresh.raw_form() is None
    assert oip.tensor_to_raw(decoded) == oip.tensor_to_raw(fresh)


def test_replacing_the_values_drops_the_raw_form() -> None:
    _, (decoded,) = round_trip([Tensor("text", "BYTES", [2], [b"4111111111111111", b"secret"])])
    masked = decoded.with_values([b"", b""])
    assert masked.raw_form() is None
    assert oip.tensor_to_raw(masked) == b"\x00" * 8
    decoded.values = [b"x", b"y"]  # assigning other values unbinds it too
    assert decoded.raw_form() is None
    assert oip.tensor_to_raw(decoded) == b"\x01\x00\x00\x00x\x01\x00\x00\x00y"


def test_tensors_decoded_from_typed_contents_have_no_raw_form() -> None:
    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, TENSORS, raw=False)
    assert all(tensor.raw_form() is None for tensor in oip.decode_outputs(reply))


def test_the_raw_form_is_not_part_of_equality() -> None:
    _, (decoded,) = round_trip([TENSORS[0]])
    assert decoded == TENSORS[0]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("tensor", TENSORS, ids=lambda tensor: tensor.datatype)
def test_decoded_values_are_built_when_first_read_and_equal_the_encoded_ones(
    tensor: Tensor, use_native: bool
) -> None:
    with native.forced(use_native):
        reply, (decoded,) = round_trip([tensor])
        assert decoded.size == len(tensor.values)
        assert oip.tensor_to_raw(decoded) == reply.raw_output_contents[0]  # encoding reads none
        assert decoded.values_built is (not use_native and tensor.datatype == "BYTES")
        assert decoded.values == tensor.values
        assert [type(value) for value in decoded.values] == [type(value) for value in tensor.values]
        assert decoded.values_built and decoded.values is decoded.values  # built once
        assert decoded.raw_form() == reply.raw_output_contents[0]


def test_decoded_bytes_elements_are_the_decoded_list_itself() -> None:
    _, (decoded,) = round_trip([TENSORS[-1]])
    assert decoded.byte_elements() is decoded.values
    given = Tensor("text", "BYTES", [2], ["é", bytearray(b"x")])  # not decoded: converted
    assert given.byte_elements() == ["é".encode(), b"x"]
    decoded.values = ["é"]  # other values: checked and converted again
    assert decoded.byte_elements() == ["é".encode()]


def test_a_raw_form_remembered_before_the_values_are_read_does_not_change_them() -> None:
    _, (decoded,) = round_trip([TENSORS[-1]])
    decoded.remember_raw(b"\x01\x00\x00\x00z")  # the caller vouches wrongly: values stay
    assert decoded.values == TENSORS[-1].values


def test_a_tensor_is_compared_by_value_and_is_not_hashable() -> None:
    _, (decoded,) = round_trip([TENSORS[0]])
    assert decoded != Tensor("ids", "INT64", [3], [1, -2, 4])
    assert decoded != Tensor("other", "INT64", [3], [1, -2, 3])
    assert decoded != ("ids", "INT64", [3], [1, -2, 3])
    with pytest.raises(TypeError):
        hash(decoded)
    assert repr(decoded) == "Tensor(name='ids', datatype='INT64', shape=[3], values=[1, -2, 3])"
