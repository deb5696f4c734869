"""The decision contract: result validation (fail closed), input validation, input assembly."""

from __future__ import annotations

import copy
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import InvalidInput
from labelgate.policy.contract import (
    MAX_CACHE_TTL_SECONDS,
    MAX_GRANT_TTL_SECONDS,
    MAX_MIN_APPROVALS,
    POLICY_RESULT_INVALID,
    ApprovalRequirement,
    DecidedMask,
    Decision,
    build_input,
    validate_input,
    validate_result,
)
from tests.support.procs import REPO, opa_binary

RESULT: dict[str, Any] = {
    "allow": True,
    "reason": "allowed; 2 field(s) masked",
    "mask": [
        {"path": "outputs.ssn", "strategy": "partial", "params": {"keep_last": 4}},
        {"path": "outputs.notes{us_ssn}", "strategy": "redact", "params": {}},
    ],
    "require_approval": None,
    "cache_ttl_seconds": 60,
}

HELD: dict[str, Any] = {
    "allow": False,
    "reason": "held for approval",
    "mask": [],
    "require_approval": {
        "approver_groups": ["data-owners"],
        "min_approvals": 1,
        "grant_ttl_seconds": 900,
        "reason": "confidential data needs 1 approval(s) from data-owners",
    },
    "cache_ttl_seconds": 0,
}


def field(path: str, *labels: str) -> dict[str, Any]:
    return {"path": path, "labels": list(labels), "sources": {label: ["catalog"] for label in labels}}


def good_input(**overrides: Any) -> dict[str, Any]:
    doc = build_input(
        phase="response",
        subject={"id": "alice", "groups": ["analysts"], "auth": "mtls", "attributes": {"team": "risk"}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "customer-profile",
            "requested_outputs": [],
            "request_id": "r-1",
        },
        fields=[field("outputs.ssn", "confidential"), field("outputs.name", "internal", "public")],
        approval=None,
        time_ns=1_700_000_000_000_000_000,
    )
    doc.update(overrides)
    return doc


def test_a_valid_result_becomes_a_decision_with_provenance() -> None:
    decision = validate_result(RESULT, engine="opa", revision="rev-1", decision_id="d-1")
    assert decision.allow is True
    assert decision.masks == (
        DecidedMask("outputs.ssn", "partial", {"keep_last": 4}),
        DecidedMask("outputs.notes{us_ssn}", "redact", {}),
    )
    assert decision.require_approval is None
    assert decision.cache_ttl_seconds == 60
    assert (decision.engine, decision.revision, decision.decision_id, decision.fail_reason) == (
        "opa",
        "rev-1",
        "d-1",
        None,
    )
    assert decision.to_result() == RESULT


def test_an_approval_requirement_round_trips() -> None:
    decision = validate_result(HELD)
    assert decision.require_approval == ApprovalRequirement(
        ("data-owners",), 1, 900, "confidential data needs 1 approval(s) from data-owners"
    )
    assert decision.to_result() == HELD


def test_decisions_are_immutable() -> None:
    decision = validate_result(RESULT)
    with pytest.raises(AttributeError):
        decision.allow = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        decision.masks[0].params["keep_last"] = 0  # type: ignore[index]


def _broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(RESULT)
    mutate(doc)
    return doc


