"""A session store that fails fast (its disk is full, its file cannot be opened, its database
refuses connections) never fills the recorder's queue: the recorder must fail closed anyway.

The failures are real: the session's file is a symlink to ``/dev/full`` (every write fails
with ENOSPC, for root too) or a directory in the file's place (EISDIR); PostgreSQL at a port
nobody listens on. Entries of calls already released are kept and retried until the store
works again, new calls are refused ``RECORDING_BACKLOG`` meanwhile, and an entry the store
can never hold is dropped (counted) instead of holding every later call up.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import Subject, mint_dev_token
from labelgate.calls import CallRecord
from labelgate.errors import ResourceExhausted
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_inputs
from labelgate.recording import SessionRecorder
from labelgate.recording.entries import call_entry, file_name, recording_key
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.store import SessionStore
from tests.recording.conftest import Clock, gateway_settings, key, make_call, make_outcome
from tests.support.postgres import PostgresServer
from tests.support.procs import free_port

WAIT = 30  # seconds: a bound on waiting, never a measure of speed


class WatchedStore:
    """A real store that tells when opening it or appending to it failed (by then the recorder
    has taken the failure in: it handles the exception before its task yields again)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.failed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def open(self) -> None:
        try:
            await self.store.open()
        except Exception:
            self.failed.set()
            raise

    async def append(self, session_id: str, entries: Any, limit: int) -> Any:
        try:
            return await self.store.append(session_id, entries, limit)
        except Exception:
            self.failed.set()
            raise


def break_file(path: Path, how: str) -> Callable[[], None]:
    """Make the session file at ``path`` fail every write; returns what repairs it."""
    if how == "disk-full":
        os.symlink("/dev/full", path)
        return path.unlink
    path.mkdir()
    return path.rmdir


def recorder_on(store: SessionStore, **options: Any) -> SessionRecorder:
    return SessionRecorder(store, retry_seconds=0.01, retry_max_seconds=0.05, clock=Clock(), **options)


async def record(recorder: SessionRecorder, session: str, **outcome: Any) -> str:
    call = make_call(session)
    await recorder.record(CallRecord.of(call, make_outcome(**outcome), None, recorder.clock()))
    return call.request_id


@pytest.mark.parametrize("how", ["disk-full", "directory-in-the-way"])
async def test_a_failed_write_keeps_its_entries_refuses_new_calls_and_writes_them_on_recovery(
    tmp_path: Path, how: str
) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    repair = break_file(directory / file_name(key("full")), how)
    store = WatchedStore(FileSessionStore(directory))
    recorder = recorder_on(store)
    # Released before the failure shows: the unavoidable window, kept until written.
    fine = await record(recorder, "fine")
    released = [await record(recorder, "full") for _ in range(3)]
    await asyncio.wait_for(store.failed.wait(), WAIT)

    assert recorder.counts == {"stored": 1}  # the other session was written, nothing dropped
    with pytest.raises(ResourceExhausted) as refused:
        await record(recorder, "fine")  # any new call: refused, not released unrecorded
    assert refused.value.reason == "RECORDING_BACKLOG"
    assert recorder.counts["refused_store_failing"] == 1
    assert recorder.failing and recorder.unwritten == 3

    repair()
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert not recorder.failing
    assert [e["request_id"] for e in await store.entries(key("full")) or []] == released  # once, in order
    later = await record(recorder, "fine")  # served again
    await recorder.flush()
    assert [e["request_id"] for e in await store.entries(key("fine")) or []] == [fine, later]
    assert recorder.counts == {"stored": 5, "refused_store_failing": 1}
    await recorder.close()


