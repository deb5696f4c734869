"""Bytes as a client reads them that decodes them otherwise than as UTF-8: as UTF-16 or
UTF-32, or as a legacy encoding, each reading folded (``folding``). A value such a client sees
may be none the detectors see in the bytes as written, nor in their UTF-8 reading.

UTF-16 and UTF-32 text: dropping its NULs shows its ASCII characters only. ``wide_folded``
decodes text that has a UTF-16 or UTF-32 byte order mark, or the NULs of one (a NUL beside
most bytes, three in four for UTF-32, as Latin-script text has), as that encoding, and folds
that: full-width digits, zero-width spaces and no-break spaces in UTF-16 read as in UTF-8.
Whether a decode guessed from NULs alone is text, and so fails closed where a character may
hide a value, is ``decoded_text``'s (``reads_as_guessed_text``).

Bytes that are not UTF-8: a client decodes them otherwise (surrogates written as UTF-8 are
read as part of the UTF-8 reading, ``decoded_text``). ``legacy_readings`` decodes such bytes
as each common legacy encoding (``LEGACY_ENCODINGS``: GB18030, CP932, EUC-JP, CP949, Big5,
Windows-1252) they read as text in (few replacement and control characters: binary data does
not, its control bytes alone rule it out before any decode), and folds that: ``\\xa3\\xb4`` is
a full-width 4 in GBK, ``\\x82\\x53`` in Shift_JIS. A guess, as a decode from NULs alone is: a
value only such a reading shows spans the text whole, unless a raw detection of its detector
is placed over it (the reading folded a piece at a time, as for the UTF-8 reading,
``hidden_values``). Ordinary UTF-8 text pays a search of its folded form for a replacement
character and one of it for the byte 0xED (a UTF-8 decode when it holds either: Hangul does).

UTF-16 text without a NUL: the digits of most scripts are code units with no zero byte
(Mongolian U+1811 is ``\\x11\\x18``, Devanagari U+0967 ``g\\t``, full-width U+FF11
``\\x11\\xff``), so an SSN or a card in them, with dashes or spaces of the same kind, holds
neither a NUL nor a byte order mark. ``digit_encoding`` reads such text as UTF-16 (either
byte order) when, so read, it holds a run of at least ``RUN_DIGITS`` digits with only
characters folding drops or reads as a separator between them (``_UNIT_KINDS``, derived
from the Unicode data at import, about 30 ms); ``wide_encoding`` asks it of text the NULs
or marks do not settle. ASCII text can be such text (Devanagari's digits are ``f\\t``..``o\\t``
in UTF-16-LE, superscripts a letter beside a space, circled digits one beside ``$``), so
every text is asked, ASCII text that folds to itself too: many texts at once by one native
pass (``read_as_digits``, ``raw_digit_rows``: the extension applies this rule to the same
kinds, ``native.wide_digit_runs``, well under a nanosecond a byte, and names the few texts
that hold such a run); numpy reads those texts' code units again here, the rule's reading.
Without the extension, C-level passes rule most text out (``may_read_digits``: no
``RUN_DIGITS`` bytes in a row, every other byte, that may be such units' high bytes, about
2 us a KB; ``digit_run_candidates`` over texts joined). A value found in that reading spans
the text whole, as one in any wide decode does: ASCII text with tabs (``a\\tb\\tc``) decodes
to letters, and a run of digits that is no value is masked nowhere. Each byte order holding
a run is read (``digit_encodings``), text with NULs or a mark too (``wide_encodings``): the
NULs of ``name: `` in UTF-16-BE say nothing of Devanagari digits in UTF-16-LE after it.

A JSON string is read from its own first byte (``string_readings``): a client parses the
text, then decodes a string as UTF-16. ``json.dumps`` writes the tabs of Devanagari digits
as ``\\t``, and a string may start at an odd offset, so neither the text as written nor its
decode from its first byte shows the run. Each string, keys too, and JSON in a string up to
``MAX_UNESCAPE_LEVELS`` deep, is decoded as a reader decodes it (``json_strings``) and read
in each byte order that holds a run. The native pass names the texts that may hold such a
string (``string_candidates``, a superset): a text holding a quote is read from its second
byte too, and a text holding a quote and a backslash, which that pass names as well (no
more work for text without a quote), is read again here with its escapes decoded.

Each decode is also read in each order a reader may see it in, as UTF-8 text is
(``shown_text``): ``ssn \u202e9876-54-321\u202c`` decoded from UTF-16LE or GB18030 shows
as ``ssn 123-45-6789``. Its display readings, folded, follow its folded form, a newline
between (``_with_shown``, through ``shown_orders``, which reads UTF-8 text too); a value
found there spans the text whole, as one in the decode does. A decode holding no
right-to-left character or bidi control pays one C-level search of it for one (a legacy
one none, but in GB18030, the only one of them that holds such a character).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Final, NamedTuple, cast

import numpy as np

from labelgate.classify import native
from labelgate.classify.decoded_text import COUNT_BY_NUMPY, REPLACEMENT, SURROGATES, utf8_read
from labelgate.classify.display_order import reorders
from labelgate.classify.folding import CONTROLS, IGNORABLE_RANGES, UNFOLDABLE, fold_decoded, noncharacter
from labelgate.classify.jsonpaths import MAX_UNESCAPE_LEVELS, SIMPLE_ESCAPES
from labelgate.classify.shown_orders import decoded_shown_readings

if TYPE_CHECKING:
    import unicodedata as unicode_data  # typeshed's stubs: the same functions
else:
    import unicodedata2 as unicode_data  # folding's Unicode data (``folding.UNICODE_VERSION``)


def wide_folded(text: bytes, width: int = 0) -> bytes | None:
    """``text`` in the readings a client decoding it otherwise than as UTF-8 sees
    (``decoded_readings``: as the UTF-16 or UTF-32 it reads as, as a legacy encoding), each
    folded, joined by newlines; None when it reads as none, ``UNFOLDABLE`` when one cannot be
    folded. With ``width``, ``text`` is rows of that many bytes (a fixed-width character
    array), each decoded on its own, a newline between them. Offsets into it index none of
    ``text``'s: a value found in it spans ``text`` whole."""
    readings = decoded_readings(text, width)
    if not readings:
        return None
    if any(reading is UNFOLDABLE for reading in readings):
        return UNFOLDABLE
    return b"\n".join(readings)


