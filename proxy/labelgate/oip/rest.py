"""The Open Inference Protocol's HTTP/REST binding (KServe v2), as pure conversions.

A REST call is one more call shape of the same pipeline: its JSON (and Triton's binary
tensor extension) is turned into the gRPC messages the pipeline already knows, and the
reply the pipeline built is turned back. Nothing here does I/O.

Binary extension (what ``tritonclient.http`` sends by default): the body is a JSON header
of ``Inference-Header-Content-Length`` bytes followed by the binary tensors, in the order
of the inputs whose ``parameters.binary_data_size`` says how many bytes each takes. Raw
tensors use the gRPC binding's raw layout (BYTES elements with 4-byte little-endian
lengths). Replies carry outputs in binary when the request asks (``binary_data_output``,
or ``binary_data`` per output), else as JSON ``data``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeGuard, TypeVar

import numpy as np
from google.protobuf.message import Message

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput, ResourceExhausted, Unsupported, UpstreamError
from labelgate.oip import reasons
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"
# Parameters that steer the binding itself; they never travel upstream.
BINDING_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size"})
SHARED_MEMORY = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})
MAX_JSON_DEPTH = 64
# A tensor dimension is an int64 in the protocol's messages (and never negative in a tensor).
_DIMENSION_LIMIT = 2**63
# What protobuf raises for a value its field cannot hold: an integer past 64 bits, a bool or a
# float where an integer goes, text with a lone surrogate (``"\\ud800"`` parses as JSON but
# has no UTF-8 form). Its text quotes the value, so it must reach no one (``refusing``).
UNREPRESENTABLE = (ValueError, TypeError, UnicodeEncodeError, OverflowError)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class ReplyFormat:
    """How the caller wants outputs back: all binary, or binary by name."""

    all_binary: bool = False
    binary: set[str] = field(default_factory=set)
    json: set[str] = field(default_factory=set)

    def is_binary(self, name: str) -> bool:
        if name in self.json:
            return False
        return self.all_binary or name in self.binary


def _invalid(message: str, reason: str = reasons.REST_REQUEST_INVALID) -> InvalidInput:
    return InvalidInput(reason, message)


def refusing(reason: str, message: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A conversion into protobuf messages whose input protobuf cannot carry (``UNREPRESENTABLE``)
    fails as ``InvalidInput(reason, message)``: fixed text, since the exception's own quotes the
    value (a caller's, or an upstream's, which could use it to smuggle data into an error)."""

    def decorate(convert: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(convert)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return convert(*args, **kwargs)
            except UNREPRESENTABLE:
                raise InvalidInput(reason, message) from None

        return guarded

    return decorate


def whole_dimensions(shape: Any) -> TypeGuard[list[int]]:
    """``shape`` is a list of dimensions a tensor can have: ints (not bools) in ``[0, 2**63)``."""
    return isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < _DIMENSION_LIMIT for d in shape
    )


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words (for a refusal that says what was wrong)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a JSON object, not {_json_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(f"{where} must be a list, not {_json_kind(value)}")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    # ASCII digits only, as Content-Length is read (``digits.whole_number``, which this
    # package may not import): ``int()`` also takes "1_3", " 13", "+13" and "١٣".
    if not (header_length.isascii() and header_length.isdigit()):
        raise _invalid(f"{HEADER_LENGTH} must be a whole number")
    significant = header_length.lstrip("0") or "0"
    # More digits than any body has bytes: past it, without int() of thousands of digits.
    length = int(significant) if len(significant) <= 18 else 10**18
    if length > len(body):
        raise _invalid(f"{HEADER_LENGTH} {length} does not fit a {len(body)}-byte body")
    return body[:length], body[length:]


def parse_json(text: bytes, what: str = "the request") -> Any:
    try:
        value = json.loads(
            text.decode("utf-8"),
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except RecursionError:
        # Python's words name its decoder ("maximum recursion depth exceeded while decoding").
        raise _invalid(f"{what} nests too deeply to read as JSON") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise _invalid(f"{what} is not valid JSON: {error}") from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# No number the protocol carries (int64, uint64) has more digits; Python's own refusal of a
# longer one (past 4,300 digits) names its interpreter setting, not the caller's mistake.
_INT_DIGITS = 64


def _finite_float(text: str) -> float:
    # ``1e400`` is valid JSON that no float holds: Python reads it as infinity, which JSON
    # cannot write back (a REST caller would get an error, a gRPC caller ``inf``).
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:32]} is out of a double's range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > _INT_DIGITS:
        raise ValueError(f"an integer of more than {_INT_DIGITS} digits is out of any tensor's range")
    return int(text)