def _held_with(**requirement: Any) -> dict[str, Any]:
    return {**HELD, "require_approval": {**HELD["require_approval"], **requirement}}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"allow": "yes"}, id="allow-not-boolean"),
        pytest.param(None, id="null"),
        pytest.param([RESULT], id="array"),
        pytest.param(_broken(lambda d: d.pop("reason")), id="missing-reason"),
        pytest.param(_broken(lambda d: d.update(extra=1)), id="extra-key"),
        pytest.param(_broken(lambda d: d.update(cache_ttl_seconds=-1)), id="negative-ttl"),
        pytest.param(_broken(lambda d: d.update(allow=1)), id="allow-is-1"),
        pytest.param(_broken(lambda d: d["mask"][0].update(strategy="shuffle")), id="unknown-strategy"),
        pytest.param(_broken(lambda d: d["mask"][0].update(path="")), id="empty-mask-path"),
        pytest.param(_broken(lambda d: d["mask"][0]["params"].update(keep_last="4")), id="keep-last-string"),
        pytest.param(_broken(lambda d: d["mask"][0].pop("params")), id="mask-without-params"),
        pytest.param(
            _broken(lambda d: d.update(require_approval={**HELD["require_approval"], "min_approvals": 0})),
            id="zero-approvals",
        ),
        pytest.param(
            _broken(lambda d: d.update(require_approval={**HELD["require_approval"], "approver_groups": []})),
            id="no-approver-groups",
        ),
        pytest.param(_broken(lambda d: d.update(cache_ttl_seconds=float("nan"))), id="nan-not-json"),
        # Found by review: unbounded, a 401-digit TTL overflowed the cache's clock (INTERNAL).
        pytest.param(_broken(lambda d: d.update(cache_ttl_seconds=86_401)), id="ttl-over-a-day"),
        pytest.param(_broken(lambda d: d.update(cache_ttl_seconds=10**400)), id="ttl-401-digits"),
        pytest.param(_broken(lambda d: d.update(cache_ttl_seconds=1e308)), id="ttl-huge-float"),
        pytest.param(_held_with(grant_ttl_seconds=10**400), id="grant-ttl-401-digits"),
        pytest.param(_held_with(grant_ttl_seconds=31_536_001), id="grant-ttl-over-a-year"),
        pytest.param(_held_with(min_approvals=101), id="over-100-approvals"),
    ],
)
def test_an_off_contract_result_is_a_fail_closed_deny(raw: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="labelgate.policy.contract"):
        decision = validate_result(raw, engine="embedded", revision="r")
    assert decision.allow is False
    assert decision.fail_reason == POLICY_RESULT_INVALID
    assert decision.masks == () and decision.require_approval is None and decision.cache_ttl_seconds == 0
    # The caller sees a fixed sentence; the schema error only goes to the log.
    assert decision.reason == "policy gave an invalid decision"
    assert any(getattr(r, "error", "").startswith("result") for r in caplog.records)


def test_the_validation_verdict_is_memoised_by_content_not_by_identity() -> None:
    # Same content through different objects (and after mutation) must get the right verdict.
    raw = copy.deepcopy(RESULT)
    assert validate_result(raw).fail_reason is None
    raw["allow"] = "yes"
    assert validate_result(raw).fail_reason == POLICY_RESULT_INVALID
    raw["allow"] = True
    assert validate_result(raw).fail_reason is None


def test_the_largest_numbers_the_schema_admits_are_the_contracts_constants() -> None:
    """``result.json``'s maximums are the constants the code uses (the cache clamps to one),
    and a result at each of them is valid."""
    import json

    schema = json.loads((REPO / "proto/labelgate/v1/schema/result.json").read_text())
    requirement = schema["properties"]["require_approval"]["oneOf"][1]["properties"]
    assert schema["properties"]["cache_ttl_seconds"]["maximum"] == MAX_CACHE_TTL_SECONDS == 86_400
    assert requirement["grant_ttl_seconds"]["maximum"] == MAX_GRANT_TTL_SECONDS
    assert requirement["min_approvals"]["maximum"] == MAX_MIN_APPROVALS
    at_most = {
        **HELD,
        "cache_ttl_seconds": MAX_CACHE_TTL_SECONDS,
        "require_approval": {
            **HELD["require_approval"],
            "grant_ttl_seconds": MAX_GRANT_TTL_SECONDS,
            "min_approvals": MAX_MIN_APPROVALS,
        },
    }
    decision = validate_result(at_most)
    assert not decision.failed_closed and decision.to_result() == at_most


