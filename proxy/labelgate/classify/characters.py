"""Integer tensors read as text, a character per element, for the detectors. Pure.

A client turns a tensor of code points back into text with ``chr`` as readily as it reads
a BYTES element, so an upstream can carry an SSN as ``[49, 50, 51, 45, ...]`` in an INT32
output. ``detections`` reads 16-bit tensors as UTF-16 code units (a surrogate pair is one
character) and 32- and 64-bit ones as code points; an element that is no character
(negative, past U+10FFFF, a lone surrogate) reads as a character that joins nothing.

The text is read in two views, each one byte per element so offsets map back to elements
with one search:

- as written: ASCII as it is, anything else a non-ASCII byte (the detectors let no
  non-ASCII neighbour join a value, whichever it is);
- folded (``folding``), a character at a time through a table made once from ``folded``
  itself: other scripts' digits, full-width forms, dashes and spaces of any kind become
  what the detectors read, invisible and control characters are dropped. The few
  characters that fold to more than one (``⒈`` is ``1.``) are spliced in.

Folding character by character is exact for what the detectors read (digits, letters,
separators); NFKC's composition across characters only joins letters and marks. Built-in
detectors only: a custom pattern may read any character, so with one the exact text is
scanned and folded as BYTES text is (``numbers``), as is text holding terminal sequences.
Cost: numpy over the elements, Python only for the rare characters that fold to several
(a 100-id column costs about 10 µs, a 10,000-id column about 0.05 µs an element).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, Final

import numpy as np

from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.folding import CONTROLS, IGNORABLE_RANGES, UNFOLDABLE, folded
from labelgate.classify.json_elements import hidden_by_escapes

# Code points the table covers; past it no character folds to what a detector reads but
# the ignorable tag characters, which are dropped (``_IGNORABLE_TAGS``).
_TABLE_END: Final = 0x20000
_IGNORABLE_TAGS: Final = (0xE0000, 0xE0FFF)
_DROPPED: Final = 0  # NUL: a control character, never kept by folding, so free as a marker
_OTHER: Final = 0x80  # any character read as nothing the detectors match: non-ASCII
_NOT_A_CHARACTER: Final = 0x110000
_ESCAPE, _BACKSPACE = 0x1B, 0x08
_UNSIGNED: Final = {size: np.dtype(f"<u{size}") for size in (2, 4, 8)}
_BUILTIN_NAMES: Final = frozenset(BUILTIN_LABELS)
# The categories ``folding``'s table changes (surrogates, Cs, are no characters).
_FOLDED_CATEGORIES: Final = frozenset({"Nd", "No", "Pd", "Zs", "Cf", "Cc", "Mn", "Me", "Sm"})


@functools.cache
def _folding_table() -> tuple[np.ndarray[Any, Any], dict[int, bytes]]:
    """Per code point below ``_TABLE_END``: the byte it folds to (``_DROPPED``, ``_OTHER``),
    and the code points that fold to several characters with what they fold to (non-ASCII
    characters in it as ``_OTHER``). Made once, from ``folding.folded`` (about 0.05 s)."""
    table = np.full(_TABLE_END, _OTHER, dtype=np.uint8)
    longer: dict[int, bytes] = {}
    ignorable = {code for first, last in IGNORABLE_RANGES for code in range(first, last + 1)}
    for code in range(_TABLE_END):
        char = chr(code)
        # A character without a decomposition is its own NFKC: of those, only the ones the
        # table of ``folding`` changes (or ASCII) can fold to something (``folded`` is slow).
        if not (
            code < 0x80
            or code in ignorable
            or unicodedata.decomposition(char)
            or unicodedata.category(char) in _FOLDED_CATEGORIES
        ):
            continue
        text = char.encode("utf-8")
        form = folded(text)
        if form is UNFOLDABLE:
            continue
        form = text if form is None else form
        if not form:
            table[code] = _DROPPED
        elif len(form) == 1:
            table[code] = form[0]  # ASCII (anything else is more than one byte)
        else:
            shown = bytes(ord(char) if char < "\x80" else _OTHER for char in form.decode("utf-8"))
            if len(shown) > 1 and shown.strip(bytes([_OTHER])):  # several, some ASCII
                longer[code] = shown
    return table, longer


def code_points(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each element's character as an int64 code point, ``_NOT_A_CHARACTER`` for one that is
    none; a UTF-16 pair's second unit as ``-1`` (it adds no character)."""
    if array.dtype == object:  # values the datatype cannot hold (never from the decoder)
        array = np.asarray(
            [v if isinstance(v, int) and 0 <= v < _NOT_A_CHARACTER else -2 for v in array], dtype=np.int64
        )
    if array.dtype.itemsize == 2:
        units = array.view(_UNSIGNED[2]).astype(np.int64)
        high = (units >= 0xD800) & (units <= 0xDBFF)
        low = (units >= 0xDC00) & (units <= 0xDFFF)
        first = np.zeros(units.shape, dtype=bool)
        first[:-1] = high[:-1] & low[1:]
        second = np.zeros(units.shape, dtype=bool)
        second[1:] = first[:-1]
        points = units.copy()
        points[:-1][first[:-1]] = (0x10000 + ((units[:-1] - 0xD800) << 10) + (units[1:] - 0xDC00))[first[:-1]]
        points[(high | low) & ~first & ~second] = _NOT_A_CHARACTER
        points[second] = -1
        return points
    if array.dtype.kind == "u":
        array = np.minimum(array, _NOT_A_CHARACTER)
    points = array.astype(np.int64)
    bad = (points < 0) | (points >= _NOT_A_CHARACTER) | ((points >= 0xD800) & (points <= 0xDFFF))
    points[bad] = _NOT_A_CHARACTER
    return points


