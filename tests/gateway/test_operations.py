"""What operators see of a running gateway: gRPC health and reflection, the admin listener's
/healthz, /readyz and /metrics. The failure side (NOT_SERVING, 503) is in ``test_faults.py``.
"""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

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


def calls_by_outcome(gateway: Gateway) -> dict[str, float]:
    status, body = gateway.get("/metrics")
    assert status == 200
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "labelgate_calls":
            continue
        for sample in family.samples:
            if sample.name == "labelgate_calls_total" and sample.labels.get("method") == INFER:
                counts[sample.labels["outcome"]] = sample.value
    return counts


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
