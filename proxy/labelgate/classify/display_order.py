"""Text in the order a reader sees it: the Unicode Bidirectional Algorithm (UAX #9). Pure.

A renderer (a browser, a GUI toolkit, a bidi-aware terminal) does not show text in the order
it is stored: right-to-left runs are shown reversed. ``ssn \\u202e9876-54-321\\u202c`` (a
RIGHT-TO-LEFT OVERRIDE to its POP DIRECTIONAL FORMATTING) shows as ``ssn 123-45-6789``, and
without any control character a Hebrew or Arabic letter (or an invisible RIGHT-TO-LEFT
MARK) before ``1114 1111 1111 1111`` shows the four groups in reverse order, a card. Read as
stored, neither is a value. ``display_orders`` gives the orders a reader may see such text
in (``reorders``: text holding a character that can change its order, a bidi control or a
right-to-left character), each a permutation of its characters; ``folding`` scans them.

Which order a renderer picks depends on what the gateway cannot know: the paragraph's
direction (left-to-right by default in HTML, from its first strong character under
``dir=auto`` or in plain-text viewers, right-to-left in a right-to-left page) and whether a
newline ends a paragraph (a terminal, ``white-space: pre``) or is a space (HTML collapses
it: an override then runs on past it). So each is read both ways: paragraphs split at their
separators and the whole text as one, each left-to-right and right-to-left; a paragraph
holding no such character is read as stored in the first (a plain paragraph is not read as
a right-to-left page would show it). Orders that repeat one before, or the text as stored,
are left out.

The algorithm: explicit levels and directions (X1-X10, isolates, overflow), weak types
(W1-W7), bracket pairs (N0, the ASCII and full-width pairs and those a code point apart),
neutrals (N1-N2), implicit levels (I1-I2), trailing whitespace (L1) and reversal (L2) over
a paragraph as one line: a value within a line reads there as within the paragraph (a pair
of characters is reversed by L2 as often, counted from the line's lowest odd level, of the
same parity). Mirrored glyphs (``(`` shown as ``)`` in a right-to-left run) are not
swapped: a bracket is no part of what the built-in detectors read. Unassigned code points
in the right-to-left blocks read as R, others as L (DerivedBidiClass' defaults, roughly).
The Unicode data is ``folding``'s (``unicodedata2``).

Cost: a C-level search of the text for a right-to-left character or a bidi control
(``reorders``; most text has none); then, for text with one, a translation to bidi classes
(numpy, from a table of the Unicode data filled a page at a time) and the algorithm in the
native extension (``proxy/native/src/bidi.rs``: one call for every reading of all the texts
of a call, which keeps only each text's distinct orders, without the GIL for large ones):
about 10 nanoseconds a code point a reading. Text given as code points (a tensor of token
ids) is read without a ``str`` made of it (``display_orders_of_points``). Its Python
reference (numpy and regular expressions, about a microsecond a code point) is the tests'
oracle (``tests/classify/display_order_reference.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from labelgate.errors import LabelgateError
from labelgate.native import NATIVE_KERNEL_FAILED, NativeSwitch, raise_if_panic

if TYPE_CHECKING:
    import unicodedata as unicode_data  # typeshed's stubs: the same functions
else:
    import unicodedata2 as unicode_data

# Every character of bidi class R, AL or AN (assigned or not: those blocks default to R or
# AL) lies in these blocks, and the bidi controls and marks that can reorder text are
# these: RLM (U+200F), the embeddings and overrides (U+202A-U+202E) and the isolates
# (U+2066-U+2069). (LRM, U+200E, and ALM, U+061C, are in a block or reorder nothing on
# their own: LRM is L.) Checked against the Unicode data by the tests.
_RIGHT_TO_LEFT_BLOCKS: Final = (
    (0x0590, 0x08FF),  # Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic, Arabic extended
    (0xFB1D, 0xFDFF),  # Hebrew and Arabic presentation forms
    (0xFE70, 0xFEFF),  # Arabic presentation forms B
    (0x10800, 0x10FFF),  # right-to-left scripts of the SMP, Rumi and Arabic extended-C
    (0x1E800, 0x1EFFF),  # Mende Kikakui, Adlam, Arabic mathematical symbols...
)
_CONTROLS: Final = ((0x200F, 0x200F), (0x202A, 0x202E), (0x2066, 0x2069))
_REORDERING: Final = (*_RIGHT_TO_LEFT_BLOCKS, *_CONTROLS)
_FIRST_REORDERING: Final = min(first for first, _ in _REORDERING)
# The explicit formatting characters (embeddings, overrides, isolates): what only a writer
# who means to reorder text puts there.
_EXPLICIT: Final = ((0x202A, 0x202E), (0x2066, 0x2069))


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "[" + "".join(f"{chr(first)}-{chr(last)}" for first, last in ranges) + "]"


_REORDERING_TEXT: Final = re.compile(_char_class(_REORDERING))
_EXPLICIT_TEXT: Final = re.compile(_char_class(_EXPLICIT))
# The same in UTF-8, by lead byte: ``reorders`` first keeps the lead bytes of such sequences
# (one C-level translate), then looks for a whole one only after a lead byte it found.
# Every byte from D6 to DF leads a character from U+0580 to U+07FF: near enough (a few
# Armenian letters more; ``display_orders_of`` looks again, in the decoded text).
_TWO_BYTE_LEADS: Final = bytes(range(0xD6, 0xE0))
_BY_LEAD: Final = (
    (0xE0, re.compile(rb"\xe0[\xa0-\xa3]")),  # U+0800-U+08FF
    (0xE2, re.compile(rb"\xe2(?:\x80[\x8f\xaa-\xae]|\x81[\xa6-\xa9])")),  # RLM, the controls
    (0xEF, re.compile(rb"\xef(?:\xac[\x9d-\xbf]|[\xad-\xb7\xba\xbb][\x80-\xbf]|\xb9[\xb0-\xbf])")),
    (0xF0, re.compile(rb"\xf0(?:\x90[\xa0-\xbf]|\x9e[\xa0-\xbf])")),  # U+10800-U+10FFF, U+1E800-U+1EFFF
)
_NOT_LEADS: Final = bytes(
    code for code in range(256) if code not in _TWO_BYTE_LEADS and code not in (0xE0, 0xE2, 0xEF, 0xF0)
)
_EXPLICIT_BYTES: Final = re.compile(rb"\xe2(?:\x80[\xaa-\xae]|\x81[\xa6-\xa9])")


def points_reorder(points: np.ndarray[Any, Any]) -> bool:
    """``reorders`` of text given as its code points (an integer array): numpy passes over
    the blocks and controls, none when every code point is below them all (most text)."""
    if not len(points) or int(points.max()) < _FIRST_REORDERING:
        return False
    return any(bool(((points >= first) & (points <= last)).any()) for first, last in _REORDERING)


def reorders(text: bytes | str) -> bool:
    """Whether ``text`` (UTF-8, or decoded) holds a character that may show it in another
    order than stored: a bidi control or a right-to-left character. C-level passes: for
    UTF-8, a translate, and a search after each lead byte of such a character it holds."""
    if isinstance(text, str):
        return _REORDERING_TEXT.search(text) is not None
    leads = text.translate(None, _NOT_LEADS)
    if not leads:
        return False
    if leads.translate(None, b"\xe0\xe2\xef\xf0"):
        return True  # a two-byte lead from D6 on
    return any(lead in leads and pattern.search(text) is not None for lead, pattern in _BY_LEAD)


def overrides(text: bytes | str) -> bool:
    """Whether ``text`` holds an explicit embedding, override or isolate (U+202A-U+202E,
    U+2066-U+2069): it may show any of its runs reversed, letters and digits alike."""
    if isinstance(text, str):
        return _EXPLICIT_TEXT.search(text) is not None
    return _EXPLICIT_BYTES.search(text) is not None


# Bidi classes, a letter each (what the extension reads, ``proxy/native/src/bidi.rs``):
_CODES: Final = {
    "L": "L",
    "R": "R",
    "AL": "A",
    "EN": "E",
    "ES": "s",
    "ET": "t",
    "AN": "N",
    "CS": "c",
    "NSM": "m",
    "BN": "b",
    "B": "B",
    "S": "S",
    "WS": "w",
    "ON": "o",
    "LRE": "x",
    "RLE": "y",
    "LRO": "X",
    "RLO": "Y",
    "PDF": "p",
    "LRI": "i",
    "RLI": "j",
    "FSI": "f",
    "PDI": "q",
}


def _in_blocks(code: int) -> bool:
    return any(first <= code <= last for first, last in _RIGHT_TO_LEFT_BLOCKS)


# Each code point's class letter (``_CODES``), worked out a page of 256 code points at a time
# on first use (0: a page not worked out yet): a text meets few pages, a tensor of token
# ids a few hundred.
_PAGE_BITS: Final = 8
_CLASS_OF: Final = np.zeros(0x110000, dtype=np.uint8)
_PAGES_READ: Final = np.zeros(0x110000 >> _PAGE_BITS, dtype=bool)


def _read_page(page: int) -> None:
    first = page << _PAGE_BITS
    for code in range(first, first + (1 << _PAGE_BITS)):
        name = unicode_data.bidirectional(chr(code))
        _CLASS_OF[code] = ord(_CODES.get(name) or ("R" if _in_blocks(code) else "L"))
    _PAGES_READ[page] = True


def classes_of(points: np.ndarray[Any, Any]) -> str:
    """The class letters (``_CODES``) of ``points`` (code points), a letter each."""
    return _class_letters(points).decode("ascii")


def _class_letters(points: np.ndarray[Any, Any]) -> bytes:
    """``classes_of``, ASCII: one gather from the table (``take``: a third of indexing's cost
    with 32-bit code points), and another when some code point's page was not worked out
    yet (its letter 0)."""
    codes: np.ndarray[Any, Any] = np.take(_CLASS_OF, points)
    if not codes.all():
        for page in np.unique(points[codes == 0] >> _PAGE_BITS).tolist():
            _read_page(page)
        codes = np.take(_CLASS_OF, points)
    return codes.tobytes()


# Bracket pairs (BD14, BD15): ASCII, full-width, and the opening punctuation (Ps) that
# mirrors and whose closing partner (Pe) is the next code point, as most are.
_PAIRS: dict[int, int] = {0x28: 0x29, 0x5B: 0x5D, 0x7B: 0x7D, 0xFF08: 0xFF09, 0xFF3B: 0xFF3D, 0xFF5B: 0xFF5D}
_PAIRS.update(
    (code, code + 1)
    for code in range(0x80, 0x10000)
    if unicode_data.category(chr(code)) == "Ps"
    and unicode_data.mirrored(chr(code))
    and unicode_data.category(chr(code + 1)) == "Pe"
    and code not in _PAIRS
)
# Two pairs Unicode's BidiBrackets.txt does not make of neighbours (review: ``⦍123-45-67א89⦐``
# showed a value in Chromium that this pairing read otherwise).
_PAIRS.update({0x298D: 0x2990, 0x298F: 0x298E})
# BD16 matches brackets by canonical equivalence: U+2329/U+232A are U+3008/U+3009. The
# extension matches code points, so those are read as their equivalents (``_orders_of``).
_EQUIVALENT: Final = {0x2329: 0x3008, 0x232A: 0x3009}
_CLOSERS: Final = {closer: opener for opener, closer in _PAIRS.items()}
_BRACKET_CODES: Final = np.array(sorted([*_PAIRS, *_CLOSERS]), dtype=np.uint32)
_BRACKET_TEXT: Final = re.compile(
    "[" + "".join(re.escape(chr(code)) for code in _BRACKET_CODES.tolist()) + "]"
)


def display_orders(text: str) -> list[np.ndarray[Any, Any]]:
    """The orders (each a permutation of ``text``'s code points: the index of the one shown
    first, then the next) a reader may see ``text`` in (the module docstring), none the
    order stored, none twice."""
    return display_orders_of([text])[0]


# Bracket pairs (N0): the texts of one call pair at most this many brackets between them; in
# a text past it brackets are neutrals as any other (N1), which moves no run of letters or
# digits of a value, only where a bracket next to one shows. Prose holds a bracket in a
# hundred characters or fewer, JSON one in ten or so: the budget pairs about a megabyte of
# the latter. (It bounded N0 in Python, microseconds a bracket; the extension's costs far
# less, but the budget is unchanged: its readings are the reference's.)
BRACKET_BUDGET: Final = 1 << 17
_LAST_CODE_POINT: Final = 0x10FFFF


def display_orders_of(texts: Sequence[str]) -> list[list[np.ndarray[Any, Any]]]:
    """``display_orders`` of each of ``texts``, worked out for all of them at once (each a
    block of its own: nothing of one reorders another): a call costs per call, and a tensor
    may hold many short texts."""
    orders: list[list[np.ndarray[Any, Any]]] = [[] for _ in texts]
    wanted = [index for index, text in enumerate(texts) if _REORDERING_TEXT.search(text)]
    if not wanted:
        return orders
    chosen = [texts[index] for index in wanted]
    joined = "".join(chosen)
    if len(joined) <= BRACKET_BUDGET:  # none of them can be past it
        paired = [True] * len(chosen)
    else:
        budget = BRACKET_BUDGET
        paired = []
        for text in chosen:
            budget -= len(_BRACKET_TEXT.findall(text))
            paired.append(budget >= 0)
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    found = _orders_of(points, [len(text) for text in chosen], paired)
    for index, own in zip(wanted, found, strict=True):
        orders[index] = own
    return orders


def display_orders_of_points(points: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """``display_orders`` of the text of ``points`` (an integer array of code points, each
    from 0 to U+10FFFF; ValueError for another), without making it a ``str``: a tensor of
    token ids read as characters is one."""
    if points.dtype.kind not in "iu":
        raise ValueError(f"code points are integers, not {points.dtype}")
    if len(points) and (int(points.min()) < 0 or int(points.max()) > _LAST_CODE_POINT):
        raise ValueError("a code point past U+10FFFF or below 0")
    if not points_reorder(points):
        return []
    code_points = np.ascontiguousarray(points, dtype="<u4")
    paired = (
        len(code_points) <= BRACKET_BUDGET
        or int(np.isin(code_points, _BRACKET_CODES).sum()) <= BRACKET_BUDGET
    )
    return _orders_of(code_points, [len(code_points)], [paired])[0]


def bracket_points(points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``points`` as the extension reads them for bracket pairs: each bracket as the one it
    is canonically equivalent to (``_EQUIVALENT``), so that ``〈`` closes ``〈``."""
    if not ((points == 0x2329) | (points == 0x232A)).any():
        return points
    points = points.copy()
    for code, equivalent in _EQUIVALENT.items():
        points[points == code] = equivalent
    return points


