"""What operators see of a running gateway: gRPC health and reflection, the admin listener's
/healthz, /readyz and /metrics. The failure side (NOT_SERVING, 503) is in ``test_faults.py``.
"""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from labelgate import __version__
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from tests.gateway.aio import channel, infer, refused
from tests.gateway.expected import (
    customer_request,
)
from tests.gateway.harness import (
    INFER,
    Gateway,
    TokenIssuer,
)

SERVICE = "inference.GRPCInferenceService"


async def test_health_is_serving_while_the_engine_and_upstream_are_up(gateway: Gateway) -> None:
    async with channel(gateway.address) as opened:
        stub = health_pb2_grpc.HealthStub(opened)
        for service in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_healthz_and_readyz_answer_200(gateway: Gateway) -> None:
    status, body = gateway.get("/healthz")
    assert status == 200, body
    status, body = gateway.get("/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"policy_engine": True, "upstream": True}


async def test_reflection_lists_the_gateways_services(gateway: Gateway) -> None:
    async with channel(gateway.address) as opened:
        stream = reflection_pb2_grpc.ServerReflectionStub(opened).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [service.name async for reply in stream for service in reply.list_services_response.service]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


def test_the_start_up_log_warns_that_calls_are_neither_audited_nor_recorded(gateway: Gateway) -> None:
    """The pooled gateways have no audit writer and no recording: found by review, such a
    gateway released data with no audit record and said nothing at start."""
    lines = [json.loads(line) for line in gateway.output().splitlines() if line.startswith("{")]
    warned = {line["event"]: line for line in lines if line.get("level") == "warning"}
    assert "structured logs only" in warned["audit_off"]["note"], lines
    assert "sessions are not recorded" in warned["recording_off"]["note"], lines


def scrape(gateway: Gateway) -> list[Sample]:
    status, body = gateway.get("/metrics")
    assert status == 200
    return [sample for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def calls_by(gateway: Gateway, *labels: str) -> dict[tuple[str, ...], float]:
    """``labelgate_calls_total`` of ModelInfer summed by ``labels``."""
    counts: dict[tuple[str, ...], float] = {}
    for sample in scrape(gateway):
        if sample.name == "labelgate_calls_total" and sample.labels.get("method") == INFER:
            key = tuple(sample.labels[label] for label in labels)
            counts[key] = counts.get(key, 0) + sample.value
    return counts


def calls_by_outcome(gateway: Gateway) -> dict[str, float]:
    return {outcome: count for (outcome,), count in calls_by(gateway, "outcome").items()}


def durations(gateway: Gateway) -> dict[tuple[str, str], float]:
    """``labelgate_call_duration_seconds_count`` of ModelInfer by (model, outcome)."""
    return {
        (sample.labels["model"], sample.labels["outcome"]): sample.value
        for sample in scrape(gateway)
        if sample.name == "labelgate_call_duration_seconds_count" and sample.labels.get("method") == INFER
    }


def delta_of(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


async def test_metrics_count_calls_by_outcome(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    before = calls_by_outcome(gateway)
    await infer(gateway.address, customer_request([1, 2]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1], ["account_secret"]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1]), token_issuer.headers("steward"))
    await refused(gateway.address, customer_request([1]))
    after = calls_by_outcome(gateway)
    delta = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in after}
    assert delta.get("mask") == 1, delta
    assert delta.get("approval_required") == 1, delta
    # The policy's deny and the unauthenticated call.
    assert sum(count for outcome, count in delta.items() if outcome not in ("mask", "approval_required")) == 2

    status, body = gateway.get("/metrics")
    assert status == 200
    text = body.decode()
    engine = gateway.config["engine"]
    assert f'labelgate_decision_seconds_count{{engine="{engine}",phase="request"}}' in text
    assert f'labelgate_decision_seconds_count{{engine="{engine}",phase="response"}}' in text
    assert 'labelgate_masked_fields_total{label="confidential"}' in text
    assert "labelgate_active_streams" in text


async def test_metrics_time_calls_and_carry_the_grpc_code(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    """Scraped from a real gateway's admin listener after real calls: the end-to-end duration
    histogram by method, model and outcome; the status code the caller got on the call
    counter; the build info; and no ``_created`` series."""
    codes_before, durations_before = calls_by(gateway, "outcome", "code"), durations(gateway)
    await infer(gateway.address, customer_request([1, 2]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1], ["account_secret"]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1]))
    codes = delta_of(codes_before, calls_by(gateway, "outcome", "code"))
    assert codes == {("mask", "OK"): 1, ("deny", "PERMISSION_DENIED"): 1, ("deny", "UNAUTHENTICATED"): 1}, (
        codes
    )
    timed = delta_of(durations_before, durations(gateway))
    assert timed.get(("customer-profile", "mask")) == 1, timed
    assert sum(timed.values()) == 3, timed

    samples = scrape(gateway)
    buckets = [
        s
        for s in samples
        if s.name == "labelgate_call_duration_seconds_bucket" and s.labels["outcome"] == "mask"
    ]
    assert buckets and {"method", "model", "outcome", "le"} <= set(buckets[0].labels)
    assert any(s.labels["le"] == "+Inf" and s.value >= 1 for s in buckets)
    info = [s for s in samples if s.name == "labelgate_build_info"]
    assert [(s.labels, s.value) for s in info] == [({"version": __version__}, 1.0)]
    created = sorted({s.name for s in samples if s.name.endswith("_created")})
    assert not created, created


