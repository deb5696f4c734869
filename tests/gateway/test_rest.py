"""The REST binding (KServe v2) through the same pipeline, with real clients: httpx as curl
would send it (JSON), and ``tritonclient.http`` (binary tensors by default), against the
real demo backend behind a gateway running in this process."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import numpy as np
import pytest
import starlette.datastructures

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import mint_dev_token
from labelgate.calls import Call, Target, peer_address
from labelgate.config import GatewaySettings, UpstreamSettings
from labelgate.demo.data import customer
from labelgate.gateway.rest import RestGateway
from labelgate.gateway.server import Gateway
from labelgate.gateway.upstream import Upstream
from tests.gateway.harness import run_backend
from tests.support.procs import REPO, free_port

IDS = [1, 2, 3]
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_backend(tmp_path_factory.mktemp("rest-backend")) as (address, _):
        yield address


@pytest.fixture
async def rest_url(backend: str) -> AsyncIterator[str]:
    """A gateway serving gRPC and, on ``rest_listen``, the REST binding."""
    listen = f"127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        rest_listen=listen,
        admin_listen=None,
        upstream={"address": backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "rest-test-hash-key-0123456789"},
        limits={"max_message_bytes": MAX_BODY},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield f"http://{listen}"
    finally:
        await gateway.stop(0)


DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"


def token(sub: str, *groups: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(sub, list(groups), 300, DEV_KEYS)}"}


def json_request(ids: list[int]) -> dict:
    return {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [len(ids)], "data": ids}]}


async def test_curl_style_json_infer_is_masked_like_grpc(rest_url: str) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            json=json_request(IDS),
            headers=token("ana", "analysts"),
        )
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    rows = [customer(i) for i in IDS]
    # Analysts see the last 4 characters of confidential values and nothing of restricted ones.
    assert [value[-4:] for value in outputs["ssn"]["data"]] == [row.ssn[-4:] for row in rows]
    assert all(row.ssn not in reply.text for row in rows)
    assert outputs["account_secret"]["data"] == ["", "", ""]
    assert outputs["account_secret"]["parameters"]["labelgate.masked"]
    assert outputs["customer_id"]["data"] == IDS


async def test_tritonclient_http_with_binary_outputs(rest_url: str) -> None:
    import tritonclient.http as triton

    def call() -> dict[str, list]:
        client = triton.InferenceServerClient(rest_url.removeprefix("http://"))
        infer_input = triton.InferInput("customer_ids", [len(IDS)], "INT64")
        infer_input.set_data_from_numpy(np.array(IDS, dtype=np.int64))
        result = client.infer("customer-profile", [infer_input], headers=token("nora"))
        return {name: result.as_numpy(name).tolist() for name in ("customer_id", "ssn", "segment")}

    outputs = await asyncio.to_thread(call)
    assert outputs["customer_id"] == IDS
    assert all(value != customer(i).ssn.encode() for value, i in zip(outputs["ssn"], IDS, strict=True))
    assert outputs["segment"] == [customer(i).segment.encode() for i in IDS], "public fields pass"


async def test_refusals_are_the_bindings_json_errors(rest_url: str) -> None:
    async with httpx.AsyncClient() as client:
        no_token = await client.post(f"{rest_url}/v2/models/customer-profile/infer", json=json_request(IDS))
        shared = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            json={
                "inputs": [
                    {
                        "name": "customer_ids",
                        "datatype": "INT64",
                        "shape": [1],
                        "parameters": {"shared_memory_region": "r0"},
                    }
                ]
            },
            headers=token("ana", "analysts"),
        )
        too_big = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            content=b"{" + b" " * MAX_BODY + b"}",
            headers=token("ana", "analysts"),
        )
        unknown = await client.post(
            f"{rest_url}/v2/models/no-such-model/infer",
            json=json_request(IDS),
            headers=token("ana", "analysts"),
        )
    assert (no_token.status_code, no_token.json()["reason"]) == (401, "NO_CREDENTIALS"), no_token.text
    assert (shared.status_code, shared.json()["reason"]) == (400, "SHARED_MEMORY_UNSUPPORTED")
    assert (too_big.status_code, too_big.json()["reason"]) == (413, "REQUEST_TOO_LARGE")
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_health_and_metadata(rest_url: str) -> None:
    headers = token("ana", "analysts")
    async with httpx.AsyncClient() as client:
        live = await client.get(f"{rest_url}/v2/health/live", headers=headers)
        ready = await client.get(f"{rest_url}/v2/health/ready", headers=headers)
        metadata = await client.get(f"{rest_url}/v2/models/customer-profile", headers=headers)
        model_ready = await client.get(f"{rest_url}/v2/models/customer-profile/ready", headers=headers)
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert metadata.json()["name"] == "customer-profile"
    assert [i["name"] for i in metadata.json()["inputs"]] == ["customer_ids"]
    assert model_ready.status_code == 200
    assert json.loads(model_ready.text) == {"ready": True}


async def test_the_peer_is_the_socket_not_a_forwarded_header(
    rest_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A loopback caller's X-Forwarded-For does not choose the peer the audit record and the
    session id are made from (uvicorn's proxy headers are off); nor does the reply say what
    serves it."""
    headers = {**token("ana", "analysts"), "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{rest_url}/v2/health/live", headers=headers)
    assert reply.status_code == 200
    assert "server" not in reply.headers
    peers = [record.peer for record in caplog.records if record.getMessage() == "call"]  # type: ignore[attr-defined]
    assert peers and all(peer.startswith("ipv4:127.0.0.1:") for peer in peers), peers
    assert "203.0.113.9" not in caplog.text


