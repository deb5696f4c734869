"""Connections: ``upstreams:`` routes calls by model, over gRPC (unary, metadata,
``ModelStreamInfer``) and REST alike, to two real demo backends. Which backend got a call is
read back from each backend's ``_debug-metadata`` model (its ``recent`` calls)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import ValidationError

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.errors import InvalidInput
from labelgate.gateway.discovery import Discovery
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import ModelNotRouted, Router, Upstream
from labelgate.oip.rest import upstream_index
from tests.gateway.harness import run_backend
from tests.support.mlserver import run_mlserver
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
    return [model for _, model in await recent_calls(address)]


async def inferred_models(address: str) -> list[str]:
    """The models of the ModelInfer calls a backend saw (not its load/unload calls)."""
    return [model for method, model in await recent_calls(address) if method == "ModelInfer"]


async def recent_calls(address: str) -> list[tuple[str, str]]:
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
    return [(json.loads(entry)["method"], json.loads(entry)["model"]) for entry in recent]


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


# -- models discovered from each upstream's repository index ----------------------------------


async def set_loaded(address: str, model: str, loaded: bool) -> None:
    """Load or unload a model on a demo backend directly (its RepositoryModelLoad/Unload)."""
    async with grpc.aio.insecure_channel(address) as channel:
        if loaded:
            load = channel.unary_unary(
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                request_serializer=ext.RepositoryModelLoadRequest.SerializeToString,
                response_deserializer=ext.RepositoryModelLoadResponse.FromString,
            )
            await load(ext.RepositoryModelLoadRequest(model_name=model))
        else:
            unload = channel.unary_unary(
                "/inference.GRPCInferenceService/RepositoryModelUnload",
                request_serializer=ext.RepositoryModelUnloadRequest.SerializeToString,
                response_deserializer=ext.RepositoryModelUnloadResponse.FromString,
            )
            await unload(ext.RepositoryModelUnloadRequest(model_name=model))


@pytest.fixture
async def discovery_backends(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two fresh demo backends, each serving every demo model until a test unloads one."""
    with run_backend(tmp_path, "first") as (first, _), run_backend(tmp_path, "second") as (second, _):
        yield first, second


def discovering(first: str, second: str) -> list[dict[str, object]]:
    return [
        {"name": "first", "address": first, "discover": True},
        {"name": "second", "address": second, "discover": True},
    ]


async def refused_as_not_routed(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request, metadata=headers())
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert info is not None and info.reason == "MODEL_NOT_ROUTED"
    return (caught.value.details() or "") + repr(dict(info.metadata))


async def test_discovered_models_route_where_they_are_ready_and_follow_an_unload(
    discovery_backends: tuple[str, str],
) -> None:
    first, second = discovery_backends
    gateway = Gateway(settings(discovery_backends, upstreams=discovering(first, second)))
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # Both list every model: a name two upstreams claim goes to neither.
            text = await refused_as_not_routed(stub, sentiment_request())
            for secret in ("first", "second", first, second):
                assert secret not in text, f"the refusal names {secret!r}"
            assert "sentiment" not in await recent_models(first) + await recent_models(second)

            await set_loaded(first, "sentiment", False)
            await set_loaded(second, "customer-profile", False)
            await gateway.router.refresh()
            await stub.ModelInfer(sentiment_request(), metadata=headers())
            assert (await recent_models(second))[0] == "sentiment"
            await stub.ModelInfer(profile_request([1]), metadata=headers())
            assert (await recent_models(first))[0] == "customer-profile"

            # The model moves; after the next refresh, routing follows it.
            await set_loaded(first, "sentiment", True)
            await set_loaded(second, "sentiment", False)
            await gateway.router.refresh()
            await stub.ModelInfer(sentiment_request(), metadata=headers())
            assert (await recent_models(first))[0] == "sentiment"
            assert (await inferred_models(second)).count("sentiment") == 1, "one call before the move"

        # REST callers route by the same table.
        async with httpx.AsyncClient() as client:
            mood = await client.post(
                f"http://{gateway.settings.rest_listen}/v2/models/sentiment/infer",
                json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["fine"]}]},
                headers=dict(headers()),
            )
        assert mood.status_code == 200, mood.text
        assert (await recent_models(first))[0] == "sentiment"

        # The gateway's own index lists each model once, from the upstream it routes to.
        async with httpx.AsyncClient() as client:
            index = await client.post(
                f"http://{gateway.settings.rest_listen}/v2/repository/index", json={}, headers=dict(headers())
            )
        assert index.status_code == 200, index.text
        names = [entry["name"] for entry in index.json()]
        assert names.count("sentiment") == 1 and names.count("customer-profile") == 1, names
        assert "_debug-metadata" not in names, "both upstreams list it: routed to neither, listed by neither"
    finally:
        await gateway.stop(0)


