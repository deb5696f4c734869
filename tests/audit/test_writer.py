"""The audit writer as a real process on a Unix socket, driven by the real client."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from labelgate.audit import AuditClient, AuditRejected, AuditUnavailable
from labelgate.audit.records import GENESIS
from labelgate.audit.store import (
    COMMITTED_NAME,
    Checkpoint,
    committed_line,
    list_segments,
    parse_record,
    read_committed,
)
from labelgate.audit.verify import verify_log
from labelgate.audit.writer import AuditWriter, WriterSettings, _Connection
from tests.audit.conftest import (
    make_event,
    open_gate,
    read_checkpoints,
    read_records,
    run_to_exit,
    stalling_writer_process,
    writer_process,
)


async def test_concurrent_appends_are_all_acknowledged_and_stored(tmp_path: Path, keys, public_key) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0])):
        async with AuditClient(sock, timeout=10) as client:

            async def task(n: int) -> list[tuple[str, int, str]]:
                out = []
                for _ in range(n):
                    event = make_event()
                    receipt = await client.append(event)
                    out.append((event["event_id"], receipt.seq, receipt.hash))
                return out

            results = [r for batch in await asyncio.gather(*(task(10) for _ in range(50))) for r in batch]
            stats = await client.stats()

    assert len(results) == 500
    assert sorted(seq for _, seq, _ in results) == list(range(1, 501))
    stored = {r["event"]["event_id"]: (r["seq"], r["hash"]) for r in read_records(log_dir)}
    assert len(stored) == 500
    assert all(stored[event_id] == (seq, digest) for event_id, seq, digest in results)
    # Group commit: one fsync covered many records while other appends were in flight.
    assert stats["records"] == 500
    assert stats["fsyncs"] < stats["records"], stats
    assert stats["largest_batch"] > 1
    report = verify_log(log_dir, public_key)
    assert report.ok, report.problems
    assert report.last_verified is not None and report.last_verified.seq == 500  # shutdown checkpoint


async def test_a_lone_append_is_written_at_once_with_its_own_fsync(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        async with AuditClient(sock) as client:
            for _ in range(5):
                await client.append(make_event())
                # Acknowledged means already on disk, not merely queued.
                assert len(read_records(log_dir)) == (await client.stats())["records"]
            stats = await client.stats()
    assert stats["records"] == stats["fsyncs"] == stats["batches"] == 5


async def test_invalid_events_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        async with AuditClient(sock) as client:
            with pytest.raises(AuditRejected) as caught:
                await client.append(make_event(details={"value": "123-45-6789"}))
            assert caught.value.reason == "AUDIT_EVENT_INVALID"
            with pytest.raises(AuditRejected, match="unknown event field"):
                await client.append(make_event(ssn="123-45-6789"))
            with pytest.raises(AuditRejected, match="not plain JSON"):
                await client.append(make_event(latency_ms=float("inf")))
            receipt = await client.append(make_event())  # the connection is still good
            stats = await client.stats()
    assert receipt.seq == 1
    assert stats["rejected"] == 2
    assert b"123-45-6789" not in b"".join(p.read_bytes() for p in log_dir.iterdir() if p.is_file())


async def test_client_fails_closed_when_no_writer_listens(tmp_path: Path) -> None:
    client = AuditClient(tmp_path / "nobody.sock", timeout=1)
    with pytest.raises(AuditUnavailable) as caught:
        await client.append(make_event())
    assert caught.value.reason == "AUDIT_UNAVAILABLE"
    await client.close()


async def test_client_fails_closed_when_the_writer_stops_and_recovers_when_it_returns(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    client = AuditClient(sock, timeout=2)
    with writer_process(sock, log_dir):
        first = await client.append(make_event())
    with pytest.raises(AuditUnavailable):
        await client.append(make_event())
    with writer_process(sock, log_dir):
        again = await client.append(make_event())  # reconnects on its own
    await client.close()
    assert (first.seq, again.seq) == (1, 2)
    records = read_records(log_dir)
    assert records[1]["prev"] == records[0]["hash"] == first.hash  # the chain continues across restarts


async def test_client_fails_closed_when_the_writer_hangs(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir) as process:
        async with AuditClient(sock, timeout=0.5) as client:
            await client.append(make_event())
            with process.frozen(), pytest.raises(AuditUnavailable, match="no durable acknowledgement"):
                await client.append(make_event())


async def test_an_append_the_writer_reads_after_its_deadline_is_refused_unwritten(tmp_path: Path) -> None:
    """The gateway gave up on this append and denied its call; the writer, stopped meanwhile,
    reads it once it resumes. Written then, the log would say a refused call was released
    (it did, before: the reviewer's SIGSTOP repro)."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    late = make_event()
    with writer_process(sock, log_dir) as process:
        async with AuditClient(sock, timeout=0.5) as client:
            await client.append(make_event())
            with process.frozen(), pytest.raises(AuditUnavailable, match="no durable acknowledgement"):
                await client.append(late)
            after = await client.append(make_event())  # read after the late one, on the same socket
            stats = await client.stats()
    assert (after.seq, stats["expired"], stats["records"]) == (2, 1, 2)
    assert late["event_id"] not in {record["event"]["event_id"] for record in read_records(log_dir)}


async def test_a_refusal_after_an_unacknowledged_append_is_written_after_it_however_late(
    tmp_path: Path,
) -> None:
    """The reviewer's slow disk (fdatasync delayed past the deadline): the writer read the
    release's append in time and acknowledged it late. The refusal record sent after it had the
    same short deadline, which passed behind the same stall: refused unwritten (AUDIT_EXPIRED),
    so the call's only record said it was released."""
    sock, log_dir, gate = tmp_path / "w.sock", tmp_path / "log", tmp_path / "gate"
    release = make_event(decision="mask")
    refusal = make_event(decision="deny", reason="AUDIT_UNAVAILABLE")
    with stalling_writer_process(sock, log_dir, gate):
        async with AuditClient(sock, timeout=0.5) as client:
            await client.append(make_event())
            os.mkfifo(gate)  # the next append stalls after its write
            with pytest.raises(AuditUnavailable, match="no durable acknowledgement"):
                await client.append(release)
            following = asyncio.ensure_future(client.append(refusal, after_unacknowledged=True))
            # Twice the deadline: one on the refusal would have passed before the writer reads it
            # (the order of events is what matters; nothing here measures time).
            await asyncio.sleep(1.0)
            await asyncio.to_thread(open_gate, gate)
            receipt = await following
            stats = await client.stats()
    assert stats["expired"] == 0
    records = read_records(log_dir)
    assert [r["event"]["event_id"] for r in records[1:]] == [release["event_id"], refusal["event_id"]]
    assert receipt.seq == records[-1]["seq"] == 3


async def test_a_refusal_sent_behind_its_expired_release_is_the_only_record_written(tmp_path: Path) -> None:
    """The writer stopped before reading the release: it reads both at once when it resumes,
    refuses the release for its deadline and writes the refusal, in the order they came."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    release = make_event(decision="mask")
    refusal = make_event(decision="deny", reason="AUDIT_UNAVAILABLE")
    with writer_process(sock, log_dir) as process:
        async with AuditClient(sock, timeout=0.5) as client:
            await client.append(make_event())
            with process.frozen():
                with pytest.raises(AuditUnavailable, match="no durable acknowledgement"):
                    await client.append(release)
                following = asyncio.ensure_future(client.append(refusal, after_unacknowledged=True))
                await asyncio.sleep(1.0)  # past any deadline the refusal could have had
            await following
            stats = await client.stats()
    assert stats["expired"] == 1
    assert [r["event"]["event_id"] for r in read_records(log_dir)[1:]] == [refusal["event_id"]]


def test_a_deadline_that_is_not_a_plain_integer_is_a_protocol_error(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    bodies = [
        json.dumps({"id": number, "op": "append", "event": make_event(), "not_after": deadline}).encode()
        for number, deadline in enumerate(["soon", -1, 1.5, True], start=1)
    ]
    with writer_process(sock, log_dir):
        replies = exchange(sock, bodies, len(bodies))
    assert [reply["reason"] for reply in replies] == ["AUDIT_PROTOCOL"] * len(bodies)
    assert not read_records(log_dir)


async def test_a_writer_that_stops_reading_fails_every_waiting_append_closed(tmp_path: Path) -> None:
    # Far more bytes than the socket and the client's transport hold: some appends wait to be
    # sent at all, the rest for an acknowledgement; each must fail within the timeout.
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    bulky = {"names": ["n" * 4000] * 10}  # about 40 kB an event
    with writer_process(sock, log_dir) as process:
        async with AuditClient(sock, timeout=1) as client:
            await client.append(make_event())
            with process.frozen():
                outcomes = await asyncio.gather(
                    *(client.append(make_event(details=bulky)) for _ in range(100)), return_exceptions=True
                )
            assert all(isinstance(outcome, AuditUnavailable) for outcome in outcomes), outcomes
            after = await client.append(make_event())  # the writer caught up; appends work again
            stats = await client.stats()
    assert after.seq == stats["seq"] and len(read_records(log_dir)) == stats["records"]


async def test_a_write_error_fails_closed_and_loses_no_acknowledged_record(
    tmp_path: Path, keys, public_key
) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    acknowledged = []
    with writer_process(sock, log_dir, "--signing-key", str(keys[0]), max_file_bytes=8192) as process:
        async with AuditClient(sock) as client:
            with pytest.raises(AuditUnavailable):
                for _ in range(100):  # ~850 bytes a record: the 8 KiB limit comes first
                    acknowledged.append((await client.append(make_event())).seq)
        assert process.popen.wait(timeout=10) == 1
        assert "audit_write_failed" in process.output()
    assert 0 < len(acknowledged) < 100
    mark = read_committed(log_dir)  # what the export may ship: the acknowledged, not the refused
    assert mark is not None and mark.seq == acknowledged[-1]

    with writer_process(sock, log_dir, "--signing-key", str(keys[0])) as process:
        async with AuditClient(sock) as client:
            after = await client.append(make_event())
    assert [r["seq"] for r in read_records(log_dir)][: len(acknowledged)] == acknowledged
    assert after.seq == len(read_records(log_dir))
    assert verify_log(log_dir, public_key).ok


async def test_a_batch_the_disk_cuts_short_is_refused_and_none_of_it_stays_in_the_log(tmp_path: Path) -> None:
    """The reviewer's burst: 20 appends in one batch, one write the file size limit cuts short.
    Every one was refused, yet the batch's whole lines stayed and verified (and the gateway's
    refusal records could not follow: the writer had stopped)."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, max_file_bytes=6000) as process:
        async with AuditClient(sock, timeout=10) as client:
            await client.append(make_event(session_id="before"))  # connected: the burst is one write
            burst = [make_event(session_id=f"burst-{number}") for number in range(20)]
            outcomes = await asyncio.gather(
                *(client.append(event) for event in burst), return_exceptions=True
            )
        assert process.popen.wait(timeout=10) == 1
    refused = {
        e["session_id"] for e, o in zip(burst, outcomes, strict=True) if isinstance(o, AuditUnavailable)
    }
    acknowledged = {
        e["session_id"] for e, o in zip(burst, outcomes, strict=True) if not isinstance(o, Exception)
    }
    assert refused and len(refused) + len(acknowledged) == len(burst), outcomes
    assert verify_log(log_dir).ok  # nothing torn is left either
    with writer_process(sock, log_dir) as restarted:
        pass
    assert "audit_torn_tail_removed" not in restarted.output()
    recorded = {record["event"]["session_id"] for record in read_records(log_dir)}
    assert recorded == {"before", *acknowledged}


