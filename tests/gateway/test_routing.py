"""Connections: ``upstreams:`` routes calls by model, over gRPC (unary, metadata,
``ModelStreamInfer``) and REST alike, to two real demo backends. Which backend got a call is
read back from each backend's ``_debug-metadata`` model (its ``recent`` calls)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from pydantic import ValidationError

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import ModelNotRouted, Router, Upstream
from tests.gateway.harness import run_backend
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
AUTH = {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}}


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two demo backends: ``profiles`` (customer-profile) and ``text`` (sentiment)."""
    directory = tmp_path_factory.mktemp("routing-backends")
    with run_backend(directory, "profiles") as (first, _), run_backend(directory, "text") as (second, _):
        yield first, second


def settings(backends: tuple[str, str], **overrides: object) -> GatewaySettings:
    profiles, text = backends
    values: dict = {
        "listen": f"127.0.0.1:{free_port()}",
        "rest_listen": f"127.0.0.1:{free_port()}",
        "admin_listen": None,
        "upstreams": [
            {"name": "profiles", "address": profiles, "models": ["customer-*"]},
            {"name": "text", "address": text, "models": ["sentiment", "sentiment-*"]},
        ],
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "routing-test-hash-key-0123456789"},
        "auth": AUTH,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def gateway(backends: tuple[str, str]) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings(backends))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(0)


def headers(sub: str = "ana", *groups: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_dev_token(sub, list(groups or ['analysts']), 300, DEV_KEYS)}"),)


def profile_request(ids: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[len(ids)])
    tensor.contents.int64_contents.extend(ids)
    return request


def sentiment_request(text: str = "great service") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sentiment")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(text.encode())
    return request


