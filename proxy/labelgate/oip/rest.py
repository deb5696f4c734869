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

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput, Unsupported
from labelgate.oip import tensors as oip

HEADER_LENGTH = "Inference-Header-Content-Length"
# Parameters that steer the binding itself; they never travel upstream.
BINDING_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size"})
SHARED_MEMORY = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})
MAX_JSON_DEPTH = 64


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


def _invalid(message: str, reason: str = "REST_REQUEST_INVALID") -> InvalidInput:
    return InvalidInput(reason, message)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a JSON object")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise _invalid(f"{HEADER_LENGTH} must be a whole number") from None
    if not 0 <= length <= len(body):
        raise _invalid(f"{HEADER_LENGTH} {length} does not fit a {len(body)}-byte body")
    return body[:length], body[length:]


def parse_json(text: bytes, what: str = "the request") -> Any:
    try:
        value = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _invalid(f"{what} is not valid JSON: {error}") from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def set_parameters(target: Any, parameters: Mapping[str, Any], where: str) -> None:
    """JSON parameters into an ``InferParameter`` map (bool, int64, double, string)."""
    for name, value in parameters.items():
        if name in SHARED_MEMORY:
            raise Unsupported(
                "SHARED_MEMORY_UNSUPPORTED",
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
    raw: dict[str, Any], position: int
) -> tuple[pb.ModelInferRequest.InferInputTensor, int | None, list]:
    where = f"inputs[{position}]"
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name must be a non-empty string")
    if datatype not in oip.DATATYPES:
        raise _invalid(f"{where}.datatype must be one of {sorted(oip.DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _invalid(f"{where}.shape must be a list of whole numbers")
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
    values = _flatten(raw["data"])
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise _invalid(f"{where}: BYTES data must be strings")
        values = [v.encode("utf-8", "surrogatepass") for v in values]
    return message, None, values


def infer_request(
    model: str, version: str, body: bytes, header_length: str | None
) -> tuple[Any, ReplyFormat]:
    """A ``ModelInferRequest`` and the reply format from an ``.../infer`` POST."""
    header, binary = _split_body(body, header_length)
    document = _object(parse_json(header), "the request")
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise _invalid("id must be a string")
        request.id = document["id"]
    parameters = _object(document.get("parameters", {}), "parameters")
    reply = ReplyFormat(all_binary=parameters.get("binary_data_output") is True)
    set_parameters(request.parameters, parameters, "the request")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _invalid("inputs must be a non-empty list")
    offset, raws = 0, []
    for position, raw in enumerate(inputs):
        message, size, values = _input_tensor(_object(raw, f"inputs[{position}]"), position)
        if size is not None:
            if offset + size > len(binary):
                raise _invalid(f"inputs[{position}] needs {size} binary bytes past the end")
            raws.append(binary[offset : offset + size])
            offset += size
        else:
            try:
                raws.append(
                    oip.tensor_to_raw(oip.Tensor(message.name, message.datatype, list(message.shape), values))
                )
            except (ValueError, TypeError) as error:
                raise _invalid(f"inputs[{position}]: {error}") from None
        request.inputs.append(message)
    if offset != len(binary):
        raise _invalid(f"{len(binary) - offset} binary bytes belong to no input")
    request.raw_input_contents.extend(raws)
    for position, raw in enumerate(document.get("outputs") or []):
        output = _object(raw, f"outputs[{position}]")
        name = output.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"outputs[{position}].name must be a non-empty string")
        wanted = _object(output.get("parameters", {}), f"outputs[{position}].parameters")
        if wanted.get("classification"):
            raise Unsupported("CLASSIFICATION_UNSUPPORTED", "the classification extension is not supported")
        if "binary_data" in wanted:
            (reply.binary if wanted["binary_data"] is True else reply.json).add(name)
        message = request.outputs.add(name=name)
        set_parameters(message.parameters, wanted, f"outputs[{position}]")
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
    for message, tensor in zip(reply.outputs, tensors, strict=True):
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
                raise _invalid(
                    f"output {tensor.name!r} is not UTF-8 text: ask for it with binary_data",
                    "REST_OUTPUT_NOT_TEXT",
                ) from None
        else:
            output["data"] = list(tensor.values)
        if parameters:
            output["parameters"] = parameters
        outputs.append(output)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
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
