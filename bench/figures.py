"""What the benchmark reports: figures, each against a baseline measured in the same run.

These machines are shared and noisy, so an absolute number alone says little; every
``Figure`` carries the baseline it should be read against (direct calls for the data
path, the same engine on a trivial policy for decisions, one plain regex for detectors)
and the ratio. ``Scenario`` groups a scenario's figures with its raw runs; a scenario that
cannot run yet says so (``not_available``) instead of disappearing from the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "not_available", "skipped"]


@dataclass(frozen=True)
class Figure:
    id: str
    label: str
    value: float
    unit: str
    baseline_label: str
    baseline: float
    better: Literal["higher", "lower"]
    # Latency-like figures also report what the subject adds on top of the baseline.
    show_added: bool = False

    @property
    def ratio(self) -> float | None:
        if not self.baseline or not math.isfinite(self.value) or not math.isfinite(self.baseline):
            return None
        return self.value / self.baseline

    @property
    def added(self) -> float:
        return self.value - self.baseline

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "value": _round(self.value),
            "unit": self.unit,
            "better": self.better,
            "baseline": {"label": self.baseline_label, "value": _round(self.baseline)},
            "ratio": None if self.ratio is None else round(self.ratio, 4),
        }
        if self.show_added:
            doc["added"] = _round(self.added)
        return doc


@dataclass
class Scenario:
    name: str
    title: str
    status: Status = "ok"
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    def figure(self, figure_id: str) -> Figure | None:
        return next((f for f in self.figures if f.id == figure_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "note": self.note,
            "seconds": round(self.seconds, 1),
            "figures": [f.to_json() for f in self.figures],
            "details": self.details,
        }


def not_available(name: str, title: str, why: str) -> Scenario:
    return Scenario(name, title, status="not_available", note=why)


# --- targets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A figure's target from issue 8: measured and reported, never asserted."""

    id: str
    figure: str
    figure_ids: tuple[str, ...]
    quantity: Literal["value", "ratio", "added"]
    op: Literal["<=", ">="]
    threshold: float
    unit: str
    why: str
    # Where the time goes and what would close the gap, shown when the target is missed.
    hint: str = ""


def evaluate(targets: tuple[Target, ...], figures: dict[str, Figure]) -> list[dict[str, Any]]:
    rows = []
    for target in targets:
        for figure_id in target.figure_ids:
            row: dict[str, Any] = {
                "target_id": target.id,
                "figure": target.figure,
                "figure_id": figure_id,
                "target": f"{target.op} {_format(target.threshold)} {target.unit}".strip(),
                "why": target.why,
            }
            figure = figures.get(figure_id)
            measured = None if figure is None else _quantity(figure, target.quantity)
            if measured is None:
                row.update(measured=None, status="not_available", gap="not measured in this run")
            else:
                met = measured <= target.threshold if target.op == "<=" else measured >= target.threshold
                row.update(
                    measured=_round(measured),
                    subject=figure.label,
                    status="pass" if met else "miss",
                    gap="" if met else _gap(target, measured),
                    hint="" if met else target.hint,
                )
            rows.append(row)
    return rows


def _quantity(figure: Figure, quantity: str) -> float | None:
    if quantity == "ratio":
        return figure.ratio
    return figure.added if quantity == "added" else figure.value


def _gap(target: Target, measured: float) -> str:
    unit = f" {target.unit}" if target.unit else ""
    if target.op == "<=":
        times = f" ({measured / target.threshold:.1f}x the target)" if target.threshold else ""
        return f"over by {_format(measured - target.threshold)}{unit}{times}"
    share = f" ({measured / target.threshold:.0%} of the target)" if target.threshold else ""
    return f"short by {_format(target.threshold - measured)}{unit}{share}"


def _format(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _round(value: float) -> float:
    if not math.isfinite(value):
        return value
    return round(value, 4) if abs(value) < 100 else round(value, 1)
