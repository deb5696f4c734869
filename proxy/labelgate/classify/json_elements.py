"""JSON-object elements of a BYTES output, classified key by key (``classifier``'s
docstring says what the fields mean). Pure, no I/O.

``json_objects`` finds the elements to classify key by key (the native reader first, when
it can vouch for an element and only built-in detectors scan; the exact Python path for
the rest, and for every element that may hold a character reference,
``jsonpaths.may_reference``, whose leaves are scanned decoded there) and the reason each
opaque element is not; ``classify_json`` turns their leaves into fields and ``LeafSpans``.
Either way the result is the Python path's (``tests/classify/test_native_json.py``).

A catalog entry names a path, whatever the upstream puts there. An object or array at a path
the catalog labels (``outputs.doc[].secret`` holding ``["pw"]`` or ``{"v": "pw"}``, or a
sub-object an operator labels, ``outputs.doc[].contact``) is a field of its own with those
labels (``_labelled_nodes``), as a message-typed field of a generic message is; a mask on
it rewrites it whole, keys and all. The leaves in it are other paths, with labels of their own.

Only a bare object (``{`` after JSON whitespace) is classified key by key, but a reader finds
keys in other JSON too: an array of objects, an object after a byte-order mark or another
space, JSON written into a JSON string (``jsonpaths.opens_json``). Read as plain text such an
element keeps its output's label and its detections, and loses the catalog's labels on its
keys. So in an output whose keys say more (``keys_say_more``: the catalog gives some path at
or under it a label that is not one of the output's own, below it as well as above), each
such element is opaque (``not_objects``, ``jsonpaths.NOT_AN_OBJECT``): labelled with every
label under the output and masked whole, as every opaque element is. Elsewhere it stays
text, scanned in place: no key could say more than the output does. Classifying an array's
items as elements would reach their keys, but the native reader, shapes and masks all place
a node from an object at the root; failing closed is simpler and as safe, and only costs
elements no catalog describes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Any, cast

from labelgate.classify import jsonpaths, native
from labelgate.classify.catalog import OUTPUTS_PREFIX, Catalog
from labelgate.classify.credentials import NAME as SECRET
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet, _merge_overlaps
from labelgate.classify.fields import (
    OPAQUE_JSON,
    SOURCE_CATALOG,
    SOURCE_DEFAULT,
    FieldSet,
    LeafSpans,
    detector_source,
    fail_closed_source,
)
from labelgate.classify.folding import UNFOLDABLE, FoldMemo, folded, may_hide
from labelgate.classify.hidden_values import unfoldable_spans
from labelgate.classify.jsonpaths import JsonShape, KeyNames
from labelgate.classify.shown_text import rendered_reading
from labelgate.errors import LabelgateError
from labelgate.reasons import NATIVE_KERNEL_FAILED

# More distinct JSON paths than this in one tensor and its JSON elements are opaque: keeps
# the policy input bounded when a backend keys objects by data (ids, names).
MAX_JSON_PATHS = 256
# Reasons an element is opaque, besides jsonpaths' (invalid JSON, duplicate key, too deep).
TOO_MANY_PATHS = "too_many_paths"
KEY_DETECTED = "key_detected"
FOLDED_TEXT = "folded_text"  # a detector fires only in the element's folded text (folding.py)
_new_tuple = tuple.__new__  # builds a LeafSpans without the Python-level NamedTuple __new__
_OPENERS = b"".join(jsonpaths.OBJECT_OPENERS)  # for the extension: one byte each
_BACKSLASH, _AMPERSAND = b"\\&"  # ints: ``in`` finds one with memchr (``jsonpaths.may_reference``)


def keys_say_more(catalog: Catalog, model: str, tensor: str, own: AbstractSet[str]) -> bool:
    """Whether the catalog gives some path at or under ``outputs.<tensor>`` a label that is
    not one of ``own`` (the output's): then an element read as text would lose it. A label
    below the output's counts as much as one above: the policy need not be monotone in rank
    (a caller may see ``restricted`` and not ``internal``), so an ``internal`` key inside a
    ``restricted`` output says more than the output does. ``{detector}`` paths count too
    (``Catalog.labels_at_or_under``): erring towards opaque."""
    return not catalog.labels_at_or_under(model, tensor) <= own


def not_objects(values: list[bytes], indices: Iterable[int]) -> dict[int, str]:
    """Each element at ``indices`` (none read as an object) that opens like JSON, with the
    reason it is opaque (see the module docstring)."""
    opens_json = jsonpaths.opens_json
    return dict.fromkeys([index for index in indices if opens_json(values[index])], jsonpaths.NOT_AN_OBJECT)


def hidden_by_escapes(texts: Sequence[bytes], detectors: DetectorSet) -> dict[int, list[Detection]]:
    """For each text whose JSON escapes or character references decode to something a
    detector finds (``jsonpaths.unescaped_forms``): one detection per such detector spanning
    the whole text (decoded offsets do not index the raw one)."""
    if len(texts) > 1 and len(set(texts)) < len(texts):
        # Identical texts (one byte each, of a tensor of many) hide the same: each is read once.
        distinct = list(dict.fromkeys(texts))
        found = hidden_by_escapes(distinct, detectors)
        at_of = {text: at for at, text in enumerate(distinct)}
        return {index: list(found[at_of[text]]) for index, text in enumerate(texts) if at_of[text] in found}
    forms: list[bytes] = []
    owners: list[int] = []
    result: dict[int, dict[str, Detection]] = {}
    referenced: list[int] = []  # texts with references and no backslash: decoded together
    for index, text in enumerate(texts):
        if _BACKSLASH in text:
            _add_forms(index, text, jsonpaths.unescaped_forms(text), forms, owners, result, detectors)
        elif _AMPERSAND in text and jsonpaths.REFERENCE.search(text):  # ``jsonpaths.may_reference``
            referenced.append(index)
    if referenced:
        decoded = jsonpaths.unreferenced([texts[index] for index in referenced])
        # Decoded to ASCII without control characters (``&#39;``), as most are: none to fold.
        plain = not may_hide(b"".join(decoded))
        for index, form in zip(referenced, decoded, strict=True):
            if form == texts[index]:
                continue
            if plain or not may_hide(form):
                forms.append(form)
                owners.append(index)
            else:  # not ASCII, or a control character (``&#27;``): folded too
                _add_forms(index, texts[index], [form], forms, owners, result, detectors)
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        whole = result.setdefault(index, {})
        for hit in hits:
            whole.setdefault(hit.detector, Detection(hit.detector, hit.label, 0, len(texts[index])))
    return {index: list(whole.values()) for index, whole in sorted(result.items())}


def _add_forms(
    index: int,
    text: bytes,
    decoded: list[bytes],
    forms: list[bytes],
    owners: list[int],
    result: dict[int, dict[str, Detection]],
    detectors: DetectorSet,
) -> None:
    """``text``'s ``decoded`` forms, and each folded, to scan (``hidden_by_escapes``)."""
    # Decoded text may be in other scripts' digits (``\\uff11`` is a full-width 1): folded
    # too (folding.py); what cannot be folded hides anything. And markup (``\\u003cb>``):
    # rendered too (``shown_text.rendered_reading``). The forms differ from each other where
    # escapes or references were decoded, no more: each folded where it differs (``FoldMemo``).
    memo = FoldMemo()
    for each in list(decoded):
        form = folded(each, memo)
        if form is UNFOLDABLE:
            spans = unfoldable_spans(len(text), detectors)
            if spans:
                result[index] = {hit.detector: hit for hit in spans}
            continue
        if form is not None:
            decoded.append(form)
        shown = rendered_reading(each, form)
        if shown is not None:
            decoded.append(shown)
    forms += decoded
    owners += [index] * len(decoded)


# An element classified key by key: its shape, and its leaf values when the Python path read
# it (None when the native reader did: its hits are in the ``LeafHits`` beside).
JsonObjects = dict[int, tuple[JsonShape, list[Any] | None]]
LeafHits = dict[int, native.JsonRead]  # element index -> what the native reader found, if anything


def json_objects(
    values: list[bytes],
    detectors: DetectorSet,
    keys: KeyNames,
    scanning: DetectorSet,
    references: bool = True,
) -> tuple[JsonObjects, dict[int, str], LeafHits]:
    """The shape and leaf values (or native hits) of each element to classify key by key,
    and the reason each opaque element is not (see the module docstring). ``references``:
    some element may hold a character reference (``jsonpaths.may_reference``); False only
    when none does."""
    objects: JsonObjects = {}
    opaque: dict[int, str] = {}
    leaf_hits: LeafHits = {}
    shapes: dict[JsonShape, None] = {}  # the distinct shapes met, in order
    suffixes: set[str] = set()
    # Only an element starting with "{" (or whitespace) can be one: skip the rest unparsed.
    candidates = native.object_candidates(values, _OPENERS)
    if candidates is None:
        openers = jsonpaths.OBJECT_FIRST_BYTES  # a set of one-byte bytes: faster than startswith
        candidates = [index for index, value in enumerate(values) if value[:1] in openers]
    read_shaped = jsonpaths.read_shaped
    native_shape = keys.native_shape
    reads = _native_reads(values, candidates, scanning)
    if reads is not None and references:
        # The native reader scans leaves as written: an element holding a character reference
        # is read here, and its leaves are scanned decoded too (``classify_json``).
        may_reference = jsonpaths.may_reference
        reads = [
            None if may_reference(values[index]) else read
            for index, read in zip(candidates, reads, strict=True)
        ]
    # Signatures repeat from element to element: each distinct one is looked up once here
    # (to its element entry, or None), and an element of a shape met already needs no more.
    by_signature: dict[bytes, tuple[JsonShape, None] | None] = {}
    read_by_python = False  # some candidate read (or found opaque, or text) by Python
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
            read_by_python = True
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
        if jsonpaths.may_escape(b"\x00".join(distinct)):
            # A key can hide a value as a leaf can: in escapes or character references.
            detected.update(distinct[position] for position in hidden_by_escapes(distinct, detectors))
        if detected:
            flagged = {shape for shape in shapes if not detected.isdisjoint(shape.keys)}
            for index in [index for index, (shape, _) in objects.items() if shape in flagged]:
                del objects[index]
                leaf_hits.pop(index, None)
                opaque[index] = KEY_DETECTED
    if reads is not None and objects and (read_by_python or opaque):
        read_after_a_key(values, objects, opaque, leaf_hits, keys)
    return objects, dict(sorted(opaque.items())), leaf_hits


def read_after_a_key(
    values: list[bytes], objects: JsonObjects, opaque: dict[int, str], leaf_hits: LeafHits, keys: KeyNames
) -> None:
    """Re-read with Python each element the native reader read from the first where a PEM
    block may open, when some element from there on is not the native reader's (Python reads
    it, or it is opaque: out of the leaf scan). A block runs on from one element's leaves into
    the next elements' (``credentials``): the native reader carried it across every element
    it read, the Python scan (``classify_json``) carries it across the leaves of the elements
    it reads, in order, opaque ones left out. An element the reader read that became Python's
    (a character reference) or opaque (a detected key, folded text: ``_fold_json_elements``
    calls this again) broke the reader's carry: its END marker closed a block for the
    elements after it that the Python scan, and the Python path alone, sees open (fail
    closed: the key's lines stay covered); or the Python scan of it alone never saw the
    block open. Re-read, every element from there on is in the one scan, in order.
    (``lib.rs``'s ``left_to_python_after_a_key`` does the same for the elements the reader
    leaves to Python.) Before that element no block opens in either reading."""
    first = _first_opening(values, objects, opaque, leaf_hits)
    if first is None:
        return
    natives = [index for index, (_, leaves) in objects.items() if index >= first and leaves is None]
    if not natives:
        return
    if all(leaves is None for index, (_, leaves) in objects.items() if index >= first) and not any(
        index >= first for index in opaque
    ):
        return  # every element from there on is the reader's: its carry is the scan's
    for index in natives:
        leaf_hits.pop(index, None)
        read = jsonpaths.read_shaped(values[index], keys)
        # The reader vouched for it as Python reads it: an object. Were it not, Python's reading
        # of it still decides (as the Python path would from the start).
        if isinstance(read, tuple):
            objects[index] = read
        else:
            del objects[index]
            if read is not None:
                opaque[index] = read


_PRIVATE_KEY = b"PRIVATE KEY"  # in every PEM private key's BEGIN marker (``credentials``)
_SECRET_BIT = native.DETECTOR_BITS.index(SECRET)
# Per JSON object a block from another element runs into: (scanned leaf ordinal, end) of each
# leaf it covers (``key_blocks.carried_across``).
CarriedLeaves = dict[int, list[tuple[int, int]]]


def key_may_open(joined: bytes, escaped: bool, hiding: bool) -> bool:
    """Whether some element of a tensor (``joined``) may open a PEM block: a ``PRIVATE KEY``
    as written, or escapes or text to fold that may spell one (``carry_key_blocks``). One
    C-level search: the common tensor holds none of these."""
    return escaped or hiding or _PRIVATE_KEY in joined


def carry_key_blocks(
    values: list[bytes],
    spans: dict[int, list[Detection]],
    objects: JsonObjects,
    opaque: Collection[int],
    leaf_hits: LeafHits,
    keys: KeyNames,
    detectors: DetectorSet,
) -> tuple[bool, CarriedLeaves | None]:
    """Carry the PEM blocks of a tensor's elements across all of them (``key_blocks``): a
    block one element opens runs into the later elements of every kind, plain text, JSON
    object or opaque, to its END marker or the last. Each scan (the plain-text elements', the
    JSON leaves', the opaque elements') carries a block across its own texts only, so an
    opaque element (invalid JSON) or a JSON leaf opening one left the key's lines in the
    other elements after it in clear, and a text opening one the JSON leaves after it.

    Into ``spans`` (the plain-text and opaque elements' detections, by index; called with
    ``spans`` whole, after each scan): a ``secret`` span over each text from its start through
    where the block ends, over each opaque element whole, where the scan's own does not cover
    that already. Returned: whether ``spans`` changed, and the leaves of the JSON objects a
    block runs into (``classify_json``'s ``carried``), None when there are none. A JSON object the native
    reader read that a block runs into is read again by Python for its leaves, with every
    other it read from the first opening on (the reader's carry across its elements would
    differ from the Python scan's otherwise: ``read_after_a_key``); a reading that differs
    from the reader's fails the call (``NATIVE_KERNEL_FAILED``).

    Asked only where ``secret`` scans and ``key_may_open``; the elements asked about are those
    in which a scan found a ``secret`` (any BEGIN marker in any form it reads is such a
    detection), or, for those Python reads as objects (its leaf scan comes later), that hold
    ``PRIVATE KEY`` or an escape."""
    # Here, not at the top: key_blocks reads integer codes as characters, which imports this.
    from labelgate.classify import key_blocks

    first = _first_key_opening(values, spans, objects, leaf_hits)
    # A BEGIN marker split across elements, which no element's scan finds (``key_blocks``).
    split = key_blocks.split_openings(values)
    if split:
        first = min(split) if first is None else min(first, min(split))
    if first is None or first == len(values) - 1:
        return False, None
    if all(index in objects for index in range(first, len(values))):
        return False, None  # the JSON leaves' scan carries it (``read_after_a_key``)
    read_again = False

    def leaf_texts(index: int) -> list[bytes]:
        nonlocal read_again
        if objects[index][1] is None and not read_again:
            read_again = True
            _read_natives_again(values, objects, leaf_hits, keys, first)
        shape, leaves = objects[index]
        return shape.texts(cast(list[Any], leaves))

    covered, carried, opened = key_blocks.carried_across(values, first, objects, opaque, leaf_texts, split)
    changed = False
    if opened:
        # From where a split marker starts to its element's end, as a scan's own span of a
        # marker there would run (an opaque element is covered whole, below).
        label = detectors.label_of(SECRET)
        order = {name: position for position, name in enumerate(detectors.names)}
        for index, start in opened.items():
            if index in opaque:
                covered[index] = len(values[index])
                continue
            hits = spans.get(index, [])
            end = len(values[index])
            if not any(hit.detector == SECRET and hit.start <= start and hit.end >= end for hit in hits):
                spans[index] = _merge_overlaps([*hits, Detection(SECRET, label, start, end)], order)
                changed = True
    if covered:
        label = detectors.label_of(SECRET)
        order = {name: position for position, name in enumerate(detectors.names)}
        for index, end in covered.items():
            hits = spans.get(index, [])
            if index in opaque:
                if not any(hit.detector == SECRET for hit in hits):
                    # Every detector's span, then the opaque one (``text_tensors._opaque_spans``).
                    whole = [hit for hit in hits if hit.detector != OPAQUE_JSON]
                    whole.append(Detection(SECRET, label, 0, end))
                    whole.sort(key=attrgetter("detector"))
                    spans[index] = [*whole, *(hit for hit in hits if hit.detector == OPAQUE_JSON)]
                    changed = True
            elif not any(hit.detector == SECRET and hit.start == 0 and hit.end >= end for hit in hits):
                spans[index] = _merge_overlaps([*hits, Detection(SECRET, label, 0, end)], order)
                changed = True
    return changed, carried or None


def cover_key_blocks(
    values: list[bytes],
    spans: dict[int, list[Detection]],
    objects: JsonObjects,
    opaque: Collection[int],
    leaf_hits: LeafHits,
    keys: KeyNames,
    detectors: DetectorSet,
    covered: dict[int, int],
) -> tuple[bool, CarriedLeaves | None]:
    """Cover with ``secret`` what a PEM block opened before this tensor runs into
    (``covered``: element index -> how far into its text; from another output of the reply or
    an earlier reply of the stream, ``classifier``, ``carryover``), as ``carry_key_blocks``
    covers what a block of an earlier element runs into: a plain text from its start through
    that end, an opaque element whole, and a JSON object's scanned leaves whole (its bytes
    do not index its leaves; the native reader's objects from the first covered one on are
    read again by Python, as there). Returned as ``carry_key_blocks`` returns."""
    objects_in = sorted(index for index in covered if index in objects)
    if objects_in:
        _read_natives_again(values, objects, leaf_hits, keys, objects_in[0])
    label = detectors.label_of(SECRET)
    order = {name: position for position, name in enumerate(detectors.names)}
    changed = False
    carried: CarriedLeaves = {}
    for index, end in sorted(covered.items()):
        if end <= 0 or index >= len(values) or not values[index]:
            continue
        if index in objects:
            shape, leaves = objects[index]
            texts = shape.texts(cast(list[Any], leaves))
            found = [(leaf, len(text)) for leaf, text in enumerate(texts) if text]
            if found:
                carried[index] = found
            continue
        hits = spans.get(index, [])
        if index in opaque:
            if not any(hit.detector == SECRET for hit in hits):
                whole = [hit for hit in hits if hit.detector != OPAQUE_JSON]
                whole.append(Detection(SECRET, label, 0, len(values[index])))
                whole.sort(key=attrgetter("detector"))
                spans[index] = [*whole, *(hit for hit in hits if hit.detector == OPAQUE_JSON)]
                changed = True
            continue
        end = min(end, len(values[index]))
        if not any(hit.detector == SECRET and hit.start == 0 and hit.end >= end for hit in hits):
            spans[index] = _merge_overlaps([*hits, Detection(SECRET, label, 0, end)], order)
            changed = True
    return changed, carried or None


def _first_key_opening(
    values: list[bytes], spans: dict[int, list[Detection]], objects: JsonObjects, leaf_hits: LeafHits
) -> int | None:
    """The first element that opens a PEM block it does not close (``key_blocks.opens_key_block``),
    among those ``carry_key_blocks`` asks about; None when none does."""
    asked = {index for index, hits in spans.items() if any(hit.detector == SECRET for hit in hits)}
    asked.update(
        index for index, (_, hits, _) in leaf_hits.items() if any(hit[1] == _SECRET_BIT for hit in hits)
    )
    backslash = b"\\"
    for index, (_, leaves) in objects.items():
        value = values[index]
        if leaves is not None and (
            _PRIVATE_KEY in value or backslash in value or jsonpaths.may_reference(value)
        ):
            asked.add(index)
    from labelgate.classify.key_blocks import opens_key_block  # see ``carry_key_blocks``

    return next((index for index in sorted(asked) if opens_key_block(values[index])), None)


def _read_natives_again(
    values: list[bytes], objects: JsonObjects, leaf_hits: LeafHits, keys: KeyNames, first: int
) -> None:
    """Read with Python each element from ``first`` on that the native reader read (as
    ``read_after_a_key`` does), refusing one Python reads otherwise (the reader vouched for
    it: a bug, never guessed around)."""
    for index, (shape, leaves) in list(objects.items()):
        if index < first or leaves is not None:
            continue
        read = jsonpaths.read_shaped(values[index], keys)
        if not (isinstance(read, tuple) and read[0].suffixes == shape.suffixes):
            raise LabelgateError(
                NATIVE_KERNEL_FAILED, "the native JSON reader and Python read an element apart"
            )
        leaf_hits.pop(index, None)
        objects[index] = read


def _first_opening(
    values: list[bytes], objects: JsonObjects, opaque: dict[int, str], leaf_hits: LeafHits
) -> int | None:
    """The first element (JSON object or opaque) where a PEM block may open: one the native
    reader read with a ``secret`` hit, or any other holding ``PRIVATE KEY`` or a backslash (an
    escape may spell the marker); None when there is none."""
    first: int | None = None
    for index, (_, hits, _) in leaf_hits.items():
        if any(hit[1] == _SECRET_BIT for hit in hits):
            first = index
            break  # leaf_hits is in element order
    backslash = b"\\"
    for index in chain((index for index, (_, leaves) in objects.items() if leaves is not None), opaque):
        if first is not None and index >= first:
            continue
        value = values[index]
        if _PRIVATE_KEY in value or backslash in value:
            first = index
    return first


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


def classify_json(
    model: str,
    path: str,
    objects: JsonObjects,
    leaf_hits: LeafHits,
    catalog: Catalog,
    detectors: DetectorSet,
    fields: FieldSet,
    keys: KeyNames,
    default_label: str | None = None,
    carried: CarriedLeaves | None = None,
) -> dict[int, list[LeafSpans]]:
    """Fields for the elements ``objects`` of the output at ``path`` (``outputs.<t>``) into
    ``fields``: each leaf's, with the catalog's labels and the detectors', and each object or
    array inside an element that the catalog labels (``_labelled_nodes``); and each element's
    ``LeafSpans``. ``keys``: what spelled the shapes' keys (``json_objects``). ``carried``:
    the leaves PEM blocks of other elements run into (``carry_key_blocks``; their elements
    are the Python path's), covered by ``secret`` from their start.

    A detector's label adds to what its leaf carries without it, never replaces it: a leaf
    the catalog does not label keeps ``default_label`` beside the labels of what was found in
    it (the rest of its text is still unlabelled data). The policy need not be monotone in
    rank: a leaf holding a private key beside other text, labelled ``restricted`` alone,
    reached a caller the policy shows ``restricted`` and never ``internal``."""
    prefix = path + "[]"
    texts: list[bytes] = []  # the scanned leaves of the elements the Python path read
    first_text: dict[int, int] = {}  # such an element's index -> its first text in ``texts``
    leaves_of: dict[JsonShape, tuple[tuple[jsonpaths.Location, str], ...]] = {}
    seen: set[str] = set()
    uncatalogued: set[str] = set()  # leaf paths no entry labels: the default label's
    shapes = dict.fromkeys(map(itemgetter(0), objects.values()))
    # Objects and arrays the catalog labels: only where some entry may name a path inside
    # the elements (one bisection; the usual output has none).
    nodes_of = (
        _labelled_nodes(model, prefix, shapes, catalog, keys)
        if catalog.may_label_under(model, prefix)
        else {}
    )
    if nodes_of is None:
        # More such paths than the policy input takes: the whole output carries every label
        # the catalog gives at or under it, as an opaque element does.
        under = catalog.labels_at_or_under(model, path[len(OUTPUTS_PREFIX) :])
        fields.add(path, sorted(under), fail_closed_source(TOO_MANY_PATHS))
        nodes_of = {}
    # Fields in the order their paths first appear, element by element: shape by shape, in
    # the order each shape first appears (a shape's labelled objects and arrays, ancestors
    # first, then its leaves).
    for shape in shapes:
        if nodes_of:
            for node_path, labels in nodes_of.get(shape, ()):
                if node_path not in seen:
                    seen.add(node_path)
                    fields.add(node_path, labels, SOURCE_CATALOG)
        leaf_paths = [prefix + suffix for suffix in shape.suffixes]
        for leaf_path in leaf_paths:
            if leaf_path not in seen:
                seen.add(leaf_path)
                fields.touch(leaf_path)
                catalogued = catalog.labels_for(model, leaf_path)
                fields.add(leaf_path, catalogued, SOURCE_CATALOG)
                if not catalogued:
                    uncatalogued.add(leaf_path)
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
    # A leaf is already decoded once by the parser; JSON inside a string is escaped again, and
    # character references are not decoded by it at all. (The native reader leaves every leaf
    # with a backslash to the Python path, and ``json_objects`` every element that may hold
    # a character reference.)
    if texts and jsonpaths.may_escape(b"".join(texts)):
        for position, hidden in hidden_by_escapes(texts, detectors).items():
            hits_per_text[position] = [*hits_per_text.get(position, ()), *hidden]
    if carried:
        _add_carried(hits_per_text, first_text, carried, detectors)
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
                singles = single_of.setdefault(shape, {})
                _single_hits(hits, singles, scanned_leaves, named, spans, found_labels)
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
        if default_label is not None and leaf_path in uncatalogued:
            uncatalogued.discard(leaf_path)  # once per path
            fields.add(leaf_path, (default_label,), SOURCE_DEFAULT)
    return per_element


def _add_carried(
    hits_per_text: dict[int, list[Detection]],
    first_text: dict[int, int],
    carried: CarriedLeaves,
    detectors: DetectorSet,
) -> None:
    """A ``secret`` span over each carried leaf (``classify_json``) that its scan's own does
    not cover already, merged with its other hits."""
    label = detectors.label_of(SECRET)
    order = {name: position for position, name in enumerate(detectors.names)}
    for index, leaves in carried.items():
        first = first_text[index]
        for leaf, end in leaves:
            hits = hits_per_text.get(first + leaf, [])
            if not any(hit.detector == SECRET and hit.start == 0 and hit.end >= end for hit in hits):
                hits_per_text[first + leaf] = _merge_overlaps(
                    [*hits, Detection(SECRET, label, 0, end)], order
                )


class _TooManyNodes(Exception):
    pass


def _labelled_nodes(
    model: str, prefix: str, shapes: Collection[JsonShape], catalog: Catalog, keys: KeyNames
) -> dict[JsonShape, list[tuple[str, frozenset[str]]]] | None:
    """Per shape, the path and catalog labels of each object or array inside its elements
    (not the element itself) that the catalog labels, in document order, ancestors first;
    None when more than ``MAX_JSON_PATHS`` distinct paths of such nodes would have to be
    looked up, or the labelled ones and the leaves' have more than that together (the
    policy input stays bounded, as ``json_objects`` bounds the leaves).

    A catalog entry names a path, whatever the upstream puts there: ``outputs.doc[].secret``
    labels ``{"secret": ["pw"]}`` and ``{"secret": {"v": "pw"}}`` as it labels
    ``{"secret": "pw"}``. Its leaves (``secret[]``, ``secret.<key:...>``) are other paths, so
    the node is a field of its own, as a message-typed field of a generic message is; a mask
    on it rewrites it whole (``enforce.masking._masked_nodes``): its leaves, the keys in it
    and its length. Only nodes on a path some entry may name or extend are walked
    (``Catalog.may_label_under``). Worked out from each shape's skeleton, per call: labels
    depend on the catalog, never on what a shape remembers."""
    may_label = catalog.may_label_under
    labels_for = catalog.labels_for
    segment = keys.segment
    looked_up: dict[str, frozenset[str]] = {}

    def visit(node: Any, path: str, found: dict[str, frozenset[str]]) -> None:
        labels = looked_up.get(path)
        if labels is None:
            if len(looked_up) >= MAX_JSON_PATHS:
                raise _TooManyNodes
            labels = looked_up[path] = labels_for(model, path)
        if labels:
            found[path] = labels
        walk(node, path, found)

    def walk(node: Any, path: str, found: dict[str, frozenset[str]]) -> None:
        # A skeleton holds dicts, lists and None (every leaf), nested at most MAX_DEPTH deep.
        if type(node) is dict:
            for key, child in node.items():
                if type(child) is dict or type(child) is list:
                    child_path = path + segment(key)
                    if may_label(model, child_path):
                        visit(child, child_path, found)
        else:
            child_path = path + "[]"
            if may_label(model, child_path):
                for child in node:
                    if type(child) is dict or type(child) is list:
                        visit(child, child_path, found)

    result: dict[JsonShape, list[tuple[str, frozenset[str]]]] = {}
    try:
        for shape in shapes:
            found: dict[str, frozenset[str]] = {}
            walk(shape.skeleton, prefix, found)
            if found:
                result[shape] = list(found.items())
    except _TooManyNodes:
        return None
    if result:
        # These paths and the leaves' together, as ``json_objects`` counts the leaves alone.
        paths = {path for nodes in result.values() for path, _ in nodes}
        paths.update(prefix + suffix for shape in shapes for suffix in shape.suffix_set)
        if len(paths) > MAX_JSON_PATHS:
            return None
    return result


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
            _single_hits(hits, singles, scanned_leaves, named, per_element[index], found_labels)
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


def _single_hits(
    hits: tuple[native.LeafHit, ...],
    singles: dict[native.LeafHit, LeafSpans],
    scanned_leaves: tuple[tuple[jsonpaths.Location, str], ...],
    named: dict[int, tuple[str, str]],
    spans: list[LeafSpans],
    found_labels: dict[tuple[str, str, str], None],
) -> None:
    """An element's native hits when no leaf has more than one (nothing to merge: the common
    case), added to ``spans``. A leaf's single hit, as LeafSpans, is remembered per shape in
    ``singles`` (LeafSpans are immutable; one met again adds no new label either)."""
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
