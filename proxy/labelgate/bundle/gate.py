"""The publish gate's impact rule: what a candidate revision changes, and whether that holds it.

Before a validated revision replaces the served one, the publisher asks an ``ImpactAnalyzer``
what the candidate would decide differently on stored decision inputs (the report of
``labelgate policy impact``: counts per change kind, subject group, model and field, an
example input hash, never a data value), with what a replay cannot show: how each changed
approval requirement weakened, the labels the candidate's catalog takes from fields (the
stored inputs carry the labels the served catalog gave), and what the candidate's tables show
to groups, or let them approve, that the served ones do not (a replay shows that only on the
calls its window happens to hold). ``hold_reasons`` applies the
configured limits to that report; a held revision is served only after a person who is not
its author approves the publish through the approvals service (``PublishApprovals``).

The bundle package sits low in the layer table (below ``policy`` and ``approvals``), so it
defines only these interfaces and the pure rule; ``labelgate.bundle.cli`` (the command
layer) plugs in the policy replay and an approvals client on the shared approval store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from labelgate.errors import LabelgateError

# The impact report's kinds (labelgate.policy.impact, which this layer may not import; the
# publish gate's tests hold them equal). A weakened mask may show more of the value: null or
# redact -> hash -> partial, or a partial keeping another number of characters.
MASK_REMOVED = "mask removed"
MASK_WEAKENED = "mask weakened"
# A call that was refused or held and now goes through releases every field it asks for.
RELEASING_KINDS = ("deny -> allow", "no longer held")
# Held both times, by another requirement. The report says per change how the requirement
# weakened (``weakened``: fewer approvals, other approver groups, longer or wider grants); an
# empty list is a change that lets no one more approve and releases no more (a stricter
# requirement, another reason text). A change that does not say holds (fail closed).
APPROVAL_CHANGED = "approval requirement changed"

# The report's ``catalog`` section: every field to which the candidate's catalog
# (data.labelgate.catalog) gives fewer labels. A replay cannot show these: the stored inputs
# carry the labels the served catalog gave (``labelgate.policy.catalog_impact``).
CATALOG_LOWERED = "catalog label lowered"
# A label replaced by one not less sensitive in rank: the policy need not be monotone in rank
# (the default tables show ``restricted`` to a granted break-glass caller, never ``confidential``).
CATALOG_REPLACED = "catalog label replaced"
# No entry of the candidate's labels the field: it has the default label (or no catalog).
CATALOG_REMOVED = "catalog field removed"
# An entry for a field no served entry labelled, without the default label: the field had
# the default label (``internal``) and now has the entry's labels instead.
CATALOG_ADDED_WITHOUT_DEFAULT = "catalog field added without the default label"
# A JSON key one catalog names and the other does not is spelled otherwise (``<key:...>`` where
# no entry of the model names it), so an entry matching one spelling stops matching the field:
# a candidate naming ``diagnosis`` for one output takes a served ``<key:*>`` glob's label from
# ``diagnosis`` in every output. The change lists the keys (``respelled_keys``).
CATALOG_RESPELLED = "catalog key spelled otherwise"
DEFAULT_LABEL_PATH = "(default label)"

# The report's ``tables`` section: what the candidate's tables (data.labelgate.tables, as OPA
# evaluates it: modules can define it as well as data.json, ``labelgate.policy.evaluated_tables``)
# show a group that the served ones do not, compared as data (``labelgate.policy.table_impact``).
# Each change names its ``labels``; one that does not holds (fail closed).
# A group (or any other caller) sees a label in clear, or once approved, that was masked.
TABLE_SHOWN = "tables show a label"
# A group sees a label in clear that it saw only after an approval.
TABLE_APPROVAL_DROPPED = "tables drop an approval"
# A label's approval (an approvals entry, or the one a group's offer names) is easier to get
# or releases more once granted; ``how`` says how.
TABLE_APPROVAL_WEAKENED = "tables weaken an approval"
# A label is masked with a mask that may show more of it.
TABLE_MASK_WEAKENED = "tables weaken a mask"
# How many items one hold reason lists before "and N more".
LISTED = 5

# (current policy folder, candidate policy folder) -> the impact report as JSON
ImpactAnalyzer = Callable[[Path, Path], dict[str, Any]]


class HoldRule(BaseModel):
    """When a candidate waits for approval instead of being published."""

    model_config = ConfigDict(extra="forbid")

    # Hold when a field with one of these labels loses its mask, or its mask now shows more of
    # it (or its call is newly released, or the approval it waits for is weakened), or loses
    # the label itself in the catalog, or the tables show it (or its approval) more readily.
    unmasked_labels: list[str] = Field(default_factory=lambda: ["confidential", "restricted"])
    # Hold when more distinct inputs than this would be decided differently (None: no limit).
    max_changed_inputs: int | None = Field(None, ge=0)
    # Hold when fewer distinct inputs than this were replayed: a replay of nothing (an empty
    # window, a fleet that has decided nothing yet) is no evidence that the candidate changes
    # nothing, so it waits for a person like a change would. 0: publish on any replay.
    min_inputs: int = Field(1, ge=0)


class ApprovalRule(BaseModel):
    """Who releases a held publish, in the approvals service the gateways use."""

    model_config = ConfigDict(extra="forbid")

    # A gateway config file: its ``approvals`` section names the shared store (PostgreSQL or
    # the SQLite file ``labelgate approvals-server`` serves), its ``auth`` the approvers' JWTs.
    config: Path
    approver_groups: list[str] = Field(min_length=1)
    min_approvals: int = Field(1, ge=1)
    ttl_seconds: int = Field(86400, ge=60)


class PublishGateSettings(BaseModel):
    """``--publish-gate FILE`` (YAML): the impact rule of the bundle server's publish gate."""

    model_config = ConfigDict(extra="forbid")

    # Stored decision inputs: a gateway's ``audit.inputs_file`` (SQLite) or a copy, or a
    # ``.jsonl`` sample; ``decision-logs`` reads the inputs OPA posted to this server.
    inputs: str
    window: str = "24h"
    engine: str = Field("embedded", pattern="^(embedded|wasm|opa)$")
    hold: HoldRule = Field(default_factory=HoldRule)
    approvals: ApprovalRule


