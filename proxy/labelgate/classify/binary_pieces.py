"""Which pieces of a routed stream's text are binary: pure.

Binary (audio, a file's chunks) makes values of a few bytes by chance (``8::`` is an IPv6
address), across pieces too. ``straddling.straddled`` lets such a value pass only where every
byte of it comes from pieces that are binary (``Binary.holds``), and ``is_noise`` tells binary
from text (``SplitValues`` reads no binary in display order). Decided piece by piece, never
over the joined text: a message of random bytes, which the upstream may add at will, must not
make the text beside it noise; runs of pieces alike are read joined where a reading does not
split where the pieces do. Apart from ``split_values`` because these are the rules that tell
binary from text, not how a stream is held.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Final

from labelgate.classify.detectors import Detection
from labelgate.classify.folding import CONTROLS
from labelgate.classify.other_encodings import is_utf8
from labelgate.classify.piece_readings import Kind, Readings

# A text more than one byte in this many of which (plus a few) is a control byte is binary.
_NOISE_STRAY: Final = 32
_NOISE_SLACK: Final = 4
# A piece at least this long, with more than one control byte in this many, is binary when the
# run of binary pieces it is in is (``Binary``).
_POOLED: Final = 64


def is_noise(text: bytes, stray: int = _NOISE_STRAY, slack: int = _NOISE_SLACK) -> bool:
    """Whether ``text`` is binary, not text: not UTF-8 (no string is), and more control bytes
    than one in ``_NOISE_STRAY`` plus ``slack``, NULs aside, as ``other_encodings.legacy_readings``
    tells binary from text in an encoding. C-level passes (a decode stops at binary's first
    stray byte)."""
    if text.isascii() or is_utf8(text):
        return False
    nuls = text.count(0)
    controls = len(text) - len(text.translate(None, CONTROLS)) - nuls
    return controls > (len(text) - nuls) // stray + slack


class Binary:
    """Which of a path's pieces are binary, and whether a value a reading of their joined text
    shows lies in those alone: then a chance value of binary (``_chance``) counts for nothing.
    Decided piece by piece, never over the joined text: one message of random bytes (the
    upstream may add one at will) made the whole path binary, and a short email split across
    two pieces of plain text beside it noise. A piece is binary when ``is_noise`` says so of
    it alone; or, from ``_POOLED`` bytes on, when it is not UTF-8, more than one byte in
    ``_POOLED`` of it is a control byte (NULs aside) and the run of pieces each binary either
    way that it is in is binary by ``is_noise``, joined: of random bytes in chunks of 96
    bytes (compressed audio's frames) one chunk in 9 holds too few control bytes for the
    slack (of 160 bytes, one in 150), and a chance value across such a chunk ended its
    stream. Text (UTF-8, or any bytes without a control byte: a legacy encoding's, a stray
    byte's) and a piece shorter than that are never binary because of what is beside them.
    Each piece is read once (C-level passes); runs of pieces alike are read again only where
    a reading needs them (``_binary_spans``)."""

    def __init__(self, text: bytes, pieces: Sequence[bytes]) -> None:
        self.text = text  # the pieces joined
        self.pieces = pieces
        self.flags = _binary_pieces(pieces)
        self.some = any(flag and piece for flag, piece in zip(self.flags, pieces, strict=True))
        self.every = all(self.flags)
        # Runs of pieces alike (binary or not), each read joined, cut where the pieces are and
        # with their edges moved (``_runs``); and, per reading and layout, the binary runs'
        # places in it (``_binary_spans``). Worked out when asked.
        self._layouts: dict[bool, list[tuple[bool, Readings]]] = {}
        self._spans: dict[tuple[Kind, bool], tuple[list[int], list[int]]] = {}

    def holds(self, hit: Detection, kind: Kind, form: bytes, starts: list[int] | None) -> bool:
        """Whether every byte of ``hit``, found in the reading ``kind`` of the joined text
        (``form``), comes from pieces that are binary; ``starts``: where each piece's reading
        starts in ``form`` (``_placed``), None when they do not make it (a character split
        across two binary chunks): then runs of pieces alike are read joined instead, and a
        value no binary run's reading is placed over is not known to lie in binary: it
        counts."""
        if self.every:
            return True
        if starts is not None:
            index = bisect_right(starts, hit.start) - 1
            while index < len(self.flags) and starts[index] < hit.end:
                if starts[index + 1] > starts[index] and not self.flags[index]:
                    return False  # a byte of it from a piece that is not binary
                index += 1
            return True
        for moved in (False, True):
            firsts, lasts = self._binary_spans(kind, form, moved)
            index = bisect_right(firsts, hit.start) - 1
            if index >= 0 and hit.end <= lasts[index]:
                return True
        return False

    def _binary_spans(self, kind: Kind, form: bytes, moved: bool) -> tuple[list[int], list[int]]:
        """Where the binary runs (cut where the pieces are, or with their edges ``moved``:
        ``_runs``) lie in the reading ``kind`` of the joined text (``form``), in order: those
        whose own reading is its bytes there, the runs before them (or after them) placed
        so too (``_placed_runs``). Worked out once per reading and layout, when a chance
        value needs it: each byte of the path read at most twice more in that reading."""
        if (kind, moved) not in self._spans:
            if moved not in self._layouts:
                self._layouts[moved] = [
                    (binary, Readings(self.text[start:end], joined=True))
                    for binary, start, end in _runs(self.text, self.pieces, self.flags, moved)
                ]
            runs = self._layouts[moved]
            places = _placed_runs([reading.as_part(kind) for _, reading in runs], form)
            spans = sorted(place for place, (binary, _) in zip(places, runs, strict=True) if place and binary)
            self._spans[kind, moved] = ([start for start, _ in spans], [end for _, end in spans])
        return self._spans[kind, moved]


def _placed_runs(forms: Sequence[bytes | None], form: bytes) -> list[tuple[int, int] | None]:
    """Where each of ``forms`` lies in ``form``, for those placed from its start (each where
    the one before ended, its bytes there) and from its end likewise, up to the first that
    is not; None for the others: where the joined reading differs from the runs' (a tag, a
    style or a hidden element across two runs: markup is not read run by run alike), a value
    is not placed. Linear."""
    places: list[tuple[int, int] | None] = [None] * len(forms)
    start = 0
    front = 0
    for index, part in enumerate(forms):
        if part is None or not form.startswith(part, start):
            break
        places[index] = (start, start + len(part))
        start += len(part)
        front = index + 1
    end = len(form)
    for index in range(len(forms) - 1, front - 1, -1):
        part = forms[index]
        if part is None or end - len(part) < start or not form.endswith(part, 0, end):
            break
        places[index] = (end - len(part), end)
        end -= len(part)
    return places


def _binary_pieces(pieces: Sequence[bytes]) -> list[bool]:
    """Which of ``pieces`` are binary (``Binary``). An empty piece holds no byte of any
    value: it is binary, and does not end a run."""
    flags = [not piece or is_noise(piece) for piece in pieces]
    dense = [
        flag or (len(piece) >= _POOLED and is_noise(piece, stray=_POOLED, slack=0))
        for flag, piece in zip(flags, pieces, strict=True)
    ]
    start = 0
    while start < len(pieces):
        if not dense[start]:
            start += 1
            continue
        end = start
        while end < len(pieces) and (dense[end] or not pieces[end]):
            end += 1
        if is_noise(b"".join(pieces[start:end])):
            flags[start:end] = [True] * (end - start)
        start = end
    return flags


def _runs(
    text: bytes, pieces: Sequence[bytes], flags: Sequence[bool], moved: bool
) -> list[tuple[bool, int, int]]:
    """(binary, start, end) of each run of ``pieces`` alike in ``text`` (their join), empty
    pieces aside. Cut where the pieces are, a character of binary split there (UTF-8, a
    legacy encoding's) reads otherwise in the joined reading, which the runs' readings would
    not make; so, if ``moved``, each edge of a binary run moves into it, up to
    ``_EDGE_REACH`` bytes, to the nearest place between two ASCII letters or digits (no
    multi-byte character, no escape and no markup but the rarest holds two side by side), or
    the text beside it takes it whole. Bytes of binary so given to text count as text's,
    never the other way. (Given to a short text, they may make it text that cannot be folded
    where the binary could: the edges where the pieces are are tried first.)"""
    runs: list[list[Any]] = []
    at = 0
    for binary, piece in zip(flags, pieces, strict=True):
        if piece:
            if runs and runs[-1][0] == binary:
                runs[-1][2] = at + len(piece)
            else:
                runs.append([binary, at, at + len(piece)])
        at += len(piece)
    for index, run in enumerate(runs):
        binary, start, end = run
        if not (binary and moved):
            continue
        if index:  # text before it: its start moves on
            found = _BETWEEN_ALNUM.search(text, start, min(end, start + _EDGE_REACH) + 1)
            start = found.start() if found else end
            runs[index - 1][2] = start
        if index + 1 < len(runs):  # text after it: its end moves back
            places = [
                found.start()
                for found in _BETWEEN_ALNUM.finditer(text, max(start, end - _EDGE_REACH), end + 1)
            ]
            end = places[-1] if places else start
            runs[index + 1][1] = end
        run[1], run[2] = start, end
    merged: list[tuple[bool, int, int]] = []
    for binary, start, end in runs:
        if end <= start:
            continue  # binary the text beside it took whole: that text is one run
        if merged and merged[-1][0] == binary:
            merged[-1] = (binary, merged[-1][1], end)
        else:
            merged.append((binary, start, end))
    return merged


# A place between two ASCII letters or digits (``_runs``), and how far into binary it is looked for.
_BETWEEN_ALNUM: Final = re.compile(rb"(?<=[0-9A-Za-z])(?=[0-9A-Za-z])")
_EDGE_REACH: Final = 256
