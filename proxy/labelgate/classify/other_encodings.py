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

Each decode is also read in each order a reader may see it in, as UTF-8 text is
(``shown_text``): ``ssn \u202e9876-54-321\u202c`` decoded from UTF-16LE or GB18030 shows
as ``ssn 123-45-6789``. Its display readings, folded, follow its folded form, a newline
between (``_with_shown``, through ``shown_orders``, which reads UTF-8 text too); a value
found there spans the text whole, as one in the decode does. A decode holding no
right-to-left character or bidi control pays one C-level search of it for one (a legacy
one none, but in GB18030, the only one of them that holds such a character).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from labelgate.classify.decoded_text import COUNT_BY_NUMPY, REPLACEMENT, SURROGATES, utf8_read
from labelgate.classify.display_order import reorders
from labelgate.classify.folding import CONTROLS, UNFOLDABLE, fold_decoded
from labelgate.classify.shown_orders import decoded_shown_readings


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
    """The folded forms of ``text`` decoded as the UTF-16 or UTF-32 it reads as
    (``wide_reading``) and, when it is not UTF-8, with surrogates written as UTF-8 joined
    (``utf8_read``) and as each legacy encoding it reads as text in (``legacy_readings``),
    ``UNFOLDABLE`` for one that cannot be folded; ``width`` as for
    ``wide_folded``. One search for a NUL, and for UTF-8 text one decode, for most text."""
    readings: list[bytes] = []
    wide = wide_reading(text, width)
    if wide is not None:
        readings.append(wide)
    if not text.isascii() and not is_utf8(text):
        if 0xED in text and SURROGATES.search(text) is not None:
            # The UTF-8 reading with surrogates joined (``utf8_read``): a caller that reads
            # bytes that are not UTF-8 only this way (``numbers``) reads it too.
            decoded = utf8_read(_rowed(text, width, b"\n") if width else text)
            readings.append(_with_shown(decoded, fold_decoded(decoded)))
        readings += [form for _, form in legacy_readings(text, width)]
    return readings


def wide_reading(text: bytes, width: int = 0) -> bytes | None:
    """``text`` decoded as the UTF-16 or UTF-32 it reads as (``wide_encoding``) and folded;
    None when it reads as neither, ``UNFOLDABLE`` when it cannot be folded. ``width`` as for
    ``wide_folded``: None too when a row is not whole code units."""
    encoding = wide_encoding(text)
    if encoding is None:
        return None
    breaks = 0
    if width:
        newline = "\n".encode(encoding)
        if width % len(newline):
            return None
        breaks = len(text) // width - 1
        text = _rowed(text, width, newline)
    guessed = not text.startswith(_MARKS)
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
_MARKS: Final = tuple(mark for mark, _ in _BYTE_ORDER_MARKS)
_UTF16_MARKS: Final = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
MARK_STARTS: Final = tuple(_UTF16_MARKS)


def wide_encoding(text: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec (with its byte order) ``text`` reads as: the one its byte
    order mark names, else the one whose NULs it has. Of its code units that are not all NUL
    (padding is), UTF-32's are code points (at most U+10FFFF: a NUL as the high byte, at most
    0x10 next to it) in seven of eight units, so a few stray units do not hide it; UTF-16's
    have a NUL as their high byte in one in eight or more (an ASCII character), four times as
    many as the other way round. None, after one search for a NUL, for text without a byte
    order mark or NULs, and after one count for text with fewer NULs than either pattern
    needs (one in sixteen bytes: an image's bytes); else counts over numpy views (``_nuls``)."""
    if 0 not in text:
        return _UTF16_MARKS.get(text[:2])
    for mark, encoding in _BYTE_ORDER_MARKS:
        if text.startswith(mark):
            return encoding
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
    """Whether ``text`` reads as UTF-16 or UTF-32 text (``wide_encoding``), as
    ``hidden_by_folding`` reads it. One search for a NUL and a look at the first two bytes
    for text without either: most text. What a ``partial`` mask asks of a value
    (``enforce.strategies``): each character of such text is up to four bytes read apart."""
    return (0 in text or text.startswith(MARK_STARTS)) and wide_encoding(text) is not None


def _nuls(text: bytes, start: int = 0, stop: int | None = None, step: int = 1) -> int:
    """How many NULs ``text[start:stop:step]`` holds."""
    if len(text) < COUNT_BY_NUMPY:
        return text[start:stop:step].count(0)
    return int(np.count_nonzero(np.frombuffer(text, dtype=np.uint8)[start:stop:step] == 0))
