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
as ``123-45``): ANSI CSI escape sequences and every C0/C1 control character and DEL but tab,
newline and carriage return (text the detectors read as it is) are dropped too.

``hidden_by_folding`` scans that form of each text that ``may_hide`` (not ASCII, or holding
such a control character: ``folded`` answers None for any other text). A detector it finds
that the scan of the text itself did not spans the whole text, since offsets into the
folded form do not index the original: as for text hidden by JSON escapes.

NFKC can multiply a text's length (U+FDFA becomes 18 characters: a 16 MB reply of it took
11 s and 587 MB to fold whole). Text is folded a slice at a time, and text whose folded form
grows past ``MAX_GROWTH`` times its length is not folded further: ``folded`` answers
``UNFOLDABLE``, and ``hidden_by_folding`` fails it closed, every detector spanning it whole.
So folding costs at most about ``MAX_GROWTH`` times the text, on any text.

Best effort: an upstream can always encode data in a way no detector reads (base64), and the
catalog's labels are what holds then. This closes the cheap evasions.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Final

from labelgate.classify.detectors import Detection, DetectorSet

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
# What a terminal shows none of: ANSI escape sequences (CSI: colours, cursor moves; OSC up to
# its BEL or ST: window titles, hyperlinks; character-set designations; the two-byte ones:
# keypad modes, resets), and a character a backspace then steps back over (overstrike:
# ``678X\b9`` shows as ``6789``).
TERMINAL_SEQUENCES: Final = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()*+\-./][ -~]|[ -/]*[0-~])"
    r"|[^\x08]\x08"
)


def _ignorable(code: int) -> bool:
    return any(first <= code <= last for first, last in IGNORABLE_RANGES)


def may_hide(text: bytes) -> bool:
    """Whether ``text``'s folded form may differ from it: it is not ASCII, or holds a control
    character folding drops. At most two C-level passes over ``text``: cheap enough to ask
    of every buffer."""
    return not text.isascii() or not text.translate(_CONTROLS_PAST_ASCII).isascii()


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
    """``folded``'s answer for text that grows too much when folded (see the docstring)."""


UNFOLDABLE: Final = _Unfoldable()

# Characters remembered by the table; past this it starts over (an upstream could send every
# code point).
_TABLE_SIZE = 4096


class _Fold(dict[int, str | None]):
    """``str.translate``'s table, worked out per character on first use (the table of all of
    Unicode would be large; a text meets few characters)."""

    def __missing__(self, code: int) -> str | None:
        if len(self) >= _TABLE_SIZE:
            self.clear()
        char = chr(code)
        category = unicodedata.category(char)
        folded: str | None
        if (
            category in _DROPPED_CATEGORIES
            or _ignorable(code)
            or (category == "Cc" and char not in _KEPT_CONTROLS)
        ):
            folded = None  # invisible, a control character or a mark on another: dropped
        elif (digit := unicodedata.digit(char, None)) is not None:
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


def _shown(text: str) -> str:
    """``text`` without what a terminal does not show (``TERMINAL_SEQUENCES``); searched only when it holds
    an ESC or a backspace."""
    return TERMINAL_SEQUENCES.sub("", text) if "\x1b" in text or "\x08" in text else text


def folded(text: bytes) -> bytes | None:
    """``text`` as the detectors should read it (see the module docstring), None when that
    is ``text`` itself, or ``UNFOLDABLE`` (test with ``is``) when it grows too much. ASCII
    text changes only by its control characters (``may_hide``)."""
    if text.isascii():
        if text.translate(_CONTROLS_PAST_ASCII).isascii():
            return None
        # No other character of ASCII text folds: NFKC and the table leave them as they are,
        # and the table drops exactly ``CONTROLS`` (a C-level delete when no escape sequence
        # or backspace needs ``_shown`` first).
        if b"\x1b" not in text and b"\x08" not in text:
            return text.translate(None, CONTROLS)
        return _shown(text.decode("ascii")).translate(_TABLE).encode("ascii")
    # Escape sequences go first: dropping their ESC alone would leave "[0m" in the text.
    decoded = _shown(text.decode("utf-8", "replace"))
    budget = MAX_GROWTH * len(decoded) + _SLACK
    parts: list[str] = []
    size = 0
    for start in range(0, len(decoded), _SLICE):
        part = unicodedata.normalize("NFKC", decoded[start : start + _SLICE])
        size += len(part)
        if size > budget:
            return UNFOLDABLE
        parts.append(part.translate(_TABLE))
    result = "".join(parts).encode("utf-8", "surrogatepass")
    return None if result == text else result


def read_length(char: str) -> int:
    """How many characters the detectors read ``char`` as, folded: ``⑪`` is two digits, a
    zero-width space none. What a ``partial`` mask counts (``enforce.strategies``)."""
    if char.isascii():
        return 0 if char in _ASCII_CONTROLS else 1
    return len(unicodedata.normalize("NFKC", char).translate(_TABLE))


def hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None = None,
) -> dict[int, list[Detection]]:
    """For each text whose folded form shows more matches of a detector than ``found`` (the
    detections of the texts themselves, by index) has for it: one detection per such
    detector spanning the whole text. Counted, not just named: a plain SSN beside one in
    Arabic-Indic digits must not hide the second. A text that cannot be folded
    (``UNFOLDABLE``) fails closed: every detector spans it whole."""
    forms: list[bytes] = []
    owners: list[int] = []
    result: dict[int, list[Detection]] = {}
    for index, text in enumerate(texts):
        form = folded(text)
        if form is UNFOLDABLE:
            if detectors:
                result[index] = unfoldable_spans(len(text), detectors)
        elif form is not None:
            forms.append(form)
            owners.append(index)
    if not forms:
        return result
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        seen = Counter(hit.detector for hit in (found or {}).get(index, ()))
        more = Counter(hit.detector for hit in hits) - seen
        if more:
            labels = {hit.detector: hit.label for hit in hits}
            result[index] = [Detection(name, labels[name], 0, len(texts[index])) for name in sorted(more)]
    return result


def unfoldable_spans(size: int, detectors: DetectorSet) -> list[Detection]:
    """What an ``UNFOLDABLE`` text of ``size`` bytes may hide: anything, so every detector of
    ``detectors`` spans it whole."""
    return [Detection(name, detectors.label_of(name), 0, size) for name in sorted(detectors.names)]
