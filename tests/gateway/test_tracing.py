"""OpenTelemetry tracing through a real gateway (issue 17): spans per stage, W3C trace
context from the caller (gRPC metadata and REST headers) and on to the upstream, exported
over OTLP/HTTP to a real receiver process (``otlp_receiver.py``) that decodes the protobuf.

The demo backend records the metadata of every call it gets (``_debug-metadata``), so the
test sees the ``traceparent`` the gateway sent: the caller's trace id, a gateway span as
its parent. Values planted in the request and the values the backend answers with never
appear in any span attribute.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from labelgate import tracing
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth.devkeys import mint_dev_token
from labelgate.gateway.record import recorded_text
from labelgate.oip import tensors
from labelgate.tracing import TracingSettings, call_span, outgoing, stage
from labelgate.untrusted_text import bounded
from tests.support.procs import REPO, free_port, labelgate_command, running, wait_until

PLANTED = "zebra-PLANTED-7731"
STAGES = {"authenticate", "admit", "decide", "upstream", "classify", "enforce", "record"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield from _stack(tmp_path_factory, "http")


@pytest.fixture(scope="module")
def grpc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield from _stack(tmp_path_factory, "grpc")


def _stack(tmp_path_factory: pytest.TempPathFactory, protocol: str) -> Iterator[dict[str, Any]]:
    folder: Path = tmp_path_factory.mktemp(f"tracing-{protocol}")
    spans_file = folder / "spans.jsonl"
    spans_file.touch()
    receiver_port, backend_port, port, rest_port = free_port(), free_port(), free_port(), free_port()
    backend = f"127.0.0.1:{backend_port}"
    config = folder / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "rest_listen": f"127.0.0.1:{rest_port}",
                "admin_listen": None,
                "upstream": {"address": backend},
                "engine": "embedded",
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
                "masking": {"hash_key": "tracing-test-key"},
                "auth": {"jwt": {"trust_dev_key": True}},
                "approvals": {"enabled": False},
                "tracing": {
                    "endpoint": f"http://127.0.0.1:{receiver_port}"
                    if protocol == "http"
                    else f"127.0.0.1:{receiver_port}",
                    "protocol": protocol,
                    "service_name": "labelgate-under-test",
                    "export_interval_ms": 100,
                },
            }
        )
    )
    receiver = [
        *(sys.executable, "-m", "tests.gateway.otlp_receiver"),
        *(str(receiver_port), str(spans_file), protocol),
    ]
    with (
        running(receiver, folder / "receiver.log", port=receiver_port, name="otlp-receiver"),
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
        running(labelgate_command("serve", "--config", str(config)), folder / "gateway.log", port=port),
    ):
        wait_until(lambda: _port_answers(rest_port), 20, "the REST listener")
        yield {
            "grpc": f"127.0.0.1:{port}",
            "rest": f"http://127.0.0.1:{rest_port}",
            "backend": backend,
            "spans": spans_file,
        }


def _port_answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def _caller_context() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _token() -> str:
    return f"Bearer {mint_dev_token('ann', ['analysts'], 300)}"


def _spans_of(spans_file: Path, trace_id: str) -> list[dict[str, Any]]:
    lines = spans_file.read_text().splitlines()
    return [span for span in map(json.loads, lines) if span["trace_id"] == trace_id]


def _traced(spans_file: Path, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans once its call span (the last to end) has been exported."""
    wait_until(
        lambda: any(s["name"] == "labelgate.call" for s in _spans_of(spans_file, trace_id)),
        20,
        "the call's spans at the OTLP receiver",
    )
    return _spans_of(spans_file, trace_id)


def _traceparents_seen_by(backend: str) -> list[str]:
    request = pb.ModelInferRequest(model_name="_debug-metadata")
    with grpc.insecure_channel(backend) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=15)
    recent = {t.name: t.values for t in tensors.decode_outputs(reply)}["recent"]
    seen = [json.loads(entry) for entry in recent]
    return [value for call in seen for key, value in call["metadata"] if key == "traceparent"]


def _customer_values(backend: str) -> set[str]:
    """What the backend answers for customer 3: the values no span may carry."""
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(3)
    with grpc.insecure_channel(backend) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=15)
    values = set()
    for output in tensors.decode_outputs(reply):
        for value in output.values:
            text = value.decode() if isinstance(value, bytes) else str(value)
            if len(text) >= 6:  # long enough not to match a method or model name by chance
                values.add(text)
    return values


def _attribute_texts(spans: list[dict[str, Any]]) -> list[str]:
    texts = []
    for span in spans:
        for value in span["attributes"].values():
            texts.extend(map(str, value) if isinstance(value, list) else [str(value)])
    return texts


def _check_trace(
    spans: list[dict[str, Any]], caller_span: str, seen_parents: list[str], trace_id: str
) -> None:
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) >= STAGES, f"missing stages: {STAGES - set(by_name)}"
    call = by_name["labelgate.call"]
    assert call["parent_span_id"] == caller_span, "the call span is the child of the caller's span"
    assert call["service"] == "labelgate-under-test"
    assert call["attributes"]["labelgate.outcome"] in {"allow", "mask"}
    assert call["attributes"]["rpc.method"] == "/inference.GRPCInferenceService/ModelInfer"
    ids = {span["span_id"] for span in spans}
    assert all(span["parent_span_id"] in ids for span in spans if span is not call)
    # The upstream got the gateway's own context: same trace, the upstream span as parent.
    ours = [parent for parent in seen_parents if parent.split("-")[1] == trace_id]
    assert ours, "the upstream got no traceparent of the caller's trace"
    _, _, parent_span, _ = ours[0].split("-")
    assert parent_span == by_name["upstream"]["span_id"] and parent_span != caller_span


