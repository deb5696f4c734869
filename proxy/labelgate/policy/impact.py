"""Policy impact: what a candidate policy would decide differently on inputs already seen.

Pure comparison (no engine, no I/O): :func:`compare` lists how two decisions on one input
differ, :func:`summarize` groups the differences of many inputs by kind, subject group,
model and field, with counts and one example input hash per group. Inputs carry names,
labels, paths and the subject, never data values, and so does the report.

Kinds of change:

- ``allow -> deny``, ``deny -> allow``: the call's outcome (a decision that holds for
  approval counts as held, not as deny);
- ``newly held``, ``no longer held``: the decision now (no longer) waits for approval;
- ``approval requirement changed``: held both times, by another requirement;
- ``mask added``, ``mask removed``, ``mask weakened``, ``mask strategy changed``: per field
  path, when the outcome did not change (a call that is now refused releases no field at
  all). ``mask weakened`` is a change that may show more of the value (``shows_more``:
  redact -> hash or -> partial, a partial keeping another number of characters);
  ``mask strategy changed`` one that shows no more.

A change's labels are those of the input's fields at its path: a glob path (``outputs.*``)
matches as the enforcer matches it (``*`` and ``?`` as wildcards, the whole path), so a
removed glob mask carries the labels of every field it masked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labelgate.classify.catalog import compile_glob, is_glob
from labelgate.policy.contract import DecidedMask, Decision
from labelgate.untrusted_text import shown

CALL = "(call)"  # the "field" of a change that concerns the whole call
NO_GROUP = "(no group)"
NO_SUBJECT = "(unauthenticated)"

ALLOW_TO_DENY = "allow -> deny"
DENY_TO_ALLOW = "deny -> allow"
NEWLY_HELD = "newly held"
NO_LONGER_HELD = "no longer held"
APPROVAL_CHANGED = "approval requirement changed"
MASK_ADDED = "mask added"
MASK_REMOVED = "mask removed"
MASK_WEAKENED = "mask weakened"
MASK_CHANGED = "mask strategy changed"
KINDS = (
    ALLOW_TO_DENY,
    NEWLY_HELD,
    APPROVAL_CHANGED,
    MASK_REMOVED,
    MASK_WEAKENED,
    MASK_ADDED,
    MASK_CHANGED,
    NO_LONGER_HELD,
    DENY_TO_ALLOW,
)


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the current and the candidate decision on one input."""

    kind: str
    field: str
    detail: str  # e.g. "partial(keep_last=4) -> (none)": strategies and parameters, no data


def outcome_of(decision: Decision) -> str:
    """allow, held (waits for approval) or deny."""
    if decision.allow:
        return "allow"
    return "held" if decision.require_approval is not None else "deny"


def describe_mask(mask: DecidedMask | None) -> str:
    if mask is None:
        return "(none)"
    params = ",".join(f"{k}={v}" for k, v in sorted(mask.params.items()))
    return f"{mask.strategy}({params})" if params else mask.strategy


# How much of a value each strategy may show: ``null`` and ``redact`` nothing of it, ``hash``
# no character but equal values come out equal (linkable, and a guessable value confirmable
# by whoever holds the key), ``partial`` its length and last characters. This layer may not
# import the enforcer (labelgate.enforce.strategies); tests/policy/test_impact_weakening.py
# holds this to its order of protection (STRATEGIES), which ranks null before redact only to
# pick one of two masks, not because redact shows more.
STRATEGY_EXPOSURE = {"null": 0, "redact": 0, "hash": 1, "partial": 2}
# The enforcer's order of protection, most protective first: of several masks naming one
# path it applies the first (``Mask.strength``: this order, then keep_last, then replacement).
STRATEGY_ORDER = ("null", "redact", "hash", "partial")
DEFAULT_KEEP_LAST = 4  # the enforcer's, for a partial without keep_last
DEFAULT_REPLACEMENT = "[REDACTED]"


def shows_more(was: DecidedMask, now: DecidedMask) -> bool:
    """Whether masking with ``now`` may show more of a value than ``was`` did.

    A strategy of higher ``STRATEGY_EXPOSURE`` shows more; one it does not know counts as
    showing everything (fail closed). A ``partial`` keeping another number of last characters
    shows more either way, unless it now keeps none: more characters, or fewer, since a value
    no longer than ``keep_last`` is starred whole (``partial(10)`` hides an 8-character value
    that ``partial(4)`` shows 4 characters of).
    """
    before, after = _exposure(was.strategy), _exposure(now.strategy)
    if before != after:
        return after > before
    if now.strategy != "partial" or was.strategy != "partial":
        return False
    kept = _keep_last(now)
    return kept != 0 and kept != _keep_last(was)


