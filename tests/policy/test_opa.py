"""OpaEngine against real `opa run --server` processes (and a raw socket server for the
network failures OPA itself cannot produce on demand): every failure is a deny with its
own fail_reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from labelgate.errors import ConfigError
from labelgate.policy.cache import CachingEngine, memo_key
from labelgate.policy.engine import PolicyEngine
from labelgate.policy.opa import OpaEngine, revision_from_provenance
from tests.policy.conftest import VALID_RESULT, opa, result_rule, write_policy
from tests.support.pki import create_ca
from tests.support.procs import Process, free_port, opa_binary, running

INPUT = {"subject": {"id": "alice"}, "a": True, "b": True}

# Several packages in one OPA, each a way for a policy to answer; decision_path picks one.
MODULES = {
    "ok": result_rule(VALID_RESULT),
    "invalid": 'result := {"allow": "yes"}\n',
    # Two complete definitions with different values: OPA answers 500 (eval_conflict_error).
    "conflict": "result := 1 if input.a\n\nresult := 2 if input.b\n",
}
# Waits on a local server that never answers (``stalling_server``): slower than any budget
# however fast the machine, so the timeout tests cannot pass or fail by the machine's speed.
SLOW = """result := r if {{
\thttp.send({{"method": "get", "url": "http://127.0.0.1:{port}/", "timeout": "60s"}})
\tr := {result}
}}
"""


class StallingServer:
    """Accepts TCP connections and never answers, until closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture(scope="module")
def stalling_server() -> Iterator[StallingServer]:
    server = StallingServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, stalling_server: StallingServer) -> Path:
    root = tmp_path_factory.mktemp("policies")
    modules = {**MODULES, "slow": SLOW.format(port=stalling_server.port, result=json.dumps(VALID_RESULT))}
    for name, body in modules.items():
        module = root / name / "policy.rego"
        module.parent.mkdir(parents=True)
        module.write_text(f"package labelgate.{name}\n\n{body}")
    return root


