"""Parameters of an upstream reply, as classified fields: pure.

A reply's ``parameters`` (and each output's) are a side channel: an uncatalogued model can
put a card number in one. Only the names the operator released (``release.parameters``,
with the label each carries) are read at all; every other parameter is dropped unseen.
A released parameter becomes the field ``parameters.<name>`` (or
``outputs.<tensor>.parameters.<name>``) with its configured label (source ``config``), and
its text form is scanned by the detectors like any output text (with JSON escapes and
character references decoded and other scripts' digits, invisible and control characters
folded too), adding ``<path>{<detector>}`` fields.
``labelgate.labels`` is the backend's labelling channel (read by ``backend_labels``) and is
never released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import Field, FieldSet, detector_source
from labelgate.classify.folding import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape, scannable

SOURCE_CONFIG = "config"
BACKEND_LABELS_PARAMETER = "labelgate.labels"

ParameterValue = bool | int | float | str


@dataclass(frozen=True)
class Parameter:
    """One released parameter: where it sits (``""`` for the reply, else an output name)."""

    output: str
    name: str
    value: ParameterValue

    @property
    def path(self) -> str:
        if not self.output:
            return f"parameters.{self.name}"
        return f"outputs.{self.output}.parameters.{self.name}"


@dataclass
class ParameterClassification:
    parameters: list[Parameter]
    fields: list[Field]
    spans: dict[str, list[Detection]]  # path -> detections in the value's text form


def parameter_value(parameter: Any) -> ParameterValue | None:
    """The value of an ``InferParameter`` (None when no choice is set)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def released_parameters(response: Any, released: Mapping[str, str]) -> list[Parameter]:
    """The reply's parameters whose names ``released`` names, reply level first."""
    found: list[Parameter] = []
    scopes = [("", response.parameters)] + [(o.name, o.parameters) for o in response.outputs]
    for output, parameters in scopes:
        if not parameters:
            continue
        for name in sorted(set(parameters) & released.keys() - {BACKEND_LABELS_PARAMETER}):
            value = parameter_value(parameters[name])
            if value is not None:
                found.append(Parameter(output, name, value))
    return found


def text_of(value: ParameterValue) -> bytes | None:
    """What detectors read: strings and numbers, as a JSON leaf's (``jsonpaths.scannable``: a
    card number fits in a uint64, and a double holding a whole number reads as its digits)."""
    text = scannable(value)
    return None if text is None else text.encode("utf-8", "surrogatepass")


def classify_parameters(
    parameters: list[Parameter], released: Mapping[str, str], detectors: DetectorSet
) -> ParameterClassification:
    fields = FieldSet()
    texts: list[tuple[str, bytes]] = []
    for parameter in parameters:
        fields.add(parameter.path, (released[parameter.name],), SOURCE_CONFIG)
        text = text_of(parameter.value)
        if text is not None:
            texts.append((parameter.path, text))
    spans: dict[str, list[Detection]] = {}
    values = [text for _, text in texts]
    found = detectors.scan_each(values) if texts else {}
    # JSON escapes and character references hide values from a scan of the raw text, as in
    # output text: what only their decoded form shows spans the whole value.
    if any(map(may_escape, values)):
        for position, hidden in hidden_by_escapes(values, detectors).items():
            found[position] = [*found.get(position, ()), *hidden]
    # So do digits of other scripts, invisible and control characters (folding.py).
    for position, hidden in hidden_by_folding(values, detectors, found).items():
        found[position] = [*found.get(position, ()), *hidden]
    for position, hits in found.items():
        path = texts[position][0]
        spans[path] = list(hits)
        for hit in hits:
            fields.add(f"{path}{{{hit.detector}}}", (hit.label,), detector_source(hit.detector))
    # Every parameter has a configured label, so no field falls back to a default.
    return ParameterClassification(parameters, fields.fields("internal"), spans)
