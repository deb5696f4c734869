"""Text as a browser, a Markdown renderer or a reader's display shows it: markup a renderer
drops dropped, and each order a bidi control or a right-to-left character may show it in.
Readings beside the folded one (``folding``), never in its place: a value only they show is
one the detectors would not see in the text as stored.

Markup a browser or a Markdown renderer drops between a value's characters
(``123<b></b>-45-6789``, ``12**3**-45-6789``) hides it too: text holding such markup next to
a digit (``markup.may_render``, which ``may_hide`` asks) is also read rendered
(``rendered_reading``: folded, then ``markup.rendered``), a reading beside the folded one,
never in its place; its pieces are rendered whatever they hold (``rendered_folded``), so a
raw detection is placed in it as in the folded form.

Text is not shown in the order it is stored when it holds a bidi control or a right-to-left
character (``display_order``): ``ssn \u202e9876-54-321\u202c`` shows as ``ssn 123-45-6789``
(a RIGHT-TO-LEFT OVERRIDE reverses its run; folding drops the override, which shows as
nothing), and a Hebrew letter, an Arabic one or an invisible RIGHT-TO-LEFT MARK before
``1111 1111 1111 4111`` shows the groups in reverse order, a card. So such text is also read
in each order a reader may see it in (``display_readings``: paragraphs left to right and
right to left, newlines ending them or collapsed as a browser collapses them), each folded,
beside the folded form (again never in its place): a raw detection is placed over the
characters it covers wherever they show (``_placed``), and a value it does not cover spans
the text whole, as a value only folding shows does. Markup is rendered before reordering
(a browser lays out what markup leaves). Readers that place nothing (escapes decoded,
``rendered_reading``; a stream's joined pieces, ``split_values``) get those readings whole
for text with an explicit embedding, override or isolate, and only the runs that show
otherwise than stored for text that only right-to-left characters reorder
(``shown_readings``): a plain value in Arabic or Hebrew text spans nothing more. Cost: text
with no right-to-left character, one translate and a search or two (0.3 ms a MB of Latin
text); text with one, about 0.5 ms a KB (folding: 0.03; numpy over its characters, up to
four readings, each folded and scanned), 80 µs for a 100-byte element of a tensor of many
(read together, ``display_readings_of``). Bracket pairs cost more, and are bounded
(``display_order.BRACKET_BUDGET``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from labelgate.classify.decoded_text import utf8_read
from labelgate.classify.detectors import Detection
from labelgate.classify.display_order import overrides, reorders
from labelgate.classify.folding import UNFOLDABLE, fold_decoded, folded
from labelgate.classify.markup import may_render, rendered
from labelgate.classify.other_encodings import is_utf8
from labelgate.classify.shown_orders import beside_stored, shown_orders_of


def rendered_reading(text: bytes, form: bytes | None = None) -> bytes | None:
    """``text`` folded (``form``: ``folded(text)``, when known and not ``UNFOLDABLE``), then
    rendered (``markup.rendered``) when it holds markup a renderer drops next to a character
    a value is made of (``markup.may_render``): what a browser or a Markdown renderer shows
    of it; and, for text a bidi control or a right-to-left character may show in another
    order, that order folded (``shown_readings``); joined by newlines. None when it has
    neither reading. Other readings beside the folded one, never in its place: dropping
    ``_`` joins ``card_4111...`` into one word, where the folded form shows the card. For
    readers that place nothing in it (a value found spans the text whole); ``hidden_by_folding``
    places a raw detection in each."""
    readings = [] if (markup := markup_reading(text, form)) is None else [markup]
    readings += shown_readings(text, text if form is None else form, markup)
    if not readings:
        return None
    if any(reading is UNFOLDABLE for reading in readings):
        return UNFOLDABLE
    return readings[0] if len(readings) == 1 else b"\n".join(readings)


def markup_reading(text: bytes, form: bytes | None = None) -> bytes | None:
    """``rendered_reading``'s markup reading alone: None when ``text`` may not render, or
    renders as it reads folded."""
    base = text if form is None else form
    if not may_render(base):
        return None
    shown = rendered(base)
    return None if shown == base else shown


def rendered_folded(text: bytes) -> bytes | None:
    """``text`` folded and rendered whatever it holds (``UNFOLDABLE`` when it cannot be
    folded): how a piece of a text read by ``rendered_reading`` reads, since a piece alone
    (``<td>``, ``**``) has no value beside it and would be read as written otherwise."""
    form = folded(text)
    if form is UNFOLDABLE:
        return form
    return rendered(text if form is None else form)


# Text in the order a reader sees it (``display_order``): a RIGHT-TO-LEFT OVERRIDE shows
# ``9876-54-321`` as ``123-45-6789``, and a Hebrew letter or an invisible RIGHT-TO-LEFT MARK
# before ``1114 1111 1111 1111`` shows its groups in reverse order. Folding drops the bidi
# controls (they show as nothing) and keeps the order stored, so each order a reader may
# see is read too, folded (``shown_folded``), beside the folded form.
Placer = Callable[[Sequence[Detection]], list[Detection]]


def display_readings(text: bytes) -> list[tuple[bytes, Placer | None]]:
    """``text``'s characters in each order a reader may see them (``display_order``), UTF-8,
    not folded, what a terminal does not show left out (``TERMINAL_SEQUENCES``: a styling
    sequence reversed would show as letters; a cursor movement reads as a space), each with
    how the detections of ``text`` itself are placed in it (``_placed``; None when ``text`` is
    not UTF-8: its offsets place nothing there). [] for text nothing reorders (``reorders``:
    C-level passes over text that is not ASCII), and for bytes that are not text
    (``reads_as_text``: an image's, whose bytes decode to a letter now and then)."""
    return display_readings_of([text])[0]


def display_readings_of(texts: Sequence[bytes]) -> list[list[tuple[bytes, Placer | None]]]:
    """``display_readings`` of each of ``texts``, their orders worked out at once
    (``shown_orders.shown_orders_of``, which text decoded otherwise than as UTF-8 is read
    through too)."""
    readings: list[list[tuple[bytes, Placer | None]]] = [[] for _ in texts]
    decoded = {
        index: utf8_read(text) for index, text in enumerate(texts) if not text.isascii() and reorders(text)
    }
    every = shown_orders_of(list(decoded.values()))
    for (index, each), orders in zip(decoded.items(), every, strict=True):
        if not orders:
            continue
        text = texts[index]
        exact = is_utf8(text)
        points = np.frombuffer(each.encode("utf-32-le", "surrogatepass"), dtype="<u4") if exact else None
        for reading, origins in orders:
            place = partial(_placed, text, points, origins) if points is not None else None
            readings[index].append((reading.encode("utf-8", "surrogatepass"), place))
    return readings


def _placed(
    text: bytes,
    points: np.ndarray[Any, Any],
    origins: np.ndarray[Any, Any],
    raw: Sequence[Detection],
) -> list[Detection]:
    """``raw`` (detections in ``text``, UTF-8 of the code points ``points``) placed in a display
    reading of it whose characters are those of ``origins`` (indices into ``points``, in the
    order shown): each detection covers the characters it covers in ``text``, wherever they
    show, a span per stretch of them side by side (a card whose groups show reversed stays
    covered); one spanning ``text`` whole spans the reading whole."""
    if not raw:
        return []
    size = len(points)
    starts = np.flatnonzero((np.frombuffer(text, dtype=np.uint8) & 0xC0) != 0x80)  # each character's
    position = np.full(size, -1, dtype=np.int64)
    position[origins] = np.arange(len(origins))
    widths = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.concatenate(([0], np.cumsum(widths[origins])))
    placed: list[Detection] = []
    for hit in raw:
        first, last = (int(at) for at in np.searchsorted(starts, [hit.start, hit.end]))
        if first <= 0 and last >= size:
            placed.append(hit._replace(start=0, end=int(offsets[-1])))
            continue
        shown = position[first:last]
        shown = np.sort(shown[shown >= 0])
        if not len(shown):
            continue
        for run in np.split(shown, np.flatnonzero(np.diff(shown) != 1) + 1):
            placed.append(hit._replace(start=int(offsets[run[0]]), end=int(offsets[run[-1] + 1])))
    return placed


def shown_folded(text: bytes) -> bytes:
    """A display reading (or a piece of one) folded: escape sequences were left out of it
    (``display_readings``), so any a reversed run makes up is read as a space, not as a
    cursor movement (``fold_decoded``'s ``moves``); ``UNFOLDABLE`` as for ``folded``."""
    return fold_decoded(utf8_read(text), moves=False)


def shown_readings(text: bytes, form: bytes | None = None, markup: bytes | None = None) -> list[bytes]:
    """``text``'s display readings (``display_readings``), of it and of it with its markup
    rendered (``markup.rendered``, when it may render), folded, for readers that place
    nothing in them (a value found spans the text whole): all of each for text holding an
    explicit embedding, override or isolate (``overrides``: any run of it may show
    reversed, and a stream's pieces, each read on its own, may hold the control and the
    run apart); for text only right-to-left characters reorder (letters, marks, Arabic
    digits: its runs shown in another order, none reversed within), only the runs of ASCII
    they show more often than ``form`` (``folded(text)``, worked out when None) and
    ``markup`` (its rendered reading) do (``shown_orders.beside_stored``): a value read as
    stored, which such a reader finds anyway, spans nothing more (a token stream in Arabic
    with an email is not refused for it, ``split_values``). ``UNFOLDABLE`` (in the list)
    when one cannot be folded."""
    if text.isascii() or not reorders(text):
        return []
    if form is None:
        form = folded(text)
        form = text if form is None or form is UNFOLDABLE else form
    sources = [text]
    if may_render(text) and (drawn := rendered(text)) != text:
        sources.append(drawn)
    readings = [shown_folded(reading) for own in display_readings_of(sources) for reading, _ in own]
    if any(reading is UNFOLDABLE for reading in readings):
        return [UNFOLDABLE]
    return beside_stored(readings, overrides(text), form, markup)
