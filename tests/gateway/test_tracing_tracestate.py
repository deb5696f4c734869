"""A caller's ``tracestate`` is never adopted (review: what leaves the gateway, finding 2).

Its vendor text is anyone's, sent before authentication. Adopted, OpenTelemetry copied it
onto every span the gateway exported and into the ``tracestate`` the upstream got. The call
span is the child of the caller's trace id and span id only, with an empty trace state.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.oip import tensors
from labelgate.tracing import call_span, outgoing, stage
from tests.gateway.aio import backend_seen, infer
from tests.gateway.expected import customer_request
from tests.gateway.harness import GatewayPool, TokenIssuer
from tests.gateway.test_tracing import (  # noqa: F401  (memory_tracer, stack: fixtures)
    _caller_context,
    _token,
    _traced,
    memory_tracer,
    stack,
)
from tests.support.procs import wait_until

MARKER = "ssn:078-05-1120"
TRACESTATE = f"acme={MARKER},ro@vendor=card:4111111111111111"  # by the W3C grammar
BOTH = frozenset({"traceparent", "tracestate"})


def test_the_call_span_keeps_the_callers_trace_and_drops_its_tracestate(memory_tracer: Any) -> None:  # noqa: F811
    trace_id, caller_span, traceparent = _caller_context()
    with (
        call_span("/s/M", "m", [("traceparent", traceparent), ("tracestate", TRACESTATE)]),
        stage("upstream"),
    ):
        sent = dict(outgoing([("tracestate", TRACESTATE), ("x-request-id", "r")], BOTH, upstream="default"))
    spans = memory_tracer.get_finished_spans()
    assert {span.name for span in spans} == {"labelgate.call", "upstream"}
    for span in spans:
        assert f"{span.context.trace_id:032x}" == trace_id  # the caller's trace holds
        assert len(span.context.trace_state) == 0, span.context.trace_state.to_header()
    call = next(span for span in spans if span.name == "labelgate.call")
    assert f"{call.parent.span_id:016x}" == caller_span
    assert call.parent.trace_state is not None and len(call.parent.trace_state) == 0
    # The upstream gets the gateway's traceparent (same trace) and no tracestate at all.
    assert set(sent) == {"traceparent", "x-request-id"}
    assert sent["traceparent"].split("-")[1] == trace_id


def test_a_malformed_tracestate_is_never_parsed_nor_logged(
    memory_tracer: Any,  # noqa: F811  (test_tracing's fixture)
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace_id, _, traceparent = _caller_context()
    bad = "a=1,ssn=123-45-6789 " + "x" * 400 + "\x9b"
    with (
        caplog.at_level(logging.DEBUG),
        call_span("/s/M", "m", [("traceparent", traceparent), ("tracestate", bad)]),
    ):
        pass
    assert not [record for record in caplog.records if "123-45-6789" in record.getMessage()]
    (span,) = memory_tracer.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == trace_id and len(span.context.trace_state) == 0


def _metadata_seen_by(backend: str) -> list[tuple[str, str]]:
    """Every metadata pair of the calls the demo backend got lately."""
    request = pb.ModelInferRequest(model_name="_debug-metadata")
    with grpc.insecure_channel(backend) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=15)
    recent = {t.name: t.values for t in tensors.decode_outputs(reply)}["recent"]
    return [(key, value) for entry in recent for key, value in json.loads(entry)["metadata"]]


def test_an_anonymous_callers_tracestate_is_on_no_exported_span(stack: dict[str, Any]) -> None:  # noqa: F811
    trace_id, _, traceparent = _caller_context()
    metadata = [("traceparent", traceparent), ("tracestate", TRACESTATE)]
    with grpc.insecure_channel(stack["grpc"]) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest(model_name="customer-profile"), metadata=metadata, timeout=15
        )
    spans = _traced(stack["spans"], trace_id)
    assert [span["trace_state"] for span in spans] == [""] * len(spans)
    assert MARKER not in stack["spans"].read_text()


def test_a_callers_tracestate_is_not_forwarded_upstream(stack: dict[str, Any]) -> None:  # noqa: F811
    trace_id, _, traceparent = _caller_context()
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[1]).contents.int64_contents.append(3)
    metadata = [("authorization", _token()), ("traceparent", traceparent), ("tracestate", TRACESTATE)]
    with grpc.insecure_channel(stack["grpc"]) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=15)
    spans = _traced(stack["spans"], trace_id)
    assert spans and all(span["trace_state"] == "" for span in spans)
    seen = _metadata_seen_by(stack["backend"])
    assert any(key == "traceparent" and value.split("-")[1] == trace_id for key, value in seen)
    assert not [value for key, value in seen if key == "tracestate" or MARKER in value]


def _lines_not_forwarding_a_traceparent(log: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [
        entry
        for entry in entries
        if entry.get("event") == "caller header not forwarded" and entry.get("header") == "traceparent"
    ]


async def test_tracing_off_the_upstream_gets_a_w3c_traceparent_and_never_a_tracestate(
    gateways: GatewayPool, backend: str, token_issuer: TokenIssuer
) -> None:
    """With tracing off, the default ``forward_metadata`` passed a caller's ``tracestate`` and
    whatever it sent as ``traceparent`` to the upstream: free text into the upstream's logs.
    The demo backend records the metadata it got."""
    gateway = gateways.get("embedded")  # tracing off, the default forward_metadata
    _, _, traceparent = _caller_context()
    sent = {"w3c": traceparent, "decorated": f"{traceparent}-{MARKER}", "free text": MARKER}
    markers = {name: uuid.uuid4().hex for name in sent}
    dropped_before = len(_lines_not_forwarding_a_traceparent(gateway.output()))
    for name, value in sent.items():
        headers = [
            *token_issuer.headers("analyst").items(),
            ("traceparent", value),
            ("tracestate", TRACESTATE),
            ("x-request-id", markers[name]),
        ]
        await infer(gateway.address, customer_request([3]), headers)

    recent = await backend_seen(backend)
    seen = {
        name: next(call["metadata"] for call in recent if ["x-request-id", marker] in call["metadata"])
        for name, marker in markers.items()
    }
    assert [value for key, value in seen["w3c"] if key == "traceparent"] == [traceparent]
    for name in ("decorated", "free text"):
        assert "traceparent" not in dict(seen[name]), name
    for name, metadata in seen.items():
        assert "tracestate" not in dict(metadata), name
        assert not [value for _, value in metadata if MARKER in value], name

    # One line for each dropped traceparent, naming the header, never its value.
    wait_until(
        lambda: len(_lines_not_forwarding_a_traceparent(gateway.output())) >= dropped_before + 2,
        10,
        "the gateway's lines for the dropped traceparents",
    )
    lines = _lines_not_forwarding_a_traceparent(gateway.output())[dropped_before:]
    assert [line["why"] for line in lines] == ["not a W3C traceparent"] * 2, lines
    assert MARKER not in gateway.output()