async def test_a_tritonclient_timeout_is_the_calls_deadline(rest_url: str) -> None:
    """``tritonclient.http``'s ``infer(timeout=µs)`` (the request parameter ``timeout``) bounds
    the call like a gRPC deadline: one microsecond has run out before the upstream is asked."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    def call(timeout: int) -> tuple[str, str]:
        client = triton.InferenceServerClient(rest_url.removeprefix("http://"))
        infer_input = triton.InferInput("customer_ids", [len(IDS)], "INT64")
        infer_input.set_data_from_numpy(np.array(IDS, dtype=np.int64))
        try:
            result = client.infer("customer-profile", [infer_input], headers=token("nora"), timeout=timeout)
        except InferenceServerException as error:
            return str(error.status()), str(error.message())
        return "200", str(result.as_numpy("customer_id").tolist())

    assert await asyncio.to_thread(call, 60_000_000) == ("200", str(IDS))
    status, message = await asyncio.to_thread(call, 1)
    assert status == "504", message
    async with httpx.AsyncClient() as client:
        late = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            json={**json_request(IDS), "parameters": {"timeout": 1}},
            headers=token("ana", "analysts"),
        )
    assert (late.status_code, late.json()["reason"]) == (504, "UPSTREAM_DEADLINE_EXCEEDED"), late.text


def calls_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(reason, outcome) of each call record written (the record stage logs each once)."""
    return [
        (record.reason, record.outcome)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "labelgate.decision" and record.getMessage() == "call"
    ]


def with_input(**fields: object) -> dict:
    return {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1], "data": [1], **fields}]}


async def test_a_body_is_parsed_only_for_an_authenticated_caller_and_refusals_are_recorded(
    rest_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An anonymous caller is refused before its body is read, so it learns nothing of how the
    body parses; an authenticated caller's malformed or shared-memory body is refused and
    recorded like any refusal (it was neither, before)."""
    url = f"{rest_url}/v2/models/customer-profile/infer"
    shared = with_input(parameters={"shared_memory_region": "r0"})
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            anonymous = [
                await client.post(url, json=shared),
                await client.post(url, content=b"not json"),
            ]
            refused = [
                await client.post(url, json=shared, headers=token("ana", "analysts")),
                await client.post(url, content=b"not json", headers=token("ana", "analysts")),
            ]
    for reply in anonymous:
        assert (reply.status_code, reply.json()["reason"]) == (401, "NO_CREDENTIALS"), reply.text
    assert [(r.status_code, r.json()["reason"]) for r in refused] == [
        (400, "SHARED_MEMORY_UNSUPPORTED"),
        (400, "REST_REQUEST_INVALID"),
    ]
    assert calls_logged(caplog) == [
        ("NO_CREDENTIALS", "deny"),
        ("NO_CREDENTIALS", "deny"),
        ("SHARED_MEMORY_UNSUPPORTED", "deny"),
        ("REST_REQUEST_INVALID", "deny"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(with_input(shape=[2**64])).encode(),
        json.dumps(with_input(shape=[True])).encode(),
        json.dumps({**with_input(), "id": "\ud800"}).encode(),
        json.dumps({**with_input(), "parameters": {"\ud800": 1}}).encode(),
    ],
    ids=["shape-2**64", "shape-true", "id-surrogate", "parameter-surrogate"],
)
async def test_values_protobuf_cannot_carry_are_a_recorded_400(
    rest_url: str, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """They were protobuf's ValueError: a 500 text/plain, a traceback, no record."""
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{rest_url}/v2/models/customer-profile/infer", content=body, headers=token("ana", "analysts")
            )
    assert (reply.status_code, reply.json()["reason"]) == (400, "REST_REQUEST_INVALID"), reply.text
    assert calls_logged(caplog) == [("REST_REQUEST_INVALID", "deny")]
    assert "Traceback" not in caplog.text


