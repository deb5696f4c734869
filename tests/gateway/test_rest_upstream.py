"""REST upstreams (``protocol: rest``): MLServer 1.7 as a real peer, in its own virtualenv,
reached by gRPC callers (raw and typed), by curl-style JSON over the gateway's REST binding and
by ``tritonclient.http`` (binary and JSON outputs), next to a gRPC upstream (the demo backend),
routed by model. Values are byte-checked per persona; the tokens MLServer's model plants in a
response header, a reply parameter, the id and the model version never arrive."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.oip.tensors import decode_outputs
from tests.gateway.expected import customer_request, partial
from tests.gateway.harness import CATALOG, Received, capture_stream, capture_unary, http_get, run_backend
from tests.support import mlserver_data as data
from tests.support.mlserver import MLServer, run_mlserver
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
IDS = [1, 2, 3, 4]
PLANTED = [data.HEADER_TOKEN, data.PARAMETER_TOKEN, data.ID_TOKEN, data.VERSION_TOKEN]
GROUPS = {"no-group": (), "analyst": ("analysts",)}
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MLServer, str, Path]]:
    """MLServer (REST) and a demo backend (gRPC), and a catalog that knows ``mls-profile``."""
    directory = tmp_path_factory.mktemp("rest-upstream")
    catalog = json.loads(CATALOG.read_text())
    catalog["entries"] += data.catalog_entries()
    catalog_file = directory / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    with run_mlserver(directory) as server, run_backend(directory) as (backend, _):
        yield server, backend, catalog_file


def settings(peers: tuple[MLServer, str, Path], **overrides: object) -> GatewaySettings:
    server, backend, catalog_file = peers
    values: dict = {
        "listen": f"127.0.0.1:{free_port()}",
        "rest_listen": f"127.0.0.1:{free_port()}",
        "admin_listen": None,
        "upstreams": [
            {"name": "mls", "address": server.rest, "protocol": "rest", "models": ["mls-*"]},
            {"name": "demo", "address": backend, "models": ["customer-profile", "sentiment"]},
        ],
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(catalog_file)},
        "masking": {"hash_key": "rest-upstream-hash-key-0123456789"},
        "limits": {"max_message_bytes": MAX_BYTES},
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def gateway(peers: tuple[MLServer, str, Path]) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings(peers))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(0)


def token(persona: str) -> dict[str, str]:
    groups = list(GROUPS[persona])
    return {"authorization": f"Bearer {mint_dev_token(persona, groups, 300, DEV_KEYS)}"}


def expected(persona: str, ids: list[int]) -> dict[str, list[object]]:
    """What the default policy lets ``persona`` see of each output, byte for byte."""
    rows = [data.row(i) for i in ids]
    ssns = [str(r["ssn"]) for r in rows]
    if persona == "analyst":  # internal in clear, confidential partial, restricted emptied
        notes = [str(r["notes"]).replace(s, partial(s)) for r, s in zip(rows, ssns, strict=True)]
        ssn_seen = [partial(s) for s in ssns]
    else:  # internal and confidential redacted, restricted emptied
        notes = ["[REDACTED]"] * len(ids)
        ssn_seen = ["[REDACTED]"] * len(ids)
    return {
        "customer_id": ids,
        "segment": [r["segment"] for r in rows],
        "ssn": ssn_seen,
        "notes": notes,
        "account_secret": [""] * len(ids),
    }


def as_text(values: list[object]) -> list[object]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def secrets(ids: list[int]) -> list[str]:
    return [str(data.row(i)[key]) for i in ids for key in ("ssn", "account_secret")]


def assert_clean(blob: bytes) -> None:
    for value in PLANTED:
        assert value.encode() not in blob, f"planted {value} reached the caller"


def wire(received: Received) -> bytes:
    return received.blob()


def mls_request(ids: list[int], raw: bool = True) -> pb.ModelInferRequest:
    return customer_request(ids, raw=raw, model=data.MODEL, request_id="caller-id-1")


@pytest.mark.parametrize("persona", sorted(GROUPS))
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
async def test_grpc_callers_reach_mlserver_masked_per_persona(
    gateway: Gateway, persona: str, raw: bool
) -> None:
    received = await capture_unary(f"127.0.0.1:{gateway.port}", mls_request(IDS, raw), token(persona))
    assert received.code == grpc.StatusCode.OK, received.details
    reply = pb.ModelInferResponse.FromString(received.messages[0])
    assert (reply.model_name, reply.model_version, reply.id) == (data.MODEL, "", "caller-id-1")
    assert bool(reply.raw_output_contents) == raw, "outputs come back in the caller's representation"
    got = {t.name: as_text(t.values) for t in decode_outputs(reply)}
    assert got == expected(persona, IDS)
    assert_clean(wire(received))
    assert not [s for s in secrets(IDS) if s.encode() in wire(received)]
    assert set(reply.parameters) <= {"triton_final_response"}


@pytest.mark.parametrize("persona", sorted(GROUPS))
async def test_curl_style_json_through_the_rest_binding_to_mlserver(gateway: Gateway, persona: str) -> None:
    body = {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [len(IDS)], "data": IDS}]}
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"http://{gateway.settings.rest_listen}/v2/models/{data.MODEL}/infer",
            json=body,
            headers=token(persona),
        )
    assert reply.status_code == 200, reply.text
    got = {o["name"]: o["data"] for o in reply.json()["outputs"]}
    assert got == expected(persona, IDS)
    everything = reply.content + json.dumps(dict(reply.headers)).encode()
    assert_clean(everything)
    assert not [s for s in secrets(IDS) if s.encode() in everything]
    assert not {"x-planted", "ce-id", "ce-requestid"} & set(reply.headers), (
        "upstream headers are not forwarded"
    )


async def test_tritonclient_http_binary_and_json_outputs_from_mlserver(gateway: Gateway) -> None:
    import tritonclient.http as triton

    def call(binary: bool) -> dict[str, list[object]]:
        client = triton.InferenceServerClient(gateway.settings.rest_listen)
        infer_input = triton.InferInput("customer_ids", [len(IDS)], "INT64")
        infer_input.set_data_from_numpy(np.array(IDS, dtype=np.int64), binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(n, binary_data=binary) for n in ("customer_id", "ssn", "notes")
        ]
        result = client.infer(data.MODEL, [infer_input], outputs=outputs, headers=token("analyst"))
        return {n: as_text(result.as_numpy(n).reshape(-1).tolist()) for n in ("customer_id", "ssn", "notes")}

    want = expected("analyst", IDS)
    for binary in (True, False):
        got = await asyncio.to_thread(call, binary)
        assert got == {name: want[name] for name in got}, f"binary={binary}"


async def test_two_upstreams_grpc_and_rest_routed_by_model(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        demo = await stub.ModelInfer(
            customer_request([1], ["segment"]), metadata=tuple(token("analyst").items())
        )
        mls = await stub.ModelInfer(mls_request([1]), metadata=tuple(token("analyst").items()))
        metadata = await stub.ModelMetadata(
            pb.ModelMetadataRequest(name=data.MODEL), metadata=tuple(token("analyst").items())
        )
        ready = await stub.ModelReady(
            pb.ModelReadyRequest(name=data.MODEL), metadata=tuple(token("analyst").items())
        )
    assert [o.name for o in demo.outputs] == ["segment"] and demo.model_name == "customer-profile"
    assert mls.model_name == data.MODEL and len(mls.outputs) == 5
    assert metadata.name == data.MODEL and ready.ready
    async with httpx.AsyncClient() as client:
        rest = f"http://{gateway.settings.rest_listen}"
        both = [
            await client.get(f"{rest}/v2/models/{model}/ready", headers=token("analyst"))
            for model in (data.MODEL, "customer-profile")
        ]
    assert [r.status_code for r in both] == [200, 200]
    assert await gateway.ready_checks() == {
        "policy_engine": True,
        "upstream:mls": True,
        "upstream:demo": True,
    }


@pytest.mark.parametrize("persona", sorted(GROUPS))
async def test_a_stream_to_a_rest_upstream_is_one_rest_call_per_request(
    gateway: Gateway, persona: str
) -> None:
    """Each streamed request is one REST call; replies come back under the caller's ids,
    final, masked like unary ones; a request MLServer fails is the stream's error reply (the
    gateway's text) and the stream goes on."""
    failing = pb.ModelInferRequest(model_name=data.MODEL, id="c-bad")  # no inputs: the model fails
    requests = [
        customer_request([1, 2], model=data.MODEL, request_id="c-1"),
        failing,
        customer_request([3], model=data.MODEL, request_id="c-3"),
    ]
    received = await capture_stream(f"127.0.0.1:{gateway.port}", requests, token(persona))
    assert received.code == grpc.StatusCode.OK, received.details
    replies = [pb.ModelStreamInferResponse.FromString(m) for m in received.messages]
    by_id = {r.infer_response.id: r for r in replies}
    assert sorted(by_id) == ["c-1", "c-3", "c-bad"]
    for caller_id, ids in (("c-1", [1, 2]), ("c-3", [3])):
        reply = by_id[caller_id]
        assert not reply.error_message
        got = {t.name: as_text(t.values) for t in decode_outputs(reply.infer_response)}
        assert got == expected(persona, ids)
        assert reply.infer_response.parameters["triton_final_response"].bool_param
    assert by_id["c-bad"].error_message == "the upstream reported an error (UPSTREAM_STREAM_ERROR)"
    assert_clean(received.blob())
    assert not [s for s in secrets([1, 2, 3]) if s.encode() in received.blob()]