@pytest.mark.parametrize(
    "body",
    [
        b"not json!!",
        # Past Python's 4,300-digit limit json.loads raises a plain ValueError: it reached
        # asyncio's fatal-error path (a traceback in the writer's log) instead of the refusal.
        b'{"id":1,"op":"append","event":{"x":' + b"9" * 5000 + b"}}",
    ],
)
async def test_a_broken_frame_closes_only_that_connection(tmp_path: Path, body: bytes) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir) as writer:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(sock))
            raw.sendall(struct.pack(">I", len(body)) + body)
            raw.settimeout(5)
            assert raw.recv(100) == b""  # the writer hung up
            raw2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        async with AuditClient(sock) as client:
            assert (await client.append(make_event())).seq == 1
        raw2.close()
        output = writer.output()
    assert "audit_frame_error" in output
    assert "Traceback" not in output and "Fatal error" not in output


async def test_the_committed_mark_names_each_acknowledged_batch_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    """Published before the answers, so an acknowledged record is always within it; on start,
    the end recovery kept, whatever the file held (a crash can leave it behind, or torn)."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        assert read_committed(log_dir) == Checkpoint(0, GENESIS)  # an empty log: nothing yet
        async with AuditClient(sock) as client:
            for _ in range(3):
                receipt = await client.append(make_event())
                assert read_committed(log_dir) == Checkpoint(receipt.seq, receipt.hash)
    third = Checkpoint(3, receipt.hash)
    assert read_committed(log_dir) == third  # kept after the stop

    (log_dir / COMMITTED_NAME).write_bytes(committed_line(1, GENESIS)[:30])  # torn, and behind
    with writer_process(sock, log_dir):
        assert read_committed(log_dir) == third  # before any append
        async with AuditClient(sock) as client:
            fourth = await client.append(make_event())
        assert read_committed(log_dir) == Checkpoint(4, fourth.hash)
    (log_dir / COMMITTED_NAME).unlink()  # as in a log of a writer from before the mark
    with writer_process(sock, log_dir):
        assert read_committed(log_dir) == Checkpoint(4, fourth.hash)
    assert len((log_dir / COMMITTED_NAME).read_bytes()) == len(committed_line(0, GENESIS))


async def test_torn_final_line_is_cut_off_and_reported_on_restart(tmp_path: Path, keys, public_key) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0])):
        async with AuditClient(sock) as client:
            for _ in range(3):
                last = await client.append(make_event())
    segment = list_segments(log_dir)[0][1]
    intact = segment.read_bytes()
    # What a crash in the middle of a write leaves behind.
    segment.write_bytes(intact + b'{"event":{"decision":"allow","event_id":"')
    torn = verify_log(log_dir, public_key)
    assert torn.record_problem is not None and torn.record_problem.kind == "torn_line"
    assert torn.record_problem.line == 4

    with writer_process(sock, log_dir, "--signing-key", str(keys[0])) as process:
        async with AuditClient(sock) as client:
            after = await client.append(make_event())
        output = process.output()
    assert "audit_torn_tail_removed" in output
    assert segment.read_bytes().startswith(intact)
    assert (after.seq, read_records(log_dir)[3]["prev"]) == (4, last.hash)
    assert verify_log(log_dir, public_key).ok


async def test_checkpoints_every_n_records_are_signed_over_the_head(tmp_path: Path, keys, public_key) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0]), "--checkpoint-every", "4"):
        async with AuditClient(sock) as client:
            receipts = [await client.append(make_event()) for _ in range(9)]
            stats = await client.stats()
    checkpoints = read_checkpoints(log_dir)
    by_seq = {r.seq: r.hash for r in receipts}
    # Sequential appends: one every 4 records, then the shutdown checkpoint for the rest.
    assert [c["seq"] for c in checkpoints] == [4, 8, 9]
    assert all(c["head"] == by_seq[c["seq"]] for c in checkpoints)
    assert stats["last_checkpoint_seq"] == 8
    assert verify_log(log_dir, public_key).last_verified.seq == 9


async def test_checkpoints_after_t_seconds_without_more_records(tmp_path: Path, keys) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    args = ("--signing-key", str(keys[0]), "--checkpoint-every", "1000", "--checkpoint-seconds", "0.2")
    with writer_process(sock, log_dir, *args):
        async with AuditClient(sock) as client:
            await client.append(make_event())
            for _ in range(100):  # polling with a deadline, not a timed assertion
                if (await client.stats())["last_checkpoint_seq"] == 1:
                    break
                await asyncio.sleep(0.05)
            assert (await client.stats())["last_checkpoint_seq"] == 1


async def test_segments_rotate_by_size_and_the_chain_runs_across_them(
    tmp_path: Path, public_key, keys
) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    args = ("--signing-key", str(keys[0]), "--max-segment-bytes", "3000", "--checkpoint-every", "5")
    with writer_process(sock, log_dir, *args):
        async with AuditClient(sock) as client:
            for _ in range(30):
                await client.append(make_event())
    segments = list_segments(log_dir)
    assert len(segments) > 3
    for first_seq, path in segments:
        assert json.loads(path.read_bytes().splitlines()[0])["seq"] == first_seq
    records = read_records(log_dir)
    assert [r["seq"] for r in records] == list(range(1, 31))
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    report = verify_log(log_dir, public_key)
    assert report.ok and report.records == 30

    segments[1][1].unlink()  # a whole middle file removed
    report = verify_log(log_dir, public_key)
    assert report.record_problem is not None and report.record_problem.kind == "sequence"
    assert report.record_problem.file == segments[2][1] and report.record_problem.line == 1


async def test_writer_refuses_a_log_shorter_than_its_last_checkpoint(tmp_path: Path, keys) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0])):
        async with AuditClient(sock) as client:
            for _ in range(5):
                await client.append(make_event())
    segment = list_segments(log_dir)[0][1]
    segment.write_bytes(b"".join(segment.read_bytes().splitlines(keepends=True)[:3]))
    status, output = run_to_exit(sock, log_dir, "--signing-key", str(keys[0]))
    assert status == 2
    assert "AUDIT_LOG_CORRUPT" in output and "records are missing" in output


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"model":"customer-profile"', b'"model":"\\ud800"'),
        (b'"latency_ms":1.25', b'"latency_ms":1e400'),
        (b'"latency_ms":1.25', b'"latency_ms":' + b"9" * 5000),  # past the digit limit: ValueError
    ],
)
async def test_writer_refuses_a_last_record_no_record_can_hold(
    tmp_path: Path, old: bytes, new: bytes
) -> None:
    """A hand-edited last line with a lone surrogate or a number that parses to inf crashed
    startup recovery (and the export tail, which parses lines the same way) with a traceback."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        async with AuditClient(sock) as client:
            for _ in range(2):
                await client.append(make_event())
    segment = list_segments(log_dir)[0][1]
    content = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(content[0] + content[1].replace(old, new))
    line = segment.read_bytes().splitlines(keepends=True)[1]
    assert new in line and parse_record(line) is None
    status, output = run_to_exit(sock, log_dir)
    assert status == 2, output
    assert "AUDIT_LOG_CORRUPT" in output and "is not a valid record" in output
    assert "Traceback" not in output


