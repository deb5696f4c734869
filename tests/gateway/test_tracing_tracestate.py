"""A caller's ``tracestate`` is never adopted (review: what leaves the gateway, finding 2).

Its vendor text is anyone's, sent before authentication. Adopted, OpenTelemetry copied it
onto every span the gateway exported and into the ``tracestate`` the upstream got. The call
span is the child of the caller's trace id and span id only, with an empty trace state.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.oip import tensors
from labelgate.tracing import call_span, outgoing, stage
from tests.gateway.test_tracing import (  # noqa: F401  (memory_tracer, stack: fixtures)
    _caller_context,
    _token,
    _traced,
    memory_tracer,
    stack,
)

MARKER = "ssn:078-05-1120"
TRACESTATE = f"acme={MARKER},ro@vendor=card:4111111111111111"  # by the W3C grammar
BOTH = frozenset({"traceparent", "tracestate"})


def test_the_call_span_keeps_the_callers_trace_and_drops_its_tracestate(memory_tracer: Any) -> None:  # noqa: F811
    trace_id, caller_span, traceparent = _caller_context()
    with (
        call_span("/s/M", "m", [("traceparent", traceparent), ("tracestate", TRACESTATE)]),
        stage("upstream"),
    ):
        sent = dict(outgoing([("tracestate", TRACESTATE), ("x-request-id", "r")], BOTH))
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