async def test_upstream_errors_and_oversized_replies_fail_closed(gateway: Gateway) -> None:
    headers = tuple(token("analyst").items())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        wrong = pb.ModelInferRequest(model_name=data.MODEL)  # no inputs: MLServer's model fails
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.ModelInfer(wrong, metadata=headers)
        # About 150 bytes a row back: larger than the 64 KiB limit.
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.ModelInfer(mls_request(list(range(1000))), metadata=headers)
    info = error_info(failed.value)
    assert info is not None and re.fullmatch(r"UPSTREAM_[A-Z_]+", info.reason), info.reason
    assert failed.value.details() == f"the upstream failed with {info.reason.removeprefix('UPSTREAM_')}"
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limits.max_message_bytes" in (too_big.value.details() or "")


async def test_per_upstream_metrics_from_a_real_gateway(peers: tuple[MLServer, str, Path]) -> None:
    server, backend, _ = peers
    admin = f"127.0.0.1:{free_port()}"
    gone = f"127.0.0.1:{free_port()}"
    upstreams = [
        {"name": "mls", "address": server.rest, "protocol": "rest", "models": ["mls-*"]},
        {"name": "demo", "address": backend, "models": ["customer-profile"]},
        {"name": "gone", "address": gone, "protocol": "rest", "models": ["nowhere"]},
    ]
    gateway = Gateway(settings(peers, admin_listen=admin, upstreams=upstreams))
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            headers = tuple(token("analyst").items())
            await stub.ModelInfer(mls_request([1]), metadata=headers)
            await stub.ModelInfer(customer_request([1]), metadata=headers)
        status, _ = await asyncio.to_thread(http_get, f"http://{admin}/readyz")
        _, body = await asyncio.to_thread(http_get, f"http://{admin}/metrics")
    finally:
        await gateway.stop(0)
    assert status == 503, "one upstream is down"
    text = body.decode()
    for name, up in (("mls", 1.0), ("demo", 1.0), ("gone", 0.0)):
        assert f'labelgate_upstream_up{{upstream="{name}"}} {up}' in text, name
    for name, protocol in (("mls", "rest"), ("demo", "grpc")):
        count = re.search(
            rf'labelgate_upstream_call_duration_seconds_count\{{outcome="ok",protocol="{protocol}",'
            rf'upstream="{name}"\}} (\d+\.\d+)',
            text,
        )
        assert count is not None and float(count.group(1)) >= 1, name


