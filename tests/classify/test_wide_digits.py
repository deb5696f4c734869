"""UTF-16 text of digits with no NUL in it is read as UTF-16 (``other_encodings.digit_encoding``).

Review (rev-mask, finding 1): text was read as UTF-16 only when it held a NUL or a byte order
mark, but the digits of most scripts are code units with no zero byte (Mongolian U+1811 is
``\\x11\\x18``, Arabic-Indic U+0661 ``a\\x06``, Devanagari U+0967 ``g\\t``), and so are dashes
like U+2010. An SSN or a card written so went out unmasked. The tests fail on the old code.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from labelgate.classify import classify_outputs, native
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.other_encodings import (
    digit_encoding,
    may_read_digits,
    read_as_digits,
    wide_encoding,
)
from tests.classify.test_folding import CATALOG, DETECTORS
from tests.enforce.test_masking import text

if TYPE_CHECKING:
    import unicodedata as unicode_data
else:
    import unicodedata2 as unicode_data

SSN = "123-45-6789"
CARD = "4111111111111111"
HYPHEN = "\u2010"  # a dash with no zero byte in UTF-16: 0x10 0x20


def _digit_sets() -> dict[str, int]:
    """Every run of characters for the digits 1 to 9 in the Basic Multilingual Plane (by the
    Unicode data folding reads) none of whose UTF-16 code units holds a zero byte, by the
    name of its first: the code point of its 1."""
    found: dict[str, int] = {}
    for code in range(0x100, 0xFFF8):
        if unicode_data.digit(chr(code), None) != 1:
            continue
        units = range(code, code + 9)
        if (
            all(unicode_data.digit(chr(unit), None) == unit - code + 1 for unit in units)
            and all(unit & 0xFF and unit >> 8 for unit in units)
            and len(unicode_data.normalize("NFKC", chr(code))) == 1  # not "(1)" or "1."
        ):
            found[unicode_data.name(chr(code))] = code
    return found


DIGIT_SETS = _digit_sets()


def _written(value: str, one: int) -> str:
    """``value`` with its digits written from the set whose 1 is ``one``, its dashes U+2010."""
    return "".join(chr(one + int(char) - 1) if char.isdigit() else HYPHEN for char in value)


def _found(data: bytes) -> set[str]:
    """The detectors that span ``data`` whole in another reading (``hidden_by_folding``)."""
    hidden = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data]))
    return {hit.detector for hit in hidden.get(0, ()) if (hit.start, hit.end) == (0, len(data))}


def test_there_are_many_such_scripts() -> None:
    # Mongolian, Arabic-Indic, Devanagari, Bengali, Thai, Tibetan, Myanmar, Khmer, full-width...
    assert len(DIGIT_SETS) > 40
    for name in (
        "MONGOLIAN DIGIT ONE",
        "ARABIC-INDIC DIGIT ONE",
        "DEVANAGARI DIGIT ONE",
        "FULLWIDTH DIGIT ONE",
    ):
        assert name in DIGIT_SETS


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("one", DIGIT_SETS.values(), ids=DIGIT_SETS.keys())
def test_an_ssn_in_utf16_digits_without_a_nul_is_found(one: int, encoding: str) -> None:
    data = _written(SSN, one).encode(encoding)
    assert 0 not in data and not data.startswith((b"\xff\xfe", b"\xfe\xff"))
    assert DETECTORS.scan_each([data]) == {}  # nothing as written
    assert _found(data) == {"us_ssn"}, data
    assert digit_encoding(data) == encoding


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    "one",
    [0x1811, 0x0661, 0x17E1, 0x09E7, 0x0E51, 0xFF11],
    ids=["mongolian", "arabic", "khmer", "bengali", "thai", "fullwidth"],
)
def test_a_card_in_utf16_digits_without_a_nul_is_found_in_an_output(one: int, encoding: str) -> None:
    """The reviewer's end to end case (a public output): the card is found in the element's
    UTF-16 reading, so a policy's mask for it names the element."""
    data = _written(CARD, one).encode(encoding)
    classification = classify_outputs("customer-profile", [text("notes", data)], CATALOG, DETECTORS)
    assert [hit.detector for hit in classification.spans["notes"][0]] == ["credit_card"]


def test_fillers_between_the_digits_do_not_hide_them() -> None:
    """Characters folding drops between digits (a zero-width space, a combining mark, an
    unassigned code point a guessed decode drops) and separators between groups (a figure
    space, a figure dash) are part of the run."""
    digits = "".join(chr(DIGIT_SETS["MONGOLIAN DIGIT ONE"] + int(char) - 1) for char in CARD)
    groups = [digits[start : start + 4] for start in range(0, 16, 4)]
    values = [filler.join(digits) for filler in ("\u200b", "\u0301", "\u0378")]
    values += [separator.join(groups) for separator in ("\u2007", "\u2012")]
    for value in values:
        for encoding in ("utf-16-le", "utf-16-be"):
            data = value.encode(encoding)
            assert 0 not in data
            assert _found(data) == {"credit_card"}, (value, encoding)