def set_parameters(target: Any, parameters: Mapping[str, Any], where: str) -> None:
    """JSON parameters into an ``InferParameter`` map (bool, int64, double, string)."""
    for name, value in parameters.items():
        if name in SHARED_MEMORY:
            raise Unsupported(
                reasons.SHARED_MEMORY_UNSUPPORTED,
                "a gateway cannot inspect shared memory, so it cannot classify what is there; "
                "send the tensors in the request",
            )
        if name in BINDING_PARAMETERS:
            continue
        slot = target[name]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            raise _invalid(f"{where} parameter {name!r} must be a bool, number or string")


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > MAX_JSON_DEPTH:
                    raise _invalid("tensor data is nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _input_tensor(
    raw: dict[str, Any], position: int, room: int
) -> tuple[pb.ModelInferRequest.InferInputTensor, int | None, list[Any]]:
    """An input's message and either its binary size or its values; ``room`` is how many raw
    bytes the request may still take: JSON numbers grow up to 4x as raw bytes (``0,`` is 8 bytes
    of INT64), so the declared shape is checked before anything is built from the data."""
    where = f"inputs[{position}]"
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name must be a non-empty string")
    if datatype not in oip.DATATYPES:
        raise _invalid(f"{where}.datatype must be one of {sorted(oip.DATATYPES)}")
    if not whole_dimensions(shape):
        raise _invalid(f"{where}.shape must be a list of whole numbers below 2**63")
    message = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    parameters = _object(raw.get("parameters", {}), f"{where}.parameters")
    size = parameters.get("binary_data_size")
    set_parameters(message.parameters, parameters, where)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _invalid(f"{where}.parameters.binary_data_size must be >= 0")
        return message, size, []
    if "data" not in raw:
        raise _invalid(f"{where} has neither data nor binary_data_size")
    if datatype != "BYTES" and oip.element_count(shape) * oip.item_size(datatype) > room:
        raise _too_large(where, room)
    values = _flatten(raw["data"])
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise _invalid(f"{where}: BYTES data must be strings")
        values = [v.encode("utf-8", "surrogatepass") for v in values]
        if 4 * len(values) + sum(map(len, values)) > room:
            raise _too_large(where, room)
    return message, None, values


# The float types narrower than a double, as their raw bytes are read, and the largest
# finite magnitude each is packed from. BF16 is a float32's upper half, cut from it
# (``tensors.tensor_to_raw``): it overflows where FP32 does, its exponent's bits all set.
_NARROW_FLOATS = {"FP16": ("<f2", "65504"), "FP32": ("<f4", "3.4028235e38"), "BF16": ("<u2", "3.4028235e38")}
_BF16_EXPONENT = 0x7F80


def _check_in_range(raw: bytes, datatype: str, where: str) -> None:
    """Refuse JSON numbers a narrower float type cannot hold, as ``_finite_float`` refuses
    those a double cannot: packed, ``1e300`` becomes infinity, a value the caller never wrote
    (JSON has no infinity, so any in the packed tensor is an overflow)."""
    narrow = _NARROW_FLOATS.get(datatype)
    if narrow is None or not raw:
        return
    dtype, largest = narrow
    packed = np.frombuffer(raw, dtype)
    if datatype == "BF16":
        overflowed = bool(((packed & _BF16_EXPONENT) == _BF16_EXPONENT).any())
    else:
        overflowed = not bool(np.isfinite(packed).all())
    if overflowed:
        raise _invalid(f"{where} has a number out of {datatype}'s range (at most {largest} either way)")