def _exposure(strategy: str) -> int:
    return STRATEGY_EXPOSURE.get(strategy, max(STRATEGY_EXPOSURE.values()) + 1)


def _keep_last(mask: DecidedMask) -> int:
    return int(mask.params.get("keep_last", DEFAULT_KEEP_LAST))


def applied_masks(decision: Decision) -> dict[str, DecidedMask]:
    """Per path, the mask the enforcer applies: the most protective of those naming it (a
    candidate dropping the stronger of two masks of one path weakens it)."""
    chosen: dict[str, DecidedMask] = {}
    for mask in decision.masks:
        current = chosen.get(mask.path)
        if current is None or _strength(mask) < _strength(current):
            chosen[mask.path] = mask
    return chosen


def _strength(mask: DecidedMask) -> tuple[int, int, str]:
    order = STRATEGY_ORDER.index(mask.strategy) if mask.strategy in STRATEGY_ORDER else -1
    return (order, _keep_last(mask), str(mask.params.get("replacement", DEFAULT_REPLACEMENT)))


def _describe_approval(decision: Decision) -> str:
    requirement = decision.require_approval
    if requirement is None:
        return "(none)"
    return f"{requirement.min_approvals} of {'+'.join(requirement.approver_groups)}"


def compare(current: Decision, candidate: Decision) -> list[Change]:
    """How ``candidate`` differs from ``current`` on the same input."""
    before, after = outcome_of(current), outcome_of(candidate)
    if before != after:
        if after == "held":
            return [Change(NEWLY_HELD, CALL, f"{before} -> held, {_describe_approval(candidate)}")]
        if before == "held":
            return [Change(NO_LONGER_HELD, CALL, f"held -> {after}")]
        kind = ALLOW_TO_DENY if after == "deny" else DENY_TO_ALLOW
        return [Change(kind, CALL, candidate.reason if after == "deny" else "")]
    changes: list[Change] = []
    if before == "held" and current.require_approval != candidate.require_approval:
        detail = f"{_describe_approval(current)} -> {_describe_approval(candidate)}"
        changes.append(Change(APPROVAL_CHANGED, CALL, detail))
    if before == "deny":
        return changes
    old, new = applied_masks(current), applied_masks(candidate)
    for path in sorted(old.keys() | new.keys()):
        was, now = old.get(path), new.get(path)
        if was is None:
            changes.append(Change(MASK_ADDED, path, f"(none) -> {describe_mask(now)}"))
        elif now is None:
            changes.append(Change(MASK_REMOVED, path, f"{describe_mask(was)} -> (none)"))
        elif (was.strategy, dict(was.params)) != (now.strategy, dict(now.params)):
            kind = MASK_WEAKENED if shows_more(was, now) else MASK_CHANGED
            changes.append(Change(kind, path, f"{describe_mask(was)} -> {describe_mask(now)}"))
    return changes


def subject_group(doc: Mapping[str, Any]) -> str:
    """The subject's groups, sorted and joined with ``+``, for grouping."""
    subject = doc.get("subject")
    if not isinstance(subject, Mapping):
        return NO_SUBJECT
    groups = sorted(str(group) for group in subject.get("groups") or ())
    return "+".join(groups) if groups else NO_GROUP


def model_of(doc: Mapping[str, Any]) -> str:
    request = doc.get("request")
    return str(request.get("model") or request.get("method") or "") if isinstance(request, Mapping) else ""


@dataclass
class ChangeGroup:
    """Inputs with the same change for the same subject group, model and field."""

    kind: str
    group: str
    model: str
    field: str
    detail: str
    inputs: int = 0  # distinct inputs
    calls: int = 0  # decisions seen on them (each input counts as often as it was seen)
    example: str = ""  # the smallest input hash of the group
    # Labels of the changed field (of every field the call decides on, for a call change),
    # over every input of the group: what a publish gate's rule looks at.
    labels: set[str] = dataclasses.field(default_factory=set)  # `field` is a column here

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "group": self.group,
            "model": self.model,
            "field": self.field,
            "detail": self.detail,
            "inputs": self.inputs,
            "calls": self.calls,
            "example": self.example,
            "labels": sorted(self.labels),
        }


