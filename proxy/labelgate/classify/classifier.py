"""Response-phase classification of inference outputs: pure, no I/O.

Every output gets a field ``outputs.<tensor>`` labelled by three sources: the catalog
(``catalog``), the backend's ``labelgate.labels`` parameters (``backend``) and, when the
catalog says nothing, the catalog's default label (``default``). The backend's labels only
add: beside an output the catalog does not name they join the default, never replace it. Numeric tensors are
scanned for the numbers (and 8-bit ones for the text) they hold (``numbers``): a hit adds the
field ``outputs.<tensor>{<detector>}``. BYTES tensors are free text and go through the detectors too:

- An element that is plain text is scanned as a whole. Each detector that fires adds a
  field ``outputs.<tensor>{<detector>}`` with the detector's label (source
  ``detector:<name>``), and its spans are kept so enforcement can rewrite just them.
  The hits do not raise ``outputs.<tensor>`` itself: the span field carries the label,
  so a policy can mask the SSN in a note and leave the rest of the note readable.
- An element that is a JSON object is classified key by key: every leaf gets a field
  ``outputs.<tensor>[].<key>.<key>`` (``[]`` for array items) with the catalog's labels
  for that path (else the default label) and the labels of the detectors that fire in the
  leaf's value; spans per leaf are kept as well. Keys the catalog does not name are
  spelled ``<key:xxxxxxxx>`` (``jsonpaths.KeyNames``): keys are data, and paths reach the
  policy, logs and audit.
  An object or array at a path the catalog labels is a field too, with those labels, and
  a mask on it rewrites it whole (``json_elements``): an entry labels its path whatever
  the upstream puts there.
- An element that opens like a JSON object but cannot be classified key by key is opaque,
  and fails closed: invalid JSON, a duplicate key, nesting deeper than
  ``jsonpaths.MAX_DEPTH``, a detector firing in a key (masking rewrites values, never
  keys), or a tensor whose elements use more than ``MAX_JSON_PATHS`` distinct paths (so
  the policy input stays bounded). The catalog's nested labels cannot reach inside it, so
  it gets the field ``outputs.<tensor>{opaque-json}`` with every label any catalog entry
  gives at or under the tensor and the default label (its keys may be ones no entry
  names), source ``catalog:fail_closed:<reason>``; and each detector
  that fires in it, or in its text with JSON escapes decoded, spans all of it. A mask on
  either path, or on any path inside the tensor's elements, rewrites it whole. So is an
  element that opens like JSON but not as a bare object (an array, an object after a
  byte-order mark, JSON in a JSON string) in an output whose catalog gives some path under
  it a label the output itself does not carry (below it too: the policy need not be
  monotone in rank): as text it would lose those labels (``json_elements``).
- Output names are the upstream's text, and travel into paths, logs and records: a name
  in which a detector fires fails the reply (``check_output_names``).
- Digits of other scripts, other dashes, invisible and control characters hide values too
  (``１２３-４５-６７８９``): text that is not ASCII or holds a control character is also scanned
  folded (``folding``), and a value found only that way spans the whole element; a JSON
  element so found is opaque.
- Escapes hide values from detectors reading raw text (``\\u0031\\u0032\\u0033-45-6789``), so
  text with JSON escapes is scanned decoded as well, and so is text with HTML character
  references (``&#52;``, which any HTML or Markdown renderer shows as ``4``); a value found
  only that way spans the whole element (or leaf), since its offsets do not index the raw
  bytes.
- Markup a browser or a Markdown renderer drops between a value's characters hides it too
  (``123<b></b>-45-6789``, ``12**3**-45-6789``): text holding such markup next to a digit is
  also read rendered (``markup``, ``shown_text.rendered_reading``), and a value found only that
  way spans the whole element.
- A private key written one line per element is one PEM block from the element that opens
  it (text, JSON leaf or opaque element, its marker in any form the scan reads) to its END
  marker in a later one, or to the last: ``secret`` covers the elements of every kind it
  runs into (``json_elements.carry_key_blocks``). A block an output leaves open after its
  last element covers every other text output of the reply whole (their order is the
  caller's: ``key_blocks``), numbers wider than 8 bits too (their raw bytes may hold its
  lines), whatever the opener's own labels (an output not scanned for ``secret``, 8-bit
  text, and the raw bytes of wider numbers are asked apart: ``_opens_unscanned``), and one a
  stream's earlier reply opened covers what the carry-over says it runs into
  (``carried_keys.CoveredTensor``).

Classification and masking must see the same tensors: spans are offsets into them.
Moved apart, each a reading of its own: a BYTES output's elements, JSON, escapes, folding and
the one-call native scan of a raw buffer (``text_tensors``); the labels the upstream declares
(``declared_labels``); and the names and shapes it chooses, checked before anything else
(``output_names``). What stays here is the walk over a reply's outputs and the PEM blocks
that run from one output into the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from labelgate.classify import credentials, numbers
from labelgate.classify.catalog import OUTPUTS_PREFIX, Catalog
from labelgate.classify.declared_labels import (
    BACKEND_LABELS_INVALID,
    BACKEND_LABELS_PARAMETER,
    backend_labels,
)
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import (
    SOURCE_BACKEND,
    SOURCE_CATALOG,
    SOURCE_DEFAULT,
    Classification,
    Field,
    FieldSet,
    LeafSpans,
    detector_source,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.float_characters import FLOAT_DATATYPES
from labelgate.classify.folding import CONTROLS, may_hide
from labelgate.classify.json_elements import key_may_open, keys_say_more
from labelgate.classify.jsonpaths import KeyNames, may_escape
from labelgate.classify.key_blocks import SECRET, left_open
from labelgate.classify.labels import LABELS, check_default_label
from labelgate.classify.messages import classify_message
from labelgate.classify.output_names import (
    MODEL_MEMO_SIZE,
    OUTPUT_NAME_DETECTED,
    OUTPUT_SHAPE_DETECTED,
    check_output_names,
    check_output_shapes,
    names_detected,
)
from labelgate.classify.text_tensors import KEY_LETTERS, classify_text_tensor
from labelgate.oip.tensor import Tensor

__all__ = [
    "BACKEND_LABELS_INVALID",
    "BACKEND_LABELS_PARAMETER",
    "MODEL_MEMO_SIZE",
    "OUTPUT_NAME_DETECTED",
    "OUTPUT_SHAPE_DETECTED",
    "Classification",
    "Classifier",
    "Field",
    "LeafSpans",
    "backend_labels",
    "check_output_names",
    "check_output_shapes",
    "classify_message",
    "classify_outputs",
    "names_detected",
    "to_policy_fields",
    "union_labels",
]


def classify_outputs(
    model: str,
    tensors: Sequence[Tensor],
    catalog: Catalog,
    detectors: DetectorSet,
    default_label: str | None = None,
    backend: Mapping[str, set[str]] | None = None,
    keys: KeyNames | None = None,
    clean_names: set[tuple[str, ...]] | None = None,
    covered_outputs: frozenset[str] = frozenset(),
) -> Classification:
    """Classify a response's outputs (see the module docstring).

    ``default_label`` defaults to the catalog's; ``backend`` is ``backend_labels(response)``;
    ``keys`` spells JSON keys (default: the model's catalogued keys, the process secret);
    ``clean_names``: sets of output names already checked (``check_output_names``).
    ``covered_outputs``: text outputs a PEM block another output opens runs over whole
    (``_outputs_opening``; set by the call itself, classifying again).
    """
    default = check_default_label(default_label or catalog.default_label)
    keys = keys if keys is not None else KeyNames(catalog.key_names(model))
    if not covered_outputs:
        check_output_names(tensors, detectors, clean_names)
        check_output_shapes(tensors, detectors)
    fields = FieldSet()
    result = Classification(fields=[], json_keys=keys)
    backend = backend or {}
    keyed_outputs: list[Tensor] = []  # BYTES outputs in which ``secret`` found something
    # Text outputs whose scan does not tell whether they open a block (``_opens_unscanned``).
    unscanned: list[Tensor] = []
    secrets = SECRET in detectors.names and len(tensors) > 1 and not covered_outputs
    for tensor in tensors:
        path = OUTPUTS_PREFIX + tensor.name
        fields.touch(path)
        catalogued = catalog.labels_for(model, path)
        declared = backend.get(tensor.name, set())
        fields.add(path, catalogued, SOURCE_CATALOG)
        if declared and not catalogued:
            # The upstream's labels can only add to what the gateway would say without them:
            # an output the catalog does not name keeps the default label beside them, so an
            # upstream cannot declare its own output public.
            fields.add(path, (default,), SOURCE_DEFAULT)
        fields.add(path, declared, SOURCE_BACKEND)
        own = (catalogued or {default}) | declared
        result.element_counts[tensor.name] = tensor.size
        if tensor.datatype == "BYTES":
            # Detectors of the output's own labels are not run on its text (the response plan
            # of issue 12: catalogued SSN and card columns are not scanned for what their label
            # already says); every other one is. JSON keys still meet every detector.
            scanning = detectors.besides(frozenset(own or {default}))
            found_key = classify_text_tensor(
                model,
                tensor,
                path,
                catalog,
                detectors,
                fields,
                result,
                default,
                keys,
                scanning,
                keyed=keys_say_more(catalog, model, tensor.name, own),
                covered=_covered_elements(tensor, tensor.name in covered_outputs),
            )
            if found_key:
                keyed_outputs.append(tensor)
            elif secrets and SECRET not in scanning.names:
                unscanned.append(tensor)
        elif numbers.scans(tensor.datatype):
            # Numbers hold values too (a card as an INT64, text as UINT8 bytes): ``numbers``.
            scanning = detectors.besides(frozenset(own or {default}))
            found = numbers.numeric_detections(tensor, scanning)
            if (
                SECRET in scanning.names
                and tensor.size
                and (tensor.name in covered_outputs or getattr(tensor, "key_cover", None))
            ):
                # 8-bit text, or integers read as characters, a block opened before it runs
                # into (``_covered_elements``): one text, covered whole.
                found.setdefault(0, []).append(Detection(SECRET, detectors.label_of(SECRET), 0, tensor.size))
            if found:
                for name in sorted({hit.detector for hits in found.values() for hit in hits}):
                    fields.add(f"{path}{{{name}}}", [detectors.label_of(name)], detector_source(name))
                result.spans[tensor.name] = found
            # Its text opens a block for the others as a BYTES output's does: asked when not
            # scanned for ``secret``, or when that scan found something.
            if (
                secrets
                and _is_text(tensor)
                and tensor.size
                and (
                    tensor.datatype in numbers.CHARACTER_DATATYPES  # its scan reads no marker
                    or SECRET not in scanning.names
                    or any(hit.detector == SECRET for hits in found.values() for hit in hits)
                    or numbers.holds_float_characters(tensor)  # nor does a float one's
                )
            ):
                unscanned.append(tensor)
    result.fields = fields.fields(default)
    if (keyed_outputs or unscanned) and not covered_outputs and len(tensors) > 1:
        opening = _outputs_opening(keyed_outputs, result)
        opening.update(tensor.name for tensor in unscanned if _opens_unscanned(tensor, result, detectors))
        if opening:
            # A block one output opens and does not close covers every other text output of
            # the reply, whatever order a caller reads them in (as ``messages`` covers every
            # text of a typed reply): classified again with those covered whole.
            others = frozenset(
                tensor.name
                for tensor in tensors
                if _is_text(tensor) and (len(opening) > 1 or tensor.name not in opening)
            )
            if others:
                return classify_outputs(
                    model, tensors, catalog, detectors, default_label, backend, keys, clean_names, others
                )
    return result


def _is_text(tensor: Tensor) -> bool:
    """Whether ``tensor`` may hold text: BYTES, 8-bit bytes read as one text, wider integers
    read as characters, a character an element, or any number wider than 8 bits whose raw
    bytes a client reads back with ``tobytes()`` (``numbers``)."""
    return (
        tensor.datatype == "BYTES"
        or tensor.datatype in numbers.TEXT_DATATYPES
        or tensor.datatype in numbers.PACKED_DATATYPES
    )


def _outputs_opening(tensors: Sequence[Tensor], result: Classification) -> set[str]:
    """The BYTES outputs whose elements, read in order, leave a PEM block open after the last
    (``key_blocks.left_open``). Asked only of outputs in which ``secret`` found something
    (every BEGIN marker it reads is such a detection): most replies hold none."""
    opening: set[str] = set()
    for tensor in tensors:
        candidates = {
            index
            for index, hits in result.spans.get(tensor.name, {}).items()
            if any(hit.detector == SECRET for hit in hits)
        }
        for index, leaves in result.json_elements.get(tensor.name, {}).items():
            if any(hit.detector == SECRET for leaf in leaves for hit in leaf.detections):
                candidates.add(index)
        if candidates and left_open(tensor.byte_elements(), sorted(candidates)):
            opening.add(tensor.name)
    return opening


def _opens_unscanned(tensor: Tensor, result: Classification, detectors: DetectorSet) -> bool:
    """Whether a text output whose own scan does not say so leaves a PEM block open after
    its last element (``key_blocks.left_open``): a BYTES output not scanned for ``secret``
    (its labels say what it would: a marker there still opens a block for the others, whose
    labels do not), an 8-bit one (its text, scanned as one by ``numbers``), or wider integers
    or floats read as characters. Cheap C-level gates first: most such outputs cannot spell ``PRIVATE
    KEY`` in any form. Numbers wider than 8 bits are asked of their raw bytes too
    (``_packed_opens``)."""
    if tensor.datatype in numbers.PACKED_DATATYPES and _packed_opens(tensor, result, detectors):
        return True
    if tensor.datatype in numbers.CHARACTER_DATATYPES or tensor.datatype in FLOAT_DATATYPES:
        # A character an element: the text as written and folded, as ``messages`` reads a
        # repeated integer field for markers (a float's whole numbers, ``float_characters``).
        # The marker as these forms show it (``characters`` reads code points no other way:
        # not decoded, not rendered), then the block it opens followed through the text.
        forms = numbers.character_forms(tensor, credentials._KEY)
        return any(credentials._KEY in form and left_open([form], [0]) for form in forms)
    if tensor.datatype in numbers.PACKED_DATATYPES:
        return False
    if tensor.datatype != "BYTES":
        return _text_opens(tensor, _eight_bit_text(tensor), result, detectors)
    raw = tensor.raw_form()
    if raw is not None and not _may_spell_key(raw):
        return False
    values = tensor.byte_elements()
    joined = b"".join(values)
    if raw is None and not _may_spell_key(joined):
        return False
    escaped, hiding = may_escape(joined), may_hide(joined)
    if not key_may_open(joined, escaped, hiding):
        return False
    # The elements that may open a block in some form, as ``secret``'s detections are where
    # it scans; and the first where a marker split across elements may start.
    candidates = [
        index
        for index, value in enumerate(values)
        if value
        and (credentials._KEY in value or (escaped and may_escape(value)) or (hiding and may_hide(value)))
    ]
    return bool(left_open(values, candidates or [0]))


def _text_opens(tensor: Tensor, text: bytes, result: Classification, detectors: DetectorSet) -> bool:
    """Whether ``text``, a numeric tensor's bytes read as one text (8-bit bytes, or wider
    numbers' raw bytes that read as text), leaves a PEM block open, in any form ``numbers``
    reads it in: asked once ``secret`` found something in the tensor, or would for its
    label alone."""
    if not _may_spell_key(text):
        return False
    found = result.spans.get(tensor.name, {})
    if not any(hit.detector == SECRET for hits in found.values() for hit in hits):
        # Not scanned for it (the output's labels say what it would): the scan ``numbers``
        # runs, for ``secret``'s label alone (every form it reads the text in).
        secret = detectors.besides(frozenset(LABELS) - {detectors.label_of(SECRET)})
        found = numbers.numeric_detections(tensor, secret)
        if not any(hit.detector == SECRET for hits in found.values() for hit in hits):
            return False
    return bool(left_open([text], [0]))


def _packed_opens(tensor: Tensor, result: Classification, detectors: DetectorSet) -> bool:
    """Whether the raw bytes of a number wider than 8 bits (``numbers.packed_reading``: a
    client's ``tobytes()``) leave a PEM block open: bytes that read as text in every form an
    8-bit tensor's are read in (``_text_opens``); binary data (floats, embeddings) as
    ``numbers`` reads it, raw and with its control characters dropped, after one C-level
    search for ``PRIVATE KEY`` (floats seldom hold it)."""
    reading = numbers.packed_reading(tensor)
    if reading is None:
        return False
    data, as_text = reading
    if as_text:
        return _text_opens(tensor, data, result, detectors)
    shown = data.translate(None, CONTROLS)
    if credentials._KEY not in shown:  # nor in ``data``: the words hold no control character
        return False
    return any(credentials.open_pem(form) is not None for form in (data, shown))


def _may_spell_key(data: bytes) -> bool:
    """Whether some form of ``data`` the scan reads may spell a BEGIN marker: a dash and each
    letter of ``PRIVATE KEY`` as written (markup, control characters or other elements may
    part them), or text past ASCII (folded) or escapes (decoded). C-level searches, memchr
    each. The dash first: token-like text (API keys, ids) holds every letter, seldom one."""
    return (
        not data.isascii()
        or may_escape(data)
        or (_DASH in data and all(letter in data for letter in KEY_LETTERS))
    )


_DASH: Final = ord("-")  # an int: ``in`` finds it with memchr


def _eight_bit_text(tensor: Tensor) -> bytes:
    """An 8-bit tensor's bytes, read as one text (``numbers``)."""
    raw = tensor.raw_form()
    return raw if raw is not None and len(raw) == tensor.size else numbers._bytes_of(tensor.values)


def _covered_elements(tensor: Tensor, whole: bool) -> dict[int, int] | None:
    """How far a PEM block opened before ``tensor`` runs into each of its elements: all of
    each with ``whole`` (another output opens it), and what the carry-over of a stream says
    (``carried_keys.CoveredTensor``: a block an earlier reply opened); None for neither."""
    carried: dict[int, int] | None = getattr(tensor, "key_cover", None)
    if not whole:
        return carried or None
    ends = {index: len(value) for index, value in enumerate(tensor.byte_elements()) if value}
    return ends or None


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
        self._clean_output_names: set[tuple[str, ...]] = set()

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
            model,
            tensors,
            self.catalog,
            self.detectors,
            backend=backend,
            keys=self.key_names(model),
            clean_names=self._clean_output_names,
        )

    def classify_message(self, message: Any) -> Classification:
        return classify_message(message, self.catalog, self.detectors)
