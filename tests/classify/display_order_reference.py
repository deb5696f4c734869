"""The Python implementation of ``display_order``'s bidi algorithm (``_order`` and what it
calls), as it ran in the gateway before ``proxy/native/src/bidi.rs`` replaced it: the oracle
``test_display_order_native.py`` holds the Rust port to, permutation for permutation. Moved
here verbatim (checked against Chromium, ``test_folding_display_order.py``); the Unicode data
(class letters, bracket pairs) stays ``display_order``'s, which both read.

numpy and regular expressions over a string of class letters (``display_order._CODES``):
about a microsecond a code point.
"""

from __future__ import annotations

import re
from heapq import heappop, heappush
from typing import Any, Final

import numpy as np

from labelgate.classify.display_order import _BRACKET_CODES, _PAIRS

_INITIATORS: Final = "ijf"
_ISOLATES: Final = "ijfq"
_REMOVED: Final = "xyXYpb"  # X9: embeddings, overrides, PDF and boundary neutrals
_NEUTRALS: Final = "BSwoijfq"  # NI: what N1 and N2 resolve
_TRIGGERS: Final = "RAN" + "xyXYijfq"  # a paragraph without these reads as stored (a PDF alone: so)
_MAX_DEPTH: Final = 125
_MAX_BRACKETS: Final = 63


def _codes(classes: str) -> np.ndarray[Any, Any]:
    return np.frombuffer(classes.encode("ascii"), dtype=np.uint8)


def _table(letters: bytes) -> np.ndarray[Any, Any]:
    """A lookup table over class letters: ``_table(b"LR")[codes]`` is ``np.isin(codes, ...)``
    in one indexing pass."""
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(letters, dtype=np.uint8)] = True
    return table


_OPENERS: Final = _PAIRS


_EXPLICIT_CODES: Final = re.compile("[xyXYpijfq]")
_TRIGGER_CODES: Final = _table(_TRIGGERS.encode("ascii"))
_EXPLICIT_CODES_ARRAY: Final = _table(b"xyXYpijfq")
_REMOVED_CODES: Final = _table(_REMOVED.encode("ascii"))