def test_integral_floats_are_accepted_as_integers_and_kept_as_int() -> None:
    raw = _broken(lambda d: d.update(cache_ttl_seconds=60.0))
    raw["mask"][0]["params"]["keep_last"] = 4.0
    decision = validate_result(raw)
    assert decision.cache_ttl_seconds == 60 and type(decision.cache_ttl_seconds) is int
    assert type(decision.masks[0].params["keep_last"]) is int


def test_deny_constructor_is_fail_closed_with_a_stable_reason() -> None:
    decision = Decision.deny("POLICY_TIMEOUT", engine="opa", revision="r")
    assert decision.failed_closed and not decision.allow
    assert decision.fail_reason == "POLICY_TIMEOUT"
    assert decision.to_result() == {
        "allow": False,
        "reason": "policy engine did not answer in time",
        "mask": [],
        "require_approval": None,
        "cache_ttl_seconds": 0,
    }
    assert Decision.deny("POLICY_ERROR_503").reason == "policy engine error"


def test_build_input_assembles_a_valid_labelgate_v1_input() -> None:
    doc = good_input()
    validate_input(doc)
    assert doc["version"] == "labelgate.v1"
    assert doc["labels"] == ["confidential", "internal", "public"]
    assert doc["approval"] == {"state": "none"}
    assert doc["context"] == {"time_ns": 1_700_000_000_000_000_000}


def test_build_input_with_no_fields_and_a_grant() -> None:
    doc = build_input(
        phase="request",
        subject=None,
        request={"service": "s", "method": "/s/M", "model": "", "requested_outputs": ["a"]},
        fields=[],
        approval={"state": "granted", "grant_id": "g-1", "approved_by": ["bob"]},
        time_ns=0,
    )
    validate_input(doc)
    assert doc["labels"] == [] and doc["subject"] is None and doc["approval"]["state"] == "granted"


def test_build_input_rejects_an_unknown_phase() -> None:
    with pytest.raises(ValueError, match="phase"):
        build_input(phase="reply", subject=None, request={}, fields=[], approval=None, time_ns=0)


RECORDED_CALL: dict[str, Any] = {
    "subject": {"id": "jwt:labelgate-dev#bea", "name": "bea", "groups": ["break-glass"], "auth": "jwt"},
    "request_id": "req-1",
    "session_id": "s~0123",
    "time": "2026-01-01T09:00:00.000Z",
    "outcome": "allow",
    "labels": ["confidential", "public"],
    "requested_outputs": ["ssn"],
}


def replay_input(**recorded: Any) -> dict[str, Any]:
    return build_input(
        phase="replay",
        subject={"id": "jwt:labelgate-dev#ada", "groups": ["auditors"], "auth": "jwt"},
        request={"service": "s", "method": "/s/M", "model": "customer-profile", "requested_outputs": []},
        fields=[field("outputs.ssn", "confidential")],
        approval=None,
        time_ns=5,
        recorded_call={**RECORDED_CALL, **recorded},
    )


def test_a_replay_input_carries_the_recorded_call_in_its_context() -> None:
    doc = replay_input()
    validate_input(doc)
    assert doc["phase"] == "replay" and doc["context"] == {"time_ns": 5, "recorded_call": RECORDED_CALL}
    validate_input(replay_input(subject=None))  # an unauthenticated caller's recorded call


def test_the_recorded_call_goes_with_the_replay_phase_only() -> None:
    with pytest.raises(ValueError, match="recorded_call"):
        build_input(phase="replay", subject=None, request={}, fields=[], approval=None, time_ns=0)
    with pytest.raises(ValueError, match="recorded_call"):
        build_input(
            phase="response", subject=None, request={}, fields=[], approval=None, time_ns=0, recorded_call={}
        )


