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
scanned and folded as BYTES text is (``numbers``).
Nothing is scanned when no form holds a digit or an ``@`` (every built-in match holds one).

The table is ``folding``'s, from the same Unicode data (``folding.UNICODE_VERSION``), with one
difference: a code point that data calls unassigned reads here as a character that joins
nothing, where text holding one fails closed (``folding``). A tensor of ids is read as
characters too, and reads as many of them (27% of the ids below 128,256, an LLM's token
ids, are unassigned): failing each such tensor closed would zero them all. An escape
sequence that moves a terminal's cursor fails the tensor closed as it fails text closed
(every detector spans all of it), when the tensor reads as text (``folding``: a control
character in at most one in ``STRAY`` elements; a segmentation mask's class ids read as
ESC-letter pairs, and as many controls), else reads as a space.

A tensor of rank 2 or more may be a string per row (a fixed-width character array, NUL-padded
or not): with ``width``, each row of that many elements is also read as a text of its own,
``ROW_BREAK`` between rows, since a client reading row by row does not glue the end of one
row to the start of the next (``card 4111111111111111`` then ``7 more``).
Cost: numpy over the elements, Python only for the rare characters that fold to several:
about 15 µs for a 100-id column, 0.04 µs an element for 10,000 (``ids`` of 0..n; ids past
U+10FFFF are no characters, about 4 µs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from labelgate.classify import credentials
from labelgate.classify.decoded_text import STRAY
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.display_order import display_orders_of_points, points_reorder
from labelgate.classify.folding import (
    CONTROLS,
    IGNORABLE_RANGES,
    STYLING_SEQUENCES,
    TERMINAL_SEQUENCES,
    UNFOLDABLE,
    folded,
)
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape, unescaped_forms

if TYPE_CHECKING:
    import unicodedata as unicode_data  # typeshed's stubs: the same functions
else:
    import unicodedata2 as unicode_data  # folding's data

# Code points the table covers; past it no character folds to what a detector reads but
# the ignorable tag characters, which are dropped (``_IGNORABLE_TAGS``).
_TABLE_END: Final = 0x20000
_IGNORABLE_TAGS: Final = (0xE0000, 0xE0FFF)
_DROPPED: Final = 0  # NUL: a control character, never kept by folding, so free as a marker
_OTHER: Final = 0x80  # any character read as nothing the detectors match: non-ASCII
_LONGER: Final = 0x81  # a character folding makes several of (spliced in from ``longer``)
_SPACE: Final = 0x20  # what a cursor movement reads as where it is not failed closed
_NOT_A_CHARACTER: Final = 0x110000
# What ``shown_view`` reads elements as, for readings of one's own (``carried_forms``).
DROPPED: Final = _DROPPED
OTHER: Final = _OTHER
LONGER: Final = _LONGER
SPACE: Final = _SPACE
# Between rows: a newline, which no built-in match holds and folding keeps (NUL, which
# ``scan_each`` puts between texts, would be dropped by folding, gluing the rows again).
ROW_BREAK: Final = 0x0A
_UNSIGNED: Final = {size: np.dtype(f"<u{size}") for size in (2, 4, 8)}
_BUILTIN_NAMES: Final = frozenset(BUILTIN_LABELS)
# The categories ``folding``'s table changes (surrogates, Cs, are no characters).
_FOLDED_CATEGORIES: Final = frozenset({"Nd", "No", "Pd", "Zs", "Cf", "Cc", "Mn", "Me", "Sm"})


@functools.cache
def _folding_table() -> tuple[np.ndarray[Any, Any], dict[int, bytes]]:
    """Per code point below ``_TABLE_END``: the byte it folds to (``_DROPPED``, ``_OTHER``,
    ``_LONGER``), and the code points that fold to several characters with what they fold to
    (non-ASCII characters in it as ``_OTHER``). Made once, from ``folding.folded`` (about 0.07 s)."""
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
            or unicode_data.decomposition(char)
            or unicode_data.category(char) in _FOLDED_CATEGORIES
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
                table[code] = _LONGER
    return table, longer


@functools.cache
def points_reading_as(targets: bytes) -> frozenset[int]:
    """The code points ``detections`` reads as one of the ASCII bytes ``targets`` (as written or
    folded), or as several characters (which may hold one): elements of 32 or 64 bits none of
    which is one show none of ``targets`` in any form. (Past the table no code point reads as
    ASCII.) ``b"0123456789@"``: every built-in match holds one, so with built-in detectors only,
    ``detections`` finds nothing in other elements. Made once per ``targets``."""
    table, _ = _folding_table()
    wanted = np.isin(table, np.frombuffer(targets + bytes([_LONGER]), dtype=np.uint8))
    return frozenset(np.flatnonzero(wanted).tolist())


def text_forms(array: np.ndarray[Any, Any]) -> tuple[bytes, bytes]:
    """``array`` as ``detections`` reads it with built-in detectors, a byte a character: as
    written (ASCII as it is, any other character a byte that joins nothing) and folded
    (``_folded_view``: what folds to several spliced in, what a terminal does not show dropped,
    a cursor movement a space). For a reading of one's own (``messages``: a PEM marker, which,
    unlike what ``detections`` looks for, holds no digit)."""
    points, written, view = shown_view(array)
    return written, _folded_text(view, points)[0]


def shown_view(array: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bytes, np.ndarray[Any, Any]]:
    """``array`` read a character an element as ``text_forms`` reads it, before what folds to
    several is spliced in: its code points (``code_points``), the text as written (a byte a
    character, any non-ASCII one ``OTHER``), and per element the byte it folds to (``OTHER``,
    ``LONGER``; ``DROPPED`` for what a terminal does not show and a pair's second unit,
    ``SPACE`` for a cursor movement). For a reading of one's own (``carried_forms``: where a
    value may begin at the end of a stream's reply)."""
    points = code_points(array)
    characters = np.flatnonzero(points >= 0)  # a pair's second unit is no character
    written = np.where(points < 0x80, points, _OTHER).astype(np.uint8)[characters].tobytes()
    view = _folded_view(points)
    unshown, moves = _unshown(written, characters)
    view[unshown] = _DROPPED
    view[moves] = _SPACE
    return points, written, view


def folds_to(code: int) -> int:
    """The byte one code point folds to as ``shown_view`` reads it on its own (``DROPPED``,
    ``OTHER``, ``LONGER`` or ASCII); ``OTHER`` for a value that is no character."""
    if not 0 <= code < _NOT_A_CHARACTER or 0xD800 <= code <= 0xDFFF:
        return _OTHER
    if code >= _TABLE_END:
        return _DROPPED if _IGNORABLE_TAGS[0] <= code <= _IGNORABLE_TAGS[1] else _OTHER
    return int(_folding_table()[0][code])


def longer_forms() -> dict[int, bytes]:
    """The code points ``shown_view`` reads as ``LONGER``, and what each folds to (a byte a
    character, non-ASCII ones ``OTHER``). Made once; not to be changed."""
    return _folding_table()[1]


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
    array: np.ndarray[Any, Any],
    detectors: DetectorSet,
    exact: Callable[[bytes], list[Detection]],
    raw: bytes | None = None,
    width: int = 0,
) -> list[Detection]:
    """What ``detectors`` find in ``array`` read as text (the module docstring); offsets are
    elements. ``raw``: the array's little-endian bytes, when at hand (the usual small numbers
    are then read without numpy, whose every call costs microseconds on a cold cache).
    ``exact`` scans a UTF-8 text as a BYTES element is (raw, unescaped, folded): used for the
    text itself when a custom pattern, which may read any character, is among ``detectors``.
    ``width``: the length of a row, each also read as a text of its own (0: no rows)."""
    found: set[Detection] = set()
    builtins = _BUILTIN_NAMES.issuperset(detectors.names)
    small = ascii_characters(raw, array.dtype.itemsize) if builtins and raw is not None else None
    if small is not None:
        if _scan_ascii(small, detectors, found) and _several_rows(len(small), width):
            rows: set[Detection] = set()
            _scan_ascii(_with_row_breaks(small, width), detectors, rows)
            found.update(unrowed(hit, width, 1) for hit in rows)
        return sorted(found, key=_order)
    if not array.flags.aligned:  # a raw buffer's slice: numpy reads it ten times slower
        array = array.copy()
    read = _read(array, detectors, exact, builtins, found)
    # A row's own display order may show what the flat reading does not (an override left
    # open in one row runs into the next there, not in a client reading row by row).
    if (
        read is not False
        and _several_rows(len(array), width)
        and (_rows_may_join(read, width) or points_reorder(code_points(array)))
    ):
        breaks = np.full((len(array) // width, 1), ROW_BREAK, dtype=array.dtype)
        rows_array = np.hstack([array.reshape(-1, width), breaks]).ravel()[:-1]
        found.update(unrowed(hit, width, 1) for hit in detections(rows_array, detectors, exact))
    return sorted(found, key=_order)


def _read(
    array: np.ndarray[Any, Any],
    detectors: DetectorSet,
    exact: Callable[[bytes], list[Detection]],
    builtins: bool,
    found: set[Detection],
) -> np.ndarray[Any, Any] | bool:
    """``detections``' reading of ``array`` into ``found``: False when no form was scanned
    (no digit or ``@`` to match, and no custom detector), else the folded view when one was
    made (``_folded_view``), else True."""
    if not builtins:
        points = code_points(array)
        chars = np.where(points < _NOT_A_CHARACTER, points, 0xFFFD)  # U+FFFD: no character
        text = chars[points >= 0].astype(_UNSIGNED[4]).tobytes().decode("utf-32-le").encode("utf-8")
        sizes = 1 + (chars >= 0x80).astype(np.int64) + (chars >= 0x800) + (chars >= 0x10000)
        sizes[points < 0] = 0
        _map(exact(text), sizes, found)
        return True
    if array.dtype != object and (unsigned := array.view(_UNSIGNED[array.dtype.itemsize])).max() < 0x80:
        # ASCII (negative numbers read as large): the usual small numbers, a byte each.
        return _scan_ascii(array.astype(np.uint8).tobytes(), detectors, found)
    if array.dtype == object or unsigned.min() < _NOT_A_CHARACTER:  # else no character at all
        points = code_points(array)
        view = _folded_view(points)
        # Built-in matches hold a digit or an "@", but for a secret's (``_may_hold_secret``):
        # none in any form, nothing to scan.
        may_match = bool(((view >= 0x30) & (view <= 0x39) | (view == 0x40) | (view == _LONGER)).any())
        if not may_match and credentials.NAME in detectors.names:
            may_match = _may_hold_secret(view[view < 0x80].astype(np.uint8).tobytes())
        if may_match:
            characters = np.flatnonzero(points >= 0)  # a pair's second unit is no character
            written = np.where(points < 0x80, points, _OTHER).astype(np.uint8)[characters].tobytes()
            _scan(written, points >= 0, detectors, found)
            unshown, moves = _unshown(written, characters)
            if moves and _reads_as_text(written):
                found.update(_whole(len(array), detectors))
                return True
            view[unshown] = _DROPPED
            view[moves] = _SPACE
            _scan(*_folded_text(view, points), detectors, found)
            _read_in_display_order(points, characters, view, detectors, found)
            return view
    return False


def _read_in_display_order(
    points: np.ndarray[Any, Any],
    characters: np.ndarray[Any, Any],
    view: np.ndarray[Any, Any],
    detectors: DetectorSet,
    found: set[Detection],
) -> None:
    """The folded view (``view``) in each order a reader may see the characters (``points``
    at ``characters``) in, where a right-to-left character or a bidi control may reorder
    them (``display_order``): ``[0x202E, 57, 56, 55, 45, ...]`` shows an SSN written
    backwards forwards, as text does. What such an order shows spans every element, as a
    value only a display order shows spans its text (``shown_text``); a hit zeroes an integer
    tensor whole anyway."""
    every = len(characters) == len(points)  # then ``characters`` is every index, in order
    shown = points if every else points[characters]
    if not points_reorder(shown):
        return
    orders = display_orders_of_points(np.where(shown < _NOT_A_CHARACTER, shown, 0xFFFD))
    if not orders:
        return
    # An order shows each character's folded form (``_folded_text``: its byte, nothing for
    # one dropped, what it folds to when that is several) moved whole: its bytes are the
    # view's gathered in that order, the dropped left out and the longer forms spliced in
    # where their markers are (a C-level translate and split, not numpy passes per byte).
    folded = view if every else view[characters]
    spliced = np.flatnonzero(folded == _LONGER)
    _, longer = _folding_table()
    forms = [longer[code] for code in shown[spliced].tolist()]
    rank = np.zeros(len(folded), dtype=np.int64)
    rank[spliced] = np.arange(len(spliced))
    dropped, marker = bytes((_DROPPED,)), bytes((_LONGER,))
    hits: set[Detection] = set()
    for order in orders:
        in_order = folded[order]
        text = in_order.tobytes().translate(None, dropped)
        if forms:
            pieces = text.split(marker)
            parts = [b""] * (2 * len(pieces) - 1)
            parts[0::2] = pieces
            parts[1::2] = [forms[at] for at in rank[order[in_order == _LONGER]].tolist()]
            text = b"".join(parts)
        _scan(text, None, detectors, hits)
    size = len(points)
    found.update(
        Detection(name, detectors.label_of(name), 0, size) for name in {hit.detector for hit in hits}
    )


def _several_rows(size: int, width: int) -> bool:
    return 1 < width < size and size % width == 0


def _rows_may_join(read: np.ndarray[Any, Any] | bool, width: int) -> bool:
    """Whether reading rows apart may find more than reading them flat: unless the folded
    view (``read``, when made) shows a character that joins nothing (non-ASCII, ``_OTHER``)
    on one side of every row's end, as written and folded alike. A tensor of ids (an LLM's
    token ids) mostly has, and is then read once."""
    if isinstance(read, bool):
        return read
    rows = read.reshape(-1, width)
    ends, starts = rows[:-1, -1], rows[1:, 0]
    return bool(((ends != _OTHER) & (starts != _OTHER)).any())


def _with_row_breaks(text: bytes, width: int) -> bytes:
    """``text`` (a byte an element) with ``ROW_BREAK`` after each row of ``width`` but the last."""
    rows = np.frombuffer(text, dtype=np.uint8).reshape(-1, width)
    breaks = np.full((len(rows), 1), ROW_BREAK, dtype=np.uint8)
    return np.hstack([rows, breaks]).tobytes()[:-1]


def unrowed(hit: Detection, width: int, between: int) -> Detection:
    """``hit``, whose offsets index rows of ``width`` elements with ``between`` more between
    them, with offsets of the elements without those (a break reads as its row's last)."""
    stride = width + between
    first_row, first = divmod(hit.start, stride)
    last_row, last = divmod(hit.end - 1, stride)
    return hit._replace(
        start=first_row * width + min(first, width - 1), end=last_row * width + min(last, width - 1) + 1
    )


def _whole(size: int, detectors: DetectorSet) -> list[Detection]:
    """Every detector spanning ``size`` elements: what text that cannot be read may hide."""
    return [Detection(name, detectors.label_of(name), 0, size) for name in detectors.names]


def ascii_characters(raw: bytes, itemsize: int) -> bytes | None:
    """The characters of ``raw`` (little-endian integers of ``itemsize`` bytes) when each is
    ASCII: its low bytes; else None. Two counts and a slice, no numpy: every byte but the low
    one of each element is zero exactly when the buffer's zeros are those plus the low ones'."""
    if itemsize == 1 or len(raw) % itemsize:
        return None
    low = raw[::itemsize]
    if not low.isascii() or raw.count(0) != len(raw) - len(low) + low.count(0):
        return None
    return low


def _scan_ascii(text: bytes, detectors: DetectorSet, found: set[Detection]) -> bool:
    """``text``, one character an element, as written and folded (its control characters
    and terminal sequences dropped); whether it was scanned (some digit or ``@`` in it, or
    what a secret opens with)."""
    if _MAY_MATCH.search(text) is None and not (
        credentials.NAME in detectors.names and _may_hold_secret(text.translate(None, CONTROLS))
    ):
        return False
    _scan(text, None, detectors, found)
    shown = text.translate(None, CONTROLS)
    if shown == text:
        return True
    kept = np.frombuffer(text.translate(_CONTROLS_DROPPED), dtype=np.uint8) != _DROPPED
    unshown, moves = _unshown(text, np.arange(len(text)))
    if moves and _reads_as_text(text):
        found.update(_whole(len(text), detectors))
        return True
    if unshown:
        kept[unshown] = False
        characters = np.frombuffer(text, dtype=np.uint8).copy()
        characters[moves] = _SPACE
        kept[moves] = True
        shown = characters[kept].tobytes()
    _scan(shown, kept, detectors, found)
    return True


def _order(hit: Detection) -> tuple[int, str]:
    return hit.start, hit.detector


# ASCII with the controls folding drops as ``_DROPPED``.
_CONTROLS_DROPPED: Final = bytes(_DROPPED if code in CONTROLS else code for code in range(256))
# A byte some built-in match needs: a digit or "@" (what cannot match is not scanned), but
# for a secret's: a vendor token, a JWT or a PEM marker may hold neither (``AKIA`` and 16
# capitals: one AWS key id in 28), so what those open with is looked for too.
_MAY_MATCH: Final = re.compile(rb"[0-9@]")
_SECRET_STARTS: Final = (*credentials.PREFIXES, b"PRIVATE")


def _may_hold_secret(text: bytes) -> bool:
    """Whether ``text`` (ASCII as folded, what folding drops left out) holds what a secret
    the ``secret`` detector finds opens with. C-level searches."""
    return any(start in text for start in _SECRET_STARTS)


# ``folding``'s terminal sequences and styling ones, over bytes (they are ASCII).
_TERMINAL: Final = re.compile(TERMINAL_SEQUENCES.pattern.encode("ascii"))
_STYLING: Final = re.compile(STYLING_SEQUENCES.pattern.encode("ascii"))


def _unshown(written: bytes, elements: np.ndarray[Any, Any]) -> tuple[list[int], list[int]]:
    """The elements (``written``'s bytes are those of ``elements``) of what a terminal does not
    show, which folding drops: escape sequences, and a character a backspace steps back over;
    and the first element of each sequence that moves the cursor or edits the screen, which
    folding fails closed in text and reads as a space elsewhere (``folding``)."""
    if b"\x1b" not in written and b"\x08" not in written:
        return [], []
    matches = list(_TERMINAL.finditer(written))
    moves = [
        int(elements[match.start()])
        for match in matches
        if match.group()[0] == 0x1B and _STYLING.match(match.group()) is None
    ]
    spans = [elements[start:end].tolist() for start, end in map(re.Match.span, matches)]
    return [element for span in spans for element in span], moves


def _reads_as_text(written: bytes) -> bool:
    """``decoded_text.reads_as_text`` of ``written`` (a byte per character, non-ASCII ones as
    ``_OTHER``, each counted as text): at most one in ``STRAY`` a control character."""
    return (len(written) - len(written.translate(None, CONTROLS))) * STRAY <= len(written)


def _folded_view(points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per element, the byte it folds to (``_folding_table``)."""
    table, _ = _folding_table()
    inside = np.minimum(points, _TABLE_END - 1)
    view = np.where(points < _TABLE_END, table[np.maximum(inside, 0)], _OTHER).astype(np.uint8, copy=False)
    tags = (points >= _IGNORABLE_TAGS[0]) & (points <= _IGNORABLE_TAGS[1])
    view[tags | (points < 0)] = _DROPPED
    return view


def _folded_text(
    view: np.ndarray[Any, Any], points: np.ndarray[Any, Any]
) -> tuple[bytes, np.ndarray[Any, Any]]:
    """The folded text and the bytes of it each element gave (what folds to several spliced in).
    Placed by numpy: a tensor of ids holds hundreds of such characters (``⒈``, ``½``)."""
    lengths = (view != _DROPPED).astype(np.int64)
    spliced = np.flatnonzero(view == _LONGER)
    if not len(spliced):
        return view[view != _DROPPED].tobytes(), lengths
    _, longer = _folding_table()
    forms = [longer[code] for code in points[spliced].tolist()]
    form_lengths = np.fromiter(map(len, forms), dtype=np.int64, count=len(forms))
    lengths[spliced] = form_lengths
    ends = np.cumsum(lengths)
    text = np.empty(int(ends[-1]), dtype=np.uint8)
    single = lengths == 1
    single[spliced] = False  # a form of one byte is placed with the others below
    text[ends[single] - 1] = view[single]
    # Each form's bytes from where its element's part starts.
    firsts = np.repeat(ends[spliced] - form_lengths, form_lengths)
    within = np.arange(len(firsts)) - np.repeat(np.cumsum(form_lengths) - form_lengths, form_lengths)
    text[firsts + within] = np.frombuffer(b"".join(forms), dtype=np.uint8)
    return text.tobytes(), lengths


def _scan(
    text: bytes, sizes: np.ndarray[Any, Any] | None, detectors: DetectorSet, found: set[Detection]
) -> None:
    """Add what ``detectors`` find in ``text`` (and in it with JSON escapes and character
    references decoded, which spans it whole) to ``found``, offsets mapped to elements
    through ``sizes`` (the bytes of ``text`` each element gave; None: one each)."""
    hits = list(detectors.scan_each([text]).get(0, ()))
    if may_escape(text) and unescaped_forms(text):  # a backslash or reference that decodes
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
