"""What of a stream's released text is kept to read a later piece with, and what stands in for
the rest (``display_context``): pure.

Kept apart from the reading (``joined_reading``) because it bounds what a stream holds: each
text a stream follows keeps this much (``display_context.DisplayContext._compact``, which
applies it), however long the stream runs.

What is kept is bounded: past ``_ROOM`` windows (``display_context``) only what a later piece
can still reach in some display order is kept, the rest given by a stand-in that keeps the
order of what is kept (``stand_in``). Reach is counted in characters that show: what folding
drops (a zero width space, a mark, a filler, an escape sequence a terminal reads) shows as
nothing, so a run of it between a value and where a later piece shows takes no room
(``showing_before``, ``back``, ``ahead``). A later piece shows next to the released text's
last characters, or next to the start of a run it continues (``explicit``): the run of
right-to-left characters after the last left-to-right letter (and the characters before it,
which show beside the run reversed), the run of left-to-right letters after the last
right-to-left one (a right-to-left reading shows it as a block, its start next to what comes
after it), a trailing run of digits and their separators, each explicit embedding, override or
isolate still open (and the characters around it), the last paragraph separator; each of these
per level of explicit embedding and for the open paragraph on its own; and, for text that
reorders, every character within a window of a later piece in some order a reader may see the
two in, as the bidi algorithm reads them (``continuations``, ``shown_beside``: a letter of each
direction, a digit of each kind, a neutral, the explicit controls and the closers of its
brackets read after the text; weak types, bracket pairs and neutrals move where runs start as
no class run says). While a text (or its open paragraph) holds no right-to-left character, its
start up to its first left-to-right letter is kept whole when it holds a digit.

A dropped stretch leaves what the rest reads of it (``_Context.gap``): the explicit controls in
it a kept part opens or closes, those still open and those whose run holds something kept, in
either reading of paragraphs; the brackets a kept part or a later closer may pair with (BD16,
``bracket_pairs``); its first and last closed embedding (what follows one is a run sequence of
its own: X10); a paragraph separator and the first and last segment separator between what it
keeps, and a closer that closes nothing (its paragraph may be reordered); between them the
first and last character of a strong or number type, one of each kind it holds and its last
letter, as the weak rules leave them, with a neutral where one lay between letters and numbers
(``_summary``: what N0, N1 and the lowest level among them read). Each stands in as a mark of
its type that shows as nothing (``_RESOLVED_STAND_IN``): a stand-in never parts what the text
shows side by side. What is kept is then read after the same later pieces as the text was, and
must show what it keeps in the same orders, side by side where the text did (``reads_as``):
else the text is kept whole, and compacted again once it has grown (``ascii_gap`` for ASCII
text, with C-level searches, which reorders nothing). A start longer than ``_LEAD_LIMIT``
windows, or kept parts longer than ``_KEPT_LIMIT``, cannot be kept: a later piece that may
reorder such a text ends the stream (``display_context.UNREADABLE``).

A text that reorders nothing and has no number before its first letter (or its open
paragraph's) settles: it is kept as no more than whether a left-to-right letter came and
whether its open paragraph holds one (``SETTLED``, ``settled_after``).
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, Final

import numpy as np

from labelgate.classify import characters
from labelgate.classify.display_order import _PAIRS as _BRACKET_PAIRS
from labelgate.classify.display_order import bracket_points, display_orders_of
from labelgate.classify.folding import TERMINAL_SEQUENCES
from labelgate.classify.joined_reading import terminal

# What a settled text (``DisplayContext.settled``) dropped and followed again starts from: a
# left-to-right letter, so nothing after it reads as the text's start.
SETTLED: Final = "\u4e00"
# Bidi class letters (``display_order._CODES``).
L, _R, _AL, EN, _AN = (ord(letter) for letter in "LRAEN")
_STRONG: Final = np.array([L, _R, _AL], dtype=np.uint8)
RIGHT_TO_LEFT: Final = np.array([_R, _AL, _AN], dtype=np.uint8)
# A number and what joins its digits (W1-W5): digits, Arabic digits, separators, terminators,
# marks, what shows as nothing.
_NUMBER: Final = np.array([ord(letter) for letter in "ENsctmb"], dtype=np.uint8)
PARAGRAPH: Final = ord("B")
SEPARATORS: Final = "\n\r\x1c\x1d\x1e\x85\u2029"  # (class B)
# A letter, or the mark that stands in for left-to-right letters dropped (``_RESOLVED_STAND_IN``).
_LETTER: Final = re.compile(r"[^\W\d_]|\u200e")
_DIGIT: Final = re.compile(r"\d")
# ASCII letters, and the stand-in for left-to-right letters dropped (``_STAND_IN``).
ASCII_LETTER: Final = re.compile("[A-Za-z\u4e00]")
ASCII_DIGIT: Final = re.compile(r"[0-9]")
ASCII_SEPARATORS: Final = "\n\r\x1c\x1d\x1e"
# A letter no value holds, of each strong class: what a dropped stretch's first and last
# strong character is given as.
_STAND_IN: Final = {L: "\u4e00", _R: "\u05d0", _AL: "\u0627"}
# The explicit formatting characters: openers (isolates apart) and the two that close.
_EMBEDDINGS: Final = frozenset({0x202A, 0x202B, 0x202D, 0x202E})
_ISOLATES: Final = frozenset({0x2066, 0x2067, 0x2068})
_PDF, _PDI = 0x202C, 0x2069
EXPLICIT: Final = np.array(sorted({*_EMBEDDINGS, *_ISOLATES, _PDF, _PDI}), dtype=np.uint32)


def ascii_gap(text: str, start: int, end: int) -> str:
    """``_gap`` of ASCII text: whether a letter came before its last paragraph separator, the
    separator, and whether one came after it, each letter as a stand-in no value holds."""
    separator = max(text.rfind(each, start, end) for each in ASCII_SEPARATORS)
    first = ASCII_LETTER.search(text, start, end if separator < 0 else separator) is not None
    if separator < 0:
        return _STAND_IN[L] if first else ""
    last = ASCII_LETTER.search(text, separator + 1, end) is not None
    return (_STAND_IN[L] if first else "") + "\n" + (_STAND_IN[L] if last else "")


def showing_before(text: str, points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per position of ``text`` (``points``: its code points) and its end, how many of the
    characters before it show (``hidden``)."""
    return np.concatenate(([0], np.cumsum(~hidden(text, points))))


