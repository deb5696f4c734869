"""``ModelStreamInfer`` through the pipeline's stages: each request admitted and each reply
released on its own, as a unary call is.

Replies are matched to requests by ids the gateway chose (``StreamLedger``), streamed text is
scanned across replies (``CarryOver``), and each message is its own call to policy and
approvals (its request and response phases share it), while its records keep the stream's
request id. A stream the caller leaves records its end once (``_Ending``), and one that
waits on its caller with nothing unanswered for ``limits.stream_idle_seconds`` ends
(``IdleClock``). A request goes upstream inside its record, so its reply may come back before
that record is durable: it is released only once it is (``_Admissions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.approvals.stage import UPSTREAM_ENDED_BEFORE_DECISION, stream_refused_before_decision
from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome, Target, infer_target, target_summary
from labelgate.classify import backend_labels
from labelgate.classify.carryover import CarryOver
from labelgate.classify.parameters import FINAL_PARAMETER
from labelgate.enforce import replies as build
from labelgate.errors import LabelgateError, UpstreamError
from labelgate.gateway import reasons as gateway_reasons
from labelgate.gateway.pipeline import Pipeline, decoded_outputs, still_valid
from labelgate.gateway.streams import (
    IdleClock,
    StreamIdle,
    StreamLedger,
    is_final,
    keep_backend_labels,
)
from labelgate.logs import get_logger

log = get_logger(__name__)


async def stream_infer(
    pipeline: Pipeline, call: Call, requests: AsyncIterator[pb.ModelInferRequest], upstream: Any
) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
    """``ModelStreamInfer``: each request admitted, each reply released, on its own.

    ``upstream`` is the open upstream stream (``write``, ``done_writing``, async
    iteration). Replies are matched to requests by ids the gateway chose
    (``StreamLedger``), and streamed text is scanned across replies (``CarryOver``).
    """
    with contextlib.ExitStack() as counted:
        subject = await _caller(pipeline, call, counted)
        async with contextlib.aclosing(_served(pipeline, call, subject, requests, upstream)) as replies:
            async for reply in replies:
                yield reply


async def _caller(pipeline: Pipeline, call: Call, counted: contextlib.ExitStack) -> Subject:
    """The stream's caller, authenticated and counted against its share of streams until
    ``counted`` closes (``OpenStreams.of_caller``). A refused stream is recorded; an admitted
    one by its messages."""
    subject: Subject | None = None
    try:
        subject = pipeline.authenticate(call)
        counted.enter_context(pipeline.open_streams.of_caller(subject.id))
    except LabelgateError as error:
        await pipeline.record_failure(call, subject, Target(service=call.service), error)
        raise
    return subject


class _Ending:
    """How the end of a stream the caller leaves (its cancellation, or the generator closed at
    a reply grpc was sending: GeneratorExit) is recorded, once, as cancelled: by the record the
    leaving cut (an admission or a release: ``Pipeline.recording``, noted by ``recording``) and
    by each request it left unanswered; when there is neither, by one record of the stream,
    after its releases, as a cancelled call's is. With every request answered, a stream left
    in grpc's send had for its last record the release of a reply never delivered, OK (review)."""

    def __init__(self) -> None:
        self.recorded = False

    @contextlib.asynccontextmanager
    async def recording(self, pipeline: Pipeline, call: Call, target: Target) -> AsyncIterator[Outcome]:
        try:
            async with pipeline.recording(call, target) as outcome:
                yield outcome
        except asyncio.CancelledError:
            self.recorded = True  # as cancelled, by the record it cut
            raise

    def record_left(self, pipeline: Pipeline, call: Call, subject: Subject, ledger: StreamLedger) -> None:
        for unanswered in ledger.pending:
            outcome = Outcome(subject=subject, model=unanswered.target.model)
            pipeline.record_later(CallRecord.of(call, outcome, asyncio.CancelledError()))
            self.recorded = True
        if not self.recorded:
            pipeline.record_later(CallRecord.of(call, Outcome(subject=subject), asyncio.CancelledError()))
            self.recorded = True


