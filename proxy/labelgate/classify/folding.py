"""Text as a reader sees it, for the detectors: digits of any script, dashes and spaces of
any kind, invisible characters dropped. Pure.

The detectors read ASCII digits and separators. The same SSN written with full-width digits
(``１２３-４５-６７８９``), Arabic-Indic digits, non-breaking hyphens, or a zero-width space
between digits reads the same to a person, or to a model downstream, but not to a detector.
``folded`` maps such text to what the detectors read: NFKC (full-width forms), every
decimal digit to its ASCII digit, every dash to ``-``, every space separator to a space,
format characters (zero-width spaces and joiners, soft hyphens) dropped.

``hidden_by_folding`` scans that form of each text that is not ASCII. A detector it finds
that the scan of the text itself did not spans the whole text, since offsets into the
folded form do not index the original: as for text hidden by JSON escapes.

Best effort: an upstream can always encode data in a way no detector reads (base64), and the
catalog's labels are what holds then. This closes the cheap evasions.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from labelgate.classify.detectors import Detection, DetectorSet

_MINUS_SIGN = 0x2212  # a math symbol, not a dash: written for "-" all the same


# Characters remembered by the table; past this it starts over (an upstream could send every
# code point).
_TABLE_SIZE = 4096


class _Fold(dict[int, str | None]):
    """``str.translate``'s table, worked out per character on first use (the table of all of
    Unicode would be large; a text meets few characters)."""

    def __missing__(self, code: int) -> str | None:
        if len(self) >= _TABLE_SIZE:
            self.clear()
        char = chr(code)
        category = unicodedata.category(char)
        folded: str | None
        if category == "Cf":
            folded = None  # invisible: dropped
        elif (digit := unicodedata.decimal(char, None)) is not None:
            folded = str(digit)
        elif category == "Pd" or code == _MINUS_SIGN:
            folded = "-"
        elif category == "Zs":
            folded = " "
        else:
            folded = char
        self[code] = folded
        return folded


_TABLE = _Fold()


def folded(text: bytes) -> bytes | None:
    """``text`` as the detectors should read it (see the module docstring), or None when that
    is ``text`` itself. ASCII text never changes."""
    if text.isascii():
        return None
    normal = unicodedata.normalize("NFKC", text.decode("utf-8", "replace")).translate(_TABLE)
    result = normal.encode("utf-8", "surrogatepass")
    return None if result == text else result


def hidden_by_folding(
    texts: Sequence[bytes],
    detectors: DetectorSet,
    found: Mapping[int, Sequence[Detection]] | None = None,
) -> dict[int, list[Detection]]:
    """For each text whose folded form shows more matches of a detector than ``found`` (the
    detections of the texts themselves, by index) has for it: one detection per such
    detector spanning the whole text. Counted, not just named: a plain SSN beside one in
    Arabic-Indic digits must not hide the second."""
    forms: list[bytes] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        form = folded(text)
        if form is not None:
            forms.append(form)
            owners.append(index)
    if not forms:
        return {}
    result: dict[int, list[Detection]] = {}
    for position, hits in detectors.scan_each(forms).items():
        index = owners[position]
        seen = Counter(hit.detector for hit in (found or {}).get(index, ()))
        more = Counter(hit.detector for hit in hits) - seen
        if more:
            labels = {hit.detector: hit.label for hit in hits}
            result[index] = [Detection(name, labels[name], 0, len(texts[index])) for name in sorted(more)]
    return result