def _order(
    classes: str, points: np.ndarray[Any, Any], base: int, whole: bool, owner: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The display order of texts of ``classes`` (``owner``: whose each character is), each
    paragraph of direction ``base`` (0: left to right, 1: right to left) but one that holds
    nothing ``_TRIGGERS`` names (left to right, so as stored); paragraph and segment
    separators (newlines, tabs) read as spaces when ``whole``, as HTML's collapsed white
    space reads them. Every paragraph of every text at once, each a block of its own (a
    paragraph's separator too: so no run crosses it and it stays at its paragraph's end; a
    right-to-left paragraph's would come first, gluing its last line to the next
    paragraph's first)."""
    size = len(classes)
    if whole:
        classes = classes.replace("B", "w").replace("S", "w")
    codes = _codes(classes)
    opens = np.zeros(size, dtype=bool)  # where a block starts
    opens[0] = True
    opens[1:] = owner[1:] != owner[:-1]
    if not whole:
        separators = codes == ord("B")
        opens |= separators
        opens[1:] |= separators[:-1]
    blocks = np.cumsum(opens) - 1
    starts = np.flatnonzero(opens)
    triggered = np.add.reduceat(_TRIGGER_CODES[codes], starts) > 0
    base_at = np.repeat(np.where(triggered, base, 0), np.diff(np.append(starts, size))).astype(np.int16)
    levels = base_at.copy()
    types = bytearray(classes.encode("ascii"))
    if _EXPLICIT_CODES.search(classes):
        for block in np.flatnonzero(np.add.reduceat(_EXPLICIT_CODES_ARRAY[codes], starts) > 0).tolist():
            start = int(starts[block])
            end = int(starts[block + 1]) if block + 1 < len(starts) else size
            levels[start:end], types[start:end] = _explicit(classes[start:end], int(base_at[start]))
    removed = _REMOVED_CODES[codes]
    kept = np.flatnonzero(~removed)
    if len(kept):
        _implicit(classes, types, levels, kept, points, blocks, base_at)
    # X9's removed characters take the level of the one before them (or the paragraph's):
    # they show as nothing, but each must have a place.
    if removed.any():
        before = np.maximum.accumulate(np.where(~removed, np.arange(size), -1))
        earlier = np.maximum(before, 0)
        inherit = (before >= 0) & (blocks[earlier] == blocks)
        levels = np.where(removed, np.where(inherit, levels[earlier], base_at), levels).astype(np.int16)
    # L1: separators, and whitespace (isolates, removed characters) before one or at the
    # end of a paragraph, at the paragraph's level.
    spaces = _TRAILING_CODES[codes]
    ending = _SEPARATOR_CODES[codes]
    after = np.minimum.accumulate(np.where(spaces, size, np.arange(size))[::-1])[::-1]
    clipped = np.minimum(after, size - 1)
    reset = ending | (spaces & ((after == size) | ending[clipped] | (blocks[clipped] != blocks)))
    levels[reset] = base_at[reset]
    return _reversed_runs(levels, blocks)


_TRAILING_CODES: Final = _table(b"wijfqxyXYpb")  # L1's whitespace
_SEPARATOR_CODES: Final = _table(b"SB")


def _explicit(classes: str, base: int) -> tuple[np.ndarray[Any, Any], bytearray]:
    """X1-X8: each character's embedding level, and its type with overrides applied."""
    size = len(classes)
    levels = np.full(size, base, dtype=np.int16)
    types = bytearray(classes.encode("ascii"))
    controls = list(_EXPLICIT_CODES.finditer(classes))
    if not controls:
        return levels, types
    matching = _matching_isolates(classes, controls)
    # The stack: (level, override letter or "", isolate).
    stack: list[tuple[int, str, bool]] = [(base, "", False)]
    overflow_isolates = overflow_embeddings = valid_isolates = 0
    start = 0
    for match in controls:
        at = match.start()
        _assign(levels, types, start, at, stack[-1])
        code = classes[at]
        level, override, _ = stack[-1]
        if code in "xyXY":
            new = (level + 1) | 1 if code in "yY" else (level + 2) & ~1
            if new <= _MAX_DEPTH and not overflow_isolates and not overflow_embeddings:
                stack.append((new, {"X": "L", "Y": "R"}.get(code, ""), False))
            elif not overflow_isolates:
                overflow_embeddings += 1
            levels[at] = level
        elif code in _INITIATORS:
            levels[at] = level
            if override:
                types[at] = ord(override)
            if code == "f":
                code = "j" if _first_strong(classes, at + 1, matching.get(at, size), matching) == "R" else "i"
            new = (level + 1) | 1 if code == "j" else (level + 2) & ~1
            if new <= _MAX_DEPTH and not overflow_isolates and not overflow_embeddings:
                valid_isolates += 1
                stack.append((new, "", True))
            else:
                overflow_isolates += 1
        elif code == "q":
            if overflow_isolates:
                overflow_isolates -= 1
            elif valid_isolates:
                overflow_embeddings = 0
                while not stack[-1][2]:
                    stack.pop()
                stack.pop()
                valid_isolates -= 1
            levels[at] = stack[-1][0]
            if stack[-1][1]:
                types[at] = ord(stack[-1][1])
        else:  # PDF
            if overflow_isolates:
                pass
            elif overflow_embeddings:
                overflow_embeddings -= 1
            elif not stack[-1][2] and len(stack) >= 2:
                stack.pop()
            levels[at] = stack[-1][0]
        start = at + 1
    _assign(levels, types, start, size, stack[-1])
    return levels, types


_OVERRIDDEN: Final = {
    direction: bytes(
        code if chr(code) in "bB" or chr(code) in _REMOVED or chr(code) in _ISOLATES else ord(direction)
        for code in range(256)
    )
    for direction in "LR"
}


def _assign(
    levels: np.ndarray[Any, Any], types: bytearray, start: int, end: int, entry: tuple[int, str, bool]
) -> None:
    """Characters ``start`` to ``end`` (no explicit control among them) at ``entry``'s level,
    their types overridden by its override (X6)."""
    if start >= end:
        return
    levels[start:end] = entry[0]
    if entry[1]:
        types[start:end] = bytes(types[start:end]).translate(_OVERRIDDEN[entry[1]])


def _matching_isolates(
    classes: str, controls: list[re.Match[str]], blocks: np.ndarray[Any, Any] | None = None
) -> dict[int, int]:
    """BD9: each isolate initiator's matching PDI, by position (and back), within a
    paragraph (a block of ``blocks``, when given)."""
    matching: dict[int, int] = {}
    opened: list[int] = []
    for match in controls:
        code = classes[match.start()]
        if opened and blocks is not None and blocks[opened[-1]] != blocks[match.start()]:
            opened.clear()
        if code == "B":
            opened.clear()
        elif code in _INITIATORS:
            opened.append(match.start())
        elif code == "q" and opened:
            first = opened.pop()
            matching[first] = match.start()
            matching[match.start()] = first
    return matching


_STRONG_OR_ISOLATE: Final = re.compile("[LRAijf]")


def _first_strong(classes: str, start: int, end: int, matching: dict[int, int]) -> str:
    """P2-P3 over ``classes[start:end]``: ``R`` when its first strong character (skipping
    isolates) is R or AL, else ``L``."""
    at = start
    while True:
        found = _STRONG_OR_ISOLATE.search(classes, at, end)
        if found is None:
            return "L"
        code = found.group()
        if code in "RA":
            return "R"
        if code == "L":
            return "L"
        closing = matching.get(found.start())
        if closing is None:
            return "L"
        at = closing + 1


def _implicit(
    classes: str,
    types: bytearray,
    levels: np.ndarray[Any, Any],
    kept: np.ndarray[Any, Any],
    points: np.ndarray[Any, Any],
    blocks: np.ndarray[Any, Any],
    base_at: np.ndarray[Any, Any],
) -> None:
    """X10, W1-W7, N0-N2, I1-I2 over the isolating run sequences of the ``kept`` characters:
    ``levels`` raised in place. The sequences are read as one string, each between a
    character of its sos and one of its eos (both strong: no rule reaches past them), so
    each rule is one regular expression or numpy pass over them all."""
    kept_levels = levels[kept]
    kept_blocks = blocks[kept]
    changes = (np.diff(kept_levels) != 0) | (np.diff(kept_blocks) != 0)
    run_starts = np.concatenate(([0], np.flatnonzero(changes) + 1))
    run_ends = np.concatenate((run_starts[1:], [len(kept)]))
    if any(code in classes for code in _ISOLATES):
        runs = _sequences(classes, kept, run_starts, run_ends, blocks)
        order = np.concatenate([np.arange(run_starts[run], run_ends[run]) for each in runs for run in each])
        lengths = np.array([sum(int(run_ends[run] - run_starts[run]) for run in each) for each in runs])
        firsts = run_starts[[each[0] for each in runs]]
        lasts = run_ends[[each[-1] for each in runs]] - 1
    else:  # each level run is a sequence
        order = np.arange(len(kept))
        lengths = run_ends - run_starts
        firsts, lasts = run_starts, run_ends - 1
    sequence_levels = kept_levels[firsts].astype(np.int64)
    base = base_at[kept[firsts]]
    previous, following = np.maximum(firsts - 1, 0), np.minimum(lasts + 1, len(kept) - 1)
    inside = (firsts > 0) & (kept_blocks[previous] == kept_blocks[firsts])
    before = np.where(inside, kept_levels[previous], base)
    inside = (lasts + 1 < len(kept)) & (kept_blocks[following] == kept_blocks[lasts])
    initiators = _INITIATOR_CODES[_codes(classes)[kept[lasts]]]
    after = np.where(inside & ~initiators, kept_levels[following], base)
    sos = np.where(np.maximum(sequence_levels, before) & 1, ord("R"), ord("L")).astype(np.uint8)
    eos = np.where(np.maximum(sequence_levels, after) & 1, ord("R"), ord("L")).astype(np.uint8)
    # The string: each sequence's characters between its sos and eos.
    count = len(lengths)
    sequence_of = np.repeat(np.arange(count), lengths)
    at = np.arange(len(order)) + 2 * sequence_of + 1  # where each character goes
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) + 2 * np.arange(count)
    ends = starts + lengths + 1
    size = len(order) + 2 * count
    string = np.empty(size, dtype=np.uint8)
    indices = kept[order]
    string[at] = np.frombuffer(bytes(types), dtype=np.uint8)[indices]
    string[starts] = sos
    string[ends] = eos
    level_at = np.repeat(sequence_levels, lengths + 2)
    code_points = np.zeros(size, dtype=points.dtype)
    code_points[at] = points[indices]
    stored = string.copy()
    resolved = _resolved(string, level_at, code_points, stored, starts)
    right = resolved == ord("R")
    number = (resolved == ord("E")) | (resolved == ord("N"))
    odd = (level_at & 1).astype(bool)
    raised = np.where(
        odd, np.where((resolved == ord("L")) | number, 1, 0), np.where(right, 1, np.where(number, 2, 0))
    )
    levels[indices] += raised[at].astype(levels.dtype)


_ISOLATES_OR_ENDS: Final = re.compile("[ijfqB]")
_INITIATOR_CODES: Final = _table(_INITIATORS.encode("ascii"))


def _sequences(
    classes: str,
    kept: np.ndarray[Any, Any],
    run_starts: np.ndarray[Any, Any],
    run_ends: np.ndarray[Any, Any],
    blocks: np.ndarray[Any, Any],
) -> list[list[int]]:
    """BD13: the level runs of each isolating run sequence: a run ending with an isolate
    initiator continues with the run its matching PDI opens, which starts none of its own."""
    matching = _matching_isolates(classes, list(_ISOLATES_OR_ENDS.finditer(classes)), blocks)
    continues: dict[int, int] = {}
    for first, closing in matching.items():
        if classes[first] not in _INITIATORS:
            continue
        ends_at = int(np.searchsorted(kept, first))
        opens_at = int(np.searchsorted(kept, closing))
        run = int(np.searchsorted(run_starts, ends_at, side="right")) - 1
        following = int(np.searchsorted(run_starts, opens_at))
        if run_ends[run] - 1 == ends_at and following < len(run_starts) and run_starts[following] == opens_at:
            continues[run] = following
    continued = set(continues.values())
    sequences: list[list[int]] = []
    for run in range(len(run_starts)):
        if run in continued:
            continue
        runs = [run]
        while runs[-1] in continues:
            runs.append(continues[runs[-1]])
        sequences.append(runs)
    return sequences


_NSM_RUNS: Final = re.compile(b"([^m])(m+)")
_SINGLE_SEPARATOR: Final = re.compile(b"(?<=E)[sc](?=E)")
_SINGLE_ARABIC_SEPARATOR: Final = re.compile(b"(?<=N)c(?=N)")
_TERMINATORS: Final = re.compile(b"t+(?=E)|(?<=E)t+")
_WEAK_TO_NEUTRAL: Final = bytes.maketrans(b"stc", b"ooo")
_NEUTRAL_CODES: Final = _table(_NEUTRALS.encode("ascii"))
_ISOLATE_BYTES: Final = _ISOLATES.encode("ascii")


def _last_of(string: np.ndarray[Any, Any], wanted: bytes) -> np.ndarray[Any, Any]:
    """Per position, the type of the last character at or before it whose type is one of
    ``wanted`` (each sequence opens with one: its sos)."""
    positions = np.where(_table(wanted)[string], np.arange(len(string)), 0)
    return string[np.maximum.accumulate(positions)]


def _resolved(
    string: np.ndarray[Any, Any],
    level_at: np.ndarray[Any, Any],
    points: np.ndarray[Any, Any],
    stored: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """W1-W7 and N0-N2 over the sequences' string (``_implicit``): each type L, R, E (EN)
    or N (AN)."""
    text = string.tobytes()
    if b"m" in text:  # W1: a mark takes its base's type (after an isolate control: ON)

        def marks(match: re.Match[bytes]) -> bytes:
            before = match.group(1)
            return before + (b"o" if before in _ISOLATE_BYTES else before) * len(match.group(2))

        text = _NSM_RUNS.sub(marks, text)
    string = np.frombuffer(text, dtype=np.uint8).copy()
    if b"A" in text:
        if b"E" in text:  # W2: European digits after Arabic letters are Arabic numbers
            string[(string == ord("E")) & (_last_of(string, b"LRA") == ord("A"))] = ord("N")
        string[string == ord("A")] = ord("R")  # W3
    text = string.tobytes()
    if b"s" in text or b"c" in text:  # W4
        text = _SINGLE_SEPARATOR.sub(b"E", text)
        text = _SINGLE_ARABIC_SEPARATOR.sub(b"N", text)
    if b"t" in text:  # W5
        text = _TERMINATORS.sub(lambda match: b"E" * len(match.group()), text)
    text = text.translate(_WEAK_TO_NEUTRAL)  # W6
    string = np.frombuffer(text, dtype=np.uint8).copy()
    if b"E" in text:  # W7
        string[(string == ord("E")) & (_last_of(string, b"LR") == ord("L"))] = ord("L")
    if b"o" in text:
        _brackets(string, level_at, points, stored, starts)
    # N1-N2: a run of neutrals between two of one direction (numbers as R) takes it, any
    # other the embedding direction.
    neutral = _NEUTRAL_CODES[string]
    if neutral.any():
        direction = np.where(string == ord("L"), ord("L"), ord("R")).astype(np.uint8)
        indices = np.arange(len(string))
        before = np.maximum.accumulate(np.where(neutral, 0, indices))
        after = np.minimum.accumulate(np.where(neutral, len(string) - 1, indices)[::-1])[::-1]
        same = direction[before] == direction[after]
        embedding = np.where(level_at & 1, ord("R"), ord("L")).astype(np.uint8)
        string[neutral] = np.where(same, direction[before], embedding)[neutral]
    return string


def _brackets(
    string: np.ndarray[Any, Any],
    level_at: np.ndarray[Any, Any],
    points: np.ndarray[Any, Any],
    stored: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> None:
    """N0 in place: bracket pairs (BD16, per sequence, at most ``_MAX_BRACKETS`` open) take
    the embedding direction when a strong type of it is inside, else the other one's when
    inside and before them (numbers as R; a sequence's sos is its first character); marks
    after them follow. One pass over the brackets of every sequence, each pair's questions
    C-level searches: a text of brackets costs about a microsecond a bracket."""
    candidates = np.flatnonzero(np.isin(points, _BRACKET_CODES) & (string == ord("o")))
    if not len(candidates):
        return
    positions = candidates.tolist()
    sequences = (np.searchsorted(starts, candidates, side="right") - 1).tolist()
    codes = points[candidates].tolist()
    pairs = _pairs(positions, sequences, codes)
    if not pairs:
        return
    pairs.sort()
    resolved = bytearray(string.tobytes())
    marks = bytes(stored.tobytes())
    # The last strong type before each opening bracket, before N0 (sos and eos are strong).
    strong_at = np.flatnonzero(_STRONG_CODES[string])
    openings = np.array([opening for opening, _ in pairs])
    strong_before = strong_at[np.maximum(np.searchsorted(strong_at, openings) - 1, 0)].tolist()
    # Brackets N0 resolves are strong for the pairs after them: the last opening resolved,
    # and the closings resolved that an opening comes after (pairs nest or follow).
    last_opening = -1
    closings: list[int] = []  # a heap of the closings resolved, not yet passed
    last_closing = -1
    for (opening, closing), before in zip(pairs, strong_before, strict=True):
        while closings and closings[0] < opening:
            last_closing = max(last_closing, heappop(closings))
        embedding = ord("R") if int(level_at[opening]) & 1 else ord("L")
        left = resolved.find(b"L", opening + 1, closing) >= 0
        right = any(resolved.find(code, opening + 1, closing) >= 0 for code in (b"R", b"E", b"N"))
        if (left and embedding == ord("L")) or (right and embedding == ord("R")):
            direction = embedding
        elif left or right:
            # The other direction when the strong type before is of it too (N0 c).
            last = max(before, last_opening, last_closing)
            direction = ord("L") if resolved[last] == ord("L") else ord("R")
        else:
            continue
        last_opening = opening
        heappush(closings, closing)
        for position in (opening, closing):
            resolved[position] = direction
            after = position + 1
            while after < len(marks) and marks[after] == ord("m"):
                resolved[after] = direction
                after += 1
    string[:] = np.frombuffer(bytes(resolved), dtype=np.uint8)


def _pairs(positions: list[int], sequences: list[int], codes: list[int]) -> list[tuple[int, int]]:
    """BD16: the bracket pairs among brackets at ``positions`` (of ``sequences``, code points
    ``codes``), each sequence on its own, none past the first opening with a full stack."""
    pairs: list[tuple[int, int]] = []
    stack: list[tuple[int, int]] = []  # (closing code point, position)
    current, full = -1, False
    for position, sequence, code in zip(positions, sequences, codes, strict=True):
        if sequence != current:
            current, full, stack = sequence, False, []
        if full:
            continue
        closing = _OPENERS.get(code)
        if closing is not None:
            if len(stack) >= _MAX_BRACKETS:
                full = True  # BD16: no more pairs in this sequence
                continue
            stack.append((closing, position))
            continue
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == code:
                pairs.append((stack[depth][1], position))
                del stack[depth:]
                break
    return pairs


_STRONG_CODES: Final = _table(b"LREN")


def _reversed_runs(levels: np.ndarray[Any, Any], blocks: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """L2 in each block (``_order``): from the highest level down to its lowest odd one, each
    run at that level or higher reversed; the order that makes."""
    order = np.arange(len(levels))
    if not len(levels):
        return order
    starts = np.concatenate(([0], np.flatnonzero(np.diff(blocks)) + 1))
    lowest = np.repeat(np.minimum.reduceat(levels, starts) | 1, np.diff(np.append(starts, len(levels))))
    shown = levels.copy()
    for level in range(int(levels.max()), int(lowest.min()) - 1, -1):
        inside = np.flatnonzero((shown >= level) & (lowest <= level))
        if not len(inside):
            continue
        breaks = np.flatnonzero((np.diff(inside) != 1) | (np.diff(blocks[inside]) != 0)) + 1
        firsts = inside[np.concatenate(([0], breaks))]
        lasts = inside[np.concatenate((breaks - 1, [len(inside) - 1]))]
        run = np.searchsorted(firsts, inside, side="right") - 1
        mirrored = firsts[run] + lasts[run] - inside
        order[inside] = order[mirrored]
        shown[inside] = shown[mirrored]
    return order