async def test_metadata_calls_pass_through_for_an_authenticated_caller(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    async with channel(gateway.address) as opened:
        stub = pb_grpc.GRPCInferenceServiceStub(opened)
        metadata = tuple(token_issuer.headers("no-group").items())
        ready = await stub.ModelReady(
            pb.ModelReadyRequest(name="customer-profile"), metadata=metadata, timeout=5
        )
        assert ready.ready
        with_metadata = await stub.ModelMetadata(
            pb.ModelMetadataRequest(name="customer-profile"), metadata=metadata, timeout=5
        )
        assert "account_secret" in [output.name for output in with_metadata.outputs]
        try:
            await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("ServerLive without credentials was answered")


def grpc_handled(gateway: Gateway) -> dict[tuple[str, ...], float]:
    """``grpc_server_handled_total`` by (type, service, method, code)."""
    counts: dict[tuple[str, ...], float] = {}
    for sample in scrape(gateway):
        if sample.name == "grpc_server_handled_total":
            key = tuple(sample.labels[k] for k in ("grpc_type", "grpc_service", "grpc_method", "grpc_code"))
            counts[key] = counts.get(key, 0) + sample.value
    return counts


def grpc_started(gateway: Gateway) -> float:
    return sum(s.value for s in scrape(gateway) if s.name == "grpc_server_started_total")


async def test_the_standard_grpc_server_metrics_count_every_rpc_with_its_code(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    """go-grpc-prometheus names, so existing gRPC dashboards work: started, handled by code,
    handling time; refusals and the gateway's own services (health) are counted too."""
    handled_before, started_before = grpc_handled(gateway), grpc_started(gateway)
    await infer(gateway.address, customer_request([1, 2]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1], ["account_secret"]), token_issuer.headers("analyst"))
    await refused(gateway.address, customer_request([1]))
    async with channel(gateway.address) as opened:
        await health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest(), timeout=5)
    handled = delta_of(handled_before, grpc_handled(gateway))
    service = "inference.GRPCInferenceService"
    assert handled == {
        ("unary", service, "ModelInfer", "OK"): 1,
        ("unary", service, "ModelInfer", "PERMISSION_DENIED"): 1,
        ("unary", service, "ModelInfer", "UNAUTHENTICATED"): 1,
        ("unary", "grpc.health.v1.Health", "Check", "OK"): 1,
    }, handled
    assert grpc_started(gateway) - started_before == 4
    seconds = [
        s
        for s in scrape(gateway)
        if s.name == "grpc_server_handling_seconds_count" and s.labels["grpc_method"] == "ModelInfer"
    ]
    assert seconds and sum(s.value for s in seconds) >= 3
