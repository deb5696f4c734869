"""Triton's model extensions through the gateway, policy-gated, with real peers.

tritonclient (in a child process: its protos clash with ours in one process) calls
``get_model_config``, ``get_inference_statistics``, ``get_model_repository_index`` and
``load_model`` / ``unload_model`` through a gateway to two real demo backends, routed by
model: ``profiles`` serves ``customer-*``, ``text`` serves ``sentiment``. Both backends hold
every demo model, so each lists models that route elsewhere; the merged index must not.

The policy is the default pack, except that ``ModelInfer`` on ``customer-profile`` is denied
to anyone outside ``analysts`` (``ProfilesForAnalysts``): the index and the statistics of
every model are narrowed per caller by exactly that decision.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.policy.contract import Decision
from tests.gateway.harness import run_backend
from tests.support.procs import REPO, free_port
from tests.support.triton import run_probe

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
AUTH = {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}}
SERVICE = "/inference.GRPCInferenceService"
PROFILE_OUTPUTS = [
    "customer_id",
    "segment",
    "name",
    "email",
    "risk_score",
    "ssn",
    "card_number",
    "notes",
    "account_secret",
]


class ProfilesForAnalysts:
    """The real engine, except that ``ModelInfer`` on ``customer-profile`` (and the planted
    upstream's ``secret-model``) is denied outside ``analysts``, and any decision on
    ``broken-model`` fails (raises)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        request = policy_input["request"]
        if request["model"] == "broken-model":
            raise RuntimeError("engine failure")
        if (
            request["method"] == f"{SERVICE}/ModelInfer"
            and request["model"] in ("customer-profile", "secret-model")
            and "analysts" not in policy_input["subject"]["groups"]
        ):
            return Decision.deny("TEST_DENIED", "denied by the test policy")
        return await self.inner.decide(policy_input)


def token(sub: str, *groups: str) -> str:
    return mint_dev_token(sub, list(groups), 300, DEV_KEYS)


# Minted when a test runs (a token minted at import could expire before a late test).
def as_analyst() -> dict[str, str]:
    return {"authorization": f"Bearer {token('ana', 'analysts')}"}


def as_no_group() -> dict[str, str]:
    return {"authorization": f"Bearer {token('nora')}"}


def as_admin() -> dict[str, str]:
    return {"authorization": f"Bearer {token('max', 'model-admins', 'analysts')}"}


def settings(upstreams: list[dict[str, Any]], **extra: Any) -> GatewaySettings:
    return GatewaySettings(
        **extra,
        listen=f"127.0.0.1:{free_port()}",
        rest_listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstreams=upstreams,
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "extensions-test-hash-key-0123456789"},
        auth=AUTH,
    )


async def started(gateway: Gateway) -> Gateway:
    gateway.pipeline.engine = ProfilesForAnalysts(gateway.pipeline.engine)  # type: ignore[assignment]
    await gateway.start()
    return gateway


async def probe(gateway: Gateway, *calls: dict[str, Any]) -> list[dict[str, Any]]:
    """tritonclient calls through ``gateway``; the child process runs while this loop serves."""
    return await asyncio.to_thread(run_probe, list(calls), url=f"127.0.0.1:{gateway.port}")


async def probe_one(gateway: Gateway, call: dict[str, Any]) -> dict[str, Any]:
    return (await probe(gateway, call))[0]


# --- two demo backends ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("extension-backends")
    with run_backend(directory, "profiles") as (first, _), run_backend(directory, "text") as (second, _):
        yield first, second


@pytest.fixture
async def gateway(backends: tuple[str, str]) -> AsyncIterator[Gateway]:
    profiles, text = backends
    gateway = await started(
        Gateway(
            settings(
                [
                    {"name": "profiles", "address": profiles, "models": ["customer-*"]},
                    {"name": "text", "address": text, "models": ["sentiment"]},
                ]
            )
        )
    )
    try:
        yield gateway
    finally:
        await gateway.stop(0)