def _too_large(where: str, room: int) -> ResourceExhausted:
    return ResourceExhausted(
        reasons.REQUEST_TOO_LARGE,
        f"{where} as raw tensor bytes is larger than the {room} bytes left under limits.max_message_bytes",
    )


@refusing(
    reasons.REST_REQUEST_INVALID,
    "the request holds text that is not valid Unicode (a lone surrogate) or a number too large for its field",
)
def infer_request(
    model: str, version: str, body: bytes, header_length: str | None, *, max_raw_bytes: int, max_inputs: int
) -> tuple[Any, ReplyFormat]:
    """A ``ModelInferRequest`` and the reply format from an ``.../infer`` POST, its tensors
    at most ``max_raw_bytes`` as raw bytes (the message the upstream is sent), its inputs at
    most ``max_inputs`` (``limits.max_inputs``), counted before any is built."""
    header, binary = _split_body(body, header_length)
    document = _object(parse_json(header), "the request")
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise _invalid(f"id must be a string, not {_json_kind(document['id'])}")
        request.id = document["id"]
    parameters = _object(document.get("parameters", {}), "parameters")
    inputs = _list(document.get("inputs"), "inputs")  # empty is the upstream's to judge, as over gRPC
    outputs = document.get("outputs")  # absent or null: none named (the model's own choice)
    outputs = [] if outputs is None else _list(outputs, "outputs")
    if len(inputs) > max_inputs:
        raise InvalidInput(
            reasons.TOO_MANY_INPUTS,
            f"the request has {len(inputs)} inputs; at most {max_inputs} (limits.max_inputs)",
        )
    reply = ReplyFormat(all_binary=parameters.get("binary_data_output") is True)
    set_parameters(request.parameters, parameters, "the request")
    offset, raws, room = 0, [], max_raw_bytes - len(binary)
    for position, raw in enumerate(inputs):
        message, size, values = _input_tensor(_object(raw, f"inputs[{position}]"), position, room)
        if size is not None:
            if offset + size > len(binary):
                raise _invalid(f"inputs[{position}] needs {size} binary bytes past the end")
            raws.append(binary[offset : offset + size])
            offset += size
        else:
            try:
                # An overflow is refused below, not warned of on the gateway's stderr.
                with np.errstate(over="ignore"):
                    tensor = Tensor(message.name, message.datatype, list(message.shape), values)
                    raws.append(oip.tensor_to_raw(tensor))
            except (ValueError, TypeError) as error:
                raise _invalid(f"inputs[{position}]: {error}") from None
            _check_in_range(raws[-1], message.datatype, f"inputs[{position}]")
            room -= len(raws[-1])
        request.inputs.append(message)
    if offset != len(binary):
        raise _invalid(f"{len(binary) - offset} binary bytes belong to no input")
    request.raw_input_contents.extend(raws)
    for position, raw in enumerate(outputs):
        output = _object(raw, f"outputs[{position}]")
        name = output.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"outputs[{position}].name must be a non-empty string")
        wanted = _object(output.get("parameters", {}), f"outputs[{position}].parameters")
        if wanted.get("classification"):
            raise Unsupported(
                reasons.CLASSIFICATION_UNSUPPORTED, "the classification extension is not supported"
            )
        if "binary_data" in wanted:
            (reply.binary if wanted["binary_data"] is True else reply.json).add(name)
        requested = request.outputs.add(name=name)
        set_parameters(requested.parameters, wanted, f"outputs[{position}]")
    return request, reply


def parameter_json(parameters: Any) -> dict[str, Any]:
    values = {}
    for name, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[name] = getattr(parameter, choice)
    return values


