"""The recorder's queue is bounded in bytes as well as in entries (``max_queue_bytes``).

Found by review (availability): bounded by count only, a slow store (not a failing one, which
already refuses new calls) let 10,000 entries wait in memory, each holding its delivered reply
as base64; with replies of 1 MiB that is 13 GB. The store here stalls on an ``asyncio.Event``
(deterministic, no timing) or fails until told to work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import CallRecord
from labelgate.errors import ResourceExhausted
from labelgate.gateway.record import Recorders
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs
from labelgate.recording import RecordingSettings, SessionRecorder, build_session_recorder
from labelgate.recording.entries import Admission, call_entry
from labelgate.recording.recorder import entry_bytes
from labelgate.recording.store import Sealer, SessionInfo, SessionPage
from tests.gateway.test_pipeline import make_call as pipeline_call
from tests.gateway.test_pipeline import make_pipeline, request, upstream_returning
from tests.recording.conftest import Clock, make_call, make_outcome

WAIT = 30  # seconds: a bound on waiting, never a measure of speed
KIB = 1024
MAX = 1 << 20  # the least ``recording.max_queue_bytes`` allows


class ControlledStore:
    """An in-memory store whose appends stall until ``gate`` is set, or fail while ``fail``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.appending = asyncio.Event()  # an append has begun (and stalls, or has failed)
        self.written: list[str] = []  # request ids, in order

    def stall(self) -> None:
        self.gate.clear()
        self.appending.clear()

    async def open(self) -> None:
        pass

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        self.appending.set()
        if self.fail:
            raise OSError(28, "No space left on device")
        await self.gate.wait()
        self.written += [entry["request_id"] for entry in entries]
        return ["store"] * len(entries)

    async def sessions(self) -> list[SessionInfo]:
        return []

    async def sessions_page(self, limit: int, cursor: str | None = None) -> SessionPage:
        return SessionPage([])

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        return None

    async def sweep(self, cutoff: datetime) -> int:
        return 0

    async def close(self) -> None:
        pass


def reply_of(kib: int) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name="customer-profile", id="r1")
    blob = Tensor("notes", "BYTES", [1], [b"x" * (kib * KIB)])
    reply.outputs.add(name=blob.name, datatype=blob.datatype, shape=blob.shape)
    encode_outputs(reply, [blob], raw=True)
    return reply


def call_of(kib: int, session: str = "s") -> CallRecord:
    return CallRecord.of(make_call(session), make_outcome(delivered=reply_of(kib)), None)


def size_of(record: CallRecord) -> int:
    return entry_bytes(call_entry(record, record_input_values=False))


def recorder_on(store: ControlledStore, **options: Any) -> SessionRecorder:
    return SessionRecorder(
        store,
        max_queue_bytes=MAX,
        retry_seconds=0.01,
        retry_max_seconds=0.05,
        clock=Clock(),
        **options,
    )


async def held_by_the_writer(recorder: SessionRecorder, store: ControlledStore, record: CallRecord) -> None:
    """Record ``record`` and wait until the writer has taken it into an append (stalled or failed)."""
    await recorder.record(record)
    await asyncio.wait_for(store.appending.wait(), WAIT)


class _Audit:
    """An audit recorder that keeps what it made durable."""

    def __init__(self) -> None:
        self.durable: list[str] = []

    async def record(self, entry: CallRecord) -> None:
        self.durable.append(entry.call.request_id)


async def test_calls_past_the_queues_bytes_are_refused_before_their_audit_record_while_the_store_stalls() -> (
    None
):
    store = ControlledStore()
    store.stall()
    recorder = recorder_on(store)  # a count bound of 10,000: only the bytes can refuse here
    audit = _Audit()
    recorders = Recorders(audit, recorder)
    first, second, third = call_of(300), call_of(300), call_of(300)
    assert 2 * size_of(first) <= MAX < 3 * size_of(first)
    await recorders.record(first)
    await asyncio.wait_for(store.appending.wait(), WAIT)  # the writer holds it, stalled
    await recorders.record(second)
    with pytest.raises(ResourceExhausted) as refused:
        await recorders.record(third)
    assert refused.value.reason == "RECORDING_BACKLOG"
    assert recorder.counts["refused_queue_full"] == 1
    # Refused at its reservation: its audit record was never written, nothing is reserved.
    assert audit.durable == [first.call.request_id, second.call.request_id]
    assert recorder.unwritten == 2 and recorder.queued_bytes == 2 * size_of(first)
    assert recorder._reserved == 0

    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert store.written == [first.call.request_id, second.call.request_id]
    await recorder.close()


