"""The gateway writes a durable audit record for every call through a real audit-writer
process, releases nothing without one, and never writes a sensitive value."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.audit.verify import verify_log
from labelgate.auth import mint_dev_token
from labelgate.demo.data import customer
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_inputs
from labelgate.timestamps import parse_time
from tests.audit.conftest import open_gate, stalling_writer_process, writer_process
from tests.support.procs import REPO, Process, free_port, labelgate_command, port_open, running, wait_until

IDS = list(range(1, 13))


def infer_request(ids: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[len(ids)])
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(ids)], ids)], raw=True)
    return request


def metadata(sub: str, *groups: str, session: str | None = None) -> tuple[tuple[str, str], ...]:
    pairs = [("authorization", f"Bearer {mint_dev_token(sub, list(groups), 300)}")]
    if session:
        pairs.append(("x-labelgate-session", session))
    return tuple(pairs)


def secrets_of(ids: list[int]) -> list[str]:
    values = []
    for i in ids:
        row = customer(i)
        values += [row.ssn, row.card_number, row.account_secret]
    return values


@contextlib.contextmanager
def writer(tmp: Path) -> Iterator[tuple[Path, Process]]:
    socket, logs = tmp / "audit.sock", tmp / "audit"
    command = labelgate_command("audit-writer", "--socket", str(socket), "--log-dir", str(logs))
    with running(command, tmp / "writer.log") as process:
        wait_until(socket.exists, what="the audit socket")
        yield logs, process


@contextlib.contextmanager
def gateway(
    tmp: Path,
    backend: str,
    socket: Path,
    fail_open: bool = False,
    admin_port: int | None = None,
    commit_delay_ms: float = 0,
    audit_timeout: float = 1.0,
) -> Iterator[tuple[str, Process]]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}" if admin_port else None,
        "upstream": {"address": backend},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "audit-test-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "audit": {
            "socket": str(socket),
            "timeout_seconds": audit_timeout,
            "fail_open": fail_open,
            "commit_delay_ms": commit_delay_ms,
        },
    }
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    with running(
        labelgate_command("serve", "--config", str(path)), tmp / f"gateway-{port}.log", port=port
    ) as p:
        yield f"127.0.0.1:{port}", p


def records(logs: Path) -> list[dict]:
    """The events of the log's complete lines: polled while a writer appends, the last line
    may be half written (a line is complete with its newline; ``verify_log`` checks the rest)."""
    return [
        json.loads(line)["event"]
        for file in sorted(logs.glob("audit-*.jsonl"))
        for line in file.open()
        if line.endswith("\n")
    ]


async def infer(target: str, md: tuple, ids: list[int] = IDS) -> pb.ModelInferResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        return await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            infer_request(ids), metadata=md, timeout=10
        )


def test_every_call_has_a_durable_record_without_values(tmp_path: Path, demo_backend: str) -> None:
    with (
        writer(tmp_path) as (logs, _),
        gateway(tmp_path, demo_backend, tmp_path / "audit.sock") as (target, _),
    ):
        asyncio.run(infer(target, metadata("ann", "analysts", session="s-analyst")))
        asyncio.run(infer(target, metadata("alice", session="s-plain")))
        with pytest.raises(grpc.aio.AioRpcError):
            asyncio.run(infer(target, metadata("sam", "data-stewards", session="s-steward")))
        events = {event["session_id"]: event for event in records(logs)}
    assert events["s-analyst"]["decision"] == "mask"
    assert events["s-analyst"]["subject"] == {
        "id": "jwt:labelgate-dev#ann",
        "name": "ann",
        "groups": ["analysts"],
        "auth": "jwt",
    }
    assert {"path": "outputs.ssn", "strategy": "partial", "label": "confidential"} in events["s-analyst"][
        "masked"
    ]
    assert (
        events["s-analyst"]["upstream_status"] == "OK" and events["s-analyst"]["model"] == "customer-profile"
    )
    assert events["s-plain"]["decision"] == "mask"
    assert events["s-steward"]["decision"] == "approval_required"
    assert events["s-steward"]["upstream_status"] is None  # held before the query ran
    text = "".join(p.read_text() for p in logs.iterdir())
    leaked = [value for value in secrets_of(IDS) if value in text]
    assert leaked == []
    assert verify_log(logs).ok


def test_concurrent_calls_each_get_one_durable_record_through_the_commit_delay(
    tmp_path: Path, demo_backend: str
) -> None:
    # With other calls in flight a record waits (audit.commit_delay_ms, set here) for theirs:
    # every call must still be released with exactly its own record, none lost or doubled.
    calls = 24

    async def together(target: str) -> list[pb.ModelInferResponse]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            return await asyncio.gather(
                *(
                    stub.ModelInfer(
                        infer_request(IDS), metadata=metadata("ann", "analysts", session=f"s-{n}"), timeout=20
                    )
                    for n in range(calls)
                )
            )

    with (
        writer(tmp_path) as (logs, _),
        gateway(tmp_path, demo_backend, tmp_path / "audit.sock", commit_delay_ms=5) as (target, _),
    ):
        replies = asyncio.run(together(target))
        events = records(logs)
    assert len(replies) == calls
    assert sorted(event["session_id"] for event in events) == sorted(f"s-{n}" for n in range(calls))
    assert len({event["request_id"] for event in events}) == calls
    assert {event["decision"] for event in events} == {"mask"}
    text = "".join(p.read_text() for p in logs.iterdir())
    assert [value for value in secrets_of(IDS) if value in text] == []
    assert verify_log(logs).ok


def test_writer_unreachable_fails_closed_and_fail_open_is_explicit(tmp_path: Path, demo_backend: str) -> None:
    socket = tmp_path / "audit.sock"
    with writer(tmp_path) as (_, process):
        with gateway(tmp_path, demo_backend, socket) as (target, _):
            asyncio.run(infer(target, metadata("ann", "analysts")))
            process.signal(signal.SIGKILL)
            process.popen.wait(timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                asyncio.run(infer(target, metadata("ann", "analysts")))
        with gateway(tmp_path, demo_backend, socket, fail_open=True) as (target, _):
            response = asyncio.run(infer(target, metadata("ann", "analysts")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "AUDIT_UNAVAILABLE"
    assert not any(s.encode() in caught.value.details().encode() for s in secrets_of(IDS))
    assert len(response.outputs) == 9


def test_a_call_refused_behind_a_slow_audit_disk_is_last_recorded_as_refused(
    tmp_path: Path, demo_backend: str
) -> None:
    """The reviewer's slow fdatasync (strace), as a stall the test ends: the writer reads the
    call's record in time and acknowledges it after the gateway's 1 s deadline, so the call is
    refused. Its refusal record, sent after it with the same short deadline, was refused
    unwritten behind the stall (AUDIT_EXPIRED): the only record said "mask"."""
    socket, logs, gate = tmp_path / "audit.sock", tmp_path / "audit", tmp_path / "gate"
    with (
        stalling_writer_process(socket, logs, gate),
        gateway(tmp_path, demo_backend, socket) as (target, _),
    ):
        asyncio.run(infer(target, metadata("ann", "analysts", session="s-before")))
        os.mkfifo(gate)  # the next append stalls after its write
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(infer(target, metadata("ann", "analysts", session="s-slow")))
        time.sleep(2.0)  # past any deadline the refusal record could carry: order, not speed
        open_gate(gate)
        wait_until(lambda: len(session_records(logs, "s-slow")) == 2, what="the refusal's record")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(refused.value)
    assert info is not None and info.reason == "AUDIT_UNAVAILABLE"
    released, refusal = session_records(logs, "s-slow")
    assert released["decision"] == "mask"
    assert (refusal["decision"], refusal["reason"]) == ("deny", "AUDIT_UNAVAILABLE")
    assert verify_log(logs).ok


def test_a_caller_gone_while_the_release_is_made_durable_is_last_recorded_as_gone(
    tmp_path: Path, demo_backend: str
) -> None:
    """Review (tenth round): a caller's deadline or cancel falling while the release's record
    waited on the writer left that release ("mask", upstream OK) as the call's only record, and
    the caller got nothing. Its cancellation is recorded after the release now."""
    socket, logs, gate = tmp_path / "audit.sock", tmp_path / "audit", tmp_path / "gate"

    async def cancelled_once_written(session: str) -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                infer_request(IDS), metadata=metadata("ann", "analysts", session=session), timeout=10
            )
            # The release's record is in the log, its acknowledgement stalled: leave now.
            await asyncio.to_thread(
                wait_until, lambda: session_records(logs, session), what="the release's record"
            )
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call

    async def past_its_deadline(session: str, seconds: float) -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            # The stall outlasts the caller's deadline, which falls before the gateway's own
            # audit deadline (60 s): once the call reached its append, the handler is cancelled
            # mid-append.
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                infer_request(IDS), metadata=metadata("ann", "analysts", session=session), timeout=seconds
            )

    def deadline_fallen_mid_append() -> tuple[str, grpc.aio.AioRpcError]:
        """A call whose deadline fell while its release's record waited on the writer. A
        loaded machine may not reach the append before the deadline; that call's only record is
        its cancellation, and the next is given twice the time."""
        for attempt, seconds in enumerate((5, 10, 20, 40)):
            session = f"s-deadline-{attempt}"
            os.mkfifo(gate)
            with pytest.raises(grpc.aio.AioRpcError) as late:
                asyncio.run(past_its_deadline(session, seconds))
            wait_until(lambda session=session: session_records(logs, session), what="the call's first record")
            first = session_records(logs, session)[0]
            reached_append = first["decision"] != "error"
            if reached_append:
                # The caller's clock ran out; the gateway's deadline, set as the call reached it,
                # may fall a moment later. Until it has, the gateway would send the reply.
                after_gateways_deadline(first, seconds)
            open_gate(gate)
            if reached_append:
                try:
                    wait_until(
                        lambda session=session: len(session_records(logs, session)) == 2,
                        what="the deadline's record",
                    )
                except TimeoutError:
                    # Seen twice in CI under load, not yet explained: say which side stopped.
                    seen = [(r["decision"], r.get("reason")) for r in session_records(logs, session)]
                    raise AssertionError(
                        f"no record after the release: caller got {late.value.code()}, the "
                        f"writer {'still waits on' if gate.exists() else 'has passed'} the gate, "
                        f"records {seen}"
                    ) from None
                return session, late.value
            # As after the cancellation: the writer has looked for the gate once this is answered.
            asyncio.run(infer(target, metadata("ann", "analysts", session=f"s-retry-{attempt}")))
        raise AssertionError("no call reached its append within 40 s")

    with (
        stalling_writer_process(socket, logs, gate),
        gateway(tmp_path, demo_backend, socket, audit_timeout=60) as (target, _),
    ):
        asyncio.run(infer(target, metadata("ann", "analysts", session="s-before")))
        os.mkfifo(gate)
        asyncio.run(cancelled_once_written("s-cancel"))
        open_gate(gate)
        try:
            # A generous bound: the gateway's audit deadline here is 60 s, and a loaded CI host
            # once took longer than 20 s.
            wait_until(
                lambda: len(session_records(logs, "s-cancel")) == 2,
                timeout=60,
                what="the cancellation's record",
            )
        except TimeoutError:
            seen = [(r["decision"], r.get("reason")) for r in session_records(logs, "s-cancel")]
            raise AssertionError(
                f"no record after the cancelled release: the writer "
                f"{'still waits on' if gate.exists() else 'has passed'} the gate, records {seen}"
            ) from None
        # The writer has written that record but may not yet have looked for the gate after it:
        # a call answered in full now means it has, so the next gate stalls the next append.
        asyncio.run(infer(target, metadata("ann", "analysts", session="s-between")))
        deadline_session, late = deadline_fallen_mid_append()
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for session in ("s-cancel", deadline_session):
        released, gone = session_records(logs, session)
        assert (released["decision"], released["upstream_status"]) == ("mask", "OK")
        assert (gone["decision"], gone["reason"]) == ("error", "CancelledError")
    assert verify_log(logs).ok


def test_a_writer_killed_behind_a_slow_disk_leaves_the_release_and_the_gateway_says_so(
    tmp_path: Path, demo_backend: str
) -> None:
    """What remains (docs/RELIABILITY.md): the writer dies with the release written but not
    acknowledged, and the refusal sent after it never reaches a writer. The gateway logs the
    refusal's record as lost, the witness a reader of the log has."""
    socket, logs, gate = tmp_path / "audit.sock", tmp_path / "audit", tmp_path / "gate"
    with gateway(tmp_path, demo_backend, socket) as (target, gateway_process):
        with stalling_writer_process(socket, logs, gate) as stalled:
            asyncio.run(infer(target, metadata("ann", "analysts", session="s-before")))
            os.mkfifo(gate)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                asyncio.run(infer(target, metadata("ann", "analysts", session="s-killed")))
            stalled.signal(signal.SIGKILL)
            stalled.popen.wait(timeout=10)
        wait_until(lambda: "a refusal's record was lost" in gateway_process.output(), what="the lost record")
        with writer_process(socket, logs):
            asyncio.run(infer(target, metadata("ann", "analysts", session="s-after")))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [event["decision"] for event in session_records(logs, "s-killed")] == ["mask"]
    assert verify_log(logs).ok