def infer_response(reply: Any, reply_format: ReplyFormat) -> tuple[bytes, int | None]:
    """The body of an ``.../infer`` reply, and the JSON header's length when binary follows."""
    tensors = oip.decode_outputs(reply)
    document: dict[str, Any] = {"model_name": reply.model_name, "model_version": reply.model_version}
    if reply.id:
        document["id"] = reply.id
    if reply.parameters:
        document["parameters"] = parameter_json(reply.parameters)
    outputs, binary = [], []
    for position, (message, tensor) in enumerate(zip(reply.outputs, tensors, strict=True)):
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters = parameter_json(message.parameters)
        if reply_format.is_binary(tensor.name):
            data = oip.tensor_to_raw(tensor)
            parameters["binary_data_size"] = len(data)
            binary.append(data)
        elif tensor.datatype == "BYTES":
            try:
                output["data"] = [bytes(value).decode("utf-8") for value in tensor.values]
            except UnicodeDecodeError:
                # The upstream's bytes, not the caller's request: a 502, not a 400.
                raise UpstreamError(
                    reasons.REST_OUTPUT_NOT_TEXT,
                    # Named by position: an output's name is the upstream's text.
                    f"the upstream's output #{position} is not UTF-8 text, which JSON cannot "
                    "carry: ask for it with binary_data",
                ) from None
        else:
            output["data"] = list(tensor.values)
        if parameters:
            output["parameters"] = parameters
        outputs.append(output)
    document["outputs"] = outputs
    try:
        header = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        # NaN or an infinity from the upstream: JSON has no spelling for them (json.dumps'
        # "NaN" is not JSON, and clients refuse the body). The upstream's values: a 502.
        raise UpstreamError(
            reasons.REST_OUTPUT_NOT_JSON,
            "the upstream's reply holds NaN or an infinity, which JSON cannot carry: ask for the "
            "outputs with binary_data",
        ) from None
    if not binary:
        return header, None
    return header + b"".join(binary), len(header)


def message_json(message: Message) -> dict[str, Any]:
    """A metadata reply (already classified and decided) in the REST binding's JSON."""
    if isinstance(message, pb.ModelMetadataResponse):
        return {
            "name": message.name,
            "versions": list(message.versions),
            "platform": message.platform,
            "inputs": [_tensor_metadata(t) for t in message.inputs],
            "outputs": [_tensor_metadata(t) for t in message.outputs],
        }
    if isinstance(message, pb.ServerMetadataResponse):
        return {"name": message.name, "version": message.version, "extensions": list(message.extensions)}
    raise TypeError(f"no REST form for {message.DESCRIPTOR.full_name}")


