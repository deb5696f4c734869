"""An in-process grpc.aio client with labelgate's own stubs, for what the Triton client hides:
status details (``ErrorInfo``), the exact bytes on the wire, deadlines and cancellation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from tests.gateway.harness import INFER

Metadata = Sequence[tuple[str, str]]


def as_metadata(headers: Mapping[str, str] | Metadata | None) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return tuple(headers.items())
    return tuple(headers)


@contextlib.asynccontextmanager
async def channel(
    address: str, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    opened = (
        grpc.aio.secure_channel(address, credentials, options=options)
        if credentials is not None
        else grpc.aio.insecure_channel(address, options=options)
    )
    async with opened as ready:
        yield ready


async def infer(
    address: str,
    request: pb.ModelInferRequest,
    headers: Mapping[str, str] | Metadata | None = None,
    *,
    deadline: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> pb.ModelInferResponse:
    async with channel(address, credentials) as opened:
        stub = pb_grpc.GRPCInferenceServiceStub(opened)
        return await stub.ModelInfer(request, metadata=as_metadata(headers), timeout=deadline)


async def infer_wire_bytes(
    address: str,
    request: pb.ModelInferRequest,
    headers: Mapping[str, str] | Metadata | None = None,
    *,
    deadline: float = 10.0,
) -> bytes:
    """Everything the client receives for a call: the serialized response, or on a refusal
    the status message, its details and the trailing metadata, as bytes."""
    async with channel(address) as opened:
        call = opened.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString)
        try:
            return await call(request, metadata=as_metadata(headers), timeout=deadline)
        except grpc.aio.AioRpcError as error:
            trailing = b"".join(
                value if isinstance(value, bytes) else f"{key}: {value}".encode()
                for key, value in (error.trailing_metadata() or ())
            )
            return (error.details() or "").encode() + trailing + (error.debug_error_string() or "").encode()


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None

    @property
    def reason(self) -> str | None:
        return self.info.reason if self.info is not None else None


def refusal_of(error: grpc.aio.AioRpcError) -> Refusal:
    return Refusal(error.code(), error.details() or "", error_info(error))


async def refused(
    address: str,
    request: pb.ModelInferRequest,
    headers: Mapping[str, str] | Metadata | None = None,
    **kwargs: Any,
) -> Refusal:
    """Call, expecting a refusal; fails the test if the call succeeds."""
    try:
        response = await infer(address, request, headers, **kwargs)
    except grpc.aio.AioRpcError as error:
        return refusal_of(error)
    raise AssertionError(
        f"the call was not refused; it returned outputs {[o.name for o in response.outputs]}"
    )


def outputs_of(response: pb.ModelInferResponse) -> dict[str, Tensor]:
    return {tensor.name: tensor for tensor in decode_outputs(response)}


def texts(tensor: Tensor) -> list[str]:
    return [bytes(value).decode() for value in tensor.values]


async def backend_seen(backend: str) -> list[dict[str, Any]]:
    """The calls the demo backend saw, newest first (its ``_debug-metadata`` model), each with
    ``metadata`` as a list of (key, value) pairs."""
    response = await infer(backend, pb.ModelInferRequest(model_name="_debug-metadata"))
    recent = outputs_of(response)["recent"]
    return [json.loads(value) for value in recent.values]