def after_gateways_deadline(record: dict, seconds: float) -> None:
    """Return once the gateway's deadline for the call of ``record`` has passed: it was set
    (``DeadlineInterceptor``) before the call's record started counting its latency, to at most
    ``seconds`` from then; the record's time is cut to the millisecond."""
    started = parse_time(record["time"]).timestamp() + 0.001 - record["latency_ms"] / 1000
    time.sleep(max(0.0, started + seconds + 0.001 - time.time()))


def session_records(logs: Path, session: str) -> list[dict]:
    return [event for event in records(logs) if event.get("session_id") == session]


def test_kill_9_gateway_mid_run_loses_no_record_of_a_delivered_response(
    tmp_path: Path, demo_backend: str
) -> None:
    """Every response a client received has a durable record, even when the gateway dies."""
    delivered: list[str] = []

    enough = asyncio.Event()

    async def client(target: str, stop: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                session = uuid.uuid4().hex
                try:
                    await stub.ModelInfer(
                        infer_request([1, 2]), metadata=metadata("ann", "analysts", session=session)
                    )
                except grpc.aio.AioRpcError:
                    return
                delivered.append(session)
                if len(delivered) >= 150:
                    enough.set()

    async def run(target: str, gateway_process: Process) -> None:
        stop = asyncio.Event()
        clients = [asyncio.create_task(client(target, stop)) for _ in range(4)]
        await asyncio.wait_for(enough.wait(), timeout=60)
        gateway_process.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=20)

    with (
        writer(tmp_path) as (logs, _),
        gateway(tmp_path, demo_backend, tmp_path / "audit.sock") as (target, gw),
    ):
        asyncio.run(run(target, gw))
        recorded = {event["session_id"] for event in records(logs)}
    missing = [session for session in delivered if session not in recorded]
    assert len(delivered) >= 150
    assert missing == []
    assert verify_log(logs).ok


