"""Which values another reading of a text shows (folded, ``folding``; decoded otherwise,
``other_encodings``; rendered or reordered, ``shown_text``) that the text's own detections do
not cover: each spans the text whole, since that reading's offsets do not index the text.

``hidden_by_folding`` scans those forms of each text that ``may_hide`` (not ASCII, or holding
such a control character: ``folded`` answers None for any other text). A value it finds
that no detection of the same detector in the text itself covers spans the whole text,
since offsets into the folded form do not index the original: as for text hidden by JSON
escapes. Covers, not counts: the raw scan's detections are placed in the folded form (the
text folded a piece at a time, cut where they start and end), and a value of the folded
form must lie within them. A count lets a decoy stand in for a hidden value: a plain SSN
that folding joins to the digit after it (``111-22-3333\u200b0``) is one SSN to the raw
scan and none folded, where a full-width SSN beside it is one folded and none raw.

Every text, ASCII text that folds to itself too, is also read as UTF-16 where it holds a run
of digits so (``other_encodings.digit_reads``: Devanagari's digits are ``f\t``..``o\t`` in
UTF-16-LE, a client decoding the text so sees an SSN the bytes as written do not show), in
each byte order that holds one, text its NULs or mark read in one order too; and so is each
JSON string in it, escapes decoded, from the string's own first byte
(``other_encodings.string_readings``: a client parses the JSON, then decodes the string).
One native pass over the texts finds the few that may.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import pairwise
from typing import Final

from labelgate.classify.decoded_text import REPLACEMENT_BYTES
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.display_order import reorders
from labelgate.classify.folding import UNFOLDABLE, folded
from labelgate.classify.markup import may_render, rendered
from labelgate.classify.other_encodings import (
    MARK_STARTS,
    digit_encodings,
    digit_reads,
    is_utf8,
    legacy_folded,
    legacy_readings,
    string_candidates,
    string_readings,
    wide_encoding,
    wide_reading,
)
from labelgate.classify.shown_text import (
    Placer,
    display_readings_of,
    markup_reading,
    rendered_folded,
    shown_folded,
)


def hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None = None,
    wide: bool = True,
) -> dict[int, list[Detection]]:
    """For each text whose folded form (or its form decoded as UTF-16 or UTF-32 and folded,
    ``wide_reading``, unless ``wide`` is False; or, for text that is not UTF-8, decoded as a
    legacy encoding and folded, ``legacy_readings``; or its rendered reading, markup a
    renderer drops dropped, ``rendered_reading``; or each order a reader may see it in,
    ``display_readings``, a raw detection placed over the characters it covers) shows a
    value of a detector that ``found`` (the detections of the texts themselves, by index)
    does not cover (``uncovered``): one
    detection per such detector spanning the whole text. Where each value is, not how many:
    a plain SSN that folding joins to a digit (``111-22-3333\u200b0``) must not stand in for
    one only the folded form shows. A text that cannot be folded (``UNFOLDABLE``) fails
    closed: every detector spans it whole. Identical texts (a tensor of many one-byte
    elements) are read once, each placed against its own ``found``."""
    if len(texts) > 1 and len(set(texts)) < len(texts):
        return _hidden_in_distinct(texts, detectors, found, wide)
    return _hidden_by_folding(texts, detectors, found, wide)


def _hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None,
    wide: bool,
) -> dict[int, list[Detection]]:
    """``hidden_by_folding``, each text read on its own."""
    forms: list[bytes] = []
    owners: list[int] = []
    # How each form folds a piece of its text, to place the text's offsets in it; None: a
    # wide decode, none of whose offsets maps to the text's.
    folds: list[Callable[[bytes], bytes | None] | None] = []
    # For a display reading: the reading and how the text's detections are placed in it
    # (``display_readings``); None for every other form.
    shown_in: list[tuple[bytes, Placer] | None] = []
    reordering: dict[int, bytes | None] = {}  # text that is not ASCII -> its folded form
    result: dict[int, list[Detection]] = {}
    # Markup in any text as written: one look at them all (a newline between two texts
    # neither joins markup to a value nor parts it from one), not one per text.
    markup = len(texts) < 2 or may_render(b"\n".join(texts))
    # Texts that may read as UTF-16 digits, by index, with their folded form (None: the
    # text): asked of them together, after; the encoding a byte order mark or NULs read a
    # text in already, by index; whether some text holds a backslash (a JSON escape).
    digit_texts: dict[int, bytes | None] = {}
    read_in: dict[int, tuple[str | None, bytes | None]] = {}
    escaped = False
    for index, text in enumerate(texts):
        form = folded(text)
        if form is UNFOLDABLE:
            if detectors:
                result[index] = unfoldable_spans(len(text), detectors)
            continue
        plain = text.isascii()
        # A bidi control or a right-to-left character (so not ASCII): each order a reader
        # may see the text in (``display_readings``), read beside the folded form, below.
        if not plain:
            reordering[index] = form
        # Markup a renderer drops next to a value's character (``123<b></b>-45-6789``): the
        # rendered reading too, its pieces rendered whatever they hold (``rendered_folded``).
        # Folded text is asked on its own: a control character may part markup from a digit.
        shown = markup_reading(text, form) if markup or form is not None else None
        if shown is not None:
            forms.append(shown)
            owners.append(index)
            folds.append(rendered_folded)
            shown_in.append(None)
        # UTF-16 or UTF-32 text: a byte order mark or NULs (two C-level checks: an int is
        # found with memchr, where ``b"\x00" in text`` takes several times longer; text that
        # folds to itself has neither), else maybe UTF-16 digits of a script whose code units
        # hold no NUL (Mongolian's are control bytes, Bengali's not ASCII), asked below. ASCII
        # text that folds to itself too: Devanagari's digits are letters and tabs in UTF-16
        # (``f\t``), superscripts a letter beside a space, circled digits one beside ``$``.
        # Marked text too: NULs or a mark say how most of it reads, and a run of digits in
        # the other byte order is what a client decoding it in that order sees.
        marked = wide and form is not None and (0 in text or text.startswith(MARK_STARTS))
        if wide:
            digit_texts[index] = form
            escaped = escaped or _BACKSLASH in text
        if form is None:
            continue  # text that folds to itself: the raw scan read it
        others: list[tuple[bytes | None, Callable[[bytes], bytes | None] | None]] = []
        if marked:  # worked out (``wide_encoding``) after those checks only
            encoding = wide_encoding(text)
            reading = wide_reading(text, 0, encoding) if encoding else None
            read_in[index] = encoding, reading
            others.append((reading, None))
        # Bytes that do not decode left a replacement character in the folded form, or were
        # surrogates (``utf8_read``): two searches, and a decode for text that holds either
        # as written (a decode stops at the first byte that does not decode).
        if (REPLACEMENT_BYTES in form or 0xED in text) and not is_utf8(text):
            others += [(reading, partial(legacy_folded, name)) for name, reading in legacy_readings(text)]
        forms.append(form)
        owners.append(index)
        folds.append(folded)
        shown_in.append(None)
        for other, fold in others:
            if other is UNFOLDABLE:
                if detectors:
                    result[index] = unfoldable_spans(len(text), detectors)
            elif other is not None and other != form:
                forms.append(other)
                owners.append(index)
                folds.append(fold)
                shown_in.append(None)
    if digit_texts:  # UTF-16 digits, asked of the texts together (``digit_reads``: native, a pass)
        asked = list(digit_texts)
        asked_texts = [texts[index] for index in asked]
        reads = digit_reads(asked_texts, quoted=True)
        # The text from its first byte, in each byte order that holds a run and that its
        # marks did not read it in; and each JSON string in it that holds one, from the
        # string's own first byte (``string_readings``), at whatever offset it starts.
        strings = string_candidates(asked_texts, reads, escaped)
        for position in sorted(reads.first | strings):
            index = asked[position]
            text, form = texts[index], digit_texts[index]
            done, seen = read_in.get(index, (None, None))
            readings: list[bytes | None] = []
            if position in reads.first:
                readings += [
                    wide_reading(text, 0, encoding) for encoding in digit_encodings(text) if encoding != done
                ]
            if position in strings:
                readings += string_readings(text)
            for other in readings:
                if other is UNFOLDABLE:
                    if detectors:
                        result[index] = unfoldable_spans(len(text), detectors)
                    break
                # UTF-32 text of digits reads as UTF-16 digits too: the same once folded.
                if other is not None and other != (text if form is None else form) and other != seen:
                    forms.append(other)
                    owners.append(index)
                    folds.append(None)
                    shown_in.append(None)
    if reordering:
        for index in _add_shown(texts, reordering, forms, owners, folds, shown_in):
            if detectors:
                result[index] = unfoldable_spans(len(texts[index]), detectors)
    if not forms:
        return result
    more_of: dict[int, dict[str, str]] = {}  # index -> detector -> label, found only folded
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        if index in result:
            continue  # failed closed already
        text = texts[index]
        raw = (found or {}).get(index, ())
        placing = shown_in[position]
        if placing is not None:  # a display reading: the text's detections placed in it
            reading, place = placing
            named = uncovered(hits, place(raw), len(reading), (reading, forms[position]), shown_folded)
        else:
            fold = folds[position]
            folding = None if fold is None else (text, forms[position])
            named = uncovered(hits, raw, len(text), folding, fold or folded)
        if named:
            more_of.setdefault(index, {}).update(named)
    for index, named in more_of.items():
        if index not in result:
            size = len(texts[index])
            result[index] = [Detection(name, named[name], 0, size) for name in sorted(named)]
    return dict(sorted(result.items())) if more_of else result


def _add_shown(
    texts: Sequence[bytes],
    candidates: Mapping[int, bytes | None],
    forms: list[bytes],
    owners: list[int],
    folds: list[Callable[[bytes], bytes | None] | None],
    shown_in: list[tuple[bytes, Placer] | None],
) -> list[int]:
    """Add the display readings (``display_readings_of``), folded, of ``texts`` at the
    indices of ``candidates`` that differ from their folded forms (``candidates``' values;
    None: the text itself), to scan (``_hidden_by_folding``), and their markup's too
    (rendered as written, then reordered: a browser lays out what markup leaves); the
    indices of those one of which cannot be folded (``UNFOLDABLE``). A reading whose offsets
    place nothing (text that is not UTF-8, its markup's) is read as a wide decode is: only
    a detection spanning the text whole covers a value in it."""
    indices = [index for index in candidates if not texts[index].isascii() and reorders(texts[index])]
    if not indices:
        return []
    drawn = {index: rendered(texts[index]) for index in indices if may_render(texts[index])}
    drawn = {index: each for index, each in drawn.items() if each != texts[index]}
    every = display_readings_of([texts[index] for index in indices] + list(drawn.values()))
    readings = dict(zip(indices, every, strict=False))
    for index, more in zip(drawn, every[len(indices) :], strict=True):
        readings[index] = readings[index] + [(reading, None) for reading, _ in more]
    unfoldable: list[int] = []
    for index, own in readings.items():
        form = candidates[index]
        seen = {texts[index] if form is None else form}
        for reading, place in own:
            each = shown_folded(reading)
            if each is UNFOLDABLE:
                unfoldable.append(index)
                break
            if each in seen:
                continue
            seen.add(each)
            forms.append(each)
            owners.append(index)
            folds.append(None if place is None else shown_folded)
            shown_in.append(None if place is None else (reading, place))
    return unfoldable


def _hidden_in_distinct(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None,
    wide: bool,
) -> dict[int, list[Detection]]:
    """``hidden_by_folding`` of ``texts``, some of them identical: each distinct text read
    once, against each distinct set of detections ``found`` gives its copies (a PEM block
    from an element before covers one copy and not another)."""
    keys: dict[tuple[bytes, tuple[Detection, ...]], int] = {}
    key_of: list[int] = []
    raw_of = (found or {}).get
    for index, text in enumerate(texts):
        raw = raw_of(index)
        key_of.append(keys.setdefault((text, tuple(raw) if raw else ()), len(keys)))
    distinct = list(keys)
    hidden = _hidden_by_folding(
        [text for text, _ in distinct],
        detectors,
        {at: list(raw) for at, (_, raw) in enumerate(distinct) if raw},
        wide,
    )
    return {index: list(hidden[key]) for index, key in enumerate(key_of) if key in hidden}


def uncovered(
    hits: Sequence[Detection],
    raw: Sequence[Detection],
    size: int,
    folding: tuple[bytes, bytes] | None,
    fold: Callable[[bytes], bytes | None] = folded,
) -> dict[str, str]:
    """The detectors (and their labels) of ``hits``, found in another form of a text of
    ``size`` bytes, with a value some byte of which no detection of the same detector in
    ``raw`` (found in the text itself) covers: a mask on ``raw`` leaves that byte as it is.
    ``folding``: (the text, its folded form ``hits`` index), so ``raw``'s offsets are mapped
    into the folded form (``_folded_offsets``, each piece folded by ``fold``: a legacy
    reading's decode and fold for one, ``legacy_folded``); None: that form's offsets map to
    none of the text's (a wide decode), and only a detection spanning the whole text covers a
    value in it.
    A value over two detections side by side (``ann@x.com\u200bbob@y.com`` folds to one
    email) is covered: each of its bytes is masked as a value of that detector."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for hit in raw:
        spans.setdefault(hit.detector, []).append((hit.start, hit.end))
    named: dict[str, str] = {}
    pending: list[Detection] = []
    for hit in hits:
        if hit.detector in named:
            continue
        own = spans.get(hit.detector)
        if not own:
            named[hit.detector] = hit.label  # a value the raw scan found none of
        elif not any(start <= 0 and end >= size for start, end in own):
            pending.append(hit)  # covered whole otherwise: nothing to map
    pending = [hit for hit in pending if hit.detector not in named]
    if not pending:
        return named
    names = {hit.detector for hit in pending}
    offsets = None if folding is None else _folded_offsets(*folding, spans, names, fold)
    if offsets is None:  # no offset of the text maps into this form: each value is its own
        named.update((hit.detector, hit.label) for hit in pending)
        return named
    merged = {
        name: _merged([(offsets[start], offsets[end]) for start, end in spans[name]])
        for name in {hit.detector for hit in pending}
    }
    for hit in pending:
        if hit.detector not in named and not _within(merged[hit.detector], hit.start, hit.end):
            named[hit.detector] = hit.label
    return named


def _folded_offsets(
    text: bytes,
    form: bytes,
    spans: Mapping[str, Sequence[tuple[int, int]]],
    names: set[str],
    fold: Callable[[bytes], bytes | None] = folded,
) -> dict[int, int] | None:
    """Where each offset of ``text`` that starts or ends a span of ``spans`` (of ``names``)
    falls in ``form``, ``text`` folded: ``text`` is folded a piece at a time, cut at those
    offsets, and the pieces must make ``form``. None when they do not (folding joined
    something across a cut: a mark composed with the letter before it, a backspace over the
    last digit of a value, a piece that cannot be folded on its own): the values of ``form``
    are then placed nowhere, and fail closed. Folds ``text`` once more, and only for text
    whose folded form shows a value of a detector its raw scan found too."""
    cuts = sorted({0, len(text), *(offset for name in names for span in spans[name] for offset in span)})
    offsets: dict[int, int] = {}
    parts: list[bytes] = []
    size = 0
    for start, end in pairwise(cuts):
        offsets[start] = size
        piece = text[start:end]
        part = fold(piece)
        if part is UNFOLDABLE:
            return None
        part = piece if part is None else part
        parts.append(part)
        size += len(part)
    offsets[len(text)] = size
    return offsets if b"".join(parts) == form else None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` in order, those that overlap or touch joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _within(merged: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies in one of ``merged`` (``_merged``: disjoint, apart)."""
    at = bisect_right(merged, (start, _AFTER_ALL)) - 1
    return at >= 0 and merged[at][0] <= start and end <= merged[at][1]


_AFTER_ALL: Final = 1 << 62
_BACKSLASH: Final = 0x5C  # an int: ``in`` finds it with memchr


def unfoldable_spans(size: int, detectors: DetectorSet) -> list[Detection]:
    """What an ``UNFOLDABLE`` text of ``size`` bytes may hide: anything, so every detector of
    ``detectors`` spans it whole."""
    return [Detection(name, detectors.label_of(name), 0, size) for name in sorted(detectors.names)]