def test_digits_past_the_bmp_are_read_too() -> None:
    """Surrogate pairs have no zero byte either: mathematical bold digits, Kawi digits."""
    for zero in (0x1D7CE, 0x11F50):
        value = "-".join("".join(chr(zero + int(char)) for char in part) for part in SSN.split("-"))
        value = value.replace("-", HYPHEN)
        for encoding in ("utf-16-le", "utf-16-be"):
            data = value.encode(encoding)
            assert 0 not in data
            assert _found(data) == {"us_ssn"}, (hex(zero), encoding)


def test_every_digit_past_the_bmp_is_in_plane_one() -> None:
    """What ``other_encodings`` reads of high surrogates (the blocks of plane 1 only)."""
    beyond = [code for code in range(0x20000, 0x110000) if unicode_data.digit(chr(code), None) is not None]
    assert beyond == []


ORDINARY = [
    b"a\tb\tc\td\te\tf\tg\th\n",  # ASCII with tabs: U+0961 and the like, letters
    b"x\ty\tz\t\x01",
    "caf\u00e9 4111 1111 1111 1111".encode(),  # a card as written: the raw scan's
    "Le comit\u00e9 s'est r\u00e9uni mardi ; apr\u00e8s une longue discussion.".encode(),
    "\u041a\u043e\u043c\u0438\u0442\u0435\u0442 \u0441\u043e\u0431\u0440\u0430\u043b\u0441\u044f".encode(),
    "\u59d4\u5458\u4f1a\u661f\u671f\u4e8c\u5f00\u4f1a\u5ba1\u67e5\u5b63\u5ea6\u9884\u7b97".encode(),
    "    return value  # \u00e9".encode(),
]


@pytest.mark.parametrize("data", ORDINARY)
def test_ordinary_text_is_not_read_as_utf16_digits(data: bytes) -> None:
    assert digit_encoding(data) is None
    assert wide_encoding(data) is None


def test_a_utf16_reading_masks_only_where_a_detector_matches() -> None:
    """Devanagari digits in UTF-16 are ASCII letters and tabs: text of them that holds no
    value (four digits, then a control character) is read, and nothing is found."""
    data = "\u0966\u0967\u0968\u0969".encode("utf-16-le") + b"\x01"
    assert data == b"f\tg\th\ti\t\x01"
    assert digit_encoding(data) == "utf-16-le"
    assert _found(data) == set()
    assert hidden_by_folding([b"a\tb\tc\t\x01", data], DETECTORS, {}) == {}


def test_text_of_ascii_letters_and_tabs_alone_is_read_as_digits() -> None:
    """A Devanagari card with no separator is printable ASCII and tabs, text that folds to
    itself: ``digit_encoding`` reads it, and so does ``hidden_by_folding`` (what the classifier
    asks of such text: ``test_self_folding_wide_digits``)."""
    data = _written(CARD, DIGIT_SETS["DEVANAGARI DIGIT ONE"]).encode("utf-16-le")
    assert data.isascii() and b"\x00" not in data
    assert digit_encoding(data) == "utf-16-le"
    hidden = hidden_by_folding([b"retail", data], DETECTORS, {})
    assert {
        index: [(hit.detector, hit.start, hit.end) for hit in hits] for index, hits in hidden.items()
    } == {1: [("credit_card", 0, len(data))]}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_many_texts_are_asked_together_as_each_alone(use_native: bool) -> None:
    """``read_as_digits`` (candidates named natively, or texts joined and candidates placed)
    agrees with ``digit_encoding`` text by text, whatever the lengths and alignments."""
    if use_native and not native.digit_runs_available():
        pytest.skip("labelgate_native is not installed")
    rng = random.Random(7)
    pieces = [
        _written(SSN, DIGIT_SETS["MONGOLIAN DIGIT ONE"]).encode("utf-16-le"),
        _written(CARD, DIGIT_SETS["THAI DIGIT ONE"]).encode("utf-16-be"),
        b"a\tb\tc\t",
        "\u00e9t\u00e9 12.50 #1234".encode(),
        b"x",
        b"",
        "\u05a8".encode() * 6,
    ]
    texts = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(400)]
    texts += [b"\x01" + each for each in texts[:50]]  # the other alignment
    expected = {index for index, each in enumerate(texts) if digit_encoding(each) is not None}
    assert expected and len(expected) < len(texts)
    with native.digit_runs_forced(use_native):
        assert read_as_digits(texts) == expected
    assert all(may_read_digits(texts[index]) for index in expected)