async def test_an_unexpected_error_is_a_fixed_500_that_quotes_nothing(
    rest_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything but a ``LabelgateError`` is the binding's JSON error with a fixed reason, and
    only its type is logged: not Starlette's text/plain 500, nor a traceback quoting it."""
    secret = "SSN 123-45-6789"

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(RestGateway, "_unary", broken)
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{rest_url}/v2", headers=token("ana", "analysts"))
    assert (reply.status_code, reply.headers["content-type"]) == (500, "application/json")
    assert reply.json() == {"error": "internal error in the gateway", "reason": "INTERNAL_ERROR"}
    assert secret not in reply.text and secret not in caplog.text
    logged = [vars(record) for record in caplog.records if record.name == "labelgate.gateway.rest"]
    assert [entry.get("error_type") for entry in logged] == ["RuntimeError"]
    assert all(secret not in repr(entry) for entry in logged)


async def test_json_numbers_larger_than_the_limit_as_raw_tensors_are_a_recorded_413(
    rest_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``0,`` is two bytes of JSON and eight of INT64: a body within the limit could build a
    request four times over it (spending the CPU first, on the loop) and was then refused as
    the upstream's RESOURCE_EXHAUSTED. The declared shape is checked before the data is read."""
    zeros = MAX_BODY // 2 - 64
    data = "[" + ",".join("0" * zeros) + "]"  # compact, as a client writes it
    header = {"name": "customer_ids", "datatype": "INT64", "shape": [zeros], "data": None}
    body = json.dumps({"inputs": [header]}).replace("null", data)
    assert len(body) < MAX_BODY < zeros * 8
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{rest_url}/v2/models/customer-profile/infer", content=body, headers=token("ana", "analysts")
            )
    assert (reply.status_code, reply.json()["reason"]) == (413, "REQUEST_TOO_LARGE"), reply.text
    assert "inputs[0] as raw tensor bytes" in reply.json()["error"], "refused before it was built"
    assert calls_logged(caplog) == [("REQUEST_TOO_LARGE", "deny")]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/models/customer-profile/"), ("POST", "/v2/models/customer-profile/infer/")],
)
async def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(
    rest_url: str, method: str, path: str
) -> None:
    """Starlette redirected it (307) to a URL built from the caller's Host header."""
    async with httpx.AsyncClient() as client:
        reply = await client.request(
            method, f"{rest_url}{path}", headers={**token("ana", "analysts"), "host": "evil.example:1234"}
        )
    assert (reply.status_code, reply.json()["reason"]) == (404, "REST_ROUTE_UNKNOWN"), reply.text
    assert "location" not in reply.headers


