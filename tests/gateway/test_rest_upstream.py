"""REST upstreams (``protocol: rest``): MLServer 1.7 as a real peer, in its own virtualenv,
reached by gRPC callers (raw and typed), by curl-style JSON over the gateway's REST binding and
by ``tritonclient.http`` (binary and JSON outputs), next to a gRPC upstream (the demo backend),
routed by model. Values are byte-checked per persona; the tokens MLServer's model plants in a
response header, a reply parameter, the id and the model version never arrive."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth import mint_dev_token
from labelgate.config import GatewaySettings, UpstreamSettings
from labelgate.gateway import rest_upstream
from labelgate.gateway.rest_upstream import RestUpstream
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.gateway.upstream import MalformedUpstream, UpstreamStatus
from labelgate.oip import rest
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
    # The assertion is a JWT: echoed back, the secret detector empties it (restricted), as it
    # would any credential in a reply; that the header was sent is what this checks.
    assert any(line.startswith("x-labelgate-subject-assertion: ") for line in seen), seen
    assert not any("x-labelgate-subject-assertion: ey" in line for line in seen)
    for refused in ("other-ca", "wrong-name"):  # 127.0.0.1 is not the certificate's name
        assert replies[refused].code == grpc.StatusCode.UNAVAILABLE, refused
        assert replies[refused].details == "the upstream failed with UNAVAILABLE"


# --- a scripted upstream in this process: replies no real server sends --------------------------
# (MLServer above is well-behaved; these are the replies an untrusted upstream could choose.)

SCRIPTED_MODEL = "rest-public"  # catalogued public below, so a reply that parses is released
SMUGGLED = 8775189971295653954952255461945496337279125397783676024143793713714  # text, as a number
OK_REPLY = {
    "model_name": SCRIPTED_MODEL,
    "outputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}],
}


@dataclass
class Scripted:
    """A raw HTTP/1.1 upstream on loopback: a request for a path in ``answers`` gets (status,
    extra headers, body) as they are, any other a well-formed reply; ``seen`` keeps the
    headers of each request (names in lower case)."""

    answers: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)
    seen: list[dict[str, str]] = field(default_factory=list)
    # Seconds between the bytes of the reply (head and body), when not 0: a stalling upstream.
    trickle: float = 0.0
    trickled: int = 0  # bytes sent a byte at a time

    def answer(self, path: str, document: object, headers: list[tuple[str, str]] | None = None) -> None:
        self.answers[path] = (200, headers or [], json.dumps(document).encode())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines if line)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(headers)
            path = request_line.split(" ")[1]
            default = OK_REPLY if path.endswith("/infer") else {"name": "s", "version": "1", "extensions": []}
            status, extra, body = self.answers.get(path, (200, [], json.dumps(default).encode()))
            head = [f"HTTP/1.1 {status} X", "content-type: application/json", f"content-length: {len(body)}"]
            head += ["connection: close", *(f"{k}: {v}" for k, v in extra), "", ""]
            reply = "\r\n".join(head).encode() + body
            if not self.trickle:
                writer.write(reply)
                await writer.drain()
            for byte in reply if self.trickle else b"":
                writer.write(bytes([byte]))
                await writer.drain()
                self.trickled += 1
                await asyncio.sleep(self.trickle)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    try:
        yield script, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def scripted_upstream(scripted: tuple[Scripted, str]) -> AsyncIterator[RestUpstream]:
    upstream = RestUpstream(UpstreamSettings(address=scripted[1]), MAX_BYTES)
    try:
        yield upstream
    finally:
        await upstream.close()


@pytest.fixture
async def scripted_gateway(
    scripted: tuple[Scripted, str], tmp_path: Path
) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway whose ``rest-*`` models are the scripted upstream's; yields it and its REST URL."""
    catalog = json.loads(CATALOG.read_text())
    catalog["entries"] += [{"model": SCRIPTED_MODEL, "path": "outputs.*", "labels": ["public"]}]
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    listen = f"127.0.0.1:{free_port()}"
    gateway = Gateway(
        GatewaySettings(
            listen=f"127.0.0.1:{free_port()}",
            rest_listen=listen,
            admin_listen=None,
            upstreams=[
                {"name": "scripted", "address": scripted[1], "protocol": "rest", "models": ["rest-*"]}
            ],
            policy={"dir": str(REPO / "rego")},
            classification={"catalog_file": str(tmp_path / "catalog.json")},
            masking={"hash_key": "rest-upstream-hash-key-0123456789"},
            limits={"max_message_bytes": MAX_BYTES},
            auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        )
    )
    await gateway.start()
    try:
        yield gateway, f"http://{listen}"
    finally:
        await gateway.stop(0)