async def test_an_entry_is_refused_by_its_own_size_before_its_audit_record() -> None:
    """The reservation builds the entry and promises its own size: a large reply after small
    ones is refused before its release's audit record (the pipeline's recording then records
    the refusal, whose entry fits), and its reservation is given back."""
    store = ControlledStore()
    store.stall()
    recorder = recorder_on(store)
    await held_by_the_writer(recorder, store, call_of(350))
    await recorder.record(call_of(1))  # the latest entry is small
    held = recorder.queued_bytes
    assert held + size_of(call_of(1)) <= MAX < held + size_of(call_of(600))

    pipeline, journal, _, _ = make_pipeline()
    audit = _Audit()
    pipeline.recorder = Recorders(audit, recorder)
    call = pipeline_call()
    with pytest.raises(ResourceExhausted) as refused:
        await pipeline.infer(call, request(), upstream_returning(reply_of(600), journal))
    assert refused.value.reason == "RECORDING_BACKLOG"
    assert recorder.counts["refused_queue_full"] == 1
    assert recorder._reserved == 0 and recorder._reserved_bytes == 0
    await pipeline.finish_records(WAIT)
    # One audit record: the refusal's. The release was never recorded as delivered.
    assert audit.durable == [call.request_id]
    assert recorder.unwritten == 3 and recorder.queued_bytes < held + 64 * KIB

    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert recorder.queued_bytes == 0
    await recorder.close()


async def test_a_refused_calls_audit_record_is_written_when_the_queue_has_no_room() -> None:
    """A refusal released nothing: with the queue full its session entry is left out, and its
    audit record is still written (a full queue cost the refused call its every record)."""
    store = ControlledStore()
    store.stall()
    recorder = recorder_on(store, queue_size=1)
    await held_by_the_writer(recorder, store, call_of(1))
    audit = _Audit()
    recorders = Recorders(audit, recorder)
    refused = CallRecord.of(make_call("s"), make_outcome(), ResourceExhausted("SOMETHING", "refused"))
    assert refused.refusal is not None
    await recorders.record(refused)
    assert audit.durable == [refused.call.request_id]
    assert recorder.counts["refused_queue_full"] == 1 and recorder._reserved == 0
    with pytest.raises(ResourceExhausted):  # a delivery is still refused for want of room
        await recorders.record(call_of(1))
    assert audit.durable == [refused.call.request_id]
    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    await recorder.close()


async def test_the_bytes_are_given_back_once_the_store_writes_the_entries() -> None:
    store = ControlledStore()
    store.stall()
    recorder = recorder_on(store)
    await held_by_the_writer(recorder, store, call_of(300))
    await recorder.record(call_of(300))
    with pytest.raises(ResourceExhausted):
        await recorder.record(call_of(300))

    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert recorder.queued_bytes == 0
    store.stall()
    later = [call_of(300), call_of(300)]  # the room is whole again: both are recorded
    await held_by_the_writer(recorder, store, later[0])
    await recorder.record(later[1])
    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert store.written[-2:] == [record.call.request_id for record in later]
    assert recorder.counts == {"stored": 4, "refused_queue_full": 1}
    await recorder.close()


async def test_entries_kept_for_a_retry_hold_their_bytes_until_they_are_written() -> None:
    store = ControlledStore()
    store.fail = True
    recorder = recorder_on(store)
    kept = call_of(600)
    await held_by_the_writer(recorder, store, kept)  # its append failed: kept for a retry
    assert recorder.failing and recorder.unwritten == 1
    assert recorder.queued_bytes == size_of(kept)

    store.fail = False
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert store.written == [kept.call.request_id] and recorder.queued_bytes == 0
    # Given back once, when written (not also when its write failed): the bound still holds.
    store.stall()
    await held_by_the_writer(recorder, store, call_of(600))
    with pytest.raises(ResourceExhausted):
        await recorder.record(call_of(600))
    assert recorder.counts["refused_queue_full"] == 1
    store.gate.set()
    await asyncio.wait_for(recorder.flush(), WAIT)
    await recorder.close()


async def test_an_entry_larger_than_the_bound_is_taken_alone_so_an_idle_store_serves_it() -> None:
    store = ControlledStore()
    recorder = recorder_on(store)
    large = call_of(1024)
    assert size_of(large) > MAX
    await recorder.record(large)
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert store.written == [large.call.request_id] and recorder.queued_bytes == 0
    await recorder.close()


def test_the_bytes_bound_is_a_setting_of_at_least_one_mib(tmp_path: Any) -> None:
    assert RecordingSettings().max_queue_bytes == 256 << 20
    with pytest.raises(ValueError, match="max_queue_bytes"):
        RecordingSettings(max_queue_bytes=(1 << 20) - 1)
    recorder = build_session_recorder(RecordingSettings(dir=tmp_path, max_queue_bytes=8 << 20))
    assert recorder is not None and recorder.max_queue_bytes == 8 << 20