def field_labels(doc: Mapping[str, Any], path: str) -> set[str]:
    """Labels of the input's fields at ``path`` or inside it (every field for ``CALL``).

    A glob ``path`` names what the enforcer's mask of that path names: a field whose path,
    or the path of a field or element it is inside, the glob matches whole
    (``labelgate.enforce.strategies.MaskIndex``). A removed ``outputs.*`` collected no label
    when read literally, and so was never held (found by review)."""
    glob = compile_glob(path) if path != CALL and is_glob(path) else None
    found: set[str] = set()
    for entry in doc.get("fields") or ():
        if not isinstance(entry, Mapping):
            continue
        where = str(entry.get("path", ""))
        if glob is not None:
            inside = any(glob.fullmatch(enclosing) for enclosing in _enclosing_paths(where))
        else:
            inside = where == path or (where.startswith(path) and where[len(path) : len(path) + 1] in ".[{")
        if path == CALL or inside:
            found.update(str(label) for label in entry.get("labels") or ())
    return found


def _enclosing_paths(path: str) -> Iterable[str]:
    """``path`` and every path it is inside (``a.b[0]`` is inside ``a.b`` and ``a``)."""
    yield path
    for index in range(len(path) - 1, 0, -1):
        if path[index] in ".[{":
            yield path[:index]


@dataclass
class ImpactReport:
    inputs: int = 0  # decisions replayed, counting repeats (the stored ``seen`` counts)
    distinct: int = 0  # distinct inputs evaluated
    changed: int = 0  # distinct inputs with at least one change
    groups: list[ChangeGroup] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # {"hash", "side", "reason"}

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "distinct": self.distinct,
            "changed": self.changed,
            "changes": [group.to_json() for group in self.groups],
            "errors": list(self.errors),
        }


@dataclass(frozen=True, slots=True)
class Replayed:
    """One stored input and what each policy decided on it."""

    hash: str
    seen: int
    input: Mapping[str, Any]
    current: Decision
    candidate: Decision


def summarize(replays: Iterable[Replayed]) -> ImpactReport:
    """Group the changes of every replayed input (a fail-closed decision is an error, not a change)."""
    report = ImpactReport()
    groups: dict[tuple[str, str, str, str, str], ChangeGroup] = {}
    for replay in replays:
        report.inputs += replay.seen
        report.distinct += 1
        failed = [
            (side, decision.fail_reason)
            for side, decision in (("current", replay.current), ("candidate", replay.candidate))
            if decision.fail_reason is not None
        ]
        if failed:
            report.errors += [{"hash": replay.hash, "side": side, "reason": str(why)} for side, why in failed]
            continue
        changes = compare(replay.current, replay.candidate)
        if changes:
            report.changed += 1
        group, model = subject_group(replay.input), model_of(replay.input)
        for change in changes:
            key = (change.kind, group, model, change.field, change.detail)
            entry = groups.get(key)
            if entry is None:
                entry = groups[key] = ChangeGroup(change.kind, group, model, change.field, change.detail)
            entry.inputs += 1
            entry.calls += replay.seen
            entry.labels |= field_labels(replay.input, change.field)
            if not entry.example or replay.hash < entry.example:
                entry.example = replay.hash
    order = {kind: rank for rank, kind in enumerate(KINDS)}
    report.groups = sorted(
        groups.values(), key=lambda g: (order.get(g.kind, len(order)), g.group, g.model, g.field, g.detail)
    )
    return report


def to_markdown(report: ImpactReport, *, current: str = "current", candidate: str = "candidate") -> str:
    """A Markdown summary for a CI comment."""
    lines = [
        f"### Policy impact: `{candidate}` against `{current}`",
        "",
        f"Replayed {report.distinct} distinct decision inputs ({report.inputs} decisions); "
        f"{report.changed} would be decided differently.",
    ]
    if report.groups:
        lines += [
            "",
            "| change | group | model | field | detail | inputs | decisions | example input |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in report.groups:
            cells = [g.kind, g.group, g.model, g.field, g.detail, str(g.inputs), str(g.calls), g.example[:16]]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    elif not report.distinct:
        lines += ["", "**No decision inputs were replayed: this report says nothing about the candidate.**"]
    else:
        lines += ["", "No changes."]
    if report.errors:
        lines += ["", f"**{len(report.errors)} decision(s) failed closed**:"]
        lines += [f"- `{e['hash'][:16]}` ({e['side']}): {shown(e['reason'])}" for e in report.errors[:20]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    # Caller-chosen text (a model name) in a CI comment: escapes shown, never passed raw.
    return shown(text).replace("|", "\\|") or " "