def _orders_of(
    points: np.ndarray[Any, Any], sizes: list[int], paired: list[bool]
) -> list[list[np.ndarray[Any, Any]]]:
    """``display_orders`` of each of the texts of ``points`` (UTF-32 code points, the texts
    ``sizes`` long, joined; those not ``paired``, past the bracket budget, read without
    bracket pairs): every reading of every text in one call of the extension, which keeps
    only the orders that differ from the one stored and from one another."""
    kernel = _KERNEL.kernel
    if kernel is None:
        raise LabelgateError(NATIVE_KERNEL_FAILED, "the native extension's bidi algorithm is not installed")
    classes = _class_letters(points)
    points = bracket_points(points)
    if all(paired):
        encoded = points.tobytes()
    else:  # past the budget: no bracket is one (N0) in the rest
        encoded = np.where(np.repeat(paired, sizes), points, 0).astype("<u4").tobytes()
    try:
        shown, counts = kernel.bidi_orders(classes, encoded, sizes, _OPENER_POINTS, _CLOSER_POINTS)
    except BaseException as error:
        raise_if_panic(error)
        raise
    every: np.ndarray[Any, Any] = np.frombuffer(shown, dtype=np.int64)  # a bytearray's: writable
    found: list[list[np.ndarray[Any, Any]]] = []
    start = 0
    for size, count in zip(sizes, counts, strict=True):
        found.append([every[start + size * at : start + size * (at + 1)] for at in range(count)])
        start += size * count
    return found


