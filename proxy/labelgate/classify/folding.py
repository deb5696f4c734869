"""Text as a reader sees it, for the detectors: digits of any script, dashes and spaces of
any kind, invisible characters and control characters dropped. Pure.

The detectors read ASCII digits and separators. The same SSN written with full-width digits
(``１２３-４５-６７８９``), Arabic-Indic digits, non-breaking hyphens, or a zero-width space
between digits reads the same to a person, or to a model downstream, but not to a detector.
``folded`` maps such text to what the detectors read: NFKC (full-width forms), every
digit to its ASCII digit (any script's decimal digits, and digits in circles or on keycaps:
``❹``, ``4️⃣``), every dash to ``-``, every space separator to a space, every combining mark
left after NFKC dropped (an underline or keycap drawn over a digit),
every default-ignorable character (format characters such as zero-width spaces, joiners and
soft hyphens; variation selectors, the combining grapheme joiner, Hangul fillers: all render
as nothing) dropped. Control characters hide values from a detector as well (``123\x00-45``,
UTF-16 text with a NUL after every ASCII letter, ``123\x1b[0m-45``, which a terminal prints
as ``123-45``): ANSI escape sequences that only style text (colours, window titles, links,
character sets) and every C0/C1 control character and DEL but tab, newline and carriage
return (text the detectors read as it is) are dropped too.

The Unicode data is ``unicodedata2``'s (``UNICODE_VERSION``), not the runtime's: a client on
a newer Unicode reads digits and marks the runtime's database does not know (Kawi digits,
Unicode 15.0, are unassigned to Python 3.11's) as digits and marks. A code point that data
still calls unassigned may be a digit or a mark to a newer reader: text holding one (but a
noncharacter) cannot be folded into what such a reader sees, and is ``UNFOLDABLE`` (below).
Bytes that are not text (more than one character in ``_STRAY`` a control character or a
replacement character once decoded: an image's, audio's) are not failed closed so: there
such a code point is a character that joins nothing, as before.

UTF-16 and UTF-32 text: dropping its NULs shows its ASCII characters only. ``wide_folded``
decodes text that has a UTF-16 or UTF-32 byte order mark, or the NULs of one (a NUL beside
most bytes, three in four for UTF-32, as Latin-script text has), as that encoding, and folds
that: full-width digits, zero-width spaces and no-break spaces in UTF-16 read as in UTF-8.
A guess from NULs alone is also what an array of small integers looks like (an ``.npy`` of
class ids, 16-bit samples, counts): decoded, its numbers are code points from all over the
blocks they fall in, a few of them unassigned, and as many control characters as text has
letters in some. So such a decode is text (and fails closed for an unassigned code point or
a cursor movement) only when it reads as text more strictly (``_reads_as_guessed_text``):
NULs aside (padding), at most one character in ``_STRAY`` a control character, a
replacement character or a noncharacter, and words apart, at least one in ``_GUESS_SPACES``
a space, a tab or a line break (text of any alphabetic script has one in six or so; numbers
decoded so have one in a hundred or fewer, unless small enough to be control characters
more often than that). In any other such decode an unassigned code point is read as
nothing: one between digits joins them, as a mark would to a newer reader, and binary data
loses a character of no interest. (Text written without spaces, Chinese or Thai, with no
byte order mark, is read so too: its unassigned code points are not failed closed.)

Bytes that are not UTF-8: a client decodes them otherwise. UTF-16 surrogates written as
UTF-8 (CESU-8, Java's modified UTF-8, a JSON escape ``\\ud835`` decoded on its own), which no
UTF-8 decoder accepts, are read as a decoder with ``surrogatepass`` and then any UTF-16 or
JSON reader reads them, pairs joined (``_utf8_read``): part of the UTF-8 reading itself.
``legacy_readings`` decodes such bytes as each common legacy encoding (``LEGACY_ENCODINGS``:
GB18030, CP932, EUC-JP, CP949, Big5, Windows-1252) they read as text in (few replacement and
control characters: binary data does not, its control bytes alone rule it out before any
decode), and folds that: ``\\xa3\\xb4`` is a full-width 4 in GBK, ``\\x82\\x53`` in
Shift_JIS. A guess, as a decode from NULs alone is: a value only such a reading shows spans
the text whole, unless a raw detection of its detector is placed over it (the reading folded
a piece at a time, as for the UTF-8 reading below). Ordinary UTF-8 text pays a search of its
folded form for a replacement character and one of it for the byte 0xED (a UTF-8 decode
when it holds either: Hangul does).

Escape sequences that move the cursor or edit what a terminal shows (``\x1b[4D`` over
decoy digits, ``\x1b[6G``, ``\x1b[2J``, ``\x1b7``, device control strings) can show the
text's characters in any order and hide any of them: no one reading of the text is what a
terminal shows, so text holding one is ``UNFOLDABLE``. In bytes that are not text (above:
a dark image's pixels hold ESC-letter pairs) such a sequence is read as a space instead, a
separator: decoy digits overwritten stay apart from the value, and nothing is failed closed.

``hidden_by_folding`` scans those forms of each text that ``may_hide`` (not ASCII, or holding
such a control character: ``folded`` answers None for any other text). A value it finds
that no detection of the same detector in the text itself covers spans the whole text,
since offsets into the folded form do not index the original: as for text hidden by JSON
escapes. Covers, not counts: the raw scan's detections are placed in the folded form (the
text folded a piece at a time, cut where they start and end), and a value of the folded
form must lie within them. A count lets a decoy stand in for a hidden value: a plain SSN
that folding joins to the digit after it (``111-22-3333\u200b0``) is one SSN to the raw
scan and none folded, where a full-width SSN beside it is one folded and none raw.

NFKC can multiply a text's length (U+FDFA becomes 18 characters: a 16 MB reply of it took
11 s and 587 MB to fold whole). Text is folded a slice at a time, and text whose folded form
grows past ``MAX_GROWTH`` times its length is not folded further: ``folded`` answers
``UNFOLDABLE``, and ``hidden_by_folding`` fails it closed, every detector spanning it whole.
So folding costs at most about ``MAX_GROWTH`` times the text, on any text.

Markup a browser or a Markdown renderer drops between a value's characters
(``123<b></b>-45-6789``, ``12**3**-45-6789``) hides it too: text holding such markup next to
a digit (``markup.may_render``, which ``may_hide`` asks) is also read rendered
(``rendered_reading``: folded, then ``markup.rendered``), a reading beside the folded one,
never in its place; its pieces are rendered whatever they hold (``rendered_folded``), so a
raw detection is placed in it as in the folded form.

Text is not shown in the order it is stored when it holds a bidi control or a right-to-left
character (``display_order``): ``ssn \u202e9876-54-321\u202c`` shows as ``ssn 123-45-6789``
(a RIGHT-TO-LEFT OVERRIDE reverses its run; folding drops the override, which shows as
nothing), and a Hebrew letter, an Arabic one or an invisible RIGHT-TO-LEFT MARK before
``1111 1111 1111 4111`` shows the groups in reverse order, a card. So such text is also read
in each order a reader may see it in (``display_readings``: paragraphs left to right and
right to left, newlines ending them or collapsed as a browser collapses them), each folded,
beside the folded form (again never in its place): a raw detection is placed over the
characters it covers wherever they show (``_placed``), and a value it does not cover spans
the text whole, as a value only folding shows does. Markup is rendered before reordering
(a browser lays out what markup leaves). Readers that place nothing (escapes decoded,
``rendered_reading``; a stream's joined pieces, ``split_values``) get those readings whole
for text with an explicit embedding, override or isolate, and only the runs that show
otherwise than stored for text that only right-to-left characters reorder
(``shown_readings``): a plain value in Arabic or Hebrew text spans nothing more. Cost: text
with no right-to-left character, one translate and a search or two (0.3 ms a MB of Latin
text); text with one, about 0.5 ms a KB (folding: 0.03; numpy over its characters, up to
four readings, each folded and scanned), 80 µs for a 100-byte element of a tensor of many
(read together, ``display_readings_of``). Bracket pairs cost more, and are bounded
(``display_order.BRACKET_BUDGET``).

Best effort: an upstream can always encode data in a way no detector reads (base64), and the
catalog's labels are what holds then. This closes the cheap evasions.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.display_order import display_orders_of, overrides, reorders
from labelgate.classify.markup import MARKUP_BYTES, may_render, native_gate, rendered

if TYPE_CHECKING:
    import unicodedata as unicode_data  # typeshed's stubs: the same functions
else:
    import unicodedata2 as unicode_data

UNICODE_VERSION: Final[str] = unicode_data.unidata_version
_MINUS_SIGN = 0x2212  # a math symbol, not a dash: written for "-" all the same

# Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, Unicode 15.1):
# characters a renderer shows as nothing, whatever their category. Cf is most of them; the
# rest are combining marks (U+034F, variation selectors), Hangul fillers (letters: U+3164 and
# U+FFA0 fold to U+1160 under NFKC) and unassigned code points reserved as ignorable.
IGNORABLE_RANGES: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Format characters (invisible) and combining marks (drawn on the character before them: a
# keycap, an underline; once NFKC has composed what it can, what is left only decorates).
_DROPPED_CATEGORIES: Final = frozenset({"Cf", "Mn", "Me"})
# Control characters the detectors read as they are: separators of ordinary text.
_KEPT_CONTROLS: Final = frozenset("\t\n\r")
# C0 controls and DEL, but the kept ones: what makes ASCII text worth folding.
CONTROLS: Final = bytes(code for code in [*range(0x20), 0x7F] if chr(code) not in _KEPT_CONTROLS)
_ASCII_CONTROLS: Final = frozenset(CONTROLS.decode("ascii"))
# C0 controls and DEL mapped past ASCII, every other byte kept: ``isascii`` of text so mapped
# answers both questions of ``may_hide`` in one pass each (a mapping is cheaper than deleting).
_CONTROLS_PAST_ASCII: Final = bytes(0x80 if code in CONTROLS else code for code in range(256))
# The same with markup bytes too (``markup``): text without any of either folds to itself.
_HIDING_PAST_ASCII: Final = bytes(
    0x80 if code in CONTROLS or code in MARKUP_BYTES else code for code in range(256)
)
# What a terminal shows none of: ANSI escape sequences (CSI: colours, cursor moves; OSC up to
# its BEL or ST: window titles, hyperlinks; character-set designations; the two-byte ones:
# keypad modes, resets), and a character a backspace then steps back over (overstrike:
# ``678X\b9`` shows as ``6789``).
TERMINAL_SEQUENCES: Final = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()*+\-./][ -~]|[ -/]*[0-~])"
    r"|[^\x08]\x08"
)
# Of the escape sequences of ``TERMINAL_SEQUENCES`` (matched at their start), those that only
# style what is written: SGR (colours), OSC, character sets, keypad modes, a string
# terminator. Every other one moves the cursor or edits the screen (module docstring).
STYLING_SEQUENCES: Final = re.compile(r"\x1b(?:\[[0-?]*[ -/]*m|\]|[()*+\-./]|[=>\\])")


_IGNORABLE_FIRSTS: Final = [first for first, _ in IGNORABLE_RANGES]  # ascending


def _ignorable(code: int) -> bool:
    at = bisect_right(_IGNORABLE_FIRSTS, code) - 1
    return at >= 0 and code <= IGNORABLE_RANGES[at][1]


def noncharacter(code: int) -> bool:
    """Whether ``code`` is one of the 66 noncharacters: unassigned (Cn) forever, so no reader
    will ever see a digit or a mark in one."""
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def may_hide(text: bytes) -> bool:
    """Whether ``text``'s folded form may differ from it: it is not ASCII, holds a control
    character folding drops, or markup a renderer drops next to a character a value is made
    of (``markup.may_render``). Native passes that copy nothing when the extension is on;
    else at most two C-level passes over ASCII text without a control character or a markup
    byte (most text): cheap enough to ask of every buffer."""
    answer = native_gate("may_hide", text)
    if answer is not None:
        return answer
    if not text.isascii():
        return True
    if text.translate(_HIDING_PAST_ASCII).isascii():
        return False
    return not text.translate(_CONTROLS_PAST_ASCII).isascii() or may_render(text)


# Folded text may be this many times as long as the text (plus _SLACK), no more. Ordinary text
# stays within a few percent of its length; only compatibility characters that spell out
# words (U+FDFA, U+3300 and the like) grow it much.
MAX_GROWTH: Final = 2
_SLACK: Final = 64
# Characters normalized at a time: how far past the limit a text gets before it is stopped.
# A slice may end inside a letter and its combining marks; normalizing the two sides apart can
# compose letters differently across the cut, never a digit, a dash, a space or an invisible
# character, which are all the detectors read.
_SLICE: Final = 16_384


class _Unfoldable(bytes):
    """``folded``'s answer for text that cannot be folded (see the docstring)."""


