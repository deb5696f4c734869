"""`--workers N`: N processes serve one port (SO_REUSEPORT), and stopping the parent stops them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psutil
import yaml

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from tests.support.procs import REPO, free_port, labelgate_command, running, wait_until


def test_workers_share_the_port_and_stop_together(tmp_path: Path, demo_backend: str) -> None:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": None,
        "upstream": {"address": demo_backend},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "workers-test-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(tmp_path / "gateway.yaml"), "--workers", "2")
    metadata = (("authorization", f"Bearer {mint_dev_token('ann', ['analysts'], 300)}"),)

    async def calls() -> set[str]:
        answers = set()
        for _ in range(12):  # a new connection each time, so the kernel spreads them
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                reply = await stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=metadata, timeout=10)
                answers.add(reply.name)
        return answers

    with running(command, tmp_path / "gateway.log", port=port) as process:
        parent = psutil.Process(process.popen.pid)
        wait_until(lambda: len(_workers(parent)) == 2, 30, "two worker processes")
        workers = _workers(parent)
        wait_until(lambda: all(_listens(w, port) for w in workers), 30, "both workers listening")
        assert asyncio.run(calls()) == {"labelgate-demo-backend"}
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def _listens(process: psutil.Process, port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == "LISTEN" for c in process.net_connections())


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    # multiprocessing's spawn start method also runs a resource tracker child: not a worker.
    return [c for c in parent.children() if "resource_tracker" not in " ".join(c.cmdline())]


def test_workers_share_the_keys_a_single_process_would_make_up_for_itself(tmp_path: Path) -> None:
    # Each worker is a new process: keys it made alone would differ between workers (an inbox
    # sign-in refused by the next one, a held call's retry with another request digest).
    from labelgate.config import load_settings
    from labelgate.gateway.server import hash_key, worker_settings

    settings = load_settings(
        listen="127.0.0.1:1",
        admin_listen="127.0.0.1:2",
        upstream={"address": "127.0.0.1:3"},
        auth={"jwt": {"trust_dev_key": True}},
        workers=2,
    )
    shared = worker_settings(settings)
    assert shared.masking.hash_key is not None and shared.admin.session_key is not None
    assert hash_key(shared) == hash_key(shared), "every worker derives the same key"
    assert hash_key(settings) != hash_key(settings), "alone, each process makes its own"
    configured = load_settings(
        listen="127.0.0.1:1",
        upstream={"address": "127.0.0.1:3"},
        auth={"jwt": {"trust_dev_key": True}},
        masking={"hash_key": "configured-hash-key"},
        workers=2,
    )
    assert hash_key(worker_settings(configured)) == b"configured-hash-key"
