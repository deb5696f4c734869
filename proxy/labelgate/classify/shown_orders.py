"""Decoded text in each order a reader may see it in (``display_order``): the display reading
``shown_text`` gives UTF-8 text, for text however it was decoded. Pure.

``shown_text`` reads UTF-8 text so; ``other_encodings`` reads its UTF-16, UTF-32 and legacy
decodes the same way (``decoded_shown_readings``), since a reader that decodes
``ssn \\u202e9876-54-321\\u202c`` from UTF-16LE shows ``ssn 123-45-6789`` as one that decodes
it from UTF-8 does. Each reading leaves out what a terminal does not show (a cursor movement
reads as a space, ``terminal_shown``); text that does not read as text (an image's bytes,
``reads_as_text``) is not read so. For readers that place nothing in a reading (a value
found spans the text whole), ``beside_stored`` keeps what a reading shows that the text as
stored does not: every reading of text holding an explicit embedding, override or isolate,
and only the runs of ASCII reordered for text only right-to-left characters reorder (a plain
value in Arabic or Hebrew text spans nothing more).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from labelgate.classify.decoded_text import reads_as_text
from labelgate.classify.display_order import display_orders_of, overrides, reorders
from labelgate.classify.folding import STYLING_SEQUENCES, TERMINAL_SEQUENCES, UNFOLDABLE, fold_decoded


def shown_orders_of(texts: Sequence[str]) -> list[list[tuple[str, np.ndarray[Any, Any]]]]:
    """For each of ``texts`` (decoded), each order a reader may see it in, as the characters
    shown in that order (what a terminal does not show left out, ``terminal_shown``) and the
    index in the text of each (for placing the text's own detections there); none for text
    that does not read as text (``reads_as_text``) or that nothing reorders. Every text's
    orders are worked out at once (``display_order.display_orders_of``)."""
    shown_of: dict[int, tuple[str, np.ndarray[Any, Any]]] = {}
    for index, text in enumerate(texts):
        if not reads_as_text(text):
            continue  # bytes of an image, of audio: a letter of theirs reorders nothing shown
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        shown_of[index] = terminal_shown(text, points)
    readings: list[list[tuple[str, np.ndarray[Any, Any]]]] = [[] for _ in texts]
    every = display_orders_of([shown for shown, _ in shown_of.values()])
    for (index, (shown, origins)), orders in zip(shown_of.items(), every, strict=True):
        shown_points = np.frombuffer(shown.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        for order in orders:
            reading = shown_points[order].tobytes().decode("utf-32-le", "surrogatepass")
            readings[index].append((reading, origins[order]))
    return readings


def terminal_shown(decoded: str, points: np.ndarray[Any, Any]) -> tuple[str, np.ndarray[Any, Any]]:
    """``decoded`` as a terminal shows it (``folding``: escape sequences and what a backspace
    steps over left out, a cursor movement as a space), and where each of its characters
    was in ``decoded`` (``points``: its code points)."""
    if "\x1b" not in decoded and "\x08" not in decoded:
        return decoded, np.arange(len(decoded))
    kept = np.ones(len(decoded), dtype=bool)
    spaces: list[int] = []
    for match in TERMINAL_SEQUENCES.finditer(decoded):
        start, end = match.span()
        kept[start:end] = False
        if decoded[start] == "\x1b" and STYLING_SEQUENCES.match(match.group()) is None:
            kept[start] = True
            spaces.append(start)
    shown = points.copy()
    shown[spaces] = ord(" ")
    origins = np.flatnonzero(kept)
    return shown[origins].tobytes().decode("utf-32-le", "surrogatepass"), origins


def decoded_shown_readings(decoded: str, form: bytes, guessed: bool = False, breaks: int = 0) -> list[bytes]:
    """The display readings of ``decoded`` (text decoded from UTF-16, UTF-32 or a legacy
    encoding), folded as its folded form ``form`` was (``guessed``, ``breaks``: as for
    ``folding.fold_decoded``; escape sequences were left out of them, so any a reversed run
    makes up reads as a space), what readers that place nothing read beside ``form``
    (``beside_stored``); ``[UNFOLDABLE]`` when one cannot be folded. [] after one C-level
    search for a decode that nothing reorders (most). NULs (padding, which a guessed decode
    does not count either, and which show as nothing) are left out before it is read."""
    if not reorders(decoded):
        return []
    [orders] = shown_orders_of([decoded.replace("\x00", "")])
    readings = [fold_decoded(reading, guessed, breaks, moves=False) for reading, _ in orders]
    if any(reading is UNFOLDABLE for reading in readings):
        return [UNFOLDABLE]
    return beside_stored(readings, overrides(decoded), form)


# Runs of ASCII in a folded reading: what a built-in detector's value lies in (a character
# past ASCII joins no value).
_PAST_ASCII: Final = re.compile(rb"[\x80-\xff]+")


def _runs(form: bytes) -> list[bytes]:
    """``form``'s runs of ASCII (``_PAST_ASCII``), spaces at their ends left out: a space
    that shows on the other side of a run joins it to nothing."""
    return [run for run in (each.strip() for each in _PAST_ASCII.split(form)) if run]


def beside_stored(readings: Sequence[bytes], explicit: bool, form: bytes, *more: bytes | None) -> list[bytes]:
    """Of a text's folded display ``readings``, what readers that place nothing in them read
    beside its folded form ``form`` (and ``more`` of its readings as stored: the rendered
    one): each distinct reading but ``form`` for text holding an explicit embedding, override
    or isolate (``explicit``: any run of it may show reversed, and a stream's pieces, each
    read on its own, may hold the control and the run apart); for text only right-to-left
    characters reorder (its runs shown in another order, none reversed within), only the
    runs of ASCII the readings show more often than ``form`` and ``more`` do, joined by
    newlines: a value read as stored, which such a reader finds anyway, spans nothing more."""
    distinct = [reading for reading in dict.fromkeys(readings) if reading != form]
    if not distinct or explicit:
        return distinct
    stored = Counter(run for each in (form, *more) if each for run in _runs(each))
    changed: dict[bytes, None] = {}
    for reading in distinct:
        changed.update((run, None) for run, count in Counter(_runs(reading)).items() if count > stored[run])
    return [b"\n".join(changed)] if changed else []
