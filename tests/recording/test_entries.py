"""What a recorded call holds, and what it must not hold."""

from __future__ import annotations

import base64
import json

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import CallRecord
from labelgate.errors import PermissionDenied, UpstreamError
from labelgate.oip.tensors import decode_outputs
from labelgate.policy.cache import cached_copy
from labelgate.recording.entries import (
    admit,
    call_entry,
    decode_message,
    encode_line,
    file_name,
    parse_time,
    truncation_marker,
)
from tests.recording.conftest import Clock, delivered_response, key, make_call, make_outcome


def test_a_call_entry_holds_the_summary_the_decision_and_the_response_as_delivered() -> None:
    clock = Clock()
    call, outcome = make_call("s-1"), make_outcome()
    entry = call_entry(CallRecord.of(call, outcome, None, clock()), record_input_values=False)
    assert entry["kind"] == "call" and entry["time"] == "2026-01-01T09:00:00.000Z"
    assert (entry["session_id"], entry["client_session_id"], entry["request_id"], entry["method"]) == (
        key("s-1"),
        "s-1",
        call.request_id,
        call.method,
    )
    assert entry["subject"] == {
        "id": "jwt:labelgate-dev#nora",
        "name": "nora",
        "groups": ["analysts"],
        "auth": "jwt",
    }
    assert entry["request"]["inputs"] == [{"name": "customer_ids", "datatype": "INT64", "shape": [2]}]
    decision = entry["decision"]
    assert decision["outcome"] == "mask" and decision["reason"] == "confidential fields masked"
    assert decision["masked"] == [{"path": "outputs.ssn", "strategy": "partial", "label": "confidential"}]
    assert decision["labels"] == ["confidential", "internal"]
    assert [p["phase"] for p in decision["phases"]] == ["request", "response"]
    assert decision["phases"][1]["revision"] == "rev-7"
    response = entry["response"]
    assert response["type"] == "inference.ModelInferResponse"
    raw = base64.b64decode(response["base64"])
    assert raw == outcome.delivered.SerializeToString() and response["bytes"] == len(raw)
    decoded = decode_message(response)
    assert decoded == outcome.delivered
    tensors = {t.name: t.values for t in decode_outputs(decoded)}
    assert tensors["ssn"] == [b"***-**-6789", b"[REDACTED]"]
    # Round trip through the stored form.
    assert json.loads(encode_line(entry)) == entry
    assert "Bearer" not in encode_line(entry).decode()  # call metadata is never recorded
    assert "request_message" not in entry


def test_a_refused_call_has_its_reason_and_no_response() -> None:
    outcome = make_outcome(delivered=None)
    outcome.delivered = None
    outcome.decisions = outcome.decisions[:1]
    outcome.upstream_status = None
    error = PermissionDenied("APPROVAL_REQUIRED", "needs approval")
    entry = call_entry(CallRecord.of(make_call(), outcome, error, Clock()()), record_input_values=False)
    assert entry["decision"]["outcome"] == "approval_required"
    assert entry["decision"]["reason"] == "APPROVAL_REQUIRED"
    assert entry["response"] is None and entry["upstream_status"] is None


def test_a_call_refused_after_its_reply_was_built_has_no_response() -> None:
    # A reply its binding cannot carry (REST), or a release whose audit record was not
    # acknowledged in time: the caller got the refusal, so no recording may show the reply.
    outcome = make_outcome()  # the reply was built, then the call was refused
    error = UpstreamError("AUDIT_UNAVAILABLE", "no acknowledgement in time")
    entry = call_entry(CallRecord.of(make_call(), outcome, error, Clock()()), record_input_values=False)
    assert entry["decision"]["outcome"] == "deny" and entry["response"] is None


def test_a_phase_served_from_the_decision_cache_says_so_and_whose_decision_it_was() -> None:
    outcome = make_outcome()
    evaluated = outcome.decisions[1][1]
    outcome.decisions[1] = ("response", cached_copy(evaluated))
    entry = call_entry(CallRecord.of(make_call(), outcome, None, Clock()()), record_input_values=False)
    request, response = entry["decision"]["phases"]
    assert (request["cached"], request["cached_from"]) == (False, None)
    assert (response["decision_id"], response["cached"], response["cached_from"]) == (None, True, "d-1")


def test_input_values_only_when_allowed_and_exposed() -> None:
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.raw_input_contents.append(b"\x01\x00\x00\x00\x00\x00\x00\x00")
    outcome = make_outcome()
    outcome.request = request  # what the pipeline may expose
    without = call_entry(CallRecord.of(make_call(), outcome, None, Clock()()), record_input_values=False)
    with_values = call_entry(CallRecord.of(make_call(), outcome, None, Clock()()), record_input_values=True)
    assert "request_message" not in without
    assert decode_message(with_values["request_message"]) == request


def test_file_names_are_safe_and_distinct_for_any_session_id() -> None:
    names = {file_name(s) for s in ("a/b", "a_b", "../../etc/passwd", "", "x" * 128, "sess ion", "ünï")}
    assert len(names) == 7
    for name in names:
        assert "/" not in name and not name.startswith(".") and name.endswith(".jsonl") and len(name) < 100
    assert file_name("s-1") == file_name("s-1")


def test_admission_under_a_cap() -> None:
    assert admit(100, False, 50, 200) == "store"
    assert admit(150, False, 50, 200) == "store"
    assert admit(151, False, 50, 200) == "truncate"
    assert admit(199, True, 50, 200) == "over"  # stored past the cap: its call was released
    assert admit(0, True, 1, 200) == "store"  # below the cap again: it was raised since the marker
    entry = call_entry(CallRecord.of(make_call(), make_outcome(), None, Clock()()), record_input_values=False)
    marker = truncation_marker(entry, 200, 151)
    assert marker["kind"] == "truncated" and marker["request_id"] == entry["request_id"]
    assert parse_time(marker["time"]) == Clock()()


def test_unknown_or_damaged_messages_are_not_decoded() -> None:
    good = {
        "type": "inference.ModelInferResponse",
        "base64": base64.b64encode(b"\x0a\x01x").decode(),
        "bytes": 3,
    }
    assert decode_message(good) is not None
    assert decode_message({**good, "type": "no.such.Type"}) is None
    assert decode_message({**good, "base64": "!!!"}) is None
    assert decode_message(None) is None
    assert delivered_response().model_name == "customer-profile"
