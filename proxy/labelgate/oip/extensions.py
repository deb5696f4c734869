"""Triton's model extensions in the REST binding's JSON, both ways. Pure.

Replies (already classified, decided and rebuilt by the pipeline) become the JSON Triton's
HTTP endpoints answer: every declared field, defaults included, 64-bit integers as JSON
numbers, enums by name. Only the fields ``model_extensions.proto`` declares exist here, so
the JSON cannot carry more than the gRPC reply.

Request bodies (``POST /v2/repository/index``, ``.../load``, ``.../unload``) become the gRPC
requests; anything malformed is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.errors import InvalidInput
from labelgate.oip import reasons
from labelgate.oip.rest import parse_json, refusing


def message_json(message: Message) -> dict[str, Any]:
    """Every declared field of ``message``; a message field only when it is set."""
    result: dict[str, Any] = {}
    field: Any  # a descriptor (its stubs type message_type and enum_type as optional)
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            result[field.name] = {str(k): _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            result[field.name] = [_value(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if message.HasField(field.name):
                result[field.name] = message_json(value)
        else:
            result[field.name] = _value(field, value)
    return result


def config_json(reply: ext.ModelConfigResponse) -> dict[str, Any]:
    """``GET /v2/models/{m}/config`` answers the configuration itself."""
    return message_json(reply.config)


def index_json(reply: ext.RepositoryIndexResponse) -> list[dict[str, Any]]:
    """``POST /v2/repository/index`` answers a list."""
    return [message_json(model) for model in reply.models]


def index_request(body: bytes) -> ext.RepositoryIndexRequest:
    """``{"ready": bool}``, or an empty body."""
    data = _object(body)
    ready = data.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(reasons.REST_REQUEST_INVALID, "'ready' must be true or false")
    return ext.RepositoryIndexRequest(ready=ready)


@refusing(
    reasons.REST_REQUEST_INVALID,
    "the body holds text that is not valid Unicode (a lone surrogate) or a number too large for its field",
)
def repository_parameters(body: bytes, into: Any) -> None:
    """``{"parameters": {...}}`` of a load or unload into the request's ``parameters`` map:
    strings, booleans and integers as they are; ``file:<path>`` entries are base64 text
    (model files), sent as bytes."""
    parameters = _object(body).get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(reasons.REST_REQUEST_INVALID, "'parameters' must be an object")
    for name, value in parameters.items():
        parameter = into[name]
        if name.startswith("file:") and isinstance(value, str):
            try:
                parameter.bytes_param = base64.b64decode(value, validate=True)
            except ValueError:  # binascii.Error, or text that is not ASCII
                raise _invalid(f"parameter '{name}' must be base64") from None
        elif isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            parameter.int64_param = value
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            raise _invalid(f"parameter '{name}' must be a string, boolean or 64-bit integer")


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    data = parse_json(body, "the body")  # deep nesting, bad UTF-8: REST_REQUEST_INVALID
    if not isinstance(data, dict):
        raise InvalidInput(reasons.REST_REQUEST_INVALID, "the body must be a JSON object")
    return data


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(reasons.REST_REQUEST_INVALID, message)


def _is_map(field: Any) -> bool:
    return bool(field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value