def test_a_grpc_call_is_traced_under_the_callers_trace_and_passed_upstream(stack) -> None:
    trace_id, caller_span, traceparent = _caller_context()
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(3)
    metadata = [("authorization", _token()), ("traceparent", traceparent), ("tracestate", "caller=1")]
    with grpc.insecure_channel(stack["grpc"]) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=15)
    seen = _traceparents_seen_by(stack["backend"])
    assert traceparent not in seen, "the caller's raw traceparent reached the upstream"
    spans = _traced(stack["spans"], trace_id)
    _check_trace(spans, caller_span, seen, trace_id)
    texts = _attribute_texts(spans)
    leaked = {value for value in _customer_values(stack["backend"]) if any(value in t for t in texts)}
    assert not leaked, f"span attributes carry data values: {leaked}"


def test_spans_go_to_an_otlp_grpc_receiver_too(grpc_stack) -> None:
    trace_id, caller_span, traceparent = _caller_context()
    request = pb.ModelInferRequest(model_name="sentiment")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(f"great {PLANTED}".encode())
    metadata = [("authorization", _token()), ("traceparent", traceparent)]
    with grpc.insecure_channel(grpc_stack["grpc"]) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=15)
    spans = _traced(grpc_stack["spans"], trace_id)
    _check_trace(spans, caller_span, _traceparents_seen_by(grpc_stack["backend"]), trace_id)
    assert not [text for text in _attribute_texts(spans) if PLANTED in text]


def test_a_rest_call_is_traced_and_planted_text_is_in_no_span(stack) -> None:
    trace_id, caller_span, traceparent = _caller_context()
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [f"great {PLANTED}"]}]}
    reply = httpx.post(
        f"{stack['rest']}/v2/models/sentiment/infer",
        json=body,
        headers={"authorization": _token(), "traceparent": traceparent},
        timeout=15,
    )
    assert reply.status_code == 200, reply.text
    seen = _traceparents_seen_by(stack["backend"])
    spans = _traced(stack["spans"], trace_id)
    _check_trace(spans, caller_span, seen, trace_id)
    assert not [text for text in _attribute_texts(spans) if PLANTED in text]


def test_a_refused_call_is_traced_with_its_reason_and_no_upstream_span(stack) -> None:
    trace_id, _, traceparent = _caller_context()
    with grpc.insecure_channel(stack["grpc"]) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest(model_name="sentiment"), metadata=[("traceparent", traceparent)], timeout=15
        )
    spans = _traced(stack["spans"], trace_id)
    names = {span["name"] for span in spans}
    assert "authenticate" in names and "upstream" not in names
    call = next(span for span in spans if span["name"] == "labelgate.call")
    assert call["attributes"]["labelgate.outcome"] == "deny"
    assert (
        call["attributes"]["labelgate.reason"] and call["attributes"]["rpc.grpc.status"] == "UNAUTHENTICATED"
    )


def test_a_model_name_an_anonymous_caller_sent_is_bounded_in_its_span(stack) -> None:
    trace_id, _, traceparent = _caller_context()
    name = f"patient {PLANTED} " * 2000
    with grpc.insecure_channel(stack["grpc"]) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest(model_name=name), metadata=[("traceparent", traceparent)], timeout=15
        )
    spans = _traced(stack["spans"], trace_id)
    call = next(span for span in spans if span["name"] == "labelgate.call")
    assert call["attributes"]["labelgate.model"] == recorded_text(name)
    assert not [text for text in _attribute_texts(spans) if PLANTED in text]


def test_tracing_off_costs_nothing_and_forwards_the_callers_w3c_traceparent() -> None:
    assert TracingSettings().endpoint is None
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert call_span("m", "x", [("traceparent", traceparent)]) is stage("s")
    kept = (("traceparent", traceparent), ("x-request-id", "r"))
    assert outgoing(kept, frozenset({"traceparent"}), upstream="default") == kept


def test_bad_tracing_settings_are_refused() -> None:
    from pydantic import ValidationError

    for bad in ({"protocol": "zipkin"}, {"sample_ratio": 2}, {"endpoint": ""}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            TracingSettings.model_validate(bad)


@pytest.fixture
def memory_tracer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``tracing`` on, its spans kept in memory: what ``call_span`` makes of its arguments."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_configured_tracing_holds_opentelemetrys_trace_context_loggers_to_errors() -> None:
    shutdown = tracing.configure(TracingSettings(endpoint=f"127.0.0.1:{free_port()}"))
    try:
        for name in ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext"):
            assert logging.getLogger(name).getEffectiveLevel() >= logging.ERROR
    finally:
        shutdown()


def test_a_callers_method_name_is_bounded_in_its_span(memory_tracer: Any) -> None:
    method = "/labelgate.v1.demo.CustomerDirectory/ssn_123-45-6789_" + "y" * 6000
    with call_span(method, "m", []):
        pass
    (span,) = memory_tracer.get_finished_spans()
    assert span.attributes["rpc.method"] == recorded_text(method)  # as the log line and the record
    assert "123-45-6789" not in span.attributes["rpc.method"]
    short = "/inference.GRPCInferenceService/ModelInfer"
    with call_span(short, "m", []):
        pass
    assert memory_tracer.get_finished_spans()[-1].attributes["rpc.method"] == short


def test_bounded_text_is_the_records_bound() -> None:
    for text in ("", "x" * 1024, "x" * 1025, "\u202e" * 5000):
        assert bounded(text) == recorded_text(text)
