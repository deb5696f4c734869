"""Parameters of an upstream reply, as classified fields: pure.

A reply's ``parameters`` (and each output's) are a side channel: an uncatalogued model can
put a card number in one. Only the names the operator released (``release.parameters``,
with the label each carries) are read at all; every other parameter is dropped unseen.
A released name may also say which value types it carries (``bool``, ``int64``, ``uint64``,
``double``, ``string``: the ``InferParameter`` choices); a value of another type is dropped
unseen too (``released_parameters``). A released parameter becomes the field
``parameters.<name>`` (or ``outputs.<tensor>.parameters.<name>``) with its configured label
(source ``config``), and its text form is scanned by the detectors like any output text (with JSON escapes and
character references decoded and other scripts' digits, invisible and control characters
folded too), adding ``<path>{<detector>}`` fields.
``labelgate.labels`` is the backend's labelling channel (read by ``backend_labels``) and is
never released.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import Field, FieldSet, detector_source
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape, scannable

SOURCE_CONFIG = "config"
BACKEND_LABELS_PARAMETER = "labelgate.labels"

ParameterValue = bool | int | float | str
ParameterType = Literal["bool", "int64", "uint64", "double", "string"]
PARAMETER_TYPES: tuple[ParameterType, ...] = ("bool", "int64", "uint64", "double", "string")
# Triton's final-response flag of a streamed reply: a bool, whatever form released it (the
# short form ``triton_final_response: public``, re-listed beside another name, released text
# there on unary replies: review, eighth round).
FINAL_PARAMETER = "triton_final_response"
FINAL_PARAMETER_TYPES: tuple[ParameterType, ...] = ("bool",)
# The ``InferParameter`` choice -> its type's name.
_CHOICE_TYPES: dict[str, ParameterType] = {f"{name}_param": name for name in PARAMETER_TYPES}


class TypedRelease(Protocol):
    """A released name with the value types it may carry (``config.sections.ReleasedParameter``)."""

    @property
    def label(self) -> str: ...

    @property
    def types(self) -> Collection[str]: ...


# What the operator released under a name: its label alone (any type), or label and types.
Release = str | TypedRelease


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


def release_label(release: Release) -> str:
    return release if isinstance(release, str) else release.label


def release_types(name: str, release: Release) -> Collection[str]:
    if name == FINAL_PARAMETER:
        return FINAL_PARAMETER_TYPES
    return PARAMETER_TYPES if isinstance(release, str) else release.types


def released_parameters(response: Any, released: Mapping[str, Release]) -> list[Parameter]:
    """The reply's parameters whose names ``released`` names, each holding a value of a
    type its release allows, reply level first.

    A released name holding a value of another type is dropped unseen, as an unreleased name
    is, and the reply goes on without it: the operator released the name for what it carries
    (Triton's ``triton_final_response`` is a bool) and labelled it for that. Released
    whatever its type, an upstream could put text there (a name and a diagnosis, which no
    detector finds) or a number below the detectors' lengths, and it would reach every
    caller the label lets see it, however the reply's outputs are masked for them. Dropping
    it takes nothing the operator meant to give, and keeps the rest of the reply, as an
    unreleased name does; refusing the reply would fail the call over a value the caller was
    never to see. (A stream's final flag is also checked where it
    ends a request: a wrong type there is a malformed reply, ``gateway/streams.is_final``.)"""
    found: list[Parameter] = []
    scopes = [("", response.parameters)] + [(o.name, o.parameters) for o in response.outputs]
    for output, parameters in scopes:
        if not parameters:
            continue
        for name in sorted(set(parameters) & released.keys() - {BACKEND_LABELS_PARAMETER}):
            parameter = parameters[name]
            kind = _CHOICE_TYPES.get(parameter.WhichOneof("parameter_choice") or "")
            if kind is None or kind not in release_types(name, released[name]):
                continue
            found.append(Parameter(output, name, getattr(parameter, f"{kind}_param")))
    return found


def text_of(value: ParameterValue) -> bytes | None:
    """What detectors read: strings and numbers, as a JSON leaf's (``jsonpaths.scannable``: a
    card number fits in a uint64, and a double holding a whole number reads as its digits)."""
    text = scannable(value)
    return None if text is None else text.encode("utf-8", "surrogatepass")


def classify_parameters(
    parameters: list[Parameter], released: Mapping[str, Release], detectors: DetectorSet
) -> ParameterClassification:
    fields = FieldSet()
    texts: list[tuple[str, bytes]] = []
    for parameter in parameters:
        fields.add(parameter.path, (release_label(released[parameter.name]),), SOURCE_CONFIG)
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
