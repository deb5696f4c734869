"""The ``secret`` detector: credentials in free text, over UTF-8 bytes. Pure.

What it accepts is described in ``labelgate.classify.detectors``; this module is how, the
reference the Rust port (``proxy/native/src/secrets.rs``) is tested against. Three passes,
each in position order, in this order: PEM private keys, JWTs, vendor tokens.

A PEM block is found from its ``PRIVATE KEY`` and read outwards: ``-----BEGIN `` or
``-----END ``, up to three label words (1-9 capitals or digits, one space after each),
``PRIVATE KEY``, an optional `` BLOCK`` (PGP), ``-----``. A BEGIN marker's block runs to the
end of the first END marker of the same label, else to the end of the text (fail closed: a
reply cut short, a key whose END line was dropped); an END marker with no block open runs
from the end of the previous block, or the start of its text (the last NUL, or the start).

A block runs on past NULs. ``DetectorSet.scan_each`` scans many texts (a tensor's elements,
a message's strings, the leaves of a tensor's JSON elements) joined by NULs, and a key is
often written one line per element (a "lines" column): its BEGIN marker in one element, its
base64 lines in the next ones, each of which, scanned alone, holds nothing to find. So a
block whose own element holds no END marker runs on into the following texts of the same
scan, up to and including the END marker of its label in a later one; without one it covers
every later text of that scan. ``scan_each`` shares such a hit out one piece per text; the
native scan (``proxy/native/src/secrets.rs``) carries the awaited END marker from one
element into the next. A block never runs from one scan into another: not from one tensor
into the next, nor from a message into another, nor from one streamed reply into the next
(``carryover`` holds an element whose block is open until its END marker or the final
reply). The price is every later text of the scan masked after a BEGIN marker no END marker
follows: fail closed, and rare outside keys. (Before, a NUL ended a block, and a key one
line per element leaked every line but its markers.)

A JWT is three runs of base64url characters joined by dots, the first two opening with
``eyJ``, which is base64url for ``{"``: each of them decodes to text opening a JSON object
with a key, and is 8 characters or more (the shortest such object, ``{"":0}``, is 6 bytes,
8 characters). Nothing more is decoded: a token cut short or with an odd header is still a
credential, and no other text has this shape, so nothing around it matters either.

A vendor token is a whole run of ``[A-Za-z0-9_-]`` (one of those right before or after it
makes it part of something longer) made of a prefix and a body of the vendor's characters
and length, 255 characters at most in all (GitHub's documented bound, the largest any of
these vendors gives): the patterns below, their lookahead asserting the run's end.

Every pass is guarded by cheap checks: one C-level ``translate`` deletes every byte but the
capitals, ``_``, ``-`` and ``x``, and each literal's skeleton (``PRIVATEKEY``, ``J`` of
``eyJ``, ``AKIA``, ``xx-`` of ``xoxb-``) is searched in what is left, usually a few percent
of the text: a skeleton missing there means the literal is missing from the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Hit = tuple[str, int, int]  # (detector, start, end): ``patterns.Hit``

NAME = "secret"
_TOKEN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_LABEL_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LABEL_WORDS = 3
_LABEL_WORD_LENGTH = 9
_BEGIN = b"-----BEGIN "
_END = b"-----END "
_KEY = b"PRIVATE KEY"
_DASHES = b"-----"
_BLOCK = b" BLOCK-----"

_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# A token's prefix and body; the lookahead makes the body the rest of its run. Each pattern
# opens with a literal, which the regex engine searches for at memchr speed.
_AFTER = rb"(?![A-Za-z0-9_-])"
_AWS = re.compile(rb"A[KS]IA[A-Z0-9]{16}" + _AFTER)
_GOOGLE = re.compile(rb"AIza[A-Za-z0-9_-]{35}" + _AFTER)
_GITHUB = re.compile(rb"gh[pousr]_[A-Za-z0-9]{36,251}" + _AFTER)
_GITHUB_PAT = re.compile(rb"github_pat_[A-Za-z0-9_]{22,244}" + _AFTER)
_GITLAB = re.compile(rb"glpat-[A-Za-z0-9_-]{20,249}" + _AFTER)
_SLACK = re.compile(rb"xox[abposr]-[A-Za-z0-9-]{10,250}" + _AFTER)
_STRIPE = re.compile(rb"k_live_[A-Za-z0-9]{20,247}" + _AFTER)  # after an "s" or "r"
# The prefixes every token and JWT opens with, and the bytes they are made of: the
# carry-over never cuts a run of these holding a prefix (``carryover._secret_start``).
PREFIXES: tuple[bytes, ...] = (
    b"eyJ",
    b"AKIA",
    b"ASIA",
    b"AIza",
    *(b"gh%c_" % kind for kind in b"pousr"),
    b"github_pat_",
    b"glpat-",
    *(b"xox%c-" % kind for kind in b"abposr"),
    b"sk_live_",
    b"rk_live_",
)
RUN_BYTES = bytes(sorted(_TOKEN_BYTES | {0x2E}))
# What the guards keep of the text (see the module docstring).
_NOT_TELLTALE = bytes(byte for byte in range(256) if byte not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-x")


def secret_hits(data: bytes, hits: list[Hit]) -> None:
    """The PEM blocks, then the JWTs, then the vendor tokens of ``data``."""
    kept = data.translate(None, _NOT_TELLTALE)
    if not kept.lstrip(b"x"):  # the usual text: no capital, "_" or "-"
        return
    # As str: ``in`` on a str costs a tenth of ``in`` on bytes (no buffer to take), and each
    # element of a tensor may pay these checks. On the text itself ``find`` is the cheap one.
    tells = kept.decode("ascii")
    if "PRIVATEKEY" in tells:
        hits.extend((NAME, start, end) for start, end, _ in _pem_blocks(data))
    if "J" in tells and data.find(b"eyJ") >= 0:
        hits.extend((NAME, match.start(), match.end()) for match in _JWT.finditer(data))
    tokens: list[Hit] = []
    if "AKIA" in tells or "ASIA" in tells:
        _find(_AWS, data, tokens)
    if "AI" in tells and data.find(b"AIza") >= 0:
        _find(_GOOGLE, data, tokens)
    if "_" in tells:
        _find(_GITHUB, data, tokens)
        if "__" in tells:
            _find(_GITHUB_PAT, data, tokens)
            _find(_STRIPE, data, tokens, b"rs")
    if "-" in tells:
        if data.find(b"glpat-") >= 0:
            _find(_GITLAB, data, tokens)
        if "xx-" in tells and data.find(b"xox") >= 0:
            _find(_SLACK, data, tokens)
    if tokens:
        hits.extend(sorted(tokens, key=lambda hit: hit[1]))


def open_pem(data: bytes) -> bytes | None:
    """The END marker that a block opened in ``data`` and running to its end awaits, if one
    does (``carryover``: such a block is held until that marker or the final reply)."""
    if _KEY not in data:
        return None
    blocks = list(_pem_blocks(data))
    return blocks[-1][2] if blocks and blocks[-1][1] == len(data) else None


def _find(pattern: re.Pattern[bytes], data: bytes, tokens: list[Hit], first: bytes = b"") -> None:
    """Each match of ``pattern`` that nothing of its run precedes, after one byte of
    ``first`` when given (which the span then includes)."""
    for match in pattern.finditer(data):
        start = match.start()
        if first:
            if start == 0 or data[start - 1] not in first:
                continue
            start -= 1
        if start == 0 or data[start - 1] not in _TOKEN_BYTES:
            tokens.append((NAME, start, match.end()))


def _pem_blocks(data: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """(start, end, awaited) of each PEM block, in order: ``awaited`` is the END marker a
    block run to the end of its text without finding it awaits, else None."""
    position = after = 0  # where the search goes on; where the last block ended
    while (key := data.find(_KEY, position)) >= 0:
        marker = _pem_marker(data, key)
        if marker is None:
            position = key + 1
            continue
        opens, start, label, end = marker
        awaited = None
        if opens:
            closing = _END + data[label : end - len(_DASHES)] + _DASHES
            found = data.find(closing, end)
            end, awaited = (len(data), closing) if found < 0 else (found + len(closing), None)
        else:
            start = max(after, data.rfind(b"\x00", 0, start) + 1)
        yield start, end, awaited
        position = after = end


def _pem_marker(data: bytes, key: int) -> tuple[bool, int, int, int] | None:
    """For the ``PRIVATE KEY`` at ``key``: (whether it is a BEGIN marker, where the marker
    starts, where its label starts, where it ends), None if it is in no marker. The nearest
    ``-----BEGIN ``/``-----END `` before the label words wins."""
    after = key + len(_KEY)
    if data.startswith(_DASHES, after):
        end = after + len(_DASHES)
    elif data.startswith(_BLOCK, after):
        end = after + len(_BLOCK)
    else:
        return None
    label = key
    for words in range(_LABEL_WORDS + 1):
        if data.endswith(_BEGIN, 0, label):
            return True, label - len(_BEGIN), label, end
        if data.endswith(_END, 0, label):
            return False, label - len(_END), label, end
        if words == _LABEL_WORDS or label < 2 or data[label - 1] != 0x20:
            return None
        word = label - 1
        while word > 0 and label - 1 - word <= _LABEL_WORD_LENGTH and data[word - 1] in _LABEL_WORD_BYTES:
            word -= 1
        if not 0 < label - 1 - word <= _LABEL_WORD_LENGTH:
            return None
        label = word
    return None
