"""The tensor codec: Open Inference Protocol tensors <-> plain Python values.

Pure functions over the generated protobuf messages, no I/O. Used by the demo backend to
read requests and write responses, and by the gateway to classify and mask responses.

A tensor travels in one of two representations:

- ``contents``: typed repeated fields of ``InferTensorContents`` (``int64_contents``, ...);
- raw: one ``bytes`` entry per tensor in ``raw_input_contents`` / ``raw_output_contents``,
  row-major, little-endian, no padding. BYTES elements are a 4-byte little-endian length
  followed by that many bytes; BOOL is one byte (0 or 1) per element.

A message uses one representation for all its tensors (the protocol gives raw entries by
position, so mixing would be ambiguous). FP16 and BF16 have no contents field of their
own; in ``contents`` they travel in ``fp32_contents`` (as MLServer does).

Decoding validates everything a caller or upstream could get wrong and raises
``InvalidInput`` with reason ``MALFORMED_TENSOR``. Encoding takes values from our own
code, so a bad ``Tensor`` there is a programming error and raises ``ValueError``.

BYTES splitting and joining go through ``labelgate.oip.native`` when the extension is
installed; this code is the reference and raises every error.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput
from labelgate.oip import native, reasons
from labelgate.oip.tensor import Tensor

MALFORMED_TENSOR = reasons.MALFORMED_TENSOR

# Numeric datatypes as numpy little-endian dtypes (raw representation).
_RAW_DTYPES: dict[str, str] = {
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
RAW_DTYPES = _RAW_DTYPES  # for classify.numbers, which reads the same buffers

# Built once: numpy's dtype and iinfo objects are slow to make for every tensor.
_DTYPES = {code: np.dtype(code) for code in _RAW_DTYPES.values()}
_ITEMSIZES = {datatype: _DTYPES[code].itemsize for datatype, code in _RAW_DTYPES.items()}
_INT_BOUNDS = {
    code: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for code, dtype in _DTYPES.items()
    if dtype.kind in "iu"
}

# The InferTensorContents field that carries each datatype.
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "BF16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

DATATYPES: frozenset[str] = frozenset(CONTENTS_FIELDS)

# Narrow integer types share a wider contents field, so their range is checked by hand.
_NARROW_INT_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
}

_LENGTH_PREFIX = struct.Struct("<I")


# Past any tensor a message can hold: a count that reaches it is not multiplied further.
COUNT_CAP = 1 << 64


def element_count(shape: Iterable[int]) -> int:
    """Number of elements a shape holds (1 for the scalar shape ``[]``), or ``COUNT_CAP`` (with
    the product's sign) once the product reaches it: the caller's or the upstream's dimensions
    multiplied out in full grow a number of their bits times the rank, and multiplying it is
    quadratic (review: 1 MiB of 2**62 dimensions held the GIL for 8 s, 4 MiB for 129 s, before
    the rank bound was checked)."""
    dims = shape if isinstance(shape, list | tuple) else list(shape)
    if len(dims) <= 4:  # the usual shapes, whose product is small anyway: at C speed
        return math.prod(dims)
    if 0 in dims:
        return 0
    count = 1
    for dim in dims:
        count *= dim
        if not -COUNT_CAP < count < COUNT_CAP:
            negative = sum(1 for d in dims if d < 0) % 2
            return -COUNT_CAP if negative else COUNT_CAP
    return count


def shown_shape(shape: Sequence[int]) -> str:
    """A shape as an error message shows it: its first dimensions and its rank, never a whole
    caller's list (a 20,000-dimension shape came back as 60 KB of error)."""
    if len(shape) <= _SHOWN_DIMENSIONS:
        return str(list(shape))
    shown = ", ".join(str(dim) for dim in shape[:_SHOWN_DIMENSIONS])
    return f"[{shown}, ... ({len(shape)} dimensions)]"


_SHOWN_DIMENSIONS = 8


def item_size(datatype: str) -> int:
    """Raw bytes per element of a fixed-size datatype (not BYTES)."""
    return 1 if datatype == "BOOL" else 2 if datatype == "BF16" else _ITEMSIZES[datatype]


# --- decoding --------------------------------------------------------------------------


def uses_raw_outputs(response: pb.ModelInferResponse) -> bool:
    """True when the response carries its outputs in ``raw_output_contents``."""
    return len(response.raw_output_contents) > 0


def uses_raw_inputs(request: pb.ModelInferRequest) -> bool:
    """True when the request carries its inputs in ``raw_input_contents``."""
    return len(request.raw_input_contents) > 0


def decode_outputs(response: pb.ModelInferResponse) -> list[Tensor]:
    """All outputs of a response as ``Tensor``s, from either representation."""
    return _decode(response.outputs, response.raw_output_contents, "output")


def decode_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    """All inputs of a request as ``Tensor``s, from either representation."""
    return _decode(request.inputs, request.raw_input_contents, "input")


def _malformed(message: str) -> InvalidInput:
    return InvalidInput(MALFORMED_TENSOR, message)


def _decode(messages: Sequence[Any], raw: Sequence[bytes], kind: str) -> list[Tensor]:
    if raw and len(raw) != len(messages):
        raise _malformed(
            f"raw_{kind}_contents has {len(raw)} entries for {len(messages)} {kind}s; "
            f"there must be exactly one per {kind}"
        )
    seen: set[str] = set()
    tensors = []
    # Each field read on a protobuf message costs more than a Python attribute: read once.
    for index, message in enumerate(messages):
        name = message.name
        where = f"{kind} '{name}'" if name else f"{kind} #{index}"
        if not name:
            raise _malformed(f"{where} has no name")
        if name in seen:
            # Name lookups (classification, masking) must be unambiguous.
            raise _malformed(f"{where} appears more than once")
        seen.add(name)
        datatype = message.datatype
        if datatype not in DATATYPES:
            raise _malformed(
                f"{where} has unknown datatype '{datatype}'; expected one of {', '.join(sorted(DATATYPES))}"
            )
        shape = message.shape[:]  # a list; twice as fast as list(message.shape)
        if any(dim < 0 for dim in shape):
            raise _malformed(f"{where} has a negative dimension in shape {shown_shape(shape)}")
        count = element_count(shape)
        if kind == "output":
            shape = _released_shape(shape, count, where)
        contents = message.contents if message.HasField("contents") else None
        present = [field.name for field, _ in contents.ListFields()] if contents is not None else []
        if raw:
            if present:
                raise _malformed(
                    f"{where} has both raw_{kind}_contents and contents ({', '.join(present)}); "
                    "use one representation"
                )
            tensors.append(_decode_raw(name, raw[index], datatype, count, shape, where))
        else:
            values = _decode_contents(message.contents, present, datatype, count, shape, where)
            tensors.append(Tensor(name, datatype, shape, values))
    return tensors


# More dimensions than any model gives an output; beyond, the count itself is the upstream's data.
MAX_OUTPUT_RANK = 32


def _released_shape(shape: list[int], count: int, where: str) -> list[int]:
    """The shape an upstream's output is released with: its own, unless it carries more than
    its elements justify. A shape is data the upstream chose: with elements, each dimension
    divides their count (which the data bounds); with none, one zero makes every other
    dimension free (``[0, 4111111111111111]`` carries a card through a ``null`` mask), so an
    empty output is released as zeros of its rank. Nothing classifies a shape, so nothing in
    it may be more than the data's own size."""
    if len(shape) > MAX_OUTPUT_RANK:
        raise _malformed(f"{where} has {len(shape)} dimensions; at most {MAX_OUTPUT_RANK}")
    if count == 0 and any(shape):
        return [0] * len(shape)
    return shape


def _decode_contents(
    contents: pb.InferTensorContents,
    present: list[str],
    datatype: str,
    count: int,
    shape: list[int],
    where: str,
) -> list[Any]:
    expected = CONTENTS_FIELDS[datatype]
    wrong = [name for name in present if name != expected]
    if wrong:
        raise _malformed(f"{where} is {datatype} but carries {', '.join(wrong)}; expected {expected}")
    values = list(getattr(contents, expected))
    if len(values) != count:
        raise _malformed(
            f"{where} has {len(values)} elements in {expected}; shape {shown_shape(shape)} needs {count}"
        )
    bounds = _NARROW_INT_RANGES.get(datatype)
    if bounds and values and (min(values) < bounds[0] or max(values) > bounds[1]):
        raise _malformed(f"{where} has a value outside the {datatype} range {bounds[0]}..{bounds[1]}")
    return values


def _decode_raw(name: str, data: bytes, datatype: str, count: int, shape: list[int], where: str) -> Tensor:
    """The tensor ``data`` holds, validated whole here; its values are built when first read
    (``Tensor.decoded``), and encoding them again gives ``data``."""
    if datatype == "BYTES":
        if count <= len(data) >> 2 and native.check_bytes(data, count):  # None: the extension is off
            return decoded_bytes(name, shape, data, count)
        elements = split_raw_bytes(data, count, where)  # raises the reference error
        # Already built: ``read`` is never called then, but still marks them as the decoder's.
        return Tensor.decoded(name, datatype, shape, data, count, elements.copy, elements)
    itemsize = item_size(datatype)
    if len(data) != count * itemsize:
        raise _malformed(
            f"{where} has {len(data)} raw bytes; {datatype} shape {shown_shape(shape)} "
            f"needs {count * itemsize} ({count} x {itemsize})"
        )
    if datatype == "BOOL":
        array = np.frombuffer(data, dtype=np.uint8)
        if array.size and int(array.max()) > 1:
            raise _malformed(f"{where} has a raw BOOL byte other than 0 or 1")
    return Tensor.decoded(name, datatype, shape, data, count, partial(_numbers, data, datatype))


def decoded_bytes(name: str, shape: list[int], data: bytes, count: int) -> Tensor:
    """The BYTES tensor whose raw form is ``data``, which the caller has checked is exactly
    ``count`` elements; they are split out when first read."""
    return Tensor.decoded(name, "BYTES", shape, data, count, partial(split_raw_bytes, data, count))


def _numbers(data: bytes, datatype: str) -> list[Any]:
    """The values of a validated raw numeric or BOOL buffer."""
    if datatype == "BOOL":
        values: list[Any] = (np.frombuffer(data, dtype=np.uint8) != 0).tolist()  # typed Any
        return values
    if datatype == "BF16":
        # bfloat16 is the upper half of a float32.
        widened = np.frombuffer(data, dtype="<u2").astype("<u4") << 16
        values = widened.view("<f4").tolist()
        return values
    values = np.frombuffer(data, dtype=_DTYPES[_RAW_DTYPES[datatype]]).tolist()
    return values


def split_raw_bytes(data: bytes, count: int, where: str = "tensor") -> list[bytes]:
    """Split a raw BYTES tensor (length-prefixed elements) into exactly ``count`` elements."""
    if count > len(data) >> 2:
        # Each element needs its 4-byte prefix: malformed. Named here, before a shape past
        # any machine integer reaches the loops below (OverflowError, not MALFORMED_TENSOR).
        return _split_checked(data, count, where)
    if native.active() and type(data) is bytes:
        # The extension splits well-formed data (faster than either path below, measured,
        # equal lengths included); anything it refuses goes through the checks one by one,
        # which raise the reference error or, should the two ever disagree, give the
        # reference elements.
        values = native.split_bytes(data, count)
        return values if values is not None else _split_checked(data, count, where)
    values = _split_fixed_width(data, count)
    if values is None:
        values = _split_well_formed(data, count)
    if values is None:
        return _split_checked(data, count, where)  # raises, naming the first problem
    return values


# Below this many elements the checks cost more than reading the prefixes one by one.
_FIXED_WIDTH_MIN_COUNT = 16


def _split_fixed_width(data: bytes, count: int) -> list[bytes] | None:
    """The elements when they all have one length (ids, codes, masked columns), else None.

    Then every prefix sits at a multiple of ``4 + length`` and is the same four bytes, which
    four strided slices check at C speed, and no prefix needs reading one by one.
    """
    if count < _FIXED_WIDTH_MIN_COUNT or len(data) < 4:
        return None
    prefix = data[:4]
    stride = 4 + _LENGTH_PREFIX.unpack(prefix)[0]
    if stride * count != len(data):
        return None
    if any(data[byte::stride] != prefix[byte : byte + 1] * count for byte in range(4)):
        return None
    return fixed_width_elements(data, count, stride - 4)


def fixed_width_elements(data: bytes, count: int, length: int) -> list[bytes]:
    """The ``count`` elements of ``data`` when each is ``length`` bytes after its 4-byte prefix
    (the caller has checked that it is so). A numpy view of (prefix, element) records makes
    every element's ``bytes`` at C speed; void records keep every byte, NULs included."""
    if length == 0:
        return [b""] * count
    records = np.frombuffer(data, dtype=np.dtype([("prefix", "V4"), ("element", f"V{length}")]), count=count)
    elements: list[bytes] = records["element"].tolist()
    return elements


def _split_well_formed(data: bytes, count: int) -> list[bytes] | None:
    """The elements when ``data`` is well formed, else None; the hot path, so no check per element.

    An element that claims more bytes than remain only shortens its slice, but pushes the
    offset past the end, where the next prefix cannot be read (``struct.error``) and the
    final offset cannot equal ``len(data)``: any malformed input comes back None.
    """
    values: list[bytes] = []
    append, unpack = values.append, _LENGTH_PREFIX.unpack_from
    offset = 0
    try:
        for _ in repeat(None, count):  # no int object per element, unlike range
            start = offset + 4
            offset = start + unpack(data, offset)[0]
            append(data[start:offset])
    except struct.error:
        return None
    return values if offset == len(data) else None


def _split_checked(data: bytes, count: int, where: str) -> list[bytes]:
    """Element by element, checking each: for malformed data, to name its first problem."""
    values: list[bytes] = []
    append, unpack = values.append, _LENGTH_PREFIX.unpack_from
    offset, end = 0, len(data)
    for index in range(count):
        if offset + 4 > end:
            raise _malformed(
                f"{where}: raw BYTES data ends at byte {end} inside the length prefix of element "
                f"{index}; the shape needs {count} elements"
            )
        (length,) = unpack(data, offset)
        offset += 4
        if length > end - offset:
            raise _malformed(
                f"{where}: raw BYTES element {index} declares {length} bytes but only {end - offset} remain"
            )
        append(data[offset : offset + length])
        offset += length
    if offset != end:
        raise _malformed(f"{where}: {end - offset} unexpected bytes after the {count} raw BYTES elements")
    return values


# --- encoding --------------------------------------------------------------------------


def tensor_to_raw(tensor: Tensor) -> bytes:
    """The raw (``raw_*_contents``) bytes of a tensor."""
    _check_encodable(tensor)
    known = tensor.raw_form()
    if known is not None:
        return known
    if tensor.datatype == "BYTES":
        # The extension takes a list of exactly bytes (what masking makes) as it is, and
        # answers None for anything else: only then is each value's type checked here.
        joined = native.join_bytes(tensor.values)
        if joined is not None:
            return joined
        values = _bytes_values(tensor)
        joined = native.join_bytes(values)  # None when off, or a value it cannot take
        if joined is not None:
            return joined
        pack = _LENGTH_PREFIX.pack
        if len(set(map(len, values))) == 1:
            # One length (ids, codes, masked columns): one prefix, joined at C speed.
            prefix = pack(len(values[0]))
            return prefix + prefix.join(values)
        # Measured fastest of the pure-Python ways (map/zip interleaving, bytearray, numpy).
        return b"".join([pack(len(value)) + value for value in values])
    if tensor.datatype == "BOOL":
        return _bool_array(tensor).astype(np.uint8).tobytes()
    if tensor.datatype == "BF16":
        as_fp32 = _numeric_array(tensor, "<f4")
        return (as_fp32.view("<u4") >> 16).astype("<u2").tobytes()
    return _numeric_array(tensor, _RAW_DTYPES[tensor.datatype]).tobytes()


def tensor_to_contents(tensor: Tensor) -> pb.InferTensorContents:
    """The typed ``InferTensorContents`` of a tensor."""
    _check_encodable(tensor)
    contents = pb.InferTensorContents()
    field = getattr(contents, CONTENTS_FIELDS[tensor.datatype])
    if tensor.datatype == "BYTES":
        field.extend(_bytes_values(tensor))
    elif tensor.datatype == "BOOL":
        field.extend(_bool_array(tensor).tolist())
    else:
        dtype = "<f4" if tensor.datatype == "BF16" else _RAW_DTYPES[tensor.datatype]
        field.extend(_numeric_array(tensor, dtype).tolist())
    return contents


def encode_outputs(response: pb.ModelInferResponse, tensors: Sequence[Tensor], raw: bool) -> None:
    """Rewrite ``response.outputs`` / ``raw_output_contents`` from ``tensors``, in place.

    The outputs become exactly ``tensors``, in their order and in the chosen
    representation. An output that already exists under a tensor's name keeps its
    ``parameters`` and must keep its datatype and shape; an existing output with no tensor
    is dropped. On error nothing is changed.
    """
    outputs, raws = _encode(response.outputs, tensors, raw, pb.ModelInferResponse.InferOutputTensor)
    del response.outputs[:]
    response.outputs.extend(outputs)
    del response.raw_output_contents[:]
    response.raw_output_contents.extend(raws)


def encode_inputs(request: pb.ModelInferRequest, tensors: Sequence[Tensor], raw: bool) -> None:
    """Like ``encode_outputs``, for a request's inputs and ``raw_input_contents``."""
    inputs, raws = _encode(request.inputs, tensors, raw, pb.ModelInferRequest.InferInputTensor)
    del request.inputs[:]
    request.inputs.extend(inputs)
    del request.raw_input_contents[:]
    request.raw_input_contents.extend(raws)


def _encode(
    existing: Sequence[Any], tensors: Sequence[Tensor], raw: bool, message_type: Any
) -> tuple[list[Any], list[bytes]]:
    previous = {message.name: message for message in existing}
    messages, raws = [], []
    names: set[str] = set()
    for tensor in tensors:
        if tensor.name in names:
            raise ValueError(f"tensor '{tensor.name}' given more than once")
        names.add(tensor.name)
        message = message_type(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        old = previous.get(tensor.name)
        if old is not None:
            if old.datatype != tensor.datatype or old.shape[:] != list(tensor.shape):
                raise ValueError(
                    f"tensor '{tensor.name}' is {tensor.datatype} {shown_shape(tensor.shape)} but the "
                    f"message has {old.datatype} {shown_shape(old.shape)}; encoding must not change "
                    "datatype or shape"
                )
            if old.parameters:  # most outputs have none: skip the slow map iteration
                for key, parameter in old.parameters.items():
                    message.parameters[key].CopyFrom(parameter)
        if raw:
            raws.append(tensor_to_raw(tensor))
        else:
            message.contents.CopyFrom(tensor_to_contents(tensor))
        messages.append(message)
    return messages, raws


def _check_encodable(tensor: Tensor) -> None:
    if tensor.datatype not in DATATYPES:
        raise ValueError(f"tensor '{tensor.name}' has unknown datatype '{tensor.datatype}'")
    if any(dim < 0 for dim in tensor.shape):
        raise ValueError(
            f"tensor '{tensor.name}' has a negative dimension in shape {shown_shape(tensor.shape)}"
        )
    count = element_count(tensor.shape)
    if tensor.size != count:
        raise ValueError(
            f"tensor '{tensor.name}' has {tensor.size} values; "
            f"shape {shown_shape(tensor.shape)} needs {count}"
        )


def _bytes_values(tensor: Tensor) -> list[bytes]:
    if set(map(type, tensor.values)) <= {bytes}:
        return tensor.values
    values = []
    for value in tensor.values:
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"BYTES tensor '{tensor.name}' has a {type(value).__name__} value")
        values.append(bytes(value))
    return values


def _bool_array(tensor: Tensor) -> np.ndarray:
    array = np.asarray(tensor.values)
    if array.size and array.dtype.kind != "b":
        raise ValueError(f"BOOL tensor '{tensor.name}' has non-bool values")
    return array.astype(bool)


def _numeric_array(tensor: Tensor, dtype_name: str) -> np.ndarray:
    dtype = _DTYPES[dtype_name]
    if not tensor.values:
        return np.empty(0, dtype=dtype)
    if dtype.kind in "iu":
        # Checked in Python: numpy would wrap, truncate floats, or fall back to object arrays.
        if not set(map(type, tensor.values)) <= {int, bool} and not all(
            isinstance(value, numbers.Integral) for value in tensor.values
        ):
            raise ValueError(f"{tensor.datatype} tensor '{tensor.name}' needs integers")
        low, high = _INT_BOUNDS[dtype_name]
        if min(tensor.values) < low or max(tensor.values) > high:
            raise ValueError(f"{tensor.datatype} tensor '{tensor.name}' has a value outside {low}..{high}")
        return np.array(tensor.values, dtype=dtype)
    array = np.asarray(tensor.values)
    if array.dtype.kind not in "iubf":
        raise ValueError(f"{tensor.datatype} tensor '{tensor.name}' needs numbers")
    return array.astype(dtype)
