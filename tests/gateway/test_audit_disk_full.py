"""The audit log's disk fills up under a running gateway: calls are refused, nothing is released
without its record, and every acknowledged record survives.

The full disk is a kernel-enforced limit, not a mock: the writer runs under ``RLIMIT_FSIZE``
(set in the child before it execs, ``tests/audit/conftest.py:writer_process``), so a write past
the limit fails with EFBIG exactly as a full filesystem fails with ENOSPC. A tmpfs or loop mount
would need root, which the tests do not have.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from labelgate.audit.verify import verify_log
from labelgate.gateway.status import error_info
from tests.audit.conftest import read_records, writer_process
from tests.gateway.test_audit_trail import gateway, infer, metadata

AUDIT_LOG_BYTES = 16 * 1024  # a few records of ~1-2 KB each


def test_a_full_audit_disk_refuses_calls_and_releases_nothing_unrecorded(
    tmp_path: Path, demo_backend: str
) -> None:
    socket, logs = tmp_path / "audit.sock", tmp_path / "audit"
    released: list[str] = []
    refusal: grpc.aio.AioRpcError | None = None
    with (
        writer_process(socket, logs, max_file_bytes=AUDIT_LOG_BYTES) as writer,
        gateway(tmp_path, demo_backend, socket) as (target, _),
    ):
        for _ in range(200):  # the limit comes long before this
            session = f"disk-{uuid.uuid4().hex}"
            try:
                asyncio.run(infer(target, metadata("ann", "analysts", session=session)))
            except grpc.aio.AioRpcError as error:
                refusal = error
                break
            released.append(session)
        assert refusal is not None, "the audit log never filled up"
        assert writer.popen.wait(timeout=10) != 0  # the writer stops rather than write a torn log
        assert "audit_write_failed" in writer.output()
        # While the writer is gone, the gateway keeps refusing.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            asyncio.run(infer(target, metadata("ann", "analysts")))

    for error in (refusal, again.value):
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(error)
        assert info is not None and info.reason == "AUDIT_UNAVAILABLE"
    assert released, "some calls were released before the disk filled"
    # The writer took back the append it could not finish (no caller received that call), so
    # the log verifies as it was left, and a writer started once space is freed has nothing to cut.
    assert verify_log(logs).ok
    with writer_process(socket, logs) as restarted:
        assert "audit_torn_tail_removed" not in restarted.output()
    recorded = {record["event"]["session_id"] for record in read_records(logs)}
    assert set(released) <= recorded  # every released response has its durable record
    assert verify_log(logs).ok
