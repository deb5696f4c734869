"""A real gateway (in process, grpc.aio) in front of the real demo backend, with a real audit
writer process and the SessionRecorder in its record stage; then ``sessions replay``.

"No secrets at rest": after calls by personas without clearance for raw values, while the
backend sends every confidential and restricted value through the gateway, none of those
values is in the recordings (decoded, not just the base64 text) or in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner, Result

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import Subject, mint_dev_token
from labelgate.demo.data import customer
from labelgate.gateway.record import Recorders
from labelgate.gateway.server import Gateway
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs
from labelgate.recording import SessionRecorder
from labelgate.recording.cli import sessions_app
from labelgate.recording.entries import file_name, recording_key
from labelgate.recording.files import FileSessionStore
from tests.audit.conftest import writer_process
from tests.recording.conftest import gateway_settings
from tests.support.procs import REPO

IDS = list(range(1, 13))  # every kind of notes (ssn, card, email, iban, json, plain), twice
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}\d{10,30}\b")


def secrets_of(ids: list[int]) -> list[str]:
    """Every raw confidential or restricted value of the rows, including those inside notes."""
    found = []
    for i in ids:
        row = customer(i)
        found += [row.ssn, row.card_number, row.account_secret, *_IBAN.findall(row.notes)]
    return found


def leaked(data: bytes, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret.encode() in data]


def infer_request(ids: list[int], request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile", id=request_id)
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[len(ids)])
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(ids)], ids)], raw=True)
    return request


def key_of(sub: str, session: str) -> str:
    """The key a development-token caller's session is recorded under (the peer does not count
    for an authenticated caller)."""
    return recording_key(Subject.proven("jwt", sub, issuer="labelgate-dev"), "", session)


def metadata(sub: str, *groups: str, session: str) -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"Bearer {mint_dev_token(sub, list(groups), 300)}"),
        ("x-labelgate-session", session),
    )


def at_rest(directory: Path) -> bytes:
    """Every byte stored under a directory, plus every recorded message decoded from base64."""
    blobs = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blobs.append(data)
        for line in data.splitlines():
            entry = json.loads(line)
            for key in ("response", "request_message"):
                if isinstance(entry.get(key), dict):
                    blobs.append(base64.b64decode(entry[key]["base64"]))
    return b"\n".join(blobs)


def viewer(folder: Path, *groups: str) -> list[str]:
    """``--config`` (the repository's policy pack) and ``--token`` of a viewer in ``groups``."""
    config = folder / "viewer.yaml"
    config.write_text(
        json.dumps(
            {
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
                "masking": {"hash_key": "recording-test-hash-key"},
                "auth": {"jwt": {"trust_dev_key": True}},
            }
        )
    )
    return ["--config", str(config), "--token", mint_dev_token("ada", list(groups), 300)]


async def cli(*args: str) -> Result:
    """``labelgate sessions ...`` (it runs its own event loop, so not on this one)."""
    return await asyncio.to_thread(CliRunner().invoke, sessions_app, list(args), env={"COLUMNS": "220"})


@pytest.fixture
async def gateway(tmp_path: Path, demo_backend: str):
    sock, audit_dir = tmp_path / "audit.sock", tmp_path / "audit"
    settings = gateway_settings(demo_backend, audit={"socket": str(sock), "timeout_seconds": 5})
    recorder = SessionRecorder(FileSessionStore(tmp_path / "sessions"))
    with writer_process(sock, audit_dir):
        gw = Gateway(settings)
        # After the audit recorder: only what was released (durably audited) is recorded.
        gw.pipeline.recorder = Recorders(gw.pipeline.recorder, recorder)
        await gw.start()
        try:
            yield f"127.0.0.1:{gw.port}", recorder
        finally:
            await gw.stop(0)
            await recorder.close()


async def test_calls_are_recorded_as_delivered_replayed_and_hold_no_secrets(
    gateway, tmp_path: Path, demo_backend: str
) -> None:
    target, recorder = gateway
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        nora = await stub.ModelInfer(
            infer_request(IDS), metadata=metadata("nora", session="s-nora"), timeout=10
        )
        ana = await stub.ModelInfer(infer_request(IDS), metadata=metadata("ana", "analysts", session="s-ana"))
        with pytest.raises(grpc.aio.AioRpcError) as held:
            await stub.ModelInfer(
                infer_request(IDS), metadata=metadata("bea", "break-glass", session="s-ana")
            )
        stream = stub.ModelStreamInfer(metadata=metadata("ana", "analysts", session="s-stream"))
        for number, ids in enumerate(([1, 2], [5])):
            await stream.write(infer_request(ids, f"m{number}"))
        streamed = [await stream.read() for _ in range(2)]
        await stream.done_writing()
        # Ended by the gateway, not left: a caller leaving a stream is recorded too.
        assert await stream.code() == grpc.StatusCode.OK
    await recorder.flush()
    assert held.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert recorder.counts == {"stored": 3 + 4}

    store = recorder.store
    nora_entries = await store.entries(key_of("nora", "s-nora"))
    ana_entries = await store.entries(key_of("ana", "s-ana"))
    # bea named ana's session: her call is recorded under her own key, never appended to ana's.
    bea_entries = await store.entries(key_of("bea", "s-ana"))
    assert key_of("bea", "s-ana") != key_of("ana", "s-ana")
    # The response exactly as delivered: the same bytes the client received.
    assert base64.b64decode(nora_entries[0]["response"]["base64"]) == nora.SerializeToString()
    assert base64.b64decode(ana_entries[0]["response"]["base64"]) == ana.SerializeToString()
    assert [e["decision"]["outcome"] for e in ana_entries] == ["mask"]
    assert {e["subject"]["id"] for e in ana_entries} == {"jwt:labelgate-dev#ana"}
    assert [e["decision"]["outcome"] for e in bea_entries] == ["approval_required"]
    assert bea_entries[0]["response"] is None and bea_entries[0]["upstream_status"] is None
    assert bea_entries[0]["subject"]["id"] == "jwt:labelgate-dev#bea"
    assert [e["client_session_id"] for e in ana_entries + bea_entries] == ["s-ana", "s-ana"]
    stream_entries = await store.entries(key_of("ana", "s-stream"))
    delivered = [e["response"] is not None for e in stream_entries]
    # Two admitted requests (no response) and two released replies. The pump admits request 2
    # while reply 1 may already be released, so they interleave; a reply never precedes its request.
    assert sorted(delivered) == [False, False, True, True]
    assert all(delivered[:i].count(False) > delivered[:i].count(True) for i, d in enumerate(delivered) if d)
    delivered_stream = {e["request_id"] for e in stream_entries}
    assert len(delivered_stream) == 1  # one stream, one request id, every message recorded
    assert {base64.b64decode(e["response"]["base64"]) for e in stream_entries if e["response"]} == {
        reply.infer_response.SerializeToString() for reply in streamed
    }

    # Replay: the timeline, each response as the viewer's replay decision shows it; an auditor
    # who is also an analyst sees what ana (an analyst) was delivered.
    directory = str(tmp_path / "sessions")
    auditor = viewer(tmp_path, "auditors", "analysts")
    ambiguous = await cli("replay", "s-ana", "--dir", directory, *auditor)  # two subjects, two recordings
    assert ambiguous.exit_code == 1 and "no recorded session 's-ana'" in ambiguous.output
    replay = await cli("replay", key_of("ana", "s-ana"), "--dir", directory, *auditor)
    assert replay.exit_code == 0, replay.output
    partial_ssn = next(t for t in decode_outputs(ana) if t.name == "ssn").values[0].decode()
    assert partial_ssn.endswith(customer(1).ssn[-4:]) and partial_ssn != customer(1).ssn
    for expected in (
        "ModelInfer",
        "customer-profile",
        "MASK",
        "outputs.ssn",
        "masked: partial",
        partial_ssn,
        customer(1).name,  # internal, delivered to an analyst
    ):
        assert expected in replay.output, expected
    assert "APPROVAL_REQUIRED" not in replay.output  # bea's refused call is not in ana's session
    held_replay = await cli("replay", key_of("bea", "s-ana"), "--dir", directory, *auditor)
    assert held_replay.exit_code == 0, held_replay.output
    for expected in ("APPROVAL_REQUIRED", "response: none shown"):
        assert expected in held_replay.output, expected
    listed = await cli("list", "--dir", directory, "--json")
    assert {s["session_id"]: s["calls"] for s in json.loads(listed.output)} == {
        key_of("nora", "s-nora"): 1,
        key_of("ana", "s-ana"): 1,
        key_of("bea", "s-ana"): 1,
        key_of("ana", "s-stream"): 4,
    }
    shown = await cli("show", "s-str", "--dir", directory, *auditor)
    assert shown.exit_code == 0 and "s-stream" in shown.output and "ModelStreamInfer" in shown.output

    # No secrets at rest, while every one of them went through the gateway in flight.
    secrets = secrets_of(IDS)
    async with grpc.aio.insecure_channel(demo_backend) as channel:
        raw = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(IDS))
    assert sorted(leaked(raw.SerializeToString(), secrets)) == sorted(secrets)  # the scan can find them
    recordings = at_rest(tmp_path / "sessions")
    assert (tmp_path / "sessions" / file_name(key_of("nora", "s-nora"))).exists()
    assert customer(1).name.encode() in recordings  # decoded content is really scanned
    assert leaked(recordings, secrets) == []
    assert leaked(b"".join(p.read_bytes() for p in (tmp_path / "audit").iterdir()), secrets) == []
