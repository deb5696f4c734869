"""Hashing and event validation, the pure part of the audit log."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from labelgate.audit.records import (
    GENESIS,
    MAX_STRING,
    AuditEventInvalid,
    JsonEncoder,
    _plainly_valid_event,
    _validate_exactly,
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


def test_a_key_longer_than_a_string_may_be_is_refused_without_quoting_it() -> None:
    # A 100,000-character key under ``details`` was accepted where such a value is refused.
    for details in ({"k" * 100_000: 1}, {"names": [{"k" * (MAX_STRING + 1): True}]}):
        with pytest.raises(AuditEventInvalid, match=f"key longer than {MAX_STRING}") as refused:
            validate_event(make_event(details=details))
        assert len(refused.value.message) < 200
    validate_event(make_event(details={"k" * MAX_STRING: 1}))


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


# -- the fast path of validate_event against the reference, rule by rule -------------------


def _outcome(check: Callable[[Any], object], event: Any) -> tuple[str, str]:
    try:
        check(event)
    except Exception as error:  # the reference may raise more than AuditEventInvalid
        return type(error).__name__, str(error)
    return "accepted", ""


def _deep(levels: int, leaf: Any) -> Any:
    """``leaf`` wrapped so that it sits at depth ``levels + 1`` inside ``details``."""
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


class _Key(str):
    pass


class _Impostor:
    """Not a string, but equal to the field name ``reason`` (and hashed like it)."""

    def __hash__(self) -> int:
        return hash("reason")

    def __eq__(self, other: object) -> bool:
        return other == "reason"


_UUID = "3f2b8c1e-5a4d-4e6f-9a8b-7c6d5e4f3a2b"
_VARIANTS: list[dict[str, Any]] = [
    {},
    {"event_id": _UUID.upper()},
    {"event_id": "{" + _UUID + "}"},
    {"event_id": "urn:uuid:" + _UUID},
    {"event_id": _UUID.replace("-", "")},
    {"event_id": " " + _UUID.replace("-", "")[1:]},
    {"event_id": "0x" + _UUID.replace("-", "")[2:]},
    {"event_id": _UUID[:-1]},
    {"event_id": _UUID + "\n"},
    {"event_id": "g" + _UUID[1:]},
    {"event_id": 12345678901234567890123456789012},
    {"event_id": _Key(_UUID)},
    {"event_id": ""},
    {"time": ""},
    {"time": None},
    {"time": 12},
    {"time": _Key("2026-01-01T00:00:00Z")},
    {"decision": "maybe"},
    {"decision": ""},
    {"decision": _Key("allow")},
    {"decision": 0},
    {"reason": "x" * 4096},
    {"reason": "x" * 4097},
    {"reason": _Key("fine")},
    {"labels": ["l"] * 1024},
    {"labels": ["l"] * 1025},
    {"labels": ("a", "b")},
    {"details": {str(n): n for n in range(1024)}},
    {"details": {str(n): n for n in range(1025)}},
    {"details": _deep(5, 1)},
    {"details": _deep(6, 1)},
    {"details": _deep(5, {})},
    {"details": _deep(5, [])},
    {"details": _deep(6, {})},
    {"details": _deep(5, [[]])},
    {"details": _deep(4, [1.5, None, True, -0.0, 2**70, "s"])},
    {"latency_ms": float("nan")},
    {"latency_ms": float("inf")},
    {"latency_ms": -float("inf")},
    {"latency_ms": 1e308},
    {"latency_ms": True},
    {"latency_ms": b"1"},
    {"details": {"value": 1}},
    {"details": {"Payload": 1}},
    {"details": {"my_values": 1}},
    {"details": {"xcontents": 1}},
    {"details": {_Key("payload"): 1}},
    {"details": {_Key("fine"): 1}},
    {"details": {1: "x"}},
    {"details": {None: "x"}},
    {"masked": [{"path": "a", "strategy": "redact", "old_value": "x"}]},
    {"subject": {"id": "alice", "groups": [{"contents": 1}]}},
    {"approval_id": None, "approvers": []},
    {"details": {"nested": [{"a": [{"b": 1}]}]}},
    {"reason": "caf\u00e9 \U0001f600"},
    {"reason": "\ud800"},
    {"labels": ["ok", "a\udfffb"]},
    {"details": {"\ud800": 1}},
    {"details": {"k": {"caf\u00e9\udc80": 1}}},
    {"details": {"k" * 4096: 1}},
    {"details": {"k" * 4097: 1}},
    {"details": {"n": [{"k" * 100_000: 1}]}},
]


@pytest.mark.parametrize("changes", _VARIANTS)
def test_validate_event_decides_like_the_reference(changes: dict[str, Any]) -> None:
    event = make_event(**changes)
    assert _outcome(validate_event, event) == _outcome(_validate_exactly, event)
    if _plainly_valid_event(event):  # the fast path only ever says yes to what the reference takes
        assert _outcome(_validate_exactly, event) == ("accepted", "")


@pytest.mark.parametrize(
    "event",
    [
        {"time": "t", "event_id": _UUID, "decision": "allow", _Key("reason"): "x"},
        {"time": "t", "event_id": _UUID, "decision": "allow", 1: "x"},
        {"time": "t", "event_id": _UUID, "decision": "allow", _Impostor(): "x"},
        {"event_id": _UUID, "decision": "allow"},
        {"time": "t", "event_id": _UUID, "decision": ["allow"]},  # unhashable: the reference raises
        type("EventDict", (dict,), {})(make_event()),
        None,
        "event",
    ],
)
def test_unusual_events_get_the_reference_answer(event: Any) -> None:
    assert _outcome(validate_event, event) == _outcome(_validate_exactly, event)


def test_gateway_shaped_events_take_the_fast_path() -> None:
    assert _plainly_valid_event(make_event())
    assert not _plainly_valid_event(make_event(event_id="urn:uuid:" + _UUID))  # valid, but for the reference


def test_uuid_spellings_that_uuid_accepts_stay_accepted() -> None:
    for spelling in (_UUID.upper(), "{" + _UUID + "}", "urn:uuid:" + _UUID, _UUID.replace("-", "")):
        validate_event(make_event(event_id=spelling))
    with pytest.raises(AuditEventInvalid, match="UUID"):
        validate_event(make_event(event_id=_UUID[:-1]))


# -- the reusable JSON encoder -------------------------------------------------------------


@pytest.mark.parametrize("sort_keys", [False, True])
def test_json_encoder_writes_what_json_encoder_writes(sort_keys: bool) -> None:
    options: dict[str, Any] = {"sort_keys": sort_keys, "separators": (",", ":"), "ensure_ascii": False}
    ours, reference = JsonEncoder(**options, allow_nan=False), json.JSONEncoder(**options, allow_nan=False)
    values = [
        make_event(reason='quote " backslash \\ nul \x00 \u2028 \U0001f600 café'),
        {"z": [1.5, -0.0, 1e300, 2**70, None, True], "a": {"y": "x", "b": []}},
        "top-level string",
        _Key("a str subclass"),
        [],
        12,
    ]
    for value in values:
        assert ours.encode(value) == reference.encode(value)


def test_json_encoder_recovers_from_an_encode_that_failed_half_way() -> None:
    encoder = JsonEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
    event: dict[str, Any] = {"a": [1, float("nan")]}
    with pytest.raises(ValueError, match="not JSON compliant"):
        encoder.encode(event)
    event["a"] = [1]  # the same objects again: nothing of the failed encode may linger
    assert encoder.encode(event) == '{"a":[1]}'
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for _ in range(2):
        with pytest.raises(ValueError, match="Circular reference"):
            encoder.encode(looped)
    del looped["self"]
    assert encoder.encode({"b": looped}) == '{"b":{}}'


@pytest.mark.parametrize("decision", [["allow"], {"allow": 1}, 1, True])
def test_a_decision_that_is_not_a_string_is_refused_not_raised(decision: Any) -> None:
    """An unhashable decision once raised TypeError out of the check (and closed the
    writer's connection); every shape of it is an invalid event."""
    with pytest.raises(AuditEventInvalid, match="decision"):
        validate_event(make_event(decision=decision))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"model": "\ud800"}, "event.model is not valid Unicode"),
        ({"labels": ["ok", "a\udfffb"]}, "event.labels[1] is not valid Unicode"),
        (
            {"masked": [{"path": "x\udc80", "strategy": "redact"}]},
            "event.masked[0].path is not valid Unicode",
        ),
        ({"details": {"\ud800": 1}}, "event.details has a key that is not valid Unicode"),
        ({"subject": {"id": "alice", "n\ud83d": "x"}}, "event.subject has a key that is not valid Unicode"),
    ],
)
def test_text_with_a_lone_surrogate_is_refused_in_a_message_that_encodes(change: dict, where: str) -> None:
    """JSON ``"\\ud800"`` parses to a string with no UTF-8 form: accepted, it made the writer's
    canonical encode raise mid-commit, which refused the whole batch and stopped the writer."""
    event = make_event(**change)
    with pytest.raises(AuditEventInvalid, match=re.escape(where)) as caught:
        validate_event(event)
    assert caught.value.reason == "AUDIT_EVENT_INVALID"
    caught.value.message.encode("utf-8")  # the writer sends it back in a reply


def test_an_unknown_field_with_a_lone_surrogate_is_named_in_a_message_that_encodes() -> None:
    with pytest.raises(AuditEventInvalid, match="unknown event field") as caught:
        validate_event({**make_event(), "x\ud800": 1})
    assert "x\\ud800" in caught.value.message
    caught.value.message.encode("utf-8")
