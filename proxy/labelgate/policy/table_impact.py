"""What a candidate's tables (``data.labelgate.tables``) let callers see that the served ones do not.

A replay shows a weakened clearance or approval only when the window holds a call it decides:
a new group given ``see`` on ``confidential`` publishes if none of its members called, and an
approval made easier is seen only on calls held both times. So the tables are compared as data
(``table_changes``), as the decision rules read them (``rego/labelgate/decision/clearance.rego``,
``approval.rego``):

- per label and group (and for any other group: the label's default), the treatment a caller
  in that group gets, worked out as ``_label_treatment`` does: the most permissive scored
  offer among the group's and the default, ``offer_scores`` and ``mask_permissiveness`` of
  the same tables; a label the tables lack gets ``unknown_label``'s. A treatment that shows the
  label where it was masked, drops its approval, asks another, easier approval, or masks it
  with a mask that shows more (``impact.shows_more``) is a change;
- per approval of ``approvals`` that some label's offer names (in either tables): how it became
  easier to get or releases more once granted (``approval_weakenings``);
- per label and group: a caller who may not see the label, asking for an output with it by
  name, was denied (its table's ``deny_when_requested`` is ``true``: ``requests.rego``) and now
  gets the output masked (``REQUEST_NOT_DENIED``); the entry removed, set to another value, or
  the label left to an ``unknown_label`` that does not deny;
- who may call an opaque or model admin method, or view recorded calls
  (``access_table_impact``).

A subject in several groups gets the best offer of its groups, so a change no single group's
treatment shows cannot show more to several. Pure: the caller loads the tables, as the rules read
them (``evaluated_tables``: modules can define them, not only data.json).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labelgate.bundle import gate
from labelgate.classify.labels import LABELS
from labelgate.policy.access_table_impact import access_changes, same_json
from labelgate.policy.contract import GRANT_SCOPES, ApprovalRequirement, DecidedMask
from labelgate.policy.impact import describe_mask, shows_more

ANY_OTHER_GROUP = "(any other group)"
# A caller that may not see a label, asking for it by name, is masked where it was denied. (The
# gate reads any kind: ``gate.table_reasons``; the change names its label like the others.)
REQUEST_NOT_DENIED = "tables stop denying a requested label"


def approval_weakenings(was: ApprovalRequirement, now: ApprovalRequirement) -> list[str]:
    """How ``now`` is easier to get than ``was``, or releases more once granted; empty when it
    is not (more approvals, fewer approver groups, another reason text)."""
    found = []
    if now.min_approvals < was.min_approvals:
        found.append(f"fewer approvals: {was.min_approvals} -> {now.min_approvals}")
    other = sorted(set(now.approver_groups) - set(was.approver_groups))
    if other:
        found.append(f"other approver groups: {', '.join(other)}")
    if now.grant_ttl_seconds > was.grant_ttl_seconds:
        found.append(f"longer grants: {was.grant_ttl_seconds} -> {now.grant_ttl_seconds} s")
    if _scope_width(now.grant_scope) > _scope_width(was.grant_scope):
        found.append(f"wider grants: {was.grant_scope} -> {now.grant_scope}")
    if was.single_use and not now.single_use:
        found.append("grants no longer single use")
    if was.row_budget is not None and (now.row_budget is None or now.row_budget > was.row_budget):
        budget = "none" if now.row_budget is None else now.row_budget
        found.append(f"larger row budget: {was.row_budget} -> {budget}")
    return found


def _scope_width(scope: str) -> int:
    # A scope this code does not know releases the most (fail closed).
    return GRANT_SCOPES.index(scope) if scope in GRANT_SCOPES else len(GRANT_SCOPES)


def table_changes(served: Any, proposed: Any) -> list[dict[str, Any]]:
    """Every label and group the ``proposed`` tables show more to than the ``served`` ones,
    every approval a label's offer names made easier (the kinds of ``labelgate.bundle.gate``),
    every group no longer denied a label it asks for by name (``REQUEST_NOT_DENIED``), and
    whom they let call a method or view recorded calls (``access_table_impact``).
    No served tables: nothing to compare; no proposed tables deny every call (the decision's
    default), which shows nothing."""
    if not isinstance(served, Mapping) or not isinstance(proposed, Mapping) or same_json(served, proposed):
        return []
    before, after = _Tables(served), _Tables(proposed)
    changes = []
    for label in sorted(before.labels | after.labels, key=_label_order):
        for group in [*sorted(before.groups(label) | after.groups(label)), None]:
            treated, treats = before.treatment(label, group), after.treatment(label, group)
            change = _treatment_change(label, group, treated, treats)
            if change is not None:
                changes.append(change)
            # Shown now: the treatment's change says so. Masked both times: only the deny differs.
            if (
                before.denies_request(label)
                and not after.denies_request(label)
                and not (treated.see or treats.see)
            ):
                changes.append(_request_change(label, group, before, after, treats))
    for key in sorted(before.approvals.keys() & after.approvals.keys()):
        was, now = before.approvals[key], after.approvals[key]
        how = approval_weakenings(was, now) if was is not None and now is not None else []
        labels = sorted(before.labels_naming(key) | after.labels_naming(key), key=_label_order)
        if how and labels:
            changes.append(
                {
                    "kind": gate.TABLE_APPROVAL_WEAKENED,
                    "approval": key,
                    "labels": labels,
                    "was": _describe_requirement(was),
                    "now": _describe_requirement(now),
                    "how": how,
                }
            )
    return changes + access_changes(served, proposed)


def describe_treatment(tables: Mapping[str, Any], label: str, group: str | None) -> str:
    """How ``tables`` show ``label`` to a caller in ``group`` (None: in no group the label's
    table names): ``in clear``, ``in clear after approval KEY (...)``, ``masked (STRATEGY)``."""
    return _Tables(tables).treatment(label, group).describe()


@dataclass(frozen=True)
class _Treatment:
    """How a label is shown: ``see`` (in clear), ``approval`` (in clear once it is granted),
    else masked with ``mask`` (None: no usable offer, nulled)."""

    see: bool = False
    approval: str | None = None
    requirement: ApprovalRequirement | None = None
    mask: DecidedMask | None = None

    def describe(self) -> str:
        if self.see and self.approval is None:
            return "in clear"
        if self.see:
            return f"in clear after approval {self.approval} ({_describe_requirement(self.requirement)})"
        return f"masked ({describe_mask(self.mask) if self.mask else 'null'})"


def _treatment_change(
    label: str, group: str | None, was: _Treatment, now: _Treatment
) -> dict[str, Any] | None:
    how: list[str] = []
    if now.see and not was.see:
        kind = gate.TABLE_SHOWN
    elif now.see and now.approval is None and was.approval is not None:
        kind = gate.TABLE_APPROVAL_DROPPED
    elif was.requirement is not None and now.requirement is not None and now.approval != was.approval:
        # Another approval (the same one changed is the approvals table's change, reported once).
        how = approval_weakenings(was.requirement, now.requirement)
        if not how:
            return None
        kind = gate.TABLE_APPROVAL_WEAKENED
    elif not now.see and not was.see and _mask_shows_more(was.mask, now.mask):
        kind = gate.TABLE_MASK_WEAKENED
    else:
        return None
    return {
        "kind": kind,
        "label": label,
        "group": group or ANY_OTHER_GROUP,
        "labels": [label],
        "was": was.describe(),
        "now": now.describe(),
        "how": how,
    }


def _request_change(
    label: str, group: str | None, before: _Tables, after: _Tables, now: _Treatment
) -> dict[str, Any]:
    return {
        "kind": REQUEST_NOT_DENIED,
        "label": label,
        "group": group or ANY_OTHER_GROUP,
        "labels": [label],
        "was": f"denied ({before.request_entry(label)})",
        "now": f"{now.describe()} ({after.request_entry(label)})",
        "how": [],
    }


def _mask_shows_more(was: DecidedMask | None, now: DecidedMask | None) -> bool:
    if now is None:  # nulled: nothing shows less
        return False
    try:
        return shows_more(was or DecidedMask("", "null"), now)
    except (TypeError, ValueError):  # a keep_last that is no number: the enforcer's problem, held here
        return True


class _Tables:
    """The parts of one tables document the treatments of labels depend on, read as the rules
    read them: what they could not use (a missing approval, an unscored strategy) is left out."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.by_label = _mapping(data.get("labels"))
        self.unknown = _mapping(data.get("unknown_label"))
        self.scores = _mapping(data.get("offer_scores"))
        self.permissiveness = _mapping(data.get("mask_permissiveness"))
        self.approvals = {key: _requirement(value) for key, value in _mapping(data.get("approvals")).items()}
        self.labels = frozenset(LABELS) | frozenset(self.by_label)

    def table(self, label: str) -> Mapping[str, Any]:
        # ``not tables.labels[label]`` holds for a label set to false, too: unknown_label's.
        return self.unknown if self._unknown(label) else _mapping(self.by_label[label])

    def _unknown(self, label: str) -> bool:
        return self.by_label.get(label, False) is False

    def denies_request(self, label: str) -> bool:
        """``_deny_when_requested``: the label's table (or unknown_label's) says exactly true."""
        return self.table(label).get("deny_when_requested") is True

    def request_entry(self, label: str) -> str:
        """Where ``denies_request`` reads, and what it finds there."""
        where = "unknown_label" if self._unknown(label) else f"labels.{label}"
        value = self.table(label).get("deny_when_requested", _ABSENT)
        return f"{where}.deny_when_requested: {'absent' if value is _ABSENT else json.dumps(value)}"

    def groups(self, label: str) -> set[str]:
        return {str(group) for group in _mapping(self.table(label).get("groups"))}

    def offers(self, label: str, group: str | None) -> list[Any]:
        table = self.table(label)
        groups = _mapping(table.get("groups"))
        return ([groups[group]] if group is not None and group in groups else []) + [table.get("default")]

    def labels_naming(self, key: str) -> set[str]:
        return {
            label
            for label in self.labels
            for offer in [
                *_mapping(self.table(label).get("groups")).values(),
                self.table(label).get("default"),
            ]
            if isinstance(offer, Mapping) and offer.get("approval") == key
        }

    def treatment(self, label: str, group: str | None) -> _Treatment:
        """The first of the most permissive scored offers (``_label_treatment``)."""
        best: tuple[float, _Treatment] | None = None
        for offer in self.offers(label, group):
            scored = self._scored(offer)
            if scored is not None and (best is None or scored[0] > best[0]):
                best = scored
        return best[1] if best is not None else _Treatment()

    def _scored(self, offer: Any) -> tuple[float, _Treatment] | None:
        """An offer's score and what it gives, as ``_label_treatment`` scores the three kinds
        (``not offer.approval``: absent or false; ``not offer.see`` likewise)."""
        if not isinstance(offer, Mapping):
            return None
        see, approval = offer.get("see"), offer.get("approval", False)
        if see is True and approval is False:
            score = _number(self.scores.get("see"))
            return None if score is None else (score, _Treatment(see=True))
        if see is True:
            requirement = self.approvals.get(approval) if isinstance(approval, str) else None
            base = _number(self.scores.get("see_after_approval"))
            if requirement is None or base is None:
                return None
            return base - requirement.min_approvals, _Treatment(True, approval, requirement)
        if offer.get("see", False) is not False:
            return None
        mask = _mapping(offer.get("mask"))
        strategy, params = mask.get("strategy"), mask.get("params")
        base = _number(self.scores.get("mask"))
        extra = _number(self.permissiveness.get(strategy)) if isinstance(strategy, str) else None
        if base is None or extra is None:
            return None
        decided = DecidedMask("", str(strategy), dict(params) if isinstance(params, Mapping) else {})
        return base + extra, _Treatment(mask=decided)