async def test_an_ipv6_caller_is_one_peer_over_rest_and_grpc(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """REST wrote every caller as ``ipv4:``, and grpc percent-encodes the brackets
    (``ipv6:%5B::1%5D:port``), which also kept the port in the policy's ``request.peer``."""
    grpc_listen, rest_listen = f"[::1]:{free_port()}", f"[::1]:{free_port()}"
    settings = GatewaySettings(
        listen=grpc_listen,
        rest_listen=rest_listen,
        admin_listen=None,
        upstream={"address": backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "rest-test-hash-key-0123456789"},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        with caplog.at_level(logging.INFO, logger="labelgate.decision"):
            async with httpx.AsyncClient() as client:
                reply = await client.get(
                    f"http://{rest_listen}/v2/health/live", headers=token("ana", "analysts")
                )
            assert reply.status_code == 200
            async with grpc.aio.insecure_channel(grpc_listen) as channel:
                ready = channel.unary_unary(
                    "/inference.GRPCInferenceService/ServerLive",
                    request_serializer=pb.ServerLiveRequest.SerializeToString,
                    response_deserializer=pb.ServerLiveResponse.FromString,
                )
                await ready(pb.ServerLiveRequest(), metadata=tuple(token("ana", "analysts").items()))
    finally:
        await gateway.stop(0)
    peers = [record.peer for record in caplog.records if record.getMessage() == "call"]  # type: ignore[attr-defined]
    assert len(peers) == 2 and all(peer.startswith("ipv6:[::1]:") for peer in peers), peers
    assert peer_address(peers[0]) == peer_address(peers[1]) == "ipv6:[::1]"


async def test_a_large_body_is_parsed_off_the_event_loop() -> None:
    """Parsing JSON tensors costs ~70 ms a MiB; on the loop it stalls every other call."""
    threads: list[str] = []

    def parse(body: bytes) -> int:
        threads.append(threading.current_thread().name)
        return len(body)

    class Pipeline:
        def authenticate(self, call: Call) -> None:
            return None

    class Request:
        headers = starlette.datastructures.Headers({})
        client = None

        def __init__(self, size: int) -> None:
            self.size = size

        async def stream(self) -> AsyncIterator[bytes]:
            yield b" " * self.size

    upstream = Upstream(UpstreamSettings(address="127.0.0.1:1"), 1 << 20)
    try:
        gateway = RestGateway(Pipeline(), upstream, 1 << 20)  # type: ignore[arg-type]
        call = gateway._call(Request(0), "ModelInfer")  # type: ignore[arg-type]
        target = Target(service="inference.GRPCInferenceService", model="m")
        for size in (1000, 300 * 1024):
            assert await gateway.parsed_body(Request(size), call, target, parse) == size  # type: ignore[arg-type]
    finally:
        await upstream.close()
    main = threading.current_thread().name
    assert threads[0] == main and threads[1] != main


@pytest.mark.parametrize(
    "content_type", ["application/xml", "multipart/form-data; boundary=x", "text/html", ""]
)
async def test_a_body_of_another_content_type_is_a_recorded_415(rest_url: str, content_type: str) -> None:
    """The reviewer's repro: ``content-type: application/xml`` with a JSON body was read as
    JSON (200). Refused unread, in the binding's error form."""
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            content=json.dumps(json_request(IDS)),
            headers={**token("ana", "analysts"), "content-type": content_type},
        )
    assert (reply.status_code, reply.json()["reason"]) == (415, "REST_CONTENT_TYPE_UNSUPPORTED"), reply.text
    assert "application/json" in reply.json()["error"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # tritonclient.http (geventhttpclient)
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.example+json",
        "application/octet-stream",  # tritonclient.http.aio's bytes (aiohttp)
        "text/plain; charset=utf-8",  # tritonclient.http.aio's JSON text (aiohttp)
        "application/x-www-form-urlencoded",  # curl -d, as the README's examples send
    ],
)
async def test_json_and_what_clients_send_for_it_are_read(rest_url: str, content_type: str | None) -> None:
    """Read as JSON, so a body that is not a request is the parser's 400, not a 415."""
    headers = token("ana", "analysts") | ({"content-type": content_type} if content_type is not None else {})
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer", content=b'{"inputs":"x"}', headers=headers
        )
        deep = await client.post(
            f"{rest_url}/v2/models/customer-profile/infer",
            content=b"[" * 20_000 + b"]" * 20_000,
            headers=headers,
        )
    assert (reply.status_code, reply.json()["reason"]) == (400, "REST_REQUEST_INVALID"), reply.text
    assert (deep.status_code, deep.json()) == (
        400,
        {"error": "the request nests too deeply to read as JSON", "reason": "REST_REQUEST_INVALID"},
    )
