"""PEM blocks followed across a stream request's replies (``CarryOver``'s key following): pure.

A PEM block is followed across a request's replies in the order its text arrives
(``KeyBlocks.cover``): once an element's text opens one it does not close (as written, or in
a form the scan reads), every piece any element of any output brings until its END marker
arrives is inside it, and so are the held bytes such pieces join, whenever they are released
(a caller may print a stream as it arrives). Released text carries no BEGIN marker for such
pieces (a whole JSON object that opened the block was released at once; a block closing in
its own element puts its END before the lines a later element held), so the carry-over says
so: the tensor it releases is a ``CoveredTensor``, whose covered elements the classifier
covers with ``secret``. Only pieces that may spell ``PRIVATE KEY`` (escapes, text to fold)
are read for markers, and only while ``secret`` scans. A BEGIN marker no element's text holds
whole but the request's pieces show read in the order they arrived (``-----BEGIN RSA PRI`` in
one element, ``VATE KEY-----`` in another, of this reply or a later one) opens a block too,
that covers every piece of its reply and each later one until its END marker arrives
(``_split_arrivals``). While a block is open in the request, numbers sent on as they came
(and 8-bit images) are covered whole.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelgate.classify import characters, credentials, jsonpaths, key_blocks, numbers
from labelgate.classify.folding import CONTROLS, may_hide
from labelgate.oip.tensor import Tensor

# A piece may complete a PRIVATE KEY marker begun this many bytes before its start (the
# marker's words, dashes and a PGP "BLOCK"): only then is an open block looked for again.
MARKER_REACH = 64
_KEY_WORDS = b"PRIVATE KEY"
# How many held bytes before a piece are read with it for a PEM marker that may have begun in
# them: a marker's bytes, each written as a JSON escape (six bytes), twice over.
KEY_REACH = 1024
# An element of an output (its name and index), whose text a request's replies carry.
Element = tuple[str, int]
# The block of a BEGIN marker that no element's text holds whole, split across the pieces of
# a request's text in the order they arrived (``_split_arrivals``): no element opened it.
_ARRIVALS: Element = ("", -1)


class CoveredTensor(Tensor):
    """A released tensor some of whose elements a PEM block opened before them runs into: a
    block an earlier reply of the request opened, or another element or output of the same
    reply, that their text does not show (its BEGIN marker was released before, or the
    reply's elements put it after them). ``key_cover``: element index -> how many bytes of
    its text from the start the block covers. The classifier covers them with ``secret``
    (``classifier._covered_elements``)."""

    __slots__ = ("key_cover",)

    def __init__(self, tensor: Tensor, key_cover: dict[int, int]) -> None:
        for name in Tensor.__slots__:
            setattr(self, name, getattr(tensor, name))
        self.key_cover = key_cover


@dataclass
class _Keys:
    """The PEM blocks of one request's text in the order it arrived (``KeyBlocks._keys``)."""

    # Element -> the END markers the blocks its text (released and held) leaves open await.
    open: dict[Element, frozenset[bytes]] = field(default_factory=dict)
    # Elements whose open block's BEGIN marker was released: their later text runs inside it
    # and no longer shows it.
    released: set[Element] = field(default_factory=set)
    # Element -> how many of its held bytes, from the start, a block runs over.
    inside: dict[Element, int] = field(default_factory=dict)


@dataclass
class Piece:
    """What a reply brought for one element, and what of its text was released."""

    position: int  # the output's position in the reply
    element: Element
    piece: bytes
    before: bytes  # up to ``_KEY_REACH`` bytes held before the piece
    held: int  # bytes held before the piece
    released: int = 0
    kept: int = 0  # bytes held after the reply
    # The datatype of wider integers whose bytes do not end in text (``carried_forms``: held
    # back as characters, or released whole with them): read for markers as the classifier
    # reads such bytes (``_binary_forms``), not folded as text is, unless they read as text.
    binary: str | None = None
    forms: list[bytes] | None = None  # ``_binary_forms``, once read
    forms_read: bool = False


class KeyBlocks:
    """The PEM blocks of one stream's requests, followed reply by reply."""

    def __init__(self) -> None:
        # Per request whose text holds a PEM block.
        self._keys: dict[Hashable, _Keys] = {}
        # Per request, the end of its text in the order it arrived that may be the start of
        # a PEM marker (from a dash, at most ``MARKER_REACH`` bytes): ``_split_arrivals``.
        self._arrived: dict[Hashable, bytes] = {}

    def take_all(self) -> dict[Hashable, _Keys]:
        """Every request's blocks (the stream ended), forgetting them."""
        keys, self._keys = self._keys, {}
        self._arrived = {}
        return keys

    def cover(
        self,
        request: Hashable,
        released: list[Tensor],
        pieces: list[Piece],
        flushed: list[Tensor],
        final: bool,
        passed: Sequence[int] = (),
    ) -> list[Tensor]:
        """``released`` with the elements PEM blocks run into marked (``CoveredTensor``), and
        ``flushed`` so in place; the request's blocks brought up to date with this reply.
        ``passed``: the positions of numbers sent on as they came (not carried as text: an
        image, floats), covered whole while a block is open in the reply (their bytes may
        hold its lines; they are not read for its END marker).

        A block is followed in the order the text arrived: one an element's text opens (as it
        is or in a form the scan reads, ``key_blocks.awaited_after``) runs until a piece of
        that element brings its END marker. While any is open, each piece any element of any
        output brings in the reply is inside it (a caller may print the stream as it arrives,
        or each reply's outputs in any order), but for the text of the element that opened it
        while that text is held with its BEGIN marker (its own scan covers it); and so are
        the held bytes such pieces join, whenever they are released. Nothing runs unless a
        piece may spell ``PRIVATE KEY`` (escapes, text to fold) or a block is open.

        A BEGIN marker no element's text holds whole, split across the pieces in the order
        they arrived (over elements, outputs and replies: ``_split_arrivals``), opens a block
        no element does (``_ARRIVALS``): every piece of the reply that completes it is inside
        it, and every later one until a piece brings its END marker."""
        keys = self._keys.get(request)
        split, left = self._split_arrivals(request, pieces, final, keys)
        asked = [entry for entry in pieces if _may_open(entry)]
        if keys is None and not asked and not split:
            return released
        keys = keys if keys is not None else _Keys()
        before = {element for element, awaited in keys.open.items() if awaited}
        released_before = set(keys.released)
        awaited_before = frozenset().union(*(keys.open[element] for element in before))
        if split:
            # Every piece of the reply is inside, as in a block open before it (fail closed:
            # where in the reply's order it opened is the caller's reading); open after it
            # until its END marker arrives.
            keys.open[_ARRIVALS] = left
            before.add(_ARRIVALS)
            awaited_before |= split
        for entry in pieces:
            element = entry.element
            awaited = keys.open.get(element, frozenset())
            if awaited and entry.piece:
                awaited = _run_on(entry, awaited)
            elif not awaited and _may_open(entry):
                awaited = _awaited_after(entry)
            if awaited:
                keys.open[element] = awaited
                if not entry.kept:
                    keys.released.add(element)  # all of its text left: what follows is inside
            else:
                keys.open.pop(element, None)
                keys.released.discard(element)
        opened = before | {element for element, awaited in keys.open.items() if awaited}
        awaited_any = awaited_before.union(*(keys.open.get(element, frozenset()) for element in opened))
        covers: dict[int, dict[int, int]] = {}
        if opened:
            for position in passed:
                if released[position].size:
                    covers[position] = {0: released[position].size}  # one text, covered whole
        for entry in pieces:
            element = entry.element
            inside = keys.inside.pop(element, 0)
            if entry.piece and (bool(opened - {element}) or element in released_before):
                # Through the last END marker it shows as written, else all of it.
                end = _end_as_written(entry.piece, awaited_any) if awaited_any else len(entry.piece)
                inside = entry.held + end
            if inside and entry.released:
                covers.setdefault(entry.position, {})[element[1]] = min(inside, entry.released)
            if inside > entry.released and entry.kept:
                keys.inside[element] = min(inside - entry.released, entry.kept)
        keys.open = {element: awaited for element, awaited in keys.open.items() if awaited}
        if final:
            self._keys.pop(request, None)
            if flushed:
                flushed[:] = covered_flush(flushed, keys)
        elif keys.open or keys.inside:
            self._keys[request] = keys
        else:
            self._keys.pop(request, None)
        if not covers:
            return released
        return [
            CoveredTensor(tensor, covers[position]) if position in covers else tensor
            for position, tensor in enumerate(released)
        ]

    def _split_arrivals(
        self, request: Hashable, pieces: list[Piece], final: bool, keys: _Keys | None
    ) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """The blocks of BEGIN markers that the request's text shows only read in the order
        it arrived (the held start of such a marker, then this reply's pieces in order:
        ``key_blocks.split_markers`` over them), which no element's text holds whole
        (``-----BEGIN RSA PRI`` in one element, ``VATE KEY-----`` in another, in this reply
        or a later one): the END markers awaited by those open during this reply (opened in
        it, or before it: ``_ARRIVALS``), and by those still open after it (their END marker
        not arrived as written). The request's arrival end is kept for the next reply. One
        join of the reply's pieces and C-level searches: most replies hold no ``PRIVATE KEY``."""
        start = self._arrived.pop(request, b"")
        texts = [start, *(entry.piece for entry in pieces if entry.piece)]
        joined = b"".join(texts)
        if not final and b"-" in joined[-MARKER_REACH:]:
            end = joined[-MARKER_REACH:]
            self._arrived[request] = end[end.index(b"-") :]
        earlier = keys.open.get(_ARRIVALS, frozenset()) if keys is not None else frozenset()
        # An END marker ending past the bytes an earlier reply brought (those it read).
        seen = len(start)
        left = {closing for closing in earlier if joined.find(closing, max(0, seen - len(closing) + 1)) < 0}
        opened = set(earlier)
        for _, _, end_at, closing in key_blocks.split_markers(texts, joined):
            opened.add(closing)
            if joined.find(closing, end_at) < 0:
                left.add(closing)
        return frozenset(opened), frozenset(left)


def may_open(before: bytes, piece: bytes) -> bool:
    """Whether ``piece``, after the held bytes ``before``, may complete a PEM marker: ``PRIVATE
    KEY`` as written near it, or escapes or text to fold that may spell one. C-level searches."""
    if not piece:
        return False
    return (
        _KEY_WORDS in before[-MARKER_REACH:] + piece
        or jsonpaths.may_escape(piece)
        or may_hide(piece)
        or jsonpaths.may_escape(before)  # an escape the piece ends
    )


def _may_open(entry: Piece) -> bool:
    """``may_open`` of ``entry``'s piece, or for bytes of wider integers that do not read as
    text (``Piece.binary``), whether a form the classifier reads them in holds ``PRIVATE KEY``
    or an escape that may spell it (``_binary_forms``). Their bytes hold NULs and bytes past
    ASCII, which ``may_open`` asks every form of text about (folding, markup, UTF-16 and
    UTF-32 decoded, a character at a time: about 30 ms for a 16 KB reply of token ids)."""
    if entry.binary is None or not entry.piece:
        return may_open(entry.before, entry.piece)
    if not _may_end_marker(entry.binary, entry.before, entry.piece):
        return False
    forms = _binary_forms(entry)
    if forms is None:
        return may_open(entry.before, entry.piece)
    escaped = any(jsonpaths.may_escape(form) for form in forms[_ESCAPED:])
    return escaped or any(_KEY_WORDS in form for form in forms)


def _may_end_marker(datatype: str, before: bytes, piece: bytes) -> bool:
    """Whether ``piece`` (wider integers' bytes, after the held ones ``before``) may end a PEM
    marker in a form the classifier reads it in (``_binary_forms``): it holds a ``-`` (a
    marker ends in dashes), ``\\`` or ``&`` (an escape that may spell one) as a byte or a
    character (``characters.points_reading_as``, or a UTF-16 pair's unit), or the last
    ``_ESCAPE_REACH`` elements of ``before`` hold a ``\\`` or ``&`` (an escape the piece may
    end). C-level searches and one numpy pass over the piece: a run of full-width digits
    held across replies (``carried_forms.CharacterReader``) is not read again each reply."""
    size = numbers.packed_item_size(datatype)
    edge = before[-_ESCAPE_REACH * size :]
    if any(byte in piece for byte in b"-\\&") or any(byte in edge for byte in b"\\&"):
        return True
    unsigned = np.dtype(f"<u{size}")
    points = _marker_points()
    wanted = points[points <= np.iinfo(unsigned).max].astype(unsigned)
    for data in (piece, edge):
        units = np.frombuffer(data, dtype=unsigned)
        if size == 2 and ((units >= 0xD800) & (units < 0xE000)).any():
            return True  # an astral character: read it
        if np.isin(units, wanted).any():
            return True
    return False


# Elements before a piece an escape it may end begins in (``\u002d``, ``&#x2d;``).
_ESCAPE_REACH = 16


@functools.cache
def _marker_points() -> np.ndarray[Any, Any]:
    """The code points read as ``-``, ``\\`` or ``&`` (or as several characters)."""
    return np.array(sorted(characters.points_reading_as(b"-\\&")), dtype=np.int64)


def _awaited_after(entry: Piece) -> frozenset[bytes]:
    """``key_blocks.awaited_after`` of ``entry``'s text (held bytes, then the piece), in the
    forms the classifier reads it in (``_binary_forms``)."""
    text = entry.before + entry.piece
    forms = _binary_forms(entry) if entry.binary is not None else None
    if forms is None:
        return key_blocks.awaited_after(text)
    return frozenset(awaited for at, form in enumerate(forms) for awaited in _opened(form, at >= _ESCAPED))


def _run_on(entry: Piece, awaited: frozenset[bytes]) -> frozenset[bytes]:
    """``key_blocks.run_on`` of ``entry``'s text (its markers awaited after it), in the forms
    the classifier reads it in (``_binary_forms``)."""
    text = entry.before + entry.piece
    forms = _binary_forms(entry) if entry.binary is not None else None
    if forms is None:
        return key_blocks.run_on(text, awaited)[1]
    end = _end_as_written(text, awaited)
    left = {marker for marker in awaited if marker not in text and not any(marker in form for form in forms)}
    if end < len(text) and (opened := credentials.open_pem(text[end:])) is not None:
        left.add(opened)
    left.update(opened for at, form in enumerate(forms[1:], 1) for opened in _opened(form, at >= _ESCAPED))
    return frozenset(left)


def _end_as_written(text: bytes, awaited: frozenset[bytes]) -> int:
    """How far into ``text`` blocks awaiting ``awaited`` run as it is written: through the last
    of those markers, all of it when one is not there (``key_blocks.run_on``'s first answer,
    without reading the other forms)."""
    end = 0
    for marker in awaited:
        at = text.find(marker)
        if at < 0:
            return len(text)
        end = max(end, at + len(marker))
    return end


def _opened(form: bytes, escapes: bool) -> list[bytes]:
    """The END markers a block ``form`` opens and leaves open awaits (``credentials.open_pem``;
    with ``escapes``, its escapes decoded too, each read in every form:
    ``key_blocks.awaited_after``)."""
    found = [awaited] if (awaited := credentials.open_pem(form)) is not None else []
    if escapes and jsonpaths.may_escape(form):
        for decoded in jsonpaths.unescaped_forms(form):
            found += key_blocks.awaited_after(decoded)
    return found


# The first of ``_binary_forms`` whose escapes the classifier decodes (its characters'; it
# reads the raw bytes of binary data raw and without control characters only).
_ESCAPED = 2


def _binary_forms(entry: Piece) -> list[bytes] | None:
    """The forms the classifier reads ``entry``'s text (held bytes, then the piece: whole
    elements of ``entry.binary``) in when those bytes do not read as text
    (``numbers.packed_detections``, ``characters.text_forms``): as they are, without control
    characters, and a character an element, as written and folded (escapes decoded in those
    two, from ``_ESCAPED`` on). None when they read as
    text (then in every form text is read in). C-level passes and numpy over the elements:
    the cost of a small reply, a few per kilobyte."""
    if entry.forms_read or entry.binary is None:
        return entry.forms
    entry.forms_read = True
    text = entry.before + entry.piece
    size = numbers.packed_item_size(entry.binary)
    count = len(text) // size
    if len(text) % size:
        return None
    reading = numbers.packed_reading(Tensor.decoded("", entry.binary, [count], text, count, list))
    if reading is not None and reading[1]:
        return None
    units = np.frombuffer(text, dtype=numbers.NUMBER_DTYPES[entry.binary])
    entry.forms = [text, text.translate(None, CONTROLS), *characters.text_forms(units)]
    return entry.forms


def covered_flush(tensors: list[Tensor], keys: _Keys | None) -> list[Tensor]:
    """Tensors of held text released whole (``_flushed``), marked where a block runs over
    their held bytes (``_Keys.inside``)."""
    if keys is None or not keys.inside:
        return tensors
    marked: list[Tensor] = []
    for tensor in tensors:
        covers = {index: inside for (name, index), inside in keys.inside.items() if name == tensor.name}
        marked.append(CoveredTensor(tensor, covers) if covers else tensor)
    return marked
