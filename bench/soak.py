"""The soak drill (`make soak`, `python -m bench.soak --duration SECONDS`): hours of operation
compressed into a bounded run on loopback, with faults on a fixed timeline.

The stack: the demo backend, the audit writer (signed checkpoints), a bundle server over a
copy of rego/, a gateway (embedded engine following that bundle server, approvals on SQLite,
durable audit) and the audit forwarder delivering to a local HTTP receiver. Load: mixed
personas and models on one gRPC channel, held calls approved and denied through the approvals
API, async approvals. On the timeline (fractions of the duration): the bundle server is
restarted (0.35), a policy edit is published (0.50), the forwarder's receiver is down for a
tenth of the run (0.60). The gateway's RSS and open fds (from /proc) and its event-loop lag
(`labelgate_event_loop_lag_seconds`) are sampled every few seconds.

The verdict fails when RSS or fds grow by more than 10% between the window after warm-up and
the last window, when any call ends other than its kind allows, when `labelgate audit verify`
is not intact, when a released response has no audit record, when the edit never reaches the
answers, or when the forwarder did not deliver every record once its receiver came back.
The figures are printed as JSON (and written to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.audit.checkpoints import generate_keypair
from labelgate.auth.devkeys import mint_dev_token
from labelgate.gateway.status import error_info
from labelgate.oip import tensors
from tests.bundle.helpers import READER_TOKEN, TOKEN, copy_source, write_atomically
from tests.support.procs import REPO, Process, free_port, labelgate_command, opa_binary, wait_until

GROWTH_LIMIT = 0.10
WARM_UP = 0.30  # growth is measured from the window after this share of the run
EDIT_MARKER = "[SOAK-EDIT]"
CUSTOMER, SENTIMENT = "customer-profile", "sentiment"
OWNER_GROUPS = ("data-owners",)


# --- the parts ---------------------------------------------------------------------------------


class Receiver:
    """The SIEM the forwarder delivers to: a local HTTP endpoint that can be taken down and
    brought back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.event_ids: set[str] = set()
        self.batches = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                batch = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with receiver._lock:
                    receiver.batches += 1
                    receiver.event_ids.update(document["event_id"] for document in batch)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> set[str]:
        with self._lock:
            return set(self.event_ids)


@dataclass
class Stack:
    folder: Path
    source: Path
    backend: Process
    writer: Process
    bundle: Process
    gateway: Process
    forwarder: Process
    receiver: Receiver
    grpc_address: str
    admin_url: str
    bundle_port: int
    log_dir: Path
    public_key: Path
    restarts: int = 0

    def processes(self) -> list[Process]:
        return [self.forwarder, self.gateway, self.bundle, self.writer, self.backend]


