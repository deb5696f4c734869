"""The record stage's audit event: what the audit writer is asked to keep for a call."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from labelgate.audit import AuditClient, AuditUnavailable
from labelgate.audit.protocol import MAX_FRAME, encode
from labelgate.audit.records import MAX_ITEMS, MAX_STRING, validate_event
from labelgate.audit.verify import verify_log
from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome
from labelgate.errors import InvalidInput
from labelgate.gateway.record import KnownModels, LogAndMetricsRecorder, audit_event, recorded_text
from labelgate.policy.cache import CachingEngine
from labelgate.policy.contract import Decision
from tests.audit.conftest import read_records, writer_process
from tests.policy.test_cache import Clock, IdentifyingEngine, doc

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


def cached_and_evaluated() -> tuple[CallRecord, CallRecord]:
    """Two records of one query: the first evaluated by OPA (``d-1``), the second served
    from the decision cache (its decision came from ``d-1``)."""

    async def decide_twice() -> tuple[Decision, Decision]:
        cache = CachingEngine(IdentifyingEngine(), clock=Clock())  # type: ignore[arg-type]
        return await cache.decide(doc()), await cache.decide(doc())

    records = []
    for decision in asyncio.run(decide_twice()):
        outcome = Outcome(subject=Subject("ana", ("analysts",)), model="m", decisions=[("request", decision)])
        records.append(CallRecord.of(Call("/s/M", "ipv4:127.0.0.1:1", (), {}, "s", "r"), outcome, None))
    return records[0], records[1]


def test_a_cached_decision_is_recorded_as_cached_with_the_id_of_the_evaluation_it_came_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its decision_id named another call's OPA decision-log event (found by review).
    evaluated, cached = cached_and_evaluated()
    own, served = audit_event(evaluated), audit_event(cached)
    assert own["decision_id"] == "d-1" and "cached" not in own and "cached_from" not in own
    assert (served["decision_id"], served["cached"], served["cached_from"]) == (None, True, "d-1")
    validate_event(served)  # the writer keeps it
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        for record in (evaluated, cached):
            asyncio.run(LogAndMetricsRecorder().record(record))
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "call"]
    assert [(line["decision_id"], line["cached"], line["cached_from"]) for line in lines] == [
        ("d-1", False, None),
        (None, True, "d-1"),
    ]


def test_an_index_of_many_models_names_a_bounded_number_of_inputs_and_counts_the_rest() -> None:
    # Each listed model's decision joins an index call's record, and the writer refuses a
    # list of more than MAX_ITEMS: the call would fail for want of its audit record.
    outcome = Outcome(subject=Subject("ana", ("analysts",)), model="")
    digests = [f"{n:064x}" for n in range(MAX_ITEMS + 2)]
    phases = ["request", *["request"] * MAX_ITEMS, "response"]
    outcome.decision_inputs = [(phase, digest, {}) for phase, digest in zip(phases, digests, strict=True)]
    call = Call("/inference.GRPCInferenceService/RepositoryIndex", "ipv4:127.0.0.1:1", (), {}, "s", "r")
    event = audit_event(CallRecord.of(call, outcome, None))
    validate_event(event)
    named = [entry["hash"] for entry in event["decision_inputs"]]
    assert named[0] == digests[0] and named[-1] == digests[-1], "the call's own phases"
    assert event["details"] == {"decision_inputs_omitted": len(digests) - len(named)}
    assert set(named) <= set(digests) and len(set(named)) == len(named)


def _call_record(model: str, upstream_status: str | None, subject: Subject | None = None) -> CallRecord:
    call = Call("/inference.GRPCInferenceService/ModelInfer", "ipv4:127.0.0.1:1", (), {}, "s", "r")
    outcome = Outcome(subject=subject, model=model, upstream_status=upstream_status)
    return CallRecord.of(call, outcome, None)


def _model_series() -> set[str]:
    from prometheus_client import REGISTRY

    return {
        sample.labels["model"]
        for family in REGISTRY.collect()
        if family.name == "labelgate_call_duration_seconds"
        for sample in family.samples
        if "model" in sample.labels
    }


def test_a_model_gets_its_own_series_only_when_the_gateway_knows_it() -> None:
    # Anonymous callers naming models would otherwise take every slot, and real models would
    # be counted as ``other`` for the life of the process; an upstream's OK is no proof
    # (``tests/gateway/test_metric_models.py``).
    real = "labelgate-test-model-known"
    recorder = LogAndMetricsRecorder(KnownModels([real]), max_models=4)
    junk = [f"junk-{uuid}" for uuid in range(10)]
    for name in junk:
        asyncio.run(recorder.record(_call_record(name, None)))
        asyncio.run(recorder.record(_call_record(name, "OK")))
    assert not set(junk) & _model_series()
    asyncio.run(recorder.record(_call_record(real, None)))  # refused: still the model it is
    assert real in _model_series()
    assert recorder._model_label(real) == real


def test_the_log_line_bounds_the_texts_a_caller_chose(caplog: pytest.LogCaptureFixture) -> None:
    huge = "4111111111111111 " * 60_000
    subject = Subject("s" * 5000, ("g" * 5000,))
    with caplog.at_level(logging.INFO):
        asyncio.run(LogAndMetricsRecorder().record(_call_record(huge, None, subject)))
    (line,) = [record for record in caplog.records if record.getMessage() == "call"]
    assert line.model == recorded_text(huge) and line.model.startswith("<1020000 characters, sha256 ")
    assert line.subject == recorded_text("s" * 5000) and line.groups == [recorded_text("g" * 5000)]
    assert all(len(str(value)) <= 1100 for key, value in vars(line).items() if key != "msg")


# -- what a call masked: bounded like the texts a caller chose ------------------------------


def _masking_call(count: int, path_length: int) -> tuple[Call, Outcome]:
    call = Call("/inference.GRPCInferenceService/ModelInfer", "ipv4:127.0.0.1:1", (), {}, "s", "r")
    outcome = Outcome(subject=Subject("ana", ("analysts",)), model="m")
    outcome.masked = [
        {"path": f"outputs.f{n}.".ljust(path_length, "x"), "strategy": "redact", "label": "pii"}
        for n in range(count)
    ]
    outcome.labels = {"pii"}
    return call, outcome


# limits.max_fields allows 1,000,000 fields and limits.max_path_bytes 65,536-byte paths; the
# writer refuses more than MAX_ITEMS masks, a path over MAX_STRING and a frame over MAX_FRAME.
_TOO_MUCH = [(MAX_ITEMS + 1, 20), (10, MAX_STRING + 1), (1000, 1024), (20_000, 65_536)]


@pytest.mark.parametrize(("count", "path_length"), _TOO_MUCH)
def test_a_call_that_masks_more_than_a_record_holds_still_has_its_release_and_refusal_recorded(
    count: int, path_length: int
) -> None:
    # The writer refused the release record, and the refusal record built from the same
    # outcome too: the call was in no record at all.
    call, outcome = _masking_call(count, path_length)
    for error in (None, AuditUnavailable("no durable acknowledgement")):
        event = audit_event(CallRecord.of(call, outcome, error))
        validate_event(event)
        assert len(encode({"id": 1, "op": "append", "event": event})) <= MAX_FRAME
        kept, omitted = event["masked"], event.get("details", {}).get("masked_omitted", 0)
        assert len(kept) + omitted == count and len(kept) >= 10
        first = outcome.masked[0]["path"]
        assert kept[0] == {"path": recorded_text(first), "strategy": "redact", "label": "pii"}
        assert all(len(mask["path"]) <= MAX_STRING for mask in kept)


def test_what_a_record_holds_of_the_masks_is_recorded_as_it_is() -> None:
    call, outcome = _masking_call(MAX_ITEMS // 4, 200)
    event = audit_event(CallRecord.of(call, outcome, None))
    assert event["masked"] == outcome.masked and "details" not in event


def test_a_call_that_masks_more_than_a_record_holds_is_recorded_by_a_real_writer(tmp_path: Path) -> None:
    call, outcome = _masking_call(5000, 5000)
    sock, logs = tmp_path / "w.sock", tmp_path / "log"

    async def append_both() -> None:
        async with AuditClient(sock) as client:
            for error in (None, AuditUnavailable("no durable acknowledgement")):
                await client.append(audit_event(CallRecord.of(call, outcome, error)))

    with writer_process(sock, logs):
        asyncio.run(append_both())
    written = [record["event"] for record in read_records(logs)]
    assert [event["decision"] for event in written] == ["mask", "deny"]
    assert all(event["details"]["masked_omitted"] + len(event["masked"]) == 5000 for event in written)
    assert verify_log(logs).ok


# -- a release under an approval grant names who approved it --------------------------------


def _granted(grant_id: str, *approvers: str) -> dict[str, Any]:
    return {
        "state": "granted",
        "grant_id": grant_id,
        "approved_by": sorted(approvers),
        "approvers": [{"id": person, "groups": ["data-owners"]} for person in approvers],
    }


def _held_then_released(error: BaseException | None = None) -> CallRecord:
    """A call held in its request phase, re-decided under grant ``g-old`` (not enforced: the
    policy asked for more), then released under ``g-1``; its response phase decided plainly."""
    outcome = Outcome(subject=Subject("sam", ("data-stewards",)), model="m")
    outcome.decision_inputs = [
        ("request", "a" * 64, {"approval": {"state": "none"}}),
        ("request", "b" * 64, {"approval": _granted("g-old", "jwt:idp#carol")}),
        ("request", "c" * 64, {"approval": _granted("g-1", "jwt:idp#olivia", "jwt:idp#dan")}),
        ("response", "d" * 64, {"approval": {"state": "none"}}),
    ]
    outcome.superseded_inputs = (0, 1)
    outcome.released_under = (("g-1", "apr-1"),)  # what the approval stage used to release it
    call = Call("/inference.GRPCInferenceService/ModelInfer", "ipv4:127.0.0.1:1", (), {}, "s", "r")
    return CallRecord.of(call, outcome, error)


def test_a_call_released_under_a_grant_names_the_grant_and_its_approvers_in_its_own_record() -> None:
    # The approval-state records go through a background sink without retry: a writer restart
    # as an approver clicked left the log with no trace of who approved a release.
    event = audit_event(_held_then_released())
    validate_event(event)
    assert event["approvers"] == ["jwt:idp#dan", "jwt:idp#olivia"]  # ids only, not groups
    # The grants the approval stage used, not g-old, which an input named (review of the fix:
    # a grant another call spent was named as this one's too).
    assert event["details"] == {"grant_ids": ["g-1"]} and event["approval_id"] == "apr-1"


def test_a_call_released_under_several_rounds_names_every_grant() -> None:
    """Review of the fix: an input names only its last grant, so a call held for a data owner
    and then security named only the security grant."""
    record = dataclasses.replace(
        _held_then_released(), released_under=(("g-owner", "apr-a"), ("g-security", "apr-b"))
    )
    event = audit_event(record)
    validate_event(event)
    assert event["details"]["grant_ids"] == ["g-owner", "g-security"]
    assert event["details"]["approval_ids"] == ["apr-a", "apr-b"] and event["approval_id"] == "apr-b"


def test_approvers_and_grant_ids_are_bounded_in_bytes_as_masks_are() -> None:
    record = _held_then_released()
    many = [f"jwt:idp#{'x' * 1000}{n}" for n in range(260)]
    record = dataclasses.replace(
        record,
        decision_inputs=[("request", "c" * 64, {"approval": _granted("g-1", *many)})],
        superseded_inputs=(),
    )
    event = audit_event(record)
    validate_event(event)
    assert 0 < len(event["approvers"]) < 260
    assert len(json.dumps(event)) < 64 * 1024


def test_a_call_not_released_or_not_held_names_no_approvers() -> None:
    refused = audit_event(_held_then_released(AuditUnavailable("no durable acknowledgement")))
    plain = audit_event(_call_record("m", "OK"))
    for event in (refused, plain):
        assert "approvers" not in event and "grant_ids" not in event.get("details", {})