async def recent_models(address: str) -> list[str]:
    """The models of the calls a backend saw, newest first (its ``_debug-metadata`` model)."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest(model_name="_debug-metadata", outputs=[{"name": "recent"}])
        )
    recent = reply.outputs[0].contents.bytes_contents or []
    if not recent and reply.raw_output_contents:
        raw, recent = reply.raw_output_contents[0], []
        while raw:
            size = int.from_bytes(raw[:4], "little")
            recent.append(raw[4 : 4 + size])
            raw = raw[4 + size :]
    return [json.loads(entry)["model"] for entry in recent]


async def test_calls_route_by_model_to_their_upstream(gateway: Gateway, backends: tuple[str, str]) -> None:
    profiles, text = backends
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        profile = await stub.ModelInfer(profile_request([1]), metadata=headers())
        assert (await recent_models(profiles))[0] == "customer-profile"
        mood = await stub.ModelInfer(sentiment_request(), metadata=headers())
        assert (await recent_models(text))[0] == "sentiment"
        assert (await recent_models(profiles))[1] == "customer-profile", "profiles saw no sentiment call"
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="sentiment"), metadata=headers())
        assert (await recent_models(text))[0] == "sentiment"
    assert profile.model_name == "customer-profile" and mood.model_name == "sentiment"
    assert metadata.name == "sentiment"
    assert "customer-profile" not in await recent_models(text)
    assert "sentiment" not in await recent_models(profiles)


async def test_an_unknown_model_is_not_found_without_naming_upstreams(
    gateway: Gateway, backends: tuple[str, str]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="no-such-model")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(request, metadata=headers())
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(error)
    assert info is not None and info.reason == "MODEL_NOT_ROUTED"
    text = (error.details() or "") + repr(dict(info.metadata))
    for secret in ("profiles", "text", *backends, *(b.rpartition(":")[2] for b in backends)):
        assert secret not in text, f"the refusal names {secret!r}"


async def test_rest_routes_by_model_too(gateway: Gateway, backends: tuple[str, str]) -> None:
    profiles, text = backends
    url = f"http://{gateway.settings.rest_listen}"
    auth = dict(headers())
    async with httpx.AsyncClient() as client:
        mood = await client.post(
            f"{url}/v2/models/sentiment/infer",
            json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["lovely"]}]},
            headers=auth,
        )
        assert mood.status_code == 200, mood.text
        assert (await recent_models(text))[0] == "sentiment"
        profile = await client.get(f"{url}/v2/models/customer-profile", headers=auth)
        assert profile.status_code == 200, profile.text
        assert (await recent_models(profiles))[0] == "customer-profile"
        unknown = await client.post(
            f"{url}/v2/models/no-such-model/infer",
            json={"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]},
            headers=auth,
        )
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "MODEL_NOT_ROUTED")
    assert "profiles" not in unknown.text and text not in unknown.text


async def test_a_stream_goes_to_its_models_upstream(gateway: Gateway, backends: tuple[str, str]) -> None:
    _, text = backends
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        replies = [r async for r in stub.ModelStreamInfer(iter([sentiment_request()]), metadata=headers())]
    assert [r.infer_response.model_name for r in replies] == ["sentiment"]
    assert not replies[0].error_message
    assert (await recent_models(text))[0] == "sentiment"


async def test_a_stream_across_two_upstreams_is_refused_clearly(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(iter([sentiment_request(), profile_request([1])]), metadata=headers())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None and info.reason == "STREAM_SPANS_UPSTREAMS"


async def test_readiness_reports_each_upstream(gateway: Gateway) -> None:
    checks = await gateway.ready_checks()
    assert checks == {"policy_engine": True, "upstream:profiles": True, "upstream:text": True}


async def test_readiness_reports_an_unreachable_upstream(backends: tuple[str, str]) -> None:
    profiles, _ = backends
    dead = f"127.0.0.1:{free_port()}"
    gateway = Gateway(
        settings(
            backends,
            upstreams=[
                {"name": "profiles", "address": profiles, "models": ["customer-*"]},
                {"name": "gone", "address": dead, "models": ["sentiment"]},
            ],
        )
    )
    await gateway.start()
    try:
        checks = await gateway.ready_checks()
    finally:
        await gateway.stop(0)
    assert checks["upstream:profiles"] is True and checks["upstream:gone"] is False


async def test_the_single_upstream_setting_stays_the_default_route(backends: tuple[str, str]) -> None:
    profiles, text = backends
    gateway = Gateway(
        settings(
            backends,
            upstream={"address": profiles},
            upstreams=[{"name": "text", "address": text, "models": ["sentiment"]}],
        )
    )
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(profile_request([2]), metadata=headers())
            assert (await recent_models(profiles))[0] == "customer-profile"
            await stub.ModelInfer(sentiment_request(), metadata=headers())
            assert (await recent_models(text))[0] == "sentiment"
        checks = await gateway.ready_checks()
    finally:
        await gateway.stop(0)
    assert checks == {"policy_engine": True, "upstream": True, "upstream:text": True}


async def test_router_matches_globs_in_order_then_the_default() -> None:
    default = Upstream(GatewaySettings(auth=AUTH).upstream, 1 << 20)
    first = Upstream(default.settings, 1 << 20, "127.0.0.1:1", name="first")
    second = Upstream(default.settings, 1 << 20, "127.0.0.1:2", name="second")
    routed = Router([(first, ["a-*"]), (second, ["a-b", "c"])], None)
    assert routed.for_model("a-b") is first, "the first matching entry wins"
    assert routed.for_model("c") is second
    assert routed.for_server() is first
    with pytest.raises(ModelNotRouted):
        routed.for_model("d")
    with_default = Router([(second, ["c"])], default)
    assert with_default.for_model("d") is default and with_default.for_server() is default
    assert with_default.serves(second, "c") and not with_default.serves(second, "d")
    for upstream in (default, first, second):
        await upstream.close()


def test_upstreams_config_is_checked() -> None:
    entry = {"name": "a", "address": "127.0.0.1:1", "models": ["x"]}
    with pytest.raises(ValidationError, match="a name appears twice"):
        GatewaySettings(auth=AUTH, upstreams=[entry, entry])
    with pytest.raises(ValidationError):
        GatewaySettings(auth=AUTH, upstreams=[{**entry, "models": []}])
    with pytest.raises(ValidationError, match="subject_assertion"):
        GatewaySettings(auth=AUTH, upstreams=[{**entry, "subject_assertion": {"enabled": False}}])
    only = GatewaySettings(auth=AUTH, upstreams=[entry])
    assert not only.default_route(), "without `upstream:`, unrouted models are not found"
    # A copy of the section (as the workers' shared assertion key makes) does not turn it on.
    assert not only.model_copy(update={"upstream": only.upstream}).default_route()
    assert GatewaySettings(auth=AUTH, upstream={"address": "127.0.0.1:2"}, upstreams=[entry]).default_route()


async def test_a_routed_service_may_name_an_upstreams_entry(backends: tuple[str, str]) -> None:
    route = {"method_prefix": "/labelgate.v1.demo.CustomerDirectory/", "upstream": "text"}
    gateway = Gateway(settings(backends, routes=[route]))
    try:
        assert gateway._upstream_for("text") is gateway.router.by_name("text")
        assert gateway._upstream_for(None) is gateway.upstream
    finally:
        await gateway.router.close()
        await gateway.upstream.close()


async def test_a_rest_entry_becomes_a_rest_upstream() -> None:
    from labelgate.gateway.rest_upstream import RestUpstream

    entries = [
        {"name": "a", "address": "127.0.0.1:1", "models": ["x"], "protocol": "rest"},
        {"name": "b", "address": "127.0.0.1:2", "models": ["y"]},
    ]
    router = Router.from_settings(GatewaySettings(auth=AUTH, upstreams=entries), None)  # type: ignore[arg-type]
    try:
        assert isinstance(router.for_model("x"), RestUpstream) and router.for_model("x").protocol == "rest"
        assert isinstance(router.for_model("y"), Upstream) and router.for_model("y").protocol == "grpc"
    finally:
        await router.close()
    with pytest.raises(ValidationError):
        GatewaySettings(auth=AUTH, upstreams=[{**entries[0], "protocol": "soap"}])