async def seen_calls(address: str) -> list[tuple[str, str]]:
    """(method, model) of the calls a demo backend saw, newest first (``_debug-metadata``)."""
    async with grpc.aio.insecure_channel(address) as channel:
        request = pb.ModelInferRequest(model_name="_debug-metadata", outputs=[{"name": "recent"}])
        request.outputs[0].parameters["binary_data"].bool_param = False
        reply = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    entries = [json.loads(entry) for entry in reply.outputs[0].contents.bytes_contents]
    return [(entry["method"], entry["model"]) for entry in entries]


def index_names(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["name"], m.get("state", "")) for m in result["value"].get("models", [])]


async def test_model_config_reaches_tritonclient_classified(gateway: Gateway) -> None:
    analyst, no_group = await probe(
        gateway,
        {"op": "get_model_config", "model": "customer-profile", "headers": as_analyst()},
        {"op": "get_model_config", "model": "sentiment", "headers": as_no_group()},
    )
    config = analyst["value"]["config"]
    assert (config["name"], config["platform"], config["backend"]) == (
        "customer-profile",
        "labelgate-demo",
        "labelgate-demo",
    )
    assert config["input"] == [{"name": "customer_ids", "data_type": "TYPE_INT64", "dims": ["-1"]}]
    assert [output["name"] for output in config["output"]] == PROFILE_OUTPUTS
    assert config["instance_group"] == [{"name": "customer-profile", "kind": "KIND_CPU", "count": 1}]
    # parameters are catalogued internal: analysts see them, a caller with no group does not.
    assert config["parameters"] == {"max_rows": {"string_value": "100000"}}
    assert no_group["value"]["config"]["name"] == "sentiment"
    assert "parameters" not in no_group["value"]["config"]


