"""JSON-object elements masked in Rust (the optional ``labelgate_native`` extension).

For an element of a shape the classifier knew (the bytes it read, see
``masking._known_nodes``), ``proxy/native/src/json_mask.rs`` reads it again, masks the leaves
masks name (by a stronger mask of a span in one, as ``masking._leaf_spans``) and the detector
spans in the others, and writes it as ``jsonpaths.dumps`` does:
the same bytes as ``masking._mask_json``. It masks what is common and exact (``partial``,
``redact`` and ``null`` on string, integer, boolean and null leaves and on spans) and answers
None for anything else (``hash``, floats, a masked object or array, text that would not be
UTF-8, an element it does not read as Python does), for which ``_mask_json`` runs as before.

One call per tensor: per shape a plan (the ordinal of each masked leaf, and the shape's
skeleton signature, which the element must match); the extension walks the classified
elements itself (no Python per element), writes what it masks and names what it leaves.
``LABELGATE_NATIVE=0`` or no extension: the Python path alone.
``tests/enforce/test_native_json_mask.py`` compares both paths byte for byte.
"""

from __future__ import annotations

from typing import Protocol, cast

from labelgate.classify.detectors import Detection
from labelgate.classify.fields import LeafSpans
from labelgate.classify.jsonpaths import JsonShape, Location, native_signature
from labelgate.enforce.strategies import Mask
from labelgate.memo import BoundedMemo
from labelgate.native import NativeSwitch, raise_if_panic
from labelgate.oip.native import MAX_KEEP_LAST

# A plan: the shape's leaf ordinals by location, (leaf ordinal, mask index) per masked
# leaf, the skeleton signature. A mask: (strategy code, keep_last, replacement, rank).
PlanArgs = tuple[dict[Location, int], list[tuple[int, int]], bytes]
MaskArgs = tuple[int, int, bytes, int]
MaskedNode = tuple[Location, Mask]

# Strategy codes of ``json_mask.rs``; PYTHON: left to the Python path (hash's HMAC).
_CODES = {"null": 0, "redact": 1, "hash": 2, "partial": 3}
PYTHON = 2
# Per shape (identity), its ordinals and skeleton signature (None: a key with a lone
# surrogate, never native). Bounded by shapes and by the leaves they hold together: the
# classifier does not keep wide shapes, so a wide element brings a new shape on every call,
# and each entry keeps its shape alive. A shape wider than SHAPE_MEMO_MAX_LEAVES is worked
# out per call and not kept.
SHAPE_MEMO_SIZE = 256
SHAPE_MEMO_LEAVES = 32_768
SHAPE_MEMO_MAX_LEAVES = 1024
_SHAPES: BoundedMemo[JsonShape, tuple[dict[Location, int], bytes] | None] = BoundedMemo(
    SHAPE_MEMO_SIZE, SHAPE_MEMO_LEAVES, SHAPE_MEMO_MAX_LEAVES
)


class MaskKernel(Protocol):
    """The part of ``labelgate_native`` used here."""

    def mask_json(
        self,
        values: list[bytes],
        masked: list[bytes],
        objects: dict[int, list[LeafSpans]],
        shapes: dict[int, tuple[bytes, JsonShape]],
        plans: dict[JsonShape, int],
        plan_args: list[PlanArgs],
        masks: list[MaskArgs],
        span_masks: dict[str, int],
        nested: bool,
        kinds: tuple[type, type],
        /,
    ) -> list[int]: ...

    def json_detectors(
        self, objects: dict[int, list[LeafSpans]], kinds: tuple[type, type], /
    ) -> set[str] | None: ...


_SWITCH: NativeSwitch[MaskKernel] = NativeSwitch(
    lambda module: hasattr(module, "mask_json") and hasattr(module, "json_detectors")
)
# The types whose fields the extension reads by position (anything else: Python reads it).
_KINDS = (LeafSpans, Detection)
available = _SWITCH.available
forced = _SWITCH.forced