def _tensor_metadata(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


# -- toward a REST upstream ------------------------------------------------------------------
# The gateway speaks the binding to upstreams too (``gateway/rest_upstream.py``): the request
# the pipeline admitted goes out as plain KServe v2 JSON, which every v2 server reads (MLServer
# has no binary tensor extension), and the upstream's reply is parsed back into the gRPC
# message the pipeline classifies. Whatever of that reply this parser does not read (unknown
# keys, non-scalar parameters, headers) is simply never carried: replies are built, not
# forwarded. A reply that does not parse raises ``InvalidInput`` with reason
# ``UPSTREAM_MALFORMED``; the gateway turns it into its own error.

UPSTREAM_MALFORMED = reasons.UPSTREAM_MALFORMED
# Labels the upstream declares: never silently dropped, since dropping one could lower a label.
_LABELS_PARAMETER = "labelgate.labels"


def _malformed(message: str) -> InvalidInput:
    return InvalidInput(UPSTREAM_MALFORMED, message)


# Every parser of an upstream's reply: a value protobuf refuses is a malformed reply.
_from_upstream = refusing(
    UPSTREAM_MALFORMED, "the upstream's reply holds text that is not valid Unicode or a number out of range"
)


def upstream_infer_body(request: Any) -> bytes:
    """The JSON body of ``POST .../infer`` for a ``ModelInferRequest`` the pipeline admitted."""
    document: dict[str, Any] = {}
    if request.id:
        document["id"] = request.id
    if request.parameters:
        document["parameters"] = parameter_json(request.parameters)
    inputs = []
    for message, tensor in zip(request.inputs, oip.decode_inputs(request), strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if message.parameters:
            entry["parameters"] = parameter_json(message.parameters)
        if tensor.datatype == "BYTES":
            try:
                entry["data"] = [bytes(value).decode("utf-8") for value in tensor.values]
            except UnicodeDecodeError:
                raise _invalid(
                    f"input {tensor.name!r} is not UTF-8 text, which this REST upstream's JSON cannot carry",
                    reasons.REST_UPSTREAM_INPUT_NOT_TEXT,
                ) from None
        else:
            entry["data"] = list(tensor.values)
        inputs.append(entry)
    document["inputs"] = inputs
    if request.outputs:
        outputs = []
        for output in request.outputs:
            wanted: dict[str, Any] = {"name": output.name}
            if output.parameters:
                wanted["parameters"] = parameter_json(output.parameters)
            outputs.append(wanted)
        document["outputs"] = outputs
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise _invalid("an input holds NaN or infinity, which JSON cannot carry") from None


def _reply_parameters(target: Any, parameters: Any, where: str) -> None:
    """Scalar parameters of an upstream reply into an ``InferParameter`` map; the rest is
    left behind (MLServer puts objects there), except a label declaration, which must parse."""
    if not isinstance(parameters, dict):
        raise _malformed(f"{where} parameters are not an object")
    for name, value in parameters.items():
        if name in BINDING_PARAMETERS:
            continue
        slot = None
        if isinstance(value, bool):
            slot = target[name]
            slot.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            slot = target[name]
            slot.int64_param = value
        elif isinstance(value, float):
            slot = target[name]
            slot.double_param = value
        elif isinstance(value, str):
            slot = target[name]
            slot.string_param = value
        if slot is None and name == _LABELS_PARAMETER:
            raise _malformed(f"{where} {_LABELS_PARAMETER} is not a string")


def _output_values(raw: dict[str, Any], datatype: str, where: str) -> list[Any]:
    values = _flatten(raw["data"])
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise _malformed(f"{where}: BYTES data must be strings")
        return [v.encode("utf-8", "surrogatepass") for v in values]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise _malformed(f"{where}: BOOL data must be true or false")
        return values
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise _malformed(f"{where}: {datatype} data must be numbers")
    return values


@_from_upstream
def upstream_infer_reply(body: bytes, header_length: str | None, raw: bool) -> Any:
    """A ``ModelInferResponse`` from a REST upstream's ``.../infer`` reply (JSON, or JSON and
    Triton's binary tensors); outputs as ``raw_output_contents`` when ``raw``, else typed."""
    try:
        header, binary = _split_body(body, header_length)
        document = parse_json(header, "the upstream's reply")
    except InvalidInput:
        raise _malformed("the upstream's reply is not a KServe v2 JSON document") from None
    if not isinstance(document, dict):
        raise _malformed("the upstream's reply is not a JSON object")
    reply = pb.ModelInferResponse()
    for key in ("model_name", "model_version", "id"):
        value = document.get(key)
        if isinstance(value, str):
            setattr(reply, key, value)
    _reply_parameters(reply.parameters, document.get("parameters", {}), "the reply's")
    outputs = document.get("outputs")
    if not isinstance(outputs, list):
        raise _malformed("the upstream's reply has no outputs list")
    tensors, offset = [], 0
    for position, raw_output in enumerate(outputs):
        where = f"outputs[{position}]"
        if not isinstance(raw_output, dict):
            raise _malformed(f"{where} is not an object")
        name, datatype, shape = raw_output.get("name"), raw_output.get("datatype"), raw_output.get("shape")
        if not isinstance(name, str) or datatype not in oip.DATATYPES:
            raise _malformed(f"{where} has no name or an unknown datatype")
        if not whole_dimensions(shape):
            raise _malformed(f"{where}.shape is not a list of whole numbers below 2**63")
        message = reply.outputs.add(name=name, datatype=datatype, shape=shape)
        parameters = raw_output.get("parameters", {})
        _reply_parameters(message.parameters, parameters, where)
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
                raise _malformed(f"{where}.binary_data_size does not fit the reply")
            chunk = binary[offset : offset + size]
            offset += size
            single = pb.ModelInferResponse(raw_output_contents=[chunk])
            single.outputs.add(name=name, datatype=datatype, shape=shape)
            try:
                values = oip.decode_outputs(single)[0].values
            except InvalidInput:
                raise _malformed(f"{where}'s binary data does not match its shape") from None
        elif "data" in raw_output:
            try:
                values = _output_values(raw_output, datatype, where)
            except InvalidInput as error:
                raise _malformed(error.message) from None
        else:
            raise _malformed(f"{where} has neither data nor binary_data_size")
        tensors.append(Tensor(name, datatype, list(shape), values))
    if offset != len(binary):
        raise _malformed("the upstream's reply has binary bytes that belong to no output")
    try:
        oip.encode_outputs(reply, tensors, raw)
    except (ValueError, TypeError, OverflowError):
        raise _malformed("the upstream's outputs do not match their datatypes and shapes") from None
    return reply


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(f"{where} is not a list of strings")
    return value


def _tensor_metadata_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _malformed(f"{where} is not a list")
    tensors = []
    for position, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise _malformed(f"{where}[{position}] is not an object")
        name, datatype, shape = raw.get("name"), raw.get("datatype", ""), raw.get("shape", [])
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise _malformed(f"{where}[{position}] has no name or datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and -(2**63) <= d < 2**63 for d in shape
        ):
            raise _malformed(f"{where}[{position}].shape is not a list of whole numbers")
        tensors.append(pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape))
    return tensors


@_from_upstream
def upstream_metadata(body: bytes, response_type: type[Message]) -> Message:
    """A ``ModelMetadataResponse`` or ``ServerMetadataResponse`` from a REST upstream's JSON;
    only the protocol's own keys are read."""
    try:
        document = parse_json(body, "the upstream's reply")
    except InvalidInput:
        raise _malformed("the upstream's metadata is not JSON") from None
    if not isinstance(document, dict):
        raise _malformed("the upstream's metadata is not a JSON object")
    name = document.get("name", "")
    if not isinstance(name, str):
        raise _malformed("the upstream's metadata has no name")
    if response_type is pb.ServerMetadataResponse:
        version = document.get("version", "")
        return pb.ServerMetadataResponse(
            name=name,
            version=version if isinstance(version, str) else "",
            extensions=_strings(document.get("extensions", []), "extensions"),
        )
    if response_type is pb.ModelMetadataResponse:
        platform = document.get("platform", "")
        return pb.ModelMetadataResponse(
            name=name,
            versions=_strings(document.get("versions") or [], "versions"),
            platform=platform if isinstance(platform, str) else "",
            inputs=_tensor_metadata_list(document.get("inputs", []), "inputs"),
            outputs=_tensor_metadata_list(document.get("outputs", []), "outputs"),
        )
    # Not a TypeError: that would pass for the upstream's malformed reply (``_from_upstream``).
    raise NotImplementedError(f"no REST form for {response_type.DESCRIPTOR.full_name}")


@_from_upstream
def upstream_index(body: bytes) -> ext.RepositoryIndexResponse:
    """A ``RepositoryIndexResponse`` from a REST upstream's ``POST /v2/repository/index``
    (a JSON list); only each entry's ``name``, ``version``, ``state`` and ``reason`` are read."""
    try:
        document = parse_json(body, "the upstream's reply")
    except InvalidInput:
        raise _malformed("the upstream's repository index is not JSON") from None
    if not isinstance(document, list):
        raise _malformed("the upstream's repository index is not a JSON list")
    index = ext.RepositoryIndexResponse()
    for entry in document:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise _malformed("an entry of the upstream's repository index has no name")
        texts = {key: entry.get(key) for key in ("version", "state", "reason")}
        index.models.add(name=name, **{k: v for k, v in texts.items() if isinstance(v, str)})
    return index