async def grpc_refusal(gateway: Gateway, method: str, request: Any) -> tuple[Any, str, str]:
    """(code, reason, text) of a refused call to ``method`` as a caller with no group."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = channel.unary_unary(f"{SERVICE}/{method}", request_serializer=type(request).SerializeToString)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(request, metadata=tuple(as_no_group().items()))
    info = error_info(caught.value)
    assert info is not None
    return caught.value.code(), info.reason, caught.value.details() or ""


async def test_a_model_the_caller_may_not_use_is_refused_as_an_unknown_model_is(
    gateway: Gateway, backends: tuple[str, str]
) -> None:
    """customer-profile exists but is not the no-group caller's to use: its configuration,
    metadata, readiness and named statistics answer exactly what a model that does not exist
    answers, on both bindings, and no request reaches its upstream."""
    profiles, _ = backends
    expected = (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_ROUTED", "no upstream serves this model")
    await seen_calls(profiles)  # a mark: the newest call the backend saw
    for method, request_type, field in (
        ("ModelConfig", ext.ModelConfigRequest, "name"),
        ("ModelStatistics", ext.ModelStatisticsRequest, "name"),
        ("ModelMetadata", pb.ModelMetadataRequest, "name"),
        ("ModelReady", pb.ModelReadyRequest, "name"),
    ):
        hidden = await grpc_refusal(gateway, method, request_type(**{field: "customer-profile"}))
        unknown = await grpc_refusal(gateway, method, request_type(**{field: "no-such-model"}))
        assert hidden == unknown == expected, method
    # Nothing reached the backend since the mark.
    assert (await seen_calls(profiles))[0] == ("ModelInfer", "_debug-metadata")
    # An analyst may use it: the same calls are answered.
    config, stats = await probe(
        gateway,
        {"op": "get_model_config", "model": "customer-profile", "headers": as_analyst()},
        {"op": "get_inference_statistics", "model": "customer-profile", "headers": as_analyst()},
    )
    assert config["value"]["config"]["name"] == "customer-profile"
    assert [s["name"] for s in stats["value"]["model_stats"]] == ["customer-profile"]

    url = f"http://{gateway.settings.rest_listen}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for suffix in ("/config", "/stats", "", "/ready"):
            hidden_rest = await client.get(f"/v2/models/customer-profile{suffix}", headers=as_no_group())
            unknown_rest = await client.get(f"/v2/models/no-such-model{suffix}", headers=as_no_group())
            assert hidden_rest.status_code == unknown_rest.status_code == 404, suffix
            assert hidden_rest.json() == unknown_rest.json(), suffix
            assert hidden_rest.json()["reason"] == "MODEL_NOT_ROUTED"


async def test_the_index_lists_each_model_once_from_its_route_narrowed_per_caller(
    gateway: Gateway,
) -> None:
    analyst, no_group = await probe(
        gateway,
        {"op": "get_model_repository_index", "headers": as_analyst()},
        {"op": "get_model_repository_index", "headers": as_no_group()},
    )
    # _debug-metadata is on both backends but no route serves it: not listed.
    assert index_names(analyst) == [("customer-profile", "READY"), ("sentiment", "READY")]
    assert index_names(no_group) == [("sentiment", "READY")]


async def test_statistics_count_calls_and_are_narrowed_per_caller(
    gateway: Gateway, backends: tuple[str, str]
) -> None:
    def sentiment_count(result: dict[str, Any]) -> int:
        (stats,) = [s for s in result["value"]["model_stats"] if s["name"] == "sentiment"]
        return int(stats.get("inference_count", "0"))

    infer = {"op": "infer", "model": "sentiment", "text": ["great"], "headers": as_analyst()}
    before, _, _, after, every_model, no_group = await probe(
        gateway,
        {"op": "get_inference_statistics", "model": "sentiment", "headers": as_analyst()},
        infer,
        infer,
        {"op": "get_inference_statistics", "model": "sentiment", "headers": as_analyst()},
        {"op": "get_inference_statistics", "headers": as_analyst()},
        {"op": "get_inference_statistics", "headers": as_no_group()},
    )
    assert sentiment_count(after) - sentiment_count(before) == 2
    assert [s["name"] for s in after["value"]["model_stats"]] == ["sentiment"]
    # Without a name: every upstream asked, each model from its own route.
    assert [s["name"] for s in every_model["value"]["model_stats"]] == ["customer-profile", "sentiment"]
    assert sentiment_count(every_model) >= 2
    # No group: customer-profile is not theirs to use, and the counts are internal (zeroed).
    (stats,) = no_group["value"]["model_stats"]
    assert stats == {"name": "sentiment", "version": "1"}


async def test_only_model_admins_load_and_unload_and_nothing_else_reaches_upstream(
    gateway: Gateway, backends: tuple[str, str]
) -> None:
    _, text = backends
    refused_unload, refused_load = await probe(
        gateway,
        {"op": "unload_model", "model": "sentiment", "headers": as_analyst()},
        {"op": "load_model", "model": "sentiment", "headers": as_no_group()},
    )
    for refused in (refused_unload, refused_load):
        assert refused["error"]["code"] == "PERMISSION_DENIED"
        assert "needs a model admin group" in refused["error"]["message"]
    methods = [method for method, _ in await seen_calls(text)]
    assert "RepositoryModelUnload" not in methods and "RepositoryModelLoad" not in methods

    # The reason travels as ErrorInfo (tritonclient does not show it; a plain stub does).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        unload = channel.unary_unary(
            f"{SERVICE}/RepositoryModelUnload",
            request_serializer=ext.RepositoryModelUnloadRequest.SerializeToString,
            response_deserializer=ext.RepositoryModelUnloadResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unload(
                ext.RepositoryModelUnloadRequest(model_name="sentiment"), metadata=tuple(as_analyst().items())
            )
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info is not None and info.reason == "POLICY_DENIED"

    unloaded, index, infer, loaded, reloaded = await probe(
        gateway,
        {"op": "unload_model", "model": "sentiment", "headers": as_admin()},
        {"op": "get_model_repository_index", "headers": as_admin()},
        {"op": "infer", "model": "sentiment", "text": ["fine"], "headers": as_admin()},
        {"op": "load_model", "model": "sentiment", "headers": as_admin()},
        {"op": "get_model_repository_index", "headers": as_admin()},
    )
    assert unloaded == {"value": None} and loaded == {"value": None}
    assert ("sentiment", "UNAVAILABLE") in index_names(index)
    assert infer["error"]["code"] == "NOT_FOUND"
    assert index_names(reloaded) == [("customer-profile", "READY"), ("sentiment", "READY")]
    assert [call for call in await seen_calls(text) if call[0].startswith("RepositoryModel")][:2] == [
        ("RepositoryModelLoad", "sentiment"),
        ("RepositoryModelUnload", "sentiment"),
    ]


# --- upstreams that misbehave ---------------------------------------------------------------


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


PLANTED_FILE = "planted-secret-model.plan"


def planted_config_reply(name: str) -> bytes:
    """A ModelConfigResponse carrying Triton fields the gateway does not declare: the model's
    ``default_model_filename`` (8) and ``response_cache`` (24) and an output's
    ``label_filename`` (4)."""
    config = ext.ModelConfig(name=name, platform="planted", max_batch_size=8)
    output = ext.ModelOutput(name="label", data_type=ext.TYPE_STRING, dims=[1])
    output_bytes = output.SerializeToString() + _length_delimited(4, b"planted-labels.txt")
    config_bytes = (
        config.SerializeToString()
        + _length_delimited(6, output_bytes)
        + _length_delimited(8, PLANTED_FILE.encode())
        + _length_delimited(24, _tag(1, 0) + _varint(1))
    )
    return _length_delimited(1, config_bytes)


class PlantedUpstream:
    """A Triton-like upstream of raw bytes: ``ModelConfig`` answers ``planted_config_reply``,
    ``RepositoryIndex`` lists ``models`` with this upstream's ``version``."""

    def __init__(self, models: list[str], version: str) -> None:
        self.models, self.version = models, version
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE[1:], self.handlers())]
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        async def config(request: bytes, context: Any) -> bytes:
            return planted_config_reply(ext.ModelConfigRequest.FromString(request).name)

        async def index(request: bytes, context: Any) -> bytes:
            reply = ext.RepositoryIndexResponse()
            for name in self.models:
                reply.models.add(name=name, version=self.version, state="READY")
            return reply.SerializeToString()

        return {
            "ModelConfig": grpc.unary_unary_rpc_method_handler(config),
            "RepositoryIndex": grpc.unary_unary_rpc_method_handler(index),
        }


