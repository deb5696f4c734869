"""Integer fields a routed ``split_values: hold`` stream's messages carry, followed across
them (``split_values``): pure.

A client reads an integer field back with ``chr`` as the classifier reads a repeated one
(``integer_text``): an SSN one code point a message (a scalar of a character-level token
stream), or split across two messages' ``repeated int32``, is one only their joining shows,
which each message's own classification cannot mask. So each integer path (repeated, scalar,
a map's values) keeps its last values (at most ``INTEGER_TAIL``); the run of characters a
value may be made of they end in is read with the next message's values, and a value only
the joining shows ends the stream (``STREAM_VALUE_SPLIT``). The messages such a run takes are
held meanwhile (``HeldIntegers.first_held``). Not read as digit runs: ids run together are
digits without end. In display order, the values a message releases are read after those that
left before them (``HeldIntegers.released``, ``display_context``).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify import display_context, reasons
from labelgate.classify.carried_forms import CharacterReader
from labelgate.classify.detectors import BUILTIN_LABELS, DetectorSet
from labelgate.classify.integer_text import CHARACTER_DTYPES, character_array, character_hits, worth_reading
from labelgate.classify.messages import (
    FIXED_STEP_VALUES,
    RUN_SEPARATORS,
    TEXT_BYTES_PER_VALUE,
    MessageValues,
    _number_text,
    digit_runs,
    no_cursor_cover,
    smallest_scanned,
)
from labelgate.classify.numbers import _LOOSE, _LOOSE_SHORTEST
from labelgate.errors import ResourceExhausted, UpstreamError

# How many of an integer path's last values are read with a message's new ones
# (``HeldIntegers.follow``): more than the longest value a built-in detector finds
# read as characters, a value a character (a vendor token's 255, an email's 254; a card's 23
# with its spaces, an IBAN's 42), and far more than a value's digits take read as digit runs
# (a number brings one digit at least). A value longer still that the tail cuts into is
# found by its end, which a value's end still is (an email's last characters, a digit run's),
# and spans the messages it takes.
INTEGER_TAIL = 256
# How far back an ESC may begin an escape sequence the last value is read in (as the
# carry-over reads a tensor's end: ``carried_forms``).
_ESCAPE_REACH = 16
# No message is held back (``IntegerTail.blocks``): later than any message number.
FREE = 1 << 62
# What a path's state costs beyond its text, counted toward the hold limit: the object, its
# name twice (as a key, as shown) and, per piece or value recorded, two 8-byte numbers (an
# integer path here, a text path in ``split_values``).
PATH_COST = 512
PIECE_COST = 16


@dataclass
class IntegerTail:
    """One integer path's last values across the stream's messages (at most ``INTEGER_TAIL``),
    and, for each, the detectors whose values the reading of its own message found on it:
    its message's masking zeroes it for them (``messages``: a repeated field whole for what
    reading it as characters or digits finds; a number for what its own digits hold)."""

    shown: str
    values: list[int] = field(default_factory=list)
    covered: list[frozenset[str]] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)  # the number of each value's message
    # How many of its last values read as a run of characters a value may be made of
    # (``HeldIntegers._run``): a value the next values go on starts in them. And the first
    # message they hold back (``FREE``: none, when the run holds no character a value may
    # begin with).
    run: int = 0
    blocks: int = FREE


class HeldIntegers:
    """The integer paths of one stream, each with its tail of values."""

    def __init__(self, detectors: DetectorSet, max_paths: int, reach: int = INTEGER_TAIL) -> None:
        self.detectors = detectors
        self.max_paths = max_paths
        self._tails: dict[str, IntegerTail] = {}
        # Each path's values released so far read as characters, and those released next read
        # after them in the order a reader sees them joined (``released``): a right-to-left
        # character or a bidi control one value brings reorders the values after it, and one a
        # later value brings those before it; ``_run`` reads the values as stored.
        self._shown = display_context.Followed(detectors, reach, limit=max_paths, per_message=True)
        self._smallest = smallest_scanned(detectors)
        self._reader = CharacterReader(custom_patterns=not BUILTIN_LABELS.keys() >= set(detectors.names))
        # What the tails cost, counted toward the stream's hold limit.
        self.held_bytes = 0

    @property
    def kept_bytes(self) -> int:
        """What the paths' texts read in display order keep (``display_context``)."""
        return self._shown.kept_bytes

    def first_held(self) -> int:
        """The first message a path's run holds back (``FREE``: none)."""
        return min((tail.blocks for tail in self._tails.values()), default=FREE)

    def _forget_settled(self) -> None:
        """Drop the integer paths whose values end in no run a value may go on in (``run`` 0):
        nothing of theirs can join a later value, so a long stream whose paths change (map
        keys, element indices) keeps going while at most ``max_paths`` are open at once."""
        settled = [path for path, state in self._tails.items() if state.run == 0]
        for path in settled:
            state = self._tails.pop(path)
            self.held_bytes -= PATH_COST + len(path) + len(state.shown) + INTEGER_TAIL * PIECE_COST

    def follow(
        self,
        number: int,
        path: str,
        shown: str,
        numbers: list[int],
        repeated: bool,
        values: MessageValues,
        records: bool = False,
    ) -> None:
        """An integer field's ``numbers`` in this message, after the values the messages
        before it brought at its path, read together as characters as the classifier reads
        a repeated integer field (``_joined_hits``: written and folded; not as digit runs,
        which ids run together always make): a value some value of which no value of the
        same detector its own message's reading finds covers (``_own_cover``), and that
        takes values of both, is one only their joining makes: the stream ends
        (``STREAM_VALUE_SPLIT``), as for a string path (``straddled``: where, not how
        many). Only the run of characters a value may be made of the path's values ended in
        (``_run``, at most ``INTEGER_TAIL`` values) is read with the new ones: a
        stream costs the same per message however long it runs, and token ids, which
        seldom end in such a run, mostly cost no reading. The messages that run takes are
        held while it holds a character a value may begin with, so no piece of a value
        leaves before the message that completes it. Counted against the message's
        ``max_values`` as the classifier counts reading a field."""
        if not numbers:
            return
        state = self._tails.get(path)
        if state is None:
            if len(self._tails) >= self.max_paths:
                self._forget_settled()
            if len(self._tails) >= self.max_paths:
                raise ResourceExhausted(
                    reasons.STREAM_HELD_TOO_LARGE,
                    f"a stream carries more than {self.max_paths} integer fields "
                    "(limits.max_fields), each read across its messages",
                )
            state = self._tails[path] = IntegerTail(shown)
            # Kept for the stream's life: its name, and a tail of numbers and their detectors.
            self.held_bytes += PATH_COST + len(path) + len(shown) + INTEGER_TAIL * PIECE_COST
        before = state.run
        tail, covered = (
            state.values[len(state.values) - before :],
            state.covered[len(state.covered) - before :],
        )
        kept = numbers[-INTEGER_TAIL:]
        state.values = [*state.values, *kept][-INTEGER_TAIL:]
        state.messages = [*state.messages, *([number] * len(kept))][-INTEGER_TAIL:]
        state.run, starts = self._run(state.values)
        # What its own message masks each value for matters only to a value read across
        # messages: with the run before these values, or in the run they end in.
        if before or state.run:
            own = self._own_cover(numbers, repeated, values, records)
        else:
            own = [frozenset()] * len(numbers)
        if before:
            # A value the joining makes takes the run the path's values ended in, and no
            # value before it (a character no value holds lies between): the rest of the
            # tail is not read again, so most token ids cost no reading at all.
            joined = [*tail, *numbers[:INTEGER_TAIL]]
            covered = [*covered, *own[:INTEGER_TAIL]]
            for detector, first, end in _joined_hits(joined, self.detectors, values):
                if first < before < end and any(detector not in covered[at] for at in range(first, end)):
                    raise UpstreamError(
                        reasons.STREAM_VALUE_SPLIT,
                        f"the upstream split a value its detectors call {detector} across the messages "
                        f"of a stream (integer field {shown}, read as characters); each message is "
                        "masked on its own, so it is not sent",
                    )
        state.covered = [*state.covered, *own[-INTEGER_TAIL:]][-INTEGER_TAIL:]
        state.blocks = state.messages[len(state.values) - state.run] if state.run and starts else FREE

    def released(self, path: str, shown: str, numbers: list[int], values: MessageValues) -> None:
        """``numbers``, the values at ``path`` of a message about to be released (messages in
        order), read as characters after those released before them, in the order a reader
        sees them joined (``display_context``): a value only their joining shows ends the
        stream before it leaves. A message at a time, as each is classified on its own
        (``display_context.Followed``: ``per_message``). Counted against the release's
        ``max_values``."""

        def charge(size: int) -> None:
            values.take(FIXED_STEP_VALUES + 3 * size // TEXT_BYTES_PER_VALUE)

        text = display_context.text_of_points(_as_characters(numbers))
        found = self._shown.take(path, text, charge)
        if found is None:
            return
        if found == display_context.UNREADABLE:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream sent a right-to-left character or a bidi control (integer field {shown}, "
                "read as characters) after more of a stream's values than the gateway keeps to read it "
                "with; each message is masked on its own, so it is not sent",
            )
        raise UpstreamError(
            reasons.STREAM_VALUE_SPLIT,
            f"the upstream split a value its detectors call {found} across the messages of a stream "
            f"(integer field {shown}, read as characters) that only shows in the order a reader "
            "displays them joined (a right-to-left character or a bidi control in one message); each "
            "message is masked on its own, so it is not sent",
        )

    def _run(self, tail: list[int]) -> tuple[int, bool]:
        """How many of an integer path's last values (``tail``) the next values may still
        make a value with, read as characters: the run of characters a value may be made of
        they end in (``CharacterReader``, as the carry-over reads a tensor's last elements),
        at most the tail (no value is longer); and whether it holds one a value may begin
        with. The last value alone mostly tells (token ids): one no value holds ends no run."""
        if 0x1B not in tail[-_ESCAPE_REACH:] and self._reader.apart(tail[-1]):
            return 0, False
        # Read whole (no run before it): a run the tail is all of is one as long as it, or
        # longer, and no value is.
        return self._reader.run_of(_as_characters(tail))

    def _own_cover(
        self, numbers: list[int], repeated: bool, values: MessageValues, records: bool = False
    ) -> list[frozenset[str]]:
        """For each of one message's ``numbers`` at a path, the detectors its own
        classification masks it for (``IntegerTail``). ``records``: one value a record of a
        repeated message (``chars[].c``), which the classifier reads together as characters
        only, two at least, without the cover a moved cursor gives (``messages``)."""
        whole: frozenset[str] = frozenset()
        if records and len(numbers) > 1:
            found = _integer_hits(numbers, self.detectors, values, records=True)
            whole = frozenset(detector for detector, _, _ in found)
        elif repeated and not records:
            whole = frozenset(detector for detector, _, _ in _integer_hits(numbers, self.detectors, values))
        smallest = self._smallest
        if smallest is None or not any(abs(number) >= smallest for number in numbers):
            return [whole] * len(numbers)
        covered = []
        for number in numbers:
            alone: frozenset[str] = frozenset()
            if abs(number) >= smallest:
                text = _number_text(number)
                values.take_text(text)
                alone = frozenset(hit.detector for hit in self.detectors.scan(text))
            covered.append(whole | alone)
        return covered


# (detector, first value, end value) of a value found in integers read as text.
_IntegerHit = tuple[str, int, int]


def _joined_hits(numbers: list[int], detectors: DetectorSet, values: MessageValues) -> list[_IntegerHit]:
    """What reading an integer path's values across messages as characters (``_integer_hits``)
    finds that can only be a value, not a guess; a stream is refused on it, where a message
    is masked on a guess. Not digit runs: ids run together are digits without end, whose
    cards and SSNs ended 6 in 10 streams of 10,000 random ids below 50,000 (one a message)
    and every stream of 1 to 8 a message. Not every detector over all of them: that is how
    characters read an escape sequence that moves a cursor (``characters``: a token id 27
    then a letter's), not a value. Not an IPv6 address or an email shorter than
    ``numbers._LOOSE_SHORTEST`` characters not all ASCII as written: folded ids make them
    by chance (``٩⩴``, ids 1641 and 10868, read ``9::``), as binary does (``_chance``)."""
    found = _integer_hits(numbers, detectors, values, records=True)
    return [
        (detector, start, end)
        for detector, start, end in found
        if not (
            detector in _LOOSE
            and end - start < _LOOSE_SHORTEST
            and not all(0 <= value < 0x80 for value in numbers[start:end])
        )
    ]


def _integer_hits(
    numbers: list[int], detectors: DetectorSet, values: MessageValues, records: bool = False
) -> list[_IntegerHit]:
    """(detector, first value, end value) of what the classifier finds in ``numbers`` read
    as a repeated integer field is (``messages``): as characters (``integer_text``; when
    worth it) and as digit runs (``message_numbers.digit_runs``), counted against ``values`` as it
    counts them. ``records``: as it reads records' numbers (and values across messages):
    characters only, without the cover a moved cursor gives (``messages.no_cursor_cover``)."""
    found: list[_IntegerHit] = []
    if worth_reading(numbers, detectors):
        values.take(FIXED_STEP_VALUES)
        hits = character_hits(_as_characters(numbers), detectors)
        if records:
            hits = no_cursor_cover(hits, len(numbers), detectors)
        found += [(hit.detector, hit.start, hit.end) for hit in hits]
    digits = digit_runs(numbers) if not records else []
    if digits:
        for run in digits:
            values.take_text(run)
        texts = [str(number) for number in numbers]
        for run_hits, separator in zip((detectors.scan(run) for run in digits), RUN_SEPARATORS, strict=True):
            if not run_hits:
                continue
            # Where each number's digits start in the run, and where the last ends.
            starts = list(itertools.accumulate((len(text) + len(separator) for text in texts), initial=0))
            for hit in run_hits:
                first = bisect_right(starts, hit.start) - 1
                last = bisect_left(starts, hit.end)  # the first number starting at or past its end
                found.append((hit.detector, first, max(last, first + 1)))
    return found


def _as_characters(numbers: list[int]) -> np.ndarray[Any, Any]:
    """A path's integers as an array to read as characters: int64, or uint64 when one is past
    int64 and none is negative (a uint64 field's: no character either way). A float field's
    whole numbers (``integer_text.whole_numbers``) may hold both signs past int64, which no
    integer field does (``[-1.0, 2.0**63]``): those past it read as -1, none either
    (``integer_text.character_array``)."""
    dtype = CHARACTER_DTYPES[FieldDescriptor.CPPTYPE_INT64]
    if numbers and max(numbers) >= 1 << 63 and min(numbers) >= 0:
        dtype = CHARACTER_DTYPES[FieldDescriptor.CPPTYPE_UINT64]
    return character_array(numbers, dtype)
