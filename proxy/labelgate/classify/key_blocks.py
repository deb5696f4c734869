"""PEM private keys that cross a message's texts, or a tensor's elements: pure.

A PEM private key is the one value that spans texts (``detectors``): a BEGIN marker in one
string, the key's lines in the following ones, which alone hold nothing to find. Which
strings follow which is up to whoever renders the message: ``messages`` reads plain strings
in field-number order, each map on its own, each folded message on its own, the REST
binding writes ModelConfig in declaration order, and a client may read the fields in any
order. So no order of scanning covers what a block that crosses texts covers: even a BEGIN
marker in one text whose END marker the scan meets in a later one may, rendered another
way, enclose strings the scan read before, or after, both. The rule, sound whatever the
order: a text that, as it is or in a form the scan reads it in (escapes decoded, folded),
opens a PEM block it does not close itself (``credentials.open_pem``: a BEGIN marker with no
END marker after it in the same text) makes every text of the whole reply count as found by
``secret`` (``messages`` applies that: fail closed). A block that opens and closes in one
text stays that text's, whatever the order. (An END marker whose block opened in no text
needs no such rule: the lines before it hold no marker, and nothing any reading could find.)

A tensor's elements have an order, and a caller reads them in it: there a block runs on from
the element that opens it to its END marker in a later element, or to the last
(``carried_across``), whatever kind of element each is. Read so, the elements are one text: a
BEGIN marker split across elements (``-----BEGIN RSA PRI`` then ``VATE KEY-----``, or one
character an element, as a token-per-element output writes it) opens a block as one in an
element does (``split_openings``), from the element where it starts. A reply's outputs have none a caller
must keep: a block one output leaves open after its last element (``left_open``) covers every
other text output of the reply whole (``classifier``), as the rule above covers a typed
reply's texts. A stream's replies arrive in order: a block open at the end of what a reply
brought runs into the next ones, in every output, until its END marker arrives
(``carried_keys``: ``CoveredTensor``; a routed stream is refused, ``split_values``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from itertools import accumulate
from typing import Any

from labelgate.classify import characters, credentials
from labelgate.classify.detectors import Detection
from labelgate.classify.folding import UNFOLDABLE, folded, may_hide
from labelgate.classify.integer_text import CharacterRead, unread_marker
from labelgate.classify.jsonpaths import may_escape, unescaped_forms
from labelgate.classify.other_encodings import wide_folded
from labelgate.classify.shown_text import rendered_reading

# The detector whose PEM blocks span texts.
SECRET = credentials.NAME


def crosses_texts(
    texts: list[bytes],
    found_per_text: list[list[Detection]],
    found_in_maps: list[tuple[str, list[bytes], dict[int, list[Detection]]]],
    read: list[CharacterRead],
) -> bool:
    """Whether one of a walker's texts opens a PEM block it does not close (``opens_key_block``):
    its strings, bytes and numbers, its maps' texts, and its integer fields read as characters."""
    for text, found in zip(texts, found_per_text, strict=True):
        if found and names_secret(found) and opens_key_block(text):
            return True
    for _, map_texts, found_in_map in found_in_maps:
        for index, found in found_in_map.items():
            if names_secret(found) and opens_key_block(map_texts[index]):
                return True
    for entry in read:
        for values, array in entry.orders:
            if array is None or not (names_secret(entry.found) or unread_marker(values)):
                continue
            # Read as ``characters`` reads them (written and folded), escapes decoded.
            if any(opens_key_block(form, fold=False) for form in characters.text_forms(array)):
                return True
    return False


def names_secret(found: Any) -> bool:
    return any(hit.detector == SECRET for hit in found)


