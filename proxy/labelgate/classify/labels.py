"""The label vocabulary of the contract (``$defs/label`` in the input schema), least to most sensitive."""

from __future__ import annotations

from collections.abc import Iterable

from labelgate.classify import reasons
from labelgate.errors import ConfigError

LABELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
LABEL_RANK: dict[str, int] = {label: rank for rank, label in enumerate(LABELS)}


def is_label(value: object) -> bool:
    return isinstance(value, str) and value in LABEL_RANK


def rank(label: str) -> int:
    """A label's sensitivity; one the gateway does not know ranks above every known one (a
    label nobody defined is treated as the most sensitive, never the least)."""
    return LABEL_RANK.get(label, len(LABEL_RANK))


def most_sensitive(labels: Iterable[str]) -> str:
    """The most sensitive of ``labels`` (which must be known and non-empty)."""
    return max(labels, key=LABEL_RANK.__getitem__)


def check_default_label(label: str) -> str:
    """The label for data no source labels: a known label, and never ``public``."""
    if not is_label(label) or label == "public":
        raise ConfigError(
            reasons.DEFAULT_LABEL_INVALID,
            f"default label {label!r} must be one of {list(LABELS[1:])}: unlabelled data is never public",
        )
    return label
