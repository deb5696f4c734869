"""A stream's released text read with what it sends next, in the order a reader sees it: pure.

A client joins a stream's pieces and shows the joined text in display order (``display_order``):
``ssn \\u202eא`` in one piece and ``9876-54-321`` in the next shows ``ssn 123-45-6789`` (the
override runs on into the next piece and reverses it), a right-to-left letter before a piece's
``9876 54 321`` shows its groups in reverse order, and a letter after released ``6789 45 123!``
turns on the right-to-left reading that shows them reversed. No piece read alone shows a value,
and the carry-over cuts between pieces where a value's characters (as stored) cannot run on
(``carryover``, ``carried_forms``, ``split_values``, ``held_integers``). So each text of a
stream (a request's output element or output of code points; a routed stream's field path)
keeps a ``DisplayContext`` of what of it was released, and each piece about to be released is
read joined to it: a value the joined text shows in an order a reader may see it in, read
from characters that neither the released text nor the piece shows it from in any reading of
its own, is one only their joining shows (a value is its characters, not its text: an earlier
copy of it, masked in its own reply, says nothing of a later one that only the joining shows;
the same characters showing it in another order show nothing new). The piece must not go
out: each piece is masked on its own, so the stream ends
(``STREAM_VALUE_SPLIT``) before it leaves. A piece is what one classification reads whole (a
reply's element or output, a routed string path's messages released together, which
``split_values.straddled`` reads joined; a routed integer path's message: ``per_message``).
Characters are read as the classifier reads integers as characters (``characters``: each
folded on its own, moved whole into each order), text and code points alike.

Why read, not hold: a right-to-left character reorders what follows it without end (an
override until it is closed, and a browser collapsing newlines never closes it), and token ids
read as characters hold right-to-left code points and the controls' own all the time: holding
from them to a request's final reply would hold every such stream whole.

Cost: text without a right-to-left character or a bidi control is not read (``reorders``: a
C-level search of a piece that is not ASCII); of it only a number before a text's (or a
paragraph's) first letter is kept, which a later right-to-left character would reverse, and a
text with none is not followed at all once it settles (``settled``; an ASCII piece after it is
looked at with a C-level search or two: a few microseconds a reply). Text that holds one is
read joined, a piece at a time, when the piece holds a character a value is made of or
reorders: one display reading of the kept text and the piece (the native algorithm), and one
of each alone when that shows any value. Measured (INT32 token ids below 50,000, which hold
such code points after a few replies): about 20 µs more a reply of one id, 150 µs of sixteen.

What is kept is bounded (``_compact``): past ``_ROOM`` windows only what a later piece can
still reach in some display order is kept, the rest given by a stand-in that keeps the order
of what is kept. Reach is counted in characters that show: what folding drops (a zero width
space, a mark, a filler, an escape sequence a terminal reads) shows as nothing, so a run of
it between a value and where a later piece shows takes no room (``_showing_before``). A later
piece shows next to the released text's last characters, or next to the start of a run it
continues: the run of right-to-left characters after the last left-to-right letter (and the
characters before it, which show beside the run reversed), the run of left-to-right letters
after the last right-to-left one (a right-to-left reading shows it as a block, its start next
to what comes after it), a trailing run of digits and their separators, each explicit
embedding, override or isolate still open (and the characters around it), the last paragraph
separator; each of these per level of explicit embedding and for the open paragraph on its
own. While a text (or its open paragraph) holds no right-to-left
character, its start up to its first left-to-right letter is kept whole when it holds a
digit. Each dropped stretch leaves its first and last strong character (as a letter no value
holds, of the same bidi class), the controls in it a kept part opens or closes, and a
paragraph separator when it held one. A start longer than ``_LEAD_LIMIT`` windows, or kept
parts longer than ``_KEPT_LIMIT``, cannot be kept: a later piece that may reorder such a text
ends the stream (``UNREADABLE``).

Not read so: bracket pairs whose opener was dropped (N0 pairs what the kept text holds); text
a stream gives otherwise than as UTF-8 or code points (UTF-16 and legacy decodes of bytes, the
raw bytes of wider numbers read as text, ``carried_forms``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable
from typing import Any, Final

import numpy as np

from labelgate.classify import characters, reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.display_order import (
    classes_of,
    display_orders_of_points,
    overrides,
    points_reorder,
    reorders,
)
from labelgate.classify.folding import TERMINAL_SEQUENCES
from labelgate.errors import ResourceExhausted

# What ``DisplayContext.take`` answers for a piece that may reorder text it cannot read.
UNREADABLE: Final = "\x00unreadable"
# What a settled text (``DisplayContext.settled``) dropped and followed again starts from: a
# left-to-right letter, so nothing after it reads as the text's start.
SETTLED: Final = "\u4e00"
# The longest value, in characters, where no carry-over's window says (``split_values``).
DEFAULT_REACH: Final = 256
# Kept text past this many windows is compacted (``_compact``); text that reorders nothing,
# past this many.
_ROOM: Final = 4
_ROOM_PLAIN: Final = 2
# A text's start (or its open paragraph's) up to its first left-to-right letter is kept whole
# up to this many windows; past it a piece that may reorder the text cannot be read with it.
_LEAD_LIMIT: Final = 4
# Kept parts past this many windows (open controls stacked deep) cannot be kept either.
_KEPT_LIMIT: Final = 64
# Bidi class letters (``display_order._CODES``).
_L, _R, _AL, _EN, _AN = (ord(letter) for letter in "LRAEN")
_STRONG: Final = np.array([_L, _R, _AL], dtype=np.uint8)
_RIGHT_TO_LEFT: Final = np.array([_R, _AL, _AN], dtype=np.uint8)
# A number and what joins its digits (W1-W5): digits, Arabic digits, separators, terminators,
# marks, what shows as nothing.
_NUMBER: Final = np.array([ord(letter) for letter in "ENsctmb"], dtype=np.uint8)
_PARAGRAPH: Final = ord("B")
_SEPARATORS: Final = "\n\r\x1c\x1d\x1e\x85\u2029"  # (class B)
_LETTER: Final = re.compile(r"[^\W\d_]")
_DIGIT: Final = re.compile(r"\d")
# ASCII letters, and the stand-in for left-to-right letters dropped (``_STAND_IN``).
_ASCII_LETTER: Final = re.compile("[A-Za-z\u4e00]")
_ASCII_DIGIT: Final = re.compile(r"[0-9]")
_ASCII_SEPARATORS: Final = "\n\r\x1c\x1d\x1e"
# The ASCII controls folding drops (``characters``): they show as nothing.
_ASCII_HIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A letter no value holds, of each strong class: what a dropped stretch's first and last
# strong character is given as.
_STAND_IN: Final = {_L: "\u4e00", _R: "\u05d0", _AL: "\u0627"}
# The explicit formatting characters: openers (isolates apart) and the two that close.
_EMBEDDINGS: Final = frozenset({0x202A, 0x202B, 0x202D, 0x202E})
_ISOLATES: Final = frozenset({0x2066, 0x2067, 0x2068})
_PDF, _PDI = 0x202C, 0x2069
_EXPLICIT: Final = np.array(sorted({*_EMBEDDINGS, *_ISOLATES, _PDF, _PDI}), dtype=np.uint32)
# The characters (folded) a built-in detector's value is made of: letters, digits, the
# separators values hold, and what escapes are written with (``carried_forms``'s characters);
# any printable ASCII with custom patterns.
_MEMBERS: Final = re.compile(rb"[0-9A-Za-z \t\-.,'_+()@%=:\\&#;/]")
_PRINTABLE: Final = re.compile(rb"[\t -~]")
_LAST_CODE_POINT: Final = 0x10FFFF
_REPLACEMENT: Final = 0xFFFD


def text_of_points(points: np.ndarray[Any, Any], unit: int = 4) -> str:
    """The text a client makes of integers read as characters: UTF-16 code units (``unit``
    2: each value's low 16 bits, as its raw bytes read), else code points; a value that is no
    character as U+FFFD."""
    values = np.asarray(points)
    if values.dtype.kind not in "iu":  # (values past int64, or no integers)
        values = np.array(
            [
                (value & 0xFFFF if unit == 2 else value) if isinstance(value, int) else -1
                for value in values.tolist()
            ],
            dtype=object,
        )
        values = np.where((values >= 0) & (values <= _LAST_CODE_POINT), values, -1).astype(np.int64)
    if unit == 2:
        units = np.where(values == -1, _REPLACEMENT, values.astype(np.int64) & 0xFFFF)
        return units.astype("<u2").tobytes().decode("utf-16-le", "surrogatepass")
    valid = (values >= 0) & (values <= _LAST_CODE_POINT)
    codes = np.where(valid, values, _REPLACEMENT).astype("<u4")
    return codes.tobytes().decode("utf-32-le", "surrogatepass")


class DisplayContext:
    """One text of a stream: what of it was released (or a stand-in for it, ``_compact``), and
    whether a piece released after it shows a value only the two joined show (module docstring)."""

    __slots__ = (
        "_members",
        "_paragraph_plain",
        "_plain",
        "_room",
        "_shown",
        "blind",
        "detectors",
        "reach",
        "reordered",
        "tail",
        "text",
    )

    def __init__(self, detectors: DetectorSet, reach: int, text: str = "", tail: bool = False) -> None:
        self.detectors = detectors
        # Keep the last characters of text that reorders nothing too, and settle only after a
        # character no value holds: pieces a message each, each read alone, when a run a value
        # may go on in leaves a message at a time (``Followed``: ``per_message``).
        self.tail = tail
        self.reach = reach  # the longest value, in characters (the carry-over's window)
        self.text = text
        self.reordered = False  # ``text`` holds a right-to-left character or a bidi control
        self.blind = False  # a part a later piece can reach was too long to keep
        self._room = _ROOM_PLAIN * reach
        self._plain = True  # ``text`` is ASCII but for stand-ins (``_compact_ascii``)
        # The open paragraph (after the last separator) holds no right-to-left character or
        # bidi control: one a piece brings turns on its right-to-left reading (split at
        # separators), in which a number at its start shows reversed.
        self._paragraph_plain = True
        self._members = _MEMBERS if detectors.longest_custom_match() == 0 else _PRINTABLE
        # ``text`` as characters read (``_Shown``), once worked out and while ``text`` holds
        # nothing a terminal leaves out: a piece's are added, not worked out again.
        self._shown: _Shown | None = None

    def take(self, piece: str, charge: Callable[[int], None] | None = None) -> str | None:
        """The detector of a value the released text and ``piece`` after it show joined, in an
        order a reader may see them in, and neither shows alone; ``UNREADABLE`` when ``piece``
        may reorder text that could not be kept; else None. ``piece`` then joins what was
        released. Nothing is read unless one of them may reorder, nor when the text may but
        ``piece`` holds no character a value is made of (``_members``) and no explicit control,
        and its right-to-left characters (if any) join an open paragraph that held one before:
        its characters join no value, it turns on no reading not read before, and it can only
        end a run the released text ends in or settle the direction of the spaces it ends in.
        ``charge``: told how many characters are to be read, before any is (a reply's value
        budget)."""
        if not piece:
            return None
        moves = not piece.isascii() and reorders(piece)
        found, shown = None, None
        if self.reordered or (moves and self._may_be_reordered()):
            shown = _Shown.of(piece)
            if (
                moves and (not self.reordered or self._paragraph_plain or overrides(piece))
            ) or self._members.search(shown.folded()) is not None:
                if charge is not None:
                    charge(len(self.text) + len(piece))
                found = UNREADABLE if self.blind else self._made_by_joining(piece, shown)
        if shown is not None and self._shown is not None and not _terminal(piece):
            self._shown = self._shown.joined(shown)
        else:
            self._shown = None
        self.text += piece
        self._plain = self._plain and piece.isascii()
        if moves or self.reordered:  # (else the paragraph reorders nothing, as the text)
            separator = max(piece.rfind(each) for each in _SEPARATORS)
            if separator >= 0:
                self._paragraph_plain = piece.isascii() or not reorders(piece[separator + 1 :])
            elif moves:
                self._paragraph_plain = False
        if moves and not self.reordered:
            self.reordered, self._room = True, _ROOM * self.reach
        if len(self.text) > self._room:
            self._compact()
        return found

    def _may_be_reordered(self) -> bool:
        """Whether a piece that reorders may show a value with this text (which reorders
        nothing): it holds a character a value is made of, or a part of it could not be kept.
        (A first piece, or one after a settled text, is read by its own classification as a
        whole.)"""
        if self.blind:
            return True
        if not self.text:
            return False
        shown = self._shown if self._shown is not None else _Shown.of(self.text)
        return self._members.search(shown.folded()) is not None

    @property
    def size(self) -> int:
        """What is kept, in characters (callers count it toward what a stream holds)."""
        return len(self.text)

    def _made_by_joining(self, piece: str, shown: _Shown) -> str | None:
        """The detector of a value a display reading of the kept text and ``piece`` joined
        shows from characters no reading of either alone shows it from (``_Seen``): the same
        value read from other characters (an earlier copy, masked in its own reply) is another
        value, one the caller may never have had."""
        if _terminal(self.text + piece):
            joined = _Shown.of(self.text + piece)  # (a sequence may run across the two)
        else:
            if self._shown is None:
                self._shown = _Shown.of(self.text)
            joined = self._shown.joined(shown)
        found = []
        for order in joined.display_orders():
            reading = joined.folded(order)
            hits = self.detectors.scan(reading)
            if hits:
                found.append((order, reading, hits))
        if not found:
            return None  # (most pieces: no value in any order)
        before = self._shown if self._shown is not None else _Shown.of(self.text)
        seen = _Seen(self.detectors)
        seen.add(before, self.text, 0)
        seen.add(shown, piece, len(self.text))
        made = set()
        for order, reading, hits in found:
            sources = joined.sources(order)
            made |= {
                hit.detector
                for hit in hits
                if not seen.shows(hit.detector, reading[hit.start : hit.end], sources[hit.start : hit.end])
            }
        return min(made) if made else None

    def _compact(self) -> None:
        """Keep of ``text`` what a later piece can reach (module docstring), a stand-in for the
        rest. Text that reorders nothing keeps only its start and its open paragraph's start,
        when a right-to-left reading may reverse a number there (``_lead``): nothing else of it
        shows beside a later piece otherwise than as stored."""
        text = self.text
        if self._plain and not self.tail:
            self._compact_ascii()
            return
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        classes = np.frombuffer(classes_of(points).encode("ascii"), dtype=np.uint8)
        size, reach = len(points), self.reach
        # The distance a later piece reaches is counted in characters that show: those that
        # show as nothing (folding drops them) take no room, however many lie between.
        shows = _showing_before(text, points)
        keep = np.zeros(size, dtype=bool)
        pairs, anchors = _explicit(points, classes, 0)
        paragraphs = np.flatnonzero(classes == _PARAGRAPH)
        start = int(paragraphs[-1]) if len(paragraphs) else -1
        if self.reordered or self.tail:
            keep[_back(shows, size, reach) :] = True
            if start >= 0:
                anchors.append(start)
                anchors += _explicit(points[start + 1 :], classes[start + 1 :], start + 1)[1]
            for at in anchors:
                keep[_back(shows, at, reach) : _ahead(shows, at, reach + 1)] = True
        for lead in [0] if start < 0 else [0, start + 1]:
            span = self._lead(points, classes, lead, shows)
            if span is None:
                self.blind = True
            else:
                keep[lead:span] = True
        self.text, self._shown = _stand_in(text, points, classes, keep, pairs), None
        self.reordered = reorders(self.text)
        if len(self.text) > _KEPT_LIMIT * reach:
            self.blind, self.text = True, self.text[-2 * reach :]
        self._room = max((_ROOM if self.reordered else _ROOM_PLAIN) * reach, 2 * len(self.text))

    def _compact_ascii(self) -> None:
        """``_compact`` of ASCII text (which reorders nothing), with C-level searches that stop
        at a text's first letter and its last paragraph separator: most traffic is ASCII, and a
        megabyte of it costs no pass of its own here."""
        text, reach = self.text, self.reach
        separator = max(text.rfind(each) for each in _ASCII_SEPARATORS)
        starts = [0] if separator < 0 else [0, separator + 1]
        kept: list[tuple[int, int]] = []
        for start in starts:
            letter = _ASCII_LETTER.search(text, start)
            first = letter.start() if letter is not None else len(text)
            if _ASCII_DIGIT.search(text, start, first) is None:
                continue
            if first - start > _LEAD_LIMIT * reach:
                self.blind = True
                continue
            end = first + reach
            if "\x1b" in text or "\x08" in text or _ASCII_HIDDEN.search(text, first, end) is not None:
                points = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype("<u4")
                end = _ahead(_showing_before(text, points), first, reach)  # (``_compact``)
            kept.append((start, min(len(text), end)))
        parts, dropped_from = [], 0
        for start, end in kept:
            start = max(start, dropped_from)
            if start > dropped_from:
                parts.append(_ascii_gap(text, dropped_from, start))
            parts.append(text[start:end])
            dropped_from = max(dropped_from, end)
        if dropped_from < len(text):
            parts.append(_ascii_gap(text, dropped_from, len(text)))
        self.text, self._shown = "".join(parts), None
        self._room = max(_ROOM_PLAIN * reach, 2 * len(self.text))

    @property
    def settled(self) -> str | None:
        """What this text may be followed again from when nothing later can show a value with
        it but what it shows alone (and what a right-to-left character a later piece brings
        reorders in a later number, which a fresh follow reads so): it reorders nothing, and no
        digit comes before the first letter of its start or of its open paragraph. Then it is
        given by whether a left-to-right letter came (``SETTLED``: a later number is no text's
        start) and whether the open paragraph holds one (else ``SETTLED`` and a separator: a
        later number starts that paragraph). None otherwise (``_settled_after``)."""
        if self.reordered or self.blind:
            return None
        if self.tail and not (self.text and self._ends_apart()):
            return None  # (a run a value may go on in, a message each: kept)
        return _settled_after("", self.text, wide=not self._plain)

    def _ends_apart(self) -> bool:
        """Whether the text ends in a character no value holds (``characters.folds_to``)."""
        view = characters.folds_to(ord(self.text[-1]))
        if view in (characters.DROPPED, characters.LONGER):
            return False
        return view == characters.OTHER or self._members.search(bytes((view,))) is None

    def _lead(
        self,
        points: np.ndarray[Any, Any],
        classes: np.ndarray[Any, Any],
        start: int,
        shows: np.ndarray[Any, Any],
    ) -> int | None:
        """Where the part of a text (or paragraph) from ``start`` that a right-to-left reading
        a later piece turns on may reverse ends, a window past its first left-to-right letter,
        when a digit comes before that letter; else ``start`` (nothing to keep: no number is
        reversed there, or the text or paragraph reorders already and was read so); None when
        it is longer than ``_LEAD_LIMIT`` windows (it cannot be kept)."""
        rest = classes[start:]
        if np.isin(rest, _RIGHT_TO_LEFT).any() or np.isin(points[start:], _EXPLICIT).any():
            return start
        letters = np.flatnonzero(rest == _L)
        first = int(letters[0]) if len(letters) else len(rest)
        if not (rest[:first] == _EN).any():
            return start
        if first > _LEAD_LIMIT * self.reach:
            return None
        return _ahead(shows, start + first, self.reach)


def _ascii_gap(text: str, start: int, end: int) -> str:
    """``_gap`` of ASCII text: whether a letter came before its last paragraph separator, the
    separator, and whether one came after it, each letter as a stand-in no value holds."""
    separator = max(text.rfind(each, start, end) for each in _ASCII_SEPARATORS)
    first = _ASCII_LETTER.search(text, start, end if separator < 0 else separator) is not None
    if separator < 0:
        return _STAND_IN[_L] if first else ""
    last = _ASCII_LETTER.search(text, separator + 1, end) is not None
    return (_STAND_IN[_L] if first else "") + "\n" + (_STAND_IN[_L] if last else "")


def _showing_before(text: str, points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per position of ``text`` (``points``: its code points) and its end, how many of the
    characters before it show: not those folding drops, nor, where a terminal reads the text,
    those of an escape sequence or a backspace (``characters.shown_view``, whose every such
    span is counted here as nothing; the text is not folded, a table look-up)."""
    table = _hidden_code_points()
    hidden = table[np.minimum(points, len(table) - 1)]
    above = np.flatnonzero(points >= len(table))
    if len(above):  # (rare: a few planes' worth of code points are read one by one)
        hidden[above] = [characters.folds_to(code) == characters.DROPPED for code in points[above].tolist()]
    if _terminal(text):
        for match in TERMINAL_SEQUENCES.finditer(text):
            hidden[match.start() : match.end()] = True
    return np.concatenate(([0], np.cumsum(~hidden)))


@functools.cache
def _hidden_code_points() -> np.ndarray[Any, Any]:
    """Per code point below U+20000, whether folding drops it (``characters.folds_to``): made
    once, in about 25 ms."""
    return np.fromiter(
        (characters.folds_to(code) == characters.DROPPED for code in range(_HIDDEN_TABLE_END)),
        dtype=bool,
        count=_HIDDEN_TABLE_END,
    )


_HIDDEN_TABLE_END: Final = 0x20000


def _back(shows: np.ndarray[Any, Any], at: int, count: int) -> int:
    """Where the stretch before ``at`` holding ``count`` characters that show starts (``shows``:
    ``_showing_before``); 0 if fewer come before it."""
    return int(np.searchsorted(shows, shows[at] - count, "left"))


def _ahead(shows: np.ndarray[Any, Any], at: int, count: int) -> int:
    """Where the stretch from ``at`` holding ``count`` characters that show ends (past the
    text's end if fewer come from it)."""
    return int(np.searchsorted(shows, shows[min(at, len(shows) - 1)] + count, "left"))


def _explicit(
    points: np.ndarray[Any, Any],
    classes: np.ndarray[Any, Any],
    offset: int,
) -> tuple[dict[int, int], list[int]]:
    """The explicit controls of a text (``points``, its bidi ``classes``; ``offset``: where it
    starts in the kept text) as the whole text reads them (X1-X8, a paragraph separator ending
    none): the pairs a control closes (opener -> closer, by position), and the positions a
    later piece may show next to: each control still open, and, at each level still open and
    outside them all, the start of the run of right-to-left characters after the last
    left-to-right letter, of the run of left-to-right letters after the last right-to-left
    one, and of the trailing run of a number's characters (``_runs``)."""
    at = np.flatnonzero(np.isin(points, _EXPLICIT)).tolist()
    stack: list[tuple[int, bool]] = []  # (position, isolate)
    pairs: dict[int, int] = {}
    level = np.zeros(len(points), dtype=np.int64)  # per character: the opener it is inside (+1), 0 outside
    last = 0
    for position in at:
        level[last:position] = stack[-1][0] + 1 if stack else 0
        code = int(points[position])
        level[position] = stack[-1][0] + 1 if stack else 0
        if code in _EMBEDDINGS or code in _ISOLATES:
            stack.append((position, code in _ISOLATES))
        elif code == _PDF and stack and not stack[-1][1]:
            pairs[stack.pop()[0]] = position
        elif code == _PDI and any(isolate for _, isolate in stack):
            while stack:
                opener, isolate = stack.pop()
                pairs[opener] = position
                if isolate:
                    break
        last = position + 1
    level[last:] = stack[-1][0] + 1 if stack else 0
    anchors = [opener for opener, _ in stack]
    for inside in [0, *(opener + 1 for opener, _ in stack)]:
        where = np.flatnonzero(level == inside)
        anchors += [int(where[run]) for run in _runs(classes[where])]
    return {opener + offset: closer + offset for opener, closer in pairs.items()}, [
        anchor + offset for anchor in anchors
    ]


def _runs(classes: np.ndarray[Any, Any]) -> list[int]:
    """Where the runs a later piece may continue start among ``classes`` (one level's
    characters): the right-to-left characters after the last left-to-right letter, or the
    left-to-right letters after the last right-to-left character, and a trailing number."""
    starts = []
    letters = np.flatnonzero(classes == _L)
    backwards = np.flatnonzero(np.isin(classes, _RIGHT_TO_LEFT))
    last_letter = int(letters[-1]) if len(letters) else -1
    last_back = int(backwards[-1]) if len(backwards) else -1
    if last_back > last_letter:
        starts.append(int(backwards[np.searchsorted(backwards, last_letter + 1)]))
    elif last_letter > last_back:
        starts.append(int(letters[np.searchsorted(letters, last_back + 1)]))
    numbers = np.isin(classes, _NUMBER)
    if len(numbers) and numbers[-1]:
        others = np.flatnonzero(~numbers)
        starts.append(int(others[-1]) + 1 if len(others) else 0)
    return starts


def _stand_in(
    text: str,
    points: np.ndarray[Any, Any],
    classes: np.ndarray[Any, Any],
    keep: np.ndarray[Any, Any],
    pairs: dict[int, int],
) -> str:
    """``text``'s kept characters in order, each dropped stretch given by its first and last
    strong character (a letter no value holds, of its class), the explicit controls in it
    whose partner lies outside it (and those none closes), and a paragraph separator when it
    held one: what is kept reads as it did beside what was dropped."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    parts: list[str] = []
    dropped_from = 0
    for first, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if first > dropped_from:
            parts.append(_gap(points, classes, dropped_from, first, pairs))
        parts.append(text[first:end])
        dropped_from = end
    if dropped_from < len(points):
        parts.append(_gap(points, classes, dropped_from, len(points), pairs))
    return "".join(parts)


def _gap(
    points: np.ndarray[Any, Any],
    classes: np.ndarray[Any, Any],
    start: int,
    end: int,
    pairs: dict[int, int],
) -> str:
    """The stand-in for the dropped ``[start, end)`` (``_stand_in``)."""
    closers = {closer: opener for opener, closer in pairs.items()}
    kept = []
    for position in (start + np.flatnonzero(np.isin(points[start:end], _EXPLICIT))).tolist():
        partner = pairs.get(position, closers.get(position))
        if partner is None and int(points[position]) in (_PDF, _PDI):
            continue  # a closer that closes nothing
        if partner is None or not start <= partner < end:
            kept.append(position)
    separators = np.flatnonzero(classes[start:end] == _PARAGRAPH)
    if len(separators):
        kept.append(start + int(separators[-1]))
    kept.sort()
    strong = start + np.flatnonzero(np.isin(classes[start:end], _STRONG))
    first = [int(at) for at in strong[:1] if not kept or at < kept[0]]
    after = kept[-1] if kept else start - 1
    last = [int(at) for at in strong[-1:] if at > after and (not first or at != first[0])]
    return "".join(
        [
            *(_STAND_IN[int(classes[at])] for at in first),
            *(chr(int(points[at])) if int(classes[at]) != _PARAGRAPH else "\n" for at in kept),
            *(_STAND_IN[int(classes[at])] for at in last),
        ]
    )


class _Shown:
    """A text's characters as the classifier reads integers as characters (``characters``):
    each one's code point and the byte it folds to (``characters.shown_view``: ASCII,
    ``DROPPED`` for what shows as nothing or a terminal leaves out, ``OTHER`` for one no value
    holds, ``LONGER`` for one folding makes several of), read in an order by moving each
    character's form whole (as ``characters`` reads them in display order)."""

    __slots__ = ("points", "view")

    def __init__(self, points: np.ndarray[Any, Any], view: np.ndarray[Any, Any]) -> None:
        self.points = points
        self.view = view

    @classmethod
    def of(cls, text: str) -> _Shown:
        if len(text) <= _FEW and not _terminal(text):
            # A token or a few: a character at a time (``characters.folds_to``: what
            # ``shown_view`` reads each as where no escape sequence or backspace is near).
            codes = [ord(char) for char in text]
            return cls(
                np.array([_NOT_A_CHARACTER if 0xD800 <= code <= 0xDFFF else code for code in codes]),
                np.array([characters.folds_to(code) for code in codes], dtype=np.uint8),
            )
        units = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        points, _, view = characters.shown_view(units)
        return cls(points, view)

    def joined(self, after: _Shown) -> _Shown:
        return _Shown(np.concatenate((self.points, after.points)), np.concatenate((self.view, after.view)))

    def folded(self, order: np.ndarray[Any, Any] | None = None) -> bytes:
        """The characters in ``order`` (as stored: None), each as it folds."""
        view = self.view if order is None else self.view[order]
        text = view.tobytes()
        if _LONGER_BYTE in text:
            points = self.points if order is None else self.points[order]
            longer = characters.longer_forms()
            forms = [longer.get(code, _OTHER_BYTE) for code in points[view == characters.LONGER].tolist()]
            pieces = text.split(_LONGER_BYTE)
            parts = [b""] * (2 * len(pieces) - 1)
            parts[0::2] = pieces
            parts[1::2] = forms
            text = b"".join(parts)
        return text.translate(None, _DROPPED_BYTE)

    def display_orders(self) -> list[np.ndarray[Any, Any]]:
        """Each order a reader may see the text in (``display_order``) other than as stored."""
        points = np.where(self.points < _NOT_A_CHARACTER, self.points, _REPLACEMENT)
        if not points_reorder(points):
            return []
        return display_orders_of_points(points)

    def sources(self, order: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """For each byte of ``folded(order)``, the position of the character it comes from."""
        at = np.arange(len(self.points)) if order is None else order
        view = self.view[at]
        sizes = (view != characters.DROPPED).astype(np.int64)
        longer = np.flatnonzero(view == characters.LONGER)
        if len(longer):
            forms = characters.longer_forms()
            sizes[longer] = [len(forms.get(code, _OTHER_BYTE)) for code in self.points[at[longer]].tolist()]
        return np.repeat(at, sizes)


class _Seen:
    """The values readings of a text alone show (``add``), each with the characters it is
    read from (their positions in the joined text): what a joined reading shows from the same
    characters was read by their own classification; anything else is new (``shows``)."""

    __slots__ = ("_detectors", "_seen")

    def __init__(self, detectors: DetectorSet) -> None:
        self._detectors = detectors
        self._seen: set[tuple[str, bytes, bytes]] = set()

    def add(self, shown: _Shown, text: str, offset: int) -> None:
        """What ``text`` (``shown``: its ``_Shown``; ``offset``: where it starts) shows alone:
        as stored (its UTF-8, and folded), and in each order a reader may see it in."""
        raw = text.encode("utf-8", "surrogatepass")
        self._read(raw, lambda: _utf8_sources(text), offset)
        self._read(shown.folded(), shown.sources, offset)
        for order in shown.display_orders():
            self._read(shown.folded(order), functools.partial(shown.sources, order), offset)

    def _read(self, reading: bytes, sources: Callable[[], np.ndarray[Any, Any]], offset: int) -> None:
        hits = self._detectors.scan(reading)
        if not hits:
            return
        at = sources() + offset
        self._seen.update(
            (hit.detector, reading[hit.start : hit.end], _characters(at[hit.start : hit.end])) for hit in hits
        )

    def shows(self, detector: str, value: bytes, sources: np.ndarray[Any, Any]) -> bool:
        """Whether a text alone showed ``value`` from the characters at ``sources`` (in any
        order: the same characters showing the same value show nothing new)."""
        return (detector, value, _characters(sources)) in self._seen


def _characters(sources: np.ndarray[Any, Any]) -> bytes:
    return np.unique(sources).astype(np.int64).tobytes()


def _utf8_sources(text: str) -> np.ndarray[Any, Any]:
    """For each byte of ``text``'s UTF-8, the position of the character it comes from."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    sizes = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
    return np.repeat(np.arange(len(codes)), sizes)


_DROPPED_BYTE: Final = bytes((characters.DROPPED,))
_LONGER_BYTE: Final = bytes((characters.LONGER,))
_OTHER_BYTE: Final = bytes((characters.OTHER,))
_NOT_A_CHARACTER: Final = 0x110000
# Pieces this short are read a character at a time (``_Shown.of``).
_FEW: Final = 16


def _terminal(text: str) -> bool:
    """Whether ``text`` holds what a terminal does not show as it is: an escape sequence or a
    backspace, which ``characters.shown_view`` reads with what follows them."""
    return "\x1b" in text or "\x08" in text


class Followed:
    """The texts of one stream (by key: an output's element, a routed stream's field path),
    each with its ``DisplayContext``. A settled text (``DisplayContext.settled``) is dropped and
    its key noted (at most ``noted`` of them: past it the oldest is forgotten, and a text
    followed again after that reads as a text's start, which may only end its stream sooner);
    at most ``limit`` others are followed at once, past which the stream ends
    (``STREAM_HELD_TOO_LARGE``). ``kept_bytes``: what they keep, counted toward what the stream
    holds."""

    def __init__(
        self,
        detectors: DetectorSet,
        reach: int,
        limit: int | None = None,
        noted: int | None = None,
        per_message: bool = False,
    ) -> None:
        self.detectors = detectors
        self.reach = reach
        # Pieces a message each, each read alone, where a run a value may go on in leaves a
        # message at a time (``held_integers``): the last characters are kept, and a text
        # settles only when it ends in a character no value holds.
        self.per_message = per_message
        self.limit = limit
        self.noted = noted
        self.kept_bytes = 0
        self._live: dict[Hashable, DisplayContext] = {}
        # Settled texts, what each is followed again from: insertion-ordered, the oldest first.
        self._settled: dict[Hashable, str] = {}

    def take(self, key: Hashable, piece: str, charge: Callable[[int], None] | None = None) -> str | None:
        """``DisplayContext.take`` of the text ``key``'s next released ``piece``. An ASCII piece
        after a settled text that leaves it settled (most traffic: no number before a
        paragraph's first letter) is not followed: only what it settles as is worked out
        (``_settled_after``), with a C-level search or a few."""
        context = self._live.get(key)
        if context is None and piece.isascii() and not self.per_message:
            start = self._settled.get(key, "")
            settled = _settled_after(start, piece)
            if settled is not None:
                if settled != start:
                    self._settled.pop(key, None)
                    if settled:
                        self._note(key, settled)
                return None
        fresh = context is None
        if context is None:
            context = DisplayContext(
                self.detectors, self.reach, self._settled.get(key, ""), tail=self.per_message
            )
            before = 0
        else:
            before = _cost(context)
        found = context.take(piece, charge)
        # A followed text settles only when ``_compact`` leaves it less (or as it came).
        now = context.settled if fresh or self.per_message or _cost(context) < before else None
        if now is not None:
            self._live.pop(key, None)
            self._settled.pop(key, None)
            if now:
                self._note(key, now)
            self.kept_bytes -= before
            return found
        self._live[key] = context
        self.kept_bytes += _cost(context) - before
        if self.limit is not None and len(self._live) > self.limit:
            raise ResourceExhausted(
                reasons.STREAM_HELD_TOO_LARGE,
                f"a stream follows more than {self.limit} texts at once, each read with what follows it "
                "in the order a reader sees them (limits.max_fields)",
            )
        return found

    def _note(self, key: Hashable, settled: str) -> None:
        self._settled[key] = settled
        if self.noted is not None and len(self._settled) > self.noted:
            del self._settled[next(iter(self._settled))]


def _settled_after(start: str, piece: str, wide: bool = False) -> str | None:
    """What a settled text (``start``: ``DisplayContext.settled``, "" for none yet) followed by
    ``piece`` (which reorders nothing) settles as; None when a digit comes before the first
    letter of the text's start or of a paragraph (a number a right-to-left reading may
    reverse, to be kept). ``wide``: ``piece`` may hold more than ASCII. C-level searches, a
    few per paragraph of ``piece``; one for a piece of a paragraph that holds a letter."""
    letters, digits = (_LETTER, _DIGIT) if wide else (_ASCII_LETTER, _ASCII_DIGIT)
    separators = _SEPARATORS if wide else _ASCII_SEPARATORS
    state, at = start, 0
    while True:
        if state == SETTLED:
            found = [place for place in (piece.find(each, at) for each in separators) if place >= 0]
            if not found:
                return SETTLED
            state, at = SETTLED + "\n", min(found) + 1
            continue
        letter = letters.search(piece, at)
        end = letter.start() if letter is not None else len(piece)
        if digits.search(piece, at, end) is not None:
            return None
        if letter is None:
            return state
        state, at = SETTLED, letter.end()


# What a followed text costs beyond its kept characters (an object, its key, its slots),
# counted toward a stream's holdings (``Followed``).
_CONTEXT_COST: Final = 512


def _cost(context: DisplayContext) -> int:
    return _CONTEXT_COST + 4 * context.size
