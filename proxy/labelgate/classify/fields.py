"""Classified fields, and their shape in the policy input (``$defs/field`` of input.json)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from labelgate.classify.detectors import Detection
from labelgate.classify.jsonpaths import JsonShape, KeyNames, Location

SOURCE_CATALOG = "catalog"
SOURCE_BACKEND = "backend"
SOURCE_DEFAULT = "default"
# The span name (``outputs.<t>{opaque-json}``) of elements that open like a JSON object but
# were not classified key by key; not a valid detector name, so no detector can clash.
OPAQUE_JSON = "opaque-json"


def detector_source(detector: str) -> str:
    return f"detector:{detector}"


def fail_closed_source(reason: str) -> str:
    """The source of an opaque element's label: the catalog, and why it could not be applied
    key by key (``catalog:fail_closed:duplicate_key``)."""
    return f"{SOURCE_CATALOG}:fail_closed:{reason}"


@dataclass(frozen=True)
class Field:
    """One field path with its labels; ``sources`` maps each label to where it came from."""

    path: str
    labels: frozenset[str]
    sources: dict[str, set[str]] = field(hash=False)


class FieldSet:
    """Collects labels per path from several sources, then closes with the default label.

    Paths keep the order in which they were first seen, so the result is deterministic.
    """

    def __init__(self) -> None:
        self._sources: dict[str, dict[str, set[str]]] = {}

    def touch(self, path: str) -> None:
        """Record that ``path`` exists even if no source labels it (it gets the default)."""
        self._sources.setdefault(path, {})

    def add(self, path: str, labels: Iterable[str], source: str) -> None:
        by_label = self._sources.setdefault(path, {})
        for label in labels:
            by_label.setdefault(label, set()).add(source)

    def labelled(self) -> list[dict[str, set[str]]]:
        """Each path's labels and their sources, for the paths some source labelled."""
        return [by_label for by_label in self._sources.values() if by_label]

    def fields(self, default_label: str) -> list[Field]:
        result = []
        for path, by_label in self._sources.items():
            sources = {label: set(where) for label, where in by_label.items()}
            if not sources:
                # Unlabelled data is never public: it carries the catalog's default label.
                sources = {default_label: {SOURCE_DEFAULT}}
            elif "{" not in path and _only_detected(sources):
                # A detector adds its label to what a field holds, it does not stand for the
                # rest of it: a map whose values hold a key block keeps the default beside
                # ``restricted`` (a caller may see restricted and not internal). Span fields
                # (``path{detector}``) are the detection alone.
                sources.setdefault(default_label, set()).add(SOURCE_DEFAULT)
            result.append(Field(path, frozenset(sources), sources))
        return result


def _only_detected(sources: dict[str, set[str]]) -> bool:
    return all(source.startswith("detector:") for where in sources.values() for source in where)


class LeafSpans(NamedTuple):
    """Detections in one string leaf of a JSON element or a generic message (a named tuple:
    one is made per leaf with detections, and a frozen dataclass costs several times more).

    ``location`` walks from the root (keys / field names and list indices), ``path`` is
    the leaf's field path, and detection offsets index the leaf's UTF-8 bytes.
    """

    location: Location
    path: str
    detections: tuple[Detection, ...]


@dataclass
class Classification:
    """Fields for the policy, plus what enforcement needs to mask parts of values.

    ``spans``: tensor -> element index -> detections in a plain-text element (byte offsets);
    an opaque element (``OPAQUE_JSON``) has one span over all of it per detector found and
    one named ``OPAQUE_JSON``, so each of their masks rewrites it whole.
    ``json_elements``: tensor -> index of every element read as a JSON object -> its leaves
    with detections. ``element_counts``: tensor -> elements classified (masking refuses to
    trust spans for a tensor whose size changed). ``message_spans``: string leaves of a
    generic message with detections. ``json_keys``: how keys were spelled in the paths of
    ``json_elements``, so masking spells them the same way. ``json_shapes``: tensor -> index
    of each element of ``json_elements`` -> (the bytes classified, their ``JsonShape``), so
    masking finds the nodes a mask names once per shape, for elements that are still those bytes.
    """

    fields: list[Field]
    spans: dict[str, dict[int, list[Detection]]] = field(default_factory=dict)
    json_elements: dict[str, dict[int, list[LeafSpans]]] = field(default_factory=dict)
    element_counts: dict[str, int] = field(default_factory=dict)
    message_spans: list[LeafSpans] = field(default_factory=list)
    json_keys: KeyNames | None = None
    json_shapes: dict[str, dict[int, tuple[bytes, JsonShape]]] = field(default_factory=dict)

    def labels(self) -> set[str]:
        return union_labels(self.fields)

    def policy_fields(self) -> list[dict[str, Any]]:
        return to_policy_fields(self.fields)


def union_labels(fields: Iterable[Field]) -> set[str]:
    """Every label any of ``fields`` carries (the input's ``labels``)."""
    labels: set[str] = set()
    for item in fields:
        labels |= item.labels
    return labels


def to_policy_fields(fields: Iterable[Field]) -> list[dict[str, Any]]:
    """Fields as the policy input wants them, with sorted lists so the input is deterministic."""
    return [
        {
            "path": item.path,
            "labels": sorted(item.labels),
            "sources": {label: sorted(item.sources[label]) for label in sorted(item.sources)},
        }
        for item in fields
    ]
