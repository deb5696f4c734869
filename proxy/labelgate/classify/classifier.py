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
  leaf are kept as well. Keys the catalog does not name are spelled ``<key:xxxxxxxx>``
  (``jsonpaths.KeyNames``): keys are data, and paths reach the policy, logs and audit.
- An element that opens like a JSON object but cannot be classified key by key is opaque,
  and fails closed: invalid JSON, a duplicate key, nesting deeper than
  ``jsonpaths.MAX_DEPTH``, a detector firing in a key (masking rewrites values, never
  keys), or a tensor whose elements use more than ``MAX_JSON_PATHS`` distinct paths (so
  the policy input stays bounded). The catalog's nested labels cannot reach inside it, so
  it gets the field ``outputs.<tensor>{opaque-json}`` with the most sensitive label any
  catalog entry gives at or under the tensor (at least the default label, as its keys may
  be ones no entry names), source ``catalog:fail_closed:<reason>``; and each detector
  that fires in it, or in its text with JSON escapes decoded, spans all of it. A mask on
  either path, or on any path inside the tensor's elements, rewrites it whole.
- Escapes hide values from detectors reading raw text (``\\u0031\\u0032\\u0033-45-6789``), so
  text with JSON escapes is scanned decoded as well; a value found only that way spans the
  whole element (or leaf), since its offsets do not index the raw bytes.

Classification and masking must see the same tensors: spans are offsets into them.