@pytest.fixture(scope="module")
def logging_opa(policies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with opa(tmp_path_factory.mktemp("log"), policies, args=("--set", "decision_logs.console=true")) as (
        url,
        _,
    ):
        yield url


@pytest.fixture(scope="module")
def quiet_opa(policies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with opa(tmp_path_factory.mktemp("quiet"), policies) as (url, _):
        yield url


@pytest.fixture
async def engines() -> AsyncIterator[list[OpaEngine]]:
    """Engines a test creates; all closed afterwards."""
    created: list[OpaEngine] = []
    yield created
    for engine in created:
        await engine.close()


def make(engines: list[OpaEngine], url: str, **kwargs: Any) -> OpaEngine:
    engine = OpaEngine(url, **kwargs)
    engines.append(engine)
    return engine


async def test_a_real_decision_with_decision_id_and_revision(logging_opa: str, engines: list) -> None:
    engine = make(engines, logging_opa, decision_path="labelgate/ok/result")
    assert isinstance(engine, PolicyEngine)
    await engine.start()
    decision = await engine.decide(INPUT)
    assert decision.fail_reason is None
    assert decision.to_result() == VALID_RESULT
    assert decision.engine == "opa"
    assert decision.revision == "unbundled" == engine.revision
    assert decision.decision_id and len(decision.decision_id) >= 16
    assert await engine.healthy() is True


async def test_no_decision_id_without_decision_logging(quiet_opa: str, engines: list) -> None:
    decision = await make(engines, quiet_opa, decision_path="labelgate/ok/result").decide(INPUT)
    assert decision.fail_reason is None
    assert decision.decision_id is None


async def test_undefined_result_is_policy_undefined(logging_opa: str, engines: list) -> None:
    decision = await make(engines, logging_opa, decision_path="labelgate/nothing/result").decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_UNDEFINED")
    assert decision.decision_id  # OPA still logged (and named) the undefined decision


async def test_schema_violating_result_is_policy_result_invalid(logging_opa: str, engines: list) -> None:
    decision = await make(engines, logging_opa, decision_path="labelgate/invalid/result").decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_RESULT_INVALID")


async def test_opa_500_is_policy_error_500(logging_opa: str, engines: list) -> None:
    engine = make(engines, logging_opa, decision_path="labelgate/conflict/result")
    decision = await engine.decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_ERROR_500")
    # The same policy without the conflict answers normally (so the 500 came from evaluation).
    assert (await engine.decide({"a": True})).fail_reason == "POLICY_RESULT_INVALID"  # result 1: not a result


async def test_opa_slower_than_the_timeout_is_policy_timeout(quiet_opa: str, engines: list) -> None:
    engine = make(engines, quiet_opa, decision_path="labelgate/slow/result", timeout=0.1)
    decision = await engine.decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_TIMEOUT")


async def test_unused_port_is_policy_unavailable(engines: list) -> None:
    engine = make(engines, f"http://127.0.0.1:{free_port()}")
    await engine.start()  # OPA being down at start is not fatal
    decision = await engine.decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_UNAVAILABLE")
    assert await engine.healthy() is False


async def test_stopped_opa_is_policy_unavailable(policies: Path, tmp_path: Path, engines: list) -> None:
    with opa(tmp_path, policies) as (url, process):
        engine = make(engines, url, decision_path="labelgate/ok/result")
        assert (await engine.decide(INPUT)).fail_reason is None  # leaves a pooled keep-alive connection
        process.stop()
        decision = await engine.decide(INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_UNAVAILABLE")
    assert await engine.healthy() is False


async def test_failures_have_distinct_reasons(logging_opa: str, quiet_opa: str, engines: list) -> None:
    reasons = {
        (await make(engines, logging_opa, decision_path=path, timeout=0.1).decide(INPUT)).fail_reason
        for path in ("labelgate/nothing/result", "labelgate/invalid/result", "labelgate/conflict/result")
    }
    reasons.add(
        (
            await make(engines, quiet_opa, decision_path="labelgate/slow/result", timeout=0.1).decide(INPUT)
        ).fail_reason
    )
    reasons.add((await make(engines, f"http://127.0.0.1:{free_port()}").decide(INPUT)).fail_reason)
    assert reasons == {
        "POLICY_UNDEFINED",
        "POLICY_RESULT_INVALID",
        "POLICY_ERROR_500",
        "POLICY_TIMEOUT",
        "POLICY_UNAVAILABLE",
    }


async def test_explain_returns_opas_trace(logging_opa: str, engines: list) -> None:
    body = await make(engines, logging_opa, decision_path="labelgate/ok/result").explain(INPUT, "full")
    assert isinstance(body, dict)
    assert body["result"] == VALID_RESULT
    assert any("data.labelgate.ok.result" in line for line in body["explanation"])


# ------------------------------------------------------------------ revision from bundles


async def test_bundle_revision_comes_from_provenance(tmp_path: Path, engines: list) -> None:
    bundle = write_policy(tmp_path / "bundle", result_rule(VALID_RESULT))
    (bundle / ".manifest").write_text(json.dumps({"revision": "rev-42", "roots": ["labelgate"]}))
    with opa(tmp_path, bundle, args=("--bundle",)) as (url, _):
        engine = make(engines, url)
        await engine.start()
        assert engine.revision == "rev-42"  # learnt at start, before any decision
        decision = await engine.decide(INPUT)
    assert decision.fail_reason is None
    assert decision.revision == "rev-42"


def test_revision_from_provenance_shapes() -> None:
    assert revision_from_provenance({"version": "1.22.3"}) == "unbundled"
    assert revision_from_provenance({"bundles": {"main": {"revision": "abc"}}}) == "abc"
    two = {"bundles": {"z": {"revision": "2"}, "a": {"revision": "1"}}}
    assert revision_from_provenance(two) == "a=1;z=2"
    assert revision_from_provenance(None) == "unknown"


# ------------------------------------------------------------------ TLS and bearer token

AUTHZ = """package system.authz

default allow := false

allow if input.identity == "s3cret-token"
"""


async def test_tls_and_bearer_token(tmp_path: Path, engines: list) -> None:
    ca = create_ca()
    ca_file = ca.write(tmp_path / "pki")
    cert, key = ca.server_cert().write(tmp_path / "pki", "opa")
    policy = write_policy(tmp_path / "policy", result_rule(VALID_RESULT))
    (policy / "authz.rego").write_text(AUTHZ)
    args = (
        "--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
        "--authentication=token", "--authorization=basic",
    )  # fmt: skip
    with opa(tmp_path, policy, args=args, scheme="https") as (url, _):
        trusted_engine = make(engines, url, ca_file=ca_file, token="s3cret-token")
        trusted = await trusted_engine.decide(INPUT)
        trusted_healthy = await trusted_engine.healthy()  # /health?bundles with the token, too
        untrusted_healthy = await make(engines, url, ca_file=ca_file).healthy()
        no_token = await make(engines, url, ca_file=ca_file).decide(INPUT)
        wrong_token = await make(engines, url, ca_file=ca_file, token="guess").decide(INPUT)
        untrusted_ca = await make(engines, url, token="s3cret-token").decide(INPUT)
        unverified = await make(engines, url, verify=False, token="s3cret-token").decide(INPUT)
    assert trusted.fail_reason is None and trusted.allow is True
    assert (trusted_healthy, untrusted_healthy) == (True, False)
    assert no_token.fail_reason == "POLICY_ERROR_401"
    assert wrong_token.fail_reason == "POLICY_ERROR_401"
    assert untrusted_ca.fail_reason == "POLICY_UNAVAILABLE"  # certificate not trusted: no connection
    assert unverified.fail_reason is None


async def test_mutual_tls_client_certificate(tmp_path: Path, engines: list) -> None:
    ca = create_ca()
    ca_file = ca.write(tmp_path / "pki")
    cert, key = ca.server_cert().write(tmp_path / "pki", "opa")
    client_cert, client_key = ca.issue("labelgate-gateway").write(tmp_path / "pki", "client")
    policy = write_policy(tmp_path / "policy", result_rule(VALID_RESULT))
    args = (
        "--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
        "--tls-ca-cert-file", str(ca_file), "--authentication=tls",
    )  # fmt: skip
    with opa(tmp_path, policy, args=args, scheme="https") as (url, _):
        with_cert = await make(
            engines, url, ca_file=ca_file, client_cert=client_cert, client_key=client_key
        ).decide(INPUT)
        without_cert = await make(engines, url, ca_file=ca_file).decide(INPUT)
    assert with_cert.fail_reason is None
    assert (without_cert.allow, without_cert.fail_reason) == (
        False,
        "POLICY_UNAVAILABLE",
    )  # handshake refused


# ------------------------------------------------------------------ retry policy, raw sockets


class RawHttpServer:
    """A loopback HTTP/1.1 server scripted per connection: "close" (hang up on the request),
    "stall" (read it, never answer) or "answer" (reply with ``body``). Counts requests."""

    def __init__(self, script: list[str], body: dict[str, Any]) -> None:
        self.script = script
        self.body = json.dumps(body).encode()
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._stalled: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._stalled:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            action = self.script[self.requests] if self.requests < len(self.script) else "answer"
            self.requests += 1
            if action == "close":
                writer.close()
                return
            if action == "stall":
                self._stalled.append(writer)
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()


async def test_one_retry_after_a_dropped_connection(engines: list) -> None:
    async with RawHttpServer(["close"], {"result": VALID_RESULT}) as url:
        decision = await make(engines, url, retries=1).decide(INPUT)
    assert decision.fail_reason is None and decision.allow is True


async def test_no_retry_when_retries_is_zero(engines: list) -> None:
    raw = RawHttpServer(["close"], {"result": VALID_RESULT})
    async with raw as url:
        decision = await make(engines, url, retries=0).decide(INPUT)
    assert decision.fail_reason == "POLICY_UNAVAILABLE"
    assert raw.requests == 1


async def test_at_most_one_retry(engines: list) -> None:
    raw = RawHttpServer(["close", "close", "close"], {"result": VALID_RESULT})
    async with raw as url:
        decision = await make(engines, url, retries=1).decide(INPUT)
    assert decision.fail_reason == "POLICY_UNAVAILABLE"
    assert raw.requests == 2


async def test_a_timeout_is_not_retried(engines: list) -> None:
    raw = RawHttpServer(["stall", "stall"], {"result": VALID_RESULT})
    async with raw as url:
        decision = await make(engines, url, retries=1, timeout=0.1).decide(INPUT)
    assert decision.fail_reason == "POLICY_TIMEOUT"
    assert raw.requests == 1


async def test_a_reply_that_is_not_json_is_policy_error(engines: list) -> None:
    raw = RawHttpServer([], {})
    raw.body = b"<html>proxy error</html>"
    async with raw as url:
        decision = await make(engines, url).decide(INPUT)
    assert decision.fail_reason == "POLICY_ERROR"


def test_configuration_that_can_never_work_is_rejected() -> None:
    with pytest.raises(ConfigError):
        OpaEngine("127.0.0.1:8181")
    with pytest.raises(ConfigError):
        OpaEngine("http://127.0.0.1:8181", retries=2)
    with pytest.raises(ConfigError):
        OpaEngine("http://127.0.0.1:8181", timeout=0)
    with pytest.raises(ConfigError):
        OpaEngine("https://127.0.0.1:8181", ca_file=Path("/nonexistent/ca.pem"))


async def test_an_input_too_deep_to_encode_is_a_policy_error_deny(engines: list) -> None:
    """``decide`` never raises: an input nested past Python's recursion limit (json.dumps
    raises RecursionError) is denied like any other input that cannot be sent."""
    deep: Any = 1
    for _ in range(5000):
        deep = {"a": deep}
    decision = await make(engines, f"http://127.0.0.1:{free_port()}").decide({"subject": {"deep": deep}})
    assert decision.allow is False
    assert decision.fail_reason == "POLICY_ERROR"


# ------------------------------------------------------------------ revision order


class FakeOpa:
    """A loopback stand-in for OPA whose answers the test orders: each request is numbered as
    it arrives (1: start()'s revision probe) and answered with the revision ``active`` when it
    arrived, as OPA evaluates under the store it read at the start; a number in ``hold``
    waits until released, so its answer arrives after later ones (a connection pool, or
    replicas behind one URL). Under ``permissive`` revisions the result allows unmasked,
    under any other it masks ``outputs.ssn``."""

    def __init__(self, active: str, hold: set[int], permissive: frozenset[str] = frozenset()) -> None:
        self.active = active
        self.permissive = permissive
        self.arrived = {number: asyncio.Event() for number in hold}
        self.released = {number: asyncio.Event() for number in hold}
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/data/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        for released in self.released.values():
            released.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def release(self, number: int) -> None:
        await self.arrived[number].wait()
        self.released[number].set()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        number, revision = self.requests, self.active
        if number in self.arrived:
            self.arrived[number].set()
            await self.released[number].wait()
        ssn = {"path": "outputs.ssn", "strategy": "redact", "params": {}}
        masks = [] if revision in self.permissive else [ssn]
        return web.json_response(
            {
                "result": {**VALID_RESULT, "mask": masks, "cache_ttl_seconds": 60},
                "provenance": {"bundles": {"labelgate": {"revision": revision}}},
                "decision_id": f"d-{number}",
            }
        )


def subject(who: str) -> dict[str, Any]:
    return {"phase": "response", "subject": {"id": who}, "fields": []}


async def test_an_answer_from_before_a_revision_change_arriving_late_never_sets_it_back(
    engines: list,
) -> None:
    # Request 2 is evaluated under R1 and answered late, after request 3's answer under R2:
    # the revision stays R2 (the newest request wins, not the newest answer), and request 2's
    # caller is not handed R1's decision but asked again (request 4), under R2.
    fake = FakeOpa("R1", hold={2}, permissive=frozenset({"R1"}))
    async with fake as url:
        engine = make(engines, url, timeout=30)
        await engine.start()
        assert (engine.revision, engine.revision_generation) == ("R1", 1)
        late = asyncio.create_task(engine.decide(subject("alice")))
        await fake.arrived[2].wait()
        fake.active = "R2"
        newer = await engine.decide(subject("bob"))
        assert newer.revision == "R2" and [m.path for m in newer.masks] == ["outputs.ssn"]
        assert (engine.revision, engine.revision_generation) == ("R2", 2)
        await fake.release(2)
        decision = await late
    assert (engine.revision, engine.revision_generation) == ("R2", 2)
    assert decision.fail_reason is None and decision.revision == "R2"
    assert [m.path for m in decision.masks] == ["outputs.ssn"]
    assert decision.decision_id == "d-4" and fake.requests == 4


async def test_an_answer_asked_again_that_is_also_outdated_is_a_deny(engines: list) -> None:
    # Request 2 (under R1) is answered after request 3 moved the revision to R2; asked again,
    # request 4 (under R2) is answered after request 5 moved it on to R3: fail closed.
    fake = FakeOpa("R1", hold={2, 4}, permissive=frozenset({"R1", "R2"}))
    async with fake as url:
        engine = make(engines, url, timeout=30)
        await engine.start()
        late = asyncio.create_task(engine.decide(subject("alice")))
        await fake.arrived[2].wait()
        fake.active = "R2"
        assert (await engine.decide(subject("bob"))).revision == "R2"
        await fake.release(2)
        # Request 4 is the question asked again (an engine that took the late answer would
        # have returned instead: no wait on a request that never comes).
        asked_again = asyncio.ensure_future(fake.arrived[4].wait())
        await asyncio.wait({late, asked_again}, return_when=asyncio.FIRST_COMPLETED)
        asked_again.cancel()
        assert not late.done(), f"the late answer was used: {late.result()}"
        fake.active = "R3"
        assert (await engine.decide(subject("carol"))).revision == "R3"
        await fake.release(4)
        decision = await late
    assert (decision.allow, decision.fail_reason, decision.revision) == (False, "POLICY_REVISION_STALE", "R3")
    assert decision.reason == "policy revision changed while deciding"
    assert (engine.revision, engine.revision_generation) == ("R3", 3)


async def test_the_decision_cache_never_stores_nor_serves_an_answer_from_a_replaced_revision(
    engines: list,
) -> None:
    # As found in review: R1 left outputs.ssn unmasked, R2 masks it. Alice's decision began
    # under R1 and its answer arrived after Bob's under R2: it set the revision back to R1,
    # was cached and then served to Alice's later calls for its TTL, with R2 long in force.
    fake = FakeOpa("R1", hold={2}, permissive=frozenset({"R1"}))
    async with fake as url:
        cache = CachingEngine(make(engines, url, timeout=30))
        await cache.start()
        alice = asyncio.create_task(cache.decide(subject("alice")))
        await fake.arrived[2].wait()
        fake.active = "R2"
        assert (await cache.decide(subject("bob"))).revision == "R2"
        await fake.release(2)
        first = await alice
        assert (first.revision, cache.revision) == ("R2", "R2")
        later = await cache.decide(subject("alice"))
        again = cache.cached(memo_key(subject("alice")))
    assert [m.path for m in first.masks] == ["outputs.ssn"]
    assert later.revision == "R2" and [m.path for m in later.masks] == ["outputs.ssn"]
    assert again is not None and again.revision == "R2" and [m.path for m in again.masks] == ["outputs.ssn"]


# ------------------------------------------------------------------ readiness: the policy is there
# OPA's plain /health is 200 as soon as it listens, before the bundle it follows is activated:
# a gateway asking it was ready while every call was refused POLICY_UNDEFINED (review: after
# an OPA restart, or while the bundle server is down).


class BundleService:
    """OPA's bundle service on loopback, in a thread of its own (so a test blocked on a
    process start does not stall OPA's downloads): ``GET /bundles/labelgate`` answers
    ``tarball`` while ``serving``, else 500 (counted in ``failed``). Its port is chosen up
    front, so OPA can be configured with it before it listens: until ``start``, connections
    are refused."""

    def __init__(self, tarball: bytes) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tarball = tarball
        self.serving = True
        self.failed = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/bundles/labelgate":
                    self.send_error(404)
                elif not service.serving:
                    service.failed += 1
                    self.send_error(500, "bundle store unavailable")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(service.tarball)))
                    self.end_headers()
                    self.wfile.write(service.tarball)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # OPA polls every second: not worth the test output

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def bundle_tarball(source: Path, target: Path) -> bytes:
    """``opa build -b source``: the bundle as OPA itself builds and reads it."""
    subprocess.run([opa_binary(), "build", "-b", str(source), "-o", str(target)], check=True)
    return target.read_bytes()


def following_config(directory: Path, service_url: str) -> Path:
    """An OPA config following bundle ``labelgate`` at ``service_url``, polled every second
    (OPA's configuration is YAML, which JSON is)."""
    bundle = {
        "service": "bundles",
        "resource": "bundles/labelgate",
        "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1},
    }
    config = {"services": {"bundles": {"url": service_url}}, "bundles": {"labelgate": bundle}}
    path = directory / f"opa-following-{free_port()}.yaml"
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def opa_at(log_dir: Path, port: int, config: Path) -> Iterator[Process]:
    """A real ``opa run --server`` with ``config`` at a given port (so it can be restarted
    where the engine already looks)."""
    command = [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", "--config-file", str(config)]
    with running(command, log_dir / f"opa-{port}-{time.monotonic_ns()}.log", port=port) as process:
        yield process


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    """Poll ``check`` until it is true (a condition, not a timed assertion)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("service", ["refusing", "never answering"])
async def test_an_opa_whose_bundle_was_never_activated_is_not_healthy(
    service: str, stalling_server: StallingServer, tmp_path: Path, engines: list[OpaEngine]
) -> None:
    # The reviewer's reproduction (a dead bundle server), and one that accepts and stalls.
    url = f"http://127.0.0.1:{free_port() if service == 'refusing' else stalling_server.port}"
    with opa(tmp_path, args=("--config-file", str(following_config(tmp_path, url)))) as (opa_url, _):
        engine = make(engines, opa_url)
        await engine.start()
        undefined = await engine.decide(INPUT)
        healthy = await engine.healthy()
    assert undefined.fail_reason == "POLICY_UNDEFINED"  # what every call got while "ready"
    assert healthy is False


@pytest.mark.parametrize("loaded", ["files", "--bundle"])
async def test_an_opa_with_its_policy_from_files_is_healthy(
    loaded: str, tmp_path: Path, engines: list[OpaEngine]
) -> None:
    # No bundle is configured: OPA reads the files before it listens.
    policy = write_policy(tmp_path / "policy", result_rule(VALID_RESULT))
    args = ("--bundle",) if loaded == "--bundle" else ()
    with opa(tmp_path, policy, args=args) as (url, _):
        engine = make(engines, url)
        await engine.start()
        decision = await engine.decide(INPUT)
        healthy = await engine.healthy()
    assert decision.fail_reason is None
    assert healthy is True


async def test_an_opa_following_a_bundle_is_healthy_while_it_has_the_bundle_activated(
    tmp_path: Path, engines: list[OpaEngine]
) -> None:
    policy = write_policy(tmp_path / "policy", result_rule(VALID_RESULT))
    (policy / ".manifest").write_text(json.dumps({"revision": "rev-1", "roots": ["labelgate"]}))
    service = BundleService(bundle_tarball(policy, tmp_path / "bundle.tar.gz"))
    config = following_config(tmp_path, service.url)
    opa_port = free_port()
    engine = make(engines, f"http://127.0.0.1:{opa_port}")

    async def activated() -> bool:
        return (await engine.decide(INPUT)).fail_reason is None

    try:
        with opa_at(tmp_path, opa_port, config):
            await engine.start()
            # The bundle server is not up yet: nothing activated, not healthy.
            assert (await engine.decide(INPUT)).fail_reason == "POLICY_UNDEFINED"
            assert await engine.healthy() is False

            service.start()
            await eventually(activated, "the bundle activated")
            assert await engine.healthy() is True
            assert engine.revision == "rev-1"

            # The bundle server fails from now on: the activated bundle keeps deciding, so
            # OPA stays healthy (it does not forget its policy when a download fails).
            service.serving = False

            async def download_failed() -> bool:
                return service.failed > 0

            await eventually(download_failed, "a failed bundle download")
            assert await engine.healthy() is True
            assert (await engine.decide(INPUT)).fail_reason is None

        # OPA restarted while the bundle server still fails: up, answering, no policy.
        with opa_at(tmp_path, opa_port, config):
            assert (await engine.decide(INPUT)).fail_reason == "POLICY_UNDEFINED"
            assert await engine.healthy() is False

            service.serving = True
            await eventually(activated, "the bundle activated after the restart")
            assert await engine.healthy() is True
    finally:
        service.stop()
