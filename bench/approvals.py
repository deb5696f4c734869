"""Scenario 6: time from an approver's grant to the released call.

A ``data-stewards`` caller asks ``customer-profile`` for its confidential fields; the
default policy holds the call until a ``data-owners`` member approves. For each hold (a
fresh subject each time: grants are per subject), the harness starts the call on gateway
A in a thread, waits until the request shows in the approvals REST API of gateway B,
approves it there (``POST /api/v1/approvals/{id}/approve``), and measures from just before
the approve request is sent to the moment the held call returns with its data:

- ``one_node``: A and B are the same gateway, approvals on a SQLite file;
- ``two_replicas``: two gateway processes sharing one real PostgreSQL (durability on);
  the grant is committed by B and wakes A through LISTEN/NOTIFY.

The baseline is an un-held call (an analyst, same request) through A: the work any
release must do anyway (policy, upstream, masking), so ``added`` is the approval path's
own cost.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc

from bench.context import Bench
from bench.figures import Figure, Scenario
from bench.procs import BenchError, enter_together
from bench.stack import DEV_KEYS, MODEL, SCALING_VARIANT, describe, request_bytes
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.oip.tensors import decode_outputs
from tests.support.postgres import running_postgres
from tests.support.procs import free_port

SUBJECT = SCALING_VARIANT  # embedded engine, cache on: what `make run` ships
HOLD_ROWS = 2
CALL_TIMEOUT_S = 30.0  # the held call's deadline: far beyond any release measured here
APPEAR_TIMEOUT_S = 20.0
POLL_S = 0.005  # how often the API is asked whether the held request has appeared
BASELINE_CALLS = 20
REQUESTER_GROUPS = ["data-stewards"]
APPROVER_GROUPS = ["data-owners"]
BASELINE_GROUPS = ["analysts"]
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


def run_approvals(bench: Bench) -> Scenario:
    plan = bench.plan
    scenario = Scenario(
        "approvals", f"Approvals: grant to released call ({MODEL}, {HOLD_ROWS} rows, {SUBJECT.title})"
    )
    setups: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        direct, _ = stack.enter_context(bench.stack.backend())
        sqlite = {"sqlite_file": str(bench.work_dir / "approvals.db"), "node_id": "bench-one-node"}
        # Processes start side by side: their start-up, not the holds, is most of this scenario.
        node, server = enter_together(
            stack,
            _gateway(bench, direct, "approvals-one-node", sqlite),
            running_postgres(durable=True, log_path=bench.work_dir / "postgres.log"),
        )
        setups["one_node"] = _measure(node, node, plan.approval_holds)
        shared = {"store": "postgres", "postgres_dsn": server.create_database()}
        a, b = enter_together(
            stack,
            _gateway(bench, direct, "approvals-replica-a", {**shared, "node_id": "replica-a"}),
            _gateway(bench, direct, "approvals-replica-b", {**shared, "node_id": "replica-b"}),
        )
        setups["two_replicas"] = _measure(a, b, plan.approval_holds)
        setups["two_replicas"]["postgres"] = f"PostgreSQL {server.version()}, fsync on, one database"
    titles = {
        "one_node": "one node (SQLite)",
        "two_replicas": "two replicas (PostgreSQL), held on A, granted via B",
    }
    for name, result in setups.items():
        samples, baseline = result["grant_to_release_ms"], result["unheld_call_ms"]
        for stat, value in (("", statistics.median(samples)), ("_p90", _p90(samples))):
            scenario.figures.append(
                Figure(
                    f"approvals.{name}.grant_to_release{stat}_ms",
                    f"grant -> released call {'p90' if stat else 'median'}, {titles[name]}",
                    value,
                    "ms",
                    f"un-held call {'p90' if stat else 'median'} through the holding gateway",
                    statistics.median(baseline) if not stat else _p90(baseline),
                    "lower",
                    show_added=True,
                )
            )
    scenario.details["config"] = {
        **describe(SUBJECT),
        "requester_groups": REQUESTER_GROUPS,
        "approver_groups": APPROVER_GROUPS,
        "holds_per_setup": plan.approval_holds,
        "measured": "from just before POST /api/v1/approvals/{id}/approve to the held call's answer",
    }
    scenario.details["setups"] = {
        name: {**result, "summary": _summary(result)} for name, result in setups.items()
    }
    return scenario


def _p90(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


def _summary(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in ("grant_to_release_ms", "approve_request_ms", "hold_visible_ms", "unheld_call_ms"):
        samples = result[key]
        out[f"{key}_median"] = round(statistics.median(samples), 3)
        out[f"{key}_p90"] = round(_p90(samples), 3)
    return out


class _NoDelayConnection(http.client.HTTPConnection):
    """Keep-alive HTTP without Nagle: a small request must not wait for the last reply's ACK."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Node:
    """One gateway with approvals: its gRPC address and its approvals REST API."""

    def __init__(self, grpc_address: str, admin: str) -> None:
        self.grpc_address = grpc_address
        self.admin = admin
        self.channel = grpc.insecure_channel(grpc_address, options=_CHANNEL_OPTIONS)
        self.infer = self.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        host, _, port = admin.rpartition(":")
        self._http = _NoDelayConnection(host, int(port), timeout=10)
        self._lock = threading.Lock()

    def rest(self, method: str, path: str, bearer: str, body: dict | None = None) -> tuple[int, Any]:
        """One call on a kept-alive connection (reconnects once if the server closed it)."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"authorization": f"Bearer {bearer}", "content-type": "application/json"}
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._http.request(method, path, body=payload, headers=headers)
                    response = self._http.getresponse()
                    text = response.read()
                    break
                except (http.client.HTTPException, ConnectionError):
                    self._http.close()
                    if attempt == 2:
                        raise
        return response.status, json.loads(text) if text else None

    def close(self) -> None:
        self._http.close()
        self.channel.close()


@contextlib.contextmanager
def _gateway(bench: Bench, upstream: str, name: str, approvals: dict[str, Any]) -> Iterator[Node]:
    admin = f"127.0.0.1:{free_port()}"
    extra = {"admin_listen": admin, "approvals": approvals}
    with bench.stack.gateway(SUBJECT, upstream, None, extra=extra, name=name) as (address, _):
        node = Node(address, admin)
        try:
            _wait_healthy(node)
            yield node
        finally:
            node.close()


def _wait_healthy(node: Node, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if node.rest("GET", "/healthz", "")[0] == 200:
                return
        time.sleep(0.05)
    raise BenchError("BENCH_PROCESS_TIMEOUT", f"admin listener {node.admin} not healthy in {timeout}s")


def _token(subject: str, groups: list[str]) -> str:
    from labelgate.auth.devkeys import mint_dev_token

    return mint_dev_token(subject, groups, 3600, DEV_KEYS)


def _call(node: Node, request: bytes, bearer: str) -> pb.ModelInferResponse:
    try:
        return node.infer(request, metadata=(("authorization", f"Bearer {bearer}"),), timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        raise BenchError(
            "BENCH_CALL_FAILED", f"ModelInfer on {node.grpc_address}: {error.code().name}: {error.details()}"
        ) from None


def _measure(holder: Node, approver: Node, holds: int) -> dict[str, Any]:
    request = request_bytes(HOLD_ROWS)
    analyst = _token(f"bench-analyst-{uuid.uuid4().hex[:8]}", BASELINE_GROUPS)
    owner = _token(f"bench-owner-{uuid.uuid4().hex[:8]}", APPROVER_GROUPS)
    _call(holder, request, analyst)  # warm: connection, policy, cache
    unheld = []
    for _ in range(BASELINE_CALLS):
        began = time.perf_counter()
        _call(holder, request, analyst)
        unheld.append((time.perf_counter() - began) * 1000)
    result: dict[str, Any] = {
        "grant_to_release_ms": [],
        "approve_request_ms": [],
        "hold_visible_ms": [],
        "unheld_call_ms": [round(x, 3) for x in unheld],
    }
    for _ in range(holds):
        grant, approve, visible = _one_hold(holder, approver, request, owner)
        result["grant_to_release_ms"].append(round(grant, 3))
        result["approve_request_ms"].append(round(approve, 3))
        result["hold_visible_ms"].append(round(visible, 3))
    return result


def _one_hold(holder: Node, approver: Node, request: bytes, owner: str) -> tuple[float, float, float]:
    """(grant -> release, the approve request's own round trip, call start -> request listed) in ms."""
    subject = f"bench-steward-{uuid.uuid4().hex[:10]}@example.com"
    bearer = _token(subject, REQUESTER_GROUPS)
    outcome: dict[str, Any] = {}

    def held_call() -> None:
        try:
            outcome["response"] = _call(holder, request, bearer)
        except BenchError as error:
            outcome["error"] = error
        outcome["released_at"] = time.perf_counter()  # first thing after the answer arrived

    thread = threading.Thread(target=held_call, name="held-call", daemon=True)
    started = time.perf_counter()
    thread.start()
    approval_id = _wait_listed(approver, subject, owner, outcome)
    path = f"/api/v1/approvals/{approval_id}/approve"
    granted_at = listed = time.perf_counter()
    status, body = approver.rest("POST", path, owner, {"reason": "bench"})
    approved = time.perf_counter()
    if status != 200 or body.get("state") != "granted":
        raise BenchError("BENCH_APPROVE_FAILED", f"approve {approval_id} answered {status}: {body}")
    thread.join(CALL_TIMEOUT_S + 5)
    if "error" in outcome:
        raise outcome["error"]
    if "response" not in outcome:
        raise BenchError("BENCH_CALL_FAILED", f"the held call of {subject} did not return after the grant")
    ssn = next((t.values for t in decode_outputs(outcome["response"]) if t.name == "ssn"), None)
    if not ssn or not all(ssn):
        raise BenchError("BENCH_VERIFY", f"the released call of {subject} has no confidential ssn: {ssn}")
    return (
        (outcome["released_at"] - granted_at) * 1000,
        (approved - granted_at) * 1000,
        (listed - started) * 1000,
    )


def _wait_listed(node: Node, requester: str, bearer: str, outcome: dict[str, Any]) -> str:
    deadline = time.monotonic() + APPEAR_TIMEOUT_S
    while time.monotonic() < deadline:
        if "error" in outcome or "response" in outcome:
            why = outcome.get("error") or "it was answered without a hold"
            raise BenchError("BENCH_VERIFY", f"the call of {requester} was not held: {why}")
        status, body = node.rest("GET", "/api/v1/approvals", bearer)
        if status != 200:
            raise BenchError("BENCH_APPROVALS_API", f"GET /api/v1/approvals answered {status}: {body}")
        for item in body["items"]:
            # Ids are qualified by how they were proven (jwt:<issuer>#<sub>); the dev token's sub
            # is the name after the '#'.
            if item["requester"].rpartition("#")[2] == requester:
                return str(item["id"])
        time.sleep(POLL_S)
    raise BenchError("BENCH_VERIFY", f"no pending approval by {requester} within {APPEAR_TIMEOUT_S}s")
