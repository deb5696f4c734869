"""The enforce stage for inference outputs: apply the policy's masks to tensors. Pure.

Path kinds (``docs/ARCHITECTURE.md``):

- ``outputs.<t>``: every element. Numeric tensors become zeros whatever the strategy
  (datatype and shape never change); BYTES elements are masked whole.
- ``outputs.<t>{<detector>}``: only what the detector found. In a plain-text element the
  spans are rewritten and the rest stays readable; in a JSON element the spans inside
  its string leaves are rewritten and the element re-serialized, so it stays valid JSON.
  In a numeric tensor (``classify.numbers``) part of a number is never rewritten: the
  whole tensor becomes zeros, as for ``outputs.<t>``.
- ``outputs.<t>[].<key>...``: that node of every JSON element (a leaf, or a whole
  object / array), re-serialized as JSON; ``null`` writes JSON ``null``. Keys are spelled
  as the classifier spelled them (``Classification.json_keys``): ``.<key:xxxxxxxx>`` for a
  key the catalog does not name.
- ``outputs.<t>{opaque-json}``: every element that opened like a JSON object but was not
  classified key by key, whole. Nested masks cannot find their nodes in such an element,
  so the most protective mask that may name a path inside the tensor's elements rewrites
  it whole as well; so does a ``{detector}`` mask for what was found in it.

A mask on a whole value (an output, a JSON node) never shows more of a part of it than that
part's own mask (``strategies.covering``): an element holding a span or node whose mask the
value's does not cover (``partial`` would keep the last characters of a secret the policy
nulls) is masked whole by the most protective of those instead.

Mask paths may use ``*``/``?`` globs. A mask that matches nothing is a no-op. Whatever
cannot be applied safely fails closed: an element that no longer parses as the JSON it
was classified as, or a span that does not fit, becomes empty; a tensor whose element
count differs from the classification, or that was never classified, is emptied whole
when a partial mask targets it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

from labelgate.classify import jsonpaths
from labelgate.classify.catalog import OUTPUTS_PREFIX, may_extend
from labelgate.classify.detectors import Detection
from labelgate.classify.fields import OPAQUE_JSON, Classification, LeafSpans
from labelgate.classify.jsonpaths import JsonShape
from labelgate.enforce import native as json_native
from labelgate.enforce.compiled import MaskLike, compile_masks
from labelgate.enforce.native import MaskedNode
from labelgate.enforce.strategies import (
    Mask,
    Masker,
    MaskIndex,
    _partial,
    covering,
    replace_spans,
    zero_of,
)
from labelgate.enforce.whole import mask_whole_bytes
from labelgate.oip import native
from labelgate.oip.tensor import Tensor

_DETECTOR = attrgetter("detector")
_DETECTIONS = attrgetter("detections")
_SHAPE = itemgetter(1)  # of a (classified bytes, shape) pair


def apply_masks(
    tensors: Sequence[Tensor],
    classification: Classification,
    masks: Iterable[MaskLike],
    hash_key: bytes,
) -> list[Tensor]:
    """Masked copies of ``tensors``; never mutates them. Unmasked tensors are returned as is."""
    compiled, index = compile_masks(masks)
    if not index:
        return list(tensors)
    mask_list = list(compiled)
    masker = Masker(hash_key, mask_list)
    return [_mask_tensor(tensor, classification, index, masker, mask_list) for tensor in tensors]


def _mask_tensor(
    tensor: Tensor, classification: Classification, index: MaskIndex, masker: Masker, masks: list[Mask]
) -> Tensor:
    base = OUTPUTS_PREFIX + tensor.name
    whole = index.lookup(base)
    if tensor.datatype != "BYTES":
        if whole is None and not _masks_numbers(tensor, classification, index, base):
            return tensor
        return tensor.with_values([zero_of(tensor.datatype)] * tensor.size)
    if whole is not None:
        if whole.strategy == "null" or not (index.any_under(base + "{") or index.any_under(base + "[]")):
            return mask_whole_bytes(tensor, whole, masker)  # the usual case: nothing under it
        return _mask_whole_covering(tensor, classification, whole, index, masker, masks)

    text_spans = classification.spans.get(tensor.name, {})
    objects = classification.json_elements.get(tensor.name, {})
    # Every detector found in the tensor (attribute getters and chains: no Python per hit).
    detectors = set(map(_DETECTOR, chain.from_iterable(text_spans.values())))
    in_objects = json_native.detectors(objects) if objects else None  # None: off or unsure
    if in_objects is None:
        detectors.update(
            map(_DETECTOR, chain.from_iterable(map(_DETECTIONS, chain.from_iterable(objects.values()))))
        )
    else:
        detectors |= in_objects
    span_masks = {name: mask for name in detectors if (mask := index.lookup(f"{base}{{{name}}}")) is not None}
    nested = index.any_under(base + "[]")
    if not span_masks and not nested and not _targets_spans(index, base):
        return tensor  # no mask reaches it: its elements are not even looked at
    values = tensor.byte_elements()
    if classification.element_counts.get(tensor.name) != len(values):
        # Spans index the elements that were classified; on any other elements they could
        # miss what they should hide.
        return tensor.with_values([b""] * len(values))

    masked = list(values)
    inside = _strongest_inside(masks, base + "[]") if nested else None
    # The single-hit partial masks of the whole tensor in one native call; the elements it
    # leaves (anything else, or the extension off) take the loop below, as before.
    left = None
    if text_spans:
        # OPAQUE_JSON spans are never the usual element: left out of both, they stay Python's.
        partial = {
            name: mask.keep_last
            for name, mask in span_masks.items()
            if mask.strategy == "partial" and name != OPAQUE_JSON
        }
        unmasked = detectors - span_masks.keys() - {OPAQUE_JSON}
        left = native.partial_spans(values, masked, text_spans, partial, unmasked, Detection)
    for position in text_spans if left is None else left:
        found = text_spans[position]
        if len(found) == 1 and found[0].detector != OPAQUE_JSON:  # the usual text element
            hit = found[0]
            only = span_masks.get(hit.detector)
            if only is not None:
                # What partial_spans left (not ASCII, out of bounds, another strategy, off).
                rewritten = replace_spans(values[position], [(hit.start, hit.end, only)], masker)
                masked[position] = b"" if rewritten is None else rewritten
            continue
        selected = [
            (hit.start, hit.end, span_masks[hit.detector]) for hit in found if hit.detector in span_masks
        ]
        opaque = bool(found) and found[-1].detector == OPAQUE_JSON  # the classifier puts it last
        if opaque and inside is not None:
            selected.append((found[-1].start, found[-1].end, inside))
        if not selected:
            continue
        if opaque:
            masked[position] = _mask_whole(values[position], found[-1].end, selected, masker)
        else:
            rewritten = replace_spans(values[position], selected, masker)
            masked[position] = b"" if rewritten is None else rewritten
    if objects and (span_masks or nested):
        keys = classification.json_keys or jsonpaths.KeyNames()
        shapes = classification.json_shapes.get(tensor.name, {})
        _mask_objects(values, masked, objects, shapes, keys, base + "[]", nested, index, span_masks, masker)
    return tensor.with_values(masked)


def _mask_whole_covering(
    tensor: Tensor,
    classification: Classification,
    whole: Mask,
    index: MaskIndex,
    masker: Masker,
    masks: list[Mask],
) -> Tensor:
    """``tensor`` (BYTES) masked whole by ``whole``, when masks also name parts of its
    elements (detector spans, JSON nodes): an element holding a part whose mask ``whole``
    does not cover (``strategies.covering``) is masked whole by the most protective of those
    instead. Unless the elements are those classified: then which element holds what is not
    known, and the most protective mask that may name any part covers them all."""
    base = OUTPUTS_PREFIX + tensor.name
    values = tensor.byte_elements()
    if classification.element_counts.get(tensor.name) != len(values):
        parts = [
            mask for mask in masks if may_extend(mask.path, base + "{") or may_extend(mask.path, base + "[]")
        ]
        return mask_whole_bytes(tensor, covering(whole, parts), masker)
    text_spans = classification.spans.get(tensor.name, {})
    objects = classification.json_elements.get(tensor.name, {})
    shapes = classification.json_shapes.get(tensor.name, {})
    segment = (classification.json_keys or jsonpaths.KeyNames()).segment
    stronger: dict[int, Mask] = {}
    for position in dict.fromkeys(chain(text_spans, objects)):
        hits = list(text_spans.get(position, ()))
        hits += chain.from_iterable(map(_DETECTIONS, objects.get(position, ())))
        inner: list[Mask | None] = [index.lookup(f"{base}{{{hit.detector}}}") for hit in hits]
        if position in objects or any(hit.detector == OPAQUE_JSON for hit in hits):
            inner += _nodes_within(values[position], shapes.get(position), base + "[]", index, segment, masks)
        chosen = covering(whole, inner)
        if chosen is not whole:
            stronger[position] = chosen
    masked = mask_whole_bytes(tensor, whole, masker)
    if not stronger:
        return masked
    result = list(masked.byte_elements())
    for position, mask in stronger.items():
        result[position] = masker.raw(values[position], mask)
    return tensor.with_values(result)


def _nodes_within(
    raw: bytes,
    shaped: tuple[bytes, JsonShape] | None,
    prefix: str,
    index: MaskIndex,
    segment: Callable[[str], str],
    masks: list[Mask],
) -> list[Mask]:
    """The masks naming nodes of the JSON element ``raw`` (the root included), found in its
    shape when it is the element classified; else every mask that may name one (fail closed)."""
    if shaped is None or not (raw is shaped[0] or raw == shaped[0]):
        strongest = _strongest_inside(masks, prefix)
        return [] if strongest is None else [strongest]
    root = index.lookup(prefix)
    return _masks_below(shaped[1].skeleton, prefix, index, segment, [] if root is None else [root])


def _mask_objects(
    values: list[bytes],
    masked: list[bytes],
    objects: dict[int, list[LeafSpans]],
    shapes: dict[int, tuple[bytes, JsonShape]],
    keys: jsonpaths.KeyNames,
    prefix: str,
    nested: bool,
    index: MaskIndex,
    span_masks: dict[str, Mask],
    masker: Masker,
) -> None:
    """Mask the JSON-object elements of one tensor into ``masked``: with the extension on,
    those it can mask exactly in one native call (``enforce.native``), the rest here."""
    known_of: dict[JsonShape, KnownNodes] = {}  # where masks land, per shape
    left: Iterable[int] = objects
    if json_native.active() and shapes:
        plans = json_native.JsonPlans(span_masks)
        for shape in dict.fromkeys(map(_SHAPE, shapes.values())):  # each distinct shape once
            plans.add(shape, _shape_nodes(shape, prefix, index, keys, known_of)[0])
        left = plans.run(values, masked, objects, shapes, nested)
    for position in left:
        leaves = objects[position]
        if nested or any(hit.detector in span_masks for leaf in leaves for hit in leaf.detections):
            raw = values[position]
            known = _known_nodes(raw, shapes.get(position), prefix, index, keys, known_of)
            masked[position] = _mask_json(raw, prefix, leaves, index, span_masks, masker, keys, known)


# The masked nodes of one shape, and which of them each leaf location lies in (-1: none;
# filled as asked).
KnownNodes = tuple[list[MaskedNode], dict[jsonpaths.Location, int]]


def _known_nodes(
    raw: bytes,
    shaped: tuple[bytes, JsonShape] | None,
    prefix: str,
    index: MaskIndex,
    keys: jsonpaths.KeyNames,
    known_of: dict[JsonShape, KnownNodes],
) -> KnownNodes | None:
    """The nodes masks name in ``raw``, from its shape, when ``raw`` is exactly the element
    the classifier read (then it has that shape); None otherwise (read it again)."""
    if shaped is None or not (raw is shaped[0] or raw == shaped[0]):
        return None
    return _shape_nodes(shaped[1], prefix, index, keys, known_of)


def _shape_nodes(
    shape: JsonShape,
    prefix: str,
    index: MaskIndex,
    keys: jsonpaths.KeyNames,
    known_of: dict[JsonShape, KnownNodes],
) -> KnownNodes:
    """The nodes masks name in every element of ``shape`` (remembered in ``known_of``)."""
    known = known_of.get(shape)
    if known is None:
        nodes = (
            _masked_nodes(shape.skeleton, prefix, (), index, keys.segment) if index.may_name(prefix) else []
        )
        known = known_of[shape] = (nodes, {})
    return known


def _strongest_inside(masks: list[Mask], prefix: str) -> Mask | None:
    """The most protective mask that may name a node inside the elements (``prefix`` is
    ``outputs.<t>[]``): what an opaque element, whose nodes cannot be found, gets whole."""
    inside = [mask for mask in masks if may_extend(mask.path, prefix)]
    return min(inside, key=Mask.strength) if inside else None


def _mask_whole(
    raw: bytes, classified_size: int, selected: list[tuple[int, int, Mask]], masker: Masker
) -> bytes:
    """An opaque element under the most protective of its masks; emptied if it is not the
    element that was classified (its size changed), since its content was never mapped."""
    if len(raw) != classified_size:
        return b""
    return masker.raw(raw, min((mask for _, _, mask in selected), key=Mask.strength))


def _masks_numbers(tensor: Tensor, classification: Classification, index: MaskIndex, base: str) -> bool:
    """Whether a ``{detector}`` mask reaches a numeric tensor: one names a detector found in
    it (``classify.numbers``; part of a number is never rewritten, so it is zeroed whole),
    or targets one whose elements were not those classified (never scanned: fail closed)."""
    classified = classification.element_counts.get(tensor.name) == tensor.size
    found = classification.spans.get(tensor.name)
    if classified and not found:
        return False  # the usual numeric tensor: nothing found, no mask to look up
    if not _targets_spans(index, base):
        return False
    if not classified or found is None:
        return not classified
    names = set(map(_DETECTOR, chain.from_iterable(found.values())))
    return any(index.lookup(f"{base}{{{name}}}") is not None for name in names)


def _targets_spans(index: MaskIndex, base: str) -> bool:
    """A ``{detector}`` mask for a tensor with no detections is a no-op, but still needs the
    element-count check: a tensor missing from the classification was never scanned."""
    return index.any_under(base + "{")


def _mask_json(
    raw: bytes,
    prefix: str,
    leaves: list[LeafSpans],
    index: MaskIndex,
    span_masks: dict[str, Mask],
    masker: Masker,
    keys: jsonpaths.KeyNames,
    known: KnownNodes | None = None,
) -> bytes:
    """``raw`` with the nodes masks name and the spans of ``leaves`` masked, re-serialized;
    ``raw`` itself when nothing in it is masked. ``known``: the masked nodes, when the
    element's shape gave them (``_known_nodes``)."""
    if known is not None:
        nodes, under = known
        nodes, spans = _leaf_spans(leaves, span_masks, nodes, under)
        if not nodes and not spans:
            return raw  # as the walk below would find: nothing to mask
        parsed = jsonpaths.parse_classified(raw)
        if parsed is not None:
            return _rewrite(raw, parsed, nodes, spans, masker)
    parsed = jsonpaths.parse_object(raw)
    if parsed is None:
        return b""  # classified as a JSON object but no longer one: never guess
    nodes = _masked_nodes(parsed, prefix, (), index, keys.segment) if index.may_name(prefix) else []
    nodes, spans = _leaf_spans(leaves, span_masks, nodes, {})
    return _rewrite(raw, parsed, nodes, spans, masker)