def test_approval_state_changes_join_the_audit_trail(tmp_path: Path, demo_backend: str) -> None:
    admin = free_port()
    owner = {"authorization": f"Bearer {mint_dev_token('olivia', ['data-owners'], 300)}"}
    api = f"http://127.0.0.1:{admin}/api/v1/approvals"

    async def held_then_granted(target: str) -> pb.ModelInferResponse:
        call = asyncio.ensure_future(infer(target, metadata("sam", "data-stewards", session="s-held")))
        async with httpx.AsyncClient(timeout=10) as http:
            pending: list = []
            while not pending:
                await asyncio.sleep(0.1)
                pending = (await http.get(api, headers=owner)).json()["items"]
            granted = await http.post(
                f"{api}/{pending[0]['id']}/approve", headers=owner, json={"reason": "ok"}
            )
            assert granted.status_code == 200, granted.text
        return await asyncio.wait_for(call, timeout=20)

    with (
        writer(tmp_path) as (logs, _),
        gateway(tmp_path, demo_backend, tmp_path / "audit.sock", admin_port=admin) as (
            target,
            _,
        ),
    ):
        wait_until(lambda: port_open(admin), what="the admin listener")
        response = asyncio.run(held_then_granted(target))
        wait_until(
            lambda: any(e["decision"] == "approval_granted" for e in records(logs)), what="the grant record"
        )
        events = records(logs)
    assert len(response.outputs) == 9
    by_decision = {event["decision"]: event for event in events}
    assert by_decision["approval_held"]["subject"]["id"] == "jwt:labelgate-dev#sam"
    assert by_decision["approval_granted"]["approval_id"] == by_decision["approval_held"]["approval_id"]
    assert any(
        e["approvers"] == ["jwt:labelgate-dev#olivia"] for e in events if e["decision"] == "approval_held"
    )
    released = [e for e in events if e.get("session_id") == "s-held" and e["decision"] in ("allow", "mask")]
    assert released, events
    # The release's own record (durable before delivery) names who approved it and the grant:
    # the approval records above go through a background sink that a writer restart can lose.
    (release,) = released
    assert release["approvers"] == ["jwt:labelgate-dev#olivia"]
    (grant_id,) = release["details"]["grant_ids"]  # both phases released under it: named once
    assert grant_id.startswith("grant-")
    assert release["approval_id"] == by_decision["approval_granted"]["approval_id"]
    assert verify_log(logs).ok