class _Admissions:
    """The requests sent upstream whose admission record is not durable yet. A request is
    written upstream inside its record (so a request the upstream side refuses is recorded as
    refused), and the upstream may answer before that record is durable, or before the request
    is refused for want of it (AUDIT_UNAVAILABLE): its reply waits for one or the other. A reply
    to a request whose admission was refused was released before the stream ended with the
    refusal, and recorded as released after it (review)."""

    def __init__(self) -> None:
        self._unrecorded: dict[str, asyncio.Future[None]] = {}

    def sent(self, upstream_id: str) -> None:
        self._unrecorded[upstream_id] = asyncio.get_running_loop().create_future()

    def recorded(self, upstream_id: str) -> None:
        waiting = self._unrecorded.pop(upstream_id, None)
        if waiting is not None:
            waiting.set_result(None)

    def dropped(self, upstream_id: str) -> None:
        """Its admission failed (the pump's failure says why): it is not waited on here."""
        self._unrecorded.pop(upstream_id, None)

    async def durable(self, upstream_id: str, pump: asyncio.Task[None]) -> None:
        """Returns once ``upstream_id``'s admission is durable; raises the pump's failure (the
        refusal, recorded by the pump) when it failed first."""
        waiting = self._unrecorded.get(upstream_id)
        if waiting is None:
            return
        await asyncio.wait({waiting, pump}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            # The pump ends only once each request it sent is recorded or dropped: it failed
            # (a cancelled pump raises CancelledError here: the stream is ending anyway).
            failure = pump.exception()
            raise failure or LabelgateError(gateway_reasons.INTERNAL_ERROR, "internal error in the gateway")


def _upstream_ended() -> UpstreamError:
    return UpstreamError(
        gateway_reasons.UPSTREAM_STREAM_ENDED, "the upstream ended the stream with requests unanswered"
    )


async def _served(
    pipeline: Pipeline,
    call: Call,
    subject: Subject,
    requests: AsyncIterator[pb.ModelInferRequest],
    upstream: Any,
) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
    ledger = StreamLedger(call.request_id[:8])
    carry = CarryOver(
        pipeline.classifier.classifier.detectors,
        pipeline.limits.stream_carry_bytes,
        hold_limit=pipeline.limits.max_message_bytes,
    )
    numbers = itertools.count(1)
    clock = IdleClock(pipeline.limits.stream_idle_seconds)
    ending = _Ending()
    admissions = _Admissions()
    # Set once the upstream ended its stream: the pump is cancelled for that, not for the caller.
    upstream_over = False
    cut_by_upstream = False  # a request being admitted then ended with it (recorded so)
    # Set once the stream is refused: a request still being admitted ends with that refusal.
    refused: LabelgateError | None = None
    settling = False  # a request is sent: only its admission record is left to make durable

    reading = _CallerRequests(pipeline, call, subject, requests)
    del requests  # reached through ``reading`` only, which the stream's end lets go of

    async def forward_requests() -> None:
        nonlocal cut_by_upstream, settling
        while True:
            clock.waiting()
            try:
                request = await anext(reading)
            except StopAsyncIteration:
                break
            finally:
                clock.busy()
            target = infer_target(request, call.method, pipeline.hash_key)
            # Each message is its own call to policy and approvals (its request and
            # response phases share it): a single-use grant or a row budget is spent per
            # message, not once per stream. Records keep the stream's request id.
            message = dataclasses.replace(call, request_id=f"{call.request_id}.{next(numbers)}")
            opened: str | None = None
            try:
                async with ending.recording(pipeline, call, target) as outcome:
                    outcome.subject, outcome.request_summary = subject, target_summary(target)
                    try:
                        still_valid(subject)
                        await pipeline.admit(
                            message, subject, target, outcome, pipeline.expected_fields(target)
                        )
                        # Inside the record: a request the upstream side refuses (shared memory, a
                        # model routed elsewhere) is recorded as refused, not as admitted.
                        request.id = opened = ledger.open(target, message)
                        admissions.sent(opened)
                        await upstream.write(request)
                        settling = True
                    except asyncio.CancelledError:
                        if not upstream_over and refused is None:
                            raise
                        # The upstream ended its stream, or the stream was refused, while this
                        # request was admitted (held for an approver, being written): it ends
                        # with that, and is recorded so, not as its caller's leaving (review).
                        current = asyncio.current_task()
                        if current is not None:
                            current.uncancel()
                        if refused is not None:
                            outcome.upstream_status = refused.reason
                            raise refused from None
                        cut_by_upstream = True
                        ended = _upstream_ended()
                        outcome.upstream_status = ended.reason  # as a request left unanswered is
                        raise ended from None
            except BaseException:
                settling = False
                if opened is not None:
                    # Recorded here as refused, cancelled or unrecorded: not also as left
                    # unanswered, and no reply to it is released (``_Admissions``).
                    with contextlib.suppress(LabelgateError):
                        ledger.close(ledger.match(opened))
                    admissions.dropped(opened)
                raise
            settling = False
            admissions.recorded(opened)
            if upstream_over:
                return  # it ended while this request's record was made durable: left unanswered
        await upstream.done_writing()

    pump = asyncio.create_task(forward_requests())

    def idle() -> Coroutine[Any, Any, None]:
        return clock.expired(lambda: bool(ledger.pending))

    try:
        async for reply in _replies(pipeline, call, subject, upstream, pump, idle):
            answer = await _release_streamed(
                pipeline, call, subject, ledger, carry, reply, ending, admissions, pump
            )
            yield answer
            clock.answered()
        if not pump.done():
            # The upstream ended its stream while the caller's is open: nothing more will be
            # answered, so the caller is not read any longer (it hung to its deadline, and
            # the record blamed it). A request being admitted (held for an approver) ends
            # with the stream, recorded so, and its approval request is closed as ended by
            # the upstream (the cancellation names it), not by the caller.
            upstream_over = True
            if not settling:  # else it stops once that record is made durable (or refused)
                pump.cancel(UPSTREAM_ENDED_BEFORE_DECISION)
        await asyncio.wait({pump})
        if not pump.cancelled() and (failure := pump.exception()) is not None and not cut_by_upstream:
            raise failure
        for upstream_id, tensors in carry.flush():
            held = ledger.match(str(upstream_id))
            ledger.close(held)  # answered by what was held
            ending_reply = pb.ModelInferResponse(id=held.upstream_id)
            ending_reply.parameters[FINAL_PARAMETER].bool_param = True
            async with ending.recording(pipeline, call, held.target) as outcome:
                outcome.subject, outcome.upstream_status = subject, "OK"
                # The upstream chose when its stream ends, the caller's token may be gone by
                # then: checked as each reply is (its refusal ends the stream, the requests
                # still held and unanswered recorded as ended by it, below).
                still_valid(subject)
                released = await pipeline.release_inference(
                    held.call,
                    subject,
                    held.target,
                    ending_reply,
                    outcome,
                    tensors=tensors,
                    backend=held.backend,
                )
            yield pb.ModelStreamInferResponse(infer_response=released)
        if ledger.pending or cut_by_upstream:
            ended = _upstream_ended()
            for unanswered in ledger.pending:
                ledger.close(unanswered)  # recorded here, not again below
                await _record_unanswered(pipeline, subject, unanswered, ended)
            raise ended
    except LabelgateError as error:
        # The stream ends refused (recorded where it was raised): the requests it leaves
        # unanswered are recorded as ended by it, each under its own call, and a request held
        # for an approver has its approval request closed naming the refusal (the cancellation
        # names it), not as its caller's leaving (review).
        refused = error
        if not pump.done():
            pump.cancel(stream_refused_before_decision(error.reason, error.message))
            # A request it was admitting records itself as ended by the refusal (above).
            await asyncio.wait({pump})
        for unanswered in ledger.pending:
            ledger.close(unanswered)
            await _record_unanswered(pipeline, subject, unanswered, error)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # The caller left (or the server stops): its cancellation, or the generator closed at
        # the reply grpc was sending (GeneratorExit, outside every handler of the pipeline).
        # Recorded once (``_Ending``) without holding up the cancellation, once the pump has
        # stopped: a request it was still admitting or writing records itself.
        pump.cancel()
        pump.add_done_callback(lambda _: ending.record_left(pipeline, call, subject, ledger))
        raise
    finally:
        reading.drop()
        if not pump.done():
            pump.cancel()


async def _record_unanswered(
    pipeline: Pipeline, subject: Subject, unanswered: Any, error: LabelgateError
) -> None:
    outcome = Outcome(subject=subject, model=unanswered.target.model, upstream_status=error.reason)
    try:
        await pipeline.recorder.record(CallRecord.of(unanswered.call, outcome, error))
    except LabelgateError as lost:
        log.error("a refusal's record was lost", reason=lost.reason, request_id=unanswered.call.request_id)


class _CallerRequests:
    """The caller's requests as the stream's pump reads them; a message that does not parse
    (``inference.EachParsed``) ends the stream, recorded like any refusal. Only reading is
    guarded here: what the pump does with a request is recorded where it is done.

    Not a closure's cell nor an async generator, and let go of when the stream ends (``drop``):
    a refusal's traceback keeps the pump's function (``drop_frames`` clears only its frames)
    and with it what its closure holds, and an async generator a refused stream leaves
    suspended holds the message it yielded; either kept the stream's last message in a
    reference cycle until the rare collection (``heap.py``; 15.6 MiB a refused stream,
    review), as ``routes.ParsedOnceAdmitted`` does for a unary request."""

    __slots__ = ("_call", "_pipeline", "_requests", "_subject")

    def __init__(
        self, pipeline: Pipeline, call: Call, subject: Subject, requests: AsyncIterator[pb.ModelInferRequest]
    ) -> None:
        self._pipeline, self._call, self._subject = pipeline, call, subject
        self._requests: AsyncIterator[pb.ModelInferRequest] | None = requests

    def __aiter__(self) -> _CallerRequests:
        return self

    async def __anext__(self) -> pb.ModelInferRequest:
        requests = self._requests
        if requests is None:  # the stream ended
            raise StopAsyncIteration
        try:
            return await anext(requests)
        except LabelgateError as error:
            target = Target(service=self._call.service)
            await self._pipeline.record_failure(self._call, self._subject, target, error)
            raise

    def drop(self) -> None:
        self._requests = None


async def _release_streamed(
    pipeline: Pipeline,
    call: Call,
    subject: Subject,
    ledger: StreamLedger,
    carry: CarryOver,
    reply: Any,
    ending: _Ending,
    admissions: _Admissions,
    pump: asyncio.Task[None],
) -> pb.ModelStreamInferResponse:
    response = reply.infer_response
    try:
        held = ledger.match(response.id)
    except LabelgateError as error:
        await pipeline.record_failure(call, subject, Target(service=call.service), error)
        raise
    # Nothing is released for a request before its admission is durable: one refused for want
    # of its record ends the stream with that refusal here (fail closed).
    await admissions.durable(held.upstream_id, pump)
    target = held.target
    if reply.error_message:
        # The upstream's text may name anything; the caller gets a stable one.
        ledger.close(held)
        carry.release(held.upstream_id, [], final=True)
        outcome = Outcome(subject=subject, model=target.model, upstream_status=build.STREAM_ERROR_REASON)
        stream_error = UpstreamError(build.STREAM_ERROR_REASON, build.STREAM_ERROR_TEXT)
        await pipeline.recorder.record(CallRecord.of(call, outcome, stream_error))
        return build.stream_error(target.caller_id, target.model)
    final = is_final(response)
    try:
        async with ending.recording(pipeline, call, target) as outcome:
            outcome.subject, outcome.upstream_status = subject, "OK"
            still_valid(subject)
            keep_backend_labels(held, backend_labels(response), pipeline.limits)
            tensors = carry.release(held.upstream_id, decoded_outputs(response), final)
            if final:
                ledger.close(held)
            else:
                _drop_parameters(response)
            released = await pipeline.release_inference(
                held.call, subject, target, response, outcome, tensors=tensors, backend=held.backend
            )
    except BaseException:
        ledger.close(held)  # its refusal is recorded above: not also as left unanswered
        raise
    return pb.ModelStreamInferResponse(infer_response=released)


async def _replies(
    pipeline: Pipeline,
    call: Call,
    subject: Subject,
    upstream: Any,
    pump: asyncio.Task[None],
    idle: Callable[[], Coroutine[Any, Any, None]],
) -> AsyncIterator[Any]:
    """Upstream replies, surfacing a refusal raised while forwarding requests at once
    (already recorded), recording an upstream failure before it ends the stream, and ending
    (recorded) a stream idle too long (``idle``, ``IdleClock.expired``)."""
    reader = upstream.__aiter__()
    watch = asyncio.ensure_future(idle())
    try:
        while True:
            read = asyncio.ensure_future(reader.__anext__())
            try:
                done, _ = await asyncio.wait({read, pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                read.cancel()  # a stream cancelled while waiting leaves no read behind
                raise
            if pump in done and pump.exception() is not None:
                read.cancel()
                raise pump.exception()  # type: ignore[misc]
            if watch in done and not done - {watch}:
                read.cancel()
                error = StreamIdle(pipeline.limits.stream_idle_seconds)
                await pipeline.record_failure(call, subject, Target(service=call.service), error)
                raise error
            try:
                reply = await read
            except StopAsyncIteration:
                return
            except LabelgateError as error:
                await pipeline.record_failure(call, subject, Target(service=call.service), error)
                raise
            yield reply
    finally:
        watch.cancel()


def _drop_parameters(response: pb.ModelInferResponse) -> None:
    """A streamed reply's parameters are not carried across replies as its outputs are
    (``CarryOver``), so a value split across two replies' parameters would pass unseen, text
    or number (a card as ``4111``, ``1111``, ... in an int64 parameter, found by review; a
    number is scanned as its digits, each piece alone too short): only a request's final
    reply releases them. The final flag is the stream's own, on the reply only (``is_final``):
    written back as the plain ``false`` it reads as, and an output's parameter of that name is
    dropped like any other (it was released on every reply, a card across two of them)."""
    for output in response.outputs:
        output.ClearField("parameters")
    for name in list(response.parameters):
        if name != FINAL_PARAMETER:
            del response.parameters[name]
    if FINAL_PARAMETER in response.parameters:
        response.parameters[FINAL_PARAMETER].bool_param = False