async def test_writer_refuses_a_last_checkpoint_whose_seq_is_out_of_range(tmp_path: Path, keys) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0])):
        async with AuditClient(sock) as client:
            await client.append(make_event())
    checkpoints = log_dir / "checkpoints.jsonl"
    content = checkpoints.read_bytes()
    assert b'"seq":1,' in content
    checkpoints.write_bytes(content.replace(b'"seq":1,', b'"seq":1e400,'))
    status, output = run_to_exit(sock, log_dir, "--signing-key", str(keys[0]))
    assert status == 2, output
    assert "AUDIT_LOG_CORRUPT" in output and "does not parse" in output


async def test_one_writer_per_log_directory_and_per_socket(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        status, output = run_to_exit(tmp_path / "other.sock", log_dir)
        assert (status, "AUDIT_LOG_LOCKED" in output) == (2, True)
        status, output = run_to_exit(sock, tmp_path / "other-log")
        assert (status, "AUDIT_SOCKET_IN_USE" in output) == (2, True)
        async with AuditClient(sock) as client:
            assert (await client.append(make_event())).seq == 1  # the first writer is untouched


def test_bad_settings_and_keys_are_usage_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    status, output = run_to_exit(tmp_path / "w.sock", tmp_path / "log", "--signing-key", str(bad_key))
    assert (status, "AUDIT_KEY_INVALID" in output) == (2, True)
    status, output = run_to_exit(tmp_path / ("x" * 120 + ".sock"), tmp_path / "log")
    assert (status, "longer than 107 bytes" in output) == (2, True)


async def test_appends_from_several_connections_share_one_chain(tmp_path: Path, keys, public_key) -> None:
    # More than one connection: commits wait one turn of the writer's loop, so that every
    # connection's frames read in one wake-up join the batch.
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--signing-key", str(keys[0])):
        clients = [AuditClient(sock, timeout=10) for _ in range(3)]
        try:

            async def task(client: AuditClient) -> list[int]:
                return [(await client.append(make_event())).seq for _ in range(20)]

            seqs = await asyncio.gather(*(task(client) for client in clients for _ in range(4)))
        finally:
            for client in clients:
                await client.close()
    assert sorted(seq for batch in seqs for seq in batch) == list(range(1, 241))
    assert [r["seq"] for r in read_records(log_dir)] == list(range(1, 241))
    assert verify_log(log_dir, public_key).ok


async def test_an_earlier_deadline_queued_after_a_later_one_still_fails_on_time(tmp_path: Path) -> None:
    # The connection's one timer serves deadlines in the order they fall; a shorter timeout
    # set while a longer one waits gets a timer of its own, so it does not wait behind it.
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir) as process:
        async with AuditClient(sock, timeout=30) as client:
            await client.append(make_event())
            with process.frozen():
                patient = asyncio.ensure_future(client.append(make_event()))
                await asyncio.sleep(0)  # queued with the 30 s deadline
                client.timeout = 0.3
                with pytest.raises(AuditUnavailable, match=r"within 0\.3s"):
                    await client.append(make_event())
                assert not patient.done()  # its deadline has not come
            assert (await patient).seq == 2
            # The refused one was read after its deadline: not written (it was, before).
            assert (await client.append(make_event())).seq == 3