LeafSelection = tuple[jsonpaths.Location, list[tuple[int, int, Mask]]]


def _leaf_spans(
    leaves: list[LeafSpans],
    span_masks: dict[str, Mask],
    nodes: list[MaskedNode],
    under: dict[jsonpaths.Location, int],
) -> tuple[list[MaskedNode], list[LeafSelection]]:
    """``nodes``, each masked instead by the most protective mask of the spans inside it
    that its own mask does not cover (``strategies.covering``: a ``partial`` node would show
    the last characters of a secret found in it); and per leaf outside every masked node, in
    order, the spans its masks select (if any). ``under`` remembers which masked node a
    location lies in (-1: none), per shape."""
    result = []
    chosen = nodes
    for leaf in leaves:
        selected = [
            (hit.start, hit.end, span_masks[hit.detector])
            for hit in leaf.detections
            if hit.detector in span_masks
        ]
        if not selected:
            continue
        location = leaf.location
        if nodes:
            inside = under.get(location)
            if inside is None:
                inside = under[location] = next(
                    (number for number, (done, _) in enumerate(nodes) if location[: len(done)] == done), -1
                )
            if inside >= 0:
                node, mask = chosen[inside]
                stronger = covering(mask, [span_mask for _, _, span_mask in selected])
                if stronger is not mask:
                    chosen = list(chosen) if chosen is nodes else chosen
                    chosen[inside] = (node, stronger)
                continue
        result.append((location, selected))
    return chosen, result