@dataclass(frozen=True)
class ApprovalState:
    state: str  # pending, granted, denied, expired, abandoned
    resolution: str = ""
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalTicket:
    id: str
    link: str


class PublishApprovals(Protocol):
    """The approvals service as the publish gate needs it (see ``labelgate.bundle.cli``)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def request(
        self, *, author: str, bundle: str, revision: str, report: Mapping[str, Any], reasons: Sequence[str]
    ) -> ApprovalTicket: ...

    async def state(self, approval_id: str) -> ApprovalState: ...


class PublishGate:
    """The analyzer, the rule and the approvals client, as the publisher uses them."""

    def __init__(self, analyzer: ImpactAnalyzer, hold: HoldRule, approvals: PublishApprovals) -> None:
        self.analyzer = analyzer
        self.hold = hold
        self.approvals = approvals

    def assess(self, current: Path, candidate: Path) -> tuple[dict[str, Any], list[str]]:
        """The report and the reasons to hold (none: publish). Blocking: call from a worker thread.

        A report that cannot be made holds the candidate (fail closed), with the reason."""
        try:
            report = self.analyzer(current, candidate)
        except LabelgateError as error:
            return {"error": {"reason": error.reason, "message": error.message}}, [
                f"the impact could not be computed ({error.reason}): {error.message}"
            ]
        return report, hold_reasons(report, self.hold)


def hold_reasons(report: Mapping[str, Any], rule: HoldRule) -> list[str]:
    """Why ``report`` exceeds ``rule``'s limits; empty when the candidate may be published."""
    reasons: list[str] = []
    watched = set(rule.unmasked_labels)
    exposed = sorted(
        {
            f"{change['kind']} {change['field']} for {change['group']} on {change['model']}"
            for change in report.get("changes", [])
            if _releases(change, watched)
        }
    )
    if exposed:
        labels = ", ".join(sorted(watched & _labels(report)))
        reasons.append(f"releases {labels} data: {_listed(exposed)}")
    weakening = [change for change in report.get("changes", []) if _weakens_approval(change, watched)]
    if weakening:
        weakened = sorted(
            {
                f"{change['detail']} for {change['group']} on {change['model']} "
                f"({'; '.join(change.get('weakened') or ['how is not reported'])})"
                for change in weakening
            }
        )
        labels = ", ".join(sorted(watched & _labels({"changes": weakening})))
        reasons.append(f"weakens the approval of {labels} data: {_listed(weakened)}")
    reasons += catalog_reasons(report, watched)
    reasons += table_reasons(report, watched)
    # A report without ``distinct`` compared nothing on purpose (the first revision: nothing
    # served to compare with) or could not be made (held for that already).
    replayed = report.get("distinct")
    if isinstance(replayed, int) and replayed < rule.min_inputs:
        window = f" in the window ({report['window']})" if report.get("window") else ""
        reasons.append(
            f"only {replayed} distinct decision input(s) were replayed{window}, fewer than "
            f"{rule.min_inputs}: the impact is unknown"
        )
    changed = int(report.get("changed", 0))
    if rule.max_changed_inputs is not None and changed > rule.max_changed_inputs:
        reasons.append(f"{changed} distinct inputs change, the limit is {rule.max_changed_inputs}")
    if report.get("errors"):
        reasons.append(f"{len(report['errors'])} decision(s) failed closed during the replay")
    return reasons