def detections(
    array: np.ndarray[Any, Any], detectors: DetectorSet, exact: Callable[[bytes], list[Detection]]
) -> list[Detection]:
    """What ``detectors`` find in ``array`` read as text (the module docstring); offsets are
    elements. ``exact`` scans a UTF-8 text as a BYTES element is (raw, unescaped, folded):
    used for the text itself when a custom pattern, which may read any character, is among
    ``detectors``."""
    found: set[Detection] = set()
    builtins = _BUILTIN_NAMES.issuperset(detectors.names)
    if builtins and array.dtype != object and array.view(_UNSIGNED[array.dtype.itemsize]).max() < 0x80:
        # ASCII (negative numbers read as large): the usual small numbers, a byte each.
        raw = array.astype(np.uint8).tobytes()
        _scan(raw, None, detectors, found)
        shown = raw.translate(None, CONTROLS)
        if b"\x1b" in raw or b"\x08" in raw:  # terminal sequences: as folding reads them
            _map(exact(raw), None, found)
        elif shown != raw:
            kept = np.frombuffer(raw.translate(_CONTROLS_DROPPED), dtype=np.uint8) != _DROPPED
            _scan(shown, kept, detectors, found)
        return sorted(found, key=_order)
    points = code_points(array)
    if not builtins or (points == _ESCAPE).any() or (points == _BACKSPACE).any():
        chars = np.where(points < _NOT_A_CHARACTER, points, 0xFFFD)  # U+FFFD: no character
        exact_text = chars[points >= 0].astype(_UNSIGNED[4]).tobytes().decode("utf-32-le").encode("utf-8")
        sizes = 1 + (chars >= 0x80).astype(np.int64) + (chars >= 0x800) + (chars >= 0x10000)
        sizes[points < 0] = 0
        _map(exact(exact_text), sizes, found)
    else:
        written = np.where(points < 0x80, points, _OTHER).astype(np.uint8)[points >= 0]
        _scan(written.tobytes(), points >= 0, detectors, found)  # a pair's second adds nothing
        text, lengths = _folded_view(points)
        _scan(text, lengths, detectors, found)
    return sorted(found, key=_order)


def _order(hit: Detection) -> tuple[int, str]:
    return hit.start, hit.detector


# ASCII with the controls folding drops as ``_DROPPED``.
_CONTROLS_DROPPED: Final = bytes(_DROPPED if code in CONTROLS else code for code in range(256))


def _folded_view(points: np.ndarray[Any, Any]) -> tuple[bytes, np.ndarray[Any, Any]]:
    table, longer = _folding_table()
    inside = np.minimum(points, _TABLE_END - 1)
    view = np.where(points < _TABLE_END, table[np.maximum(inside, 0)], _OTHER)
    tags = (points >= _IGNORABLE_TAGS[0]) & (points <= _IGNORABLE_TAGS[1])
    view[tags | (points < 0)] = _DROPPED
    lengths = (view != _DROPPED).astype(np.int64)
    spliced = np.flatnonzero(np.isin(points, np.fromiter(longer, dtype=np.int64)))
    if not len(spliced):
        return view[view != _DROPPED].tobytes(), lengths
    parts, start = [], 0
    for index in spliced.tolist():
        part = view[start:index]
        parts.append(part[part != _DROPPED].tobytes())
        form = longer[int(points[index])]
        parts.append(form)
        lengths[index] = len(form)
        start = index + 1
    tail = view[start:]
    parts.append(tail[tail != _DROPPED].tobytes())
    return b"".join(parts), lengths


def _scan(
    text: bytes, sizes: np.ndarray[Any, Any] | None, detectors: DetectorSet, found: set[Detection]
) -> None:
    """Add what ``detectors`` find in ``text`` (and in it with JSON escapes decoded, which
    spans it whole) to ``found``, offsets mapped to elements through ``sizes`` (the bytes of
    ``text`` each element gave; None: one each)."""
    hits = list(detectors.scan_each([text]).get(0, ()))
    if b"\\" in text:
        hits += hidden_by_escapes([text], detectors).get(0, ())
    _map(hits, sizes, found)


def _map(hits: Iterable[Detection], sizes: np.ndarray[Any, Any] | None, found: set[Detection]) -> None:
    ends = None
    for hit in hits:
        if sizes is not None:
            ends = np.cumsum(sizes) if ends is None else ends  # only when something was found
            start = int(np.searchsorted(ends, hit.start, side="right"))
            end = int(np.searchsorted(ends, hit.end - 1, side="right")) + 1
            hit = hit._replace(start=start, end=end)
        found.add(hit)
