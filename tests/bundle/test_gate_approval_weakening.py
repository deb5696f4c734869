"""The publish gate holds a revision that weakens the approval a call with watched fields waits
for (review: ``2 of security -> 1 of break-glass`` was reported as ``approval requirement
changed`` and published, since that kind was not among the ones that hold).

The replay says per change how the requirement weakened (``labelgate.policy.cli``); a report
that does not say holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from labelgate.bundle import gate
from labelgate.bundle.gate import HoldRule, hold_reasons
from labelgate.policy import impact
from labelgate.policy.cli import replay_report
from labelgate.policy.contract import build_input, validate_result
from labelgate.policy.impact import Replayed, summarize
from tests.bundle.helpers import REGO, TABLES

INPUT = {
    "subject": {"id": "b", "groups": ["break-glass"]},
    "request": {"model": "customer-profile"},
    "fields": [{"path": "outputs.account_secret", "labels": ["restricted"], "sources": {}}],
}
SECURITY_TWO_PERSON = {"approver_groups": ["security"], "min_approvals": 2, "grant_ttl_seconds": 900}


def held(**changes: Any) -> Any:
    requirement = {**SECURITY_TWO_PERSON, "reason": "restricted data", **changes}
    result = {
        "allow": False,
        "reason": "approval required",
        "mask": [],
        "require_approval": requirement,
        "cache_ttl_seconds": 0,
    }
    return validate_result(result, phase="response")


def verdict(before: Any, after: Any, *, annotated: bool = True) -> list[str]:
    replays = [Replayed("h", 1, INPUT, before, after)]
    if not annotated:
        return hold_reasons(summarize(replays).to_json(), HoldRule())
    from labelgate.policy.cli import replay_summary

    report = replay_summary(replays).to_json()
    return hold_reasons(report, HoldRule())


@pytest.mark.parametrize(
    ("change", "how"),
    [
        ({"min_approvals": 1}, "fewer approvals: 2 -> 1"),
        ({"approver_groups": ["break-glass"]}, "other approver groups: break-glass"),
        ({"approver_groups": ["security", "break-glass"]}, "other approver groups: break-glass"),
        ({"grant_ttl_seconds": 86400}, "longer grants: 900 -> 86400 s"),
        ({"grant_scope": "model"}, "wider grants: query -> model"),
    ],
)
def test_a_weaker_approval_holds(change: dict[str, Any], how: str) -> None:
    (reason,) = verdict(held(), held(**change))
    assert reason.startswith("weakens the approval of restricted data: ") and f"({how})" in reason, reason
    assert "for break-glass on customer-profile" in reason


def test_a_grant_no_longer_single_use_or_with_more_rows_holds() -> None:
    assert verdict(held(single_use=True), held())
    assert verdict(held(row_budget=10), held(row_budget=1000))
    assert verdict(held(row_budget=10), held())


@pytest.mark.parametrize(
    "change",
    [
        {"min_approvals": 3},
        {"grant_ttl_seconds": 60},
        {"reason": "another sentence"},
        {"single_use": True},
    ],
)
def test_a_stricter_approval_is_published(change: dict[str, Any]) -> None:
    assert verdict(held(), held(**change)) == []


def test_fewer_approver_groups_is_stricter() -> None:
    assert verdict(held(approver_groups=["security", "auditors"]), held()) == []


def test_a_report_that_does_not_say_how_the_approval_changed_holds() -> None:
    """Another analyzer's report (the impact summary alone): the gate cannot tell, so it holds."""
    (reason,) = verdict(held(), held(min_approvals=3), annotated=False)
    assert reason.endswith("(how is not reported)"), reason


def test_the_reviewed_change_to_the_policy_tables_holds(tmp_path: Path) -> None:
    current, candidate = tmp_path / "current", tmp_path / "candidate"
    shutil.copytree(REGO, current)
    shutil.copytree(REGO, candidate)
    tables = json.loads((candidate / TABLES).read_text())
    tables["approvals"]["security_two_person"] = {
        "approver_groups": ["break-glass"],
        "min_approvals": 1,
        "grant_ttl_seconds": 900,
    }
    (candidate / TABLES).write_text(json.dumps(tables))
    recorded = build_input(
        phase="response",
        subject={"id": "jwt:idp#bg", "groups": ["break-glass"], "auth": "jwt", "attributes": {}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "customer-profile",
            "requested_outputs": [],
            "request_id": "r",
            "session_id": "s",
            "peer": "ipv4:10.0.0.1",
            "digest": "f" * 64,
            "opaque": False,
        },
        fields=[
            {
                "path": "outputs.account_secret",
                "labels": ["restricted"],
                "sources": {"restricted": ["catalog"]},
            }
        ],
        approval=None,
        time_ns=1,
    )
    report = replay_report(current, candidate, [("h1", 10, recorded)], engine="embedded").to_json()
    assert [c["kind"] for c in report["changes"]] == ["approval requirement changed"]
    assert hold_reasons(report, HoldRule()) == [
        "weakens the approval of restricted data: 2 of security -> 1 of break-glass for break-glass on "
        "customer-profile (fewer approvals: 2 -> 1; other approver groups: break-glass)",
        # The tables compared as data say it too, with or without a call in the window
        # (tests/bundle/test_gate_tables.py).
        "tables weaken an approval: approval security_two_person (restricted): "
        "fewer approvals: 2 -> 1; other approver groups: break-glass",
    ]


def test_the_gate_reads_the_kind_the_impact_report_writes() -> None:
    assert gate.APPROVAL_CHANGED == impact.APPROVAL_CHANGED
