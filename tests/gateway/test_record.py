"""The record stage's audit event: what the audit writer is asked to keep for a call."""

from __future__ import annotations

from labelgate.audit.records import validate_event
from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome
from labelgate.errors import InvalidInput
from labelgate.gateway.record import audit_event, recorded_text

LONG = "m" * 5000


def test_texts_a_caller_chose_are_bounded_so_the_writer_never_refuses_the_record() -> None:
    # A refusal's record refused by the writer for its length would leave the call unrecorded.
    call = Call(
        method="/inference.GRPCInferenceService/ModelMetadata",
        peer="ipv4:127.0.0.1:1",
        metadata=(),
        auth_context={},
        session_id=LONG,
        request_id="r",
    )
    outcome = Outcome(subject=Subject("s" * 5000, ("g" * 5000,)), model=LONG)
    event = audit_event(CallRecord.of(call, outcome, InvalidInput("PATH_TOO_LONG", "too long")))
    validate_event(event)  # raises what the writer would refuse
    assert event["model"] == recorded_text(LONG) and LONG not in str(event)
    assert event["model"].startswith("<5000 characters, sha256 ")


def test_short_texts_are_recorded_as_they_are() -> None:
    assert recorded_text("customer-profile") == "customer-profile"