@pytest.fixture
async def planted() -> AsyncIterator[tuple[Gateway, PlantedUpstream, PlantedUpstream]]:
    first = PlantedUpstream(["customer-profile", "sentiment", "secret-model", "broken-model"], "a1")
    second = PlantedUpstream(["sentiment"], "b1")
    await first.server.start()
    await second.server.start()
    gateway = await started(
        Gateway(
            settings(
                [
                    {"name": "a", "address": first.address, "models": ["customer-*", "*-model"]},
                    {"name": "b", "address": second.address, "models": ["sentiment"]},
                ]
            )
        )
    )
    try:
        yield gateway, first, second
    finally:
        await gateway.stop(0)
        await first.server.stop(0)
        await second.server.stop(0)


async def test_fields_the_gateway_does_not_define_do_not_reach_the_caller(
    planted: tuple[Gateway, PlantedUpstream, PlantedUpstream],
) -> None:
    gateway, first, _ = planted
    call = {"op": "get_model_config", "model": "customer-profile", "headers": as_analyst()}
    (direct,) = await asyncio.to_thread(run_probe, [{**call, "url": first.address}])
    (through,) = await probe(gateway, call)
    # The plant works: tritonclient, asked directly, sees the upstream's extra fields.
    planted_config = direct["value"]["config"]
    assert planted_config["default_model_filename"] == PLANTED_FILE
    assert planted_config["response_cache"] == {"enable": True}
    assert planted_config["output"][0]["label_filename"] == "planted-labels.txt"
    # Through the gateway they are gone; what the gateway declares arrives.
    config = through["value"]["config"]
    assert config == {
        "name": "customer-profile",
        "platform": "planted",
        "max_batch_size": 8,
        "output": [{"name": "label", "data_type": "TYPE_STRING", "dims": ["1"]}],
    }
    # And not on the wire either.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        raw = await channel.unary_unary(f"{SERVICE}/ModelConfig")(
            ext.ModelConfigRequest(name="customer-profile").SerializeToString(),
            metadata=tuple(as_analyst().items()),
        )
    assert PLANTED_FILE.encode() not in raw and b"planted-labels" not in raw