def opens_key_block(text: bytes, fold: bool = True) -> bool:
    """Whether ``text``, as it is or in a form the scan reads it in (JSON escapes and character
    references decoded, folded, decoded as the UTF-16 or UTF-32 it may be), opens a PEM block
    that it does not close (``credentials.open_pem``). Asked only of texts in which ``secret``
    found something (a BEGIN marker in any of those forms is such a detection, through the
    end of its text at least), or did not look (``integer_text.unread_marker``). Text that
    cannot be folded (``UNFOLDABLE``: ``secret`` spans it whole) is read as it is and decoded
    only, as the scan of a tensor's elements keeps it to itself too. ``fold``: False for a
    form folded already (``characters.text_forms``), whose decoded escapes are still folded."""
    return any(credentials.open_pem(form) is not None for form in [text, *_other_forms(text, fold)])


def _other_forms(text: bytes, fold: bool = True) -> list[bytes]:
    """The forms besides itself the scan reads ``text`` in (``opens_key_block``)."""
    forms: list[bytes | None] = [text]
    if may_escape(text):
        forms += unescaped_forms(text)
    for form in [form for form in (forms if fold else forms[1:]) if form and may_hide(form)]:
        each = folded(form)
        forms.append(each)
        forms.append(rendered_reading(form, None if each is UNFOLDABLE else each))  # markup
    if fold:
        forms.append(wide_folded(text))
    return [form for form in forms[1:] if form]  # UNFOLDABLE is empty: read as it is


# A tensor's elements. A BYTES tensor's elements are scanned in three sets, each in order:
# plain text ones, the leaves of those read as JSON objects, and opaque ones
# (``classifier``); a block carries from one text to the next of the same set only. So a
# block opened in one kind of element (an opaque element, a JSON leaf, a text) reaches none
# of the elements of another kind after it by those scans alone. The walk below
# carries it across all of them in element order (a JSON object's leaves in document order),
# as one scan of the tensor would, failing closed where the scan's forms differ: a block
# whose END marker only a decoded or folded form shows covers its element whole, and each
# marker any form opens is awaited.


def awaited_after(text: bytes) -> frozenset[bytes]:
    """The END markers that blocks ``text`` opens and does not close await, in any form the
    scan reads it in (``opens_key_block``)."""
    forms = [text, *_other_forms(text)]
    return frozenset(marker for form in forms if (marker := credentials.open_pem(form)) is not None)


def run_on(text: bytes, awaited: frozenset[bytes]) -> tuple[int, frozenset[bytes]]:
    """For ``text`` reached with blocks open that await the END markers ``awaited``: how far
    into it they run (through the last of those markers as written; all of it when one is
    found in no form, or only in a decoded or folded one, whose offsets do not index it), and
    the markers awaited after it (those found in no form, and those it opens past the blocks'
    end, or in any of its other forms)."""
    others = _other_forms(text)
    end = 0
    left: set[bytes] = set()
    for marker in awaited:
        at = text.find(marker)
        if at >= 0:
            end = max(end, at + len(marker))
            continue
        end = len(text)
        if not any(marker in form for form in others):
            left.add(marker)
    if end < len(text) and (opened := credentials.open_pem(text[end:])) is not None:
        left.add(opened)
    left.update(opened for form in others if (opened := credentials.open_pem(form)) is not None)
    return end, frozenset(left)


# One BEGIN marker split across elements (``split_openings``): where in its first element it
# starts, and the END marker its block awaits.
SplitOpening = tuple[int, bytes]


def split_openings(values: Sequence[bytes], joined: bytes | None = None) -> dict[int, SplitOpening]:
    """The BEGIN markers (as written) that only the elements' text joined in order shows, as
    the carry reads them (``carried_across``): per element where one starts and that it does
    not hold whole, the first such marker's start in it and the END marker its block awaits.
    One C-level search when the joined text holds no ``PRIVATE KEY`` (most tensors).
    ``joined``: the values joined, when the caller has them."""
    found: dict[int, SplitOpening] = {}
    for index, start, _, closing in split_markers(values, joined):
        if index not in found:
            found[index] = (start, closing)
    return found


