"""The readings of a routed stream's text that ``straddling.straddled`` compares: pure.

A value split across a hold stream's messages is one the joined text shows in some reading the
classifier gives text (as written, JSON escapes and character references decoded, folded,
rendered, the wide decode, a legacy encoding) that no value of the same reading of each piece
covers. ``Readings`` works those readings out, of the joined text and of each piece alike (the
same reading of either is the same ``Kind``), each only when asked: most joined text needs its
raw reading only. Apart from ``split_values`` because they are what is read, not how a stream
is held; ``binary_pieces`` reads runs of pieces with them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from labelgate.classify.folding import UNFOLDABLE, FoldMemo, folded, may_hide
from labelgate.classify.jsonpaths import (
    _ESCAPE,
    MAX_UNESCAPE_LEVELS,
    _unescape_match,
    _unreferenced,
    may_escape,
    may_reference,
)
from labelgate.classify.markup import rendered
from labelgate.classify.other_encodings import (
    LEGACY_ENCODINGS,
    is_utf8,
    legacy_folded,
    legacy_readings,
    wide_folded,
)
from labelgate.classify.shown_text import rendered_reading

# A reading of text (``Readings``): how many levels of JSON escapes are decoded, whether
# character references are then decoded, and whether it is folded (``_FOLDED``), or folded
# and rendered (``_RENDERED``: ``shown_text.rendered_reading``); or the wide decode; or the
# decode in one legacy encoding, folded (``_LEGACY``, by encoding).
Kind = tuple[int, bool, int]
_FOLDED: Final = 1
_RENDERED: Final = 2
_WIDE: Final[Kind] = (-1, False, _FOLDED)
_LEGACY: Final[dict[str, Kind]] = {
    encoding: (-2 - index, False, _FOLDED) for index, encoding in enumerate(LEGACY_ENCODINGS)
}


class Readings:
    """The readings of one text the classifier scans (``hidden_by_escapes``, ``hidden_by_folding``):
    as written, with up to ``MAX_UNESCAPE_LEVELS`` levels of JSON escapes decoded, each of those
    with its character references decoded, each folded, its wide decode, and, for bytes that
    are not UTF-8 (a bytes field's), each legacy encoding it reads as text in
    (``other_encodings.legacy_readings``). The same reading of the joined text and of each piece is
    the same kind: a piece with no escape decodes to itself. Worked out when asked for: most
    joined text needs its raw reading only."""

    def __init__(self, text: bytes, joined: bool = False) -> None:
        self.levels = [text]
        self.joined = joined  # the joined text, not a piece of it
        self._legacy: dict[str, bytes] | None = None  # encoding -> folded form, once read
        self._unreferenced: dict[int, bytes] = {}  # escape level -> its references decoded
        self._folds: dict[bytes, bytes | None] = {}  # decoded form -> ``folded``
        self._memo = FoldMemo()

    def kinds(self) -> Iterator[Kind]:
        """The readings of this (joined) text that may differ from the others."""
        text = self.levels[0]
        yield (0, False, 0)
        if may_hide(text):
            yield (0, False, _FOLDED)
            yield (0, False, _RENDERED)
        if 0 in text or text.startswith((b"\xff\xfe", b"\xfe\xff")):
            yield _WIDE
        if not text.isascii() and not is_utf8(text):
            for encoding in self._legacy_forms():
                yield _LEGACY[encoding]
        if not may_escape(text):
            return
        for level in range(MAX_UNESCAPE_LEVELS + 1):
            current = self._level(level)
            if level and current == self._level(level - 1):
                break
            if level:
                yield (level, False, 0)
                yield (level, False, _FOLDED)
                yield (level, False, _RENDERED)
            if may_reference(current):
                yield (level, True, 0)
                yield (level, True, _FOLDED)
                yield (level, True, _RENDERED)

    def form(self, kind: Kind) -> bytes | None:
        """This text in the reading ``kind``: None when it does not read so (no wide decode),
        ``UNFOLDABLE`` when it cannot be folded."""
        if kind == _WIDE:
            return wide_folded(self.levels[0])
        level, unreferenced, folds = kind
        if level < -1:
            return self._legacy_form(LEGACY_ENCODINGS[-2 - level])
        text = self._decoded(level, unreferenced)
        if not folds:
            return text
        form = self._folded(text)
        if folds == _RENDERED:
            # The joined text's rendered reading, None when it has none (``straddled`` skips
            # it); a piece's is rendered whatever it holds (``rendered_folded``), as that of
            # a text is (``hidden_by_folding``).
            if form is UNFOLDABLE:
                return None if self.joined else form
            if self.joined:
                return rendered_reading(text, form)
            return rendered(text if form is None else form)
        return text if form is None else form

    def as_part(self, kind: Kind) -> bytes | None:
        """This (joined) text in the reading ``kind`` as it reads as part of a longer text so
        read (``Binary``): as folded where it does not render otherwise, decoded in a legacy
        encoding whether or not it reads as text there; None when it does not read so (no
        wide decode) or cannot be folded."""
        form: bytes | None
        if kind[0] < -1:
            form = legacy_folded(LEGACY_ENCODINGS[-2 - kind[0]], self.levels[0])
        else:
            form = self.form(kind)
            if form is None and kind[2] == _RENDERED:
                form = self.form((kind[0], kind[1], _FOLDED))
        return None if form is UNFOLDABLE else form

    def _decoded(self, level: int, unreferenced: bool) -> bytes:
        """The text with ``level`` levels of escapes decoded, then its references if asked."""
        text = self._level(level)
        if not unreferenced:
            return text
        found = self._unreferenced.get(level)
        if found is None:
            found = self._unreferenced[level] = _unreferenced(text)
        return found

    def _folded(self, text: bytes) -> bytes | None:
        """``folded(text)`` of one of this text's decoded forms, each worked out once (its
        folded and rendered readings share it), with one ``FoldMemo`` for them all: they
        differ where escapes or references were decoded, no more, as the classifier folds
        them (``json_elements.hidden_by_escapes``)."""
        if text not in self._folds:
            self._folds[text] = folded(text, self._memo)
        return self._folds[text]

    def _legacy_forms(self) -> dict[str, bytes]:
        """The legacy readings of this text, by encoding (``other_encodings.legacy_readings``)."""
        if self._legacy is None:
            self._legacy = dict(legacy_readings(self.levels[0]))
        return self._legacy

    def _legacy_form(self, encoding: str) -> bytes | None:
        """This text decoded as ``encoding`` and folded; for a piece, as its own classification
        reads it: ASCII folded (the same in every one of these encodings), bytes that are not
        UTF-8 when they read as text in ``encoding`` (``legacy_readings``), else None (UTF-8
        is read in no legacy encoding): the piece places nothing."""
        text = self.levels[0]
        if self.joined:
            return self._legacy_forms()[encoding]
        if text.isascii():
            form = folded(text)
            return text if form is None else form
        if is_utf8(text):
            return None
        form = legacy_folded(encoding, text)
        return form if form in self._legacy_forms().values() else None

    def _level(self, level: int) -> bytes:
        while len(self.levels) <= level:
            last = self.levels[-1]
            self.levels.append(_ESCAPE.sub(_unescape_match, last) if b"\\" in last else last)
        return self.levels[level]