def _start(
    args: list[str], log: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Process:
    process = Process(args, log, env)
    if port is not None:
        process.wait_for_port(port, 60)
    return process


def start_bundle_server(folder: Path, source: Path, port: int, generation: int) -> Process:
    command = [sys.executable, "-m", "labelgate.bundle.cli", "bundle-server", "--source", str(source)]
    command += ["--listen", f"127.0.0.1:{port}", "--state-dir", str(folder / f"bundle-state-{generation}")]
    command += ["--opa", opa_binary()]
    env = {"LABELGATE_BUNDLE_TOKEN": TOKEN, "LABELGATE_BUNDLE_READER_TOKEN": READER_TOKEN}
    return _start(command, folder / f"bundle-server-{generation}.log", port=port, env=env)


def gateway_config(folder: Path, backend: str, bundle_url: str, socket: Path) -> tuple[Path, int, int]:
    port, admin_port = free_port(), free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "upstream": {"address": backend},
        "engine": "embedded",
        "policy": {"bundle_url": bundle_url, "bundle_token": TOKEN, "bundle_wait_seconds": 30},
        "masking": {"hash_key": "soak-hash-key-0123456789abcdef"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "audit": {"socket": str(socket)},
        "approvals": {"sqlite_file": str(folder / "approvals.db"), "hold_timeout_seconds": 60},
        "log_level": "warning",
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, admin_port


@contextlib.contextmanager
def running_stack(folder: Path) -> Iterator[Stack]:
    started: list[Process] = []
    stack: Stack | None = None
    receiver = Receiver()
    try:
        source = copy_source(folder / "source")
        backend_port = free_port()
        backend = _start(
            labelgate_command("demo-backend", "--listen", f"127.0.0.1:{backend_port}"),
            folder / "backend.log",
            port=backend_port,
        )
        started.append(backend)
        _, public_key, _ = generate_keypair(folder / "keys")
        socket, log_dir = folder / "audit.sock", folder / "audit"
        writer = Process(
            labelgate_command(
                "audit",
                "writer",
                "--socket",
                str(socket),
                "--log-dir",
                str(log_dir),
                "--signing-key",
                str(folder / "keys" / "audit-signing.key"),
                "--checkpoint-seconds",
                "1",
            ),
            folder / "audit-writer.log",
        )
        started.append(writer)
        writer.wait_for_socket(socket, 30)
        bundle_port = free_port()
        bundle = start_bundle_server(folder, source, bundle_port, 0)
        started.append(bundle)
        config, port, admin_port = gateway_config(
            folder, f"127.0.0.1:{backend_port}", f"http://127.0.0.1:{bundle_port}", socket
        )
        gateway = _start(
            labelgate_command("serve", "--config", str(config)), folder / "gateway.log", port=port
        )
        started.append(gateway)
        admin_url = f"http://127.0.0.1:{admin_port}"
        wait_until(lambda: _ready(admin_url), 60, "the gateway's /readyz")
        receiver.up()
        forwarder = Process(
            labelgate_command(
                "audit",
                "forwarder",
                "--log-dir",
                str(log_dir),
                "--state-dir",
                str(folder / "forwarder"),
                "--http",
                receiver.url,
                "--poll-seconds",
                "0.2",
                "--retry-max-seconds",
                "2",
                "--timeout-seconds",
                "2",
            ),
            folder / "forwarder.log",
        )
        started.append(forwarder)
        stack = Stack(
            folder,
            source,
            backend,
            writer,
            bundle,
            gateway,
            forwarder,
            receiver,
            f"127.0.0.1:{port}",
            admin_url,
            bundle_port,
            log_dir,
            public_key,
        )
        yield stack
    finally:
        # The stack's own list: the bundle server may have been replaced mid-run.
        for process in stack.processes() if stack is not None else reversed(started):
            process.stop()
        receiver.down()


def _ready(admin_url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{admin_url}/readyz", timeout=2).status_code == 200
    return False


# --- the calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str
    code: str
    reason: str
    session: str
    seconds: float
    outputs: dict[str, list[Any]] = field(default_factory=dict)


def infer_request(model: str, outputs: tuple[str, ...] = ()) -> pb.ModelInferRequest:
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
    for name in outputs:
        request.outputs.add().name = name
    return request


_TOKENS: dict[tuple[str, tuple[str, ...]], tuple[str, float]] = {}
TOKEN_TTL = 900


def token_of(sub: str, groups: tuple[str, ...]) -> str:
    """A token per person, reused until it nears expiry, as real clients do (a new token per
    call would only measure how the gateway's bounded verified-token memo fills)."""
    token, minted = _TOKENS.get((sub, groups), ("", 0.0))
    if time.monotonic() - minted > TOKEN_TTL / 2:
        token, minted = mint_dev_token(sub, list(groups), TOKEN_TTL), time.monotonic()
        _TOKENS[(sub, groups)] = (token, minted)
    return token


class Caller:
    """Calls through one shared channel; every call names a session of its own, so its audit
    record can be found by it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = pb_grpc.GRPCInferenceServiceStub(channel)

    async def infer(
        self,
        kind: str,
        sub: str,
        groups: tuple[str, ...],
        model: str,
        *,
        outputs: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        deadline: float = 30,
    ) -> tuple[Result, dict[str, str]]:
        session = f"soak-{uuid.uuid4().hex}"
        metadata = [
            ("authorization", f"Bearer {token_of(sub, groups)}"),
            ("x-labelgate-session", session),
            *(headers or {}).items(),
        ]
        started = time.monotonic()
        try:
            response = await self.stub.ModelInfer(
                infer_request(model, outputs), metadata=metadata, timeout=deadline
            )
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            result = Result(
                kind, error.code().name, info.reason if info else "", session, time.monotonic() - started
            )
            return result, dict(info.metadata) if info else {}
        values = {t.name: list(t.values) for t in tensors.decode_outputs(response)}
        return Result(kind, "OK", "", session, time.monotonic() - started, values), {}


class Approvals:
    """The approvals API, as a data owner."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {token_of('olivia', OWNER_GROUPS)}"}

    async def pending_of(self, sub: str, wait: float = 30) -> str:
        wanted = f"jwt:labelgate-dev#{sub}"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            page = await self.client.get("/api/v1/approvals", headers=self._headers())
            for item in page.json().get("items", []) if page.status_code == 200 else []:
                if item["requester"] == wanted:
                    return str(item["id"])
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no pending approval by {sub}")

    async def vote(self, approval_id: str, verdict: str) -> int:
        reason = {"approve": "soak: approved", "deny": "soak: denied"}[verdict]
        answer = await self.client.post(
            f"/api/v1/approvals/{approval_id}/{verdict}", headers=self._headers(), json={"reason": reason}
        )
        return answer.status_code


# What each kind of call may end with: anything else fails the soak.
EXPECTED: dict[str, set[str]] = {
    "no-group/customer": {"OK"},
    "analyst/customer": {"OK"},
    "analyst/sentiment": {"OK"},
    "no-group/restricted-by-name": {"PERMISSION_DENIED"},
    "steward/held-approved": {"OK"},
    "steward/held-denied": {"PERMISSION_DENIED"},
    "steward/async-approved": {"OK"},
}
WEIGHTS = {
    "no-group/customer": 6,
    "analyst/customer": 6,
    "analyst/sentiment": 4,
    "no-group/restricted-by-name": 2,
    "steward/held-approved": 1,
    "steward/held-denied": 1,
    "steward/async-approved": 1,
}


async def one_call(kind: str, caller: Caller, approvals: Approvals) -> list[Result]:
    """One call of ``kind``; held and async kinds return every call they made."""
    if kind == "no-group/customer":
        return [(await caller.infer(kind, "nora", (), CUSTOMER))[0]]
    if kind == "analyst/customer":
        return [(await caller.infer(kind, "ann", ("analysts",), CUSTOMER))[0]]
    if kind == "analyst/sentiment":
        return [(await caller.infer(kind, "ann", ("analysts",), SENTIMENT))[0]]
    if kind == "no-group/restricted-by-name":
        return [(await caller.infer(kind, "nora", (), CUSTOMER, outputs=("account_secret",)))[0]]
    steward = f"steward-{uuid.uuid4().hex[:10]}"  # grants are per subject: a new one asks anew
    groups = ("data-stewards",)
    if kind == "steward/async-approved":
        first, info = await caller.infer(
            kind + ":ask", steward, groups, CUSTOMER, headers={"x-labelgate-approval": "async"}
        )
        if first.code != "FAILED_PRECONDITION" or "approval_id" not in info:
            return [first]
        await approvals.vote(info["approval_id"], "approve")
        again, _ = await caller.infer(
            kind, steward, groups, CUSTOMER, headers={"x-labelgate-approval-id": info["approval_id"]}
        )
        return [first, again]
    held = asyncio.ensure_future(caller.infer(kind, steward, groups, CUSTOMER, deadline=60))
    verdict = "approve" if kind == "steward/held-approved" else "deny"
    with contextlib.suppress(TimeoutError):  # the held call's own outcome tells what went wrong
        await approvals.vote(await approvals.pending_of(steward), verdict)
    return [(await held)[0]]


EXPECTED["steward/async-approved:ask"] = {"FAILED_PRECONDITION"}


# --- sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    rss_kib: int
    fds: int
    loop_lag_s: float | None


def sample(pid: int, admin_url: str, at: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    lag = None
    with contextlib.suppress(httpx.HTTPError, ValueError):
        for line in httpx.get(f"{admin_url}/metrics", timeout=5).text.splitlines():
            if line.startswith("labelgate_event_loop_lag_seconds "):
                lag = float(line.split()[1])
    return Sample(at, rss, fds, lag)


def growth(samples: list[Sample], duration: float, value: Callable[[Sample], float]) -> dict[str, float]:
    """Median of the window after warm-up against the median of the last window."""
    window = max(duration * 0.10, 3 * (samples[1].at - samples[0].at if len(samples) > 1 else 1))
    start = duration * WARM_UP
    after = [value(s) for s in samples if start <= s.at < start + window]
    last = [value(s) for s in samples if s.at >= samples[-1].at - window]
    baseline, final = statistics.median(after), statistics.median(last)
    return {"after_warm_up": baseline, "end": final, "growth": round(final / baseline - 1, 4)}


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    duration: float
    kinds: tuple[str, ...] = tuple(WEIGHTS)
    started: float = field(default_factory=time.monotonic)
    results: list[Result] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    edit_published_at: float | None = None
    edit_seen_at: float | None = None
    marker_before_edit: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, event: str, **details: Any) -> None:
        self.events.append({"at_s": round(self.now(), 1), "event": event, **details})
        print(f"[soak {self.now():6.1f}s] {event} {details or ''}", file=sys.stderr, flush=True)

    def record(self, results: list[Result]) -> None:
        for result in results:
            self.results.append(result)
            if result.kind == "no-group/customer" and result.code == "OK":
                names = [
                    value.decode() if isinstance(value, bytes) else str(value)
                    for value in result.outputs.get("name", [])
                ]
                if EDIT_MARKER in names:
                    if self.edit_published_at is None:
                        self.marker_before_edit += 1
                    elif self.edit_seen_at is None:
                        self.edit_seen_at = self.now()


async def load(run: Run, stack: Stack, workers: int, pause: float, seed: int) -> None:
    kinds = [kind for kind in WEIGHTS if kind in run.kinds]
    weights = [WEIGHTS[kind] for kind in kinds]
    async with (
        grpc.aio.insecure_channel(stack.grpc_address) as channel,
        # A fresh connection per request: a kept-alive one the listener closes as idle (its
        # keep-alive timeout) can race a new request and fail it in the driver, not the gateway.
        httpx.AsyncClient(
            base_url=stack.admin_url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client,
    ):
        caller, approvals = Caller(channel), Approvals(client)

        async def worker(n: int) -> None:
            chooser = random.Random(seed + n)  # noqa: S311 - a reproducible mix, not a secret
            while run.now() < run.duration:
                kind = chooser.choices(kinds, weights)[0]
                try:
                    run.record(await one_call(kind, caller, approvals))
                except (httpx.HTTPError, grpc.aio.AioRpcError, TimeoutError, ValueError) as error:
                    # The approvals API or the channel failed the driver: a failed call, not a crash.
                    run.record([Result(kind, "DRIVER_ERROR", type(error).__name__, "", 0.0)])
                await asyncio.sleep(pause)

        await asyncio.gather(*(worker(n) for n in range(workers)))


async def sampler(run: Run, stack: Stack, every: float) -> None:
    while run.now() < run.duration:
        run.samples.append(await asyncio.to_thread(sample, stack.gateway.pid, stack.admin_url, run.now()))
        await asyncio.sleep(every)


async def at(run: Run, fraction: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(max(0.0, run.duration * fraction - run.now()))
    await action()


async def restart_bundle_server(run: Run, stack: Stack) -> None:
    run.note("bundle_server_stopped")
    await asyncio.to_thread(stack.bundle.stop)
    await asyncio.sleep(max(2.0, run.duration / 40))
    stack.restarts += 1
    stack.bundle = await asyncio.to_thread(
        start_bundle_server, stack.folder, stack.source, stack.bundle_port, stack.restarts
    )
    run.note("bundle_server_started")


async def publish_edit(run: Run, stack: Stack) -> None:
    path = stack.source / "labelgate" / "tables" / "data.json"
    tables = json.loads(path.read_text())
    tables["labels"]["internal"]["default"]["mask"]["params"] = {"replacement": EDIT_MARKER}
    write_atomically(path, json.dumps(tables, indent=2))
    run.edit_published_at = run.now()
    run.note("policy_edit_published")


async def receiver_outage(run: Run, stack: Stack) -> None:
    stack.receiver.down()
    run.note("forwarder_receiver_down")
    await asyncio.sleep(max(5.0, run.duration / 10))
    stack.receiver.up()
    run.note("forwarder_receiver_up")


async def drive(run: Run, stack: Stack, workers: int, pause: float, every: float, seed: int) -> None:
    await asyncio.gather(
        load(run, stack, workers, pause, seed),
        sampler(run, stack, every),
        at(run, 0.35, lambda: restart_bundle_server(run, stack)),
        at(run, 0.50, lambda: publish_edit(run, stack)),
        at(run, 0.60, lambda: receiver_outage(run, stack)),
    )


# --- the verdict ---------------------------------------------------------------------------------


def audit_events(log_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)["event"]
        for path in sorted(log_dir.glob("audit-*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def verify_audit(stack: Stack) -> tuple[bool, str]:
    completed = subprocess.run(
        labelgate_command("audit", "verify", str(stack.log_dir), "--public-key", str(stack.public_key)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return completed.returncode == 0, (completed.stdout + completed.stderr).strip()[-400:]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def verdict(run: Run, stack: Stack) -> dict[str, Any]:
    failures: list[str] = []
    unexpected = [r for r in run.results if r.code not in EXPECTED[r.kind]]
    for result in unexpected[:10]:
        failures.append(f"unexpected outcome: {result.kind} ended {result.code} {result.reason}".strip())
    if len(unexpected) > 10:
        failures.append(f"... and {len(unexpected) - 10} more unexpected outcomes")

    events = audit_events(stack.log_dir)
    released = {e["session_id"] for e in events if e.get("decision") in ("allow", "mask")}
    missing = [r.session for r in run.results if r.code == "OK" and r.session not in released]
    if missing:
        failures.append(f"{len(missing)} released responses have no audit record (e.g. session {missing[0]})")

    def forwarded() -> bool:
        return {e["event_id"] for e in audit_events(stack.log_dir)} <= stack.receiver.received()

    with contextlib.suppress(TimeoutError):
        wait_until(forwarded, 60, "the forwarder to deliver every record")
    undelivered = len({e["event_id"] for e in audit_events(stack.log_dir)} - stack.receiver.received())
    if undelivered:
        failures.append(
            f"the forwarder did not deliver {undelivered} audit records after its receiver came back"
        )

    if run.marker_before_edit:
        failures.append(f"{run.marker_before_edit} answers showed the edit before it was published")
    if run.edit_seen_at is None and "no-group/customer" in run.kinds:
        failures.append("the published policy edit never reached the gateway's answers")

    figures: dict[str, Any] = {}
    if len(run.samples) >= 4:
        figures["rss_kib"] = growth(run.samples, run.duration, lambda s: s.rss_kib)
        figures["open_fds"] = growth(run.samples, run.duration, lambda s: s.fds)
        for name in ("rss_kib", "open_fds"):
            if figures[name]["growth"] > GROWTH_LIMIT:
                failures.append(
                    f"gateway {name} grew {figures[name]['growth']:.1%} after warm-up (limit 10%)"
                )
    else:
        failures.append(f"only {len(run.samples)} samples: the run is too short to judge growth")
    lags = [s.loop_lag_s for s in run.samples if s.loop_lag_s is not None]
    figures["event_loop_lag_ms"] = {
        "p50": round(1000 * percentile(lags, 0.5), 2),
        "max": round(1000 * max(lags, default=0.0), 2),
    }

    stack.gateway.stop()  # its last records are written: the log is complete before verifying
    stack.forwarder.stop()
    intact, report = verify_audit(stack)
    if not intact:
        failures.append(f"audit verify is not intact: {report}")

    latencies = [r.seconds * 1000 for r in run.results if r.kind in ("analyst/customer", "no-group/customer")]
    return {
        "verdict": "pass" if not failures else "fail",
        "failures": failures,
        "duration_s": run.duration,
        "calls": len(run.results),
        "calls_by_kind_and_code": {
            f"{k} {c}": n for (k, c), n in sorted(Counter((r.kind, r.code) for r in run.results).items())
        },
        "unary_latency_ms": {
            "p50": round(percentile(latencies, 0.5), 2),
            "p99": round(percentile(latencies, 0.99), 2),
        },
        "audit_records": len(events),
        "audit_verify": report.splitlines()[-1] if report else "",
        "forwarded_records": len(stack.receiver.received()),
        "policy_edit_to_answer_s": round(run.edit_seen_at - run.edit_published_at, 2)
        if run.edit_seen_at is not None and run.edit_published_at is not None
        else None,
        "samples": len(run.samples),
        **figures,
        # [seconds, RSS MiB, open fds, loop lag ms] of every sample, for a chart or a second look.
        "series": [
            [round(x.at, 1), round(x.rss_kib / 1024, 1), x.fds, round(1000 * (x.loop_lag_s or 0), 2)]
            for x in run.samples
        ],
        "timeline": run.events,
    }


def soak(
    duration: float,
    folder: Path,
    *,
    workers: int = 3,
    pause: float = 0.05,
    seed: int = 17,
    kinds: tuple[str, ...] = tuple(WEIGHTS),
) -> dict[str, Any]:
    os.environ.setdefault("LABELGATE_DEV_KEYS", str(REPO / "deploy" / "quickstart" / "dev-keys"))
    every = max(1.0, min(5.0, duration / 30))
    with running_stack(folder) as stack:
        run = Run(duration, kinds)
        run.note("load_started", workers=workers, sample_every_s=every)
        asyncio.run(drive(run, stack, workers, pause, every, seed))
        run.note("load_stopped")
        return verdict(run, stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--workers", type=int, default=3, help="concurrent callers")
    parser.add_argument(
        "--kinds", default=",".join(WEIGHTS), help="the mix, comma-separated (default: every kind)"
    )
    parser.add_argument("--out", type=Path, help="also write the figures (JSON) here")
    parser.add_argument("--dir", type=Path, help="where the stack keeps its files (default: a new temp dir)")
    args = parser.parse_args(argv)
    if not 30 <= args.duration <= 24 * 3600:
        parser.error("--duration must be between 30 seconds and 24 hours")
    if not 1 <= args.workers <= 32:
        parser.error("--workers must be between 1 and 32")
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    unknown = sorted(set(kinds) - set(WEIGHTS))
    if unknown or not kinds:
        parser.error(f"--kinds: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(WEIGHTS)}")
    import tempfile

    with contextlib.ExitStack() as cleanup:
        folder = args.dir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="labelgate-soak-"))
        )
        folder.mkdir(parents=True, exist_ok=True)
        figures = soak(args.duration, folder, workers=args.workers, kinds=kinds)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if figures["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
