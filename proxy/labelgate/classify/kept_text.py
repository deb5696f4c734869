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
per level of explicit embedding and for the open paragraph on its own. While a text (or its
open paragraph) holds no right-to-left character, its start up to its first left-to-right
letter is kept whole when it holds a digit. Each dropped stretch leaves its first and last
strong character (as a letter no value holds, of the same bidi class), the controls in it a
kept part opens or closes, and a paragraph separator when it held one (``ascii_gap`` for ASCII
text, with C-level searches). A start longer than ``_LEAD_LIMIT`` windows, or kept parts longer
than ``_KEPT_LIMIT``, cannot be kept: a later piece that may reorder such a text ends the
stream (``display_context.UNREADABLE``).

A text that reorders nothing and has no number before its first letter (or its open
paragraph's) settles: it is kept as no more than whether a left-to-right letter came and
whether its open paragraph holds one (``SETTLED``, ``settled_after``).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

import numpy as np

from labelgate.classify import characters
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
_LETTER: Final = re.compile(r"[^\W\d_]")
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
    characters before it show: not those folding drops, nor, where a terminal reads the text,
    those of an escape sequence or a backspace (``characters.shown_view``, whose every such
    span is counted here as nothing; the text is not folded, a table look-up)."""
    table = _hidden_code_points()
    hidden = table[np.minimum(points, len(table) - 1)]
    above = np.flatnonzero(points >= len(table))
    if len(above):  # (rare: a few planes' worth of code points are read one by one)
        hidden[above] = [characters.folds_to(code) == characters.DROPPED for code in points[above].tolist()]
    if terminal(text):
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
    """The stand-in for the dropped ``[start, end)`` (``stand_in``)."""
    closers = {closer: opener for opener, closer in pairs.items()}
    kept = []
    for position in (start + np.flatnonzero(np.isin(points[start:end], EXPLICIT))).tolist():
        partner = pairs.get(position, closers.get(position))
        if partner is None and int(points[position]) in (_PDF, _PDI):
            continue  # a closer that closes nothing
        if partner is None or not start <= partner < end:
            kept.append(position)
    separators = np.flatnonzero(classes[start:end] == PARAGRAPH)
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
            *(chr(int(points[at])) if int(classes[at]) != PARAGRAPH else "\n" for at in kept),
            *(_STAND_IN[int(classes[at])] for at in last),
        ]
    )


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