class _BidiKernel(Protocol):
    """What the extension offers here (``proxy/native/src/bidi.rs``)."""

    def bidi_order(
        self,
        classes: bytes,
        points: bytes,
        base: int,
        whole: bool,
        starts: list[int],
        openers: bytes,
        closers: bytes,
        /,
    ) -> bytes: ...

    def bidi_orders(
        self,
        classes: bytes,
        points: bytes,
        sizes: list[int],
        openers: bytes,
        closers: bytes,
        /,
    ) -> tuple[bytearray, bytes]: ...


# The algorithm is the extension's alone (its Python reference, about a microsecond a code
# point, is the tests' oracle): so ``LABELGATE_NATIVE=0`` does not turn it off, and without
# the extension text that may reorder is refused, never read as stored.
_KERNEL: Final[NativeSwitch[_BidiKernel]] = NativeSwitch(
    lambda module: hasattr(module, "bidi_order") and hasattr(module, "bidi_orders")
)
# The bracket pairs as the extension takes them: openers ascending, each one's closer.
_OPENER_POINTS: Final = np.array(sorted(_PAIRS), dtype="<u4").tobytes()
_CLOSER_POINTS: Final = np.array([_PAIRS[opener] for opener in sorted(_PAIRS)], dtype="<u4").tobytes()


def _order(classes: str, points: bytes, base: int, whole: bool, starts: list[int]) -> np.ndarray[Any, Any]:
    """The display order of texts of ``classes`` (``_CODES`` letters; ``points``: their code
    points, UTF-32-LE, read for brackets only) joined, each starting at one of ``starts``;
    each paragraph of direction ``base`` (0: left to right, 1: right to left) but one that
    holds no right-to-left character or explicit control (left to right, so as stored);
    paragraph and segment separators (newlines, tabs) read as spaces when ``whole``, as
    HTML's collapsed white space reads them. Every paragraph of every text at once, each a
    block of its own (a paragraph's separator too: so no run crosses it and it stays at its
    paragraph's end; a right-to-left paragraph's would come first, gluing its last line to
    the next paragraph's first)."""
    kernel = _KERNEL.kernel
    if kernel is None:
        raise LabelgateError(NATIVE_KERNEL_FAILED, "the native extension's bidi algorithm is not installed")
    try:
        order = kernel.bidi_order(
            classes.encode("ascii"), points, base, whole, starts, _OPENER_POINTS, _CLOSER_POINTS
        )
    except BaseException as error:
        raise_if_panic(error)
        raise
    return np.frombuffer(order, dtype=np.int64)
