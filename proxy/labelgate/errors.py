"""One error vocabulary for the whole gateway.

Every failure that can reach a caller is a ``LabelgateError`` with a stable ``reason``
(machine-readable, used in gRPC ``ErrorInfo`` and in logs) and a message a person can
read. The edges translate it: gRPC status, HTTP problem response, CLI exit code.
"""

from __future__ import annotations

import traceback

import grpc


class LabelgateError(Exception):
    """Base error: ``reason`` is a stable UPPER_SNAKE identifier."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    exit_code: int = 1

    def __init__(self, reason: str, message: str, **details: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class ConfigError(LabelgateError):
    """The configuration can never work; every problem is in the message."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 500
    exit_code = 2


class InvalidInput(LabelgateError):
    """The caller sent something malformed."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    exit_code = 2


class NotFound(LabelgateError):
    code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Unauthenticated(LabelgateError):
    code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(LabelgateError):
    code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class BundleUnavailable(LabelgateError):
    """No policy bundle to be had: the bundle server has none ready yet, or a gateway
    following one could not fetch it (network, HTTP status). Worth retrying later."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class PolicyUnavailable(LabelgateError):
    """The policy engine could not give a valid decision: the call is denied."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class UpstreamError(LabelgateError):
    code = grpc.StatusCode.UNAVAILABLE
    http_status = 502


class ResourceExhausted(LabelgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class Overloaded(LabelgateError):
    """The gateway is at a bound of its own (not of this request): the caller may retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503


class Stopping(LabelgateError):
    """The gateway stopped while the call ran (a stop's grace ran out): the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class Unimplemented(LabelgateError):
    """A method the gateway does not serve."""

    code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 501


class Unsupported(LabelgateError):
    """The caller asked for something the gateway cannot do safely (shared memory, ...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 400


def drop_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames ``error``, and the errors it was raised from,
    passed through. grpc keeps a call's abort error on the call's own state, which every
    frame of the handler reaches through its ``context``: the frames in that error's
    traceback are in a reference cycle, and with them the request each holds, until a
    collection finds them (``gateway/heap.py`` makes those rare)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
