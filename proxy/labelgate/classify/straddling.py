"""Whether a value straddles pieces of text released apart: ``straddled`` reads the pieces
joined, in every reading the classifier gives text (``piece_readings``), and names a detector
that finds a value only the joining shows. Apart from ``split_values`` (which holds a routed
stream's paths and asks this of the pieces it would release) because it is a pure function of
the pieces: the decoys, display-order and legacy-decode tests read it alone.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

from labelgate.classify.binary_pieces import Binary
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import UNFOLDABLE, may_hide
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.numbers import _LOOSE, _LOOSE_SHORTEST
from labelgate.classify.piece_readings import Readings

# ``straddled``'s answer for joined text one of whose readings cannot be folded.
UNREADABLE: Final = "\x00unreadable"


def straddled(detectors: DetectorSet, pieces: Sequence[bytes]) -> str | None:
    """A detector that finds a value in the text of ``pieces`` joined, in any reading the
    classifier gives text (as written, escapes and references decoded, folded: ``Readings``),
    some byte of which no value that detector finds in the same reading of the piece holding
    that byte covers; ``UNREADABLE`` when a reading of the joined text cannot be folded; else
    None. Each message's classification masks every value of any reading of its piece
    (at its offsets, or the piece whole), so a value so covered is masked; any other was made
    by the joining. Where, not how many: a whole value in one piece that the next piece's
    first digit turns into no value (``321-54-9876`` + ``1``) must not stand in for a value
    split across two others. Values side by side (``ann@x.com`` + ``bob@y.com``, one email
    joined) are covered byte by byte. A reading that does not split where the pieces do (an
    escape, a terminal sequence or a combining mark across two pieces) places nothing: a
    value in it is refused."""
    joined = Readings(b"".join(pieces), joined=True)
    parts = [Readings(piece) for piece in pieces]
    read: set[bytes] = set()  # readings of the joined text scanned: another like one is the same
    # Binary (audio, a file's chunks) makes values of a few bytes by chance (``8::`` is an IPv6
    # address), in every reading, across pieces too: such a value counts from
    # ``_LOOSE_SHORTEST`` bytes on in it, as in numbers' raw bytes that are not text. Only in
    # the pieces that are binary: another message of random bytes (which the upstream may
    # add at will) must not make a short email split across pieces of text noise too.
    binary = Binary(joined.levels[0], pieces)
    for kind in joined.kinds():
        form = joined.form(kind)
        if form is UNFOLDABLE:
            return UNREADABLE
        if form is None or form in read:
            continue
        read.add(form)
        hits = detectors.scan(form)
        if not hits:
            continue
        forms: list[bytes | None] | None = None
        starts: list[int] | None = None
        if binary.some and any(_chance(hit) for hit in hits):
            if not binary.every:  # else no piece's reading is needed to drop them
                forms = [part.form(kind) for part in parts]
                starts = _placed(forms, form)
            hits = [hit for hit in hits if not (_chance(hit) and binary.holds(hit, kind, form, starts))]
            if not hits:
                continue
        if forms is None:
            forms = [part.form(kind) for part in parts]
            starts = _placed(forms, form)
        if starts is None:
            return min(hit.detector for hit in hits)  # the pieces' readings place nothing
        found: dict[int, list[Detection]] = {}
        for hit in hits:
            first = bisect_right(starts, hit.start) - 1
            spans = []
            for index in range(first, len(pieces)):
                if starts[index] >= hit.end:
                    break
                if index not in found:
                    found[index] = detectors.scan(forms[index] or b"")  # alone: no block runs on
                spans += [
                    (starts[index] + own.start, starts[index] + own.end)
                    for own in found[index]
                    if own.detector == hit.detector
                ]
            if not _covers(spans, hit.start, hit.end):
                return hit.detector
    return None


def straddled_pairs(detectors: DetectorSet, pairs: Sequence[tuple[bytes, bytes]]) -> str | None:
    """``straddled`` of each of ``pairs`` (two pieces each), the first answer that is not None.
    Many pairs of short pieces (a map's entries, one message's with the next's: ``split_values``)
    cost a reading each; those whose joined text reads only as written (ASCII, nothing to
    fold, decode or unescape: ``Readings.kinds`` yields its raw reading alone) are scanned
    together first, and only those in which the scan finds something are read one by one (a
    pair with no detection in its only reading straddles nothing)."""
    plain: list[tuple[bytes, bytes]] = []
    read: list[tuple[bytes, bytes]] = []
    for pair in pairs:
        (plain if _written_only(pair[0] + pair[1]) else read).append(pair)
    if plain:
        found = detectors.scan_each([first + second for first, second in plain])
        read += [plain[index] for index in sorted(found)]
    for pair in read:
        answer = straddled(detectors, pair)
        if answer is not None:
            return answer
    return None


def _written_only(text: bytes) -> bool:
    """Whether ``text`` has no reading but as written (``Readings.kinds``)."""
    return text.isascii() and 0 not in text and not may_hide(text) and not may_escape(text)


def _chance(hit: Detection) -> bool:
    """Whether ``hit``, if found in binary, may be a value its noise makes by chance: an IPv6
    address or an email shorter than ``numbers._LOOSE_SHORTEST`` bytes."""
    return hit.detector in _LOOSE and hit.end - hit.start < _LOOSE_SHORTEST


def _placed(forms: Sequence[bytes | None], form: bytes) -> list[int] | None:
    """Where each of ``forms`` starts in ``form``, and where the last ends, when they make it
    in order; else None."""
    if any(part is None or part is UNFOLDABLE for part in forms):
        return None
    if b"".join(part for part in forms if part is not None) != form:
        return None
    return list(itertools.accumulate((len(part or b"") for part in forms), initial=0))


def _covers(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``spans`` together cover every byte of ``[start, end)``."""
    reached = start
    for first, last in sorted(spans):
        if first > reached:
            break
        reached = max(reached, last)
        if reached >= end:
            return True
    return reached >= end
