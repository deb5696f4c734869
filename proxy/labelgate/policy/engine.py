"""The one interface the gateway uses to ask for a decision, whichever engine answers.

Engines fail closed: on the data path ``decide`` never raises, it returns a deny whose
``fail_reason`` says what went wrong (POLICY_UNAVAILABLE, POLICY_TIMEOUT, POLICY_ERROR_500,
POLICY_UNDEFINED, POLICY_RESULT_INVALID, ...). Only ``start`` may raise, for configuration
that can never work.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from labelgate.policy.contract import Decision

# Where the decision lives, as a data path (data.labelgate.decision.result).
DECISION_PATH = "labelgate/decision/result"


@runtime_checkable
class PolicyEngine(Protocol):
    @property
    def name(self) -> str:
        """Short engine name recorded in every Decision (``opa``, ``embedded``, ...)."""
        ...

    @property
    def revision(self) -> str:
        """The policy revision the engine decides with now (changes when the policy does)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def healthy(self) -> bool: ...

    async def decide(self, input: dict[str, Any]) -> Decision:
        """The validated decision for one labelgate.v1 input; a deny on any failure."""
        ...