def test_a_bad_recorded_call_is_named() -> None:
    doc = replay_input(outcome="fine")
    with pytest.raises(InvalidInput) as caught:
        validate_input(doc)
    assert "input.context.recorded_call.outcome: " in caught.value.message


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(version="labelgate.v2"), "input.version"),
        (lambda d: d.pop("subject"), "input"),
        (lambda d: d["subject"].update(auth="password"), "input.subject.auth"),
        (lambda d: d["fields"][1].update(labels=["secret"]), "input.fields[1].labels[0]"),
        (lambda d: d["fields"][0].update(path=""), "input.fields[0].path"),
        (lambda d: d["request"].update(extra="x"), "input.request"),
        (lambda d: d["context"].update(time_ns=-1), "input.context.time_ns"),
        (lambda d: d.update(labels=["internal", "internal"]), "input.labels"),
    ],
)
def test_validate_input_names_the_bad_path(mutate: Any, where: str) -> None:
    doc = good_input()
    mutate(doc)
    with pytest.raises(InvalidInput) as caught:
        validate_input(doc)
    assert caught.value.reason == "INPUT_INVALID"
    assert f"{where}: " in caught.value.message, caught.value.message
    assert caught.value.exit_code == 2


def test_the_log_names_the_rule_not_the_value(caplog: pytest.LogCaptureFixture) -> None:
    raw = _broken(lambda d: d.update(allow="SSN 078-05-1120"))
    with caplog.at_level(logging.ERROR, logger="labelgate.policy.contract"):
        validate_result(raw)
    (record,) = [r for r in caplog.records if r.getMessage() == "policy_result_invalid"]
    assert record.error == 'result.allow: fails type "boolean"'
    assert "078-05-1120" not in str(vars(record))


def test_opa_type_checks_the_policy_pack_against_the_input_schema(tmp_path: Path) -> None:
    """The pack's ``# METADATA schemas`` annotation binds input.json: ``opa check --strict``
    passes on the pack and names a misspelled input reference in any file of the package."""
    schemas = REPO / "proto/labelgate/v1/schema/opa"
    command = [opa_binary(), "check", "--strict", "--schema", str(schemas)]
    clean = subprocess.run([*command, str(REPO / "rego")], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    typo = tmp_path / "typo.rego"
    typo.write_text('package labelgate.decision\n\n_typo if input.request.modle == "m"\n')
    caught = subprocess.run(
        [*command, str(REPO / "rego"), str(typo)], capture_output=True, text=True, check=False
    )
    assert caught.returncode != 0 and "undefined ref: input.request.modle" in caught.stdout + caught.stderr


@pytest.mark.parametrize("phase", ["request", "response", None, 7])
def test_allow_with_require_approval_is_contradictory_outside_replay(
    phase: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The pipeline holds only a call the policy does not allow: allow + hold would release it."""
    raw = {**HELD, "allow": True}
    with caplog.at_level(logging.ERROR):
        decision = validate_result(raw, phase=phase, engine="opa", revision="r1", decision_id="d1")
    assert (decision.allow, decision.fail_reason) == (False, POLICY_RESULT_INVALID)
    assert "contradictory" in decision.reason and decision.require_approval is None
    assert decision.provenance()["decision_id"] == "d1"
    assert "policy_result_invalid" in caplog.text


def test_allow_with_require_approval_is_valid_in_replay() -> None:
    """Replay shows masked values and names the approval seeing them in clear would need."""
    raw = {**HELD, "allow": True}
    decision = validate_result(raw, phase="replay")
    assert decision.allow and not decision.failed_closed and decision.to_result() == raw
    # Holding without allowing stays valid in every phase.
    for phase in ("request", "response", "replay", None):
        assert not validate_result(HELD, phase=phase).failed_closed


def test_the_phase_of_an_input_is_read_safely() -> None:
    from labelgate.policy.contract import input_phase

    assert input_phase({"phase": "replay"}) == "replay"
    assert input_phase({"phase": ["replay"]}) is None
    assert input_phase([]) is None and input_phase({}) is None