def scripted_request(request_id: str = "") -> pb.ModelInferRequest:
    return customer_request([1], model=SCRIPTED_MODEL, raw=False, request_id=request_id)


async def test_a_reply_protobuf_cannot_carry_is_malformed_and_quotes_nothing(
    scripted: tuple[Scripted, str], scripted_gateway: tuple[Gateway, str]
) -> None:
    """An out-of-range shape made protobuf raise "Value out of range: <the number>", which grpc
    sent the caller as UNKNOWN: a channel for any bytes the upstream chose. A lone surrogate
    (valid JSON, no UTF-8 form) made a REST caller's 500 text/plain with a traceback, and a
    stream wait forever. Each is now the fixed UPSTREAM_MALFORMED."""
    script, _ = scripted
    gateway, url = scripted_gateway
    path = f"/v2/models/{SCRIPTED_MODEL}/infer"
    script.answer(path, {"outputs": [{"name": "text", "datatype": "BYTES", "shape": [SMUGGLED], "data": []}]})
    unary = await capture_unary(f"127.0.0.1:{gateway.port}", scripted_request(), token("analyst"))
    assert (unary.code, unary.details) == (
        grpc.StatusCode.INTERNAL,
        "the upstream sent a reply that does not parse",
    )
    assert str(SMUGGLED)[:12].encode() not in unary.blob()

    script.answers[path] = (200, [], b'{"id": "\\ud800", "outputs": []}')
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{url}/v2/models/{SCRIPTED_MODEL}/infer",
            json={"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1], "data": [1]}]},
            headers=token("analyst"),
        )
    assert (reply.status_code, reply.headers["content-type"]) == (502, "application/json"), reply.text
    assert reply.json()["reason"] == "UPSTREAM_MALFORMED"
    stream = await capture_stream(
        f"127.0.0.1:{gateway.port}", [scripted_request("s-1")], token("analyst"), deadline=10
    )
    assert (stream.code, stream.details) == (
        grpc.StatusCode.INTERNAL,
        "the upstream sent a reply that does not parse",
    )


async def test_a_parser_failure_of_any_kind_is_malformed_in_fixed_text(
    scripted_upstream: RestUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the parser lets through (not only ``InvalidInput``) is a malformed reply: its
    text may quote the reply, and grpc would send it to the caller."""

    def fails(*args: object) -> pb.ModelInferResponse:
        raise ValueError(f"Value out of range: {SMUGGLED}")

    monkeypatch.setattr(rest, "upstream_infer_reply", fails)
    infer = scripted_upstream.unary_unary("/inference.GRPCInferenceService/ModelInfer", None, None)
    with pytest.raises(MalformedUpstream) as caught:
        await infer(scripted_request(), timeout=5)
    assert caught.value.message == "the upstream sent a reply that does not parse"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_streamed_call_that_fails_unexpectedly_ends_the_stream(
    scripted_upstream: RestUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed call that raised anything but a ``LabelgateError`` queued nothing, so the
    stream waited for its reply forever; it now ends the stream as a malformed reply."""

    def fails(parse: object) -> pb.ModelInferResponse:
        raise ValueError(f"Value out of range: {SMUGGLED}")

    monkeypatch.setattr(rest_upstream, "_parsed", fails)
    open_stream = scripted_upstream.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer", None, None
    )
    stream = open_stream(metadata=(), timeout=5)
    await stream.write(scripted_request("s-1"))
    await stream.done_writing()

    async def drain() -> list[object]:
        return [reply async for reply in stream]

    with pytest.raises(MalformedUpstream) as caught:
        await asyncio.wait_for(drain(), timeout=5)
    assert caught.value.message == "the upstream sent a reply that does not parse"


