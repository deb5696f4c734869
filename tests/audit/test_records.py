"""Hashing and event validation, the pure part of the audit log."""

from __future__ import annotations

import hashlib
import json

import pytest

from labelgate.audit.records import (
    GENESIS,
    AuditEventInvalid,
    canonical_json,
    chain_hash,
    leaf_hash,
    make_line,
    record_hash,
    validate_event,
)
from tests.audit.conftest import make_event


def test_chain_hash_is_the_documented_construction() -> None:
    event = make_event()
    leaf = hashlib.sha256(b"\x00" + canonical_json({"event": event, "seq": 1})).digest()
    expected = hashlib.sha256(b"\x01" + bytes.fromhex(GENESIS) + leaf).hexdigest()
    assert leaf_hash(1, event) == leaf
    assert record_hash(1, GENESIS, event) == expected


def test_leaf_and_chain_inputs_are_domain_separated() -> None:
    # The same bytes hashed as a leaf and as a chain link give different digests.
    event = make_event()
    leaf = leaf_hash(1, event)
    assert chain_hash(GENESIS, leaf) != hashlib.sha256(bytes.fromhex(GENESIS) + leaf).hexdigest()
    assert leaf != hashlib.sha256(canonical_json({"event": event, "seq": 1})).digest()


def test_hash_depends_on_seq_prev_and_every_field() -> None:
    event = make_event()
    base = record_hash(5, GENESIS, event)
    assert record_hash(6, GENESIS, event) != base
    assert record_hash(5, "1" * 64, event) != base
    assert record_hash(5, GENESIS, {**event, "latency_ms": 1.26}) != base


def test_stored_line_is_canonical_json_with_newline() -> None:
    line, digest = make_line(1, GENESIS, make_event(reason="café"))
    record = json.loads(line)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert canonical_json(record) + b"\n" == line
    assert record["hash"] == digest and record["prev"] == GENESIS and record["seq"] == 1
    assert "café".encode() in line  # UTF-8, not \\u escapes: one spelling per value


def test_a_gateway_shaped_event_is_valid() -> None:
    event = make_event()
    assert validate_event(event) is event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customer_ssn": "x"}, "unknown event field"),
        ({"event_id": "not-a-uuid"}, "UUID"),
        ({"decision": "maybe"}, "is not one of"),
        ({"time": 12}, "RFC 3339"),
        ({"decision": None}, "missing event field"),
        ({"latency_ms": float("nan")}, "finite"),
        ({"labels": [b"bytes"]}, "not a JSON value"),
        ({"subject": {"id": "alice", 1: "x"}}, "non-string key"),
        ({"reason": "x" * 5000}, "longer than"),
        ({"labels": list(range(2000))}, "more than"),
        ({"details": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "nested deeper"),
    ],
)
def test_malformed_events_are_refused(change: dict, message: str) -> None:
    with pytest.raises(AuditEventInvalid, match=message) as caught:
        validate_event(make_event(**change))
    assert caught.value.reason == "AUDIT_EVENT_INVALID"


@pytest.mark.parametrize(
    "smuggled",
    [
        {"details": {"value": "123-45-6789"}},
        {"details": {"old_values": ["x"]}},
        {"masked": [{"path": "outputs.ssn", "strategy": "redact", "value": "123-45-6789"}]},
        {"details": {"fp32_contents": [1.0]}},
        {"subject": {"id": "alice", "Payload": "x"}},
    ],
)
def test_fields_named_like_data_values_are_refused(smuggled: dict) -> None:
    with pytest.raises(AuditEventInvalid, match="never data"):
        validate_event(make_event(**smuggled))


def test_names_that_only_contain_the_word_are_allowed() -> None:
    validate_event(make_event(details={"valued_customer": True, "contents_count": 3}))


def test_an_event_must_be_an_object() -> None:
    with pytest.raises(AuditEventInvalid, match="JSON object"):
        validate_event(["not", "an", "object"])


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"reason": 'quote " backslash \\ tab \t nul \x00 line \u2028 emoji \U0001f600 café'},
        {"details": {"z": 1, "a": [1.5, -0.0, 1e300, 2**70], "m": {"y": None, "b": True}}},
        {"latency_ms": 0.1 + 0.2, "labels": []},
    ],
)
@pytest.mark.parametrize("seq", [1, 9, 10, 123_456_789_012])
def test_stored_line_and_hash_match_their_definition_byte_for_byte(changes: dict, seq: int) -> None:
    # make_line serialises the event once and splices it; verify recomputes from the definition.
    event, prev = make_event(**changes), hashlib.sha256(str(seq).encode()).hexdigest()
    line, digest = make_line(seq, prev, event)
    assert digest == record_hash(seq, prev, event)
    assert line == canonical_json({"seq": seq, "prev": prev, "hash": digest, "event": event}) + b"\n"


def test_events_at_the_limits_are_valid() -> None:
    nested: dict = {"e": 1}  # the 1 sits at depth 6, the deepest allowed
    for key in "dcb":
        nested = {key: nested}
    validate_event(make_event(reason="x" * 4096, labels=["l"] * 1024, details={"a": nested}))


def test_a_data_named_key_is_refused_every_time_it_is_seen() -> None:
    for _ in range(3):
        with pytest.raises(AuditEventInvalid, match="never data"):
            validate_event(make_event(details={"nested": [{"payload": "x"}]}))


def test_values_of_json_subclasses_are_judged_like_their_base_types() -> None:
    class Name(str):
        pass

    validate_event(make_event(reason=Name("fine")))
    with pytest.raises(AuditEventInvalid, match="never data"):
        validate_event(make_event(details={Name("value"): 1}))