def _rewrite(
    raw: bytes, parsed: Any, nodes: list[MaskedNode], spans: list[LeafSelection], masker: Masker
) -> bytes:
    """``parsed`` (the object ``raw`` holds) with ``nodes`` and then ``spans`` masked, as JSON;
    ``raw`` if nothing was; empty if a span cannot be applied (never guess)."""
    result = _apply_nodes(parsed, nodes, masker)
    done: list[jsonpaths.Location] = []
    for location, selected in spans:
        if done and any(location[: len(leaf)] == leaf for leaf in done):
            continue
        if not _mask_leaf_spans(result, location, selected, masker):
            return b""
        done.append(location)
    if not nodes and not done:
        return raw
    return jsonpaths.dumps(result)


def _masked_nodes(
    value: Any,
    path: str,
    location: jsonpaths.Location,
    index: MaskIndex,
    segment: Callable[[str], str],
    found: list[MaskedNode] | None = None,
) -> list[MaskedNode]:
    """Every node a mask names, with its mask, in document order (a masked node is not
    descended). Reads keys and array lengths only, so an element's shape (leaves ``None``)
    gives the same answer as the element.

    Only nodes at ``path`` for which ``index.may_name(path)`` are visited: below any other
    node no mask applies, so most of a document is never walked. ``segment`` spells a key
    as the classifier did, so a mask reaches the node whose path it names.
    """
    found = [] if found is None else found
    mask = index.lookup(path)
    if mask is not None:
        # Masked whole, with whatever masks name inside it (``strategies.covering``).
        found.append((location, covering(mask, _masks_below(value, path, index, segment, []))))
        return found
    may_name = index.may_name
    if isinstance(value, dict):
        for key, child_value in value.items():
            child = path + segment(key)
            if may_name(child):
                _masked_nodes(child_value, child, (*location, key), index, segment, found)
    elif isinstance(value, list):
        child = f"{path}[]"
        if may_name(child):
            for position, item in enumerate(value):
                _masked_nodes(item, child, (*location, position), index, segment, found)
    return found


