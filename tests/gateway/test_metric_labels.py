"""Metric label values come from a bounded set the operator configured, never from callers.

An opaque route (no descriptors) serves every method name under its prefix, so the caller
names the method: each name as a label value would be a new series in every family with a
method label, kept until the process ends. A real gateway with an opaque and a typed route
is called with many invented names; /metrics must not grow with them, while the log line
still carries the method as called.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.gateway.metrics import (
    OTHER_METHOD,
    UNKNOWN,
    UNSERVED,
    method_label,
    method_labels,
    serve_services,
)
from tests.gateway.aio import as_metadata, channel, infer
from tests.gateway.harness import Gateway, TokenIssuer, gateway_config, start_gateway
from tests.gateway.test_routes import DIRECTORY, descriptor_set
from tests.support.procs import wait_until

OPAQUE = "/demo.Opaque/"
FAMILIES_WITH_A_METHOD = ("grpc_server_", "labelgate_calls_total", "labelgate_call_duration_seconds")


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("metric-labels")
    routes = [
        {"method_prefix": OPAQUE},
        {
            "method_prefix": DIRECTORY,
            "descriptor_set": str(descriptor_set(directory)),
            "split_values": "per_message",
        },
    ]
    config = gateway_config(upstream=backend, engine="embedded", issuer=token_issuer, routes=routes)
    with start_gateway(config, directory) as gateway:
        yield gateway


def scrape(gateway: Gateway) -> list[Sample]:
    status, body = gateway.get("/metrics")
    assert status == 200
    return [sample for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def series_with_a_method(gateway: Gateway) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for s in scrape(gateway)
        if s.name.startswith(FAMILIES_WITH_A_METHOD)
    }


async def call_opaque(address: str, names: list[str], headers: Mapping[str, str] | None) -> set[str]:
    """Call each ``/demo.Opaque/<name>``; the status codes the gateway answered."""
    codes = set()
    async with channel(address) as opened:
        for name in names:
            # No request message: a write racing the refusal can end the call in the client's
            # own INTERNAL error, which would say nothing about the gateway.
            stream: grpc.aio.StreamStreamCall[bytes, bytes] = opened.stream_stream(OPAQUE + name)(
                iter([]), metadata=as_metadata(headers), timeout=10
            )
            try:
                async for _ in stream:
                    pass
            except grpc.aio.AioRpcError as error:
                codes.add(error.code().name)
            else:
                codes.add("OK")
    return codes


async def test_invented_method_names_add_no_series(routed: Gateway, token_issuer: TokenIssuer) -> None:
    marker = uuid.uuid4().hex[:8]
    first = [f"Invented{marker}A{i}" for i in range(20)]
    more = [f"Invented{marker}B{i}" + "x" * 200 for i in range(80)]
    # Refused before and after authentication: both are counted, and both must stay bounded.
    assert await call_opaque(routed.address, first, None) == {"UNAUTHENTICATED"}
    assert await call_opaque(routed.address, first, token_issuer.headers("analyst")) == {"PERMISSION_DENIED"}
    # The record of a call is written after its status; wait for ours to be counted.
    wait_until(
        lambda: routed.output().count(f"Invented{marker}A") >= 40, 10, "the records of the first calls"
    )
    before = series_with_a_method(routed)

    assert await call_opaque(routed.address, more, None) == {"UNAUTHENTICATED"}
    assert await call_opaque(routed.address, more, token_issuer.headers("analyst")) == {"PERMISSION_DENIED"}
    wait_until(
        lambda: routed.output().count(f"Invented{marker}B") >= 160, 10, "the records of the other calls"
    )
    after = series_with_a_method(routed)

    assert after == before, sorted(after - before)[:5]
    assert not [series for series in after if marker in str(series)]
    handled = {
        (s.labels["grpc_service"], s.labels["grpc_method"], s.labels["grpc_code"]): s.value
        for s in scrape(routed)
        if s.name == "grpc_server_handled_total" and s.labels["grpc_service"] == "demo.Opaque"
    }
    assert handled == {
        ("demo.Opaque", OTHER_METHOD, "UNAUTHENTICATED"): 100,
        ("demo.Opaque", OTHER_METHOD, "PERMISSION_DENIED"): 100,
    }
    calls = {
        (s.labels["method"], s.labels["code"]): s.value
        for s in scrape(routed)
        if s.name == "labelgate_calls_total" and s.labels["method"].startswith(OPAQUE)
    }
    assert calls == {
        (f"{OPAQUE}{OTHER_METHOD}", "UNAUTHENTICATED"): 100,
        (f"{OPAQUE}{OTHER_METHOD}", "PERMISSION_DENIED"): 100,
    }


async def test_the_log_line_keeps_the_method_as_called(routed: Gateway) -> None:
    name = f"Logged{uuid.uuid4().hex[:8]}"
    assert await call_opaque(routed.address, [name], None) == {"UNAUTHENTICATED"}
    wait_until(lambda: name in routed.output(), 10, "the record of the call")
    logged = [
        json.loads(line)
        for line in routed.output().splitlines()
        if name in line and line.startswith("{") and '"call"' in line
    ]
    assert [entry["method"] for entry in logged] == [OPAQUE + name]


async def test_described_methods_keep_their_names(routed: Gateway, token_issuer: TokenIssuer) -> None:
    async with channel(routed.address) as opened:
        stub = demo_pb2_grpc.CustomerDirectoryStub(opened)
        request = demo_pb2.GetCustomerRequest(customer_id=7)
        await stub.GetCustomer(request, metadata=as_metadata(token_issuer.headers("analyst")), timeout=10)
    service = DIRECTORY.strip("/")
    wait_until(
        lambda: any(
            s.name == "labelgate_calls_total" and s.labels["method"] == f"/{service}/GetCustomer"
            for s in scrape(routed)
        ),
        10,
        "the typed call's record",
    )
    assert any(
        s.name == "grpc_server_handled_total"
        and (s.labels["grpc_service"], s.labels["grpc_method"], s.labels["grpc_code"])
        == (service, "GetCustomer", "OK")
        for s in scrape(routed)
    )


async def test_caller_chosen_model_names_share_one_series_past_the_bound(
    routed: Gateway, token_issuer: TokenIssuer
) -> None:
    marker = uuid.uuid4().hex[:8]
    for i in range(80):
        request = pb.ModelInferRequest(model_name=f"model-{marker}-{i}")
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused or not found: recorded either way
            await infer(routed.address, request, token_issuer.headers("analyst"))
    wait_until(lambda: routed.output().count(f"model-{marker}-") >= 80, 10, "the records of the calls")
    models = {s.labels["model"] for s in scrape(routed) if s.name == "labelgate_call_duration_seconds_count"}
    assert "other" in models
    assert len(models - {"other"}) <= 64


def test_method_labels_name_only_described_methods() -> None:
    oip = "inference.GRPCInferenceService"
    health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name  # loaded: described
    serve_services([oip, health, "demo.Opaque"])  # as the gateway's start does
    assert method_labels(f"/{oip}/ModelInfer") == (oip, "ModelInfer")
    assert method_labels(f"/{health}/Check") == (health, "Check")
    assert method_labels(f"/{oip}/NoSuchMethod") == (oip, OTHER_METHOD)
    assert method_labels("/demo.Opaque/Anything") == ("demo.Opaque", OTHER_METHOD)
    # A method's full name split elsewhere is not its path: no service the gateway serves.
    assert method_labels("/inference/GRPCInferenceService.ModelInfer") == (UNSERVED, UNSERVED)
    for malformed in ("ModelInfer", "/only-a-service/", "//Method", f"/{oip}/ModelInfer/more"):
        assert method_labels(malformed) == (UNKNOWN, UNKNOWN), malformed
    assert method_label(f"/{oip}/ModelInfer") == f"/{oip}/ModelInfer"
    assert method_label("/demo.Opaque/Anything") == f"/demo.Opaque/{OTHER_METHOD}"
