"""A decoded tensor keeps the raw bytes it was validated from, and encoding reuses them
only while they are the raw form of exactly its values: a changed tensor is encoded anew."""

from __future__ import annotations

import dataclasses

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.oip import tensors as oip
from labelgate.oip.tensors import Tensor

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
    masked = dataclasses.replace(decoded, values=[b"", b""])
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