def _masks_below(
    value: Any, path: str, index: MaskIndex, segment: Callable[[str], str], found: list[Mask]
) -> list[Mask]:
    """``found`` plus every mask naming a node strictly inside ``value`` (at ``path``), as
    ``_masked_nodes`` walks: only where ``index.may_name`` says one may be."""
    may_name = index.may_name
    if isinstance(value, dict):
        children: Iterable[tuple[str, Any]] = ((path + segment(key), child) for key, child in value.items())
    elif isinstance(value, list):
        child_path = f"{path}[]"
        children = ((child_path, child) for child in value) if value and may_name(child_path) else ()
    else:
        return found
    for child_path, child in children:
        if may_name(child_path):
            mask = index.lookup(child_path)
            if mask is not None:
                found.append(mask)
            _masks_below(child, child_path, index, segment, found)
    return found


def _apply_nodes(root: Any, nodes: list[MaskedNode], masker: Masker) -> Any:
    """``root`` with each node of ``nodes`` masked, in place (nodes never nest)."""
    for location, mask in nodes:
        if not location:
            return masker.json_value(root, mask)  # the whole element: nothing else was visited
        container = root
        for step in location[:-1]:
            container = container[step]
        value = container[location[-1]]
        # A partial mask on a string (the usual masked leaf) is what json_value ends in.
        container[location[-1]] = (
            _partial(value, mask.keep_last)
            if type(value) is str and mask.strategy == "partial"
            else masker.json_value(value, mask)
        )
    return root


def _mask_leaf_spans(
    root: Any, location: jsonpaths.Location, spans: list[tuple[int, int, Mask]], masker: Masker
) -> bool:
    """Rewrite spans inside the string (or integer) at ``location``; False if it is not there."""
    container = root
    for step in location[:-1]:
        if not _has(container, step):
            return False
        container = container[step]
    if not location or not _has(container, location[-1]):
        return False
    text = jsonpaths.scannable(container[location[-1]])
    if text is None:
        return False
    rewritten = replace_spans(text.encode("utf-8", "surrogatepass"), spans, masker)
    if rewritten is None:
        return False
    try:
        container[location[-1]] = rewritten.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def _has(container: Any, step: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(step, str) and step in container
    if isinstance(container, list):
        return isinstance(step, int) and 0 <= step < len(container)
    return False
