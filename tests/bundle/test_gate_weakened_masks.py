"""The publish gate holds a revision that weakens or removes a watched field's mask, a glob's
included (review findings 3 and 4): ``redact`` -> ``partial(keep_last=10)`` or -> ``hash``,
and a removed ``outputs.*``, were published without a hold.

From decisions to the gate's verdict, as the bundle server judges a candidate: the replayed
decisions are summarised into the impact report (labelgate.policy.impact) and the report
goes through ``hold_reasons``.
"""

from __future__ import annotations

from typing import Any

import pytest

from labelgate.bundle import gate
from labelgate.bundle.gate import HoldRule, hold_reasons
from labelgate.policy import impact
from labelgate.policy.contract import validate_result
from labelgate.policy.impact import Replayed, summarize

INPUT = {
    "subject": {"id": "a", "groups": ["analysts"]},
    "request": {"model": "customer-profile"},
    "fields": [
        {"path": "outputs.ssn", "labels": ["confidential"], "sources": {}},
        {"path": "outputs.name", "labels": ["internal"], "sources": {}},
    ],
}


def decision(*masks: dict[str, Any]) -> Any:
    result = {
        "allow": True,
        "reason": "ok",
        "mask": list(masks),
        "require_approval": None,
        "cache_ttl_seconds": 0,
    }
    return validate_result(result, phase="request")


def mask(strategy: str, path: str = "outputs.ssn", **params: Any) -> dict[str, Any]:
    return {"path": path, "strategy": strategy, "params": params}


def verdict(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    report = summarize([Replayed("h", 1, INPUT, decision(*before), decision(*after))]).to_json()
    return hold_reasons(report, HoldRule(unmasked_labels=["confidential"]))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([mask("redact")], [mask("partial", keep_last=10)]),
        ([mask("redact")], [mask("hash")]),
        ([mask("partial", keep_last=4)], [mask("partial", keep_last=10)]),
        ([mask("partial", keep_last=10)], [mask("partial", keep_last=4)]),
        ([mask("redact"), mask("partial")], [mask("partial")]),  # the stronger of two dropped
        ([mask("redact", "outputs.*")], []),
        ([mask("redact", "outputs.?sn")], []),
        ([mask("redact", "outputs.*")], [mask("partial", "outputs.*", keep_last=4)]),
    ],
)
def test_weakening_or_removing_a_watched_fields_mask_holds(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    reasons = verdict(before, after)
    assert len(reasons) == 1 and reasons[0].startswith("releases confidential data"), reasons


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([mask("partial", keep_last=10)], [mask("redact")]),
        ([mask("hash")], [mask("redact")]),
        ([mask("redact")], [mask("null")]),
        ([mask("partial")], [mask("partial", keep_last=0)]),
        ([mask("redact", "outputs.name")], [mask("partial", "outputs.name")]),  # internal: not watched
        ([mask("redact", "outputs.n*")], []),
    ],
)
def test_a_change_that_shows_no_more_of_a_watched_field_is_published(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    assert verdict(before, after) == []


def test_the_gate_reads_the_kinds_the_impact_report_writes() -> None:
    assert (gate.MASK_REMOVED, gate.MASK_WEAKENED) == (impact.MASK_REMOVED, impact.MASK_WEAKENED)
    assert set(gate.RELEASING_KINDS) == {impact.DENY_TO_ALLOW, impact.NO_LONGER_HELD}
