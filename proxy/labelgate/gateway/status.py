"""Turn labelgate errors into gRPC statuses that carry a ``google.rpc.ErrorInfo``.

Every refusal the caller sees has a code, a readable message and an ``ErrorInfo``
(domain ``labelgate``) with a stable reason and, for policy outcomes, the decision id,
so clients can act on it without parsing text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from labelgate.errors import LabelgateError
from labelgate.gateway import reasons
from labelgate.gateway.upstream import upstream_error
from labelgate.logs import get_logger

log = get_logger(__name__)

DOMAIN = "labelgate"


def to_grpc_status(error: LabelgateError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=DOMAIN,
        metadata={k: str(v) for k, v in error.details.items() if v is not None},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code.name),
        message=error.message,
        details=[detail],
    )
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: LabelgateError) -> None:
    """Abort the RPC with the error's status; never returns."""
    await context.abort_with_status(to_grpc_status(error))


def error_info(call: grpc.aio.Call | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a labelgate refusal carries (clients and tests use this)."""
    # Callers pass a caught RpcError (sync, or grpc.aio's AioRpcError): either answers
    # code() and trailing_metadata() synchronously, which is all from_call reads.
    status = rpc_status.from_call(call)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


@contextlib.asynccontextmanager
async def refusals(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """The one place a transport turns failures into statuses: a ``LabelgateError`` as
    itself, an upstream failure the stub did not map as ``upstream_error`` (its text kept
    out), and anything else as a fixed INTERNAL status. grpc would otherwise send an
    unexpected exception's text to the caller, and that text can carry upstream or caller
    data (a protobuf "Value out of range: <the upstream's number>")."""
    try:
        yield
    except LabelgateError as error:
        await abort(context, error)
    except grpc.aio.AioRpcError as error:
        await abort(context, upstream_error(error))
    except grpc.aio.AbortError:
        raise  # the call was aborted with its own status already
    except Exception as error:
        log.error("unexpected error; the call is refused", error_type=type(error).__name__)
        await abort(context, LabelgateError(reasons.INTERNAL_ERROR, "internal error in the gateway"))