async def test_an_explicit_entry_wins_over_a_discovered_name(discovery_backends: tuple[str, str]) -> None:
    first, second = discovery_backends
    upstreams = [
        {"name": "explicit", "address": second, "models": ["sentiment"]},
        # Lists sentiment too, and may claim only customer-* names.
        {"name": "finder", "address": first, "discover": True, "models": ["customer-*", "sentiment"]},
    ]
    gateway = Gateway(settings(discovery_backends, upstreams=upstreams))
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(sentiment_request(), metadata=headers())
            assert (await recent_models(second))[0] == "sentiment"
            await stub.ModelInfer(profile_request([3]), metadata=headers())
            assert (await recent_models(first))[0] == "customer-profile"
            # `_debug-metadata` is READY on `first` but outside the names it may claim.
            await refused_as_not_routed(stub, pb.ModelInferRequest(model_name="_debug-metadata"))
        assert "sentiment" not in await recent_models(first)
    finally:
        await gateway.stop(0)


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_failed_refresh_keeps_the_last_list_until_it_is_stale(tmp_path: Path) -> None:
    clock = SteppedClock()
    base = GatewaySettings(auth=AUTH).upstream
    with run_backend(tmp_path, "short-lived") as (address, _):
        upstream = Upstream(base, 1 << 20, address, name="finder")
        discovery = Discovery(upstream, interval=10, max_stale=60, clock=clock)
        router = Router([], None, [discovery])
        try:
            assert await discovery.refresh()
            router.discovered.rebuild()
            assert router.for_model("sentiment") is upstream
            assert router.serves(upstream, "customer-profile")
        except BaseException:
            await router.close()
            raise
    try:
        # The backend is gone: refreshes fail and the last good list stands ...
        clock.now += 60
        assert not await discovery.refresh()
        router.discovered.rebuild()
        assert router.for_model("sentiment") is upstream
        # ... until it is older than the bound: then nothing routes there.
        clock.now += 1
        await router.refresh()
        with pytest.raises(ModelNotRouted):
            router.for_model("sentiment")
        assert router.for_server() is upstream
    finally:
        await router.close()


async def test_an_upstream_that_never_answered_routes_nothing(backends: tuple[str, str]) -> None:
    profiles, _ = backends
    dead = f"127.0.0.1:{free_port()}"
    upstreams = [
        {"name": "profiles", "address": profiles, "models": ["customer-*"]},
        {"name": "gone", "address": dead, "discover": True},
    ]
    gateway = Gateway(settings(backends, upstream={"address": profiles}, upstreams=upstreams))
    await gateway.start()  # a failed first discovery does not stop the gateway
    try:
        assert gateway.router.by_name("gone") is not None
        # The default route still serves what no entry lists.
        assert gateway.router.for_model("sentiment") is gateway.upstream
    finally:
        await gateway.stop(0)


def test_the_index_of_a_rest_upstream_is_read_strictly() -> None:
    body = json.dumps(
        [
            {"name": "a", "version": "1", "state": "READY", "reason": "", "extra": {"x": 1}},
            {"name": "b", "state": 7},
        ]
    ).encode()
    index = upstream_index(body)
    assert [(m.name, m.version, m.state) for m in index.models] == [("a", "1", "READY"), ("b", "", "")]
    for broken in (b"{}", b"[{}]", b'[{"name": 3}]', b"not json", b'["a"]'):
        with pytest.raises(InvalidInput):
            upstream_index(broken)


def test_discovery_config_is_checked() -> None:
    entry = {"name": "a", "address": "127.0.0.1:1"}
    with pytest.raises(ValidationError, match="discover: true"):
        GatewaySettings(auth=AUTH, upstreams=[entry])
    found = GatewaySettings(auth=AUTH, upstreams=[{**entry, "discover": True}]).upstreams[0]
    assert found.models == [] and found.discover_interval_seconds <= found.discover_max_stale_seconds
    with pytest.raises(ValidationError, match="at least discover_interval_seconds"):
        GatewaySettings(
            auth=AUTH,
            upstreams=[
                {**entry, "discover": True, "discover_interval_seconds": 60, "discover_max_stale_seconds": 30}
            ],
        )


async def test_a_rest_upstream_is_discovered_through_its_repository_index(tmp_path: Path) -> None:
    """MLServer answers ``POST /v2/repository/index``; unloading its model there drops the route."""
    with run_mlserver(tmp_path) as server:
        upstreams = [{"name": "mls", "address": server.rest, "protocol": "rest", "discover": True}]
        gateway = Gateway(settings(("unused:1", "unused:2"), upstreams=upstreams))
        await gateway.start()
        try:
            mls = gateway.router.by_name("mls")
            assert mls is not None and gateway.router.for_model("mls-profile") is mls
            async with httpx.AsyncClient() as client:
                url = f"{server.url}/v2/repository/models/mls-profile/unload"
                assert (await client.post(url)).status_code == 200
            await gateway.router.refresh()
            with pytest.raises(ModelNotRouted):
                gateway.router.for_model("mls-profile")
        finally:
            await gateway.stop(0)


class _Listing:
    """A discovering upstream reduced to the names it listed (``DiscoveredRoutes`` reads only these)."""

    def __init__(self, upstream: object, names: set[str]) -> None:
        self.upstream, self._names = upstream, frozenset(names)

    def names(self) -> frozenset[str]:
        return self._names


def test_names_two_upstreams_claim_are_logged_as_digests_never_as_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The names are the upstreams' own text, never scanned: a hostile index could plant data.
    from labelgate.gateway.discovery import DiscoveredRoutes
    from labelgate.logs import text_digest

    planted = {"card 4111111111111111", "patient 123-45-6789", "x" * 300_000, "sentiment"}
    table = DiscoveredRoutes(
        [_Listing("first", planted), _Listing("second", planted | {"only-second"})]  # type: ignore[list-item]
    )
    with caplog.at_level("WARNING"):
        table.rebuild()
    (line,) = [record for record in caplog.records if record.getMessage() == "model discovery conflict"]
    assert line.count == len(planted)
    assert set(line.model_digests) == {text_digest(name) for name in planted}
    logged = str(vars(line))
    assert not [name for name in planted if name in logged] and len(logged) < 5_000
    assert table.lookup("card 4111111111111111") == (True, None)
    assert table.lookup("only-second") == (True, "second")
