"""How a piece about to leave is read joined to what of its text was released
(``display_context``), and how a value is told by its characters: pure.

The joined text is read as the classifier reads integers as characters (``Shown``, after
``characters``: each character folded on its own, moved whole into each order a reader may
see the text in, ``display_order``), text and code points alike. A value is its characters,
not its text: what the released text and the piece each show alone, as stored and in each of
their own display orders, is noted with the positions of the characters it is read from
(``Seen``), and a value the joined reading shows from characters no reading of either part
shows it from is one only their joining shows (``display_context.DisplayContext``'s
``_made_by_joining`` decides). An earlier copy of the same text, masked in its own reply, says
nothing of a later one the joining shows; the same characters showing a value in another order
show nothing new.

Kept apart from what is kept of the released text (``kept_text``): that bounds what a stream
holds, this reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from labelgate.classify import characters
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.display_order import display_orders_of_points, points_reorder

REPLACEMENT: Final = 0xFFFD


class Shown:
    """A text's characters as the classifier reads integers as characters (``characters``):
    each one's code point and the byte it folds to (``characters.shown_view``: ASCII,
    ``DROPPED`` for what shows as nothing or a terminal leaves out, ``OTHER`` for one no value
    holds, ``LONGER`` for one folding makes several of), read in an order by moving each
    character's form whole (as ``characters`` reads them in display order)."""

    __slots__ = ("points", "view")

    def __init__(self, points: np.ndarray[Any, Any], view: np.ndarray[Any, Any]) -> None:
        self.points = points
        self.view = view

    @classmethod
    def of(cls, text: str) -> Shown:
        if len(text) <= _FEW and not terminal(text):
            # A token or a few: a character at a time (``characters.folds_to``: what
            # ``shown_view`` reads each as where no escape sequence or backspace is near).
            codes = [ord(char) for char in text]
            return cls(
                np.array([_NOT_A_CHARACTER if 0xD800 <= code <= 0xDFFF else code for code in codes]),
                np.array([characters.folds_to(code) for code in codes], dtype=np.uint8),
            )
        units = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        points, _, view = characters.shown_view(units)
        return cls(points, view)

    def joined(self, after: Shown) -> Shown:
        return Shown(np.concatenate((self.points, after.points)), np.concatenate((self.view, after.view)))

    def folded(self, order: np.ndarray[Any, Any] | None = None) -> bytes:
        """The characters in ``order`` (as stored: None), each as it folds."""
        view = self.view if order is None else self.view[order]
        text = view.tobytes()
        if _LONGER_BYTE in text:
            points = self.points if order is None else self.points[order]
            longer = characters.longer_forms()
            forms = [longer.get(code, _OTHER_BYTE) for code in points[view == characters.LONGER].tolist()]
            pieces = text.split(_LONGER_BYTE)
            parts = [b""] * (2 * len(pieces) - 1)
            parts[0::2] = pieces
            parts[1::2] = forms
            text = b"".join(parts)
        return text.translate(None, _DROPPED_BYTE)

    def display_orders(self) -> list[np.ndarray[Any, Any]]:
        """Each order a reader may see the text in (``display_order``) other than as stored."""
        points = np.where(self.points < _NOT_A_CHARACTER, self.points, REPLACEMENT)
        if not points_reorder(points):
            return []
        return display_orders_of_points(points)

    def sources(self, order: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """For each byte of ``folded(order)``, the position of the character it comes from."""
        at = np.arange(len(self.points)) if order is None else order
        view = self.view[at]
        sizes = (view != characters.DROPPED).astype(np.int64)
        longer = np.flatnonzero(view == characters.LONGER)
        if len(longer):
            forms = characters.longer_forms()
            sizes[longer] = [len(forms.get(code, _OTHER_BYTE)) for code in self.points[at[longer]].tolist()]
        return np.repeat(at, sizes)


class Seen:
    """The values readings of a text alone show (``add``), each with the characters it is
    read from (their positions in the joined text): what a joined reading shows from the same
    characters was read by their own classification; anything else is new (``shows``)."""

    __slots__ = ("_detectors", "_seen")

    def __init__(self, detectors: DetectorSet) -> None:
        self._detectors = detectors
        self._seen: set[tuple[str, bytes, bytes]] = set()

    def add(self, shown: Shown, text: str, offset: int) -> None:
        """What ``text`` (``shown``: its ``Shown``; ``offset``: where it starts) shows alone:
        as stored (its UTF-8, and folded), and in each order a reader may see it in."""
        raw = text.encode("utf-8", "surrogatepass")
        self._read(raw, lambda: _utf8_sources(text), offset)
        self._read(shown.folded(), shown.sources, offset)
        for order in shown.display_orders():
            self._read(shown.folded(order), functools.partial(shown.sources, order), offset)

    def _read(self, reading: bytes, sources: Callable[[], np.ndarray[Any, Any]], offset: int) -> None:
        hits = self._detectors.scan(reading)
        if not hits:
            return
        at = sources() + offset
        self._seen.update(
            (hit.detector, reading[hit.start : hit.end], _characters(at[hit.start : hit.end])) for hit in hits
        )

    def shows(self, detector: str, value: bytes, sources: np.ndarray[Any, Any]) -> bool:
        """Whether a text alone showed ``value`` from the characters at ``sources`` (in any
        order: the same characters showing the same value show nothing new)."""
        return (detector, value, _characters(sources)) in self._seen


def _characters(sources: np.ndarray[Any, Any]) -> bytes:
    return np.unique(sources).astype(np.int64).tobytes()


def _utf8_sources(text: str) -> np.ndarray[Any, Any]:
    """For each byte of ``text``'s UTF-8, the position of the character it comes from."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    sizes = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
    return np.repeat(np.arange(len(codes)), sizes)


_DROPPED_BYTE: Final = bytes((characters.DROPPED,))
_LONGER_BYTE: Final = bytes((characters.LONGER,))
_OTHER_BYTE: Final = bytes((characters.OTHER,))
_NOT_A_CHARACTER: Final = 0x110000
# Pieces this short are read a character at a time (``Shown.of``).
_FEW: Final = 16


def terminal(text: str) -> bool:
    """Whether ``text`` holds what a terminal does not show as it is: an escape sequence or a
    backspace, which ``characters.shown_view`` reads with what follows them."""
    return "\x1b" in text or "\x08" in text