def decoded_readings(text: bytes, width: int = 0) -> list[bytes]:
    """The folded forms of ``text`` decoded as each UTF-16 or UTF-32 it reads as
    (``wide_encodings``, ``wide_reading``) and, when it is not UTF-8, with surrogates written
    as UTF-8 joined (``utf8_read``) and as each legacy encoding it reads as text in
    (``legacy_readings``), ``UNFOLDABLE`` for one that cannot be folded; ``width`` as for
    ``wide_folded``. One search for a NUL, and for UTF-8 text one decode, for most text."""
    readings: list[bytes] = []
    for encoding in wide_encodings(text):
        wide = wide_reading(text, width, encoding)
        # UTF-32 text of digits reads as UTF-16 digits too (a NUL unit between each): the
        # same once folded, read once.
        if wide is not None and wide not in readings:
            readings.append(wide)
    if not text.isascii() and not is_utf8(text):
        if 0xED in text and SURROGATES.search(text) is not None:
            # The UTF-8 reading with surrogates joined (``utf8_read``): a caller that reads
            # bytes that are not UTF-8 only this way (``numbers``) reads it too.
            decoded = utf8_read(_rowed(text, width, b"\n") if width else text)
            readings.append(_with_shown(decoded, fold_decoded(decoded)))
        readings += [form for _, form in legacy_readings(text, width)]
    return readings


def wide_reading(text: bytes, width: int = 0, encoding: str | None = None) -> bytes | None:
    """``text`` decoded as ``encoding``, by default the UTF-16 or UTF-32 it reads as
    (``wide_encoding``), and folded; None when it reads as neither, ``UNFOLDABLE`` when it
    cannot be folded. ``width`` as for ``wide_folded``: None too when a row is not whole code
    units."""
    encoding = encoding or wide_encoding(text)
    if encoding is None:
        return None
    breaks = 0
    if width:
        newline = "\n".encode(encoding)
        if width % len(newline):
            return None
        breaks = len(text) // width - 1
        text = _rowed(text, width, newline)
    guessed = not text.startswith(_MARK_OF[encoding])  # the other byte order's mark is a guess too
    decoded = text.decode(encoding, "replace")
    return _with_shown(decoded, fold_decoded(decoded, guessed, breaks), guessed, breaks)


def _with_shown(decoded: str, form: bytes, guessed: bool = False, breaks: int = 0) -> bytes:
    """``form`` (``decoded`` folded, ``guessed`` and ``breaks`` as for ``fold_decoded``) and
    after it, a newline between each, the display readings a reader may see ``decoded`` in
    that differ from it (``shown_orders.decoded_shown_readings``); ``UNFOLDABLE`` when one
    of them cannot be folded. ``form`` alone after one C-level search for a decode nothing
    reorders."""
    if form is UNFOLDABLE or not reorders(decoded):
        return form
    shown = decoded_shown_readings(decoded, form, guessed, breaks)
    if not shown:
        return form
    if any(reading is UNFOLDABLE for reading in shown):
        return UNFOLDABLE
    return b"\n".join([form, *shown])


