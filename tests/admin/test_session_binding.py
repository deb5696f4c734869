"""Recordings are bound to their caller (issue 19, finding 8): a real gateway (in process) in
front of the real demo backend, recording to files; callers name sessions with
``x-labelgate-session`` as they like, and nobody lands in another subject's recording."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_inputs
from labelgate.recording.entries import KEY_DIGEST_CHARS
from tests.support.procs import REPO, free_port


def request() -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="customer-profile")
    message.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    encode_inputs(message, [Tensor("customer_ids", "INT64", [1], [1])], raw=True)
    return message


def metadata(sub: str, session: str) -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"Bearer {mint_dev_token(sub, ['analysts'], 300)}"),
        ("x-labelgate-session", session),
    )


@pytest.fixture
async def gateway(tmp_path: Path, demo_backend: str):
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": demo_backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "binding-test-hash-key"},
        auth={"jwt": {"trust_dev_key": True}},
        recording={"dir": str(tmp_path / "sessions"), "max_session_bytes": 64 * 1024},
    )
    gw = Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(0)


async def test_a_spoofed_session_id_lands_in_the_callers_own_session(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            await stub.ModelInfer(request(), metadata=metadata("nora", "s-nora"), timeout=10)
        assert gateway.sessions is not None
        await gateway.sessions.flush()
        store = gateway.sessions.store
        (nora_key,) = [info.session_id for info in await store.sessions()]
        # mallory names nora's session, and then nora's recording key itself, many times over
        for spoof in ("s-nora", nora_key) * 3:
            await stub.ModelInfer(request(), metadata=metadata("mallory", spoof), timeout=10)
    await gateway.sessions.flush()

    sessions = {info.session_id: info for info in await store.sessions()}
    assert sessions[nora_key].calls == 2  # untouched: nothing of mallory's was appended
    nora = await store.entries(nora_key)
    assert {entry["subject"]["id"] for entry in nora} == {nora[0]["subject"]["id"]}
    assert "nora" in nora[0]["subject"]["id"]
    others = [key for key in sessions if key != nora_key]
    assert len(others) == 2  # mallory's own two sessions, one per name she sent
    for key in others:
        entries = await store.entries(key)
        assert len(entries) == 3 and all("mallory" in e["subject"]["id"] for e in entries)
        assert entries[0]["client_session_id"] in ("s-nora", nora_key)
        session, _, digest = key.rpartition("~")
        assert session == entries[0]["client_session_id"] and len(digest) == KEY_DIGEST_CHARS
    assert nora_key.startswith("s-nora~")
