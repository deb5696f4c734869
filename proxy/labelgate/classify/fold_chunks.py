"""Where a text is cut into chunks that, each folded on its own, fold as the whole text
does (``folding.FoldMemo``): the forms of one text (its escapes decoded a level at a time,
its references decoded) differ from each other in a few places only, and cut where their
bytes say, not at offsets, they share most of their chunks, each folded once for them all.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Final

import numpy as np

# Bytes a text is cut into chunks of, about (``_fold_chunks``): at least a quarter of it, at
# most eight times it, where the four bytes before a cut hash to a multiple of it. Where a
# chunk ends depends on the bytes there, not on its offset: the forms of one text, which
# differ in length where an escape was decoded, are cut alike before and after it.
FOLD_CHUNK: Final = 1024
_SHORTEST: Final = FOLD_CHUNK // 4
_LONGEST: Final = FOLD_CHUNK * 8
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


def chunk_cuts(text: bytes) -> list[int]:
    """Where ``text`` is cut into chunks (``FOLD_CHUNK``): at ``_CUTTABLE`` bytes outside every
    ``TERMINAL_SEQUENCES`` (a chunk holds each whole)."""
    size = len(text)
    if size < 2 * FOLD_CHUNK:
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