def active() -> bool:
    """Whether JSON elements are masked through the extension now."""
    return _SWITCH.on


def detectors(objects: dict[int, list[LeafSpans]]) -> set[str] | None:
    """The detectors of every detection in ``objects`` (one tensor's ``json_elements``),
    each shared ``LeafSpans`` read once; None when the extension is off or not sure."""
    if not _SWITCH.on:
        return None
    try:
        return cast(MaskKernel, _SWITCH.kernel).json_detectors(objects, _KINDS)
    except BaseException as error:
        raise_if_panic(error)
        raise


class JsonPlans:
    """What masks do to each shape of one tensor's JSON elements (``add``), then the one
    native call that masks its elements of those shapes (``run``)."""

    __slots__ = ("_args", "_mask_ids", "_masks", "_plans", "_span_masks")

    def __init__(self, span_masks: dict[str, Mask]) -> None:
        self._masks: list[Mask] = []
        self._mask_ids: dict[int, int] = {}  # id(mask) -> its index: a Mask is not hashable
        self._span_masks = {name: self._mask_index(mask) for name, mask in span_masks.items()}
        self._plans: dict[JsonShape, int] = {}
        self._args: list[PlanArgs] = []

    def add(self, shape: JsonShape, nodes: list[MaskedNode]) -> None:
        """Plan ``shape``, whose masked nodes are ``nodes``, unless a node is not a leaf
        (an object, an array, the root) or is hashed: its elements stay Python's."""
        known = _shape_of(shape)
        if known is None:
            return
        ordinals, skeleton = known
        masked = []
        for location, mask in nodes:
            ordinal = ordinals.get(location)
            if ordinal is None or mask.strategy == "hash":
                return
            masked.append((ordinal, self._mask_index(mask)))
        self._plans[shape] = len(self._args)
        self._args.append((ordinals, masked, skeleton))

    def run(
        self,
        values: list[bytes],
        masked: list[bytes],
        objects: dict[int, list[LeafSpans]],
        shapes: dict[int, tuple[bytes, JsonShape]],
        nested: bool,
    ) -> list[int]:
        """Mask into ``masked`` the elements of ``objects`` the extension masks (see
        ``json_mask.rs``: as ``masking._mask_json`` would, element for element); the
        indices of the others, which the caller masks in Python."""
        if not self._plans:
            return list(objects)
        strengths = sorted({mask.strength() for mask in self._masks})
        masks = [(*_code(mask), strengths.index(mask.strength())) for mask in self._masks]
        try:
            return cast(MaskKernel, _SWITCH.kernel).mask_json(
                values,
                masked,
                objects,
                shapes,
                self._plans,
                self._args,
                masks,
                self._span_masks,
                nested,
                _KINDS,
            )
        except BaseException as error:
            raise_if_panic(error)
            raise

    def _mask_index(self, mask: Mask) -> int:
        index = self._mask_ids.get(id(mask))
        if index is None:
            index = self._mask_ids[id(mask)] = len(self._masks)
            self._masks.append(mask)
        return index


def _code(mask: Mask) -> tuple[int, int, bytes]:
    """(strategy code, keep_last, replacement) of a mask for the extension."""
    try:
        replacement = mask.replacement.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Python's to refuse or escape
        return PYTHON, 0, b""
    return _CODES[mask.strategy], min(mask.keep_last, MAX_KEEP_LAST), replacement


def _shape_of(shape: JsonShape) -> tuple[dict[Location, int], bytes] | None:
    """The leaf ordinal of each location of ``shape``, and its skeleton signature."""
    try:  # one lookup: another thread may clear the memo in between two
        return _SHAPES.entries[shape]
    except KeyError:
        pass
    known: tuple[dict[Location, int], bytes] | None
    try:
        known = (
            {location: ordinal for ordinal, location in enumerate(shape.locations)},
            native_signature(shape.skeleton),
        )
    except UnicodeEncodeError:  # a key with a lone surrogate: the reader refuses those
        known = None
    _SHAPES.put(shape, known, len(shape.locations))
    return known
