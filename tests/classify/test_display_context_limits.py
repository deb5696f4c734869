"""What is kept of a stream's released text reads, beside a later piece, as the text did
(``display_context``, ``kept_text``; the residuals of ``docs/THREAT-MODEL.md``: "bracket pairs
whose opener was dropped from what is kept" and "a dropped stretch holding no strong letter or
control is kept as nothing").

Past a few windows only what a later piece can reach is kept, a stand-in for the rest. Each
stream below shows a value to a client reading the whole text in display order (an opener
far back pairing with a closer that comes later, a closed embedding or an Arabic number sign
setting how the digits after it read, a closer that closes nothing making its paragraph one
a reader may reorder, a character shown beside the later piece that itself shows beside the
text's start), none of its pieces does alone, and each was released whole before: found by
a search of generated streams (brackets, right-to-left letters, controls, digits, long
neutral stretches), then cut down."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate.classify import display_context, kept_text
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.display_order import classes_of
from tests.classify.test_carryover_display_order import caller_gets, shows
from tests.classify.test_split_values_display_order import as_messages, released_before_refusal, shown

ALEF, BET, BEH = "\u05d0", "\u05d1", "\u0628"
RLO, LRE, PDF, PDI, RLM, LRM = "\u202e", "\u202a", "\u202c", "\u2069", "\u200f", "\u200e"
ARABIC_DECIMAL, ARABIC_THREE = "\u066b", "\u0663"

# name: (pieces, the value their joining shows)
STREAMS: dict[str, tuple[list[str], str]] = {
    # The opener lies past the window: the closer pairs with it, and the pair holds a
    # left-to-right letter, so it reads left to right and ends the run the later digits
    # start (N0): "123 45 " shows beside "6789". Read without the opener, the closer joins
    # the right-to-left run and the digits show elsewhere.
    "a closer whose opener was dropped": (
        ["x (" + "!" * 300 + " y 123 45 " + ALEF + " ", "6789) " + BET, " ok"],
        "us_ssn",
    ),
    # An override's closed pair holds a bracket, far from the card's halves.
    "brackets around an override": (
        [" (a)" * 17 + " (41111111" + RLO + "]5" + PDF + "!" * 175, "11111111"],
        "credit_card",
    ),
    # Arabic decimal separators (numbers, no strong letter) before the first half.
    "a stretch of numbers with no letter": (
        [ARABIC_DECIMAL * 62 + "41111111" + (ALEF + " ") * 93 + ALEF, "11111111"],
        "credit_card",
    ),
    # What follows a closed embedding reads after its level (X10: a run of its own): the
    # digits after it read right to left.
    "digits after a closed embedding": (
        ["6789 45 " + LRE + LRM + PDF + "12-" * 7 + "1" + "-12" * 74 + "-!", "123"],
        "us_ssn",
    ),
    # A closer that closes nothing still makes its paragraph one a reader may reorder.
    "a closer that closes nothing": ([PDI + " ~" * 128, "6789 45 123"], "us_ssn"),
}
# Read a message at a time (``Followed``: per message): the later digits show beside the
# space the text ends in, which shows beside "45" at its start.
ROUTED = {
    **STREAMS,
    # The text ends in white space (a line's end sets it at the paragraph's level: L1), which
    # the piece after it makes white space no more: what stands in for it must be white space
    # too, or the kept text alone shows what only the joining does.
    "white space the text ends in": (
        [
            "12\u2069\u202b\u200e$\u0628%\u202c\u202aa!5\u200e45-\u2067$6789-\u2066\u066b\u2069(/)6789\u206645-4545"
            + " " * 215,
            "(",
        ],
        "us_ssn",
    ),
    "a neighbour shown beside the start": (
        [RLM + "45 123" + (" " + ARABIC_THREE) * 124 + " " + LRM, "6789"],
        "us_ssn",
    ),
}


@pytest.mark.parametrize("stream", STREAMS)
def test_a_value_the_kept_text_would_read_otherwise_does_not_reach_the_caller(stream: str) -> None:
    pieces, detector = STREAMS[stream]
    assert shows("".join(pieces), detector), "the joined text shows the value"
    assert not any(shows(piece, detector) for piece in pieces), "no piece alone does"
    got, ended = caller_gets("INT32", pieces)
    assert not shows(got, detector), (stream, ended)
    assert ended in ("", "STREAM_VALUE_SPLIT")


@pytest.mark.parametrize("stream", ROUTED)
def test_a_value_the_kept_text_would_read_otherwise_does_not_leave_a_routed_stream(stream: str) -> None:
    pieces, detector = ROUTED[stream]
    released, reason = released_before_refusal(as_messages("repeated int32", pieces))
    assert not shows(shown("repeated int32", released), detector), (stream, reason)
    assert reason in ("", "STREAM_VALUE_SPLIT")


def test_an_opener_still_open_is_kept_however_far_back() -> None:
    """The stand-in for a dropped stretch keeps an opener a later closer may pair with, and
    what decides how the pair reads: the letter inside it."""
    context = display_context.DisplayContext(DetectorSet.default(), 64)
    context.take("x (" + "!" * 300 + " y 123 45 " + ALEF + " ")
    assert len(context.text) < 300
    assert "(" in context.text


def test_what_is_kept_reads_as_the_text_did_after_each_later_piece() -> None:
    """Compacted text read after each of the pieces the check reads it with shows the kept
    characters in the same orders as the whole text does (``reads_as``), for text of every
    kind of character (token ids drawn at random, right-to-left letters, controls, brackets
    and digits among them)."""
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        codes = rng.integers(0x20, 0x3000, 900)
        text = "".join(chr(code) for code in codes if not 0xD800 <= code < 0xE000)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        classes = np.frombuffer(classes_of(points).encode("ascii"), dtype=np.uint8)
        keep = np.zeros(len(points), dtype=bool)
        for start in rng.integers(0, len(points) - 40, 5).tolist():
            keep[start : start + 40] = True
        pairs = kept_text.explicit(points, classes, 0)[0]
        brackets = kept_text.bracket_pairs(points, classes)
        kept, placed = kept_text.stand_in(text, points, classes, keep, pairs, brackets)
        before = kept_text.ProbeReadings(
            text, ~kept_text.hidden(text, points), kept_text.continuations(points, brackets[1])
        )
        kept_points = np.frombuffer(kept.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        own = np.zeros(len(kept_points), dtype=bool)
        own[placed[placed >= 0]] = True
        after = kept_text.ProbeReadings(kept, ~kept_text.hidden(kept, kept_points), before.pieces)
        assert kept_text.reads_as(before, placed, after, own)
        checked += 1
    assert checked == 40