def delaying(sock: Path, in_flight: Callable[[], int], delay: float = 30, siblings: int = 1) -> AuditClient:
    """A client with a commit delay (long unless said: a test never waits it out by accident)."""
    return AuditClient(sock, timeout=60, commit_delay=delay, commit_siblings=siblings, in_flight=in_flight)


async def test_commit_delay_holds_records_until_every_call_in_flight_has_one(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    in_flight = [3]
    with writer_process(sock, log_dir):
        async with delaying(sock, lambda: in_flight[0], siblings=2) as client:
            await client.stats()  # connected
            first = asyncio.ensure_future(client.append(make_event()))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(client.append(make_event()))
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            assert read_records(log_dir) == [], "held: two records queued of the three calls in flight"
            third = await asyncio.wait_for(client.append(make_event()), 20)  # the group is full
            receipts = [await first, await second, third]
            stats = await client.stats()
    assert [receipt.seq for receipt in receipts] == [1, 2, 3]
    assert (stats["records"], stats["batches"], stats["fsyncs"], stats["largest_batch"]) == (3, 1, 1, 3)


async def test_a_lone_call_never_waits_and_a_call_that_does_not_wait_takes_the_held_along(
    tmp_path: Path,
) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    in_flight = [1]
    with writer_process(sock, log_dir):
        async with delaying(sock, lambda: in_flight[0]) as client:
            await asyncio.wait_for(client.append(make_event()), 20)  # no other call: written at once
            in_flight[0] = 4
            held = asyncio.ensure_future(client.append(make_event()))
            await asyncio.sleep(0.05)
            assert not held.done()
            in_flight[0] = 1
            await asyncio.wait_for(client.append(make_event()), 20)
            assert (await held).seq == 2
            stats = await client.stats()
    assert (stats["records"], stats["batches"], stats["largest_batch"]) == (3, 2, 2)


async def test_a_held_record_goes_when_the_commit_delay_is_over(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    loop = asyncio.get_running_loop()
    with writer_process(sock, log_dir):
        async with delaying(sock, lambda: 8, delay=0.2) as client:
            await client.stats()  # connected
            started = loop.time()
            receipts = [await asyncio.wait_for(client.append(make_event()), 20) for _ in range(2)]
            # Each waited its delay (a timer never fires early): two calls, each alone in its group.
            assert loop.time() - started >= 0.4 - 0.01
    assert [receipt.seq for receipt in receipts] == [1, 2]
    assert len(read_records(log_dir)) == 2


async def test_records_sent_and_awaiting_their_fsync_count_toward_the_group(tmp_path: Path) -> None:
    # Once every call in flight has a record queued or sent, waiting gains nothing: the queued
    # ones leave at once, not after the delay, while the sent ones still await their fsync.
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    in_flight = [2]
    with writer_process(sock, log_dir) as process:
        async with delaying(sock, lambda: in_flight[0]) as client:
            await client.stats()  # connected
            with process.frozen():
                first = [asyncio.ensure_future(client.append(make_event())) for _ in range(2)]
                await asyncio.sleep(0.05)  # sent (the group of two was full); unanswered while frozen
                in_flight[0] = 4
                second = [asyncio.ensure_future(client.append(make_event())) for _ in range(2)]
                await asyncio.sleep(0.05)
            receipts = await asyncio.wait_for(asyncio.gather(*first, *second), 20)
    assert sorted(receipt.seq for receipt in receipts) == [1, 2, 3, 4]


async def test_a_writer_gone_while_records_are_held_fails_them_closed(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir) as process:
        async with delaying(sock, lambda: 5) as client:
            await client.stats()  # connected
            held = asyncio.ensure_future(client.append(make_event()))
            await asyncio.sleep(0.05)
            assert not held.done()
            process.stop()
            with pytest.raises(AuditUnavailable):
                await asyncio.wait_for(held, 20)
    assert read_records(log_dir) == []


def test_the_commit_delay_is_at_most_half_the_deadline() -> None:
    with pytest.raises(ValueError, match="commit_delay"):
        AuditClient("/nonexistent.sock", timeout=1, commit_delay=0.6)
    assert AuditClient("/nonexistent.sock", commit_delay=0.5).commit_delay == 0.0, "no count of calls: off"


async def test_a_closed_client_refuses_rather_than_connecting_again(tmp_path: Path) -> None:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir):
        client = AuditClient(sock)
        await client.append(make_event())
        assert client.connected
        await client.close()
        with pytest.raises(AuditUnavailable, match="closed"):
            await client.append(make_event())
        assert not client.connected
    assert len(read_records(log_dir)) == 1


# -- hostile but well-framed requests --------------------------------------------------------


def exchange(sock: Path, bodies: list[bytes], replies: int) -> list[dict]:
    """Send ``bodies`` as frames in one write on a raw connection; the first ``replies`` replies."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(sock))
        raw.settimeout(5)
        raw.sendall(b"".join(struct.pack(">I", len(body)) + body for body in bodies))
        data, answers = b"", []
        while len(answers) < replies:
            while len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
                length = struct.unpack(">I", data[:4])[0]
                answers.append(json.loads(data[4 : 4 + length]))
                data = data[4 + length :]
            if len(answers) < replies:
                chunk = raw.recv(65536)
                assert chunk, f"the writer hung up after {answers}"
                data += chunk
    return answers


def append_body(request_id: str, event: dict | None = None) -> bytes:
    """An append request with ``request_id`` spelt as given (raw JSON text)."""
    event_text = json.dumps(event or make_event())
    return f'{{"id": {request_id}, "op": "append", "event": {event_text}}}'.encode()


async def test_a_request_id_that_is_not_a_plain_integer_is_refused_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    """``"id": 1e400`` parses to inf: its acknowledgement could not be encoded inside the
    commit, the failure path's refusal failed on the same id, and the writer stayed up
    answering every later append "shutting down". Ids are now checked before queuing."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    hostile = ["1e400", "-1e400", "1.5", '"7"', "true", "null", "-1", str(2**63), "[1]"]
    with writer_process(sock, log_dir) as process:
        for request_id in hostile:
            (reply,) = exchange(sock, [append_body(request_id)], 1)
            assert reply == {
                "id": None,
                "ok": False,
                "reason": "AUDIT_PROTOCOL",
                "message": f"request id must be an integer from 0 to {2**63 - 1}",
            }, request_id
        (reply,) = exchange(sock, [b'{"id": 1e400, "op": "stats"}'], 1)
        assert reply["reason"] == "AUDIT_PROTOCOL"
        (ok,) = exchange(sock, [append_body(str(2**63 - 1))], 1)
        assert ok["ok"] and ok["id"] == 2**63 - 1 and ok["seq"] == 1
        async with AuditClient(sock, timeout=2) as client:
            assert (await client.append(make_event())).seq == 2
            stats = await client.stats()
        assert process.popen.poll() is None
    assert stats["rejected"] == len(hostile) + 1
    assert [r["seq"] for r in read_records(log_dir)] == [1, 2]


async def test_a_lone_surrogate_refuses_only_its_own_frame_and_the_batch_is_written(tmp_path: Path) -> None:
    """A lone surrogate (JSON ``"\\ud800"``) in an event's text or keys has no UTF-8 form: it
    made the commit raise, which refused every request of its batch and stopped the writer."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    surrogate_value = append_body("2", make_event(model="x")).replace(b'"model": "x"', b'"model": "\\ud800"')
    surrogate_key = append_body("3", make_event(details={"k": 1})).replace(b'{"k": 1}', b'{"\\udfff": 1}')
    with writer_process(sock, log_dir) as process:
        frames = [append_body("1"), surrogate_value, surrogate_key, append_body("4")]
        replies = {reply["id"]: reply for reply in exchange(sock, frames, 4)}
        assert (replies[1]["ok"], replies[4]["ok"]) == (True, True)
        assert (replies[1]["seq"], replies[4]["seq"]) == (1, 2)
        assert replies[2]["reason"] == replies[3]["reason"] == "AUDIT_EVENT_INVALID"
        assert "event.model is not valid Unicode text" in replies[2]["message"]
        assert "event.details has a key that is not valid Unicode text" in replies[3]["message"]
        async with AuditClient(sock, timeout=2) as client:
            assert (await client.append(make_event())).seq == 3
        assert process.popen.poll() is None
    assert [r["seq"] for r in read_records(log_dir)] == [1, 2, 3]


class _Transport:
    """Enough of an ``asyncio.Transport`` to see what a connection was sent and whether it closed."""

    def __init__(self) -> None:
        self.sent, self.closed = b"", False

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True


async def test_a_failed_commit_stops_the_writer_even_when_a_refusal_cannot_be_encoded(tmp_path: Path) -> None:
    """The failure path once raised out of its own handler (the refusal of an id that cannot
    be encoded), so the writer never stopped: alive, and refusing every later append."""
    writer = AuditWriter(WriterSettings(socket_path=tmp_path / "w.sock", log_dir=tmp_path / "log"))
    writer._loop = asyncio.get_running_loop()
    writer._stopped = writer._loop.create_future()
    unencodable, fine = _Connection(writer), _Connection(writer)
    unencodable.transport, fine.transport = _Transport(), _Transport()  # type: ignore[assignment]
    # Past validation (as only a bug could get them there): the commit fails on the first.
    writer._pending = [
        (make_event(model="\ud800"), unencodable, float("inf")),
        (make_event(), fine, 7),
    ]
    writer._commit_pending()
    assert writer._stopped.done() and isinstance(writer._stopped.exception(), UnicodeEncodeError)
    assert writer.failed is writer._stopped.exception() and writer._pending == []
    assert unencodable.transport.closed and unencodable.transport.sent == b""  # type: ignore[union-attr]
    body = fine.transport.sent[4:]  # type: ignore[union-attr]
    assert json.loads(body) == {
        "id": 7,
        "ok": False,
        "reason": "AUDIT_WRITE_FAILED",
        "message": "the writer failed",
    }