def _rowed(text: bytes, width: int, newline: bytes) -> bytes:
    """``text``'s rows of ``width`` bytes with ``newline`` between them."""
    if len(text) // width <= _FEW_ROWS:  # numpy's calls cost more than a join of a few slices
        return newline.join([text[start : start + width] for start in range(0, len(text), width)])
    rows = np.frombuffer(text, dtype=np.uint8)[: len(text) // width * width].reshape(-1, width)
    between = np.tile(np.frombuffer(newline, dtype=np.uint8), (len(rows), 1))
    joined = np.hstack([rows, between]).tobytes()[: -len(newline)]
    rest = text[len(text) // width * width :]
    return joined + newline + rest if rest else joined


_FEW_ROWS: Final = 16


def is_utf8(text: bytes) -> bool:
    """Whether ``text`` is UTF-8: a decode, which bytes that are not stop at their first
    byte that does not decode (binary data: within a few bytes)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Bytes that are not UTF-8 are text in another encoding to a client that decodes them so:
# ``\xa3\xb4\xa3\xb1`` is ``４１`` in GBK, ``\x82\x53\x82\x50`` in Shift_JIS, ``4111\xa01111``
# a card with no-break spaces in Windows-1252. The legacy encodings still in common use, each
# as the decoder a browser (WHATWG Encoding) or Windows uses for its label, a superset of the
# older standard: GB18030 (GB2312 and GBK, and through its four-byte sequences every Unicode
# character: digits of any script, zero-width spaces), CP932 (Shift_JIS with NEC's circled
# digits), EUC-JIS-2004 (EUC-JP with JIS X 0213's circled digits), CP949 (EUC-KR and UHC),
# Big5-HKSCS and CP950 (Big5: their circled digits differ), Windows-1252 (what a browser
# decodes "latin1" and "ascii" as: dashes and a no-break space in 0x80-0xFF). Full-width
# digits and spaces are the same bytes in the EUC encodings and GB2312; what differs between
# them is the rest (circled and parenthesized digits, dashes), so each is read.
LEGACY_ENCODINGS: Final = ("gb18030", "cp932", "euc_jis_2004", "cp949", "big5hkscs", "cp950", "cp1252")
# A legacy reading is read when at most one character in this many of it, plus
# ``_LEGACY_SLACK``, is a replacement or a control character folding drops (NULs aside:
# padding). Text written in an
# encoding decodes with none; bytes of an image or of compressed data have one in eight or more
# (their control bytes alone are one in nine), and such bytes are not read: a reading costs
# a decode and a fold. Control bytes are the same characters in every one of these encodings
# (no multi-byte sequence holds one), so one count of them stops binary data before any decode.
_LEGACY_STRAY: Final = 32
# The legacy encodings that hold a right-to-left character or a bidi control: GB18030 alone
# (its four-byte sequences hold every code point; the others hold no Hebrew, Arabic or bidi
# control, checked by the tests), whose decodes are read in display order (``_with_shown``).
_REORDERING_ENCODINGS: Final = frozenset({"gb18030"})
_LEGACY_SLACK: Final = 4


def legacy_readings(text: bytes, width: int = 0) -> list[tuple[str, bytes]]:
    """(encoding, folded form) of each reading of ``text`` in ``LEGACY_ENCODINGS`` that reads
    as text (``_LEGACY_STRAY``), that no other before it reads the same; a form may be
    ``UNFOLDABLE``. Meant for bytes that are not UTF-8. ``width`` as for ``wide_folded``
    (no multi-byte sequence of these encodings holds a newline byte: a row's last sequence
    cut short is read as a replacement character, as decoding the row alone reads it)."""
    breaks = 0
    if width and len(text) > width:
        breaks = -(-len(text) // width) - 1
        text = _rowed(text, width, b"\n")
    nuls = _nuls(text)  # padding (a fixed-width array's, a C string's), as in a wide guess
    controls = len(text) - len(text.translate(None, CONTROLS)) - nuls
    if controls > (len(text) - nuls) // _LEGACY_STRAY + _LEGACY_SLACK:
        return []
    readings: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for encoding in LEGACY_ENCODINGS:
        decoded = text.decode(encoding, "replace")
        strays = controls + decoded.count(REPLACEMENT)
        if decoded in seen or strays > (len(decoded) - nuls) // _LEGACY_STRAY + _LEGACY_SLACK:
            continue
        seen.add(decoded)
        # A guess, as a wide decode without a byte order mark is: an unassigned code point
        # fails it closed only when it reads as words (``fold_decoded``); a cursor movement is the
        # UTF-8 reading's to fail closed (ASCII: the same sequence there).
        form = fold_decoded(decoded, True, breaks, moves=False)
        if encoding in _REORDERING_ENCODINGS:
            form = _with_shown(decoded, form, True, breaks)
        readings.append((encoding, form))
    return readings


def legacy_folded(encoding: str, text: bytes) -> bytes:
    """``text`` decoded as ``encoding`` and folded, as ``legacy_readings`` folds it (its
    display readings after it, ``_with_shown``): how a raw detection's offsets are placed in
    that reading (``uncovered``: a text whose readings are there places none, and a value of
    a detector its raw scan found too spans it whole)."""
    decoded = text.decode(encoding, "replace")
    form = fold_decoded(decoded, True, moves=False)
    return _with_shown(decoded, form, True) if encoding in _REORDERING_ENCODINGS else form


# Byte order marks, UTF-32's first (UTF-32-LE's begins with UTF-16-LE's).
_BYTE_ORDER_MARKS: Final = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_MARK_OF: Final = {encoding: mark for mark, encoding in _BYTE_ORDER_MARKS}
_UTF16_MARKS: Final = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
MARK_STARTS: Final = tuple(_UTF16_MARKS)


def wide_encoding(text: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec (with its byte order) ``text`` reads as: the one its byte
    order mark names, else the one whose NULs it has (``_nul_encoding``), else UTF-16 in
    the byte order in which it holds a run of digits (``digit_encoding``: digits of most
    scripts have no NUL). None, after one search for a NUL and the C-level passes of
    ``may_read_digits``, for most text without a byte order mark or NULs."""
    return marked_encoding(text) or digit_encoding(text)


def wide_encodings(text: bytes) -> list[str]:
    """Every UTF-16 or UTF-32 codec ``text`` reads as: ``wide_encoding``'s, then each UTF-16
    byte order in which it holds a run of digits that is not that one (``digit_encodings``).
    Marks and NULs say how most of a text reads, not all of it: ``name: `` in UTF-16-BE
    (NULs of BE) then an SSN in Devanagari digits in UTF-16-LE is the SSN to a client that
    decodes the text as UTF-16-LE. Costs ``wide_encoding``'s checks and, for text that may
    hold such a run (``may_read_digits``), a numpy look at it in each byte order."""
    marked = marked_encoding(text)
    digits = digit_encodings(text)
    if marked is None:
        return digits
    return [marked, *(encoding for encoding in digits if encoding != marked)]


def marked_encoding(text: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec ``text`` reads as by its byte order mark, else by its NULs
    (``_nul_encoding``); None for text with neither (one search for a NUL, a look at the
    first two bytes: most text)."""
    if 0 not in text:
        return _UTF16_MARKS.get(text[:2])
    for mark, encoding in _BYTE_ORDER_MARKS:
        if text.startswith(mark):
            return encoding
    return _nul_encoding(text)


def _nul_encoding(text: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec whose NULs ``text`` (holding one, without a byte order
    mark) has. Of its code units that are not all NUL (padding is), UTF-32's are code points
    (at most U+10FFFF: a NUL as the high byte, at most 0x10 next to it) in seven of eight
    units, so a few stray units do not hide it; UTF-16's have a NUL as their high byte in one
    in eight or more (an ASCII character), four times as many as the other way round. None
    after one count for text with fewer NULs than either pattern needs (one in sixteen
    bytes: an image's bytes); else counts over numpy views (``_nuls``)."""
    if _nuls(text) * 16 < len(text):
        return None
    count = len(text) // 4
    for encoding, high, dtype in (("utf-32-le", 3, "<u4"), ("utf-32-be", 0, ">u4")):
        # Seven in eight units with a NUL high byte, padding or not: a count before numpy.
        if _nuls(text, high, count * 4, 4) * 8 >= count * 7:
            code_points = np.frombuffer(text, dtype=dtype, count=count)
            zero = int(np.count_nonzero(code_points == 0))  # padding
            units = count - zero
            if units >= 2 and (int(np.count_nonzero(code_points <= 0x10FFFF)) - zero) * 8 >= units * 7:
                return encoding
    size = len(text) // 2 * 2
    odd, even = _nuls(text, 1, size, 2), _nuls(text, 0, size, 2)
    # All-NUL units count in both; what UTF-16 needs of the rest (below) needs this of all.
    if abs(odd - even) * 32 < 3 * (size // 2 - min(odd, even)):
        return None
    zero = int(np.count_nonzero(np.frombuffer(text, dtype="<u2", count=size // 2) == 0))
    units = size // 2 - zero
    low_first = odd - zero  # a character's low byte, then a NUL
    high_first = even - zero
    if low_first >= 2 and low_first * 8 >= units and low_first >= 4 * high_first:
        return "utf-16-le"
    if high_first >= 2 and high_first * 8 >= units and high_first >= 4 * low_first:
        return "utf-16-be"
    return None


def reads_wide(text: bytes) -> bool:
    """Whether ``text`` reads as UTF-16 or UTF-32 text (``wide_encoding``) by a byte order mark
    or NULs, as ``hidden_by_folding`` reads it: what a ``partial`` mask asks of a value
    (``enforce.strategies``), each character of such text being up to four bytes read
    apart. One search for a NUL and a look at the first two bytes for text without either
    (most text). Text whose UTF-16 reading is digits without a NUL is not asked here:
    ``partial`` counts each kept character as at least the UTF-16 digits it may be the high
    byte of (``may_be_digit_high``), which bounds what any reading of them shows."""
    return (0 in text or text.startswith(MARK_STARTS)) and wide_encoding(text) is not None


# --- UTF-16 digits without a NUL (module docstring) -----------------------------------------

# Digits in one run that make text read as UTF-16: a value made of digits has at least this
# many with only separators between them (an IPv4 address; an SSN's or a card's last group).
RUN_DIGITS: Final = 4
# What a code unit is to the run: a digit (a character whose folded form holds one, or a
# high surrogate of a block holding one), a filler (folding drops it or reads it as a
# separator a value of digits is written with, so a run goes on through it: marks, format
# and control characters, spaces, dashes, unassigned code points, which a guessed decode
# drops; low surrogates), or anything else, which ends a run.
_OTHER, _FILLER, _DIGIT = 0, 1, 2
_FILLING_CATEGORIES: Final = frozenset({"Mn", "Me", "Cf", "Cc", "Zs", "Pd"})
_SEPARATING: Final = frozenset(" \t-.,'_+():\u2212")  # U+2212: folded to "-"
_HANGUL_SYLLABLES: Final = range(0xAC00, 0xD7A4)  # letters, decomposed into letters
# Categories of characters that may be a digit or a filler without a decomposition (the
# separators of ``_SEPARATING`` are punctuation and symbols: Po, Ps, Pe, Pc, Sm).
_MAY_FILL: Final = frozenset(
    {"Nd", "No", "Nl", "Mn", "Me", "Cc", "Cf", "Cn", "Zs", "Pd", "Po", "Ps", "Pe", "Pc", "Sm"}
)
_PLANE_ONE: Final = range(0x10000, 0x20000)  # every digit past the BMP (checked by the tests)


def _part_kind(char: str) -> int:
    """What ``char``, a character of a code unit's NFKC form, is to a run (``_UNIT_KINDS``)."""
    if unicode_data.digit(char, None) is not None:
        return _DIGIT
    category = unicode_data.category(char)
    if category in _FILLING_CATEGORIES or char in _SEPARATING:
        return _FILLER
    if category == "Cn" and not noncharacter(ord(char)):
        return _FILLER
    return _OTHER


def _unit_kinds() -> np.ndarray:
    """``_OTHER``, ``_FILLER`` or ``_DIGIT`` for each UTF-16 code unit, from the Unicode data
    folding reads (each character's NFKC form, as folding takes it). About 30 ms, once."""
    kinds = np.zeros(0x10000, dtype=np.uint8)
    chars = [chr(code) for code in range(0x10000)]
    decomposed = list(map(unicode_data.decomposition, chars))
    for code, kind in enumerate(map(unicode_data.category, chars)):
        # Letters, symbols and other punctuation are none, unless their NFKC form is.
        if kind in _MAY_FILL or decomposed[code]:
            kinds[code] = _char_kind(chars[code], bool(decomposed[code]))
    for first, last in IGNORABLE_RANGES:  # Hangul fillers are letters: ignorable all the same
        if last <= 0xFFFF:
            ignorable = kinds[first : last + 1]
            ignorable[ignorable == _OTHER] = _FILLER
    # A surrogate pair is one character: its high surrogate a digit when its block of 1,024
    # code points holds one (a superset: the decode tells), its low one a filler.
    kinds[0xD800:0xE000] = _FILLER
    supplementary = map(unicode_data.digit, map(chr, _PLANE_ONE), repeat(None))
    for code, value in zip(_PLANE_ONE, supplementary, strict=True):
        if value is not None:
            kinds[0xD800 + ((code - 0x10000) >> 10)] = _DIGIT
    return kinds


def _char_kind(char: str, decomposed: bool) -> int:
    """What a code unit's character is to a run (``_UNIT_KINDS``): its NFKC form's parts
    read (``_part_kind``), a digit if one is, a filler if all are."""
    if not decomposed or ord(char) in _HANGUL_SYLLABLES:
        return _part_kind(char)
    parts = [_part_kind(part) for part in unicode_data.normalize("NFKC", char)]
    return _DIGIT if _DIGIT in parts else _FILLER if parts and all(parts) else _OTHER


_UNIT_KINDS: Final = _unit_kinds()
native.install_unit_kinds(_UNIT_KINDS.tobytes(), RUN_DIGITS)  # the extension's prefilter reads them


def _high_bytes(ascii_only: bool, least: int) -> bytes:
    """A ``bytes.translate`` table: 1 for each byte that is the high byte of a code unit of
    kind ``least`` or more (``_UNIT_KINDS``), else 0; of units both of whose bytes are ASCII
    with ``ascii_only`` (what ASCII text can hold)."""
    units = _UNIT_KINDS.reshape(256, 256)  # [high byte, low byte]
    if ascii_only:
        units = units[:0x80, :0x80]
    highs = units.max(axis=1) >= least
    return bytes(highs.tolist() + [False] * (256 - len(highs)))


# High bytes of units a run may hold (digits and fillers), and of digits, for text of any
# bytes and for ASCII text.
_RUN_HIGH: Final = _high_bytes(ascii_only=False, least=_FILLER)
_RUN_HIGH_ASCII: Final = _high_bytes(ascii_only=True, least=_FILLER)
_DIGIT_HIGH: Final = _high_bytes(ascii_only=False, least=_DIGIT)
_DIGIT_HIGH_ASCII: Final = _high_bytes(ascii_only=True, least=_DIGIT)
_RUN: Final = b"\x01" * RUN_DIGITS


def may_be_digit_high(encoded: bytes) -> bool:
    """Whether a byte of ``encoded`` (a character's UTF-8) may be the high byte of a UTF-16
    code unit that is a digit (``_DIGIT_HIGH``): what a ``partial`` mask counts of a
    character folding reads as none (``enforce.strategies``)."""
    return 1 in encoded.translate(_DIGIT_HIGH)


def may_read_digits(text: bytes) -> bool:
    """Whether ``text`` may read as UTF-16 digits (``digit_encoding``), a superset: in one
    byte order every other byte, ``RUN_DIGITS`` in a row, may be the high byte of a unit of a
    run (``_RUN_HIGH``), and as many of them may be a digit's. C-level passes only (a
    translate, two slices and a search; a count more for text that has such a row)."""
    if len(text) < 2 * RUN_DIGITS:
        return False
    plain = text.isascii()
    highs = text.translate(_RUN_HIGH_ASCII if plain else _RUN_HIGH)
    parities = [parity for parity in (0, 1) if _RUN in highs[parity::2]]  # BE, then LE
    if not parities:
        return False
    digits = text.translate(_DIGIT_HIGH_ASCII if plain else _DIGIT_HIGH)
    return any(digits[parity::2].count(1) >= RUN_DIGITS for parity in parities)


def digit_run_candidates(texts: Sequence[bytes], joined: bytes) -> list[int]:
    """The indices of ``texts`` (ascending) that may read as UTF-16 digits
    (``may_read_digits``, a superset), asked of ``joined`` (``texts`` with a newline between
    each): those a row of possible high bytes in it ends in. A tensor's many texts cost
    C-level passes over them joined, and numpy's placing of the rows found, not a call each."""
    highs = joined.translate(_RUN_HIGH_ASCII if joined.isascii() else _RUN_HIGH)
    if _RUN not in highs[0::2] and _RUN not in highs[1::2]:
        return []
    flags = np.frombuffer(highs, dtype=np.uint8)
    span = 2 * (RUN_DIGITS - 1)  # from a row's first high byte to its last
    rows = flags[: len(flags) - span].copy()
    for step in range(2, span + 1, 2):
        rows &= flags[step : len(flags) - span + step]
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    # The text each row's last high byte is in: any row within a text ends in it.
    found = np.searchsorted(ends, np.flatnonzero(rows) + span, side="right")
    return [int(index) for index in np.unique(found.clip(0, len(texts) - 1))]


def read_as_digits(texts: Sequence[bytes]) -> set[int]:
    """The indices of ``texts`` to read as UTF-16 digits, asked of them together: those that
    read so from their first byte (``digit_encoding``), and those that may hold a JSON string
    that does from its own (``string_candidates``, a superset: at an odd offset, or written
    with escapes, ``json.dumps`` writing a tab as ``\\t``). One native pass over ``texts``
    (``digit_reads``) and, for the few that hold a quote and a backslash, their escapes
    decoded."""
    answer = native.quoted_digit_runs(texts)
    if answer is not None and not answer[0] and not answer[1]:
        return set()  # most tensors: nothing named, nothing escaped
    reads = _digit_reads(texts, True, answer)
    return reads.first | string_candidates(texts, reads)


class DigitReads(NamedTuple):
    """``digit_reads``' answer: the indices of the texts that read as UTF-16 digits from their
    first byte, of those holding a quote that do from their second, and of those not named
    that hold a quote and a backslash (None: not known, any text may)."""

    first: set[int]
    second: set[int]
    escaped: list[int] | None


def digit_reads(texts: Sequence[bytes], quoted: bool = False) -> DigitReads:
    """The indices of ``texts`` that read as UTF-16 digits from their first byte
    (``digit_encoding``), and with ``quoted`` those holding a quote that do from their second
    byte (a JSON string in a text may start at an odd offset, and a reader of it reads it from
    there: ``string_readings``), asked of them together. The extension names the few that
    may (``native.wide_digit_runs``, ``quoted_digit_runs``: this rule over ``_UNIT_KINDS``,
    at well under a nanosecond a byte: none for most tensors), and with ``quoted`` the texts
    holding a quote and a backslash it did not name, seen in the same pass; else the rows of
    ``digit_run_candidates`` place them (rows at either parity: both readings' superset).
    Those are read here at once, joined by a noncharacter unit (U+FFFF, which ends a run in
    either byte order) with any odd last byte cut (a decoder's replacement character). This
    reading is the rule's; the extension's only spares the rest a look."""
    return _digit_reads(texts, quoted, native.quoted_digit_runs(texts) if quoted else None)


def _digit_reads(
    texts: Sequence[bytes], quoted: bool, answer: tuple[list[int], list[int]] | None
) -> DigitReads:
    """``digit_reads``, the extension's answer for ``quoted`` (``native.quoted_digit_runs``)
    already asked."""
    escaped: list[int] | None = None
    candidates: list[int] | None
    if quoted:
        candidates, escaped = (None, None) if answer is None else answer
    else:
        candidates = native.wide_digit_runs(texts)
    if candidates is None:
        if len(texts) < 2:
            return DigitReads(
                {index for index, text in enumerate(texts) if digit_encoding(text) is not None},
                {index for index, text in enumerate(texts) if quoted and _shifted_digits(text)},
                None,
            )
        candidates = digit_run_candidates(texts, b"\n".join(texts))
    if not candidates:
        return DigitReads(set(), set(), escaped)
    owners: list[tuple[int, int]] = []  # (index, first byte read) of each piece
    pieces: list[bytes] = []
    for index in candidates:
        text = texts[index]
        for start in (0, 1) if quoted and _QUOTE in text else (0,):
            owners.append((index, start))
            pieces.append(text[start : start + (len(text) - start) // 2 * 2])
    found: tuple[set[int], set[int]] = (set(), set())
    for positions in _pieces_with_runs(pieces).values():
        for at in positions:
            index, start = owners[at]
            found[start].add(index)
    return DigitReads(*found, escaped)


def _pieces_with_runs(pieces: Sequence[bytes]) -> dict[str, set[int]]:
    """For each UTF-16 byte order, the positions of ``pieces`` (each of whole code units) that
    hold a run of digits read so (``_DIGIT_RUN``): read at once, joined by a noncharacter unit
    (U+FFFF, which ends a run in either byte order)."""
    joined = b"\xff\xff".join(pieces)
    ends = np.cumsum(
        np.fromiter((len(piece) // 2 + 1 for piece in pieces), dtype=np.int64, count=len(pieces))
    )
    found: dict[str, set[int]] = {}
    for encoding, dtype in _UTF16_ORDERS:
        kinds = _UNIT_KINDS[np.frombuffer(joined, dtype=dtype)].tobytes()
        starts = [run.start() for run in _DIGIT_RUN.finditer(kinds)]
        found[encoding] = set(np.searchsorted(ends, starts, side="right").tolist())
    return found


def reads_as_digits(text: bytes, quoted: bool = False) -> bool:
    """The rule ``read_as_digits`` applies to one text: ``digit_encoding`` reads it as UTF-16
    digits; with ``quoted``, or it holds a quote and reads so from its second byte."""
    return digit_encoding(text) is not None or (quoted and _shifted_digits(text))


def _shifted_digits(text: bytes) -> bool:
    """Whether ``text`` holds a quote and reads as UTF-16 digits from its second byte."""
    return _QUOTE in text and digit_encoding(text[1:]) is not None


def raw_digit_rows(raw: bytes, count: int) -> list[int] | None:
    """The indices (ascending) of the ``count`` elements of ``raw``, a BYTES tensor's raw
    form (4-byte little-endian length, then the bytes, per element), that may read as UTF-16
    digits, from their first byte or, holding a quote, their second (``reads_as_digits``,
    ``quoted``: a JSON string in an element, as written, holds its run in step with one of
    them; the raw path takes no element with a backslash, so none with escapes): the
    extension's answer (``native.wide_digit_runs_raw``, no element built; an empty list for
    most tensors); without it (or for a buffer it refuses), an empty list when
    ``may_read_digits`` rules the whole buffer out (a run in an element is one of the
    buffer's, at one of its two parities), else None: any element may."""
    # No quote anywhere (one memchr; a length prefix may hold one): no JSON string either.
    rows = native.wide_digit_runs_raw(raw, count, quoted=_QUOTE in raw)
    if rows is not None:
        return rows
    return None if may_read_digits(raw) else []


def digit_encoding(text: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when ``text``, decoded so, holds a run of at least
    ``RUN_DIGITS`` digits with only fillers between them (``_UNIT_KINDS``); else None. The
    C-level passes of ``may_read_digits`` settle most text; the rest's code units are looked
    up by numpy in each byte order and their kinds searched for such a run."""
    if not may_read_digits(text):
        return None
    for encoding, dtype in _UTF16_ORDERS:
        if _holds_run(text, dtype):
            return encoding
    return None


def digit_encodings(text: bytes) -> list[str]:
    """Each UTF-16 byte order (``utf-16-le``, then ``utf-16-be``) in which ``text`` holds a run
    of digits (``digit_encoding``): text may hold one in each, and a client reads the one its
    decoder's order shows."""
    if not may_read_digits(text):
        return []
    return [encoding for encoding, dtype in _UTF16_ORDERS if _holds_run(text, dtype)]


def _holds_run(text: bytes, dtype: str) -> bool:
    """Whether ``text``'s code units (numpy's ``dtype`` view: an odd last byte is none) hold a
    run of digits (``_DIGIT_RUN``) by their kinds."""
    kinds = _UNIT_KINDS[np.frombuffer(text, dtype=dtype, count=len(text) // 2)].tobytes()
    return _DIGIT_RUN.search(kinds) is not None


_UTF16_ORDERS: Final = (("utf-16-le", "<u2"), ("utf-16-be", ">u2"))
# A run of ``RUN_DIGITS`` digits in a text's unit kinds: fillers only between them (each
# filler stretch taken whole, so a long one is read once from each digit before it).
_DIGIT_RUN: Final = re.compile(b"\\x02(?:\\x01*+\\x02){%d}" % (RUN_DIGITS - 1))


# --- UTF-16 digits in JSON strings (module docstring) ---------------------------------------

_QUOTE: Final = 0x22  # ints: ``in`` finds one with memchr
_BACKSLASH: Final = 0x5C
# A JSON string as a reader finds it from a quote: characters but a quote or a backslash, and
# escapes (a backslash and the character after it), up to the closing quote.
_JSON_STRING: Final = re.compile(rb'"((?:[^"\\]|\\.)*+)"', re.DOTALL)
# A JSON string's escapes as ``json.loads`` decodes them: a surrogate pair's two escapes are
# one character, a lone surrogate's is written as UTF-8 (as ``jsonpaths`` writes leaves).
_JSON_ESCAPE: Final = re.compile(
    rb'\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(["\\/bfnrt]))'
)


def json_strings(text: bytes, shortest: int = 0) -> list[bytes]:
    """The JSON strings in ``text``, keys and values, each decoded as a JSON reader decodes
    it, in UTF-8; and those in such a string in turn (JSON written into a JSON string, up to
    ``MAX_UNESCAPE_LEVELS`` deep): what a client that parses the text holds. Found from each
    quote as a reader finds them: in valid JSON exactly its strings, in other text each quoted
    piece. ``shortest``: strings written in fewer bytes than this are left out (decoding only
    shortens a string, and a string holds no longer one)."""
    found: list[bytes] = []
    level = [text]
    for _ in range(MAX_UNESCAPE_LEVELS):
        inner: list[bytes] = []
        for each in level:
            if _QUOTE not in each:
                continue
            for match in _JSON_STRING.finditer(each):
                string = match.group(1)
                if len(string) < shortest:
                    continue
                if _BACKSLASH in string:
                    string = _json_unescaped(string)
                    if _QUOTE in string:
                        inner.append(string)
                found.append(string)
        if not inner:
            break
        level = inner
    return found


def _json_unescaped(data: bytes) -> bytes:
    """``data`` with its JSON escapes decoded (``_JSON_ESCAPE``), others left as written."""
    return _JSON_ESCAPE.sub(_unescaped, data)


def _unescaped(match: re.Match[bytes]) -> bytes:
    high, low, code, simple = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00).encode("utf-8")
    if code is not None:
        return chr(int(code, 16)).encode("utf-8", "surrogatepass")
    return SIMPLE_ESCAPES[simple]


def string_candidates(texts: Sequence[bytes], reads: DigitReads, escaped: bool = True) -> set[int]:
    """The indices of ``texts`` that may hold a JSON string reading as UTF-16 digits from its
    own first byte (``string_readings``), a superset: those holding a quote that read as
    UTF-16 digits (``reads``: ``digit_reads`` of ``texts``, ``quoted``) as written or, for
    text with a quote and a backslash (``reads.escaped``; without it, each text is looked at,
    unless ``escaped`` is False: none holds a backslash), with its JSON escapes decoded, each
    of ``MAX_UNESCAPE_LEVELS`` levels (``digit_reads`` of those, together). A string's bytes
    are those of the text so decoded, from the byte after its quote: from the text's first
    byte or its second, in step, they hold its run."""
    found = {index for index in reads.first if _QUOTE in texts[index]} | reads.second
    if reads.escaped is not None:
        asked: Iterable[int] = reads.escaped
    elif escaped:
        asked = (
            index
            for index, text in enumerate(texts)
            if index not in found and _BACKSLASH in text and _QUOTE in text
        )
    else:
        return found
    levels: list[bytes] = []
    owners: list[int] = []
    for index in asked:
        current = texts[index]
        for _ in range(MAX_UNESCAPE_LEVELS):
            decoded = _json_unescaped(current)
            if decoded == current:
                break
            levels.append(decoded)
            owners.append(index)
            current = decoded
    if levels:
        level_reads = digit_reads(levels, quoted=True)
        found.update(owners[at] for at in level_reads.first if _QUOTE in levels[at])
        found.update(owners[at] for at in level_reads.second)
    return found


def string_readings(text: bytes) -> list[bytes]:
    """The JSON strings of ``text`` (``json_strings``) that read as UTF-16 digits from their
    own first byte, decoded so (``wide_reading``) and folded, in each byte order that holds a
    run: what a client that parses the text and decodes a string as UTF-16 sees, at whatever
    offset in the text the string starts. One reading per byte order, its strings a newline
    apart (an odd last byte, a decoder's replacement character, left out), so text of many
    strings costs a regular expression's pass, a numpy look at them and two decodes;
    ``UNFOLDABLE`` for one that cannot be folded."""
    strings = [string[: len(string) // 2 * 2] for string in json_strings(text, 2 * RUN_DIGITS)]
    if not strings:
        return []
    readings: list[bytes] = []
    for encoding, positions in _pieces_with_runs(strings).items():
        if positions:
            newline = "\n".encode(encoding)
            joined = newline.join([strings[position] for position in sorted(positions)])
            readings.append(cast(bytes, wide_reading(joined, 0, encoding)))
    return readings


def _nuls(text: bytes, start: int = 0, stop: int | None = None, step: int = 1) -> int:
    """How many NULs ``text[start:stop:step]`` holds."""
    if len(text) < COUNT_BY_NUMPY:
        return text[start:stop:step].count(0)
    return int(np.count_nonzero(np.frombuffer(text, dtype=np.uint8)[start:stop:step] == 0))
