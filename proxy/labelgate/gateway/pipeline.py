"""The stages every call goes through, in order, in one place.

    authenticate -> admit (bounds, decide the request phase, hold for approval)
    -> call upstream -> classify -> decide (response phase, hold) -> enforce -> record

Every call shape runs through these same stages: unary inference (``infer``), metadata
and routed unary calls (``unary_message``), routed streams (``admit_stream`` then
``release_reply`` per message; ``release_opaque_reply`` on an opaque route, recorded only)
and ``ModelStreamInfer`` (``stream_infer``, which drives these stages per message from
``gateway/stream_infer.py``). The transports only adapt gRPC call shapes to these methods.

Each stage is its own module, called from here in that order: authenticate
(``labelgate.auth``), classify (``gateway/classify_stage.py``), decide and hold for approval
(``gateway/decide_stage.py``), enforce (``labelgate.enforce``), record
(``gateway/recording_stage.py``, handing each outcome to the recorders of ``gateway/record.py``).

Replies are built, never forwarded: the gateway makes each outgoing message itself from
the parts it classified and decided (``labelgate.enforce.replies``), so nothing the
classifier did not see (an id, a parameter, an unknown field, an error text) reaches the
caller. Anything that goes wrong raises a ``LabelgateError``; nothing is released before
its response-phase decision, its masks and its durable record.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from labelgate import tracing
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.hold import ApprovalStage, reply_kept
from labelgate.approvals.stage import check_options
from labelgate.auth import Authenticator, Subject
from labelgate.calls import (
    PROVEN,
    Call,
    CallRecord,
    CallsInFlight,
    Outcome,
    Proven,
    Target,
    infer_target,
    target_summary,
    with_digest,
)
from labelgate.classify import Field, backend_labels, to_policy_fields
from labelgate.classify.carryover import CarryOver
from labelgate.classify.labels import most_sensitive
from labelgate.classify.parameters import classify_parameters, released_parameters
from labelgate.classify.split_values import SplitValues
from labelgate.config import LimitSettings, ReleaseSettings
from labelgate.enforce import apply_masks, apply_message_masks
from labelgate.enforce import replies as build
from labelgate.enforce.compiled import compile_masks
from labelgate.enforce.strategies import Mask, Masker
from labelgate.errors import InvalidInput, LabelgateError, ResourceExhausted
from labelgate.gateway import inflight
from labelgate.gateway import reasons as gateway_reasons
from labelgate.gateway.bounds import check_fields, check_target
from labelgate.gateway.classify_stage import ClassifierStage
from labelgate.gateway.credential_expiry import still_valid as still_valid
from labelgate.gateway.credential_expiry import while_valid as while_valid
from labelgate.gateway.decide_stage import DecideStage
from labelgate.gateway.opaque_reply import OpaqueReply
from labelgate.gateway.record import Recorder
from labelgate.gateway.recording_stage import RecordingStage
from labelgate.gateway.streams import OpenStreams
from labelgate.gateway.upstream import MalformedUpstream
from labelgate.logs import get_logger
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from labelgate.policy.cache import cache_keys
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.engine import PolicyEngine

R = TypeVar("R")


def _as_is(reply: pb.ModelInferResponse) -> pb.ModelInferResponse:
    return reply


Send = Callable[[Message], Awaitable[Message]]
# (subject, upstream reply) -> the reply without what the subject may not know about.
Narrow = Callable[[Subject, Message], Awaitable[Message]]
# Runs after the request phase admitted the call, before anything is sent; raises to refuse.
Gate = Callable[[Subject], Awaitable[None]]
# Refuses an inference request the gateway cannot serve (shared memory, the classification
# extension): run once the caller is authenticated, before policy, inside the call's record.
Check = Callable[[pb.ModelInferRequest], None]
# The record of the call a ``unary_message`` is serving, for ``usable_models`` (called by its
# ``narrow`` or ``gate``) to add the decision it makes on each model to.
_DECIDING_FOR: contextvars.ContextVar[Outcome | None] = contextvars.ContextVar(
    "labelgate_deciding_for", default=None
)
log = get_logger(__name__)


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
        limits: LimitSettings | None = None,
        release: ReleaseSettings | None = None,
        decision_deadline_seconds: float = 5.0,
        in_flight: CallsInFlight | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.classifier = classifier
        self.hash_key = hash_key
        self.release = release or ReleaseSettings()
        self.in_flight = in_flight or CallsInFlight()
        self.deciding = DecideStage(
            engine=engine,
            classifier=classifier,
            approvals=approvals,
            limits=limits or LimitSettings(),
            in_flight=self.in_flight,
            decision_deadline_seconds=decision_deadline_seconds,
        )
        self.records = RecordingStage(recorder, self.in_flight)
        # The transports take each request's bytes from it before parsing (gateway/inflight.py).
        self.request_bytes = inflight.RequestBytes(self.limits.max_request_bytes_in_flight)
        # Counted by the transports, health watches apart: probes are not authenticated.
        self.open_streams = OpenStreams(self.limits.max_open_streams, self.limits.max_open_streams_per_caller)
        self.health_watches = OpenStreams(self.limits.max_health_watches, bound="health_watches")

    # -- what the stages keep, read and set through the pipeline (the server reads the engine
    # and the deadline; tests put in their own engine, approval stage, recorder or limits) --
    @property
    def engine(self) -> PolicyEngine:
        return self.deciding.engine

    @engine.setter
    def engine(self, engine: PolicyEngine) -> None:
        self.deciding.engine = engine

    @property
    def approvals(self) -> ApprovalStage:
        return self.deciding.approvals

    @approvals.setter
    def approvals(self, approvals: ApprovalStage) -> None:
        self.deciding.approvals = approvals

    @property
    def limits(self) -> LimitSettings:
        return self.deciding.limits

    @limits.setter
    def limits(self, limits: LimitSettings) -> None:
        self.deciding.limits = limits

    @property
    def decision_deadline_seconds(self) -> float:
        return self.deciding.decision_deadline_seconds

    @decision_deadline_seconds.setter
    def decision_deadline_seconds(self, seconds: float) -> None:
        self.deciding.decision_deadline_seconds = seconds

    @property
    def recorder(self) -> Recorder:
        return self.records.recorder

    @recorder.setter
    def recorder(self, recorder: Recorder) -> None:
        self.records.recorder = recorder

    # -- the call shapes ------------------------------------------------------------
    async def infer(
        self, call: Call, request: pb.ModelInferRequest, send: Send, check: Check | None = None
    ) -> pb.ModelInferResponse:
        """One inference call. ``check`` (gRPC's: shared memory, the classification extension)
        refuses a request the gateway cannot serve, as a refusal of the authenticated caller
        that is recorded like any other (an anonymous caller is told only that it is one)."""
        return await self.infer_as(call, request, send, _as_is, check)

    async def infer_as(
        self,
        call: Call,
        request: pb.ModelInferRequest,
        send: Send,
        render: Callable[[pb.ModelInferResponse], R],
        check: Check | None = None,
    ) -> R:
        """``infer``, the released reply made into a binding's own (REST's body) by ``render``
        inside the call's recording: a reply the binding cannot carry (bytes that are not
        UTF-8, as JSON) is recorded as the refusal the caller gets, not as released."""
        target = infer_target(request, call.method, None)
        async with self.recording(call, target) as outcome:
            subject = outcome.subject = self.authenticate(call)
            target = with_digest(target, request, self.hash_key)
            outcome.request_summary = target_summary(target)
            if check is not None:
                check(request)
            await self.admit(call, subject, target, outcome, self.expected_fields(target))
            # send() is the ModelInfer stub: its replies are ModelInferResponses.
            response = cast(pb.ModelInferResponse, await self.forward(send, request, outcome))
            return render(await self.release_inference(call, subject, target, response, outcome))

    async def unary_message(
        self,
        call: Call,
        target: Target,
        request: Message,
        send: Send,
        narrow: Narrow | None = None,
        gate: Gate | None = None,
        *,
        client_stream: bool = False,
    ) -> Message:
        """Metadata RPCs and routed unary methods: admitted on the method, reply classified
        as a message. ``narrow`` (the repository index, statistics) takes out of the reply what
        the subject may not know about before it is classified (``usable_models``); ``gate``
        (a model named by ``ModelConfig`` or ``ModelStatistics``) may refuse it before it is sent.

        ``client_stream``: ``request`` is a routed client stream's messages (``stream Chunk ->
        Receipt``), which reach the upstream for as long as the caller goes on sending. Such a
        call ends with its caller's first credential to expire, as a stream does: each message
        is checked before it goes upstream (``while_valid``), and the reply before it is released."""
        async with self.recording(call, target) as outcome:
            subject = outcome.subject = self.authenticate(call)
            await self.admit(call, subject, target, outcome)
            if client_stream:
                request = cast(Message, while_valid(subject, cast(AsyncIterator[Any], request)))
            deciding = _DECIDING_FOR.set(outcome) if gate is not None or narrow is not None else None
            try:
                if gate is not None:
                    await gate(subject)
                reply = await self.forward(send, request, outcome)
                if narrow is not None:
                    reply = await narrow(subject, reply)
            finally:
                if deciding is not None:
                    _DECIDING_FOR.reset(deciding)
            released = await self.release_message(call, subject, target, reply, outcome)
            if client_stream:
                # The upstream answers when it likes (at the stream's end, or long after it).
                still_valid(subject)
            return released

    async def usable_models(self, call: Call, subject: Subject, models: Iterable[str]) -> set[str]:
        """The models among ``models`` the subject may call ``ModelInfer`` on: for each, the
        policy decides that call's request phase (the catalog's fields, no outputs named) and
        the model counts when it is allowed or offered an approval (nothing is held here).
        Fail closed: a model whose decision fails, times out or exceeds the bounds is left out,
        and more than ``limits.max_index_models`` names fail the call (RESOURCE_EXHAUSTED
        ``INDEX_TOO_MANY_MODELS``) rather than run a decision for each. The names are an
        upstream's text: one longer than ``limits.max_path_bytes`` or holding what a detector
        finds is left out before any decision, so it reaches no decision input (kept at rest
        by the input store, hashed into the audit record) and no log line. Inside a
        ``unary_message`` (its ``narrow`` or ``gate``), each model's decision input joins that
        call's record, in name order: what the caller was shown depends on them."""
        infer_call = dataclasses.replace(call, method=f"/{call.service}/ModelInfer")
        # A repository of hundreds of models must not open hundreds of decisions at once.
        slots = asyncio.Semaphore(16)
        inputs: dict[str, tuple[str, str, dict[str, Any]]] = {}

        async def usable(model: str) -> bool:
            target = Target(service=call.service, model=model)
            try:
                # The fields are worked out once the slot is held, with nothing awaited before
                # the decision: a model that waited for a slot across a bundle's activation is
                # classified and decided under the same revision, never the old catalog's
                # labels under the new policy.
                async with slots:
                    fields = self.expected_fields(target)
                    check_fields(fields, self.limits)
                    policy_input = build_input(
                        phase="request",
                        subject=subject.to_policy(),
                        request=target.to_policy(infer_call),
                        fields=to_policy_fields(fields),
                        approval=None,
                        time_ns=time.time_ns(),
                    )
                    memo, key = cache_keys(policy_input)
                    if key is not None:
                        inputs[model] = ("request", key.hex(), policy_input)
                    decision = await self.deciding.decide_within_deadline(policy_input, memo)
            except Exception as error:
                log.warning("model left out: its decision failed", model=model, error=type(error).__name__)
                return False
            return decision.allow or decision.require_approval is not None

        names = sorted(set(models))
        if len(names) > self.limits.max_index_models:
            raise ResourceExhausted(
                gateway_reasons.INDEX_TOO_MANY_MODELS,
                f"the upstreams list more than {self.limits.max_index_models} models",
            )
        longest = self.limits.max_path_bytes
        unfit = {name for name in names if len(name.encode("utf-8", "surrogatepass")) > longest}
        unfit |= self.classifier.names_holding_values([name for name in names if name not in unfit])
        if unfit:
            log.warning("models left out: their names are too long or hold data", count=len(unfit))
            names = [name for name in names if name not in unfit]
        try:
            verdicts = await asyncio.gather(*(usable(name) for name in names))
        finally:
            outcome = _DECIDING_FOR.get()
            if outcome is not None:
                outcome.decision_inputs.extend(inputs[name] for name in names if name in inputs)
        return {name for name, ok in zip(names, verdicts, strict=True) if ok}

    async def admit_stream(self, call: Call, target: Target, counted: contextlib.ExitStack) -> Subject:
        """Open a routed stream: authenticate, count it against its caller's share of streams
        until ``counted`` closes (``OpenStreams.of_caller``), decide the request phase (recorded)."""
        async with self.recording(call, target) as outcome:
            subject = outcome.subject = self.authenticate(call)
            counted.enter_context(self.open_streams.of_caller(subject.id))
            await self.admit(call, subject, target, outcome)
        return subject

    async def upstream_replies(
        self, call: Call, subject: Subject, target: Target, replies: AsyncIterator[R]
    ) -> AsyncIterator[R]:
        """A routed stream's upstream replies; a failure that ends the stream is recorded
        (each reply is, by ``release_reply``), and so is its end by the caller leaving or its
        deadline passing while the upstream is awaited (without holding up the cancellation).
        Any other exception (a bug in what reads the replies, a token stream's hold) ends it
        as the fixed internal error the caller gets (``status.refusals``), recorded so: its
        text may quote the upstream's data, so only its type is logged."""
        try:
            async for reply in replies:
                yield reply
        except LabelgateError as error:
            await self.record_failure(call, subject, target, error)
            raise
        except asyncio.CancelledError as error:
            self.record_later(CallRecord.of(call, Outcome(subject=subject, model=target.model), error))
            raise
        except Exception as error:
            log.error(
                "unexpected error; the stream is refused",
                error_type=type(error).__name__,
                request_id=call.request_id,
            )
            internal = LabelgateError(gateway_reasons.INTERNAL_ERROR, "internal error in the gateway")
            await self.record_failure(call, subject, target, internal)
            raise internal from None

    def split_values(self) -> SplitValues:
        """What holds a routed token stream's messages while a value may straddle them
        (``classify/split_values.py``), with the carry-over's cut and the stream limits."""
        carry = CarryOver(self.classifier.classifier.detectors, self.limits.stream_carry_bytes)
        return SplitValues(
            carry.detectors,
            carry.cut_point,
            hold_limit=self.limits.max_message_bytes,
            max_paths=self.limits.max_fields,
        )

    async def release_reply(self, call: Call, subject: Subject, target: Target, reply: Message) -> Message:
        """One message of a routed stream, decided and recorded on its own."""
        async with self.recording(call, target) as outcome:
            outcome.subject, outcome.upstream_status = subject, "OK"
            still_valid(subject)
            return await self.release_message(call, subject, target, reply, outcome)

    async def release_opaque_reply(self, call: Call, subject: Subject, target: Target, reply: bytes) -> bytes:
        """One message of an opaque routed stream (bytes: nothing in them is known, so nothing
        is classified or decided; the stream was admitted for that). Released as
        ``release_reply`` releases a typed one: only once its record is durable, the session
        recorder's room reserved first, so a recorder that is failing or full ends the stream
        with its own refusal instead of letting the reply out unrecorded (review, thirteenth
        round: the replies went out while every other call was refused ``RECORDING_BACKLOG``,
        and the recording said none was delivered). Its recording keeps the bytes as delivered
        (``OpaqueReply``)."""
        async with self.recording(call, target) as outcome:
            outcome.subject, outcome.upstream_status = subject, "OK"
            outcome.delivered = OpaqueReply(reply)
            return reply

    def stream_infer(
        self, call: Call, requests: AsyncIterator[pb.ModelInferRequest], upstream: Any
    ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        """``ModelStreamInfer``: each request admitted, each reply released, on its own, through
        these same stages (``gateway/stream_infer.py``)."""
        from labelgate.gateway.stream_infer import stream_infer  # it drives this pipeline

        return stream_infer(self, call, requests, upstream)

    # -- stage 1: authenticate -------------------------------------------------------
    def authenticate(self, call: Call) -> Subject:
        with tracing.stage("authenticate"):
            subject = self.authenticator.authenticate(call.metadata, call.auth_context)
        PROVEN.set(Proven(subject, call.request_id))  # for the upstream's subject assertion
        return subject

    # -- stages 2/3: admit -------------------------------------------------------------
    def expected_fields(self, target: Target) -> list[Field]:
        return self.classifier.expected_fields(target.model, list(target.requested_outputs))

    async def admit(
        self, call: Call, subject: Subject, target: Target, outcome: Outcome, fields: Sequence[Field] = ()
    ) -> None:
        """Request phase: bounds, then deny or hold before the upstream runs anything."""
        with tracing.stage("admit"):
            check_target(target, self.limits)
            check_options(call.metadata)
            await self.decide(call, subject, target, "request", list(fields), outcome)

    # -- decide and hold, both phases (``gateway/decide_stage.py``) -------------------------
    async def decide(
        self, call: Call, subject: Subject, target: Target, phase: str, fields: list[Field], outcome: Outcome
    ) -> Decision:
        """Decide ``phase`` (held for an approver if the policy asks); raises the refusal."""
        return await self.deciding.decide(call, subject, target, phase, fields, outcome)

    @staticmethod
    async def forward(send: Send, request: Message, outcome: Outcome) -> Message:
        try:
            with tracing.stage("upstream"):
                response = await send(request)
        except LabelgateError as error:
            outcome.upstream_status = error.code.name
            raise
        outcome.upstream_status = "OK"
        return response

    # -- stages: classify, decide (response phase), enforce -------------------------------
    async def release_inference(
        self,
        call: Call,
        subject: Subject,
        target: Target,
        response: pb.ModelInferResponse,
        outcome: Outcome,
        *,
        tensors: list[Tensor] | None = None,
        backend: Mapping[str, set[str]] | None = None,
    ) -> pb.ModelInferResponse:
        """The reply to one inference response, built from what was classified and decided."""
        tensors = decoded_outputs(response) if tensors is None else tensors
        if target.requested_outputs:  # what the caller did not ask for is not released
            tensors = [tensor for tensor in tensors if tensor.name in target.requested_outputs]
        classifier = self.classifier.classifier  # one catalog snapshot for the whole reply
        with tracing.stage("classify"):
            classification = classifier.classify_response(
                target.model, tensors, backend=backend_labels(response) if backend is None else backend
            )
        released = self.release.parameters
        parameters = classify_parameters(
            released_parameters(response, released), released, classifier.detectors
        )
        fields = classification.fields + parameters.fields
        with reply_kept(response):  # a hold keeps it: counted with the request
            decision = await self.decide(call, subject, target, "response", fields, outcome)
        compiled, index = compile_masks(decision.masks)  # once per cached decision
        masks = list(compiled)
        with tracing.stage("enforce"):
            masked = apply_masks(tensors, classification, decision.masks, self.hash_key) if index else tensors
        try:
            reply = build.infer_response(
                model=target.model,
                model_version=target.model_version,
                caller_id=target.caller_id,
                tensors=masked,
                raw=oip.uses_raw_outputs(response),
                parameters=build.decided_parameters(
                    parameters, index, Masker(self.hash_key, masks) if index else None
                ),
                markers=build.masked_markers(tensors, masked, index),
            )
        except ValueError as error:
            raise MalformedUpstream("the upstream response cannot be re-encoded") from error
        if masks:
            outcome.masked = masked_summary(masks, fields)
        outcome.delivered = reply
        return reply

    async def release_message(
        self, call: Call, subject: Subject, target: Target, message: Message, outcome: Outcome
    ) -> Message:
        """The reply to one message of a typed (descriptor-aware) service or a metadata RPC."""
        with tracing.stage("classify"):
            classification = self.classifier.classify_message(message, self.limits.max_message_values)
        with reply_kept(message):
            decision = await self.decide(call, subject, target, "response", classification.fields, outcome)
        released = build.without_extensions(
            apply_message_masks(message, classification, decision.masks, self.hash_key)
        )
        if decision.masks:
            compiled, _ = compile_masks(decision.masks)  # the memo apply_message_masks filled
            outcome.masked = masked_summary(list(compiled), classification.fields)
        outcome.delivered = released
        return released

    # -- stage: record (``gateway/recording_stage.py``) --------------------------------------
    def recording(self, call: Call, target: Target) -> contextlib.AbstractAsyncContextManager[Outcome]:
        """Every call (or streamed message) is recorded, refused ones too."""
        return self.records.recording(call, target)

    def record_later(self, entry: CallRecord, *, after_unacknowledged: bool = False) -> None:
        """Write ``entry`` without holding up the caller (a cancelled call's record)."""
        self.records.record_later(entry, after_unacknowledged=after_unacknowledged)

    async def record_failure(
        self, call: Call, subject: Subject | None, target: Target, error: LabelgateError
    ) -> None:
        """Record a refusal made outside ``recording`` (a stream's end, a REST body that does not parse)."""
        await self.records.record_failure(call, subject, target, error)

    async def finish_records(self, seconds: float) -> None:
        """Wait, at most ``seconds``, for the calls still open and the records still being written."""
        await self.records.finish_records(seconds)


def decoded_outputs(response: pb.ModelInferResponse) -> list[Tensor]:
    try:
        return oip.decode_outputs(response)
    except InvalidInput as error:
        # The upstream's message is broken, not the caller's: INTERNAL, nothing forwarded.
        raise MalformedUpstream("the upstream response is malformed") from error


def masked_summary(masks: Sequence[Mask], fields: Sequence[Field]) -> list[dict[str, str]]:
    """Path, strategy and the most sensitive label of each masked field, for the record (a
    path's label is that of its last field); only the masked paths' labels are ranked."""
    labels = {f.path: f.labels for f in fields}
    summary = []
    for mask in masks:
        found = labels.get(mask.path)
        label = "unknown" if found is None else most_sensitive(found)
        summary.append({"path": mask.path, "strategy": mask.strategy, "label": label})
    return summary
