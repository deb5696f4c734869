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
Bytes that are not text (more than one character in ``STRAY`` a control character or a
replacement character once decoded: an image's, audio's) are not failed closed so: there
such a code point is a character that joins nothing, as before.

Escape sequences that move the cursor or edit what a terminal shows (``\x1b[4D`` over
decoy digits, ``\x1b[6G``, ``\x1b[2J``, ``\x1b7``, device control strings) can show the
text's characters in any order and hide any of them: no one reading of the text is what a
terminal shows, so text holding one is ``UNFOLDABLE``. In bytes that are not text (above:
a dark image's pixels hold ESC-letter pairs) such a sequence is read as a space instead, a
separator: decoy digits overwritten stay apart from the value, and nothing is failed closed.

NFKC can multiply a text's length (U+FDFA becomes 18 characters: a 16 MB reply of it took
11 s and 587 MB to fold whole). Text is folded a slice at a time, and text whose folded form
grows past ``MAX_GROWTH`` times its length is not folded further: ``folded`` answers
``UNFOLDABLE``, and ``hidden_by_folding`` fails it closed, every detector spanning it whole.
So folding costs at most about ``MAX_GROWTH`` times the text, on any text.

Other readings of a text are read beside the folded one, in modules of their own:
bytes as a UTF-8 reader decodes them, and whether that is text (``decoded_text``); as a
client decoding them otherwise reads them, UTF-16, UTF-32 or a legacy encoding
(``other_encodings``); markup rendered and each order a reader may see text in
(``shown_text``); and which values any of those readings shows that the text's own
detections do not cover (``hidden_values``).

Best effort: an upstream can always encode data in a way no detector reads (base64), and the
catalog's labels are what holds then. This closes the cheap evasions.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING, Final

from labelgate.classify.decoded_text import (
    STRAY,
    reads_as_guessed_text,
    reads_as_text,
    stray_count,
    utf8_read,
)
from labelgate.classify.fold_chunks import FOLD_CHUNK, chunk_cuts
from labelgate.classify.markup import MARKUP_BYTES, may_render, native_gate

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
    if memo is not None and len(text) >= 2 * FOLD_CHUNK:
        result = _fold_chunks(text, memo)
    else:
        # Escape sequences go first: dropping their ESC alone would leave "[0m" in the text.
        result = fold_decoded(utf8_read(text))
    return None if result == text else result


def _fold_chunks(text: bytes, memo: FoldMemo) -> bytes:
    """``fold_decoded(utf8_read(text))``, a chunk at a time (``chunk_cuts``): each chunk read,
    shown and folded once per ``memo``, what ``fold_decoded`` decides over the whole text (whether
    it reads as text, moves the cursor, grows too much, holds an unassigned code point)
    decided from the chunks' counts, which add up to the whole text's."""
    chunks = [text[start:end] for start, end in pairwise(chunk_cuts(text))]
    seen = memo.shown
    shown: list[tuple[str, bool, int]] = []
    for chunk in chunks:
        entry = seen.get(chunk)
        if entry is None:
            part, moved = _shown(utf8_read(chunk))
            entry = seen[chunk] = (part, moved, stray_count(part))
        shown.append(entry)
    length = sum(len(part) for part, _, _ in shown)
    as_text = sum(strays for _, _, strays in shown) * STRAY <= length

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


def fold_decoded(decoded: str, guessed: bool = False, breaks: int = 0, moves: bool = True) -> bytes:
    """``decoded`` folded (``folded``), or ``UNFOLDABLE``. ``guessed``: decoded as the UTF-16
    or UTF-32 its NULs suggest, with no byte order mark, ``breaks`` newlines put between its
    rows (``reads_as_guessed_text``). ``moves``: False for a reading whose escape sequences
    are those of the UTF-8 reading (a legacy one: they are ASCII), which decides on them:
    each is read as a space."""
    shown, moved = _shown(decoded)
    verdict: list[bool] = []  # whether ``shown`` reads as text, once asked: a pass over it

    def reads() -> bool:
        if not verdict:
            verdict.append(reads_as_guessed_text(shown, breaks) if guessed else reads_as_text(shown))
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
    """``result`` (a text normalized and translated, ``fold_decoded``) with its unassigned code
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


def read_length(char: str) -> int:
    """How many characters ``char`` counts as where a ``partial`` mask keeps the last ones
    (``enforce.strategies``): as many as the detectors read it as, folded (``⑪`` is two
    digits, a zero-width space none), but a control character one, and a number drawn in one
    glyph (``⓫``, ``❿``, ``㉈``) as many as its digits (``_drawn_digits``). A control
    character folding drops is half a character of text that reads as UTF-16
    (``\\x11\\x18``: a Mongolian digit), which no count of none bounds."""
    if char.isascii():
        return 1
    category = unicode_data.category(char)
    if category == "Cc":
        return 1  # C1: dropped by folding, bytes of UTF-16 units all the same
    length = len(unicode_data.normalize("NFKC", char).translate(_TABLE))
    return max(length, _drawn_digits(char)) if category in _DRAWING else length


# Characters that draw a number's digits in one glyph and have no decomposition into them,
# so folding reads them as themselves (one character) where a person reads two digits:
# circled numbers in the negative, double-circled, dingbat and on-black-square forms (the
# plain ones, ``⑪``, decompose into their digits). Known by their name, their number by
# their numeric value; a keycap (``🔟``, no numeric value) by the circled number of its name.
_DRAWN_NUMBER: Final = re.compile(r"\bCIRCLED (?:SANS-SERIF )?NUMBER ")
_DRAWING: Final = frozenset({"No", "So"})  # their categories: numbers, and symbols (keycaps)
_KEYCAP: Final = "KEYCAP "


def _drawn_digits(char: str) -> int:
    """How many digits ``char`` draws when it draws a number of them (``_DRAWN_NUMBER``), else 0."""
    value = unicode_data.numeric(char, None)
    if value is None:
        name = unicode_data.name(char, "")
        if not name.startswith(_KEYCAP):
            return 0
        try:
            value = unicode_data.numeric(unicode_data.lookup("CIRCLED NUMBER " + name[len(_KEYCAP) :]))
        except (KeyError, ValueError):
            return 0
    elif value < 10 or _DRAWN_NUMBER.search(unicode_data.name(char, "")) is None:
        return 0
    return len(str(int(value))) if value == int(value) else 0
