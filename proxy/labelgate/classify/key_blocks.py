"""PEM private keys that cross a message's texts: pure.

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
"""

from __future__ import annotations

from typing import Any

from labelgate.classify import characters, credentials
from labelgate.classify.detectors import Detection
from labelgate.classify.folding import folded, may_hide, wide_folded
from labelgate.classify.integer_text import CharacterRead, unread_marker
from labelgate.classify.jsonpaths import may_escape, unescaped_forms

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
    forms: list[bytes | None] = [text]
    if may_escape(text):
        forms += unescaped_forms(text)
    forms += [folded(form) for form in list(forms if fold else forms[1:]) if form and may_hide(form)]
    if fold:
        forms.append(wide_folded(text))
    return any(form is not None and credentials.open_pem(form) is not None for form in forms)