With the native extension active and no custom detector to scan with, JSON elements are
first read by ``native.json_reads``: one pass parses each element it can vouch for and scans
its leaves; the element's shape comes from a memo per native signature whose entries the
exact path learnt (``KeyNames.native_shape``). Every other element takes the Python path,
and the result is the same either way (``tests/classify/test_native_json.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, filterfalse, repeat
from operator import itemgetter
from typing import Any

from labelgate.classify import jsonpaths, native, reasons
from labelgate.classify.catalog import OUTPUTS_PREFIX, Catalog
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet, _merge_overlaps
from labelgate.classify.fields import (
    OPAQUE_JSON,
    SOURCE_BACKEND,
    SOURCE_CATALOG,
    Classification,
    Field,
    FieldSet,
    LeafSpans,
    detector_source,
    fail_closed_source,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.jsonpaths import JsonShape, KeyNames
from labelgate.classify.labels import LABELS, check_default_label, is_label, most_sensitive
from labelgate.classify.messages import classify_message
from labelgate.errors import UpstreamError
from labelgate.oip.tensors import Tensor, bytes_elements

BACKEND_LABELS_PARAMETER = "labelgate.labels"
BACKEND_LABELS_INVALID = reasons.BACKEND_LABELS_INVALID
# More distinct JSON paths than this in one tensor and its JSON elements are opaque: keeps
# the policy input bounded when a backend keys objects by data (ids, names).
MAX_JSON_PATHS = 256
# Reasons an element is opaque, besides jsonpaths' (invalid JSON, duplicate key, too deep).
TOO_MANY_PATHS = "too_many_paths"
KEY_DETECTED = "key_detected"
# Key spellings are kept per model; past this many models (names come from callers) the
# memo starts over.
MODEL_MEMO_SIZE = 1024
_new_tuple = tuple.__new__  # builds a LeafSpans without the Python-level NamedTuple __new__

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
    for position, output in enumerate(response.outputs):
        # Named by position: an output's name is the upstream's text, and errors reach callers.
        labels = shared | _parse_labels(output.parameters, f"output #{position}")
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
    unknown = [label for label in labels if not is_label(label)]
    if unknown:
        # The unknown names are not quoted: they are the upstream's text, and may be data.
        raise UpstreamError(
            BACKEND_LABELS_INVALID,
            f"parameter '{BACKEND_LABELS_PARAMETER}' of {where} names {len(unknown)} unknown label(s); "
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
    keys: KeyNames | None = None,
) -> Classification:
    """Classify a response's outputs (see the module docstring).

    ``default_label`` defaults to the catalog's; ``backend`` is ``backend_labels(response)``;
    ``keys`` spells JSON keys (default: the model's catalogued keys, the process secret).
    """
    default = check_default_label(default_label or catalog.default_label)
    keys = keys if keys is not None else KeyNames(catalog.key_names(model))
    fields = FieldSet()
    result = Classification(fields=[], json_keys=keys)
    backend = backend or {}
    for tensor in tensors:
        path = OUTPUTS_PREFIX + tensor.name
        fields.touch(path)
        fields.add(path, catalog.labels_for(model, path), SOURCE_CATALOG)
        own = catalog.labels_for(model, path) | backend.get(tensor.name, set())
        fields.add(path, backend.get(tensor.name, ()), SOURCE_BACKEND)
        result.element_counts[tensor.name] = len(tensor.values)
        if tensor.datatype == "BYTES":
            # Only detectors that could say more than the output's own label are run on its
            # text (the response plan of issue 12: catalogued SSN and card columns are not
            # scanned for what their label already says). JSON keys still meet every detector.
            scanning = detectors.above(most_sensitive(own) if own else default)
            _classify_text_tensor(
                model, tensor, path, catalog, detectors, fields, result, default, keys, scanning
            )
    result.fields = fields.fields(default)
    return result


def _classify_text_tensor(
    model: str,
    tensor: Tensor,
    path: str,
    catalog: Catalog,
    detectors: DetectorSet,
    fields: FieldSet,
    result: Classification,
    default_label: str,
    keys: KeyNames,
    scanning: DetectorSet | None = None,
) -> None:
    scanning = detectors if scanning is None else scanning
    raw = tensor.raw_form()
    if raw is not None and scanning:
        # A decoded tensor's raw buffer, scanned in one native call. Without a "{" (so no JSON
        # object) or a "\" (so no escapes) in any element, all the path below does is these
        # spans; an element with either, or a buffer the extension refuses, takes that path.
        # The raw form is bound to exactly these values (a list of bytes, as decoded).
        built = scanning.spans_raw(raw, tensor.values, stop=b"{\\")
        if built is not None:
            spans, names = built
            for detector in sorted(names):
                fields.add(f"{path}{{{detector}}}", [detectors.label_of(detector)], detector_source(detector))
            if spans:
                result.spans[tensor.name] = spans
            return
    values = bytes_elements(tensor.values)
    joined = b"".join(values)
    # Without a "{" anywhere no element is a JSON object: one C-level search spares the
    # per-element checks for most tensors.
    objects, opaque, leaf_hits = (
        _json_objects(values, detectors, keys, scanning) if b"{" in joined else ({}, {}, {})
    )
    if not objects and not opaque:
        texts = list(range(len(values)))
    else:
        taken = objects.keys() | opaque.keys()
        texts = list(filterfalse(taken.__contains__, range(len(values))))
    # found: the detectors the spans name, when _scan_texts knows them (and the spans are
    # then in element order); None: count them here, and sort.
    spans, found = _scan_texts(values, texts, scanning, escaped=b"\\" in joined) if scanning else ({}, None)
    if opaque:
        label = most_sensitive(catalog.labels_at_or_under(model, tensor.name) | {default_label})
        for reason in sorted(set(opaque.values())):
            fields.add(f"{path}{{{OPAQUE_JSON}}}", (label,), fail_closed_source(reason))
        spans.update(_opaque_spans(values, opaque, label, detectors))
        found = None
    if spans:
        ordered = found is not None
        if found is None:
            found = set(map(itemgetter(0), chain.from_iterable(spans.values()))) - {OPAQUE_JSON}
        for detector in sorted(found):
            fields.add(f"{path}{{{detector}}}", [detectors.label_of(detector)], detector_source(detector))
        result.spans[tensor.name] = spans if ordered else dict(sorted(spans.items()))
    if objects:
        result.json_elements[tensor.name] = _classify_json(
            model, path, objects, leaf_hits, catalog, scanning, fields
        )
        # What enforce needs to mask these elements without reading them again key by key.
        result.json_shapes[tensor.name] = {
            index: (values[index], shape) for index, (shape, _) in objects.items()
        }


def _scan_texts(
    values: list[bytes], indices: list[int], detectors: DetectorSet, escaped: bool
) -> tuple[dict[int, list[Detection]], set[str] | None]:
    """Detections in the plain-text elements at ``indices`` (ascending), by element index;
    and, when the native scan built them (in element order, no escapes to add), the
    detectors they name (else None)."""
    texts = values if len(indices) == len(values) else [values[index] for index in indices]
    if not escaped:
        built = detectors.spans_at(texts, indices)
        if built is not None:
            return built
    found = detectors.scan_each(texts)
    spans = {indices[position]: hits for position, hits in found.items()}
    if escaped:
        for index, hits in _hidden_by_escapes(texts, detectors).items():
            spans.setdefault(indices[index], []).extend(hits)
    return spans, None


def _hidden_by_escapes(texts: list[bytes], detectors: DetectorSet) -> dict[int, list[Detection]]:
    """For each text whose JSON escapes decode to something a detector finds: one detection
    per such detector spanning the whole text (decoded offsets do not index the raw one)."""
    forms: list[bytes] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        if b"\\" in text:
            decoded = jsonpaths.unescaped_forms(text)
            forms += decoded
            owners += [index] * len(decoded)
    result: dict[int, dict[str, Detection]] = {}
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        whole = result.setdefault(index, {})
        for hit in hits:
            whole.setdefault(hit.detector, Detection(hit.detector, hit.label, 0, len(texts[index])))
    return {index: list(whole.values()) for index, whole in result.items()}


def _opaque_spans(
    values: list[bytes], opaque: dict[int, str], label: str, detectors: DetectorSet
) -> dict[int, list[Detection]]:
    """Opaque elements fail closed: every detector found in them (raw or decoded) and the
    ``OPAQUE_JSON`` field span the whole element, so a mask on any of them rewrites it whole."""
    indices = list(opaque)
    texts = [values[index] for index in indices]
    found: dict[int, set[str]] = {position: set() for position in range(len(texts))}
    for position, hits in detectors.scan_each(texts).items():
        found[position].update(hit.detector for hit in hits)
    for position, hits in _hidden_by_escapes(texts, detectors).items():
        found[position].update(hit.detector for hit in hits)
    spans: dict[int, list[Detection]] = {}
    for position, names in found.items():
        size = len(texts[position])
        whole = [Detection(name, detectors.label_of(name), 0, size) for name in sorted(names)]
        spans[indices[position]] = [*whole, Detection(OPAQUE_JSON, label, 0, size)]
    return spans


# An element classified key by key: its shape, and its leaf values when the Python path read
# it (None when the native reader did: its hits are in the ``LeafHits`` beside).
JsonObjects = dict[int, tuple[JsonShape, list[Any] | None]]
LeafHits = dict[int, native.JsonRead]  # element index -> what the native reader found, if anything


def _json_objects(
    values: list[bytes], detectors: DetectorSet, keys: KeyNames, scanning: DetectorSet
) -> tuple[JsonObjects, dict[int, str], LeafHits]:
    """The shape and leaf values (or native hits) of each element to classify key by key,
    and the reason each opaque element is not (see the module docstring)."""
    objects: JsonObjects = {}
    opaque: dict[int, str] = {}
    leaf_hits: LeafHits = {}
    shapes: dict[JsonShape, None] = {}  # the distinct shapes met, in order
    suffixes: set[str] = set()
    # Only an element starting with "{" (or whitespace) can be one: skip the rest unparsed.
    openers = jsonpaths.OBJECT_FIRST_BYTES  # a set of one-byte bytes: faster than startswith
    candidates = [index for index, value in enumerate(values) if value[:1] in openers]
    read_shaped = jsonpaths.read_shaped
    native_shape = keys.native_shape
    reads = _native_reads(values, candidates, scanning)
    # Signatures repeat from element to element: each distinct one is looked up once here
    # (to its element entry, or None), and an element of a shape met already needs no more.
    by_signature: dict[bytes, tuple[JsonShape, None] | None] = {}
    for count, (index, read_natively) in enumerate(
        zip(candidates, reads if reads is not None else repeat(None, len(candidates)), strict=True)
    ):
        shape: JsonShape | None = None
        if read_natively is not None:
            signature = read_natively[0]
            if signature in by_signature:
                entry = by_signature[signature]
                if entry is not None:
                    objects[index] = entry
                    if read_natively[1]:
                        leaf_hits[index] = read_natively
                    continue  # its paths are counted already
            else:
                shape = native_shape(values[index], signature)
                entry = by_signature[signature] = None if shape is None else (shape, None)
                if entry is not None:
                    objects[index] = entry
                    if read_natively[1]:
                        leaf_hits[index] = read_natively
        if shape is None:
            read = read_shaped(values[index], keys)
            if read is None:
                continue  # plain text
            if isinstance(read, str):
                opaque[index] = read
                continue
            objects[index] = read
            shape = read[0]
        if shape in shapes:
            continue  # its paths are counted already
        shapes[shape] = None
        suffixes |= shape.suffix_set
        if len(suffixes) > MAX_JSON_PATHS:
            # Stop here: the rest would only cost key hashes for elements that are opaque anyway.
            rest = [other for other in candidates[count + 1 :] if jsonpaths.opens_object(values[other])]
            opaque.update(dict.fromkeys([*objects, *rest], TOO_MANY_PATHS))
            return {}, dict(sorted(opaque.items())), {}
    if shapes:
        # Keys repeat from element to element: each distinct key is scanned once.
        distinct = list(dict.fromkeys(chain.from_iterable(shape.keys for shape in shapes)))
        detected = {distinct[position] for position in detectors.scan_each(distinct)}
        if detected:
            flagged = {shape for shape in shapes if not detected.isdisjoint(shape.keys)}
            for index in [index for index, (shape, _) in objects.items() if shape in flagged]:
                del objects[index]
                leaf_hits.pop(index, None)
                opaque[index] = KEY_DETECTED
    return objects, dict(sorted(opaque.items())), leaf_hits


def _native_reads(
    values: list[bytes], candidates: list[int], scanning: DetectorSet
) -> list[native.JsonRead | None] | None:
    """The native reader's answer per candidate, or None when it is not to be used: off, or
    custom detectors to scan with (regexes, Python's). Its scan is the built-ins'; every name
    of ``scanning`` is a built-in's (custom names never are) or the reader is not asked."""
    if not candidates or not BUILTIN_LABELS.keys() >= set(scanning.names):
        return None
    # Candidates are ascending indices: as many as the values are all of them.
    elements = values if len(candidates) == len(values) else [values[index] for index in candidates]
    return native.json_reads(elements, frozenset(scanning.names))


def _classify_json(
    model: str,
    path: str,
    objects: JsonObjects,
    leaf_hits: LeafHits,
    catalog: Catalog,
    detectors: DetectorSet,
    fields: FieldSet,
) -> dict[int, list[LeafSpans]]:
    prefix = path + "[]"
    texts: list[bytes] = []  # the scanned leaves of the elements the Python path read
    first_text: dict[int, int] = {}  # such an element's index -> its first text in ``texts``
    leaves_of: dict[JsonShape, tuple[tuple[jsonpaths.Location, str], ...]] = {}
    seen: set[str] = set()
    # Fields in the order their paths first appear, element by element: shape by shape, in
    # the order each shape first appears.
    for shape in dict.fromkeys(map(itemgetter(0), objects.values())):
        leaf_paths = [prefix + suffix for suffix in shape.suffixes]
        for leaf_path in leaf_paths:
            if leaf_path not in seen:
                seen.add(leaf_path)
                fields.touch(leaf_path)
                fields.add(leaf_path, catalog.labels_for(model, leaf_path), SOURCE_CATALOG)
        leaves_of[shape] = tuple([(shape.locations[leaf], leaf_paths[leaf]) for leaf in shape.scanned])
    # The leaves of the elements the Python path read (the native reader's have no values).
    if any(map(itemgetter(1), objects.values())):
        for index, (shape, values) in objects.items():
            if values is not None and leaves_of[shape]:
                first_text[index] = len(texts)
                texts += shape.texts(values)
    per_element: dict[int, list[LeafSpans]] = {index: [] for index in objects}
    found_labels: dict[tuple[str, str, str], None] = {}  # (path, label, detector), in order
    hits_per_text = detectors.scan_each(texts) if texts else {}
    # A leaf is already decoded once by the parser; JSON inside a string is escaped again.
    # (The native reader leaves every leaf with a backslash to the Python path.)
    if texts and b"\\" in b"".join(texts):
        for position, hidden in _hidden_by_escapes(texts, detectors).items():
            hits_per_text[position] = [*hits_per_text.get(position, ()), *hidden]
    # Per detector bit of a native hit, its name and label (a hit of a detector not wanted
    # would be a KeyError: refused, never labelled by guess), and the detectors' order for
    # merging overlaps (relative order is all the merge looks at).
    wanted = detectors.names
    named = {
        bit: (name, detectors.label_of(name))
        for bit, name in enumerate(native.DETECTOR_BITS)
        if name in wanted
    }
    order = {name: position for position, name in enumerate(wanted)}
    # A leaf's single native hit, as LeafSpans, per shape and hit: elements of one shape often
    # hold a value alone in a leaf (same detector, same offsets), and LeafSpans are immutable.
    # A hit met again adds no new label either: its (path, label, detector) is in already.
    single_of: dict[JsonShape, dict[native.LeafHit, LeafSpans]] = {}
    if not hits_per_text:
        # Every hit is the native reader's: only its elements with hits to walk.
        _native_leaf_spans(objects, leaf_hits, leaves_of, named, order, per_element, found_labels)
    # Element by element, leaf by leaf: the order the spans and labels would have if every
    # element's leaves had been scanned together.
    for index in objects if hits_per_text else ():
        shape, values = objects[index]
        scanned_leaves = leaves_of[shape]
        spans = per_element[index]
        if values is None:
            read = leaf_hits.get(index)
            if read is None:
                continue
            _, hits, several = read
            if not several:
                # One hit per leaf, nothing to merge: the common case, written out for speed.
                singles = single_of.get(shape)
                if singles is None:
                    singles = single_of[shape] = {}
                for single in hits:
                    leaf_spans = singles.get(single)
                    if leaf_spans is None:
                        leaf, bit, start, end = single
                        location, leaf_path = scanned_leaves[leaf]
                        name, label = named[bit]
                        detection = _new_tuple(Detection, (name, label, start, end))
                        leaf_spans = singles[single] = _new_tuple(
                            LeafSpans, (location, leaf_path, (detection,))
                        )
                        found_labels[leaf_path, label, name] = None
                    spans.append(leaf_spans)
                continue
            found_per_leaf = _native_detections(hits, named, order)
        elif index in first_text:
            found_per_leaf = _python_detections(hits_per_text, first_text[index], len(scanned_leaves))
        else:
            continue
        for leaf, found in found_per_leaf:
            location, leaf_path = scanned_leaves[leaf]
            spans.append(_new_tuple(LeafSpans, (location, leaf_path, tuple(found))))
            for hit in found:
                found_labels[leaf_path, hit.label, hit.detector] = None
    for leaf_path, label, detector in found_labels:
        fields.add(leaf_path, (label,), detector_source(detector))
    return per_element


def _native_leaf_spans(
    objects: JsonObjects,
    leaf_hits: LeafHits,
    leaves_of: dict[JsonShape, tuple[tuple[jsonpaths.Location, str], ...]],
    named: dict[int, tuple[str, str]],
    order: dict[str, int],
    per_element: dict[int, list[LeafSpans]],
    found_labels: dict[tuple[str, str, str], None],
) -> None:
    """``_classify_json``'s walk when the native reader read every element with hits: into
    ``per_element`` and ``found_labels``, element by element, leaf by leaf, as that walk does.
    Elements of one shape usually follow one another: the per-shape tables are looked up
    when the shape changes."""
    single_of: dict[JsonShape, dict[native.LeafHit, LeafSpans]] = {}
    last: bytes | None = None  # one bytes object per distinct signature in a native read
    scanned_leaves: tuple[tuple[jsonpaths.Location, str], ...] = ()
    singles: dict[native.LeafHit, LeafSpans] = {}
    for index, (signature, hits, several) in leaf_hits.items():
        if signature is not last:
            # One signature, one shape (``_json_objects`` looks each signature up once).
            last = signature
            shape = objects[index][0]
            scanned_leaves = leaves_of[shape]
            singles = single_of.setdefault(shape, {})
        if not several:
            # One hit per leaf, nothing to merge: the common case, written out for speed. A
            # leaf's single hit, as LeafSpans, is memoised per shape (LeafSpans are immutable;
            # one met again adds no new label either).
            spans = per_element[index]
            for single in hits:
                leaf_spans = singles.get(single)
                if leaf_spans is None:
                    leaf, bit, start, end = single
                    location, leaf_path = scanned_leaves[leaf]
                    name, label = named[bit]
                    detection = _new_tuple(Detection, (name, label, start, end))
                    leaf_spans = singles[single] = _new_tuple(LeafSpans, (location, leaf_path, (detection,)))
                    found_labels[leaf_path, label, name] = None
                spans.append(leaf_spans)
            continue
        spans = per_element[index]
        for leaf, found in _native_detections(hits, named, order):
            location, leaf_path = scanned_leaves[leaf]
            spans.append(_new_tuple(LeafSpans, (location, leaf_path, tuple(found))))
            for hit in found:
                found_labels[leaf_path, hit.label, hit.detector] = None


def _python_detections(
    hits_per_text: dict[int, list[Detection]], first: int, count: int
) -> list[tuple[int, list[Detection]]]:
    """The Python scan's detections of one element's ``count`` leaves from text ``first``,
    as (scanned leaf ordinal, detections) per leaf with any."""
    return [(leaf, found) for leaf in range(count) if (found := hits_per_text.get(first + leaf)) is not None]


def _native_detections(
    hits: tuple[native.LeafHit, ...], named: dict[int, tuple[str, str]], order: dict[str, int]
) -> list[tuple[int, list[Detection]]]:
    """The native reader's hits of one element as (scanned leaf ordinal, detections) per
    leaf with any, overlaps merged as ``DetectorSet.scan_each`` merges them."""
    per_leaf: list[tuple[int, list[Detection]]] = []
    current = -1
    found: list[Detection] = []
    for leaf, bit, start, end in hits:
        if leaf != current:
            found = []
            per_leaf.append((leaf, found))
            current = leaf
        name, label = named[bit]
        found.append(_new_tuple(Detection, (name, label, start, end)))
    return [(leaf, _merge_overlaps(found, order) if len(found) > 1 else found) for leaf, found in per_leaf]


class Classifier:
    """The classify stage: a catalog and a detector set, with the two phase entry points.

    ``key_secret`` keys the placeholders of uncatalogued JSON keys (``<key:xxxxxxxx>``);
    None: a random secret per process.
    """

    def __init__(self, catalog: Catalog, detectors: DetectorSet, key_secret: bytes | None = None) -> None:
        self.catalog = catalog
        self.detectors = detectors
        self.key_secret = key_secret
        KeyNames((), key_secret)  # a bad secret is refused here, not on the first response
        self._key_names: dict[str, KeyNames] = {}

    def key_names(self, model: str) -> KeyNames:
        """How ``model``'s JSON keys are spelled; one per model, so each key is hashed once."""
        names = self._key_names.get(model)
        if names is None:
            names = KeyNames(self.catalog.key_names(model), self.key_secret)
            if len(self._key_names) >= MODEL_MEMO_SIZE:
                self._key_names.clear()
            self._key_names[model] = names
        return names

    def expected_fields(self, model: str, requested_outputs: Sequence[str] = ()) -> list[Field]:
        return self.catalog.expected_fields(model, requested_outputs)

    def classify_response(
        self, model: str, tensors: Sequence[Tensor], backend: Mapping[str, set[str]] | None = None
    ) -> Classification:
        return classify_outputs(
            model, tensors, self.catalog, self.detectors, backend=backend, keys=self.key_names(model)
        )

    def classify_message(self, message: Any) -> Classification:
        return classify_message(message, self.catalog, self.detectors)
