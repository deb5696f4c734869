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

JSON elements are classified in ``json_elements`` (with the native extension active and no
custom detector to scan with, read and scanned natively first). With the extension, a text
tensor decoded from raw contents is scanned from that raw buffer in one call, unless an
element holds ``{`` or a backslash; otherwise element by element. The result is the Python
path's either way (``tests/classify/test_native_json.py``, ``test_native_raw_scan.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import chain, filterfalse
from operator import itemgetter
from typing import Any, Final

from labelgate.classify import credentials, numbers, reasons
from labelgate.classify.catalog import OUTPUTS_PREFIX, Catalog
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import (
    OPAQUE_JSON,
    SOURCE_BACKEND,
    SOURCE_CATALOG,
    SOURCE_DEFAULT,
    Classification,
    Field,
    FieldSet,
    LeafSpans,
    detector_source,
    fail_closed_source,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.float_characters import FLOAT_DATATYPES
from labelgate.classify.folding import CONTROLS, may_hide
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import (
    FOLDED_TEXT,
    JsonObjects,
    LeafHits,
    carry_key_blocks,
    classify_json,
    cover_key_blocks,
    hidden_by_escapes,
    json_objects,
    key_may_open,
    keys_say_more,
    not_objects,
    read_after_a_key,
)
from labelgate.classify.jsonpaths import KeyNames, may_escape, may_reference, unescaped_forms
from labelgate.classify.key_blocks import SECRET, left_open
from labelgate.classify.labels import LABELS, check_default_label, is_label, most_sensitive
from labelgate.classify.markup import may_render
from labelgate.classify.messages import classify_message, digit_runs
from labelgate.classify.other_encodings import raw_digit_rows, read_as_digits
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor

BACKEND_LABELS_PARAMETER = "labelgate.labels"
BACKEND_LABELS_INVALID = reasons.BACKEND_LABELS_INVALID
OUTPUT_NAME_DETECTED = reasons.OUTPUT_NAME_DETECTED
OUTPUT_SHAPE_DETECTED = reasons.OUTPUT_SHAPE_DETECTED
# Key spellings are kept per model; past this many models (names come from callers) the
# memo starts over.
MODEL_MEMO_SIZE = 1024
# Bytes that send a raw text tensor past the one-call native scan: "{" (JSON objects), "\\"
# (escapes) and the control characters folding drops.
_RAW_STOP = b"{\\" + CONTROLS
# The same where JSON that is not a bare object fails closed: every element that opens like
# JSON (``jsonpaths.opens_json``) holds one of "{", "[" and '"'.
_RAW_STOP_JSON = _RAW_STOP + b'["'

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
            found_key = _classify_text_tensor(
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
        or (_DASH in data and all(letter in data for letter in _KEY_LETTERS))
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


# How a caller prints a reply's output names together: run on, by a space, a tab (a TSV
# header), a hyphen, a comma or a line each. The price: names that are numbers may read as one
# value together (of 50 runs of four consecutive years, 8 read as a card and are refused).
_NAME_SEPARATORS = ("", " ", "\t", "-", ",", "\n")


def check_output_names(
    tensors: Sequence[Tensor], detectors: DetectorSet, clean: set[tuple[str, ...]] | None = None
) -> None:
    """Refuse a reply whose output names hold what a detector finds (``OUTPUT_NAME_DETECTED``).

    The upstream chooses its outputs' names, and they travel where values never do: to the
    caller as names, and into field paths, log lines, audit records and stored decision
    inputs. So they are scanned like JSON keys, by every detector, as written, folded
    (``folding``: full-width digits, zero-width characters) and with JSON escapes decoded,
    each alone and all of them joined in order, and a hit in any form fails the reply closed.
    ``clean`` remembers name sets that passed (a model answers with the same names call after
    call); past ``MODEL_MEMO_SIZE`` sets it starts over."""
    names = tuple(tensor.name for tensor in tensors)
    if clean is not None and names in clean:
        return
    found = names_detected(names, detectors)
    if not found and len(names) > 1:
        # A value split over names (``ssn 123``, ``45``, ``6789``) is whole where a caller
        # prints them together: read them in the reply's order, joined as shapes are.
        found = names_detected([separator.join(names) for separator in _NAME_SEPARATORS], detectors)
    if found:
        detector = min(found.values())
        # Neither the name nor its position in the reply is quoted: the name is the data.
        raise UpstreamError(
            OUTPUT_NAME_DETECTED, f"an output's name holds what the {detector} detector finds"
        )
    if clean is not None:
        if len(clean) >= MODEL_MEMO_SIZE:
            clean.clear()
        clean.add(names)


def names_detected(names: Sequence[str], detectors: DetectorSet) -> dict[int, str]:
    """For each name that holds what a detector finds, as written, folded or with its escapes
    decoded (what a caller's terminal or JSON reader shows), its index and the first such
    detector by name. Names an upstream chose (outputs, the models an index lists) travel
    where values never do: into field paths, decision inputs, logs and records."""
    encoded = [name.encode("utf-8", "surrogatepass") for name in names]
    found = detectors.scan_each(encoded)
    for index, hits in hidden_by_folding(encoded, detectors, found).items():
        found.setdefault(index, []).extend(hits)
    if any(map(may_escape, encoded)):
        for index, hits in hidden_by_escapes(encoded, detectors).items():
            found.setdefault(index, []).extend(hits)
    return {index: min(hit.detector for hit in hits) for index, hits in found.items() if hits}


# The letters of PRIVATE KEY, the rarer first, as ints (``in`` finds one with memchr): a raw
# buffer without one of them holds no BEGIN marker split across elements either.
_KEY_LETTERS = tuple(b"KVYPRIATE")


def check_output_shapes(tensors: Sequence[Tensor], detectors: DetectorSet) -> None:
    """Refuse a reply whose output shapes, read as digits, hold what a detector finds
    (``OUTPUT_SHAPE_DETECTED``). A shape is the upstream's choice as much as a name is: with
    dimensions of 1 anywhere (``[4, 1, 1, ..., 1]`` of four elements reads 4111111111111111)
    or a factorisation of the element count (``[123, 45, 6789]``), it carries digits to the
    caller through any mask, since masks change values, never the layout. The dimensions are
    read run together and joined by a space, a hyphen and a comma (how a caller prints them:
    ``messages.digit_runs``, as a message's repeated integers are read)."""
    forms = [run for tensor in tensors for run in digit_runs(tensor.shape)]
    if not forms:
        return
    found = detectors.scan_each(forms)
    if found:
        detector = min(hit.detector for hits in found.values() for hit in hits)
        raise UpstreamError(
            OUTPUT_SHAPE_DETECTED, f"an output's shape holds what the {detector} detector finds"
        )


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
    keyed: bool = False,
    covered: dict[int, int] | None = None,
) -> bool:
    """``keyed``: the catalog gives some path under the output a label the output does not
    carry, so JSON that is not a bare object fails closed (``json_elements.not_objects``).
    ``covered``: how far a PEM block opened before the tensor runs into its elements
    (``_covered_elements``), covered by ``secret`` where it is scanned. Returned: whether
    ``secret`` may have found something in it (a BEGIN marker it reads is such a detection)."""
    scanning = detectors if scanning is None else scanning
    if covered and SECRET not in scanning.names:
        covered = None  # the output's own labels say what ``secret`` would
    raw = None if covered else tensor.raw_form()
    if raw is not None and not scanning and b"{" not in raw and not keyed:
        # Nothing to scan for, and no "{" even in the length prefixes, so no element is a
        # JSON object whose keys could say something: the path below would find nothing.
        return False
    if raw is not None and scanning:
        # A decoded tensor's raw buffer, scanned in one native call. Without a "{" (so no JSON
        # object) or a "\" (so no escapes) in any element, all the path below does is these
        # spans; an element with either, or a buffer the extension refuses, takes that path.
        # The raw form is that of exactly these values; they are built only if a pass the
        # extension leaves to Python needs them.
        # An element with a control character (but tab, newline, return) takes that path
        # too: folded, it may show a value (``folding``).
        stop = _RAW_STOP_JSON if keyed else _RAW_STOP
        built = scanning.spans_raw(raw, tensor.size, tensor.byte_elements, stop=stop)
        if built is not None:
            spans, names = built
            # The passes ``_scan_texts`` runs after its scan, in its order: character
            # references (``&#``: the native scan reads text as written), then folding when
            # not ASCII: some element may hide a value in other scripts' digits. (The length
            # prefixes hold control bytes, so this asks about non-ASCII text only; elements
            # with control characters stopped the native scan above.)
            references = may_reference(raw)
            if references:
                spans, names = _with_hidden(spans, names, hidden_by_escapes(tensor.byte_elements(), scanning))
            # Markup a renderer drops next to a value's character (``123<b></b>-45``) is
            # read rendered with the folded form (``folding.folded``): the native scan reads
            # text as written. (A length prefix may look like such markup: then each element
            # is asked again, ``hidden_by_folding``.)
            folds = not raw.isascii() or may_render(raw)
            # ASCII text that folds to itself may still read as UTF-16 digits (``f\t`` is
            # Devanagari's 0 in UTF-16-LE): the elements that do, named in one native pass
            # over the buffer (None: any may). Ordinary text holds none.
            if not folds:
                folds = raw_digit_rows(raw, tensor.size) != []
            if folds:
                hidden = hidden_by_folding(tensor.byte_elements(), scanning, spans)
                spans, names = _with_hidden(spans, names, hidden)
            # A block opened by a BEGIN marker only a decoded or folded form shows runs into
            # the later elements too (the native scan carries those it reads as written).
            hidden_key = SECRET in names and (references or folds)
            # A BEGIN marker split across elements, which no element's scan finds: asked only
            # when every letter of its PRIVATE KEY is in the buffer (memchr each).
            split_key = (
                SECRET in scanning.names and tensor.size > 1 and all(letter in raw for letter in _KEY_LETTERS)
            )
            key_carried = (hidden_key or split_key) and carry_key_blocks(
                tensor.byte_elements(), spans, {}, (), {}, keys, scanning
            )[0]
            if key_carried:
                spans = dict(sorted(spans.items()))
                names.add(SECRET)  # a split marker's block: no scan found it
            for detector in sorted(names):
                fields.add(f"{path}{{{detector}}}", [detectors.label_of(detector)], detector_source(detector))
            if spans:
                result.spans[tensor.name] = spans
            return SECRET in names
    values = tensor.byte_elements()
    joined = b"".join(values)
    # Without a "{" anywhere no element is a JSON object: one C-level search spares the
    # per-element checks for most tensors.
    references = may_reference(joined)  # a character reference the native reader would not decode
    objects, opaque, leaf_hits = (
        json_objects(values, detectors, keys, scanning, references) if b"{" in joined else ({}, {}, {})
    )
    if keyed and len(objects) + len(opaque) < len(values):
        read = objects.keys() | opaque.keys()
        more = not_objects(values, filterfalse(read.__contains__, range(len(values))))
        if more:
            opaque = dict(sorted((opaque | more).items()))
    # Some element may hide a value from a scan of its raw text (asked only when scanning).
    hiding = bool(scanning) and may_hide(joined)
    # Or read as UTF-16 digits, ASCII that folds to itself too (``f\t`` is Devanagari's 0 in
    # UTF-16-LE): the elements that do, asked of all at once (one native pass; ordinary text
    # holds none). Text that may hide is read so where it is folded (``hidden_by_folding``).
    wide_digits = read_as_digits(values) if scanning and (objects or not hiding) else set()
    escaped = may_escape(joined)
    if objects and scanning and (hiding or escaped or (wide_digits and not wide_digits.isdisjoint(objects))):
        _fold_json_elements(values, objects, opaque, leaf_hits, scanning, keys, wide_digits)
    if not objects and not opaque:
        texts = list(range(len(values)))
    else:
        taken = objects.keys() | opaque.keys()
        texts = list(filterfalse(taken.__contains__, range(len(values))))
    # found: the detectors the spans name, when _scan_texts knows them (and the spans are
    # then in element order); None: count them here, and sort.
    spans, found = (
        _scan_texts(values, texts, scanning, escaped=escaped, ascii=not (hiding or wide_digits))
        if scanning
        else ({}, None)
    )
    if opaque:
        # Every label the catalog gives at or under the output (and the default, for keys no
        # entry names), not the most sensitive alone: the policy need not be monotone in rank,
        # and an internal key inside a restricted output must still be masked for a caller
        # who may see restricted data and not internal.
        under = sorted(catalog.labels_at_or_under(model, tensor.name) | {default_label})
        for reason in sorted(set(opaque.values())):
            fields.add(f"{path}{{{OPAQUE_JSON}}}", under, fail_closed_source(reason))
        spans.update(_opaque_spans(values, opaque, most_sensitive(under), detectors))
        found = None
    carried = None
    # Some element may spell a marker (one C-level search of the joined text, asked once).
    may_open = SECRET in scanning.names and key_may_open(joined, escaped, hiding or bool(wide_digits))
    if may_open:
        # A block one element opens runs into the later ones of every kind (``key_blocks``).
        changed, carried = carry_key_blocks(values, spans, objects, opaque, leaf_hits, keys, scanning)
        if changed:
            found = None  # the spans' detectors counted again, and their elements put in order
    if covered:
        # A block opened before the tensor (another output, an earlier reply) runs into it.
        changed, carried_in = cover_key_blocks(
            values, spans, objects, opaque, leaf_hits, keys, scanning, covered
        )
        if changed:
            found = None
        if carried_in:
            carried = carried or {}
            for index, leaves in carried_in.items():
                carried[index] = [*carried.get(index, []), *leaves]
    if spans:
        ordered = found is not None
        if found is None:
            found = set(map(itemgetter(0), chain.from_iterable(spans.values()))) - {OPAQUE_JSON}
        for detector in sorted(found):
            fields.add(f"{path}{{{detector}}}", [detectors.label_of(detector)], detector_source(detector))
        result.spans[tensor.name] = spans if ordered else dict(sorted(spans.items()))
    if objects:
        result.json_elements[tensor.name] = classify_json(
            model, path, objects, leaf_hits, catalog, scanning, fields, keys, default_label, carried
        )
        # What enforce needs to mask these elements without reading them again key by key.
        result.json_shapes[tensor.name] = {
            index: (values[index], shape) for index, (shape, _) in objects.items()
        }
    if SECRET not in scanning.names:
        return False
    if found is not None and SECRET in found:
        return True
    # A leaf's: looked for only where some element may spell a marker.
    return (
        bool(objects)
        and may_open
        and SECRET
        in {
            hit.detector
            for leaves in result.json_elements[tensor.name].values()
            for leaf in leaves
            for hit in leaf.detections
        }
    )


def _with_hidden(
    spans: dict[int, list[Detection]], names: set[str], hidden: dict[int, list[Detection]]
) -> tuple[dict[int, list[Detection]], set[str]]:
    """``spans`` and ``names`` with the detections of ``hidden`` added (spans in element order)."""
    if not hidden:
        return spans, names
    for index, hits in hidden.items():
        spans.setdefault(index, []).extend(hits)
    return dict(sorted(spans.items())), names | {hit.detector for hits in hidden.values() for hit in hits}


def _fold_json_elements(
    values: list[bytes],
    objects: JsonObjects,
    opaque: dict[int, str],
    leaf_hits: LeafHits,
    detectors: DetectorSet,
    keys: KeyNames,
    wide_digits: Collection[int] = (),
) -> None:
    """A JSON element whose text, folded (``folding``) as written or with its escapes
    decoded, or read as UTF-16 digits (``other_encodings.read_as_digits``: ``wide_digits``,
    by element index, for the text as written), shows a match that no match in the same text
    unfolded covers (``hidden_values.uncovered``) is opaque (``FOLDED_TEXT``): its leaves
    cannot say which holds the value, so a mask on that detector rewrites the element whole.
    Left out of the leaf scan, it no longer carries a PEM block from the elements before it to
    those after: the native reader's elements from the first where a block may open are read
    again by Python (``read_after_a_key``)."""
    dropped = False
    chosen = [
        index
        for index in objects
        if may_hide(values[index]) or may_escape(values[index]) or index in wide_digits
    ]
    for index in chosen:
        # Each form on its own: folding drops control characters, so no separator joining
        # them would still part them once folded.
        forms = [values[index], *unescaped_forms(values[index])]
        # Forms that are ASCII without control characters fold to themselves: nothing to
        # compare (most decoded references, ``&amp;``, ``&#39;``), unless one reads as
        # UTF-16 digits.
        if not (
            any(map(may_hide, forms)) or index in wide_digits or read_as_digits(forms[1:])
        ) or not hidden_by_folding(forms, detectors, detectors.scan_each(forms)):
            continue
        del objects[index]
        leaf_hits.pop(index, None)
        opaque[index] = FOLDED_TEXT
        dropped = True
    if dropped and objects:
        read_after_a_key(values, objects, opaque, leaf_hits, keys)
    if len(opaque) > 1:
        ordered = dict(sorted(opaque.items()))
        opaque.clear()
        opaque.update(ordered)


def _scan_texts(
    values: list[bytes], indices: list[int], detectors: DetectorSet, escaped: bool, ascii: bool = True
) -> tuple[dict[int, list[Detection]], set[str] | None]:
    """Detections in the plain-text elements at ``indices`` (ascending), by element index;
    and, when the native scan built them (in element order, nothing to add from escapes or
    other scripts), the detectors they name (else None). ``ascii``: no element holds a byte
    past ASCII or a control character ``folding`` drops (so no text to fold, ``may_hide``)."""
    texts = values if len(indices) == len(values) else [values[index] for index in indices]
    if not escaped and ascii:
        built = detectors.spans_at(texts, indices)
        if built is not None:
            return built
    found = detectors.scan_each(texts)
    if escaped:
        for position, hits in hidden_by_escapes(texts, detectors).items():
            found.setdefault(position, []).extend(hits)
    if not ascii:
        for position, hits in hidden_by_folding(texts, detectors, found).items():
            found.setdefault(position, []).extend(hits)
    spans = {indices[position]: found[position] for position in sorted(found)}
    return spans, None


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
    for position, hits in hidden_by_escapes(texts, detectors).items():
        found[position].update(hit.detector for hit in hits)
    for position, hits in hidden_by_folding(texts, detectors).items():
        found[position].update(hit.detector for hit in hits)
    spans: dict[int, list[Detection]] = {}
    for position, names in found.items():
        size = len(texts[position])
        whole = [Detection(name, detectors.label_of(name), 0, size) for name in sorted(names)]
        spans[indices[position]] = [*whole, Detection(OPAQUE_JSON, label, 0, size)]
    return spans


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
