"""Whole-output masks written as raw bytes: the same elements as masking each one, and a raw
form that is exactly the encoding of those elements, on every path (repeated element,
numpy starring of equal-length ASCII columns, and the element-by-element fallback)."""

from __future__ import annotations

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.enforce.strategies import Mask, Masker
from labelgate.enforce.whole import mask_whole_bytes
from labelgate.oip import native
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

KEY = b"0123456789abcdef0123456789abcdef"
MASKS = [
    Mask("outputs.t", "null"),
    Mask("outputs.t", "redact"),
    Mask("outputs.t", "redact", {"replacement": "•"}),
    Mask("outputs.t", "hash"),
    *(Mask("outputs.t", "partial", {"keep_last": keep}) for keep in (0, 4, 11, 40)),
]
COLUMNS = {
    "ssns": [f"{n:03d}-45-6789".encode() for n in range(100, 140)],  # equal length, ASCII
    "mixed_lengths": [b"x" * (n % 7) for n in range(40)],
    "non_ascii_equal_length": ["é1234".encode()] * 20 + [b"abcdef"] * 20,
    "empty_elements": [b""] * 30,
    "few": [b"4111111111111111", b"5500000000000004"],
    # UTF-16 text (review F1): starred whole by every path; equal lengths, ASCII bytes too.
    "utf16": [f"SSN {n:03d}-45-6789".encode("utf-16-le") for n in range(100, 120)]
    + [b"\xff\xfe" + f"SSN {n:03d}-45-6789".encode("utf-16-le") for n in range(100, 120)],
    "utf16_equal_length_ascii": [f"SSN {n:03d}-45-6789".encode("utf-16-le") for n in range(100, 140)],
}


def decoded(values: list[bytes]) -> Tensor:
    """A BYTES tensor as the gateway has it: decoded from a raw reply, raw form kept."""
    tensor = Tensor("t", "BYTES", [len(values)], values)
    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, [tensor], raw=True)
    (result,) = oip.decode_outputs(reply)
    assert result.raw_form() == reply.raw_output_contents[0]
    return result


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("mask", MASKS, ids=lambda mask: f"{mask.strategy}{dict(mask.params)}")
def test_a_whole_output_mask_equals_masking_each_element(column: str, mask: Mask, use_native: bool) -> None:
    with native.forced(use_native):
        _check_whole_mask(column, mask)


def _check_whole_mask(column: str, mask: Mask) -> None:
    tensor = decoded(COLUMNS[column])
    masker = Masker(KEY, [mask])
    masked = mask_whole_bytes(tensor, mask, masker)
    assert masked.values == masker.raw_all(tensor.values, mask)
    assert masked.shape == tensor.shape and masked.datatype == "BYTES"
    # Whatever raw form the masked tensor carries is the encoding of its masked elements.
    plain = Tensor("t", "BYTES", list(masked.shape), list(masked.values))
    assert oip.tensor_to_raw(masked) == oip.tensor_to_raw(plain)
    assert tensor.values == COLUMNS[column]  # the input is not modified


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_column_of_utf16_text_is_starred_whole(use_native: bool) -> None:
    """Review (F1): kept bytes of UTF-16 text are other characters read as UTF-16; the
    classifier reads such text so, and ``partial`` stars it whole on every path."""
    for column in ("utf16", "utf16_equal_length_ascii"):
        tensor = decoded(COLUMNS[column])
        with native.forced(use_native):
            masked = mask_whole_bytes(tensor, Mask("outputs.t", "partial"), Masker(KEY))
        assert masked.values == [b"*" * len(value) for value in COLUMNS[column]], column


def test_the_masked_raw_form_never_reveals_the_hidden_bytes() -> None:
    tensor = decoded(COLUMNS["ssns"])
    masked = mask_whole_bytes(tensor, Mask("outputs.t", "partial"), Masker(KEY))
    raw = masked.raw_form()
    assert raw is not None  # the numpy path ran
    assert b"-45-" not in raw and raw.count(b"*******6789") == len(tensor.values)


def test_a_raw_buffer_that_is_not_these_elements_is_not_used() -> None:
    """Partial starring reads the decoded buffer: one that does not match the elements
    (which decoding never produces) falls back to element by element, never guesses."""
    values = COLUMNS["ssns"]
    tensor = Tensor("t", "BYTES", [len(values)], values).remember_raw(b"\x00" * 7)
    with native.forced(False):
        masked = mask_whole_bytes(tensor, Mask("outputs.t", "partial"), Masker(KEY))
    assert masked.raw_form() is None
    assert masked.values == Masker(KEY).raw_all(values, Mask("outputs.t", "partial"))


def test_the_native_path_writes_its_raw_form_from_the_elements_not_the_buffer() -> None:
    values = COLUMNS["ssns"]
    tensor = Tensor("t", "BYTES", [len(values)], values).remember_raw(b"\x00" * 7)
    with native.forced(True):
        masked = mask_whole_bytes(tensor, Mask("outputs.t", "partial"), Masker(KEY))
    expected = Masker(KEY).raw_all(values, Mask("outputs.t", "partial"))
    assert masked.values == expected
    with native.forced(False):
        assert masked.raw_form() == oip.tensor_to_raw(Tensor("t", "BYTES", [len(values)], expected))
