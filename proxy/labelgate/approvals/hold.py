"""Stage: hold for approval.

The interface the pipeline uses when a decision says ``require_approval``. The gateway
plugs in ``labelgate.approvals.stage.HoldForApproval`` (held calls, approvers, grants);
``RefuseUntilApproved`` is what it uses when approvals are off or not configured: such
calls are refused at once, saying that approval is required.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from labelgate.policy.contract import Decision

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.calls import Call

Reevaluate = Callable[[dict[str, Any]], Awaitable[Decision]]


class ApprovalStage(Protocol):
    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        """Wait for the approval the decision asks for; return the decision to enforce.

        On a grant, ``reevaluate`` asks policy again with ``approval.state = granted``.
        Denied or expired: return a decision that does not allow.
        """
        ...


class RefuseUntilApproved:
    """No approval service: the call is refused with the policy's reason (APPROVAL_REQUIRED)."""

    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        return decision
