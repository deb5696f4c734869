"""The leak fuzzer over REST: callers of the gateway's REST binding, and a REST upstream.

The same oracle as ``test_leak_fuzzer.py`` (whose planter and scenarios this reuses; read its
docstring for why it is sound), over three kinds of scenario against one real audited
gateway (``labelgate serve`` with a durable audit writer and session recording):

- a REST caller (curl-style JSON, sometimes asking for binary outputs) in front of the gRPC
  ``planted_upstream.py``, with that fuzzer's unary scenarios;
- gRPC and REST callers in front of ``planted_rest_upstream.py`` (``protocol: rest``), whose
  planted replies put values in response headers, unknown JSON keys, parameters (scalar and
  not), ids, model names and versions, error bodies of every status, bodies that are not
  JSON, lying binary header lengths, and bodies past ``limits.max_message_bytes``;
- model metadata and readiness from the REST upstream, the plant carried in ``x-request-id``;
- ``ModelStreamInfer`` to the REST upstream (one REST call per streamed request).

Values include credentials (PEM keys in free text and one line per element, JWTs, AWS and
GitHub tokens), planted as the gRPC fuzzer plants them. Nothing planted may reach the caller
(status, headers and body, JSON escapes decoded), nor the audit log, the recordings or the
logs. Each value must be visible when the upstream is called directly, or the scenario
planted it nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from tests.gateway.harness import (
    AuditedStack,
    TokenIssuer,
    capture_stream,
    capture_unary,
    files_at_rest,
    run_audited_gateway,
    run_planted_upstream,
)
from tests.gateway.planted_upstream import plant_parameter
from tests.gateway.test_leak_fuzzer import (
    CLEAR,
    CREDENTIAL_FORMS,
    LABELS,
    OUTPUT_TYPES,
    Planted,
    Planter,
    found_in,
    label_of,
    unary_scenario,
)
from tests.support.procs import free_port, running

EXAMPLES = 150
MAX_BYTES = 256 * 1024
REST_PUBLIC = "rest-public"  # catalogued public below
REST_UNKNOWN = "rest-uncatalogued"  # the default label
REST_LABELS: dict[str, frozenset[str]] = {REST_PUBLIC: frozenset({"public"}), REST_UNKNOWN: frozenset()}
ERROR_STATUSES = (302, 400, 401, 403, 404, 409, 413, 418, 422, 429, 500, 501, 502, 503, 504)
PLANTED_REST = Path(__file__).with_name("planted_rest_upstream.py")


@contextlib.contextmanager
def run_planted_rest_upstream(directory: Path, extra: list[str] | None = None) -> Iterator[str]:
    """A real ``planted_rest_upstream.py`` process (``extra``: e.g. ``--cert``/``--key``)."""
    port = free_port()
    command = [sys.executable, str(PLANTED_REST), "--listen", f"127.0.0.1:{port}", *(extra or [])]
    with running(command, directory / "planted-rest.log", port=port):
        yield f"127.0.0.1:{port}"


@dataclass(frozen=True)
class Stack:
    audited: AuditedStack
    grpc_upstream: str
    rest_upstream: str
    rest_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("rest-leak-fuzzer")
    rest_listen = f"127.0.0.1:{free_port()}"
    with (
        run_planted_upstream(directory) as (grpc_address, _),
        run_planted_rest_upstream(directory) as rest_address,
        run_audited_gateway(
            directory,
            grpc_address,
            token_issuer,
            catalog_entries=[{"model": REST_PUBLIC, "path": "outputs.*", "labels": ["public"]}],
            rest_listen=rest_listen,
            upstreams=[
                {"name": "planted-rest", "address": rest_address, "protocol": "rest", "models": ["rest-*"]}
            ],
            limits={"max_message_bytes": MAX_BYTES},
        ) as audited,
    ):
        yield Stack(audited, grpc_address, rest_address, f"http://{rest_listen}")


# --- what the REST upstream plants ------------------------------------------------------------


def rest_parameters(planter: Planter, where: str) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    kinds = ["sql", "key", "object", "list", "masked", "final", "number", "headers"]
    for kind in planter.draw(st.lists(st.sampled_from(kinds), max_size=3, unique=True)):
        if kind == "sql":
            parameters["sql"] = planter.secret(f"{where}/value")
        elif kind == "key":
            parameters[planter.token(f"{where}/key")] = "v"
        elif kind == "object":
            parameters["nested"] = {"row": planter.secret(f"{where}/object")}
        elif kind == "list":
            parameters["list"] = [planter.secret(f"{where}/list")]
        elif kind == "masked":
            parameters["labelgate.masked"] = planter.token(f"{where}/labelgate.masked")
        elif kind == "final":
            parameters["triton_final_response"] = planter.draw(st.booleans())
        elif kind == "headers":  # MLServer turns this into response headers: one line
            parameters["headers"] = {"x-h": planter.secret(f"{where}/headers", one_line=True)}
        else:
            parameters["rows"] = planter.draw(st.integers(0, 10**6))
    return parameters


def rest_output(
    planter: Planter, name: str, labels: frozenset[str], where: str
) -> tuple[dict[str, Any], bytes]:
    """One output of a planted REST reply, and its binary bytes when it is sent binary."""
    datatype = OUTPUT_TYPES[name]
    parameters = rest_parameters(planter, f"{where}/output-parameters")
    sent, backend = planter.label_parameter(f"{where}/output-parameters")
    if sent is not None:
        parameters["labelgate.labels"] = sent
    label = label_of(labels | {backend} if backend else labels)
    clear = label in CLEAR[planter.persona]
    where = f"{where}/values-{label}"
    output: dict[str, Any] = {"name": name, "datatype": datatype, "parameters": parameters}
    if datatype == "BYTES":
        values = [
            planter.document(where, clear) if planter.chance(1, 3) else planter.text(where, clear)
            for _ in range(planter.draw(st.integers(1, 3)))
        ]
        planter.key_column(where, values)  # a REST reply is whole: no carry-over cuts it
    elif datatype == "FP32":
        values = [0.5 * i for i in range(planter.draw(st.integers(1, 3)))]
    else:
        values = list(range(planter.draw(st.integers(1, 3))))
    output["shape"] = [len(values)]
    if planter.chance(1, 4):
        output[planter.draw(st.sampled_from(["debug", "contents", "raw", "data_b64"]))] = planter.secret(
            f"{where}/unknown-key"
        )
    binary = b""
    if datatype == "BYTES" and planter.chance(1, 4):  # Triton's binary extension
        elements = [v.encode() for v in values]
        if not clear and planter.chance(1, 2):  # not UTF-8, a value inside
            elements.append(b"\xff\xfe " + planter.token(f"{where}/binary").encode())
            output["shape"] = [len(elements)]
        binary = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
        parameters["binary_data_size"] = len(binary)
    else:
        output["data"] = values
    return output, binary


def rest_reply(planter: Planter, model: str, where: str) -> dict[str, Any]:
    """A plant for ``planted_rest_upstream.py``: what it answers to one infer request."""
    plant: dict[str, Any] = {}
    if planter.chance(1, 2):
        plant["headers"] = planter.metadata(f"{where}/headers")
    kind = planter.rng.choice(["reply"] * 8 + ["error", "not-json", "too-large", "header-length"])
    if kind == "error":
        plant["status"] = planter.draw(st.sampled_from(ERROR_STATUSES))
        message = planter.text(f"{where}/error-body", clear=False, secrets=1)
        plant["json" if planter.chance(1, 2) else "text"] = (
            {"error": message} if planter.chance(1, 2) else message
        )
        return plant
    if kind == "not-json":
        plant["text"] = f'{{"outputs": [{{"name": "text", "data": ["{planter.secret(f"{where}/not-json")}'
        return plant
    document: dict[str, Any] = {}
    for side in ("model_name", "model_version", "id"):
        choice = planter.draw(st.sampled_from(["absent", "as asked", "planted"]))
        if choice == "planted":
            document[side] = planter.secret(f"{where}/reply-{side}")
        elif choice == "as asked" and side == "model_name":
            document[side] = model
    parameters = rest_parameters(planter, f"{where}/reply-parameters")
    sent, response_label = planter.label_parameter(f"{where}/reply-parameters")
    if sent is not None:
        parameters["labelgate.labels"] = sent
    document["parameters"] = parameters
    labels = REST_LABELS[model] | ({response_label} if response_label else set())
    names = planter.draw(st.lists(st.sampled_from(sorted(OUTPUT_TYPES)), min_size=1, max_size=3, unique=True))
    outputs, binary = [], b""
    for name in names:
        output, data = rest_output(planter, name, frozenset(labels), where)
        outputs.append(output)
        binary += data
    document["outputs"] = outputs
    if planter.chance(1, 3):
        document[planter.draw(st.sampled_from(["debug", "error", "trace", "extensions"]))] = {
            "row": planter.secret(f"{where}/unknown-key")
        }
    if planter.chance(1, 12):  # malformed: a shape that does not fit its data
        outputs[0]["shape"] = [len(outputs[0].get("data", [])) + 1]
    plant["json"] = document
    if binary:
        plant["binary_hex"] = binary.hex()
    if kind == "header-length":
        plant["header_length"] = planter.token(f"{where}/header-length")
    elif kind == "too-large":
        plant["pad"] = {"value": planter.secret(f"{where}/too-large"), "bytes": MAX_BYTES}
    return plant


def metadata_reply(planter: Planter, model: str, where: str) -> dict[str, Any]:
    """A plant for a model metadata or readiness call: its public fields carry only values the
    detectors find (confidential), the rest anything."""
    plant: dict[str, Any] = {}
    if planter.chance(1, 2):
        plant["headers"] = planter.metadata(f"{where}/headers")
    if planter.chance(1, 4):
        plant["status"] = planter.draw(st.sampled_from(ERROR_STATUSES))
        plant["text"] = planter.text(f"{where}/error-body", clear=False, secrets=1)
        return plant
    tensor = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"p": planter.secret(f"{where}/tensor")},
    }
    plant["json"] = {
        "name": model if planter.chance(1, 2) else planter.detectable(f"{where}/name"),
        "versions": [planter.detectable(f"{where}/versions")],
        "platform": planter.detectable(f"{where}/platform"),
        "inputs": [tensor],
        "outputs": [],
        "parameters": {"p": planter.secret(f"{where}/parameters")},
        planter.draw(st.sampled_from(["debug", "ready", "error"])): planter.secret(f"{where}/unknown-key"),
    }
    return plant


# --- scenarios --------------------------------------------------------------------------------


@dataclass
class Scenario:
    persona: str
    kind: str  # rest-caller-grpc-upstream | rest-upstream-infer | rest-upstream-metadata
    caller: str  # grpc | rest
    model: str
    plant: str  # the base64 plant
    request: pb.ModelInferRequest | None = None
    binary_outputs: bool = False
    call: str = "ModelInfer"  # or ModelMetadata, ModelReady
    planted: list[Planted] = field(default_factory=list)
    stream_plants: list[str] = field(default_factory=list)  # ModelStreamInfer: one per request


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    planter = Planter(draw, draw(st.sampled_from(sorted(CLEAR))))
    # By plain odds (Hypothesis favours first choices): each kind and caller gets its share.
    kind = planter.rng.choice(
        ["rest-caller-grpc-upstream", "rest-upstream-infer", "rest-upstream-infer", "meta", "stream"]
    )
    if kind == "rest-caller-grpc-upstream":
        unary = unary_scenario(planter)
        request = unary.requests[0]
        return Scenario(
            planter.persona,
            kind,
            "rest",
            request.model_name,
            request.parameters["plant"].string_param,
            request,
            draw(st.booleans()),
            planted=unary.planted,
        )
    model = draw(st.sampled_from(sorted(REST_LABELS)))
    caller = planter.rng.choice(["grpc", "rest"])
    if kind == "stream":  # gRPC callers only: one REST call per streamed request
        plants = [
            plant_parameter(rest_reply(planter, model, "stream")) for _ in range(planter.rng.randint(1, 3))
        ]
        return Scenario(
            planter.persona,
            "rest-upstream-stream",
            "grpc",
            model,
            plants[0],
            call="ModelStreamInfer",
            planted=planter.planted,
            stream_plants=plants,
        )
    if kind == "meta":
        plant = metadata_reply(planter, model, "metadata")
        call = planter.rng.choice(["ModelMetadata", "ModelReady"])
        return Scenario(
            planter.persona,
            "rest-upstream-metadata",
            caller,
            model,
            plant_parameter(plant),
            call=call,
            planted=planter.planted,
        )
    plant = rest_reply(planter, model, "rest")
    return Scenario(
        planter.persona,
        "rest-upstream-infer",
        caller,
        model,
        plant_parameter(plant),
        binary_outputs=draw(st.booleans()),
        planted=planter.planted,
    )


def infer_body(scenario: Scenario) -> dict[str, Any]:
    parameters: dict[str, Any] = {"plant": scenario.plant}
    if scenario.binary_outputs:
        parameters["binary_data_output"] = True
    return {
        "id": "rest-fuzz",
        "parameters": parameters,
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}],
    }


def grpc_request(scenario: Scenario) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=scenario.model, id="rest-fuzz")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"hello")
    request.parameters["plant"].string_param = scenario.plant
    return request


def unescaped(blob: bytes) -> bytes:
    """``blob`` and the same with one level of JSON backslash escapes undone: a JSON document
    held in a JSON string (a BYTES element of a REST reply) escapes its own escapes."""
    return blob + b"\n" + blob.replace(b"\\\\", b"\\").replace(b'\\"', b'"')


def http_blob(response: httpx.Response) -> bytes:
    lines = [str(response.status_code).encode(), response.reason_phrase.encode()]
    lines += [k + b": " + v for k, v in response.headers.raw]
    return b"\n".join([*lines, response.content])


async def http_call(
    client: httpx.AsyncClient, base: str, scenario: Scenario, headers: dict[str, str]
) -> bytes:
    path = f"/v2/models/{scenario.model}"
    if scenario.call == "ModelInfer":
        response = await client.post(f"{base}{path}/infer", json=infer_body(scenario), headers=headers)
    else:
        suffix = "/ready" if scenario.call == "ModelReady" else ""
        response = await client.get(
            f"{base}{path}{suffix}", headers={**headers, "x-request-id": scenario.plant}
        )
    return http_blob(response)


async def grpc_call(address: str, scenario: Scenario, headers: dict[str, str]) -> tuple[bytes, bool]:
    """Every byte a gRPC caller receives, and whether outputs came back."""
    if scenario.call == "ModelInfer":
        request = scenario.request if scenario.request is not None else grpc_request(scenario)
        received = await capture_unary(address, request, headers)
        delivered = bool(received.messages) and bool(
            pb.ModelInferResponse.FromString(received.messages[0]).outputs
        )
        return received.blob(), delivered
    method = f"/inference.GRPCInferenceService/{scenario.call}"
    message = (pb.ModelMetadataRequest if scenario.call == "ModelMetadata" else pb.ModelReadyRequest)(
        name=scenario.model
    )
    parts: list[bytes] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString())(
            message, metadata=(*headers.items(), ("x-request-id", scenario.plant)), timeout=30
        )
        try:
            parts.append(await call)
        except grpc.aio.AioRpcError as error:
            parts.append((error.details() or "").encode())
        for key, value in [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]:
            parts.append(key.encode() + b"=" + (value if isinstance(value, bytes) else str(value).encode()))
    return b"\n".join(parts), False


def stream_requests(scenario: Scenario) -> list[pb.ModelInferRequest]:
    requests = []
    for number, plant in enumerate(scenario.stream_plants):
        request = grpc_request(dataclasses.replace(scenario, plant=plant))
        request.id = f"rest-fuzz-{number}"
        requests.append(request)
    return requests


async def through_gateway(stack: Stack, scenario: Scenario, headers: dict[str, str]) -> tuple[bytes, bool]:
    if scenario.call == "ModelStreamInfer":
        received = await capture_stream(stack.audited.address, stream_requests(scenario), headers)
        replies = [pb.ModelStreamInferResponse.FromString(m) for m in received.messages]
        return received.blob(), any(r.infer_response.outputs for r in replies)
    if scenario.caller == "grpc":
        return await grpc_call(stack.audited.address, scenario, headers)
    async with httpx.AsyncClient(timeout=30) as client:
        blob = await http_call(client, stack.rest_url, scenario, headers)
    return blob, b'"outputs":[{' in blob


async def directly(stack: Stack, scenario: Scenario) -> bytes:
    """What the upstream itself sends for the scenario (every planted value must be in it)."""
    if scenario.kind == "rest-caller-grpc-upstream":
        assert scenario.request is not None
        return (await capture_unary(stack.grpc_upstream, scenario.request, {})).blob()
    async with httpx.AsyncClient(timeout=30) as client:
        if scenario.call == "ModelStreamInfer":
            one = [dataclasses.replace(scenario, plant=p, call="ModelInfer") for p in scenario.stream_plants]
            return b"\n".join([await http_call(client, f"http://{stack.rest_upstream}", s, {}) for s in one])
        return await http_call(client, f"http://{stack.rest_upstream}", scenario, {})


@dataclass
class Tally:
    examples: int = 0
    delivered: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    leaks: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    witnesses: dict[str, str] = field(default_factory=dict)
    unseen: list[Planted] = field(default_factory=list)
    planted: list[Planted] = field(default_factory=list)


def describe(scenario: Scenario) -> str:
    plant = json.loads(base64.b64decode(scenario.plant))
    return json.dumps(
        {
            "persona": scenario.persona,
            "kind": scenario.kind,
            "caller": scenario.caller,
            "call": scenario.call,
            "model": scenario.model,
            "plant": plant,
        }
    )[:4000]


def test_no_planted_value_leaks_over_rest(stack: Stack) -> None:
    started = time.monotonic()
    tally = Tally()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios())
    def one(scenario: Scenario) -> None:
        tally.examples += 1
        tally.planted += scenario.planted
        tally.kinds[f"{scenario.kind}/{scenario.caller}/{scenario.call}"] += 1
        seen = found_in(unescaped(asyncio.run(directly(stack, scenario))), scenario.planted)
        tally.unseen += [p for p in scenario.planted if p not in seen]
        headers = stack.audited.headers(scenario.persona)
        received, delivered = asyncio.run(through_gateway(stack, scenario, headers))
        tally.delivered += delivered
        for planted in found_in(unescaped(received), scenario.planted):
            channel = f"caller {scenario.persona} via {scenario.caller}: {planted.where}"
            tally.leaks[channel].append(planted.value)
            tally.witnesses.setdefault(channel, describe(scenario))

    one()

    audited = stack.audited
    audited.gateway.process.signal(signal.SIGTERM)
    audited.gateway.process.popen.wait(timeout=60)
    at_rest = files_at_rest(audited.audit.log_dir, audited.recording_dir, *audited.log_files)
    for planted in found_in(at_rest, tally.planted):
        tally.leaks[f"at rest: {planted.where}"].append(planted.value)

    print(
        f"\nREST leak fuzzer: {tally.examples} examples, {len(tally.planted)} values planted, "
        f"{time.monotonic() - started:.1f}s; kinds {dict(tally.kinds)}; "
        f"outputs delivered in {tally.delivered}"
    )
    assert tally.examples == EXAMPLES
    assert tally.planted, "nothing was planted"
    steps = {step for planted in tally.planted for step in planted.where.split("/")}
    assert {*CREDENTIAL_FORMS, "pem-lines"} <= steps, "every credential form is planted"
    assert not tally.unseen, (
        f"the upstreams did not send {len(tally.unseen)} planted values: {tally.unseen[:30]}"
    )
    summary = "\n".join(
        f"{len(v)}x {where}: e.g. {v[0]}\n  {tally.witnesses.get(where, '')}"
        for where, v in sorted(tally.leaks.items())
    )
    assert not tally.leaks, f"planted values leaked:\n{summary}"
    assert tally.delivered >= EXAMPLES // 5, f"outputs delivered in only {tally.delivered} examples"


def test_the_rest_oracle_sees_a_planted_header() -> None:
    """The REST blob holds headers and status too, so a leak there would be found."""
    response = httpx.Response(418, headers={"x-up-a": "PLTabcdefghijklm"}, content=b"{}")
    assert found_in(http_blob(response), [Planted("PLTabcdefghijklm", "x")])
    assert LABELS[0] == "public"
