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
its own, is one only their joining shows (``joined_reading``). The piece must not go out:
each piece is masked on its own, so the stream ends (``STREAM_VALUE_SPLIT``) before it leaves.
A piece is what one classification reads whole (a reply's element or output, a routed string
path's messages released together, which ``split_values.straddled`` reads joined; a routed
integer path's message: ``per_message``).

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
Compacting what is kept reads it after a dozen to two dozen pieces twice (``_compact``: about
1-2 ms, every few dozen replies): some 10-20 µs more a reply of Hebrew or Arabic tokens, and
about 150-200 µs a reply of sixteen random ids (which keep the most).

What of a released text is kept, and what stands in for the rest, is ``kept_text``; how a
piece is read joined to it, a value told by its characters, is ``joined_reading``. Here: each
text's ``DisplayContext``, which applies both and bounds what it keeps (``_ROOM``,
``_LEAD_LIMIT``, ``_KEPT_LIMIT``), and a stream's texts (``Followed``), how many followed at once.

What is kept is checked rather than trusted: a later piece is read with it as the bidi algorithm
reads the two (``kept_text.continuations``), what the text shows beside such a piece is kept,
and what is kept must read after each as the text did (``kept_text.reads_as``), else the text
is kept whole until it can be compacted so (past ``_KEPT_LIMIT``: ``UNREADABLE``). A bracket
pair whose opener lies far back, a stretch of numbers with no letter, a closed embedding or a
closer that closes nothing in what is dropped read as they did (review: each let a value out).
The check reads a few pieces (a letter of each direction, a digit of each kind, a neutral; the
explicit controls and the closers of the brackets the text holds): a piece no such one reads
like is not checked for.

