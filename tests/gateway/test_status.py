"""``refusals``: how a transport turns what a call raised into the caller's status."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import status_pb2

from labelgate.errors import InvalidInput
from labelgate.gateway import reasons
from labelgate.gateway.status import refusals, to_grpc_status

SECRET = "123-45-6789"


class AbortingContext:
    """What a ``ServicerContext`` does on abort: keep the status, raise ``AbortError``."""

    def __init__(self) -> None:
        self.statuses: list[grpc.Status] = []

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.statuses.append(status)
        raise grpc.aio.AbortError()


def refused(error: BaseException) -> tuple[grpc.StatusCode, str, str]:
    context = AbortingContext()

    async def call() -> None:
        async with refusals(context):  # type: ignore[arg-type]
            raise error

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(call())
    [status] = context.statuses
    details = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    return status.code, status.details, str(details)


def test_a_labelgate_error_is_its_own_status() -> None:
    code, message, _ = refused(InvalidInput("SOME_REASON", "bad request"))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad request")


@pytest.mark.parametrize("error", [ValueError(f"Value out of range: {SECRET}"), AttributeError(SECRET)])
def test_anything_else_is_a_fixed_internal_status_without_its_text(error: Exception) -> None:
    code, message, details = refused(error)
    assert code == grpc.StatusCode.INTERNAL
    assert reasons.INTERNAL_ERROR in details
    assert SECRET not in message and SECRET not in details


def test_an_abort_inside_the_call_keeps_its_status() -> None:
    context = AbortingContext()
    own = to_grpc_status(InvalidInput("SOME_REASON", "bad request"))

    async def call() -> None:
        async with refusals(context):  # type: ignore[arg-type]
            await context.abort_with_status(own)

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(call())
    assert context.statuses == [own]  # not turned into a second, INTERNAL status
