"""Errors of the approval service, on top of the shared vocabulary in ``labelgate.errors``."""

from __future__ import annotations

import grpc

from labelgate.errors import LabelgateError


class ApprovalPending(LabelgateError):
    """Async mode: the call waits for an approval; ``details`` carry ``approval_id`` and ``link``
    (the gateway turns them into ErrorInfo metadata). Retry with ``x-labelgate-approval-id``."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class ApprovalConflict(LabelgateError):
    """The request is not in a state that allows this (already resolved, already voted)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class ApprovalsUnavailable(LabelgateError):
    """The approval store cannot be reached: held calls are refused (fail closed)."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class HoldDeadlineExceeded(LabelgateError):
    """A held call reached its caller's deadline before approvers decided: the approval request
    is marked expired and the caller gets DEADLINE_EXCEEDED with this reason (sent just before
    the deadline, so the caller learns why rather than seeing only its own timer fire)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