def _requirement(value: Any) -> ApprovalRequirement | None:
    """An approval as the rules use it; None when they cannot (its offers are not scored).
    A grant option of an unexpected type counts as releasing the most (fail closed)."""
    entry = _mapping(value)
    groups, least = entry.get("approver_groups"), _number(entry.get("min_approvals"))
    if not isinstance(groups, list) or least is None:
        return None
    ttl = _number(entry.get("grant_ttl_seconds"))
    scope = entry.get("grant_scope", "query")
    budget = entry.get("row_budget")
    return ApprovalRequirement(
        approver_groups=tuple(str(group) for group in groups),
        min_approvals=least,  # type: ignore[arg-type]  # a number, as the rules compare it
        grant_ttl_seconds=_or_most(ttl),  # type: ignore[arg-type]
        reason="",
        grant_scope=scope if isinstance(scope, str) else "(unknown)",
        single_use=entry.get("single_use") is True,
        row_budget=None if budget is None else _or_most(_number(budget)),  # type: ignore[arg-type]
    )


def _describe_requirement(requirement: ApprovalRequirement | None) -> str:
    if requirement is None:
        return "(unusable)"
    return f"{requirement.min_approvals} from {', '.join(requirement.approver_groups) or '(no group)'}"


_ABSENT = object()


def _or_most(number: float | None) -> float:
    return math.inf if number is None else number


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _label_order(label: str) -> tuple[int, str]:
    return (LABELS.index(label) if label in LABELS else len(LABELS), label)
