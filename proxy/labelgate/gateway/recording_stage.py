"""Stage: record, as the pipeline runs it around every call.

``RecordingStage.recording`` wraps each call (or streamed message): whatever way it ends
(released, refused, cancelled), its outcome is handed to the recorder (``gateway/record.py``:
the log line, metrics, the durable audit record), and a release fails when its record cannot
be made durable. A cancelled call's record is written without holding up the cancellation
(``record_later``); a stopping gateway waits for those and for the calls still open
(``finish_records``) before it closes its recorders.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from labelgate import tracing
from labelgate.auth import Subject
from labelgate.background import BackgroundTasks
from labelgate.calls import Call, CallRecord, CallsInFlight, Outcome, Target
from labelgate.deadlines import reply_too_late
from labelgate.errors import LabelgateError
from labelgate.gateway.record import AFTER_UNACKNOWLEDGED, Recorder, recorded_text
from labelgate.logs import get_logger

# The pipeline's logger: its lines keep the name they were logged under before this module.
log = get_logger("labelgate.gateway.pipeline")


class RecordingStage:
    """Records every call through ``recorder``, counting it in ``in_flight`` while it is open."""

    def __init__(self, recorder: Recorder, in_flight: CallsInFlight) -> None:
        self.recorder = recorder
        self.in_flight = in_flight
        self._cancelled_records = BackgroundTasks()  # being written (``recording``)
        self._open_calls: dict[asyncio.Task[Any], int] = {}  # tasks inside ``recording``, how deep

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
                if reply_too_late():
                    self.end_as_gone(call, outcome)
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
                if reply_too_late():
                    # Its deadline passed while the release's record was made durable, and
                    # grpc's cancellation of this handler has not come yet (on a loaded gateway
                    # it comes behind the acknowledgement; seen in CI).
                    self.end_as_gone(call, outcome)
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

    def end_as_gone(self, call: Call, outcome: Outcome) -> NoReturn:
        """End a call whose reply the transport would drop (its caller's gRPC deadline has
        passed) as grpc's cancellation would: recorded as gone, after any record before it."""
        gone = asyncio.CancelledError()
        self.record_later(CallRecord.of(call, outcome, gone))
        raise gone

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