def split_markers(values: Sequence[bytes], joined: bytes | None = None) -> list[tuple[int, int, int, bytes]]:
    """Each BEGIN marker (as written) of the elements' text joined in order that no element
    holds whole, in order: the element where it starts, its start in that element, where it
    ends in the joined text, and the END marker its block awaits (``split_openings``)."""
    joined = b"".join(values) if joined is None else joined
    found: list[tuple[int, int, int, bytes]] = []
    if credentials._KEY not in joined or len(values) < 2:
        return found
    ends = list(accumulate(map(len, values)))  # where each element ends in ``joined``
    position = 0
    while (key := joined.find(credentials._KEY, position)) >= 0:
        position = key + 1
        marker = credentials._pem_marker(joined, key)
        if marker is None or not marker[0]:
            continue
        _, start, label, end, (_, closing, dashes) = marker
        # The element of its first byte, and of its last (empty elements hold neither).
        index = bisect_right(ends, start)
        if index != bisect_right(ends, end - 1):
            found.append(
                (
                    index,
                    start - (ends[index] - len(values[index])),
                    end,
                    closing + joined[label : end - credentials._DASHES] + dashes,
                )
            )
    return found


def carried_across(
    values: list[bytes],
    first: int,
    objects: Container[int],
    opaque: Collection[int],
    leaf_texts: Callable[[int], list[bytes]],
    split: dict[int, SplitOpening] | None = None,
) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]], dict[int, int]]:
    """The blocks of a tensor's elements carried across them in element order, from the
    element ``first`` (the first that opens one it does not close, or where a marker of
    ``split`` starts): per element another block runs into, how far (a text's bytes; an
    opaque element's are all of it); per JSON object in ``objects`` such a block runs into,
    each of its scanned leaves it covers (ordinal, end), from ``leaf_texts(index)``; and per
    element where a ``split`` marker opens a block (none was open at its end), where in it
    the marker starts (the block runs from there to its end, and on as any other). Empty
    elements and leaves are left out (nothing to cover). An element of ``objects`` no block
    runs into is read as its raw text, which opens what its leaves open."""
    covered: dict[int, int] = {}
    leaves: dict[int, list[tuple[int, int]]] = {}
    opened: dict[int, int] = {}
    split = split or {}
    awaited: frozenset[bytes] = frozenset()
    for index in range(first, len(values)):
        value = values[index]
        if not awaited:
            awaited = awaited_after(value)
            if not awaited and index in split:
                # No block open at its end: a marker crossing out of it opens one.
                opened[index], closing = split[index]
                awaited = frozenset((closing,))
        elif index in objects:
            found = leaves[index] = []
            for leaf, text in enumerate(leaf_texts(index)):
                if not awaited:
                    awaited = awaited_after(text)
                    continue
                end, awaited = run_on(text, awaited)
                if end:
                    found.append((leaf, end))
        else:
            end, awaited = run_on(value, awaited)
            if end:
                covered[index] = len(value) if index in opaque else end
            if not awaited and index in split:
                opened[index], closing = split[index]
                awaited = frozenset((closing,))
    return covered, {index: found for index, found in leaves.items() if found}, opened


def left_open(values: Sequence[bytes], candidates: Iterable[int]) -> frozenset[bytes]:
    """The END markers a tensor's elements (``values``, read in order as written and in the
    forms the scan reads) leave awaited after the last: blocks an element opens that no later
    one closes, or a BEGIN marker split across elements opens (``split_openings``). Only
    ``candidates`` (ascending: those in which a scan found ``secret``, which every BEGIN
    marker it reads is, and the carry's cover of a split one) are asked whether they open one
    (``carried_across``)."""
    candidates = list(candidates)
    first = next((index for index in candidates if opens_key_block(values[index])), None)
    split = split_openings(values) if candidates else {}
    first = min((index for index in (first, *split) if index is not None), default=None)
    if first is None:
        return frozenset()
    awaited: frozenset[bytes] = frozenset()
    for index in range(first, len(values)):
        value = values[index]
        if awaited:
            _, awaited = run_on(value, awaited)
        elif value:
            awaited = awaited_after(value)
        if not awaited and index in split:
            awaited = frozenset((split[index][1],))
    return awaited