Not read so: text a stream gives otherwise than as UTF-8 or code points (UTF-16 and legacy
decodes of bytes, the raw bytes of wider numbers read as text, ``carried_forms``); text that
reorders nothing keeps no more than a number at its (or its paragraph's) start and settles,
though a right-to-left reading a later piece turns on shows its runs of letters in reverse
order too (``UIOPASDFGH~`` then ``a\\u2067AKIAQWERTY`` shows ``AKIAQWERTYUIOPASDFGH``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any, Final

import numpy as np

from labelgate.classify import characters, reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.display_order import classes_of, overrides, reorders
from labelgate.classify.joined_reading import REPLACEMENT, Seen, Shown, terminal
from labelgate.classify.kept_text import (
    ASCII_DIGIT,
    ASCII_LETTER,
    ASCII_SEPARATORS,
    EN,
    EXPLICIT,
    PARAGRAPH,
    RIGHT_TO_LEFT,
    SEPARATORS,
    L,
    ProbeReadings,
    ahead,
    ascii_gap,
    back,
    bracket_pairs,
    continuations,
    explicit,
    hidden,
    reads_as,
    settled_after,
    showing_before,
    shown_beside,
    stand_in,
)
from labelgate.errors import ResourceExhausted

# What ``DisplayContext.take`` answers for a piece that may reorder text it cannot read.
UNREADABLE: Final = "\x00unreadable"
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
# The ASCII controls folding drops (``characters``): they show as nothing.
_ASCII_HIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The characters (folded) a built-in detector's value is made of: letters, digits, the
# separators values hold, and what escapes are written with (``carried_forms``'s characters);
# any printable ASCII with custom patterns.
_MEMBERS: Final = re.compile(rb"[0-9A-Za-z \t\-.,'_+()@%=:\\&#;/]")
_PRINTABLE: Final = re.compile(rb"[\t -~]")
_LAST_CODE_POINT: Final = 0x10FFFF


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
        units = np.where(values == -1, REPLACEMENT, values.astype(np.int64) & 0xFFFF)
        return units.astype("<u2").tobytes().decode("utf-16-le", "surrogatepass")
    valid = (values >= 0) & (values <= _LAST_CODE_POINT)
    codes = np.where(valid, values, REPLACEMENT).astype("<u4")
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
        # ``text`` as characters read (``Shown``), once worked out and while ``text`` holds
        # nothing a terminal leaves out: a piece's are added, not worked out again.
        self._shown: Shown | None = None

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
            shown = Shown.of(piece)
            if (
                moves and (not self.reordered or self._paragraph_plain or overrides(piece))
            ) or self._members.search(shown.folded()) is not None:
                if charge is not None:
                    charge(len(self.text) + len(piece))
                found = UNREADABLE if self.blind else self._made_by_joining(piece, shown)
        if shown is not None and self._shown is not None and not terminal(piece):
            self._shown = self._shown.joined(shown)
        else:
            self._shown = None
        self.text += piece
        self._plain = self._plain and piece.isascii()
        if moves or self.reordered:  # (else the paragraph reorders nothing, as the text)
            separator = max(piece.rfind(each) for each in SEPARATORS)
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
        shown = self._shown if self._shown is not None else Shown.of(self.text)
        return self._members.search(shown.folded()) is not None

    @property
    def size(self) -> int:
        """What is kept, in characters (callers count it toward what a stream holds)."""
        return len(self.text)

    def _made_by_joining(self, piece: str, shown: Shown) -> str | None:
        """The detector of a value a display reading of the kept text and ``piece`` joined
        shows from characters no reading of either alone shows it from (``Seen``): the same
        value read from other characters (an earlier copy, masked in its own reply) is another
        value, one the caller may never have had."""
        if terminal(self.text + piece):
            joined = Shown.of(self.text + piece)  # (a sequence may run across the two)
        else:
            if self._shown is None:
                self._shown = Shown.of(self.text)
            joined = self._shown.joined(shown)
        found = []
        for order in joined.display_orders():
            reading = joined.folded(order)
            hits = self.detectors.scan(reading)
            if hits:
                found.append((order, reading, hits))
        if not found:
            return None  # (most pieces: no value in any order)
        before = self._shown if self._shown is not None else Shown.of(self.text)
        seen = Seen(self.detectors)
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
        shown = ~hidden(text, points)
        shows = np.concatenate(([0], np.cumsum(shown)))
        keep = np.zeros(size, dtype=bool)
        pairs, anchors = explicit(points, classes, 0)
        brackets = bracket_pairs(points, classes)
        paragraphs = np.flatnonzero(classes == PARAGRAPH)
        start = int(paragraphs[-1]) if len(paragraphs) else -1
        readings = None
        if self.reordered or self.tail:
            keep[back(shows, size, reach) :] = True
            if start >= 0:
                anchors.append(start)
                anchors += explicit(points[start + 1 :], classes[start + 1 :], start + 1)[1]
            if self.reordered:
                # Where a later piece shows beside the text as the bidi algorithm reads the
                # two (weak types, bracket pairs, neutrals, the runs they make): what the
                # class runs above name, and what they miss.
                readings = ProbeReadings(text, shown, continuations(points, brackets[1]))
                keep |= shown_beside(readings, reach)
            for at in anchors:
                keep[back(shows, at, reach) : ahead(shows, at, reach + 1)] = True
        for lead in [0] if start < 0 else [0, start + 1]:
            span = self._lead(points, classes, lead, shows)
            if span is None:
                self.blind = True
            else:
                keep[lead:span] = True
        kept, placed = stand_in(text, points, classes, keep, pairs, brackets)
        if readings is not None and not keep.all():
            # What is kept must read, after each of those pieces, as the text did: else it
            # is kept whole, and compacted again once it has grown (``_room``).
            kept_points = np.frombuffer(kept.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            own = np.zeros(len(kept_points), dtype=bool)
            own[placed[placed >= 0]] = True
            after = ProbeReadings(kept, ~hidden(kept, kept_points), readings.pieces)
            if not reads_as(readings, placed, after, own):
                kept = text
        self.text, self._shown = kept, None
        self.reordered = reorders(self.text)
        if len(self.text) > _KEPT_LIMIT * reach:
            self.blind, self.text = True, self.text[-2 * reach :]
        self._room = max((_ROOM if self.reordered else _ROOM_PLAIN) * reach, 2 * len(self.text))

    def _compact_ascii(self) -> None:
        """``_compact`` of ASCII text (which reorders nothing), with C-level searches that stop
        at a text's first letter and its last paragraph separator: most traffic is ASCII, and a
        megabyte of it costs no pass of its own here."""
        text, reach = self.text, self.reach
        separator = max(text.rfind(each) for each in ASCII_SEPARATORS)
        starts = [0] if separator < 0 else [0, separator + 1]
        kept: list[tuple[int, int]] = []
        for start in starts:
            letter = ASCII_LETTER.search(text, start)
            first = letter.start() if letter is not None else len(text)
            if ASCII_DIGIT.search(text, start, first) is None:
                continue
            if first - start > _LEAD_LIMIT * reach:
                self.blind = True
                continue
            end = first + reach
            if "\x1b" in text or "\x08" in text or _ASCII_HIDDEN.search(text, first, end) is not None:
                points = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype("<u4")
                end = ahead(showing_before(text, points), first, reach)  # (``_compact``)
            kept.append((start, min(len(text), end)))
        parts, dropped_from = [], 0
        for start, end in kept:
            start = max(start, dropped_from)
            if start > dropped_from:
                parts.append(ascii_gap(text, dropped_from, start))
            parts.append(text[start:end])
            dropped_from = max(dropped_from, end)
        if dropped_from < len(text):
            parts.append(ascii_gap(text, dropped_from, len(text)))
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
        later number starts that paragraph). None otherwise (``settled_after``)."""
        if self.reordered or self.blind:
            return None
        if self.tail and not (self.text and self._ends_apart()):
            return None  # (a run a value may go on in, a message each: kept)
        return settled_after("", self.text, wide=not self._plain)

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
        if np.isin(rest, RIGHT_TO_LEFT).any() or np.isin(points[start:], EXPLICIT).any():
            return start
        letters = np.flatnonzero(rest == L)
        first = int(letters[0]) if len(letters) else len(rest)
        if not (rest[:first] == EN).any():
            return start
        if first > _LEAD_LIMIT * self.reach:
            return None
        return ahead(shows, start + first, self.reach)


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
        (``settled_after``), with a C-level search or a few."""
        context = self._live.get(key)
        if context is None and piece.isascii() and not self.per_message:
            start = self._settled.get(key, "")
            settled = settled_after(start, piece)
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


# What a followed text costs beyond its kept characters (an object, its key, its slots),
# counted toward a stream's holdings (``Followed``).
_CONTEXT_COST: Final = 512


def _cost(context: DisplayContext) -> int:
    return _CONTEXT_COST + 4 * context.size
