"""The native BYTES kernels (``labelgate.oip.native``) give exactly what the Python code gives.

The Python path (``native.forced(False)``) is the reference. For generated buffers, well
formed or broken in every way a caller or upstream could break them (truncated prefixes,
lengths past the end, huge declared lengths, trailing bytes, a wrong element count, NUL
bytes, empty elements), both paths must return the same elements or raise the same error
(reason and message). Joining elements and the ``partial`` mask are compared the same way.

The extension is required: the Makefile installs it, and a missing one fails here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.enforce.strategies import Mask, Masker, replace_spans
from labelgate.enforce.whole import mask_whole_bytes
from labelgate.errors import InvalidInput
from labelgate.oip import native
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import split_raw_bytes

KEY = b"0123456789abcdef0123456789abcdef"
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HUGE = 0xFFFFFFFF

elements = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"", b"\x00", b"\x00\x00\x00\x00", b"4111-1111-1111-1111", "é€😀".encode()]),
    ),
    max_size=40,
)
same_length_elements = st.integers(0, 9).flatmap(
    lambda length: st.lists(st.binary(min_size=length, max_size=length), min_size=16, max_size=40)
)


def prefixed(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


def outcome(action: Callable[[], Any]) -> tuple[Any, ...]:
    """What an action gives: ("ok", result) or ("error", type, reason, message)."""
    try:
        return ("ok", action())
    except InvalidInput as error:
        return ("error", type(error), error.reason, str(error))
    except (ValueError, struct.error) as error:
        return ("error", type(error), None, str(error))


def both_paths(action: Callable[[], Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    with native.forced(True):
        fast = outcome(action)
    with native.forced(False):
        reference = outcome(action)
    return fast, reference


def test_the_extension_is_installed_with_the_tensor_kernels() -> None:
    assert native.available(), "labelgate_native is missing or old: pip install ./proxy/native"


# --- splitting -------------------------------------------------------------------------


@st.composite
def raw_buffers(draw: st.DrawFn) -> tuple[bytes, int]:
    """A raw BYTES buffer and the element count a shape would ask of it, often wrong."""
    values = draw(st.one_of(elements, same_length_elements))
    data = prefixed(values)
    count = len(values)
    damage = draw(
        st.sampled_from(["none", "truncate", "append", "length", "huge", "count", "random", "splice"])
    )
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=6))
    elif damage in ("length", "huge") and values:
        # Rewrite one element's prefix: a little off, or claiming far more than there is.
        index = draw(st.integers(0, len(values) - 1))
        offset = sum(4 + len(value) for value in values[:index])
        length = HUGE if damage == "huge" else max(0, len(values[index]) + draw(st.integers(-3, 3)))
        data = data[:offset] + struct.pack("<I", length) + data[offset + 4 :]
    elif damage == "count":
        count = draw(st.one_of(st.integers(0, count + 3), st.just(2**40), st.just(2**70)))
    elif damage == "random":
        data = draw(st.binary(max_size=60))
        count = draw(st.integers(0, 12))
    elif damage == "splice" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
    return data, count


@SETTINGS
@given(raw_buffers())
def test_splitting_gives_the_same_elements_or_the_same_error(buffer: tuple[bytes, int]) -> None:
    data, count = buffer
    fast, reference = both_paths(lambda: split_raw_bytes(data, count, "output 't'"))
    assert fast == reference
    if fast[0] == "ok":
        assert all(type(value) is bytes for value in fast[1])


@SETTINGS
@given(elements)
def test_well_formed_buffers_split_into_their_elements(values: list[bytes]) -> None:
    with native.forced(True):
        assert split_raw_bytes(prefixed(values), len(values)) == values


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (b"", 0),
        (b"", 1),
        (b"\x00\x00\x00", 1),  # a prefix cut short
        (b"\x05\x00\x00\x00abc", 1),  # a length past the end
        (b"\xff\xff\xff\xff" + b"a" * 8, 1),  # a huge declared length
        (b"\x00\x00\x00\x00\x00", 1),  # a trailing byte
        (b"\x00\x00\x00\x00" * 3, 2),  # more elements than the shape holds
        (b"\x00\x00\x00\x00" * 3, 4),  # fewer
        (b"\x00\x00\x00\x00" * 3, 2**70),  # a shape past any integer of the extension
        (b"\x01\x00\x00\x00\x00\x00\x00\x00\x00", 2),  # NUL bytes as data and as empty element
        (bytearray(b"\x01\x00\x00\x00a"), 1),  # not bytes: the Python path
        (memoryview(b"\x01\x00\x00\x00a"), 1),
    ],
)
def test_edge_buffers_agree(data: bytes, count: int) -> None:
    fast, reference = both_paths(lambda: split_raw_bytes(data, count, "input 'x'"))
    assert fast == reference


def test_a_malformed_buffer_raises_the_python_message() -> None:
    with native.forced(True), pytest.raises(InvalidInput) as raised:
        split_raw_bytes(b"\x01\x00\x00\x00a\x09\x00\x00\x00b", 2, "output 'notes'")
    assert raised.value.reason == oip.MALFORMED_TENSOR
    assert str(raised.value).endswith(
        "output 'notes': raw BYTES element 1 declares 9 bytes but only 1 remain"
    )


@SETTINGS
@given(raw_buffers())
def test_decoding_a_response_agrees(buffer: tuple[bytes, int]) -> None:
    data, count = buffer
    reply = pb.ModelInferResponse()
    # A shape's dimensions are int64; their product need not be.
    shape = [count] if count < 2**63 else [2**35, 2**35]
    reply.outputs.add(name="t", datatype="BYTES", shape=shape)
    reply.raw_output_contents.append(data)

    def decode() -> list[tuple[str, list[Any], bytes | None]]:
        return [(tensor.name, tensor.values, tensor.raw_form()) for tensor in oip.decode_outputs(reply)]

    fast, reference = both_paths(decode)
    assert fast == reference


# --- joining ---------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(elements, same_length_elements))
def test_joining_gives_the_same_raw_bytes(values: list[bytes]) -> None:
    tensor = Tensor("t", "BYTES", [len(values)], values)
    fast, reference = both_paths(lambda: oip.tensor_to_raw(tensor))
    assert fast == reference == ("ok", prefixed(values))


@pytest.mark.parametrize(
    "values",
    [
        ["text", b"bytes"],
        [bytearray(b"ab"), memoryview(b"cd"), b""],
        [b"a", 1],  # not encodable: the same ValueError
        [],
    ],
    ids=["str", "bytes-likes", "int", "empty"],
)
def test_joining_other_values_agrees(values: list[Any]) -> None:
    tensor = Tensor("t", "BYTES", [len(values)], values)
    fast, reference = both_paths(lambda: oip.tensor_to_raw(tensor))
    assert fast == reference


def test_a_bytes_subclass_is_joined_as_its_bytes() -> None:
    class Tagged(bytes):
        pass

    tensor = Tensor("t", "BYTES", [2], [Tagged(b"ab"), b"c"])
    fast, reference = both_paths(lambda: oip.tensor_to_raw(tensor))
    assert fast == reference == ("ok", prefixed([b"ab", b"c"]))


# --- the partial mask ------------------------------------------------------------------

keep_lasts = st.one_of(st.integers(0, 12), st.just(2**70))
texts = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.text(alphabet="0123456789-", max_size=20).map(str.encode),
    # UTF-16 text, with and without a byte order mark: starred whole where it reads so.
    st.text(max_size=12).map(lambda text: text.encode("utf-16", "surrogatepass")),
    st.text(alphabet="SN 0123456789-\u1810\u1814", max_size=12).map(lambda text: text.encode("utf-16-le")),
)


@SETTINGS
@given(st.lists(texts, max_size=30), keep_lasts)
def test_a_whole_partial_mask_agrees(values: list[bytes], keep_last: int) -> None:
    mask = Mask("outputs.t", "partial", {"keep_last": keep_last})
    tensor = Tensor("t", "BYTES", [len(values)], values)

    def masked() -> tuple[list[bytes], bytes]:
        result = mask_whole_bytes(tensor, mask, Masker(KEY))
        return result.values, oip.tensor_to_raw(result)

    fast, reference = both_paths(masked)
    assert fast == reference
    assert fast[1][0] == Masker(KEY).raw_all(values, mask)


@SETTINGS
@given(st.lists(texts, max_size=30), keep_lasts)
def test_a_whole_partial_mask_of_a_decoded_tensor_agrees(values: list[bytes], keep_last: int) -> None:
    """A decoded tensor is starred from its raw buffer to a new one (``partial_all_raw``),
    its elements never built: the same elements and raw form as the reference."""
    mask = Mask("outputs.t", "partial", {"keep_last": keep_last})
    data = b"".join(struct.pack("<I", len(value)) + value for value in values)

    def masked() -> tuple[list[bytes], bytes, bool]:
        output = pb.ModelInferResponse.InferOutputTensor(name="t", datatype="BYTES", shape=[len(values)])
        (tensor,) = oip.decode_outputs(pb.ModelInferResponse(outputs=[output], raw_output_contents=[data]))
        result = mask_whole_bytes(tensor, mask, Masker(KEY))
        built = result.values_built or tensor.values_built
        return result.values, oip.tensor_to_raw(result), built

    fast, reference = both_paths(masked)
    assert fast[1][:2] == reference[1][:2]
    assert fast[1][0] == Masker(KEY).raw_all(values, mask)
    # Built only to read them here: text beyond ASCII, or with a NUL (it may read as UTF-16,
    # which Python decides: ``other_encodings.reads_wide``).
    assert fast[1][2] is not all(value.isascii() and 0 not in value for value in values)


@SETTINGS
@given(texts, st.integers(-2, 32), st.integers(-2, 32), keep_lasts)
def test_a_partial_span_agrees(data: bytes, start: int, end: int, keep_last: int) -> None:
    mask = Mask("outputs.t{credit_card}", "partial", {"keep_last": keep_last})
    fast, reference = both_paths(lambda: replace_spans(data, [(start, end, mask)], Masker(KEY)))
    assert fast == reference


def test_a_partial_span_never_shows_a_short_value() -> None:
    mask = Mask("outputs.t{us_ssn}", "partial", {"keep_last": 4})
    with native.forced(True):
        assert replace_spans(b"id 123 ok", [(3, 6, mask)], Masker(KEY)) == b"id *** ok"
        assert replace_spans(b"ssn 123-45-6789.", [(4, 15, mask)], Masker(KEY)) == b"ssn *******6789."


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_shape_past_any_machine_integer_is_malformed_not_an_overflow(use_native: bool) -> None:
    reply = pb.ModelInferResponse()
    reply.outputs.add(name="t", datatype="BYTES", shape=[2**35, 2**35])
    reply.raw_output_contents.append(b"\x00\x00\x00\x00")
    with native.forced(use_native), pytest.raises(InvalidInput) as raised:
        oip.decode_outputs(reply)
    assert raised.value.reason == oip.MALFORMED_TENSOR
