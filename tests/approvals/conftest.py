"""Approval test fixtures: a real PostgreSQL, a real gateway stack with a webhook receiver, tokens.

``stack`` (session) is the demo backend plus one ``labelgate serve`` with approvals on a
SQLite file, webhooks (Slack and generic) to a local receiver, ``admins`` as admin group and
a catalog in which ``sentiment`` is confidential too (so a grant can be tried on another
model). Tests keep out of each other's way by using subject names of their own.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labelgate.auth.devkeys import mint_dev_token
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.procs import REPO, Process, free_port, labelgate_command, running, wait_until
from tests.support.triton import probe_one

CUSTOMER = "customer-profile"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def token(sub: str, *groups: str, ttl: int = 900) -> str:
    return mint_dev_token(sub, list(groups), ttl)


def dev_id(name: str) -> str:
    """The qualified subject id of a development-key token for ``name``."""
    return f"jwt:labelgate-dev#{name}"


def person(prefix: str) -> str:
    """A subject name no other test uses (grants are per subject)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}@example.com"


# -- a webhook receiver -------------------------------------------------------------------------
@dataclass
class Receiver:
    url: str = ""
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # path -> HTTP statuses to answer, in order, before answering 200
    failures: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for where, body in self.received if where == path]

    def wait_for(self, path: str, check: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict:
        found: list[dict] = []

        def arrived() -> bool:
            found[:] = [body for body in self.bodies(path) if check(body)]
            return bool(found)

        wait_until(arrived, timeout, f"a webhook on {path}")
        return found[0]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            with receiver.lock:
                planned = receiver.failures.get(self.path, [])
                status = planned.pop(0) if planned else 200
                receiver.received.append((self.path, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# -- a gateway with approvals ---------------------------------------------------------------------
def gateway_config(
    folder: Path,
    backend: str,
    approvals: dict[str, Any],
    *,
    name: str = "gateway",
    catalog: Path | None = None,
) -> tuple[Path, str, str]:
    """Write a gateway config; returns (path, gRPC address, admin base URL)."""
    port, admin_port = free_port(), free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "upstream": {"address": backend},
        "engine": "embedded",
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(catalog or REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "approvals-test-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "approvals": approvals,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, f"127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"


@contextlib.contextmanager
def running_gateway(config: Path, address: str, log: Path) -> Iterator[Process]:
    port = int(address.rpartition(":")[2])
    with running(labelgate_command("serve", "--config", str(config)), log, port=port) as process:
        admin = yaml.safe_load(config.read_text())["admin_listen"]
        wait_until(lambda: _healthy(f"http://{admin}"), 20, "the admin listener")
        yield process


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Api:
    """The approvals REST API of one gateway (or approvals server)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, bearer: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.get(f"{self.base}{path}", headers=headers, timeout=10)

    def post(self, path: str, bearer: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.post(f"{self.base}{path}", headers=headers, json=body, timeout=10)

    def approve(self, approval_id: str, bearer: str, reason: str = "") -> httpx.Response:
        return self.post(f"/api/v1/approvals/{approval_id}/approve", bearer, {"reason": reason})

    def deny(self, approval_id: str, bearer: str, reason: str) -> httpx.Response:
        return self.post(f"/api/v1/approvals/{approval_id}/deny", bearer, {"reason": reason})

    def show(self, approval_id: str, bearer: str) -> dict[str, Any]:
        response = self.get(f"/api/v1/approvals/{approval_id}", bearer)
        assert response.status_code == 200, response.text
        return response.json()

    def pending_of(self, requester: str, bearer: str, timeout: float = 20) -> dict[str, Any]:
        """Wait for a pending request by ``requester`` (a qualified id, or the name of a
        dev-token subject) that ``bearer`` may see."""
        found: list[dict] = []
        wanted = requester if ":" in requester.partition("#")[0] else dev_id(requester)

        def appeared() -> bool:
            items = self.get("/api/v1/approvals", bearer).json()["items"]
            found[:] = [item for item in items if item["requester"] == wanted]
            return bool(found)

        wait_until(appeared, timeout, f"a pending approval by {requester}")
        return found[0]


@dataclass
class Stack:
    grpc: str
    api: Api
    receiver: Receiver
    process: Process
    folder: Path
    config: Path


_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="held-call")


def infer(address: str, bearer: str, *, model: str = CUSTOMER, timeout: float = 30, **headers: str) -> dict:
    """One ModelInfer through the real tritonclient (in a child process)."""
    call: dict[str, Any] = {
        "op": "infer",
        "url": address,
        "model": model,
        "headers": {"authorization": f"Bearer {bearer}", **headers},
        "timeout": timeout,
    }
    if model == CUSTOMER:
        call["customer_ids"] = [1, 2]
    else:
        call["text"] = ["great service", "slow answer"]
    return probe_one(call, timeout=timeout + 30)


def held(address: str, bearer: str, **kwargs: Any) -> Future:
    """Start a call that the gateway will hold; ``.result()`` is its outcome."""
    return _pool.submit(infer, address, bearer, **kwargs)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("approvals-stack")
    catalog = json.loads((REPO / "rego/labelgate/catalog/data.json").read_text())
    for entry in catalog["entries"]:
        if entry.get("model") == "sentiment":
            entry["labels"] = ["confidential"]
    catalog_file = folder / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with (
        webhook_receiver() as receiver,
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
    ):
        approvals = {
            "sqlite_file": str(folder / "approvals.db"),
            "hold_timeout_seconds": 60,
            "admin_groups": ["admins"],
            "node_id": "stack-gateway",
            "webhooks": [
                {
                    "url": f"{receiver.url}/slack",
                    "format": "slack",
                    "events": ["requested", "granted", "denied"],
                },
                {
                    "url": f"{receiver.url}/generic",
                    "format": "generic",
                    "events": ["requested", "granted", "denied", "expired", "abandoned"],
                },
            ],
        }
        config, address, admin = gateway_config(folder, backend, approvals, catalog=catalog_file)
        with running_gateway(config, address, folder / "gateway.log") as process:
            yield Stack(address, Api(admin), receiver, process, folder, config)


@dataclass
class Answer:
    """What a caller got from a ModelInfer made with labelgate's own protos (not tritonclient)."""

    code: str
    message: str = ""
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, list[Any]] = field(default_factory=dict)


def grpc_infer(
    address: str, bearer: str, *, model: str = CUSTOMER, timeout: float = 15, **headers: str
) -> Answer:
    import grpc

    from labelgate._proto.inference import open_inference_pb2 as pb
    from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
    from labelgate.gateway.status import error_info
    from labelgate.oip import tensors

    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    if model == CUSTOMER:
        tensor.name, tensor.datatype = "customer_ids", "INT64"
        tensor.shape.append(2)
        tensor.contents.int64_contents.extend([1, 2])
    else:
        tensor.name, tensor.datatype = "text", "BYTES"
        tensor.shape.append(1)
        tensor.contents.bytes_contents.append(b"great service")
    metadata = [("authorization", f"Bearer {bearer}"), *headers.items()]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            response = stub.ModelInfer(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            info = error_info(error)
            return Answer(
                code=error.code().name,
                message=error.details() or "",
                reason=info.reason if info else "",
                metadata=dict(info.metadata) if info else {},
            )
    outputs = {t.name: list(t.values) for t in tensors.decode_outputs(response)}
    return Answer(code="OK", outputs=outputs)
