"""What a ``partial`` mask keeps of text that also reads as UTF-16 digits, and of numbers drawn
in one glyph. Review (rev-mask, findings 2 and 3); the tests fail on the old code.

2. ``partial`` counted a control character as none in text beyond ASCII
   (``folding.read_length``), and UTF-16 text of Mongolian digits is control bytes: after
   ``abcd\\xc3\\xa9`` (no NUL, no byte order mark, so not starred whole as UTF-16) all nine
   digits of an SSN were kept.
3. ``⓫`` to ``⓴``, ``⓾``, ``❿``, ``➉``, ``➓``, ``㉈`` to ``㉏`` draw two digits and have no
   decomposition: counted as one character each, ``keep_last`` 4 showed eight digits.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate.classify.folding import UNFOLDABLE, fold_decoded, read_length
from labelgate.enforce.strategies import Mask, Masker, replace_spans

if TYPE_CHECKING:
    import unicodedata as unicode_data
else:
    import unicodedata2 as unicode_data

KEY = b"0123456789abcdef0123456789abcdef"
MONGOLIAN = "".join(chr(0x1810 + int(char)) for char in "123456789")
# The reviewer's value: an e-acute, then an SSN's nine digits in Mongolian, in UTF-16-LE.
REVIEWED = b"abcd\xc3\xa9" + MONGOLIAN.encode("utf-16-le")
DRAWN = "\u24eb\u24ec\u24ed\u24ee\u24ef\u24f0\u24f1\u24f2"  # ⓫ to ⓲


def partial(keep_last: int = 4) -> Mask:
    return Mask("outputs.x", "partial", {"keep_last": keep_last})


def _char_digits(char: str) -> int:
    """The digits a reader sees in ``char``: those of its folded form, or of the number it
    draws in one glyph (``⓫``: two)."""
    form = fold_decoded(char)
    shown = 0 if form is UNFOLDABLE else len(re.findall(rb"[0-9]", form))
    value = unicode_data.numeric(char, None)
    if not shown and value is not None and value == int(value) and "CIRCLED" in unicode_data.name(char):
        shown = len(str(int(value)))
    return shown


def _digits_shown(data: bytes) -> int:
    """The most digits any reading of ``data`` shows: as UTF-8, UTF-16-LE or UTF-16-BE (as a
    client that decodes the element so reads it, from its first byte)."""
    readings = [data.decode("utf-8", "replace")]
    readings += [
        data[: len(data) // 2 * 2].decode(encoding, "replace") for encoding in ("utf-16-le", "utf-16-be")
    ]
    return max(sum(map(_char_digits, reading)) for reading in readings)


def test_the_reviewed_value_shows_no_more_than_keep_last_digits() -> None:
    assert _digits_shown(REVIEWED) == 9  # there to find
    masker = Masker(KEY)
    for keep_last in (0, 2, 4):
        mask = partial(keep_last)
        masked = masker.raw(REVIEWED, mask)
        assert _digits_shown(masked) <= keep_last, masked
        assert masker.raw_all([REVIEWED, REVIEWED], mask) == [masked, masked]
        assert masker.text(REVIEWED.decode(), mask).encode() == masked
        assert masker.json_value(REVIEWED.decode(), mask).encode() == masked
        for start in (0, 1, 2, 6):  # a span of the element, at either alignment
            spanned = replace_spans(REVIEWED, [(start, len(REVIEWED), mask)], masker)
            assert spanned is not None and _digits_shown(spanned) <= keep_last, (start, spanned)
        document = json.dumps({"n": REVIEWED.decode()})
        assert _digits_shown(json.loads(document)["n"].encode()) == 9


def test_a_control_character_counts_as_one() -> None:
    assert read_length("\x11") == read_length("\x85") == 1
    assert read_length("\u200b") == 0  # a zero-width space is still none
    assert Masker(KEY).text("\u00e9\x11\x18\x12\x18", partial(2)) == "***\x12\x18"


@pytest.mark.parametrize("keep_last", [2, 4, 6])
def test_numbers_drawn_in_one_glyph_count_as_their_digits(keep_last: int) -> None:
    masker = Masker(KEY)
    masked = masker.text(DRAWN, partial(keep_last))
    assert sum(map(_char_digits, masked)) <= keep_last
    assert masked == "*" * (8 - keep_last // 2) + DRAWN[8 - keep_last // 2 :]
    assert masker.raw(DRAWN.encode(), partial(keep_last)) == masked.encode()


def test_the_drawn_numbers_are_known_from_the_unicode_data() -> None:
    """Every character that draws two or more digits with no decomposition into them counts
    as its digits; a circled ideograph (``㊉``, 十) or a Roman numeral reads as what it folds to."""
    drawn = [*range(0x24EB, 0x24F5), 0x24FE, 0x277F, 0x2789, 0x2793, *range(0x3248, 0x3250)]
    assert all(read_length(chr(code)) == 2 for code in drawn)
    assert read_length("\U0001f51f") == 2  # keycap ten
    assert read_length("\u2469") == 2  # ⑩: decomposes to "10", as before
    assert read_length("\u3289") == 1 and read_length("\u216b") == 3  # ㊉ 十, Ⅻ XII
    counted = {
        code
        for code in range(0x80, 0x20000)
        if not unicode_data.decomposition(chr(code)) and read_length(chr(code)) >= 2
    }
    assert counted == {*drawn, 0x1F51F}


def test_a_character_read_as_none_counts_as_the_utf16_digit_its_bytes_may_be() -> None:
    """U+05A8, a Hebrew accent folding drops, is ``\\xd6\\xa8``: Saurashtra six in UTF-16-LE.
    Counted as none, all eight were kept after ``cdef``: eight digits in UTF-16."""
    value = "abcdef" + "\u05a8" * 8
    data = value.encode()
    assert _digits_shown(data) == 8
    masker = Masker(KEY)
    masked = masker.raw(data, partial())
    assert masked == b"**********" + "\u05a8".encode() * 4 and _digits_shown(masked) <= 4
    assert masker.text(value, partial()).encode() == masked
    # One whose bytes cannot be such a digit still counts as none, as before.
    assert masker.text("4111111111111111\u200b", partial()) == "*" * 12 + "1111\u200b"


# Characters whose bytes read as UTF-16 digits, or that count as none, two or as half a
# character: Mongolian digits and a dash (control bytes), Cyrillic and Arabic letters
# (\xd0\xa8 is Saurashtra zero), Hebrew accents and combining marks (counted as none),
# drawn and circled numbers, Devanagari and Bengali digits, controls, ASCII.
ALPHABET = (
    MONGOLIAN + "\u2010\u0428\u0429\u0628\u0629\u0668\u05a8\u05a9\u0591\u0328\u0301\u200b"
    "\u24eb\u246a\u2460\u0966\u0967\u09e7\u00e9\t\x01\x11\x18\x19 -0123456789abcXYZ"
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, max_size=40), st.integers(min_value=0, max_value=6))
def test_no_reading_of_a_partial_mask_shows_more_than_keep_last_digits(value: str, keep_last: int) -> None:
    masker = Masker(KEY)
    data = value.encode()
    masked = masker.raw(data, partial(keep_last))
    assert _digits_shown(masked) <= keep_last, (value, masked)
    assert masker.text(value, partial(keep_last)).encode() == masked
