"""Faults, with real broken parts: each fails closed with the right status and leaks nothing.

- OPA killed mid-run, and OPA frozen (SIGSTOP) past the decision timeout;
- the upstream down, and an upstream sending malformed messages (a real misbehaving server,
  ``misbehaving_upstream.py``);
- deadlines and cancellations reaching the upstream; message size limits.

Scenarios that break a part get their own processes. Calls made while the policy engine is
down use subjects the decision cache has never seen: a decision cached before the outage is
still served for its TTL (60 s in the default policy), by design.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.demo.data import customer
from tests.gateway.aio import (
    Refusal,
    backend_seen,
    channel,
    infer,
    infer_wire_bytes,
    outputs_of,
    refused,
    texts,
)
from tests.gateway.expected import (
    confidential_and_restricted,
    customer_request,
    partial,
)
from tests.gateway.harness import (
    Gateway,
    TokenIssuer,
    gateway_config,
    run_backend,
    run_opa,
    start_gateway,
)
from tests.support.procs import free_port, running

IDS = [1, 2, 5]
MISBEHAVING_UPSTREAM = Path(__file__).with_name("misbehaving_upstream.py")
SECRET = customer(1).ssn  # what the misbehaving upstream sends
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float = 6.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (a condition, not a timed assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


async def health(address: str) -> int:
    async with channel(address) as opened:
        reply = await health_pb2_grpc.HealthStub(opened).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=3
        )
        return reply.status


def fresh_analyst(issuer: TokenIssuer) -> dict[str, str]:
    """An analyst the decision cache has never seen: the call must reach the policy engine."""
    return {"authorization": f"Bearer {issuer.token(f'ana-{uuid.uuid4().hex[:8]}', ['analysts'])}"}


def assert_no_secret(data: bytes, ids: list[int] = IDS) -> None:
    leaked = [value for value in confidential_and_restricted(ids) if value.encode() in data]
    assert not leaked, f"{len(leaked)} sensitive values reached the client"


# --- the policy engine ---------------------------------------------------------------------


@dataclass
class OpaFaults:
    """A gateway whose OPA was first frozen (SIGSTOP, past the decision timeout), then
    thawed and killed; ``frozen`` is what a caller got while it was frozen."""

    gateway: Gateway
    backend: str
    frozen: Refusal
    frozen_bytes: bytes


@pytest.fixture(scope="module")
def opa_faults(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer
) -> Iterator[OpaFaults]:
    directory = tmp_path_factory.mktemp("opa-faults")
    with run_opa(directory) as (opa_url, opa):
        config = gateway_config(upstream=backend, engine="opa", opa_url=opa_url, issuer=token_issuer)
        with start_gateway(config, directory) as gateway:
            # The pair works: a first call is answered, masked.
            response = asyncio.run(infer(gateway.address, customer_request(IDS), fresh_analyst(token_issuer)))
            assert texts(outputs_of(response)["ssn"]) == [partial(customer(i).ssn) for i in IDS]

            with opa.frozen():  # connections are still accepted; answers never come
                headers = fresh_analyst(token_issuer)
                frozen = asyncio.run(refused(gateway.address, customer_request(IDS), headers))
                frozen_bytes = asyncio.run(infer_wire_bytes(gateway.address, customer_request(IDS), headers))

            opa.signal(signal.SIGKILL)
            opa.popen.wait(timeout=5)
            yield OpaFaults(gateway, backend, frozen, frozen_bytes)


def test_opa_frozen_past_the_timeout_fails_closed(opa_faults: OpaFaults) -> None:
    assert (opa_faults.frozen.code, opa_faults.frozen.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "POLICY_TIMEOUT",
    )
    assert_no_secret(opa_faults.frozen_bytes)


async def test_opa_killed_fails_closed_before_the_upstream_runs(
    opa_faults: OpaFaults, token_issuer: TokenIssuer
) -> None:
    marker = uuid.uuid4().hex
    headers = [*fresh_analyst(token_issuer).items(), ("x-request-id", marker)]
    refusal = await refused(opa_faults.gateway.address, customer_request(IDS), headers)
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAVAILABLE, "POLICY_UNAVAILABLE")
    assert_no_secret(await infer_wire_bytes(opa_faults.gateway.address, customer_request(IDS), headers))
    seen = await backend_seen(opa_faults.backend)
    assert not [call for call in seen if ["x-request-id", marker] in call["metadata"]], (
        "the upstream was called"
    )


async def test_health_is_not_serving_once_opa_is_gone(opa_faults: OpaFaults) -> None:
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def check() -> bool:
        return await health(opa_faults.gateway.address) == not_serving

    await eventually(check, what="health NOT_SERVING")


def test_readyz_is_a_503_problem_when_opa_is_gone(opa_faults: OpaFaults) -> None:
    status, body = opa_faults.gateway.get("/readyz")
    assert status == 503
    problem = json.loads(body)
    assert problem["status"] == 503 and problem["title"]
    assert problem["checks"] == {"policy_engine": False, "upstream": True}


# --- the upstream ----------------------------------------------------------------------------


@dataclass
class UpstreamDown:
    gateway: Gateway
    issuer: TokenIssuer


@pytest.fixture(scope="module")
def upstream_down(
    tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer
) -> Iterator[UpstreamDown]:
    directory = tmp_path_factory.mktemp("upstream-down")
    with (
        run_backend(directory) as (address, backend_process),
        start_gateway(
            gateway_config(upstream=address, engine="embedded", issuer=token_issuer), directory
        ) as gateway,
    ):
        asyncio.run(infer(gateway.address, customer_request(IDS), token_issuer.headers("analyst")))
        backend_process.stop()
        yield UpstreamDown(gateway, token_issuer)


async def test_upstream_down_is_unavailable(upstream_down: UpstreamDown) -> None:
    headers = upstream_down.issuer.headers("analyst")
    refusal = await refused(upstream_down.gateway.address, customer_request(IDS), headers)
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


async def test_health_and_readyz_report_the_upstream_down(upstream_down: UpstreamDown) -> None:
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def check() -> bool:
        return await health(upstream_down.gateway.address) == not_serving

    await eventually(check, what="health NOT_SERVING")
    status, body = upstream_down.gateway.get("/readyz")
    assert status == 503
    assert json.loads(body)["checks"] == {"policy_engine": True, "upstream": False}
    assert upstream_down.gateway.get("/healthz")[0] == 200, "alive, just not ready"


async def test_upstream_errors_keep_their_status(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    headers = token_issuer.headers("analyst")
    unknown = await refused(gateway.address, customer_request([1], model="no-such-model"), headers)
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND")
    negative = await refused(gateway.address, customer_request([-1]), headers)
    assert (negative.code, negative.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_ARGUMENT")
    assert "non-negative" not in negative.message, "the upstream's own text (it may name data) stays upstream"


@dataclass
class Misbehaving:
    gateway: Gateway
    upstream: str
    issuer: TokenIssuer

    def request(self, request_id: str) -> pb.ModelInferRequest:
        return customer_request(IDS, request_id=request_id)

    async def events(self, request_id: str) -> list[dict[str, Any]]:
        """What the upstream saw of the calls with this id."""
        report = await infer(self.upstream, pb.ModelInferRequest(model_name="any", id="report"))
        return [
            event
            for event in json.loads(report.parameters["events"].string_param)
            if event["id"] == request_id
        ]


UPSTREAM_TIMEOUT_SECONDS = 1.5
MAX_MESSAGE_BYTES = 4096


@pytest.fixture(scope="module")
def misbehaving(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[Misbehaving]:
    directory = tmp_path_factory.mktemp("misbehaving")
    port = free_port()
    address = f"127.0.0.1:{port}"
    command = [sys.executable, str(MISBEHAVING_UPSTREAM), "--listen", address]
    config = gateway_config(upstream=address, engine="embedded", issuer=token_issuer)
    config["upstream"]["timeout_seconds"] = UPSTREAM_TIMEOUT_SECONDS
    config["limits"] = {"max_message_bytes": MAX_MESSAGE_BYTES}
    with running(command, directory / "upstream.log", port=port), start_gateway(config, directory) as gateway:
        yield Misbehaving(gateway, address, token_issuer)


async def test_misbehaving_upstream_works_when_it_behaves(misbehaving: Misbehaving) -> None:
    """The control: its well-formed answer passes the gateway, masked for an analyst."""
    response = await infer(
        misbehaving.gateway.address, misbehaving.request("ok"), misbehaving.issuer.headers("analyst")
    )
    assert texts(outputs_of(response)["ssn"]) == [partial(SECRET)]


@pytest.mark.parametrize("request_id", ["garbage", "mismatch"])
async def test_a_malformed_upstream_message_is_internal_and_not_forwarded(
    misbehaving: Misbehaving, request_id: str
) -> None:
    headers = misbehaving.issuer.headers("analyst")
    refusal = await refused(misbehaving.gateway.address, misbehaving.request(request_id), headers)
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INTERNAL, "UPSTREAM_MALFORMED"), refusal
    data = await infer_wire_bytes(misbehaving.gateway.address, misbehaving.request(request_id), headers)
    assert SECRET.encode() not in data


async def test_the_callers_deadline_reaches_the_upstream(misbehaving: Misbehaving) -> None:
    request_id = f"slow:5#{uuid.uuid4().hex[:6]}"
    refusal = await refused(
        misbehaving.gateway.address,
        misbehaving.request(request_id),
        misbehaving.issuer.headers("analyst"),
        deadline=0.5,
    )
    assert refusal.code == grpc.StatusCode.DEADLINE_EXCEEDED
    events = await eventually(lambda: _ended(misbehaving, request_id), what="the upstream call to end")
    arrived = next(event for event in events if event["outcome"] == "arrived")
    # The caller's 0.5 s, not the gateway's own cap (1.5 s); grpc rounds deadlines up a little.
    assert arrived["time_remaining"] is not None and arrived["time_remaining"] <= 0.75
    assert [event["outcome"] for event in events] == ["arrived", "cancelled"]


async def test_the_configured_upstream_timeout_caps_a_slow_upstream(misbehaving: Misbehaving) -> None:
    request_id = f"slow:5#{uuid.uuid4().hex[:6]}"
    refusal = await refused(
        misbehaving.gateway.address,
        misbehaving.request(request_id),
        misbehaving.issuer.headers("analyst"),
        deadline=10,
    )
    assert refusal.code == grpc.StatusCode.DEADLINE_EXCEEDED
    events = await eventually(lambda: _ended(misbehaving, request_id), what="the upstream call to end")
    # Capped at the configured timeout, not the caller's 10 s (grpc rounds deadlines up a little).
    assert events[0]["time_remaining"] <= UPSTREAM_TIMEOUT_SECONDS + 0.25
    assert [event["outcome"] for event in events] == ["arrived", "cancelled"]


async def test_a_cancelled_call_is_cancelled_upstream(misbehaving: Misbehaving) -> None:
    request_id = f"slow:5#{uuid.uuid4().hex[:6]}"
    async with channel(misbehaving.gateway.address) as opened:
        call = pb_grpc.GRPCInferenceServiceStub(opened).ModelInfer(
            misbehaving.request(request_id),
            metadata=tuple(misbehaving.issuer.headers("analyst").items()),
            timeout=10,
        )
        await eventually(lambda: misbehaving.events(request_id), what="the call to reach the upstream")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    events = await eventually(lambda: _ended(misbehaving, request_id), what="the upstream call to end")
    assert [event["outcome"] for event in events] == ["arrived", "cancelled"]


async def _ended(misbehaving: Misbehaving, request_id: str) -> list[dict[str, Any]]:
    events = await misbehaving.events(request_id)
    return events if any(event["outcome"] != "arrived" for event in events) else []


# --- message size limits (the misbehaving gateway has a small limit) --------------------------


async def test_a_response_over_the_size_limit_is_resource_exhausted(misbehaving: Misbehaving) -> None:
    headers = misbehaving.issuer.headers("analyst")
    refusal = await refused(misbehaving.gateway.address, misbehaving.request("big"), headers)
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limits.max_message_bytes" in refusal.message and str(MAX_MESSAGE_BYTES) in refusal.message
    data = await infer_wire_bytes(misbehaving.gateway.address, misbehaving.request("big"), headers)
    assert_no_secret(data, list(range(100)))


async def test_a_request_over_the_size_limit_is_resource_exhausted(misbehaving: Misbehaving) -> None:
    too_big = customer_request(list(range(1000)))  # 8000 bytes of INT64 ids
    refusal = await refused(misbehaving.gateway.address, too_big, misbehaving.issuer.headers("analyst"))
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_MESSAGE_BYTES) in refusal.message, refusal.message
