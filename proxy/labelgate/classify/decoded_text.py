"""Bytes as a UTF-8 reader decodes them, and whether what they decode to is text: what
folding reads (``folding``), and what tells text, where a character that may hide a value fails
closed, from binary data (an image's, audio's), where it is read as one of no interest.

UTF-16 surrogates written as UTF-8 (CESU-8, Java's modified UTF-8, a JSON escape ``\\ud835``
decoded on its own), which no UTF-8 decoder accepts, are read as a decoder with
``surrogatepass`` and then any UTF-16 or JSON reader reads them, pairs joined
(``utf8_read``): part of the UTF-8 reading itself.

Decoded text is text when at most one character in ``STRAY`` is a control character folding
drops or a replacement character (``reads_as_text``). Text decoded as the UTF-16 or UTF-32
its NULs alone suggest (``other_encodings``) is held to more (``reads_as_guessed_text``).
A guess from NULs alone is also what an array of small integers looks like (an ``.npy`` of
class ids, 16-bit samples, counts): decoded, its numbers are code points from all over the
blocks they fall in, a few of them unassigned, and as many control characters as text has
letters in some. So such a decode is text (and fails closed for an unassigned code point or
a cursor movement) only when it reads as text more strictly (``reads_as_guessed_text``):
NULs aside (padding), at most one character in ``STRAY`` a control character, a
replacement character or a noncharacter, and words apart, at least one in ``_GUESS_SPACES``
a space, a tab or a line break (text of any alphabetic script has one in six or so; numbers
decoded so have one in a hundred or fewer, unless small enough to be control characters
more often than that). In any other such decode an unassigned code point is read as
nothing: one between digits joins them, as a mark would to a newer reader, and binary data
loses a character of no interest. (Text written without spaces, Chinese or Thai, with no
byte order mark, is read so too: its unassigned code points are not failed closed.)
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np

# Text is not text when more than one character in STRAY is one of these: a decoder's
# replacement character or a control character folding drops (bytes of an image, of audio).
STRAY: Final = 8
_NOT_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


def reads_as_text(text: str) -> bool:
    """Whether ``text`` (decoded) is text: at most one character in ``STRAY`` a control
    character folding drops or a replacement character (``_NOT_TEXT``)."""
    return stray_count(text) * STRAY <= len(text)


# ``_NOT_TEXT`` as a table of the Basic Multilingual Plane (no character past it is one):
# counted over a long text's code points by numpy, where the regular expression's ``findall``
# builds a string per match (binary data holds one in eight: 0.2 s a MB against 7 ms).
_NOT_TEXT_CODES: Final = np.array([_NOT_TEXT.match(chr(code)) is not None for code in range(0x10000)])
_LAST_TABLED: Final = 0xFFFF  # not one: where every code point past the table is looked up


def stray_count(text: str) -> int:
    """How many characters of ``text`` are ``_NOT_TEXT``."""
    if len(text) < COUNT_BY_NUMPY:
        return len(_NOT_TEXT.findall(text))
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return int(np.count_nonzero(_NOT_TEXT_CODES[np.minimum(codes, _LAST_TABLED)]))


# A decode guessed from NULs alone is text when at most one character in ``STRAY`` is stray,
# and at least one in this many is a space (module docstring). NULs are padding, not counted.
_GUESS_SPACES: Final = 32
_STRAY_IN_GUESS: Final = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffd-\uffff]")
# Space separators (Zs: every one is below U+3001) and the kept control characters.
_SPACES: Final = re.compile("[\t\n\r \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def reads_as_guessed_text(text: str, breaks: int = 0) -> bool:
    """Whether ``text``, decoded as the UTF-16 or UTF-32 its NULs suggest, reads as text (the
    module docstring); ``breaks``: newlines put between its rows, no part of it. Asked only
    of a decode holding an unassigned code point or a cursor movement: three C-level passes."""
    size = len(text) - text.count("\x00") - breaks
    spaces = len(_SPACES.findall(text)) - breaks
    return len(_STRAY_IN_GUESS.findall(text)) * STRAY <= size <= spaces * _GUESS_SPACES


# UTF-16 surrogates written as UTF-8 (CESU-8, Java's modified UTF-8, JSON's ``\ud835\udfd2``
# decoded an escape at a time): no UTF-8 decoder accepts them, so a run of them is cut out of
# the text and read on its own.
SURROGATES: Final = re.compile(rb"(?:\xed[\xa0-\xbf][\x80-\xbf])+")
REPLACEMENT: Final = "\ufffd"
REPLACEMENT_BYTES: Final = REPLACEMENT.encode()


def utf8_read(text: bytes) -> str:
    """``text`` decoded as UTF-8, bytes it cannot decode replaced, but surrogates written as
    UTF-8 (``SURROGATES``) read as a decoder with ``surrogatepass`` reads them, pairs joined as
    any UTF-16 or JSON reader of that decode joins them (``\\xed\\xa0\\xb5\\xed\\xbf\\x92``: ``𝟒``);
    a lone one is a replacement character, as before. Searched only in text that does not
    decode (a replacement character) and holds the surrogates' first byte."""
    decoded = text.decode("utf-8", "replace")
    if REPLACEMENT not in decoded or b"\xed" not in text or SURROGATES.search(text) is None:
        return decoded
    parts = SURROGATES.split(text)
    runs = SURROGATES.findall(text)
    pieces = [parts[0].decode("utf-8", "replace")]
    for run, part in zip(runs, parts[1:], strict=True):
        units = run.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass")
        pieces += [units.decode("utf-16-le", "replace"), part.decode("utf-8", "replace")]
    return "".join(pieces)


# From this many bytes on, NULs are counted by numpy: ``bytes.count`` of a byte as common as
# one in four (a dark image's, an array of small numbers) takes 2.4 ms a MB, numpy 0.07 ms.
COUNT_BY_NUMPY: Final = 4096
