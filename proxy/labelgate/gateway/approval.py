"""Stage: hold for approval.

The interface the pipeline uses when a decision says ``require_approval``. The
just-in-time approval service (held calls, approvers, grants) plugs in here; until it
exists the gateway refuses such calls, saying that approval is required.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from labelgate.policy.contract import Decision

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.gateway.pipeline import Call

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
    """No approval service yet: the call is refused with the policy's reason."""

    async def hold(
        self,
        call: Call,
        subject: Subject,
        policy_input: dict[str, Any],
        decision: Decision,
        reevaluate: Reevaluate,
    ) -> Decision:
        return decision