def hidden(text: str, points: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per character of ``text`` (``points``: its code points), whether it shows as nothing:
    folding drops it, or, where a terminal reads the text, it is part of an escape sequence
    or a backspace (``characters.shown_view``, whose every such span is counted here as
    nothing; the text is not folded, a table look-up)."""
    table = _hidden_code_points()
    found: np.ndarray[Any, Any] = table[np.minimum(points, len(table) - 1)]
    above = np.flatnonzero(points >= len(table))
    if len(above):  # (rare: a few planes' worth of code points are read one by one)
        found[above] = [characters.folds_to(code) == characters.DROPPED for code in points[above].tolist()]
    if terminal(text):
        for match in TERMINAL_SEQUENCES.finditer(text):
            found[match.start() : match.end()] = True
    return found


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


def back(shows: np.ndarray[Any, Any], at: int, count: int) -> int:
    """Where the stretch before ``at`` holding ``count`` characters that show starts (``shows``:
    ``showing_before``); 0 if fewer come before it."""
    return int(np.searchsorted(shows, shows[at] - count, "left"))


def ahead(shows: np.ndarray[Any, Any], at: int, count: int) -> int:
    """Where the stretch from ``at`` holding ``count`` characters that show ends (past the
    text's end if fewer come from it)."""
    return int(np.searchsorted(shows, shows[min(at, len(shows) - 1)] + count, "left"))


def explicit(
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
    at = np.flatnonzero(np.isin(points, EXPLICIT)).tolist()
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
    letters = np.flatnonzero(classes == L)
    backwards = np.flatnonzero(np.isin(classes, RIGHT_TO_LEFT))
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


def stand_in(
    text: str,
    points: np.ndarray[Any, Any],
    classes: np.ndarray[Any, Any],
    keep: np.ndarray[Any, Any],
    pairs: dict[int, int],
    brackets: tuple[list[dict[int, int]], list[int]],
) -> tuple[str, np.ndarray[Any, Any]]:
    """``text``'s kept characters in order, each dropped stretch given by what of it the rest
    reads (``_Context.gap``; ``pairs``: its explicit controls', ``brackets``: its bracket
    pairs and the openers still open, ``bracket_pairs``): what is kept reads as it did beside
    what was dropped. With it, where each character of ``text`` is in it (-1: dropped)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    parts: list[str] = []
    placed = np.full(len(points), -1, dtype=np.int64)
    context = _Context(points, classes, pairs, brackets)
    size = dropped_from = 0
    for first, end in [
        *zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True),
        (len(points), len(points)),
    ]:
        if first > dropped_from:
            gap, kept = context.gap(dropped_from, first)
            for position, at in kept:
                placed[position] = size + at
            parts.append(gap)
            size += len(gap)
        parts.append(text[first:end])
        placed[first:end] = np.arange(size, size + end - first)
        size += end - first
        dropped_from = end
    return "".join(parts), placed


# What stands in for a character a dropped stretch is read by, by its type as the weak rules
# leave it (W1-W7, ``_resolved``): one of that type that shows as nothing (a mark), so that a
# stand-in never parts what the text shows side by side (it may join what the text parts: a
# value the kept text shows alone is no value only a later piece makes). A digit no letter
# comes before reads as the paragraph's direction makes it (W7): a digit, one no value holds.
_RESOLVED_STAND_IN: Final = {
    L: "\u200e",  # LEFT-TO-RIGHT MARK
    _R: "\u200f",  # RIGHT-TO-LEFT MARK
    _AL: "\u061c",  # ARABIC LETTER MARK
    _AN: "\u0600",  # ARABIC NUMBER SIGN
    EN: "\U000102e1",  # COPTIC EPACT DIGIT ONE
}
_NOT_NEUTRAL: Final = np.array([L, _R, _AL, EN, _AN], dtype=np.uint8)
_SEGMENT: Final = ord("S")
# A paragraph separator and a segment separator, as a stand-in keeps them (a segment separator
# no value reads as a space).
_KEPT_AS: Final = {PARAGRAPH: "\n", _SEGMENT: "\x1f"}
# How many times ``_Context.gap`` looks again for what parts what it keeps.
_ROUNDS: Final = 4
# What stands in for neutrals (``_summary``): one that shows as nothing.
_NEUTRAL_STAND_IN: Final = "\ufff9"  # INTERLINEAR ANNOTATION ANCHOR (ON)
_SPACE_STAND_IN: Final = "\x0c"  # FORM FEED (WS)
# What L1 reads as white space: spaces, isolate controls and what X9 removes.
_SPACES: Final = np.frombuffer(b"wijfqxyXYpb", dtype=np.uint8)


class _Context:
    """What ``stand_in`` reads a text's dropped stretches with: the characters a stand-in
    keeps (explicit controls, ``pairs`` those they close; brackets, ``brackets``: their pairs
    and the openers still open), and each character's type as the weak rules leave a digit
    (``_resolved``), with where the next and the last of each kind ``_summary`` looks for lie
    and how many of each came before each position."""

    __slots__ = (
        "embeddings",
        "following",
        "items",
        "last_letter",
        "neutrals",
        "partners",
        "points",
        "preceding",
        "present",
        "segments",
        "separators",
        "spaces",
        "spans",
        "stray",
        "types",
    )

    def __init__(
        self,
        points: np.ndarray[Any, Any],
        classes: np.ndarray[Any, Any],
        pairs: dict[int, int],
        brackets: tuple[list[dict[int, int]], list[int]],
    ) -> None:
        self.points = points
        self.types = types = _resolved(classes)
        self.separators = np.flatnonzero(types == PARAGRAPH)
        # Each character a stand-in may keep, with its partner in each reading (a reader
        # collapsing newlines, one breaking lines at them): -1 for an opener none closes, the
        # character itself where it pairs with none there.
        controls = np.flatnonzero(np.isin(points, EXPLICIT) & ~np.isin(points, [_PDF, _PDI])).tolist()
        whole = _partners(pairs)
        whole.update((at, -1) for at in controls if at not in whole)
        explicit_readings = [whole]
        if len(self.separators) and controls:
            split = _partners(_split_pairs(points, classes, self.separators))
            split.update((at, _paragraph_end(at, self.separators)) for at in controls if at not in split)
            explicit_readings.append(split)
        # The explicit controls' runs, in either reading (one none closes: to its paragraph's
        # end, or the text's).
        spans = {
            (at, len(points)) if partner < 0 else (min(at, partner), max(at, partner))
            for reading in explicit_readings
            for at, partner in reading.items()
        }
        self.spans = np.array(sorted(spans), dtype=np.int64).reshape(-1, 2)
        # Openers a later closer may pair with: -1.
        readings = [*explicit_readings, *brackets[0], dict.fromkeys(brackets[1], -1)]
        positions = sorted(set().union(*readings))
        self.items = np.array(positions, dtype=np.int64)
        self.partners = np.array(
            [[reading.get(at, at) for reading in readings] for at in positions], dtype=np.int64
        ).reshape(len(positions), len(readings))
        # Segment separators (tabs): where a line is broken each shows at its paragraph's
        # level (L1), parting the runs around it.
        self.segments = np.flatnonzero(types == _SEGMENT)
        # Closed embeddings and overrides (each its own run sequence, and what follows it
        # another: X10), and the closers that close nothing (a PDI still makes its paragraph
        # one a reader may reorder).
        embeddings = sorted(
            (opener, closer)
            for opener, closer in pairs.items()
            if int(points[opener]) in _EMBEDDINGS
            and int(points[closer]) == _PDF
            and not ((self.separators > opener) & (self.separators < closer)).any()
        )
        self.embeddings = np.array(embeddings, dtype=np.int64).reshape(-1, 2)
        closed = set(pairs.values())
        self.stray = np.array(
            [at for at in np.flatnonzero(points == _PDI).tolist() if at not in closed], dtype=np.int64
        )
        size = len(types)
        at = np.arange(size)
        not_neutral = np.isin(types, _NOT_NEUTRAL)
        # Where the next character of a strong or number type lies from each position on, and
        # the last such character and the last letter before each.
        self.following = np.minimum.accumulate(np.where(not_neutral, at, size)[::-1])[::-1]
        self.preceding = np.concatenate(([-1], np.maximum.accumulate(np.where(not_neutral, at, -1))))
        letters = np.isin(types, _STRONG)
        self.last_letter = np.concatenate(([-1], np.maximum.accumulate(np.where(letters, at, -1))))
        # How many of each kind come before each position: white space (L1), letters of each
        # direction and numbers, and neutrals between numbers (``_AN``) and between a number
        # and a left-to-right letter (``L``), by the strong or number characters either side.
        self.spaces = _counts(np.isin(types, _SPACES))
        numbers = np.isin(types, _NUMBERS)
        self.present = {
            L: _counts(types == L),
            _R: _counts(np.isin(types, _RIGHT_ISH)),
            _AN: _counts(numbers),
        }
        before = np.maximum.accumulate(np.where(not_neutral, at, 0))
        after = np.minimum.accumulate(np.where(not_neutral, at, size - 1)[::-1])[::-1]
        number_before, number_after = numbers[before], numbers[after]
        letter_before, letter_after = types[before] == L, types[after] == L
        neutral = ~not_neutral
        self.neutrals = {
            _AN: _counts(neutral & number_before & number_after),
            L: _counts(neutral & ((letter_before & number_after) | (number_before & letter_after))),
        }

    def gap(self, start: int, end: int) -> tuple[str, list[tuple[int, int]]]:
        """The stand-in for the dropped ``[start, end)``: the explicit controls in it whose
        partner lies outside it in some reading (and the openers none closes), the brackets
        likewise and those a later closer may pair with, its first and last closed embedding
        or override (where the run sequences around it end: X10; others lie between them),
        its last closer that closes nothing, its first and last segment separator and its
        last paragraph separator; and before, between and after them what the rest reads of
        the characters there (``_summary``). With it, where each character of the text it
        keeps is in it."""
        first, last = np.searchsorted(self.items, [start, end])
        items, partners = self.items[first:last], self.partners[first:last]
        outside = ((partners < start) | (partners >= end)).any(axis=1)
        chosen = set(items[outside].tolist())
        inside = self.embeddings[(self.embeddings[:, 0] >= start) & (self.embeddings[:, 1] < end)]
        outermost: list[tuple[int, int]] = []
        for opener, closer in inside.tolist():
            if not outermost or opener > outermost[-1][1]:
                outermost.append((opener, closer))
        bounds = dict(outermost[:1] + outermost[-1:])
        chosen.update(bounds, bounds.values())
        # Between what it keeps: a paragraph separator (where each paragraph is read on its
        # own, what lies either side of one is read apart), then, in each paragraph, the
        # first and last segment separator and the last closer that closes nothing.
        # And each explicit control whose run holds some of that, with its partner.
        spans = self.spans[(self.spans[:, 0] >= start) & (self.spans[:, 1] < end)]
        kinds = ((self.separators, [-1]), (self.segments, [0, -1]), (self.stray, [-1]))
        for _ in range(_ROUNDS):
            before = len(chosen)
            for found, ends in kinds:
                edges = [start, *sorted(chosen), end]
                for low, high in itertools.pairwise(edges):
                    between = found[np.searchsorted(found, low) : np.searchsorted(found, high)]
                    if len(between):
                        chosen.update(int(between[at]) for at in ends)
            ordered = np.array(sorted(chosen), dtype=np.int64)
            holding = np.searchsorted(ordered, spans[:, 1]) - np.searchsorted(ordered, spans[:, 0], "right")
            chosen.update(spans[holding > 0].ravel().tolist())
            if len(chosen) == before:
                break
        parts = []
        kept = []
        size, at = 0, start
        for position in sorted(chosen):
            parts.append(self._summary(at, position))
            kept.append((position, size + len(parts[-1])))
            parts.append(_KEPT_AS.get(int(self.types[position]), chr(int(self.points[position]))))
            size += len(parts[-2]) + 1
            at = position + 1
        parts.append(self._summary(at, end))
        return "".join(parts), kept

    def _summary(self, start: int, end: int) -> str:
        """What the rest reads of the characters of ``[start, end)``, each as a stand-in of
        its type (``_RESOLVED_STAND_IN``): its first and last character of a strong or
        number type (N1 of what lies around it; W1-W7 at its edges) and its last letter (W2,
        W7), each kind of character it holds (a bracket pair holding it reads by them: N0;
        the lowest level among them decides the order of what lies around it: L2), and a
        neutral where one lies before or after them all, or between numbers or between a
        letter and a number with no right-to-left letter to take its level (N1, N2)."""
        if start >= end:
            return ""
        first = int(self.following[start])
        if first >= end:
            return self._neutrals(start, end)
        last = int(self.preceding[end])
        has = {kind: bool(counts[end] > counts[start]) for kind, counts in self.present.items()}
        parts = [_NEUTRAL_STAND_IN] if first > start else []
        parts.append(_RESOLVED_STAND_IN[int(self.types[first])])
        if first != last:
            parts += [_RESOLVED_STAND_IN[kind] for kind in (L, _R, _AN) if has[kind]]
            inner = {kind: bool(counts[last] > counts[first + 1]) for kind, counts in self.neutrals.items()}
            if not has[_R]:
                if inner[_AN]:  # (between numbers: a right-to-left neutral)
                    parts += [_RESOLVED_STAND_IN[_AN], _NEUTRAL_STAND_IN, _RESOLVED_STAND_IN[_AN]]
                if inner[L]:  # (between a letter and a number: the embedding's direction)
                    parts += [_RESOLVED_STAND_IN[L], _NEUTRAL_STAND_IN, _RESOLVED_STAND_IN[_AN]]
            letter = int(self.last_letter[end])
            if start <= letter < end:
                parts.append(_RESOLVED_STAND_IN[int(self.types[letter])])
            parts.append(_RESOLVED_STAND_IN[int(self.types[last])])
        parts.append(self._neutrals(last + 1, end))
        return "".join(parts)

    def _neutrals(self, start: int, end: int) -> str:
        """The stand-in for the neutrals of ``[start, end)`` that end a stretch: one, and
        white space after it where they end in white space (which a line's end or a
        separator after them sets at the paragraph's level: L1)."""
        if start >= end:
            return ""
        spaces = self.spaces
        trailing = bool(spaces[end] - spaces[end - 1])  # (the last is white space)
        other = int(spaces[end] - spaces[start]) < end - start
        return (_NEUTRAL_STAND_IN if other else "") + (_SPACE_STAND_IN if trailing else "")


def _counts(found: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How many of ``found`` come before each position (and the end)."""
    return np.concatenate(([0], np.cumsum(found)))


_RIGHT_ISH: Final = np.array([_R, _AL], dtype=np.uint8)
_NUMBERS: Final = np.array([EN, _AN], dtype=np.uint8)


def _resolved(classes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``classes`` with each European digit as the weak rules read it after the strong letter
    before it (the last in the text, whatever runs lie between: the stand-in keeps that
    letter's type, so what is kept reads its digits alike): a left-to-right letter's a letter
    (W7), an Arabic letter's an Arabic number (W2), a right-to-left letter's a number that
    reads as one (N0, N1, I1, I2; the weak rules read no later character by it); one no letter
    comes before stays a European digit."""
    strong = np.isin(classes, _STRONG)
    last = np.maximum.accumulate(np.where(strong, np.arange(len(classes)), -1))
    before = np.where(last >= 0, classes[np.maximum(last, 0)], 0)
    digits = classes == EN
    types = classes.copy()
    types[digits & (before == L)] = L
    types[digits & ((before == _AL) | (before == _R))] = _AN
    return types


# BD16 keeps at most this many openers on its stack, and stops pairing once it is full.
_BRACKET_DEPTH: Final = 63
_OPENERS: Final = np.array(sorted(_BRACKET_PAIRS), dtype=np.uint32)
_CLOSER_OPENER: Final = {closer: opener for opener, closer in _BRACKET_PAIRS.items()}
_CLOSERS: Final = np.array(sorted(_CLOSER_OPENER), dtype=np.uint32)


def bracket_pairs(
    points: np.ndarray[Any, Any], classes: np.ndarray[Any, Any]
) -> tuple[list[dict[int, int]], list[int]]:
    """The bracket pairs of a text (BD16: each closer with the nearest opener of its kind
    open in its run sequence, those above it closed with it; none under an override), both
    ways (opener -> closer and closer -> opener), in each reading: run sequences as explicit
    controls make them (``_sequences``), a paragraph separator ending none (a reader
    collapsing newlines reads so) and each (one breaking lines). With them, the openers a
    later closer may still pair with in either."""
    brackets = np.flatnonzero(np.isin(points, _OPENERS) | np.isin(points, _CLOSERS)).tolist()
    if not brackets:
        return [], []
    points = bracket_points(points)
    readings: list[dict[int, int]] = []
    live: set[int] = set()
    for split in (False, True):
        found: dict[int, int] = {}
        readings.append(found)
        sequences, open_sequences, overridden = _sequences(points, classes, split)
        stacks: dict[int, list[int]] = {}
        full: set[int] = set()
        for position in brackets:
            sequence = int(sequences[position])
            if sequence in full or overridden[position]:
                continue
            code = int(points[position])
            stack = stacks.setdefault(sequence, [])
            if code in _BRACKET_PAIRS:
                if len(stack) == _BRACKET_DEPTH:
                    full.add(sequence)
                else:
                    stack.append(position)
                continue
            opener = _CLOSER_OPENER[code]
            for depth in range(len(stack) - 1, -1, -1):
                if int(points[stack[depth]]) == opener:
                    found[stack[depth]] = position
                    found[position] = stack[depth]
                    del stack[depth:]
                    break
        live.update(opener for sequence in open_sequences for opener in stacks.get(sequence, ()))
    return readings, sorted(live)


def _partners(pairs: dict[int, int]) -> dict[int, int]:
    """``pairs`` (opener -> closer) both ways (a closer of several openers: the last's)."""
    return {**pairs, **{closer: opener for opener, closer in pairs.items()}}


def _split_pairs(
    points: np.ndarray[Any, Any], classes: np.ndarray[Any, Any], separators: np.ndarray[Any, Any]
) -> dict[int, int]:
    """The explicit controls' pairs (``explicit``) where each paragraph is read on its own."""
    found: dict[int, int] = {}
    starts = [0, *(separators + 1).tolist()]
    ends = [*separators.tolist(), len(points)]
    for begin, stop in zip(starts, ends, strict=True):
        if np.isin(points[begin:stop], EXPLICIT).any():
            found.update(explicit(points[begin:stop], classes[begin:stop], begin)[0])
    return found


def _paragraph_end(position: int, separators: np.ndarray[Any, Any]) -> int:
    """Where an opener none closes stops mattering when each paragraph is read on its own: its
    paragraph's end (-1: the text's last paragraph, still open)."""
    after = int(np.searchsorted(separators, position))
    return int(separators[after]) if after < len(separators) else -1


_EMBEDDING_CODES: Final = frozenset(_EMBEDDINGS)
_OVERRIDES: Final = frozenset({0x202D, 0x202E})


def _sequences(
    points: np.ndarray[Any, Any], classes: np.ndarray[Any, Any], split: bool
) -> tuple[np.ndarray[Any, Any], list[int], np.ndarray[Any, Any]]:
    """Per character, the run sequence it is read in (X1-X10, roughly: an embedding's or an
    override's content a sequence of its own, what follows its end another; an isolate's
    outside one sequence across it; ``split``: a paragraph separator ends them all), the
    sequences a later character may still be read in (the last one, and the outside of each
    isolate still open), and whether an override sets the character's class."""
    size = len(points)
    ids = np.zeros(size, dtype=np.int64)
    overridden = np.zeros(size, dtype=bool)
    stops = np.flatnonzero(np.isin(points, EXPLICIT) | ((classes == PARAGRAPH) if split else False)).tolist()
    stack: list[tuple[int, bool, int]] = []  # (the control, an isolate, the sequence outside it)
    current, made, last = 0, 0, 0
    for position in stops:
        ids[last:position] = current
        overridden[last:position] = any(
            points[at] in _OVERRIDES for at, isolate, _ in stack[-1:] if not isolate
        )
        ids[position] = current
        code = int(points[position])
        if classes[position] == PARAGRAPH:
            stack.clear()
            made += 1
            current = made
        elif code in _EMBEDDING_CODES or code in _ISOLATES:
            stack.append((position, code in _ISOLATES, current))
            made += 1
            current = made
        elif code == _PDF and stack and not stack[-1][1]:
            stack.pop()
            made += 1
            current = made
        elif code == _PDI and any(isolate for _, isolate, _ in stack):
            while stack:
                _, isolate, outside = stack.pop()
                if isolate:
                    current = outside
                    break
        last = position + 1
    ids[last:] = current
    overridden[last:] = any(points[at] in _OVERRIDES for at, isolate, _ in stack[-1:] if not isolate)
    return ids, [current, *(outside for _, isolate, outside in stack if isolate)], overridden


def settled_after(start: str, piece: str, wide: bool = False) -> str | None:
    """What a settled text (``start``: ``DisplayContext.settled``, "" for none yet) followed by
    ``piece`` (which reorders nothing) settles as; None when a digit comes before the first
    letter of the text's start or of a paragraph (a number a right-to-left reading may
    reverse, to be kept). ``wide``: ``piece`` may hold more than ASCII. C-level searches, a
    few per paragraph of ``piece``; one for a piece of a paragraph that holds a letter."""
    letters, digits = (_LETTER, _DIGIT) if wide else (ASCII_LETTER, ASCII_DIGIT)
    separators = SEPARATORS if wide else ASCII_SEPARATORS
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


# What a later piece may begin with (``continuations``): nothing (what is kept must read alone
# as the text did: what either shows alone is no value only the joining shows), a letter of
# each direction, a digit of each kind, a neutral (and what explicit controls and brackets add). Read
# after a text, in each order a reader may see the two in, they show which of its characters
# a later piece may show beside (``shown_beside``) and whether what is kept of it reads as it
# did (``reads_as``).
_STARTS: Final = ("", "a", "\u05d0", "5", "\u0663", "!")
# After a text holding an explicit control (its characters may lie at any level): each opener
# with a letter (and digit) after it, and each closer.
_EXPLICIT_STARTS: Final = (
    "\u202ba5",
    "\u202a\u05d05",
    "\u202ea",
    "\u202d\u05d0",
    "\u2067a5",
    "\u2066\u05d05",
    "\u2068a",
    "\u202ca5",
    "\u202c\u05d05",
    "\u2069a5",
    "\u2069\u05d05",
)


def continuations(points: np.ndarray[Any, Any], live: list[int]) -> list[str]:
    """The pieces ``shown_beside`` and ``reads_as`` read after a text (``points``; ``live``:
    its openers a later closer may pair with, ``bracket_pairs``): ``_STARTS``, and
    ``_EXPLICIT_STARTS`` after a text holding an explicit control; after one holding an
    opener, the closers of those still open (innermost first) and of each other kind it
    holds (what is kept must pair none of those the text does not), with what decides how a
    pair reads (N0: a letter of either direction or a digit inside, a letter after)."""
    found = list(_STARTS)
    if np.isin(points, EXPLICIT).any():
        found += _EXPLICIT_STARTS
    kinds = np.unique(points[np.isin(points, _OPENERS)]).tolist()
    if kinds:
        order = [int(points[at]) for at in reversed(live)]
        order += [kind for kind in kinds if kind not in order]
        closers = "".join(chr(_BRACKET_PAIRS[kind]) for kind in order)
        found += [closers, f"a{closers}\u05d0", f"\u05d0{closers}a", f"5{closers}\u05d0"]
    return found


class ProbeReadings:
    """A text followed by each of ``pieces``, in each order a reader may see the two in (and
    as stored, the first): one call of the bidi algorithm for all of them. ``shown``: which
    characters of the text show (not ``hidden``)."""

    __slots__ = ("orders", "pieces", "shown", "size")

    def __init__(self, text: str, shown: np.ndarray[Any, Any], pieces: list[str]) -> None:
        self.size = len(shown)
        self.pieces = pieces
        self.orders: list[np.ndarray[Any, Any]] = []  # per piece: an order a row
        self.shown: list[np.ndarray[Any, Any]] = []
        table = _hidden_code_points()
        for piece, orders in zip(pieces, display_orders_of([text + piece for piece in pieces]), strict=True):
            codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            self.shown.append(np.concatenate((shown, ~table[codes])))
            self.orders.append(np.stack([np.arange(self.size + len(piece)), *orders]))


def shown_beside(readings: ProbeReadings, reach: int) -> np.ndarray[Any, Any]:
    """Which characters of the text show within ``reach`` characters that show (those that
    show as nothing between them too) of a piece read after it, in some order a reader may
    see the two in: what a value the two show joined may be read from (a neighbour may itself
    show beside characters far from it as stored)."""
    size = readings.size
    near = np.zeros(size, dtype=bool)
    for shown, orders in zip(readings.shown, readings.orders, strict=True):
        counted = np.cumsum(shown[orders], axis=1)  # per place shown: how many show up to it
        later = orders >= size
        far = 1 << 40
        before = np.maximum.accumulate(np.where(later, counted, -far), axis=1)
        after = np.minimum.accumulate(np.where(later, counted, far)[:, ::-1], axis=1)[:, ::-1]
        close = ((counted - before <= reach) | (after - counted <= reach)) & ~later
        near[orders[close]] = True
    return near


def reads_as(
    before: ProbeReadings, placed: np.ndarray[Any, Any], after: ProbeReadings, kept: np.ndarray[Any, Any]
) -> bool:
    """Whether what is kept of a text (``after``: it read after each piece ``before`` read the
    text after; ``placed``: where each character of the text is in it, -1 for one dropped;
    ``kept``: which of its characters are the text's, not stand-ins) shows, in each order a
    reader may see the text and a piece in, the kept characters and the piece's in the same
    order, and side by side wherever they are so there (with nothing that shows between):
    then no value the text and a later piece show joined reads otherwise with what is kept."""
    own = np.where(kept, np.arange(after.size), -1)
    for index, piece in enumerate(before.pieces):
        tail = after.size + np.arange(len(piece))
        wanted = _arranged(np.concatenate((placed, tail)), before.shown[index], before.orders[index])
        had: dict[bytes, list[np.ndarray[Any, Any]]] = {}
        for order, apart in _arranged(np.concatenate((own, tail)), after.shown[index], after.orders[index]):
            had.setdefault(order, []).append(apart)
        for order, apart in wanted:
            if not any(not (gaps & ~apart).any() for gaps in had.get(order, ())):
                return False
    return True


def _arranged(
    index: np.ndarray[Any, Any], shown: np.ndarray[Any, Any], orders: np.ndarray[Any, Any]
) -> list[tuple[bytes, np.ndarray[Any, Any]]]:
    """Per order (a row of ``orders``), the characters ``index`` names (the others -1) in the
    order shown, and before each whether something that shows and is not one of them lies
    between it and the one before."""
    named = index[orders]
    chosen = named >= 0
    rows = len(orders)
    between = np.cumsum(shown[orders] & ~chosen, axis=1)[chosen].reshape(rows, -1)
    apart = np.zeros(between.shape, dtype=bool)
    apart[:, 1:] = between[:, 1:] > between[:, :-1]
    found = named[chosen].reshape(rows, -1)
    return [(found[row].tobytes(), apart[row]) for row in range(rows)]