async def test_a_tls_rest_upstream_with_the_gateways_own_credentials(
    peers: tuple[MLServer, str, Path], tmp_path: Path
) -> None:
    """https with the entry's CA and certificate name; the upstream gets the gateway's token and
    a subject assertion, never the caller's credential; a CA that did not sign it fails closed."""
    from tests.gateway.test_rest_leak_fuzzer import run_planted_rest_upstream
    from tests.support.pki import create_ca

    ca = create_ca()
    ca_file = ca.write(tmp_path)
    cert, key = ca.issue("models.internal", dns=["models.internal"], server=True).write(tmp_path, "upstream")
    other_ca = create_ca("another CA").write(tmp_path / "other")
    with run_planted_rest_upstream(tmp_path, ["--cert", str(cert), "--key", str(key)]) as address:
        entry = {"name": "tls", "address": address, "protocol": "rest", "models": ["_echo"], "tls": True}
        trusted = {**entry, "ca_file": str(ca_file), "server_name": "models.internal", "token": "gateway-own"}
        replies = {}
        cases = (
            ("trusted", trusted),
            ("other-ca", {**trusted, "ca_file": str(other_ca)}),
            ("wrong-name", {key: value for key, value in trusted.items() if key != "server_name"}),
        )
        for name, upstream in cases:
            gateway = Gateway(settings(peers, upstreams=[upstream]))
            await gateway.start()
            try:
                replies[name] = await capture_unary(
                    f"127.0.0.1:{gateway.port}",
                    customer_request([1], model="_echo", raw=False),
                    token("analyst"),
                )
            finally:
                await gateway.stop(0)
    ok = replies["trusted"]
    assert ok.code == grpc.StatusCode.OK, ok.details
    seen = [v.decode() for v in decode_outputs(pb.ModelInferResponse.FromString(ok.messages[0]))[0].values]
    assert "authorization: Bearer gateway-own" in seen
    assert any(line.startswith("x-labelgate-subject-assertion: ey") for line in seen)
    for refused in ("other-ca", "wrong-name"):  # 127.0.0.1 is not the certificate's name
        assert replies[refused].code == grpc.StatusCode.UNAVAILABLE, refused
        assert replies[refused].details == "the upstream failed with UNAVAILABLE"
