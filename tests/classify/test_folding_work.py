"""How much work folding does per element, counted, not timed (found by review, CPU round
five: random binary cost 1-3 s a MB, since each of its escape levels was folded whole, and
a tensor of many one-byte non-UTF-8 elements 2.4 s a MB, each read in every legacy
encoding). The forms of one text share a ``FoldMemo``: a text folded a chunk at a time
folds exactly as it does whole, and each form is folded where it differs from the others.
Identical elements are read once: ``test_hidden_values``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import unicodedata2 as unicode_data

from labelgate.classify import DetectorSet, folding, jsonpaths
from labelgate.classify.decoded_text import utf8_read
from labelgate.classify.fold_chunks import chunk_cuts
from labelgate.classify.folding import UNFOLDABLE, FoldMemo, _fold_chunks, fold_decoded, folded
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes

DETECTORS = DetectorSet.default()
SSN = "123-45-6789"
RNG = np.random.default_rng(11)
# Pieces that meet every rule of a cut: escape sequences (styling, moving, OSC unterminated
# or ended by ST), backspaces, marks that compose, surrogates written as UTF-8, sequences
# cut short, characters NFKC grows, unassigned code points, no-break and zero-width spaces.
PIECES = (
    b"\x1b",
    b"\x1b[",
    b"\x1b]",
    b"\x1b]0;title\x07",
    b"\x1b\\",
    b"\x1b[1m",
    b"\x1b[4D",
    b"\x1b7",
    b"\x07",
    b"\x08",
    b"1",
    b"-",
    b" ",
    b"e",
    b"m",
    b"[",
    b"\n",
    b"\x00",
    b"\xcc\x81",  # a combining acute
    b"\xef\xbc\x91",  # a full-width 1
    b"\xed\xa0\xb5",
    b"\xed\xbf\x92",  # a surrogate pair written as UTF-8
    b"\xe2",
    b"\x80",
    b"\xf4\x8f\xbf",
    b"\xef\xb7\xba",  # U+FDFA: 18 characters under NFKC
    b"\xe2\x80\x8b",
    b"\xea\xb0\x80",
    b"\xe1\x86\xa8",  # a Hangul syllable and a trailing jamo: they compose
    b"\xcd\xb8",  # U+0378, unassigned
)


def pieces(count: int, pick: tuple[bytes, ...] = PIECES) -> bytes:
    return b"".join(pick[at] for at in RNG.integers(0, len(pick), count))


def prose(size: int, rare: bytes) -> bytes:
    """Text that reads as text, with ``rare`` now and then."""
    words = [b"the card ", b"caf\xc3\xa9 ", b"12 ", b"\xe5\xae\xa2\xe6\x88\xb7 ", b"ok\n"]
    parts: list[bytes] = []
    while sum(map(len, parts)) < size:
        parts.append(words[int(RNG.integers(0, len(words)))])
        if RNG.random() < 0.002:
            parts.append(rare)
    return b"".join(parts)


TEXTS = [
    *(RNG.bytes(int(RNG.integers(2048, 40_000))) for _ in range(20)),
    *(pieces(int(RNG.integers(8000, 30_000))) for _ in range(40)),
    prose(30_000, b"\x1b[4D"),  # a cursor movement in text: UNFOLDABLE
    prose(30_000, b"\xcd\xb8"),  # an unassigned code point in text: UNFOLDABLE
    prose(30_000, b"\xef\xb7\xba" * 800),  # grows past MAX_GROWTH: UNFOLDABLE
    prose(30_000, b"\x1b[31m"),  # styling only: folds
    b"\xef\xbc\x91" * 20_000,  # no ASCII to cut before: one chunk
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_a_text_folded_a_chunk_at_a_time_folds_as_it_does_whole(text: bytes) -> None:
    whole = fold_decoded(utf8_read(text))
    memo = FoldMemo()
    assert _fold_chunks(text, memo) == whole
    assert (_fold_chunks(text, memo) is UNFOLDABLE) == (whole is UNFOLDABLE)  # from the memo
    assert folded(text, FoldMemo()) == folded(text)


def test_the_texts_above_meet_each_verdict_and_are_cut() -> None:
    verdicts = [fold_decoded(utf8_read(text)) is UNFOLDABLE for text in TEXTS]
    assert verdicts[-5:] == [True, True, True, False, False]
    assert all(len(chunk_cuts(text)) > 2 for text in TEXTS[:-1])  # cut inside


class Counting:
    """``unicodedata2`` with its NFKC calls counted, in characters normalized."""

    def __init__(self) -> None:
        self.characters = 0

    def normalize(self, form: str, text: str) -> str:
        self.characters += len(text)
        return unicode_data.normalize(form, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(unicode_data, name)


def escaped_binary(size: int) -> bytes:
    """Random bytes with escapes nested three levels and character references: every level
    of ``jsonpaths.unescaped_forms`` and a referenced form of each decodes something."""
    data = bytearray(RNG.bytes(size))
    escapes = [b"\\\\\\\\u0031", b"&#52;", b"\\t"] * 3
    for at, escape in zip(range(100, size - 100, size // 8), escapes, strict=False):
        data[at : at + len(escape)] = escape
    return bytes(data)


def test_the_forms_of_one_element_are_folded_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = escaped_binary(256 * 1024)
    forms = jsonpaths.unescaped_forms(data)
    assert len(forms) >= 5  # four levels, and references decoded
    counting = Counting()
    monkeypatch.setattr(folding, "unicode_data", counting)
    hidden_by_escapes([data], DETECTORS)
    decoded = len(data)  # about what one form decodes to
    # The first form whole, each other where it differs: under two folds (was one a form; the
    # references decoded in the text as written differ from the first level at every escape).
    assert counting.characters < 2 * decoded
    counting.characters = 0
    hidden_by_folding([data], DETECTORS)
    assert counting.characters <= decoded  # the text itself: one fold


def test_forms_folded_with_a_memo_show_what_they_show_folded_alone() -> None:
    data = escaped_binary(64 * 1024)
    data = data[:30_000] + " \uff11\uff12\uff13-45-6789 ".encode() + data[30_000:]
    memo = FoldMemo()
    for form in jsonpaths.unescaped_forms(data):
        assert folded(form, memo) == folded(form)
    assert "us_ssn" in {hit.detector for hit in hidden_by_escapes([data], DETECTORS)[0]}
