"""The orders a reader sees text in (``display_order``, the Unicode Bidirectional Algorithm),
as Chromium lays the same text out, and the gates that decide which text is read so."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from labelgate.classify.display_order import (
    display_orders,
    display_orders_of,
    overrides,
    reorders,
)
from labelgate.classify.folding import UNICODE_VERSION

if TYPE_CHECKING:
    import unicodedata as unicode_data  # typeshed's stubs: the same functions
else:
    import unicodedata2 as unicode_data  # folding's data

INVISIBLE = dict.fromkeys([0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
# What Chromium 1xx shows (characters sorted by their place on screen, white-space: pre),
# paragraph left to right (HTML's default) and right to left.
SHOWN = {
    "ssn \u202e9876-54-321\u202c x": ("ssn 123-45-6789 x", "x 123-45-6789 ssn"),
    "a\u202eb\u202dcd\u202ce\u202cf": ("aecdbf", "aecdbf"),  # an override inside an override
    "\u202b1114 1111 1111 1111\u202c": ("1111 1111 1111 1114", "1111 1111 1111 1114"),  # embedding
    "\u05d0 1111 1111 1111 4111": ("4111 1111 1111 1111 \u05d0", "4111 1111 1111 1111 \u05d0"),
    "\u200f1111 1111 1111 4111": ("4111 1111 1111 1111", "4111 1111 1111 1111"),  # RLM alone
    "\u2067abc 123\u2069 x": ("abc 123 x", "x abc 123"),  # an isolate
    "x (\u05d0 1) y": ("x (1 \u05d0) y", "y )1 \u05d0( x"),  # brackets (N0), not mirrored
    "\u2068\u05d0 12 34\u2069 z": ("34 12 \u05d0 z", "z 34 12 \u05d0"),  # first strong isolate
    "\u0627 \u0661\u0662\u0663 \u0664\u0665": ("\u0664\u0665 \u0661\u0662\u0663 \u0627",) * 2,
}


def readings(text: str) -> set[str]:
    return {"".join(text[i] for i in order.tolist()).translate(INVISIBLE) for order in display_orders(text)}


@pytest.mark.parametrize("text", list(SHOWN))
def test_the_orders_read_are_those_a_browser_shows(text: str) -> None:
    read = readings(text) | {text.translate(INVISIBLE)}  # the order stored is never repeated
    for shown in SHOWN[text]:
        assert shown in read, (shown, read)


def test_a_newline_ends_an_override_or_is_a_space_a_browser_collapses() -> None:
    text = "ssn \u202e987\n6-54-321\u202c x"
    # white-space: pre (a paragraph each line) and normal (one paragraph, the newline a space).
    assert {"ssn 789\n6-54-321 x", "ssn 123-45-6\n789 x"} <= readings(text)


def test_each_paragraph_keeps_its_separator_at_its_end() -> None:
    text = "\u05d0 12\n34 \u05d1"
    # Right to left, the first paragraph's newline would come first and glue its last
    # character to the second paragraph's first.
    assert {"12 \u05d0\n34 \u05d1", "12 \u05d0\n\u05d1 34"} <= readings(text)


def test_text_nothing_reorders_reads_as_stored_only() -> None:
    assert display_orders("ssn 123-45-6789, café, 東京 ①②") == []
    assert display_orders("\u202c stray pop") == []  # a PDF alone reorders nothing


# Letters, digits, brackets and separators of both directions, with every bidi control.
ALPHABET = [
    *"ab12 -+,.()[]\n\t",
    *"\u05d0\u05d1\u0627\u062f\u0661\u06f1\u05b4",
    *"\u202a\u202b\u202d\u202e\u202c\u2066\u2067\u2068\u2069\u200f",
]


def random_texts(seed: int = 5, count: int = 300) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(count)]


def test_texts_read_together_read_as_each_read_alone() -> None:
    texts = random_texts()
    together = display_orders_of(texts)
    for text, orders in zip(texts, together, strict=True):
        alone = display_orders(text)
        assert [order.tolist() for order in orders] == [order.tolist() for order in alone], repr(text)
        for order in orders:
            assert sorted(order.tolist()) == list(range(len(text)))


def test_the_gates_know_every_character_that_reorders() -> None:
    """Every character of bidi class R, AL or AN in the Unicode data, and every explicit
    control, opens the gates; an ordinary text opens none."""
    assert unicode_data.unidata_version == UNICODE_VERSION
    reordering = [
        code
        for code in range(0x110000)
        if unicode_data.bidirectional(chr(code)) in {"R", "AL", "AN", "RLE", "LRE", "RLO", "LRO", "PDF"}
        or unicode_data.bidirectional(chr(code)) in {"RLI", "LRI", "FSI", "PDI"}
    ]
    assert len(reordering) > 3000
    missed = [hex(code) for code in reordering if not reorders(chr(code).encode()) or not reorders(chr(code))]
    assert not missed
    explicit = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    assert all(overrides(chr(code)) and overrides(chr(code).encode()) for code in explicit)
    plain = "ssn 123-45-6789, café “quoted” – € 東京 ① \U0001f600".encode()
    assert not reorders(plain) and not overrides(plain)
    assert not overrides("\u05d0 \u200f".encode())  # right to left, but no explicit control


def test_brackets_pair_as_unicode_pairs_them() -> None:
    """BidiBrackets.txt pairs U+298D with U+2990 and U+298F with U+298E (not their
    neighbours), and BD16 pairs canonically equivalent brackets (U+2329 with U+3009): read
    so, ``ssn ⦍123-45-67א89⦐ا`` shows the SSN (ICU, so Chromium, and fribidi agree; review)."""
    for opener, closer in (
        ("\u298d", "\u2990"),
        ("\u298f", "\u298e"),
        ("\u2329", "\u3009"),
        ("\u3008", "\u232a"),
    ):
        text = f"ssn {opener}123-45-67\u05d089{closer}\u0627"
        shown = {"".join(text[at] for at in order.tolist()) for order in display_orders(text)}
        assert f"ssn {opener}123-45-6789\u05d0{closer}\u0627" in shown, (opener, shown)