def catalog_reasons(report: Mapping[str, Any], watched: set[str]) -> list[str]:
    """One reason per kind of catalog change that takes a watched label from a field."""
    found: dict[str, list[str]] = {}
    for change in report.get("catalog") or ():
        lost = set(change.get("was") or ()) - set(change.get("now") or ())
        if lost & watched:
            found.setdefault(str(change.get("kind")), []).append(describe_catalog_change(change))
    return [f"{kind}: {_listed(sorted(items))}" for kind, items in sorted(found.items())]


def describe_catalog_change(change: Mapping[str, Any]) -> str:
    """``customer-profile outputs.ssn confidential -> public``: where, and the labels before
    and after (``(none)``: the candidate has no catalog), the keys spelled otherwise."""
    scope = change.get("model") or change.get("message")
    where = f"{scope} {change['path']}" if scope else str(change["path"])
    was, now = ("+".join(change.get(side) or ()) or "(none)" for side in ("was", "now"))
    if change.get("kind") == CATALOG_REMOVED and change.get("now"):
        now += " (the default label)"
    keys = change.get("respelled_keys")
    spelled = f" (named by one catalog only: {', '.join(keys)})" if keys else ""
    return f"{where} {was} -> {now}{spelled}"


def table_reasons(report: Mapping[str, Any], watched: set[str]) -> list[str]:
    """One reason per kind of table change that shows a watched label more readily."""
    found: dict[str, list[str]] = {}
    for change in report.get("tables") or ():
        labels = change.get("labels")
        if labels is None or set(labels) & watched:
            found.setdefault(str(change.get("kind")), []).append(describe_table_change(change))
    return [f"{kind}: {_listed(sorted(items))}" for kind, items in sorted(found.items())]


def describe_table_change(change: Mapping[str, Any]) -> str:
    """``confidential for contractors: masked (redact) -> in clear``, or ``approval
    security_two_person (restricted): fewer approvals: 2 -> 1``."""
    how = "; ".join(change.get("how") or ())
    if change.get("approval") is not None:
        labels = ", ".join(change.get("labels") or ())
        return f"approval {change['approval']} ({labels}): {how or 'how is not reported'}"
    where = f"{change.get('label')} for {change.get('group')}"
    return f"{where}: {change.get('was')} -> {change.get('now')}" + (f" ({how})" if how else "")


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return "; ".join(items[:LISTED]) + more


def _weakens_approval(change: Mapping[str, Any], watched: set[str]) -> bool:
    """A call with watched fields now waits for an approval that is easier to get, or that
    releases more once granted (a report that does not say how it changed: fail closed)."""
    if change.get("kind") != APPROVAL_CHANGED:
        return False
    if "weakened" in change and not change["weakened"]:
        return False
    return bool(set(change.get("labels") or ()) & watched)


def _releases(change: Mapping[str, Any], watched: set[str]) -> bool:
    """A mask removed from a watched field or weakened on it, or a call with watched fields
    now released."""
    if change.get("kind") not in (MASK_REMOVED, MASK_WEAKENED, *RELEASING_KINDS):
        return False
    return bool(set(change.get("labels") or ()) & watched)


def _labels(report: Mapping[str, Any]) -> set[str]:
    return {label for change in report.get("changes", []) for label in change.get("labels") or ()}


def kind_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """Distinct inputs per change kind, for the page's summary line."""
    counts: dict[str, int] = {}
    for change in report.get("changes", []):
        counts[change["kind"]] = counts.get(change["kind"], 0) + int(change.get("inputs", 0))
    return counts
