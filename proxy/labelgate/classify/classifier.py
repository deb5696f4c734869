"""Response-phase classification of inference outputs: pure, no I/O.

Every output gets a field ``outputs.<tensor>`` labelled by three sources: the catalog
(``catalog``), the backend's ``labelgate.labels`` parameters (``backend``) and, when none
of them says anything, the catalog's default label (``default``). Numeric tensors stop
there. BYTES tensors are free text and go through the detectors too:

- An element that is plain text is scanned as a whole. Each detector that fires adds a
  field ``outputs.<tensor>{<detector>}`` with the detector's label (source
  ``detector:<name>``), and its spans are kept so enforcement can rewrite just them.
  The hits do not raise ``outputs.<tensor>`` itself: the span field carries the label,
  so a policy can mask the SSN in a note and leave the rest of the note readable.
- An element that is a JSON object is classified key by key: every leaf gets a field
  ``outputs.<tensor>[].<key>.<key>`` (``[]`` for array items) with the catalog's labels
  for that path and the labels of the detectors that fire in the leaf's value; spans per
  leaf are kept as well. Should a detector fire in a key, the element is treated as plain
  text instead, because keys become field paths that the policy engine and audit see.
  So is a tensor whose elements use more than ``MAX_JSON_PATHS`` distinct paths.

Classification and masking must see the same tensors: spans are offsets into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

from labelgate.classify import jsonpaths
from labelgate.classify.catalog import OUTPUTS_PREFIX, Catalog
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.fields import (
    SOURCE_BACKEND,
    SOURCE_CATALOG,
    Classification,
    Field,
    FieldSet,
    LeafSpans,
    detector_source,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.labels import LABELS, check_default_label, is_label
from labelgate.classify.messages import classify_message
from labelgate.errors import UpstreamError
from labelgate.oip.tensors import Tensor

BACKEND_LABELS_PARAMETER = "labelgate.labels"
BACKEND_LABELS_INVALID = "BACKEND_LABELS_INVALID"
# More distinct JSON paths than this in one tensor and its elements are scanned as text:
# keeps the policy input bounded when a backend keys objects by data (ids, names).
MAX_JSON_PATHS = 256

__all__ = [
    "BACKEND_LABELS_PARAMETER",
    "Classification",
    "Classifier",
    "Field",
    "LeafSpans",
    "backend_labels",
    "classify_message",
    "classify_outputs",
    "to_policy_fields",
    "union_labels",
]


def backend_labels(response: Any) -> dict[str, set[str]]:
    """Labels the backend declared, per output name, from a ``ModelInferResponse``.

    ``parameters["labelgate.labels"]`` is a comma-separated string on an output or on the
    response (then it applies to every output). A value that is not a string or names an
    unknown label is an ``UpstreamError``: guessing could under-label the data.
    """
    shared = _parse_labels(response.parameters, "the response")
    result: dict[str, set[str]] = {}
    for output in response.outputs:
        labels = shared | _parse_labels(output.parameters, f"output '{output.name}'")
        if labels:
            result[output.name] = labels
    return result


def _parse_labels(parameters: Mapping[str, Any], where: str) -> set[str]:
    if BACKEND_LABELS_PARAMETER not in parameters:
        return set()
    parameter = parameters[BACKEND_LABELS_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise UpstreamError(
            BACKEND_LABELS_INVALID,
            f"parameter '{BACKEND_LABELS_PARAMETER}' of {where} must be a string of comma-separated labels",
        )
    labels = {part.strip() for part in parameter.string_param.split(",") if part.strip()}
    unknown = sorted(label for label in labels if not is_label(label))
    if unknown:
        raise UpstreamError(
            BACKEND_LABELS_INVALID,
            f"parameter '{BACKEND_LABELS_PARAMETER}' of {where} names unknown labels {unknown}; "
            f"expected some of {list(LABELS)}",
        )
    return labels


def classify_outputs(
    model: str,
    tensors: Sequence[Tensor],
    catalog: Catalog,
    detectors: DetectorSet,
    default_label: str | None = None,
    backend: Mapping[str, set[str]] | None = None,
) -> Classification:
    """Classify a response's outputs (see the module docstring).

    ``default_label`` defaults to the catalog's; ``backend`` is ``backend_labels(response)``.
    """
    fields = FieldSet()
    result = Classification(fields=[])
    backend = backend or {}
    for tensor in tensors:
        path = OUTPUTS_PREFIX + tensor.name
        fields.touch(path)
        fields.add(path, catalog.labels_for(model, path), SOURCE_CATALOG)
        fields.add(path, backend.get(tensor.name, ()), SOURCE_BACKEND)
        result.element_counts[tensor.name] = len(tensor.values)
        if tensor.datatype == "BYTES":
            _classify_text_tensor(model, tensor, path, catalog, detectors, fields, result)
    result.fields = fields.fields(check_default_label(default_label or catalog.default_label))
    return result


def _classify_text_tensor(
    model: str,
    tensor: Tensor,
    path: str,
    catalog: Catalog,
    detectors: DetectorSet,
    fields: FieldSet,
    result: Classification,
) -> None:
    values = _element_bytes(tensor.values)
    # Without a "{" anywhere no element is a JSON object: one C-level search spares the
    # per-element checks for most tensors.
    objects = _json_objects(values, detectors) if b"{" in b"".join(values) else {}
    if not objects:
        spans = detectors.scan_each(values)
    else:
        text_indices = [index for index in range(len(values)) if index not in objects]
        found = detectors.scan_each([values[index] for index in text_indices])
        spans = {text_indices[position]: hits for position, hits in found.items()}
    if spans:
        for detector in sorted(set(map(itemgetter(0), chain.from_iterable(spans.values())))):
            fields.add(f"{path}{{{detector}}}", [detectors.label_of(detector)], detector_source(detector))
        result.spans[tensor.name] = dict(sorted(spans.items()))
    if objects:
        result.json_elements[tensor.name] = _classify_json(model, path, objects, catalog, detectors, fields)


def _element_bytes(values: Sequence[Any]) -> list[bytes]:
    """The elements as ``bytes`` (decoded tensors already hold bytes: then no copy per element)."""
    if set(map(type, values)) <= {bytes}:
        return values if isinstance(values, list) else list(values)
    return [value.encode() if isinstance(value, str) else bytes(value) for value in values]


def _json_objects(values: list[bytes], detectors: DetectorSet) -> dict[int, list[jsonpaths.Leaf]]:
    """The leaves of each element to classify key by key (exceptions: module docstring)."""
    objects: dict[int, list[jsonpaths.Leaf]] = {}
    keys: list[bytes] = []
    owners: list[int] = []  # the element each key in ``keys`` belongs to
    suffixes: set[str] = set()
    # Only an element starting with "{" (or whitespace) can be one: skip the rest unparsed.
    openers = jsonpaths.OBJECT_OPENERS
    for index in [index for index, value in enumerate(values) if value.startswith(openers)]:
        parsed = jsonpaths.parse_object(values[index], check_depth=False)
        flat = jsonpaths.flatten(parsed) if parsed is not None else None
        if flat is None:
            continue
        leaves, element_keys = flat
        objects[index] = leaves
        suffixes.update([suffix for _, suffix, _ in leaves])
        keys += [key.encode("utf-8", "surrogatepass") for key in element_keys]
        owners += [index] * len(element_keys)
    if len(suffixes) > MAX_JSON_PATHS:
        return {}
    if keys:
        for position in detectors.scan_each(keys):
            objects.pop(owners[position], None)
    return objects


def _classify_json(
    model: str,
    path: str,
    objects: dict[int, list[jsonpaths.Leaf]],
    catalog: Catalog,
    detectors: DetectorSet,
    fields: FieldSet,
) -> dict[int, list[LeafSpans]]:
    prefix = path + "[]"
    scanned: list[tuple[int, jsonpaths.Location, str]] = []
    texts: list[bytes] = []
    seen: set[str] = set()
    scannable = jsonpaths.scannable
    for index, leaves in objects.items():
        for location, suffix, value in leaves:
            leaf_path = prefix + suffix
            if leaf_path not in seen:
                seen.add(leaf_path)
                fields.touch(leaf_path)
                fields.add(leaf_path, catalog.labels_for(model, leaf_path), SOURCE_CATALOG)
            text = scannable(value)
            if text is not None:
                scanned.append((index, location, leaf_path))
                texts.append(text.encode("utf-8", "surrogatepass"))
    per_element: dict[int, list[LeafSpans]] = {index: [] for index in objects}
    found_labels: dict[tuple[str, str, str], None] = {}  # (path, label, detector), in order
    for position, found in sorted(detectors.scan_each(texts).items()):
        index, location, leaf_path = scanned[position]
        per_element[index].append(LeafSpans(location, leaf_path, tuple(found)))
        for hit in found:
            found_labels[leaf_path, hit.label, hit.detector] = None
    for leaf_path, label, detector in found_labels:
        fields.add(leaf_path, (label,), detector_source(detector))
    return per_element


class Classifier:
    """The classify stage: a catalog and a detector set, with the two phase entry points."""

    def __init__(self, catalog: Catalog, detectors: DetectorSet) -> None:
        self.catalog = catalog
        self.detectors = detectors

    def expected_fields(self, model: str, requested_outputs: Sequence[str] = ()) -> list[Field]:
        return self.catalog.expected_fields(model, requested_outputs)

    def classify_response(
        self, model: str, tensors: Sequence[Tensor], backend: Mapping[str, set[str]] | None = None
    ) -> Classification:
        return classify_outputs(model, tensors, self.catalog, self.detectors, backend=backend)

    def classify_message(self, message: Any) -> Classification:
        return classify_message(message, self.catalog, self.detectors)
