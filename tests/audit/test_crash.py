"""kill -9 the writer while appends stream in: no acknowledged record may be missing afterwards."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from labelgate.audit import AuditClient, AuditReceipt, AuditUnavailable
from labelgate.audit.store import read_committed
from labelgate.audit.verify import verify_log
from tests.audit.conftest import make_event, read_records, writer_process


async def test_kill_9_loses_no_acknowledged_record(tmp_path: Path, keys, public_key) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    acknowledged: dict[str, AuditReceipt] = {}
    refused = 0
    args = ("--signing-key", str(keys[0]), "--checkpoint-every", "50")

    with writer_process(sock, log_dir, *args) as process:
        client = AuditClient(sock, timeout=5)

        async def keep_appending() -> None:
            nonlocal refused
            while True:
                event = make_event()
                try:
                    acknowledged[event["event_id"]] = await client.append(event)
                except AuditUnavailable:
                    refused += 1
                    return

        workers = [asyncio.create_task(keep_appending()) for _ in range(16)]
        for _ in range(2000):  # let a few hundred through, then pull the plug mid-stream
            if len(acknowledged) >= 300:
                break
            await asyncio.sleep(0.005)
        process.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
        await client.close()
        assert process.popen.wait(timeout=5) == -signal.SIGKILL

    assert len(acknowledged) >= 300
    assert refused == 16  # every worker was cut off mid-append, and told so
    # The committed mark (what the export may ship) covers every acknowledged record, and names
    # a record the log holds: it is rewritten after the sync, before the answers.
    mark, on_disk = read_committed(log_dir), {r["seq"]: r["hash"] for r in read_records(log_dir)}
    assert mark is not None and mark.seq >= max(receipt.seq for receipt in acknowledged.values())
    assert on_disk[mark.seq] == mark.head

    with writer_process(sock, log_dir, *args):  # recovery, then one more append on the same chain
        async with AuditClient(sock) as client:
            after = await client.append(make_event())

    stored = {r["event"]["event_id"]: (r["seq"], r["hash"]) for r in read_records(log_dir)}
    missing = [event_id for event_id in acknowledged if event_id not in stored]
    assert missing == []
    assert all(stored[e] == (r.seq, r.hash) for e, r in acknowledged.items())
    assert after.seq == len(stored)  # nothing after the crash point was skipped or reused
    report = verify_log(log_dir, public_key)
    assert report.ok, report.problems
    assert report.last_verified is not None and report.last_verified.seq == after.seq
