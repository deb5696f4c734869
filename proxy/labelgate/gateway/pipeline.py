"""The stages every call goes through, in order, in one place.

    authenticate -> admit (bounds, decide the request phase, hold for approval)
    -> call upstream -> classify -> decide (response phase, hold) -> enforce -> record

Every call shape runs through these same stages: unary inference (``infer``), metadata
and routed unary calls (``unary_message``), routed streams (``admit_stream`` then
``release_reply`` per message) and ``ModelStreamInfer`` (``stream_infer``, which drives
these stages per message from ``gateway/stream_infer.py``). The transports only adapt gRPC
call shapes to these methods.

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
from labelgate.approvals.hold import ApprovalStage, grants_noted, reply_kept
from labelgate.approvals.stage import check_options
from labelgate.auth import Authenticator, Subject
from labelgate.auth import reasons as auth_reasons
from labelgate.background import BackgroundTasks
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
from labelgate.errors import (
    InvalidInput,
    LabelgateError,
    PermissionDenied,
    PolicyUnavailable,
    ResourceExhausted,
    Unauthenticated,
)
from labelgate.expiry import credentials_live
from labelgate.gateway import inflight, metrics
from labelgate.gateway import reasons as gateway_reasons
from labelgate.gateway.bounds import check_fields, check_reply_fields, check_target
from labelgate.gateway.classify_stage import ClassifierStage
from labelgate.gateway.record import AFTER_UNACKNOWLEDGED, Recorder, recorded_text
from labelgate.gateway.streams import OpenStreams
from labelgate.gateway.upstream import MalformedUpstream
from labelgate.logs import get_logger
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from labelgate.policy import reasons as policy_reasons
from labelgate.policy.cache import CachingEngine, cache_keys
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.engine import PolicyEngine

R = TypeVar("R")


def _as_is(reply: pb.ModelInferResponse) -> pb.ModelInferResponse:
    return reply


# Fail-closed decisions whose cause is the engine being unreachable, not the policy saying no.
_UNAVAILABLE_REASONS = frozenset({policy_reasons.POLICY_UNAVAILABLE, policy_reasons.POLICY_TIMEOUT})
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
        self.engine = engine
        self.approvals = approvals
        self.recorder = recorder
        self.hash_key = hash_key
        self.limits = limits or LimitSettings()
        self.release = release or ReleaseSettings()
        self.decision_deadline_seconds = decision_deadline_seconds
        self.in_flight = in_flight or CallsInFlight()
        # The transports take each request's bytes from it before parsing (gateway/inflight.py).
        self.request_bytes = inflight.RequestBytes(self.limits.max_request_bytes_in_flight)
        # Counted by the transports, health watches apart: probes are not authenticated.
        self.open_streams = OpenStreams(self.limits.max_open_streams, self.limits.max_open_streams_per_caller)
        self.health_watches = OpenStreams(self.limits.max_health_watches, bound="health_watches")
        self._cancelled_records = BackgroundTasks()  # being written (``recording``)
        self._open_calls: dict[asyncio.Task[Any], int] = {}  # tasks inside ``recording``, how deep

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
                    decision = await self._decide_within_deadline(policy_input, memo)
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

    def stream_infer(
        self, call: Call, requests: AsyncIterator[pb.ModelInferRequest], upstream: Any
    ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        """``ModelStreamInfer``: each request admitted, each reply released, on its own, through
        these same stages (``gateway/stream_infer.py``)."""
        from labelgate.gateway.stream_infer import stream_infer  # it drives this pipeline

        return stream_infer(self, call, requests, upstream)

    def record_later(self, entry: CallRecord, *, after_unacknowledged: bool = False) -> None:
        """Write ``entry`` without holding up the caller (a cancelled call's record); a stopping
        gateway waits for it (``finish_records``). ``after_unacknowledged``: the refusal of a call
        whose release's record went unacknowledged (``recording``)."""
        task = self._cancelled_records.start(self._record_later(entry, after_unacknowledged))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _record_later(self, entry: CallRecord, after_unacknowledged: bool) -> None:
        if after_unacknowledged:
            AFTER_UNACKNOWLEDGED.set(True)  # in this task's own context: this record's append only
        try:
            await self.recorder.record(entry)
        except LabelgateError as lost:
            request_id = entry.call.request_id
            log.error("a refusal's record was lost", reason=lost.reason, request_id=request_id)

    async def record_failure(
        self, call: Call, subject: Subject | None, target: Target, error: LabelgateError
    ) -> None:
        """Record a refusal made outside ``recording`` (a stream's end, a REST body that does
        not parse); a failure to record it is left to the refusal itself."""
        outcome = Outcome(subject=subject, model=target.model, upstream_status=error.reason)
        try:
            await self.recorder.record(CallRecord.of(call, outcome, error))
        except LabelgateError as lost:
            log.error("a refusal's record was lost", reason=lost.reason, request_id=call.request_id)

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

    # -- decide and hold (both phases) -------------------------------------------------
    async def decide(
        self, call: Call, subject: Subject, target: Target, phase: str, fields: list[Field], outcome: Outcome
    ) -> Decision:
        # The response phase's fields are the upstream's reply: its excess is not the caller's fault.
        (check_reply_fields if phase == "response" else check_fields)(fields, self.limits)
        # The catalog and detectors ``fields`` were worked out with (nothing awaited since).
        classified_by = self.classifier.classifier

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
        memo, key = cache_keys(first)  # one marshal for both: the cache's key and the store's
        if key is not None:  # kept by hash so the decision can be replayed (policy impact)
            outcome.decision_inputs.append((phase, key.hex(), first))
        started = time.perf_counter()
        with tracing.stage("decide", **{"labelgate.phase": phase}):
            decision = await self._decide_within_deadline(first, memo)
        metrics.child(metrics.DECISION_SECONDS, self.engine.name, phase).observe(
            time.perf_counter() - started
        )
        if decision.require_approval is not None and not decision.allow:
            decision = await self._hold(
                call, subject, phase, first, key is not None, decision, policy_input, outcome, classified_by
            )
        else:
            outcome.decisions.append((phase, decision))
            outcome.labels.update(first["labels"])
        if not decision.allow:
            raise _refusal(decision)
        return decision

    async def _hold(
        self,
        call: Call,
        subject: Subject,
        phase: str,
        first: dict[str, Any],
        first_kept: bool,
        held: Decision,
        policy_input: Callable[[dict[str, Any] | None], dict[str, Any]],
        outcome: Outcome,
        classified_by: object,
    ) -> Decision:
        """Hold the call for an approver (``approvals.hold``); the decision to enforce.

        The record holds the decision that held the call and its labels from the start (a
        call can end inside the hold: pending, expired, cut by its deadline, cancelled). Each
        decision made again under an approval joins it, with its input; when the hold releases
        on one of them, the inputs of this phase before it are marked superseded."""
        outcome.decisions.append((phase, held))
        outcome.labels.update(first["labels"])
        start = len(outcome.decision_inputs) - (1 if first_kept else 0)
        redecided: list[tuple[Decision, int]] = []  # each, with how many inputs came before it

        async def again(approval: dict[str, Any]) -> Decision:
            if self.classifier.classifier is not classified_by:
                # A hold lasts minutes: a bundle or catalog file activated meanwhile would have
                # the new policy decide on the old catalog's labels, and the masks it names
                # applied to the old classification. Refused (the grant is left unspent): the
                # caller calls again, classified and decided under what is in force.
                refused = Decision.deny(
                    gateway_reasons.CATALOG_CHANGED,
                    "the classification catalog changed while the call was held: call again",
                )
                outcome.decisions.append((phase, refused))
                return refused
            if not is_valid(subject):
                # A hold lasts minutes, longer than a token may: an approval granted after the
                # caller's credential expired releases nothing. Refused here, before the stage
                # spends or charges the grant (it is left for the caller's next call, with a
                # fresh token); ``still_valid`` below makes it the caller's TOKEN_EXPIRED.
                expired = Decision.deny(auth_reasons.TOKEN_EXPIRED, _EXPIRED_WHILE_HELD)
                outcome.decisions.append((phase, expired))
                return expired
            redo = policy_input(approval)
            memo, key = cache_keys(redo)
            before = len(outcome.decision_inputs)
            if key is not None:
                outcome.decision_inputs.append((phase, key.hex(), redo))
            decision = await self._decide_within_deadline(redo, memo)
            outcome.decisions.append((phase, decision))
            redecided.append((decision, before))
            return decision

        # A call held for an approver writes its record minutes from now, if ever: it does
        # not count as in flight meanwhile, or every other record would wait for it. Its
        # request's bytes count under the approval service's own bound from here on.
        aside = inflight.set_aside()
        self.in_flight.count -= 1
        try:
            with tracing.stage("hold"), grants_noted() as grants:
                decision = await self.approvals.hold(call, subject, first, held, again)
        finally:
            self.in_flight.count += 1
            inflight.take_back(aside)  # counted here again while it goes on (or ends)
        if decision.allow or decision.fail_reason == auth_reasons.TOKEN_EXPIRED:
            # Nothing goes upstream (a request phase) or to the caller (a response phase) once
            # the first of the caller's credentials has expired, granted or not: ``again`` saw
            # it at the grant, and it may have expired since (the grant's use is awaited).
            still_valid(subject, _EXPIRED_WHILE_HELD)
        if decision.allow:  # both phases may be released under one grant: named once
            outcome.released_under += tuple(grant for grant in grants if grant not in outcome.released_under)
        enforced = next((before for made, before in redecided if made is decision), None)
        if enforced is not None:
            outcome.superseded_inputs += tuple(range(start, enforced))
        if outcome.decisions[-1][1] is not decision:  # the approval stage's own refusal
            outcome.decisions.append((phase, decision))
        return decision

    async def _decide_within_deadline(
        self, policy_input: dict[str, Any], memo: bytes | None = None
    ) -> Decision:
        """``memo``: ``memo_key(policy_input)`` when the caller has it (the cache's own key)."""
        engine = self.engine
        cache = engine if memo is not None and isinstance(engine, CachingEngine) else None
        if cache is not None and memo is not None:
            # A hit waits on nothing, so it needs no deadline timer (armed per decision otherwise).
            hit = cache.cached(memo)
            if hit is not None:
                return hit
        try:
            async with asyncio.timeout(self.decision_deadline_seconds):
                if cache is not None:
                    return await cache.decide(policy_input, key=memo)
                return await engine.decide(policy_input)
        except TimeoutError:
            return Decision.deny("POLICY_TIMEOUT", engine=self.engine.name, revision=self.engine.revision)

    # -- stage: record -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def recording(self, call: Call, target: Target) -> AsyncIterator[Outcome]:
        """Every call (or streamed message) is recorded, refused ones too."""
        outcome = Outcome(model=target.model)
        in_flight = self.in_flight
        in_flight.count += 1
        # The task serving the call, for a stopping gateway to wait on (``finish_records``).
        serving, open_calls = asyncio.current_task(), self._open_calls
        if serving is not None:
            open_calls[serving] = open_calls.get(serving, 0) + 1
        try:
            # The model is the caller's text, not yet checked against any bound: a span holds
            # it as a record does (``recorded_text``).
            with tracing.call_span(call.method, recorded_text(target.model), call.metadata):
                try:
                    yield outcome
                except asyncio.CancelledError as error:
                    # The caller is gone; record without holding up the cancellation.
                    self.record_later(CallRecord.of(call, outcome, error))
                    raise
                except BaseException as error:
                    # The refusal stands whether or not its record could be written.
                    try:
                        await self.recorder.record(CallRecord.of(call, outcome, error))
                    except LabelgateError as lost:
                        log.error(
                            "a refusal's record was lost", reason=lost.reason, request_id=call.request_id
                        )
                    raise
                # Nothing is released before its record is durable: a failure here fails the call.
                try:
                    await self.recorder.record(CallRecord.of(call, outcome, None))
                except LabelgateError as unrecorded:
                    # Refused after all. The release's log line is written, and its audit record
                    # may still land (read in time, acknowledged late behind a slow fsync): the
                    # refusal is recorded after them, without the writer's deadline (which the
                    # release's own stall may outlast), so the call's last record says what the
                    # caller got.
                    self.record_later(CallRecord.of(call, outcome, unrecorded), after_unacknowledged=True)
                    raise
                except asyncio.CancelledError as gone:
                    # The caller left (its deadline, a cancel) while the release's record was
                    # being made durable: that record may still land, and the caller got
                    # nothing, so the cancellation is recorded after it, as a refusal is.
                    self.record_later(CallRecord.of(call, outcome, gone), after_unacknowledged=True)
                    raise
        finally:
            in_flight.count -= 1
            if serving is not None:
                left = open_calls.pop(serving) - 1
                if left:
                    open_calls[serving] = left

    async def finish_records(self, seconds: float) -> None:
        """Wait, at most ``seconds`` in all, for the calls still in the pipeline (a stopping
        server has cancelled them; each then records itself) and for the records of cancelled
        calls still being written: a stopping gateway closes its recorders only after them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        calls = set(self._open_calls) - {asyncio.current_task()}
        if calls:
            await asyncio.wait(calls, timeout=seconds)
        await self._cancelled_records.wait(max(0.0, deadline - loop.time()))

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


_EXPIRED_WHILE_HELD = "the token this call was made with expired while it was held for approval"


def is_valid(subject: Subject) -> bool:
    """None of the subject's credentials has expired, its own token or one presented beside it
    (a bearer token next to a client certificate: ``earliest_expiry``). An expiry that cannot be
    read counts as passed."""
    return credentials_live(subject.attributes, time.time())


def still_valid(subject: Subject, why: str = "the token this stream was opened with has expired") -> None:
    """A call outlives the credentials it was made with (a stream, a call held for approval, a
    client stream's messages): each message, and each release after a wait, checks that none
    has expired (``is_valid``), refused UNAUTHENTICATED TOKEN_EXPIRED otherwise."""
    if not is_valid(subject):
        raise Unauthenticated(auth_reasons.TOKEN_EXPIRED, why)


async def while_valid(subject: Subject, messages: AsyncIterator[R]) -> AsyncIterator[R]:
    """A client stream's messages, each checked (``still_valid``) as it is read, before it is
    handed on to the upstream: the first read once a credential has expired ends the stream."""
    async for message in messages:
        still_valid(subject)
        yield message


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


def _refusal(decision: Decision) -> PermissionDenied | PolicyUnavailable:
    details = {"decision_id": decision.decision_id or "", "engine": decision.engine}
    if decision.fail_reason in _UNAVAILABLE_REASONS:
        return PolicyUnavailable(decision.fail_reason, "policy engine unavailable: call denied", **details)
    if decision.require_approval is not None:
        return PermissionDenied(
            policy_reasons.APPROVAL_REQUIRED, decision.reason or "approval required", **details
        )
    return PermissionDenied(
        decision.fail_reason or "POLICY_DENIED", decision.reason or "denied by policy", **details
    )