async def test_the_index_takes_each_model_from_its_route_and_leaves_out_failed_decisions(
    planted: tuple[Gateway, PlantedUpstream, PlantedUpstream],
) -> None:
    gateway, _, _ = planted
    analyst, no_group = await probe(
        gateway,
        {"op": "get_model_repository_index", "headers": as_analyst()},
        {"op": "get_model_repository_index", "headers": as_no_group()},
    )
    listed = [(m["name"], m["version"]) for m in analyst["value"]["models"]]
    # sentiment from b (a's copy routes elsewhere); broken-model's decision fails: left out.
    assert listed == [("customer-profile", "a1"), ("secret-model", "a1"), ("sentiment", "b1")]
    assert [m["name"] for m in no_group["value"]["models"]] == ["sentiment"]


async def test_an_index_listing_more_models_than_the_bound_fails_closed() -> None:
    """Narrowing runs one decision per listed model: past ``limits.max_index_models`` the
    call fails (RESOURCE_EXHAUSTED ``INDEX_TOO_MANY_MODELS``) instead of running them all."""
    upstream = PlantedUpstream([f"model-{n}" for n in range(4)], "1")
    await upstream.server.start()
    gateway = await started(
        Gateway(
            settings(
                [{"name": "a", "address": upstream.address, "models": ["*"]}], limits={"max_index_models": 4}
            )
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            index = channel.unary_unary(
                f"{SERVICE}/RepositoryIndex",
                request_serializer=ext.RepositoryIndexRequest.SerializeToString,
                response_deserializer=ext.RepositoryIndexResponse.FromString,
            )
            metadata = tuple(as_analyst().items())
            at_bound = await index(ext.RepositoryIndexRequest(), metadata=metadata)
            assert [m.name for m in at_bound.models] == [f"model-{n}" for n in range(4)]
            upstream.models.append("model-4")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await index(ext.RepositoryIndexRequest(), metadata=metadata)
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info is not None and info.reason == "INDEX_TOO_MANY_MODELS"
    finally:
        await gateway.stop(0)
        await upstream.server.stop(0)


# --- the REST binding -------------------------------------------------------------------------


async def test_rest_routes_serve_the_same_extensions(gateway: Gateway) -> None:
    url = f"http://{gateway.settings.rest_listen}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        config = await client.get("/v2/models/customer-profile/config", headers=as_analyst())
        stats = await client.get("/v2/models/sentiment/stats", headers=as_no_group())
        every = await client.get("/v2/models/stats", headers=as_analyst())
        index = await client.post("/v2/repository/index", headers=as_no_group(), json={})
        refused = await client.post("/v2/repository/models/sentiment/unload", headers=as_analyst(), json={})
        unloaded = await client.post("/v2/repository/models/sentiment/unload", headers=as_admin())
        loaded = await client.post("/v2/repository/models/sentiment/load", headers=as_admin(), json={})
        ready = await client.get("/v2/models/sentiment/ready", headers=as_admin())
    assert config.status_code == 200
    body = config.json()
    assert body["name"] == "customer-profile" and body["max_batch_size"] == 0
    # Every declared field, defaults included, 64-bit integers as numbers (Triton's JSON).
    assert body["input"] == [
        {
            "name": "customer_ids",
            "data_type": "TYPE_INT64",
            "format": "FORMAT_NONE",
            "dims": [-1],
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
    ]
    assert stats.status_code == 200
    assert [(s["name"], s["inference_count"]) for s in stats.json()["model_stats"]] == [("sentiment", 0)]
    assert [s["name"] for s in every.json()["model_stats"]] == ["customer-profile", "sentiment"]
    assert index.status_code == 200
    assert [m["name"] for m in index.json()] == ["sentiment"]
    assert refused.status_code == 403 and refused.json()["reason"] == "POLICY_DENIED"
    assert (unloaded.status_code, loaded.status_code, ready.status_code) == (200, 200, 200)


async def test_rest_extension_bodies_are_read_only_after_authentication_and_never_fail_500(
    gateway: Gateway,
) -> None:
    """Bodies of the index, load and unload routes: an unauthenticated request is refused
    before its body is parsed (a body that would be a 400 is a 401); an authenticated one
    with JSON nested too deep or an integer beyond 64 bits is a 400 with a reason, never a
    500."""
    nested = b"[" * 50_000 + b"]" * 50_000
    huge = b'{"parameters": {"a": 99999999999999999999999}}'
    url = f"http://{gateway.settings.rest_listen}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for path in ("/v2/repository/index", "/v2/repository/models/sentiment/load"):
            for body in (nested, huge, b"not json"):
                anonymous = await client.post(path, content=body)
                assert anonymous.status_code == 401, (path, body[:20])
                assert anonymous.json()["reason"] == "NO_CREDENTIALS", (path, body[:20])
        for path, body in (
            ("/v2/repository/index", nested),
            ("/v2/repository/models/sentiment/load", nested),
            ("/v2/repository/models/sentiment/unload", nested),
            ("/v2/repository/models/sentiment/load", huge),
            ("/v2/repository/models/sentiment/load", b'{"parameters": {"a": -9223372036854775809}}'),
        ):
            refused = await client.post(path, content=body, headers=as_admin())
            assert refused.status_code == 400, (path, body[:20])
            assert refused.json()["reason"] == "REST_REQUEST_INVALID", (path, body[:20])
        # The largest 64-bit integer is a parameter like any other.
        edge = b'{"parameters": {"a": 9223372036854775807}}'
        loaded = await client.post("/v2/repository/models/sentiment/load", content=edge, headers=as_admin())
        assert loaded.status_code == 200


@pytest.mark.parametrize(
    ("method", "request_type"),
    [("RepositoryIndex", ext.RepositoryIndexRequest), ("ModelStatistics", ext.ModelStatisticsRequest)],
)
async def test_one_upstream_failing_a_fan_out_cancels_the_calls_still_out(
    method: str, request_type: type[Any]
) -> None:
    """The caller was refused at the first failure, but the call to an upstream still
    answering ran on until that upstream's timeout (``asyncio.gather`` does not cancel)."""
    asked, cancelled = asyncio.Event(), asyncio.Event()

    async def stall(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def fail_once_the_other_is_asked(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asked.wait()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        raise AssertionError("unreachable")

    servers = []
    for handler in (stall, fail_once_the_other_is_asked):
        server = grpc.aio.server()
        handlers = {method: grpc.unary_unary_rpc_method_handler(handler)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE.strip("/"), handlers)])
        servers.append((server, f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"))
        await server.start()
    # Far beyond this test's wait: the stalled call ending is the gateway's cancel.
    timeout = {"timeout_seconds": 3600}
    gateway = await started(
        Gateway(
            settings(
                [
                    {"name": "a", "address": servers[0][1], "models": ["customer-*"], **timeout},
                    {"name": "b", "address": servers[1][1], "models": ["sentiment"], **timeout},
                ]
            )
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            ask = channel.unary_unary(
                f"{SERVICE}/{method}", request_serializer=request_type.SerializeToString
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ask(request_type(), metadata=tuple(as_analyst().items()), timeout=120)
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info is not None and info.reason == "UPSTREAM_UNAVAILABLE"
        await asyncio.wait_for(cancelled.wait(), 20)
    finally:
        await gateway.stop(0)
        for server, _ in servers:
            await server.stop(0)