async def test_entries_still_unwritten_when_the_gateway_stops_are_counted_lost(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    break_file(directory / file_name(key("full")), "disk-full")
    store = WatchedStore(FileSessionStore(directory))
    recorder = recorder_on(store)
    for _ in range(2):
        await record(recorder, "full")
    await asyncio.wait_for(store.failed.wait(), WAIT)
    await recorder.close(drain_seconds=0)
    assert recorder.counts == {"lost": 2}
    assert recorder.unwritten == 0


async def test_an_entry_the_store_can_never_hold_is_dropped_and_counted_not_retried(tmp_path: Path) -> None:
    """A lone surrogate cannot be encoded as UTF-8: retrying could never write it, and holding
    it would refuse every later call."""
    recorder = recorder_on(FileSessionStore(tmp_path / "sessions"))
    first = await record(recorder, "s")
    await record(recorder, "s", model="bad\ud800")
    last = await record(recorder, "s")
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert not recorder.failing
    assert recorder.counts == {"stored": 2, "failed": 1}
    assert [e["request_id"] for e in await recorder.store.entries(key("s")) or []] == [first, last]
    await recorder.close()


async def test_postgres_a_store_that_cannot_be_reached_refuses_new_calls() -> None:
    store = WatchedStore(PostgresSessionStore(f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    recorder = recorder_on(store)
    await record(recorder, "s")  # released before the store was tried: kept on the queue
    await asyncio.wait_for(store.failed.wait(), WAIT)
    with pytest.raises(ResourceExhausted) as refused:
        await record(recorder, "s")
    assert refused.value.reason == "RECORDING_BACKLOG"
    await recorder.close(drain_seconds=0)
    assert recorder.counts == {"refused_store_failing": 1, "lost": 1}


async def test_postgres_text_the_database_refuses_is_dropped_and_counted_not_retried(
    postgres: PostgresServer,
) -> None:
    """jsonb holds no NUL character: that entry can never be stored."""
    recorder = recorder_on(PostgresSessionStore(postgres.create_database()))
    first = await record(recorder, "s")
    await record(recorder, "s", model="bad\x00model")
    last = await record(recorder, "s")
    await asyncio.wait_for(recorder.flush(), WAIT)
    assert not recorder.failing
    assert recorder.counts == {"stored": 2, "failed": 1}
    assert [e["request_id"] for e in await recorder.store.entries(key("s")) or []] == [first, last]
    await recorder.close()


# -- a real gateway ---------------------------------------------------------------------------
def infer_request() -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="customer-profile")
    message.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    encode_inputs(message, [Tensor("customer_ids", "INT64", [1], [1])], raw=True)
    return message


def metadata(session: str) -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"Bearer {mint_dev_token('ann', ['analysts'], 300)}"),
        ("x-labelgate-session", session),
    )


async def test_a_gateway_refuses_calls_while_its_recording_store_fails_and_serves_once_it_recovers(
    tmp_path: Path, demo_backend: str
) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    session_key = recording_key(Subject.proven("jwt", "ann", issuer="labelgate-dev"), "", "s1")
    repair = break_file(directory / file_name(session_key), "disk-full")
    settings = gateway_settings(demo_backend, recording={"dir": str(directory)})
    gateway = Gateway(settings)
    recorder = gateway.sessions
    assert recorder is not None
    store = recorder.store = WatchedStore(recorder.store)
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # Released before its write failed: the window the design accepts; kept, not dropped.
            first = await stub.ModelInfer(infer_request(), metadata=metadata("s1"), timeout=10)
            await asyncio.wait_for(store.failed.wait(), WAIT)
            for session in ("s1", "s2"):  # the store fails: no call is released, whatever its session
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ModelInfer(infer_request(), metadata=metadata(session), timeout=10)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                info = error_info(refused.value)
                assert info is not None and info.reason == "RECORDING_BACKLOG"
            assert recorder.counts["failed"] == 0

            repair()  # space is freed
            await asyncio.wait_for(recorder.flush(), WAIT)
            again = await stub.ModelInfer(infer_request(), metadata=metadata("s1"), timeout=10)
            await recorder.flush()
    finally:
        await gateway.stop(0)
    assert first.outputs and again.outputs
    entries = FileSessionStore(directory).entries_blocking(session_key)
    assert entries is not None and len(entries) == 2  # the released call, then the one served after
    assert recorder.counts["stored"] == 2 and recorder.counts["refused_store_failing"] >= 2


# -- a disk that fills part-way through an append ------------------------------------------------
_PART_WAY = """
import json, resource, signal, sys
from pathlib import Path
from labelgate.recording.files import FileSessionStore

directory, batch = Path(sys.argv[1]), json.loads(sys.argv[2])
store = FileSessionStore(directory)
store.append_blocking("s", batch[:1], 1 << 20)
size = store.path("s").stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), like ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
try:
    store.append_blocking("s", batch[1:], 1 << 20)
except OSError as error:
    print("failed", error.errno, store.path("s").stat().st_size == size)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
store.append_blocking("s", batch[1:], 1 << 20)  # the recorder's retry
"""


def test_an_append_the_disk_cut_short_is_taken_back_so_the_retry_writes_each_entry_once(
    tmp_path: Path,
) -> None:
    """The size limit is the kernel's (``RLIMIT_FSIZE``, in a child process): the write stops
    part-way through the batch, as on a filesystem that fills up."""
    clock = Clock()
    batch = [
        call_entry(CallRecord.of(make_call("s"), make_outcome(), None, clock()), record_input_values=False)
        for _ in range(3)
    ]
    done = subprocess.run(
        [sys.executable, "-c", _PART_WAY, str(tmp_path), json.dumps(batch)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert done.stdout.split() == ["failed", str(errno.EFBIG), "True"]
    entries = FileSessionStore(tmp_path).entries_blocking("s") or []
    assert [e["kind"] for e in entries] == ["call"] * 3  # no torn line, nothing twice
    assert [e["request_id"] for e in entries] == [e["request_id"] for e in batch]