async def test_a_compressed_reply_is_refused_never_inflated(
    scripted: tuple[Scripted, str], scripted_upstream: RestUpstream
) -> None:
    """The gateway asks for identity; httpx would still inflate gzip or brotli, after the
    size limit counted the compressed bytes (317 bytes of brotli made 200 MiB)."""
    script, _ = scripted
    document = json.dumps({"name": "s", "version": "1", "extensions": []}).encode()
    script.answers["/v2"] = (200, [("content-encoding", "gzip")], gzip.compress(document))
    metadata = scripted_upstream.unary_unary("/inference.GRPCInferenceService/ServerMetadata", None, None)
    with pytest.raises(MalformedUpstream, match="compressed"):
        await metadata(pb.ServerMetadataRequest(), timeout=5)
    assert script.seen[-1]["accept-encoding"] == "identity"
    script.answers["/v2"] = (200, [("content-encoding", "identity")], document)
    assert await metadata(pb.ServerMetadataRequest(), timeout=5) == pb.ServerMetadataResponse(
        name="s", version="1"
    )


async def test_an_upstream_sending_a_byte_at_a_time_is_cut_at_the_deadline(
    scripted: tuple[Scripted, str], scripted_upstream: RestUpstream
) -> None:
    """httpx bounds each read, not the exchange: an upstream sending a byte every 50 ms (the
    reply would take a minute) kept a call with a 1 s deadline to the end, and the readiness
    probe too. Both end at their deadline now."""
    script, _ = scripted
    script.trickle = 0.05
    script.answer("/v2", {"name": "s", "version": "1", "extensions": [], "pad": "x" * 1200})
    metadata = scripted_upstream.unary_unary("/inference.GRPCInferenceService/ServerMetadata", None, None)
    with pytest.raises(UpstreamStatus) as caught:
        await asyncio.wait_for(metadata(pb.ServerMetadataRequest(), timeout=1), timeout=30)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert script.trickled < 1200  # cut before the reply was out
    sent = script.trickled
    assert not await asyncio.wait_for(scripted_upstream.reachable(within=1), timeout=30)
    assert script.trickled - sent < 1200


async def test_a_caller_header_httpx_cannot_encode_is_not_forwarded(
    scripted: tuple[Scripted, str], scripted_upstream: RestUpstream
) -> None:
    """A caller's ``x-request-id`` with byte 0xE9 arrives as latin-1 text httpx cannot encode
    (a UnicodeEncodeError, so a 500): it is left out, and the call goes on."""
    script, _ = scripted
    ready = scripted_upstream.unary_unary("/inference.GRPCInferenceService/ServerReady", None, None)
    assert (await ready(pb.ServerReadyRequest(), metadata=(("x-request-id", "caf\xe9"),), timeout=5)).ready
    assert "x-request-id" not in script.seen[-1]
    await ready(pb.ServerReadyRequest(), metadata=(("x-request-id", "cafe"),), timeout=5)
    assert script.seen[-1]["x-request-id"] == "cafe"


async def test_bytes_not_text_asked_as_json_is_the_upstreams_error(
    scripted: tuple[Scripted, str], scripted_gateway: tuple[Gateway, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A BYTES output that is not UTF-8 (here a lone surrogate) cannot be JSON text: the
    upstream's fault, a 502, not the caller's 400; and the call's record says so (it said
    allow: the reply was encoded after its record)."""
    script, _ = scripted
    _, url = scripted_gateway
    path = f"/v2/models/{SCRIPTED_MODEL}/infer"
    script.answers[path] = (
        200,
        [],
        b'{"outputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
    )
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{url}{path}",
                json={"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1], "data": [1]}]},
                headers=token("analyst"),
            )
    assert (reply.status_code, reply.json()["reason"]) == (502, "REST_OUTPUT_NOT_TEXT"), reply.text
    assert "#0" in reply.text, reply.text  # named by position: the name is the upstream's text
    recorded = [
        (record.reason, record.outcome)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "labelgate.decision" and record.getMessage() == "call"
    ]
    assert recorded == [("REST_OUTPUT_NOT_TEXT", "deny")], recorded


async def test_a_content_length_in_digits_int_refuses_is_not_trusted(scripted_upstream: RestUpstream) -> None:
    """``str.isdigit()`` accepts "²" (byte 0xB2, decoded as latin-1), which ``int()`` refuses:
    the size check raised ValueError. Such a length is ignored; the body is still bounded."""
    for declared in (b"\xb2", b"1\xb2", b"\xb9\xb2"):
        reply = httpx.Response(200, headers=[(b"content-length", declared)], stream=httpx.ByteStream(b"{}"))
        assert reply.headers["content-length"].isdigit()  # what the old check let through to int()
        assert await scripted_upstream._bounded(reply) == b"{}"