UNFOLDABLE: Final = _Unfoldable()

# Characters remembered by the table; past this it starts over (an upstream could send every
# code point).
_TABLE_SIZE = 4096
# What the table makes of an unassigned code point: a lone surrogate, which no text decoded
# with "replace" holds, so one search of a folded slice tells whether the text has any.
_UNASSIGNED: Final = "\udfff"
# Text is not text when more than one character in _STRAY is one of these: a decoder's
# replacement character or a control character folding drops (bytes of an image, of audio).
_STRAY: Final = 8
_NOT_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


class _Fold(dict[int, str | None]):
    """``str.translate``'s table, worked out per character on first use (the table of all of
    Unicode would be large; a text meets few characters)."""

    def __missing__(self, code: int) -> str | None:
        if len(self) >= _TABLE_SIZE:
            self.clear()
        char = chr(code)
        category = unicode_data.category(char)
        folded: str | None
        if (
            category in _DROPPED_CATEGORIES
            or _ignorable(code)
            or (category == "Cc" and char not in _KEPT_CONTROLS)
        ):
            folded = None  # invisible, a control character or a mark on another: dropped
        elif category == "Cn" and not noncharacter(code):
            folded = _UNASSIGNED  # a digit or a mark to a reader on a newer Unicode, maybe
        elif (digit := unicode_data.digit(char, None)) is not None:
            folded = str(digit)  # any script's, and digits drawn in circles or on keys
        elif category == "Pd" or code == _MINUS_SIGN:
            folded = "-"
        elif category == "Zs":
            folded = " "
        else:
            folded = char
        self[code] = folded
        return folded


_TABLE = _Fold()


def _shown(text: str) -> tuple[str, bool]:
    """``text`` without what a terminal does not show (``TERMINAL_SEQUENCES``), an escape
    sequence that moves the cursor or edits the screen read as a space (``STYLING_SEQUENCES``
    tells the others); and whether there was one. Searched only when it holds an ESC or a
    backspace."""
    if "\x1b" not in text and "\x08" not in text:
        return text, False
    moved = False

    def dropped(match: re.Match[str]) -> str:
        nonlocal moved
        sequence = match.group()
        if sequence[0] == "\x1b" and STYLING_SEQUENCES.match(sequence) is None:
            moved = True
            return " "
        return ""

    shown = TERMINAL_SEQUENCES.sub(dropped, text)
    return shown, moved


def reads_as_text(text: str) -> bool:
    """Whether ``text`` (decoded) is text: at most one character in ``_STRAY`` a control
    character folding drops or a replacement character (``_NOT_TEXT``)."""
    return _strays(text) * _STRAY <= len(text)


