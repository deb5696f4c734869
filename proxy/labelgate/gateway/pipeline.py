"""The stages every call goes through, in order, in one place.

    authenticate -> decide (request phase) -> hold for approval -> call upstream
    -> classify -> decide (response phase) -> hold for approval -> enforce -> record

Each stage is its own module behind a small interface; this module only strings them
together and owns no I/O of its own (the upstream call is passed in). Anything that
goes wrong raises a ``LabelgateError`` and nothing from the upstream reaches the caller:
the response is released only after the response-phase decision and the masks applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from labelgate.auth import Authenticator, Subject
from labelgate.classify import Classification, Field, to_policy_fields
from labelgate.enforce import apply_masks, apply_message_masks
from labelgate.errors import InvalidInput, LabelgateError, PermissionDenied, PolicyUnavailable
from labelgate.gateway import metrics
from labelgate.gateway.approval import ApprovalStage
from labelgate.gateway.classifier import ClassifierStage
from labelgate.gateway.record import Recorder
from labelgate.gateway.upstream import MalformedUpstream
from labelgate.oip import tensors as oip
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.engine import PolicyEngine

# Fail-closed decisions whose cause is the engine being unreachable, not the policy saying no.
_UNAVAILABLE_REASONS = frozenset({"POLICY_UNAVAILABLE", "POLICY_TIMEOUT"})


@dataclass(frozen=True)
class Call:
    """What the transport tells the pipeline about one RPC."""

    method: str
    peer: str
    metadata: tuple[tuple[str, Any], ...]
    auth_context: dict[str, list[bytes]]
    session_id: str
    request_id: str


@dataclass(frozen=True)
class Target:
    """What a call asks for: the model (or message type) and the outputs it names."""

    service: str
    model: str = ""
    model_version: str = ""
    requested_outputs: tuple[str, ...] = ()
    opaque: bool = False

    def to_policy(self, call: Call) -> dict[str, Any]:
        return {
            "service": self.service,
            "method": call.method,
            "model": self.model,
            "model_version": self.model_version,
            "requested_outputs": list(self.requested_outputs),
            "request_id": call.request_id,
            "session_id": call.session_id,
            "peer": call.peer,
            "opaque": self.opaque,
        }


@dataclass
class Outcome:
    """What the record stage learns about a call."""

    subject: Subject | None = None
    model: str = ""
    upstream_status: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # For session recording: what was asked (names and shapes, no values) and what the
    # caller received, exactly as delivered (after masking).
    request_summary: dict[str, Any] = field(default_factory=dict)
    delivered: Message | None = None
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    masked: list[dict[str, str]] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)


class Pipeline:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        classifier: ClassifierStage,
        engine: PolicyEngine,
        approvals: ApprovalStage,
        recorder: Recorder,
        hash_key: bytes,
    ) -> None:
        self.authenticator = authenticator
        self.classifier = classifier
        self.engine = engine
        self.approvals = approvals
        self.recorder = recorder
        self.hash_key = hash_key

    # -- stage 1: authenticate -------------------------------------------------------
    def authenticate(self, call: Call) -> Subject:
        return self.authenticator.authenticate(call.metadata, call.auth_context)

    # -- stages 2/3 and 6/7: decide, hold ------------------------------------------
    async def decide(
        self, call: Call, subject: Subject, target: Target, phase: str, fields: list[Field], outcome: Outcome
    ) -> Decision:
        def policy_input(approval: dict[str, Any] | None) -> dict[str, Any]:
            return build_input(
                phase=phase,
                subject=subject.to_policy(),
                request=target.to_policy(call),
                fields=to_policy_fields(fields),
                approval=approval,
                time_ns=time.time_ns(),
            )

        first = policy_input(None)
        started = time.perf_counter()
        decision = await self.engine.decide(first)
        metrics.DECISION_SECONDS.labels(engine=self.engine.name, phase=phase).observe(
            time.perf_counter() - started
        )
        if decision.require_approval is not None and not decision.allow:
            decision = await self.approvals.hold(
                call, subject, first, decision, self._reevaluate(policy_input)
            )
        outcome.decisions.append((phase, decision))
        outcome.labels.update(first["labels"])
        if not decision.allow:
            raise _refusal(decision)
        return decision

    def _reevaluate(
        self, policy_input: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> Callable[[dict[str, Any]], Awaitable[Decision]]:
        async def again(approval: dict[str, Any]) -> Decision:
            return await self.engine.decide(policy_input(approval))

        return again

    @contextlib.asynccontextmanager
    async def recording(self, call: Call) -> AsyncIterator[Outcome]:
        """Stage 9, record: every call (or streamed message) is recorded, refused ones too."""
        outcome = Outcome()
        try:
            yield outcome
        except asyncio.CancelledError as error:
            # The caller is gone; record without holding up the cancellation.
            task = asyncio.ensure_future(self.recorder.record(call, outcome, error))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise
        except BaseException as error:
            # The refusal stands whether or not its record could be written.
            with contextlib.suppress(LabelgateError):
                await self.recorder.record(call, outcome, error)
            raise
        # Nothing is released before its record is durable: a failure here fails the call.
        await self.recorder.record(call, outcome, None)

    # -- the whole path for one inference call ------------------------------------
    async def model_infer(
        self, call: Call, request: Message, send: Callable[[Message], Awaitable[Message]]
    ) -> Message:
        async with self.recording(call) as outcome:
            subject = outcome.subject = self.authenticate(call)
            target = infer_target(request, call.method)
            outcome.model = target.model
            outcome.request_summary = request_summary(request)
            await self.check_request(call, subject, target, outcome)
            response = await self.forward(send, request, outcome)
            return await self.release_inference(call, subject, target, response, outcome)

    @staticmethod
    async def forward(
        send: Callable[[Message], Awaitable[Message]], request: Message, outcome: Outcome
    ) -> Message:
        try:
            response = await send(request)
        except LabelgateError as error:
            outcome.upstream_status = error.code.name
            raise
        outcome.upstream_status = "OK"
        return response

    async def check_request(self, call: Call, subject: Subject, target: Target, outcome: Outcome) -> None:
        """Request phase: deny or hold before the upstream runs a query the caller may not see."""
        expected = self.classifier.expected_fields(target.model, list(target.requested_outputs))
        await self.decide(call, subject, target, "request", expected, outcome)

    async def release_inference(
        self, call: Call, subject: Subject, target: Target, response: Message, outcome: Outcome
    ) -> Message:
        """Response phase for one inference response: classify, decide, enforce."""
        try:
            tensors = oip.decode_outputs(response)
        except InvalidInput as error:
            # The upstream's message is broken, not the caller's: INTERNAL, nothing forwarded.
            raise MalformedUpstream(f"the upstream response is malformed: {error.message}") from None
        classification = self.classifier.classify_outputs(target.model, response, tensors)
        decision = await self.decide(call, subject, target, "response", classification.fields, outcome)
        if decision.masks:
            masked = apply_masks(tensors, classification, list(decision.masks), self.hash_key)
            oip.encode_outputs(response, masked, raw=oip.uses_raw_outputs(response))
            outcome.masked = masked_summary(decision, classification)
        outcome.delivered = response
        return response

    async def release_message(
        self, call: Call, subject: Subject, target: Target, message: Message, outcome: Outcome
    ) -> Message:
        """Response phase for one message of a descriptor-aware generic service."""
        classification: Classification = self.classifier.classify_message(message)
        decision = await self.decide(call, subject, target, "response", classification.fields, outcome)
        if decision.masks:
            message = apply_message_masks(message, classification, list(decision.masks), self.hash_key)
            outcome.masked = masked_summary(decision, classification)
        outcome.delivered = message
        return message


def request_summary(request: Message) -> dict[str, Any]:
    """An inference request without its values: model, input names, datatypes and shapes."""
    return {
        "model": request.model_name,
        "model_version": request.model_version,
        "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in request.inputs],
        "outputs": [o.name for o in request.outputs],
    }


def infer_target(request: Message, method: str) -> Target:
    return Target(
        service=method.split("/")[1] if method.count("/") >= 2 else method,
        model=request.model_name,
        model_version=request.model_version,
        requested_outputs=tuple(output.name for output in request.outputs),
    )


_RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}


def masked_summary(decision: Decision, classification: Classification) -> list[dict[str, str]]:
    """Path, strategy and the most sensitive label of each masked field, for the record."""
    labels = {f.path: max(f.labels, key=lambda label: _RANK.get(label, 99)) for f in classification.fields}
    return [
        {"path": m.path, "strategy": m.strategy, "label": labels.get(m.path, "unknown")}
        for m in decision.masks
    ]


def _refusal(decision: Decision) -> PermissionDenied | PolicyUnavailable:
    details = {"decision_id": decision.decision_id or "", "engine": decision.engine}
    if decision.fail_reason in _UNAVAILABLE_REASONS:
        return PolicyUnavailable(decision.fail_reason, "policy engine unavailable: call denied", **details)
    if decision.require_approval is not None:
        return PermissionDenied("APPROVAL_REQUIRED", decision.reason or "approval required", **details)
    return PermissionDenied(
        decision.fail_reason or "POLICY_DENIED", decision.reason or "denied by policy", **details
    )
