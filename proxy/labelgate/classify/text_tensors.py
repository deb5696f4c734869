"""How a BYTES output's elements are classified (``classify_text_tensor``): plain text,
JSON objects key by key, opaque JSON failed closed, values hidden by escapes, folding,
markup or another encoding, and PEM blocks that run across elements (the ``classifier``
module docstring says what each gives the policy).

Apart from the classifier since it is one kind of output among those ``classify_outputs``
walks (numbers are read by ``numbers``), and the longest reading of one.

JSON elements are classified in ``json_elements`` (with the native extension active and no
custom detector to scan with, read and scanned natively first). With the extension, a text
tensor decoded from raw contents is scanned from that raw buffer in one call, unless an
element holds ``{`` or a backslash; otherwise element by element. The result is the Python
path's either way (``tests/classify/test_native_json.py``, ``test_native_raw_scan.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import chain, filterfalse
from operator import itemgetter

from labelgate.classify.catalog import Catalog
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.fields import (
    OPAQUE_JSON,
    Classification,
    FieldSet,
    detector_source,
    fail_closed_source,
)
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
    not_objects,
    read_after_a_key,
)
from labelgate.classify.jsonpaths import KeyNames, may_escape, may_reference, unescaped_forms
from labelgate.classify.key_blocks import SECRET
from labelgate.classify.labels import most_sensitive
from labelgate.classify.markup import may_render
from labelgate.classify.other_encodings import raw_digit_rows, read_as_digits
from labelgate.oip.tensor import Tensor

# Bytes that send a raw text tensor past the one-call native scan: "{" (JSON objects), "\\"
# (escapes) and the control characters folding drops.
_RAW_STOP = b"{\\" + CONTROLS
# The same where JSON that is not a bare object fails closed: every element that opens like
# JSON (``jsonpaths.opens_json``) holds one of "{", "[" and '"'.
_RAW_STOP_JSON = _RAW_STOP + b'["'

# The letters of PRIVATE KEY, the rarer first, as ints (``in`` finds one with memchr): a raw
# buffer without one of them holds no BEGIN marker split across elements either.
KEY_LETTERS = tuple(b"KVYPRIATE")


def classify_text_tensor(
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
                SECRET in scanning.names and tensor.size > 1 and all(letter in raw for letter in KEY_LETTERS)
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