# ``_NOT_TEXT`` as a table of the Basic Multilingual Plane (no character past it is one):
# counted over a long text's code points by numpy, where the regular expression's ``findall``
# builds a string per match (binary data holds one in eight: 0.2 s a MB against 7 ms).
_NOT_TEXT_CODES: Final = np.array([_NOT_TEXT.match(chr(code)) is not None for code in range(0x10000)])
_LAST_TABLED: Final = 0xFFFF  # not one: where every code point past the table is looked up


def _strays(text: str) -> int:
    """How many characters of ``text`` are ``_NOT_TEXT``."""
    if len(text) < _COUNT_BY_NUMPY:
        return len(_NOT_TEXT.findall(text))
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return int(np.count_nonzero(_NOT_TEXT_CODES[np.minimum(codes, _LAST_TABLED)]))


# A decode guessed from NULs alone is text when at most one character in ``_STRAY`` is stray,
# and at least one in this many is a space (module docstring). NULs are padding, not counted.
_GUESS_SPACES: Final = 32
_STRAY_IN_GUESS: Final = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffd-\uffff]")
# Space separators (Zs: every one is below U+3001) and the kept control characters.
_SPACES: Final = re.compile("[\t\n\r \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def _reads_as_guessed_text(text: str, breaks: int = 0) -> bool:
    """Whether ``text``, decoded as the UTF-16 or UTF-32 its NULs suggest, reads as text (the
    module docstring); ``breaks``: newlines put between its rows, no part of it. Asked only
    of a decode holding an unassigned code point or a cursor movement: three C-level passes."""
    size = len(text) - text.count("\x00") - breaks
    spaces = len(_SPACES.findall(text)) - breaks
    return len(_STRAY_IN_GUESS.findall(text)) * _STRAY <= size <= spaces * _GUESS_SPACES


def rendered_reading(text: bytes, form: bytes | None = None) -> bytes | None:
    """``text`` folded (``form``: ``folded(text)``, when known and not ``UNFOLDABLE``), then
    rendered (``markup.rendered``) when it holds markup a renderer drops next to a character
    a value is made of (``markup.may_render``): what a browser or a Markdown renderer shows
    of it; and, for text a bidi control or a right-to-left character may show in another
    order, that order folded (``shown_readings``); joined by newlines. None when it has
    neither reading. Other readings beside the folded one, never in its place: dropping
    ``_`` joins ``card_4111...`` into one word, where the folded form shows the card. For
    readers that place nothing in it (a value found spans the text whole); ``hidden_by_folding``
    places a raw detection in each."""
    readings = [] if (markup := _markup_reading(text, form)) is None else [markup]
    readings += shown_readings(text, text if form is None else form, markup)
    if not readings:
        return None
    if any(reading is UNFOLDABLE for reading in readings):
        return UNFOLDABLE
    return readings[0] if len(readings) == 1 else b"\n".join(readings)


def _markup_reading(text: bytes, form: bytes | None = None) -> bytes | None:
    """``rendered_reading``'s markup reading alone: None when ``text`` may not render, or
    renders as it reads folded."""
    base = text if form is None else form
    if not may_render(base):
        return None
    shown = rendered(base)
    return None if shown == base else shown


def rendered_folded(text: bytes) -> bytes | None:
    """``text`` folded and rendered whatever it holds (``UNFOLDABLE`` when it cannot be
    folded): how a piece of a text read by ``rendered_reading`` reads, since a piece alone
    (``<td>``, ``**``) has no value beside it and would be read as written otherwise."""
    form = folded(text)
    if form is UNFOLDABLE:
        return form
    return rendered(text if form is None else form)


# Text in the order a reader sees it (``display_order``): a RIGHT-TO-LEFT OVERRIDE shows
# ``9876-54-321`` as ``123-45-6789``, and a Hebrew letter or an invisible RIGHT-TO-LEFT MARK
# before ``1114 1111 1111 1111`` shows its groups in reverse order. Folding drops the bidi
# controls (they show as nothing) and keeps the order stored, so each order a reader may
# see is read too, folded (``_shown_folded``), beside the folded form.
Placer = Callable[[Sequence[Detection]], list[Detection]]


def display_readings(text: bytes) -> list[tuple[bytes, Placer | None]]:
    """``text``'s characters in each order a reader may see them (``display_order``), UTF-8,
    not folded, what a terminal does not show left out (``TERMINAL_SEQUENCES``: a styling
    sequence reversed would show as letters; a cursor movement reads as a space), each with
    how the detections of ``text`` itself are placed in it (``_placed``; None when ``text`` is
    not UTF-8: its offsets place nothing there). [] for text nothing reorders (``reorders``:
    C-level passes over text that is not ASCII), and for bytes that are not text
    (``reads_as_text``: an image's, whose bytes decode to a letter now and then)."""
    return display_readings_of([text])[0]


def display_readings_of(texts: Sequence[bytes]) -> list[list[tuple[bytes, Placer | None]]]:
    """``display_readings`` of each of ``texts``, their orders worked out at once
    (``display_order.display_orders_of``)."""
    readings: list[list[tuple[bytes, Placer | None]]] = [[] for _ in texts]
    read: dict[int, tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
    for index, text in enumerate(texts):
        if text.isascii() or not reorders(text):
            continue
        decoded = _utf8_read(text)
        if not reads_as_text(decoded):
            continue  # bytes of an image, of audio: a letter of theirs reorders nothing shown
        points = np.frombuffer(decoded.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        shown, origins = _terminal_shown(decoded, points)
        read[index] = (shown, points, origins)
    every = display_orders_of([shown for shown, _, _ in read.values()])
    for (index, (shown, points, origins)), orders in zip(read.items(), every, strict=True):
        text = texts[index]
        shown_points = np.frombuffer(shown.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        exact = is_utf8(text)
        for order in orders:
            reading = shown_points[order].tobytes().decode("utf-32-le", "surrogatepass")
            place = partial(_placed, text, points, origins[order]) if exact else None
            readings[index].append((reading.encode("utf-8", "surrogatepass"), place))
    return readings


def _terminal_shown(decoded: str, points: np.ndarray[Any, Any]) -> tuple[str, np.ndarray[Any, Any]]:
    """``decoded`` as ``_shown`` shows it (a cursor movement as a space), and where each of its
    characters was in ``decoded`` (``points``: its code points)."""
    if "\x1b" not in decoded and "\x08" not in decoded:
        return decoded, np.arange(len(decoded))
    kept = np.ones(len(decoded), dtype=bool)
    spaces: list[int] = []
    for match in TERMINAL_SEQUENCES.finditer(decoded):
        start, end = match.span()
        kept[start:end] = False
        if decoded[start] == "\x1b" and STYLING_SEQUENCES.match(match.group()) is None:
            kept[start] = True
            spaces.append(start)
    shown = points.copy()
    shown[spaces] = ord(" ")
    origins = np.flatnonzero(kept)
    return shown[origins].tobytes().decode("utf-32-le", "surrogatepass"), origins


def _placed(
    text: bytes,
    points: np.ndarray[Any, Any],
    origins: np.ndarray[Any, Any],
    raw: Sequence[Detection],
) -> list[Detection]:
    """``raw`` (detections in ``text``, UTF-8 of the code points ``points``) placed in a display
    reading of it whose characters are those of ``origins`` (indices into ``points``, in the
    order shown): each detection covers the characters it covers in ``text``, wherever they
    show, a span per stretch of them side by side (a card whose groups show reversed stays
    covered); one spanning ``text`` whole spans the reading whole."""
    if not raw:
        return []
    size = len(points)
    starts = np.flatnonzero((np.frombuffer(text, dtype=np.uint8) & 0xC0) != 0x80)  # each character's
    position = np.full(size, -1, dtype=np.int64)
    position[origins] = np.arange(len(origins))
    widths = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.concatenate(([0], np.cumsum(widths[origins])))
    placed: list[Detection] = []
    for hit in raw:
        first, last = (int(at) for at in np.searchsorted(starts, [hit.start, hit.end]))
        if first <= 0 and last >= size:
            placed.append(hit._replace(start=0, end=int(offsets[-1])))
            continue
        shown = position[first:last]
        shown = np.sort(shown[shown >= 0])
        if not len(shown):
            continue
        for run in np.split(shown, np.flatnonzero(np.diff(shown) != 1) + 1):
            placed.append(hit._replace(start=int(offsets[run[0]]), end=int(offsets[run[-1] + 1])))
    return placed


def _shown_folded(text: bytes) -> bytes:
    """A display reading (or a piece of one) folded: escape sequences were left out of it
    (``display_readings``), so any a reversed run makes up is read as a space, not as a
    cursor movement (``_fold``'s ``moves``); ``UNFOLDABLE`` as for ``folded``."""
    return _fold(_utf8_read(text), moves=False)


# Runs of ASCII in a folded reading: what a built-in detector's value lies in (a character
# past ASCII joins no value).
_PAST_ASCII: Final = re.compile(rb"[\x80-\xff]+")


def _runs(form: bytes) -> list[bytes]:
    """``form``'s runs of ASCII (``_PAST_ASCII``), spaces at their ends left out: a space
    that shows on the other side of a run joins it to nothing."""
    return [run for run in (each.strip() for each in _PAST_ASCII.split(form)) if run]


def shown_readings(text: bytes, form: bytes | None = None, markup: bytes | None = None) -> list[bytes]:
    """``text``'s display readings (``display_readings``), of it and of it with its markup
    rendered (``markup.rendered``, when it may render), folded, for readers that place
    nothing in them (a value found spans the text whole): all of each for text holding an
    explicit embedding, override or isolate (``overrides``: any run of it may show
    reversed, and a stream's pieces, each read on its own, may hold the control and the
    run apart); for text only right-to-left characters reorder (letters, marks, Arabic
    digits: its runs shown in another order, none reversed within), only the runs of ASCII
    they show more often than ``form`` (``folded(text)``, worked out when None) and
    ``markup`` (its rendered reading) do (``_runs``): a value read as stored, which such a reader
    finds anyway, spans nothing more (a token stream in Arabic with an email is not
    refused for it, ``split_values``). ``UNFOLDABLE`` (in the list) when one cannot be folded."""
    if text.isascii() or not reorders(text):
        return []
    if form is None:
        form = folded(text)
        form = text if form is None or form is UNFOLDABLE else form
    sources = [text]
    if may_render(text) and (drawn := rendered(text)) != text:
        sources.append(drawn)
    readings = [_shown_folded(reading) for own in display_readings_of(sources) for reading, _ in own]
    if any(reading is UNFOLDABLE for reading in readings):
        return [UNFOLDABLE]
    readings = [reading for reading in dict.fromkeys(readings) if reading != form]
    if not readings or overrides(text):
        return readings
    stored = Counter(_runs(form) + (_runs(markup) if markup else []))
    changed: dict[bytes, None] = {}
    for reading in readings:
        changed.update((run, None) for run, count in Counter(_runs(reading)).items() if count > stored[run])
    return [b"\n".join(changed)] if changed else []


class FoldMemo:
    """What ``folded`` worked out for each chunk of the texts it folded with this memo: for
    the forms of one text (its escapes decoded a level at a time, its references decoded),
    which differ from each other in a few places only, so each is folded where it differs and
    no more (``_fold_chunks``). Holds about what the folded forms hold: one per text, dropped
    with it."""

    __slots__ = ("parts", "shown")

    def __init__(self) -> None:
        self.shown: dict[bytes, tuple[str, bool, int]] = {}  # chunk -> shown, moved, strays
        self.parts: dict[bytes, tuple[str, int]] = {}  # chunk -> folded, normalized length


def folded(text: bytes, memo: FoldMemo | None = None) -> bytes | None:
    """``text`` as the detectors should read it (see the module docstring), None when that
    is ``text`` itself, or ``UNFOLDABLE`` (test with ``is``) when it cannot be folded. ASCII
    text changes only by its control characters (``may_hide``; its markup is read by
    ``rendered_reading``). ``memo``: chunks of text folded before (``FoldMemo``), the same
    answer for less work when ``text`` shares most of them."""
    if text.isascii():
        if text.translate(_CONTROLS_PAST_ASCII).isascii():
            return None
        # No other character of ASCII text folds: NFKC and the table leave them as they are,
        # and the table drops exactly ``CONTROLS`` (a C-level delete when no escape sequence
        # or backspace needs ``_shown`` first).
        if b"\x1b" not in text and b"\x08" not in text:
            return text.translate(None, CONTROLS)
        shown, moved = _shown(text.decode("ascii"))
        if moved and reads_as_text(shown):
            return UNFOLDABLE
        return shown.translate(_TABLE).encode("ascii")
    if memo is not None and len(text) >= 2 * _CHUNK:
        result = _fold_chunks(text, memo)
    else:
        # Escape sequences go first: dropping their ESC alone would leave "[0m" in the text.
        result = _fold(_utf8_read(text))
    return None if result == text else result


# Bytes a text is cut into chunks of, about (``_fold_chunks``): at least a quarter of it, at
# most eight times it, where the four bytes before a cut hash to a multiple of it. Where a
# chunk ends depends on the bytes there, not on its offset: the forms of one text, which
# differ in length where an escape was decoded, are cut alike before and after it.
_CHUNK: Final = 1024
_SHORTEST: Final = _CHUNK // 4
_LONGEST: Final = _CHUNK * 8
_WINDOW: Final = 4
# Where a chunk may start: before an ASCII byte (no UTF-8 sequence, nor a run of surrogates,
# holds one; a sequence cut short before it decodes as it does whole), which NFKC composes
# with nothing before it (``_slices``), but an ESC, a backspace and a character a backspace
# follows (``TERMINAL_SEQUENCES``: what a terminal does not show), and none inside such a
# sequence (``_fold_chunks``). Cut so, a text folds as its chunks fold, each on its own.
_CUTTABLE: Final = re.compile(rb"[\x00-\x07\x09-\x1a\x1c-\x7f](?!\x08)")
_CUTTABLE_BYTES: Final = np.array([code < 0x80 and code not in (0x08, 0x1B) for code in range(256)])
# ``TERMINAL_SEQUENCES``' escape sequences, in bytes: every byte of their classes but those
# ``[^\x07\x1b]`` matches is ASCII, and that matches any character, so it matches the same
# runs of bytes the decoded text's sequences are. (Its other kind, a character and the
# backspace after it, no cut falls in: ``_CUTTABLE``.)
_ESCAPE_SEQUENCES: Final = (
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()*+\-./][ -~]|[ -/]*[0-~])"
)
_ESCAPE_BYTES: Final = re.compile(_ESCAPE_SEQUENCES)


def _chunk_cuts(text: bytes) -> list[int]:
    """Where ``text`` is cut into chunks (``_CHUNK``): at ``_CUTTABLE`` bytes outside every
    ``TERMINAL_SEQUENCES`` (a chunk holds each whole)."""
    size = len(text)
    if size < 2 * _CHUNK:
        return [0, size]
    data = np.frombuffer(text, dtype=np.uint8)
    cuttable = _CUTTABLE_BYTES[data]
    cuttable[:-1] &= data[1:] != 0x08
    hashed = np.zeros(size, dtype=bool)  # where the four bytes before hash to a multiple
    for start in range(_WINDOW):  # the windows at offsets ``start`` + 4k, read in place
        window = np.frombuffer(text, dtype="<u4", offset=start, count=(size - start) // _WINDOW)
        mixed = (window * np.uint32(0x9E3779B1)) >> np.uint32(22)  # Fibonacci hashing: 10 bits
        hashed[start + _WINDOW :: _WINDOW] = (mixed == 0)[: len(hashed[start + _WINDOW :: _WINDOW])]
    candidates = np.flatnonzero(hashed & cuttable)
    spans: list[tuple[int, int]] = []
    if 0x1B in text:
        spans = [match.span() for match in _ESCAPE_BYTES.finditer(text)]
    starts = [start for start, _ in spans]
    cuts = [0]
    at = _SHORTEST
    while at < size:
        found = int(np.searchsorted(candidates, at))
        cut = int(candidates[found]) if found < len(candidates) else size
        if cut > cuts[-1] + _LONGEST:  # none for long: the first cuttable byte will do
            match = _CUTTABLE.search(text, max(at, cuts[-1] + _LONGEST))
            cut = size if match is None else match.start()
        if cut >= size:
            break
        inside = bisect_right(starts, cut) - 1
        if inside >= 0 and spans[inside][1] > cut:
            at = spans[inside][1]  # within a sequence: past its end
            continue
        cuts.append(cut)
        at = cut + _SHORTEST
    cuts.append(size)
    return cuts


def _fold_chunks(text: bytes, memo: FoldMemo) -> bytes:
    """``_fold(_utf8_read(text))``, a chunk at a time (``_chunk_cuts``): each chunk read,
    shown and folded once per ``memo``, what ``_fold`` decides over the whole text (whether
    it reads as text, moves the cursor, grows too much, holds an unassigned code point)
    decided from the chunks' counts, which add up to the whole text's."""
    chunks = [text[start:end] for start, end in pairwise(_chunk_cuts(text))]
    seen = memo.shown
    shown: list[tuple[str, bool, int]] = []
    for chunk in chunks:
        entry = seen.get(chunk)
        if entry is None:
            part, moved = _shown(_utf8_read(chunk))
            entry = seen[chunk] = (part, moved, _strays(part))
        shown.append(entry)
    length = sum(len(part) for part, _, _ in shown)
    as_text = sum(strays for _, _, strays in shown) * _STRAY <= length

    def reads() -> bool:
        return as_text

    if as_text and any(moved for _, moved, _ in shown):
        return UNFOLDABLE
    budget = MAX_GROWTH * length + _SLACK
    done = memo.parts
    parts: list[str] = []
    size = 0
    for chunk, (part, _, _) in zip(chunks, shown, strict=True):
        worked = done.get(chunk)
        if worked is None:
            pieces: list[str] = []
            grown = 0
            for piece in _slices(part):
                normalized = unicode_data.normalize("NFKC", piece)
                grown += len(normalized)
                if size + grown > budget:
                    return UNFOLDABLE
                pieces.append(normalized.translate(_TABLE))
            worked = done[chunk] = ("".join(pieces), grown)
        size += worked[1]
        if size > budget:
            return UNFOLDABLE
        parts.append(worked[0])
    return _finished("".join(parts), False, reads)


# UTF-16 surrogates written as UTF-8 (CESU-8, Java's modified UTF-8, JSON's ``\ud835\udfd2``
# decoded an escape at a time): no UTF-8 decoder accepts them, so a run of them is cut out of
# the text and read on its own.
_SURROGATES: Final = re.compile(rb"(?:\xed[\xa0-\xbf][\x80-\xbf])+")
_REPLACEMENT: Final = "\ufffd"
_REPLACEMENT_BYTES: Final = _REPLACEMENT.encode()


def _utf8_read(text: bytes) -> str:
    """``text`` decoded as UTF-8, bytes it cannot decode replaced, but surrogates written as
    UTF-8 (``_SURROGATES``) read as a decoder with ``surrogatepass`` reads them, pairs joined as
    any UTF-16 or JSON reader of that decode joins them (``\\xed\\xa0\\xb5\\xed\\xbf\\x92``: ``𝟒``);
    a lone one is a replacement character, as before. Searched only in text that does not
    decode (a replacement character) and holds the surrogates' first byte."""
    decoded = text.decode("utf-8", "replace")
    if _REPLACEMENT not in decoded or b"\xed" not in text or _SURROGATES.search(text) is None:
        return decoded
    parts = _SURROGATES.split(text)
    runs = _SURROGATES.findall(text)
    pieces = [parts[0].decode("utf-8", "replace")]
    for run, part in zip(runs, parts[1:], strict=True):
        units = run.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass")
        pieces += [units.decode("utf-16-le", "replace"), part.decode("utf-8", "replace")]
    return "".join(pieces)


def wide_folded(text: bytes, width: int = 0) -> bytes | None:
    """``text`` in the readings a client decoding it otherwise than as UTF-8 sees
    (``decoded_readings``: as the UTF-16 or UTF-32 it reads as, as a legacy encoding), each
    folded, joined by newlines; None when it reads as none, ``UNFOLDABLE`` when one cannot be
    folded. With ``width``, ``text`` is rows of that many bytes (a fixed-width character
    array), each decoded on its own, a newline between them. Offsets into it index none of
    ``text``'s: a value found in it spans ``text`` whole."""
    readings = decoded_readings(text, width)
    if not readings:
        return None
    if any(reading is UNFOLDABLE for reading in readings):
        return UNFOLDABLE
    return b"\n".join(readings)


def decoded_readings(text: bytes, width: int = 0) -> list[bytes]:
    """The folded forms of ``text`` decoded as the UTF-16 or UTF-32 it reads as
    (``wide_reading``) and, when it is not UTF-8, with surrogates written as UTF-8 joined
    (``_utf8_read``) and as each legacy encoding it reads as text in (``legacy_readings``),
    ``UNFOLDABLE`` for one that cannot be folded; ``width`` as for
    ``wide_folded``. One search for a NUL, and for UTF-8 text one decode, for most text."""
    readings: list[bytes] = []
    wide = wide_reading(text, width)
    if wide is not None:
        readings.append(wide)
    if not text.isascii() and not is_utf8(text):
        if 0xED in text and _SURROGATES.search(text) is not None:
            # The UTF-8 reading with surrogates joined (``_utf8_read``): a caller that reads
            # bytes that are not UTF-8 only this way (``numbers``) reads it too.
            readings.append(_fold(_utf8_read(_rowed(text, width, b"\n") if width else text)))
        readings += [form for _, form in legacy_readings(text, width)]
    return readings


def wide_reading(text: bytes, width: int = 0) -> bytes | None:
    """``text`` decoded as the UTF-16 or UTF-32 it reads as (``wide_encoding``) and folded;
    None when it reads as neither, ``UNFOLDABLE`` when it cannot be folded. ``width`` as for
    ``wide_folded``: None too when a row is not whole code units."""
    encoding = wide_encoding(text)
    if encoding is None:
        return None
    breaks = 0
    if width:
        newline = "\n".encode(encoding)
        if width % len(newline):
            return None
        breaks = len(text) // width - 1
        text = _rowed(text, width, newline)
    guessed = not text.startswith(_MARKS)
    return _fold(text.decode(encoding, "replace"), guessed, breaks)


def _rowed(text: bytes, width: int, newline: bytes) -> bytes:
    """``text``'s rows of ``width`` bytes with ``newline`` between them."""
    if len(text) // width <= _FEW_ROWS:  # numpy's calls cost more than a join of a few slices
        return newline.join([text[start : start + width] for start in range(0, len(text), width)])
    rows = np.frombuffer(text, dtype=np.uint8)[: len(text) // width * width].reshape(-1, width)
    between = np.tile(np.frombuffer(newline, dtype=np.uint8), (len(rows), 1))
    joined = np.hstack([rows, between]).tobytes()[: -len(newline)]
    rest = text[len(text) // width * width :]
    return joined + newline + rest if rest else joined


_FEW_ROWS: Final = 16


def is_utf8(text: bytes) -> bool:
    """Whether ``text`` is UTF-8: a decode, which bytes that are not stop at their first
    byte that does not decode (binary data: within a few bytes)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Bytes that are not UTF-8 are text in another encoding to a client that decodes them so:
# ``\xa3\xb4\xa3\xb1`` is ``４１`` in GBK, ``\x82\x53\x82\x50`` in Shift_JIS, ``4111\xa01111``
# a card with no-break spaces in Windows-1252. The legacy encodings still in common use, each
# as the decoder a browser (WHATWG Encoding) or Windows uses for its label, a superset of the
# older standard: GB18030 (GB2312 and GBK, and through its four-byte sequences every Unicode
# character: digits of any script, zero-width spaces), CP932 (Shift_JIS with NEC's circled
# digits), EUC-JIS-2004 (EUC-JP with JIS X 0213's circled digits), CP949 (EUC-KR and UHC),
# Big5-HKSCS and CP950 (Big5: their circled digits differ), Windows-1252 (what a browser
# decodes "latin1" and "ascii" as: dashes and a no-break space in 0x80-0xFF). Full-width
# digits and spaces are the same bytes in the EUC encodings and GB2312; what differs between
# them is the rest (circled and parenthesized digits, dashes), so each is read.
LEGACY_ENCODINGS: Final = ("gb18030", "cp932", "euc_jis_2004", "cp949", "big5hkscs", "cp950", "cp1252")
# A legacy reading is read when at most one character in this many of it, plus
# ``_LEGACY_SLACK``, is a replacement or a control character folding drops (NULs aside:
# padding). Text written in an
# encoding decodes with none; bytes of an image or of compressed data have one in eight or more
# (their control bytes alone are one in nine), and such bytes are not read: a reading costs
# a decode and a fold. Control bytes are the same characters in every one of these encodings
# (no multi-byte sequence holds one), so one count of them stops binary data before any decode.
_LEGACY_STRAY: Final = 32
_LEGACY_SLACK: Final = 4


def legacy_readings(text: bytes, width: int = 0) -> list[tuple[str, bytes]]:
    """(encoding, folded form) of each reading of ``text`` in ``LEGACY_ENCODINGS`` that reads
    as text (``_LEGACY_STRAY``), that no other before it reads the same; a form may be
    ``UNFOLDABLE``. Meant for bytes that are not UTF-8. ``width`` as for ``wide_folded``
    (no multi-byte sequence of these encodings holds a newline byte: a row's last sequence
    cut short is read as a replacement character, as decoding the row alone reads it)."""
    breaks = 0
    if width and len(text) > width:
        breaks = -(-len(text) // width) - 1
        text = _rowed(text, width, b"\n")
    nuls = _nuls(text)  # padding (a fixed-width array's, a C string's), as in a wide guess
    controls = len(text) - len(text.translate(None, CONTROLS)) - nuls
    if controls > (len(text) - nuls) // _LEGACY_STRAY + _LEGACY_SLACK:
        return []
    readings: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for encoding in LEGACY_ENCODINGS:
        decoded = text.decode(encoding, "replace")
        strays = controls + decoded.count(_REPLACEMENT)
        if decoded in seen or strays > (len(decoded) - nuls) // _LEGACY_STRAY + _LEGACY_SLACK:
            continue
        seen.add(decoded)
        # A guess, as a wide decode without a byte order mark is: an unassigned code point
        # fails it closed only when it reads as words (``_fold``); a cursor movement is the
        # UTF-8 reading's to fail closed (ASCII: the same sequence there).
        readings.append((encoding, _fold(decoded, True, breaks, moves=False)))
    return readings


def _legacy_folded(encoding: str, text: bytes) -> bytes:
    """``text`` decoded as ``encoding`` and folded, as ``legacy_readings`` folds it: how a
    raw detection's offsets are placed in that reading (``uncovered``)."""
    return _fold(text.decode(encoding, "replace"), True, moves=False)


def _fold(decoded: str, guessed: bool = False, breaks: int = 0, moves: bool = True) -> bytes:
    """``decoded`` folded (``folded``), or ``UNFOLDABLE``. ``guessed``: decoded as the UTF-16
    or UTF-32 its NULs suggest, with no byte order mark, ``breaks`` newlines put between its
    rows (``_reads_as_guessed_text``). ``moves``: False for a reading whose escape sequences
    are those of the UTF-8 reading (a legacy one: they are ASCII), which decides on them:
    each is read as a space."""
    shown, moved = _shown(decoded)
    verdict: list[bool] = []  # whether ``shown`` reads as text, once asked: a pass over it

    def reads() -> bool:
        if not verdict:
            verdict.append(_reads_as_guessed_text(shown, breaks) if guessed else reads_as_text(shown))
        return verdict[0]

    if moved and moves and reads():
        return UNFOLDABLE
    budget = MAX_GROWTH * len(shown) + _SLACK
    parts: list[str] = []
    size = 0
    for piece in _slices(shown):
        part = unicode_data.normalize("NFKC", piece)
        size += len(part)
        if size > budget:
            return UNFOLDABLE
        parts.append(part.translate(_TABLE))
    return _finished("".join(parts), guessed, reads)


def _finished(result: str, guessed: bool, reads: Callable[[], bool]) -> bytes:
    """``result`` (a text normalized and translated, ``_fold``) with its unassigned code
    points settled (``reads``: whether the text reads as text), encoded; or ``UNFOLDABLE``."""
    if _UNASSIGNED in result:
        if reads():
            return UNFOLDABLE
        # Not text: a character joining nothing; in a guessed decode, nothing (docstring).
        result = result.replace(_UNASSIGNED, "" if guessed else "\ufffd")
    return result.encode("utf-8", "surrogatepass")


# A slice of ``_SLICE`` characters ends before the next ASCII character within this many:
# NFKC composes nothing with an ASCII character before it (no composition's second character
# is ASCII, and one ends reordering), so slices cut there normalize as the whole text does,
# wherever the text starts (a piece of it folded on its own, ``_folded_offsets``; a chunk,
# ``_fold_chunks``). Text with no ASCII character so near is cut at ``_SLICE`` (a letter and
# its marks may compose differently across that cut; never a digit, a dash, a space).
_SLICE_REACH: Final = 4096
_ASCII_CHAR: Final = re.compile("[\x00-\x7f]")


def _slices(text: str) -> list[str]:
    """``text`` in slices of about ``_SLICE`` characters, each cut before an ASCII one."""
    if len(text) <= _SLICE:
        return [text]
    slices: list[str] = []
    start = 0
    while start < len(text):
        end = start + _SLICE
        if end < len(text):
            found = _ASCII_CHAR.search(text, end, end + _SLICE_REACH)
            end = end if found is None else found.start()
        slices.append(text[start:end])
        start = end
    return slices


# Byte order marks, UTF-32's first (UTF-32-LE's begins with UTF-16-LE's).
_BYTE_ORDER_MARKS: Final = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_MARKS: Final = tuple(mark for mark, _ in _BYTE_ORDER_MARKS)
_UTF16_MARKS: Final = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
_MARK_STARTS: Final = tuple(_UTF16_MARKS)


def wide_encoding(text: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec (with its byte order) ``text`` reads as: the one its byte
    order mark names, else the one whose NULs it has. Of its code units that are not all NUL
    (padding is), UTF-32's are code points (at most U+10FFFF: a NUL as the high byte, at most
    0x10 next to it) in seven of eight units, so a few stray units do not hide it; UTF-16's
    have a NUL as their high byte in one in eight or more (an ASCII character), four times as
    many as the other way round. None, after one search for a NUL, for text without a byte
    order mark or NULs, and after one count for text with fewer NULs than either pattern
    needs (one in sixteen bytes: an image's bytes); else counts over numpy views (``_nuls``)."""
    if 0 not in text:
        return _UTF16_MARKS.get(text[:2])
    for mark, encoding in _BYTE_ORDER_MARKS:
        if text.startswith(mark):
            return encoding
    if _nuls(text) * 16 < len(text):
        return None
    count = len(text) // 4
    for encoding, high, dtype in (("utf-32-le", 3, "<u4"), ("utf-32-be", 0, ">u4")):
        # Seven in eight units with a NUL high byte, padding or not: a count before numpy.
        if _nuls(text, high, count * 4, 4) * 8 >= count * 7:
            code_points = np.frombuffer(text, dtype=dtype, count=count)
            zero = int(np.count_nonzero(code_points == 0))  # padding
            units = count - zero
            if units >= 2 and (int(np.count_nonzero(code_points <= 0x10FFFF)) - zero) * 8 >= units * 7:
                return encoding
    size = len(text) // 2 * 2
    odd, even = _nuls(text, 1, size, 2), _nuls(text, 0, size, 2)
    # All-NUL units count in both; what UTF-16 needs of the rest (below) needs this of all.
    if abs(odd - even) * 32 < 3 * (size // 2 - min(odd, even)):
        return None
    zero = int(np.count_nonzero(np.frombuffer(text, dtype="<u2", count=size // 2) == 0))
    units = size // 2 - zero
    low_first = odd - zero  # a character's low byte, then a NUL
    high_first = even - zero
    if low_first >= 2 and low_first * 8 >= units and low_first >= 4 * high_first:
        return "utf-16-le"
    if high_first >= 2 and high_first * 8 >= units and high_first >= 4 * low_first:
        return "utf-16-be"
    return None


def reads_wide(text: bytes) -> bool:
    """Whether ``text`` reads as UTF-16 or UTF-32 text (``wide_encoding``), as
    ``hidden_by_folding`` reads it. One search for a NUL and a look at the first two bytes
    for text without either: most text. What a ``partial`` mask asks of a value
    (``enforce.strategies``): each character of such text is up to four bytes read apart."""
    return (0 in text or text.startswith(_MARK_STARTS)) and wide_encoding(text) is not None


# From this many bytes on, NULs are counted by numpy: ``bytes.count`` of a byte as common as
# one in four (a dark image's, an array of small numbers) takes 2.4 ms a MB, numpy 0.07 ms.
_COUNT_BY_NUMPY: Final = 4096


def _nuls(text: bytes, start: int = 0, stop: int | None = None, step: int = 1) -> int:
    """How many NULs ``text[start:stop:step]`` holds."""
    if len(text) < _COUNT_BY_NUMPY:
        return text[start:stop:step].count(0)
    return int(np.count_nonzero(np.frombuffer(text, dtype=np.uint8)[start:stop:step] == 0))


def read_length(char: str) -> int:
    """How many characters the detectors read ``char`` as, folded: ``⑪`` is two digits, a
    zero-width space none. What a ``partial`` mask counts (``enforce.strategies``) in text
    that does not read as UTF-16 or UTF-32 (``reads_wide``): there a character folding drops
    here (``\\x11\\x18``) is one that counts (a Mongolian digit), so such text is starred whole."""
    if char.isascii():
        return 0 if char in _ASCII_CONTROLS else 1
    return len(unicode_data.normalize("NFKC", char).translate(_TABLE))


def hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None = None,
    wide: bool = True,
) -> dict[int, list[Detection]]:
    """For each text whose folded form (or its form decoded as UTF-16 or UTF-32 and folded,
    ``wide_reading``, unless ``wide`` is False; or, for text that is not UTF-8, decoded as a
    legacy encoding and folded, ``legacy_readings``; or its rendered reading, markup a
    renderer drops dropped, ``rendered_reading``; or each order a reader may see it in,
    ``display_readings``, a raw detection placed over the characters it covers) shows a
    value of a detector that ``found`` (the detections of the texts themselves, by index)
    does not cover (``uncovered``): one
    detection per such detector spanning the whole text. Where each value is, not how many:
    a plain SSN that folding joins to a digit (``111-22-3333\u200b0``) must not stand in for
    one only the folded form shows. A text that cannot be folded (``UNFOLDABLE``) fails
    closed: every detector spans it whole. Identical texts (a tensor of many one-byte
    elements) are read once, each placed against its own ``found``."""
    if len(texts) > 1 and len(set(texts)) < len(texts):
        return _hidden_in_distinct(texts, detectors, found, wide)
    return _hidden_by_folding(texts, detectors, found, wide)


def _hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None,
    wide: bool,
) -> dict[int, list[Detection]]:
    """``hidden_by_folding``, each text read on its own."""
    forms: list[bytes] = []
    owners: list[int] = []
    # How each form folds a piece of its text, to place the text's offsets in it; None: a
    # wide decode, none of whose offsets maps to the text's.
    folds: list[Callable[[bytes], bytes | None] | None] = []
    # For a display reading: the reading and how the text's detections are placed in it
    # (``display_readings``); None for every other form.
    shown_in: list[tuple[bytes, Placer] | None] = []
    reordering: dict[int, bytes | None] = {}  # text that is not ASCII -> its folded form
    result: dict[int, list[Detection]] = {}
    # Markup in any text as written: one look at them all (a newline between two texts
    # neither joins markup to a value nor parts it from one), not one per text.
    markup = len(texts) < 2 or may_render(b"\n".join(texts))
    for index, text in enumerate(texts):
        form = folded(text)
        if form is UNFOLDABLE:
            if detectors:
                result[index] = unfoldable_spans(len(text), detectors)
            continue
        # A bidi control or a right-to-left character (so not ASCII): each order a reader
        # may see the text in (``display_readings``), read beside the folded form, below.
        if not text.isascii():
            reordering[index] = form
        # Markup a renderer drops next to a value's character (``123<b></b>-45-6789``): the
        # rendered reading too, its pieces rendered whatever they hold (``rendered_folded``).
        # Folded text is asked on its own: a control character may part markup from a digit.
        shown = _markup_reading(text, form) if markup or form is not None else None
        if shown is not None:
            forms.append(shown)
            owners.append(index)
            folds.append(rendered_folded)
            shown_in.append(None)
        if form is None:
            continue  # ASCII without control characters: no NUL, no byte order mark either
        others: list[tuple[bytes | None, Callable[[bytes], bytes | None] | None]] = []
        # Two C-level checks before its wide form is worked out (``wide_encoding``); an int is
        # found with memchr, where ``b"\x00" in text`` takes several times longer.
        if wide and (0 in text or text.startswith(_MARK_STARTS)):
            others.append((wide_reading(text), None))
        # Bytes that do not decode left a replacement character in the folded form, or were
        # surrogates (``_utf8_read``): two searches, and a decode for text that holds either
        # as written (a decode stops at the first byte that does not decode).
        if (_REPLACEMENT_BYTES in form or 0xED in text) and not is_utf8(text):
            others += [(reading, partial(_legacy_folded, name)) for name, reading in legacy_readings(text)]
        forms.append(form)
        owners.append(index)
        folds.append(folded)
        shown_in.append(None)
        for other, fold in others:
            if other is UNFOLDABLE:
                if detectors:
                    result[index] = unfoldable_spans(len(text), detectors)
            elif other is not None and other != form:
                forms.append(other)
                owners.append(index)
                folds.append(fold)
                shown_in.append(None)
    if reordering:
        for index in _add_shown(texts, reordering, forms, owners, folds, shown_in):
            if detectors:
                result[index] = unfoldable_spans(len(texts[index]), detectors)
    if not forms:
        return result
    more_of: dict[int, dict[str, str]] = {}  # index -> detector -> label, found only folded
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        if index in result:
            continue  # failed closed already
        text = texts[index]
        raw = (found or {}).get(index, ())
        placing = shown_in[position]
        if placing is not None:  # a display reading: the text's detections placed in it
            reading, place = placing
            named = uncovered(hits, place(raw), len(reading), (reading, forms[position]), _shown_folded)
        else:
            fold = folds[position]
            folding = None if fold is None else (text, forms[position])
            named = uncovered(hits, raw, len(text), folding, fold or folded)
        if named:
            more_of.setdefault(index, {}).update(named)
    for index, named in more_of.items():
        if index not in result:
            size = len(texts[index])
            result[index] = [Detection(name, named[name], 0, size) for name in sorted(named)]
    return dict(sorted(result.items())) if more_of else result


def _add_shown(
    texts: Sequence[bytes],
    candidates: Mapping[int, bytes | None],
    forms: list[bytes],
    owners: list[int],
    folds: list[Callable[[bytes], bytes | None] | None],
    shown_in: list[tuple[bytes, Placer] | None],
) -> list[int]:
    """Add the display readings (``display_readings_of``), folded, of ``texts`` at the
    indices of ``candidates`` that differ from their folded forms (``candidates``' values;
    None: the text itself), to scan (``_hidden_by_folding``), and their markup's too
    (rendered as written, then reordered: a browser lays out what markup leaves); the
    indices of those one of which cannot be folded (``UNFOLDABLE``). A reading whose offsets
    place nothing (text that is not UTF-8, its markup's) is read as a wide decode is: only
    a detection spanning the text whole covers a value in it."""
    indices = [index for index in candidates if not texts[index].isascii() and reorders(texts[index])]
    if not indices:
        return []
    drawn = {index: rendered(texts[index]) for index in indices if may_render(texts[index])}
    drawn = {index: each for index, each in drawn.items() if each != texts[index]}
    every = display_readings_of([texts[index] for index in indices] + list(drawn.values()))
    readings = dict(zip(indices, every, strict=False))
    for index, more in zip(drawn, every[len(indices) :], strict=True):
        readings[index] = readings[index] + [(reading, None) for reading, _ in more]
    unfoldable: list[int] = []
    for index, own in readings.items():
        form = candidates[index]
        seen = {texts[index] if form is None else form}
        for reading, place in own:
            each = _shown_folded(reading)
            if each is UNFOLDABLE:
                unfoldable.append(index)
                break
            if each in seen:
                continue
            seen.add(each)
            forms.append(each)
            owners.append(index)
            folds.append(None if place is None else _shown_folded)
            shown_in.append(None if place is None else (reading, place))
    return unfoldable


def _hidden_in_distinct(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None,
    wide: bool,
) -> dict[int, list[Detection]]:
    """``hidden_by_folding`` of ``texts``, some of them identical: each distinct text read
    once, against each distinct set of detections ``found`` gives its copies (a PEM block
    from an element before covers one copy and not another)."""
    keys: dict[tuple[bytes, tuple[Detection, ...]], int] = {}
    key_of: list[int] = []
    raw_of = (found or {}).get
    for index, text in enumerate(texts):
        raw = raw_of(index)
        key_of.append(keys.setdefault((text, tuple(raw) if raw else ()), len(keys)))
    distinct = list(keys)
    hidden = _hidden_by_folding(
        [text for text, _ in distinct],
        detectors,
        {at: list(raw) for at, (_, raw) in enumerate(distinct) if raw},
        wide,
    )
    return {index: list(hidden[key]) for index, key in enumerate(key_of) if key in hidden}


def uncovered(
    hits: Sequence[Detection],
    raw: Sequence[Detection],
    size: int,
    folding: tuple[bytes, bytes] | None,
    fold: Callable[[bytes], bytes | None] = folded,
) -> dict[str, str]:
    """The detectors (and their labels) of ``hits``, found in another form of a text of
    ``size`` bytes, with a value some byte of which no detection of the same detector in
    ``raw`` (found in the text itself) covers: a mask on ``raw`` leaves that byte as it is.
    ``folding``: (the text, its folded form ``hits`` index), so ``raw``'s offsets are mapped
    into the folded form (``_folded_offsets``, each piece folded by ``fold``: a legacy
    reading's decode and fold for one, ``_legacy_folded``); None: that form's offsets map to
    none of the text's (a wide decode), and only a detection spanning the whole text covers a
    value in it.
    A value over two detections side by side (``ann@x.com\u200bbob@y.com`` folds to one
    email) is covered: each of its bytes is masked as a value of that detector."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for hit in raw:
        spans.setdefault(hit.detector, []).append((hit.start, hit.end))
    named: dict[str, str] = {}
    pending: list[Detection] = []
    for hit in hits:
        if hit.detector in named:
            continue
        own = spans.get(hit.detector)
        if not own:
            named[hit.detector] = hit.label  # a value the raw scan found none of
        elif not any(start <= 0 and end >= size for start, end in own):
            pending.append(hit)  # covered whole otherwise: nothing to map
    pending = [hit for hit in pending if hit.detector not in named]
    if not pending:
        return named
    names = {hit.detector for hit in pending}
    offsets = None if folding is None else _folded_offsets(*folding, spans, names, fold)
    if offsets is None:  # no offset of the text maps into this form: each value is its own
        named.update((hit.detector, hit.label) for hit in pending)
        return named
    merged = {
        name: _merged([(offsets[start], offsets[end]) for start, end in spans[name]])
        for name in {hit.detector for hit in pending}
    }
    for hit in pending:
        if hit.detector not in named and not _within(merged[hit.detector], hit.start, hit.end):
            named[hit.detector] = hit.label
    return named


def _folded_offsets(
    text: bytes,
    form: bytes,
    spans: Mapping[str, Sequence[tuple[int, int]]],
    names: set[str],
    fold: Callable[[bytes], bytes | None] = folded,
) -> dict[int, int] | None:
    """Where each offset of ``text`` that starts or ends a span of ``spans`` (of ``names``)
    falls in ``form``, ``text`` folded: ``text`` is folded a piece at a time, cut at those
    offsets, and the pieces must make ``form``. None when they do not (folding joined
    something across a cut: a mark composed with the letter before it, a backspace over the
    last digit of a value, a piece that cannot be folded on its own): the values of ``form``
    are then placed nowhere, and fail closed. Folds ``text`` once more, and only for text
    whose folded form shows a value of a detector its raw scan found too."""
    cuts = sorted({0, len(text), *(offset for name in names for span in spans[name] for offset in span)})
    offsets: dict[int, int] = {}
    parts: list[bytes] = []
    size = 0
    for start, end in pairwise(cuts):
        offsets[start] = size
        piece = text[start:end]
        part = fold(piece)
        if part is UNFOLDABLE:
            return None
        part = piece if part is None else part
        parts.append(part)
        size += len(part)
    offsets[len(text)] = size
    return offsets if b"".join(parts) == form else None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` in order, those that overlap or touch joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _within(merged: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies in one of ``merged`` (``_merged``: disjoint, apart)."""
    at = bisect_right(merged, (start, _AFTER_ALL)) - 1
    return at >= 0 and merged[at][0] <= start and end <= merged[at][1]


_AFTER_ALL: Final = 1 << 62


def unfoldable_spans(size: int, detectors: DetectorSet) -> list[Detection]:
    """What an ``UNFOLDABLE`` text of ``size`` bytes may hide: anything, so every detector of
    ``detectors`` spans it whole."""
    return [Detection(name, detectors.label_of(name), 0, size) for name in sorted(detectors.names)]
