"""A session's size cap, with a real gateway: every call its caller received is in the recording.

Review (thirteenth round): past ``recording.max_session_bytes`` the store dropped the
session's entries, though each call had been released: a caller received clear values,
call after call, that no replay would ever show (18,000-row replies: 11 released, 3
recorded). The session's calls are refused once its recording is full now, and those
released before the store said so are recorded after its marker.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import Subject
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.recording.entries import recording_key
from labelgate.recording.files import FileSessionStore
from tests.recording.conftest import gateway_settings
from tests.recording.test_store_failing import infer_request, metadata

CAP = 16_384  # a few calls of the demo's one-row reply


async def test_calls_past_a_sessions_cap_are_refused_and_every_released_one_is_recorded(
    tmp_path: Path, demo_backend: str
) -> None:
    directory = tmp_path / "sessions"
    settings = gateway_settings(demo_backend, recording={"dir": str(directory), "max_session_bytes": CAP})
    gateway = Gateway(settings)
    recorder = gateway.sessions
    assert recorder is not None
    await gateway.start()
    released = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(40):
                try:
                    reply = await stub.ModelInfer(infer_request(), metadata=metadata("s1"), timeout=10)
                except grpc.aio.AioRpcError as refused:
                    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    info = error_info(refused)
                    assert info is not None and info.reason == "RECORDING_SESSION_FULL"
                    assert "x-labelgate-session" in (refused.details() or "")
                    break
                assert reply.outputs
                released += 1
                await recorder.flush()  # one call at a time: the store says "full" before the next
            else:
                pytest.fail("40 calls of one session never reached a 16 KiB cap")
            # Another session of the same caller is recorded as before.
            assert (await stub.ModelInfer(infer_request(), metadata=metadata("s2"), timeout=10)).outputs
            await recorder.flush()
    finally:
        await gateway.stop(0)
    subject = Subject.proven("jwt", "ann", issuer="labelgate-dev")
    entries = FileSessionStore(directory).entries_blocking(recording_key(subject, "", "s1"))
    assert entries is not None
    kinds = [entry["kind"] for entry in entries]
    assert kinds.count("truncated") == 1 and kinds[-1] == "call", kinds
    calls = [entry for entry in entries if entry["kind"] == "call"]
    assert len(calls) == released >= 2, (len(calls), released)
    assert recorder.counts["refused_session_full"] >= 1
