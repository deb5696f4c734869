"""The ``secret`` detector: credentials in free text, over UTF-8 bytes. Pure.

What it accepts is described in ``labelgate.classify.detectors``; this module is how, the
reference the Rust port (``proxy/native/src/secrets.rs``) is tested against. Three passes,
each in position order, in this order: PEM private keys, JWTs, vendor tokens.

A PEM block is found from its ``PRIVATE KEY`` and read outwards: ``-----BEGIN `` or
``-----END ``, up to three label words (1-9 capitals or digits, one space after each),
``PRIVATE KEY``, an optional `` BLOCK`` (PGP), ``-----``; or the markers of RFC 4716, which
ssh.com's keys have (``---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----``): ``---- BEGIN `` or
``---- END ``, the label words, ``PRIVATE KEY``, `` ----``. A BEGIN marker's block runs to
the end of the first END marker of the same label and kind, else to the end of the text
(fail closed: a reply cut short, a key whose END line was dropped); an END marker with no
block open runs from the end of the previous block, or the start of its text (the last NUL,
or the start).

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

A JWT is runs of base64url characters joined by dots, each maybe followed by base64's ``=``
padding (two at most; some libraries keep it). A JWS is three: a header and a payload, each
a JSON object's segment, then a signature (empty for ``alg: none``). A JWE is five: a header
(a JSON object's segment), an encrypted key (empty for ``alg: dir``), an IV, a ciphertext and
a tag; where a JWS is followed by two more dotted runs, the five are taken. A JSON object's
segment is 8 characters or more (the shortest object with a key, ``{"":0}``, is 6 bytes, 8
characters) that decode to ``{``, any JSON whitespace (space, tab, LF, CR: pretty-printed or
hand-built JSON), then the ``"`` of its first key: ``eyJ`` most often (``{"`` then a
letter), also ``eyI``, ``eyK``, ``eyL`` (another first byte), ``eyA`` (``{`` and a space),
``ewo``, ``ewk``, ``ew0`` (``{`` and LF, tab, CR), further whitespace in groups of 4
characters (``_OPENING``). Nothing more is decoded: a token cut short or with an odd header
is still a credential, and no other text has this shape, so what precedes a header in its run
does not matter either. A run of ``{``-and-whitespace openings with no key (``{ }``) is none.

A JWT is found from its first dot: the rest of a token must follow it (``_TAILS``), which
other text seldom has, and only then is the run before it read back for the header's first
opening (``_jwts``). Each run is read once, where a search from each opening read the run
again from every one of them (a megabyte of ``eyJ`` took minutes).

A vendor token is a whole run of ``[A-Za-z0-9_-]`` (one of those right before or after it
makes it part of something longer) made of a prefix and a body of the vendor's characters
and length, 255 characters at most in all (GitHub's documented bound, the largest any of
these vendors gives): the patterns below, their lookahead asserting the run's end.

Every pass is guarded by cheap checks: one C-level ``translate`` deletes every byte but the
capitals, ``_``, ``-`` and ``x``, and each literal's skeleton (``PRIVATEKEY``, ``AKIA``,
``xx-`` of ``xoxb-``) is searched in what is left, usually a few percent of the text: a
skeleton missing there means the literal is missing from the text. A JWT may have no capital
(``{``, LF, ``"`` encode as ``ewoi``): its guard is a dot the rest of a token follows.

Not detected (``detectors`` lists them too): PuTTY ``.ppk`` keys (``PuTTY-User-Key-File-``,
no PEM-like markers); JWTs written with spaces around their dots, or in JSON serialization;
secrets with no prefix of their own (AWS secret access keys, OpenAI's ``sk-`` and ``sk-proj-``
keys, passwords, other vendors' keys); a vendor token in a run longer than 255 characters,
which is some other string, not flagged in part either.
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
_KEY = b"PRIVATE KEY"
_BLOCK = b" BLOCK"
# The two kinds of markers: PEM's, and RFC 4716's (ssh.com's SSH2 keys): how a BEGIN marker
# and an END marker open, and what follows the label (the same length in both).
_PEM = (b"-----BEGIN ", b"-----END ", b"-----")
_SSH2 = (b"---- BEGIN ", b"---- END ", b" ----")
_DASHES = len(b"-----")

# A JSON object's segment opens with the base64url of "{", any JSON whitespace and the quotation
# mark of its first key; 4 characters encode 3 bytes. Below (after the "e" of "{"), W is a
# whitespace byte (tab, LF, CR, space), Q the quotation mark, X any byte: "{Q" encodes as "y"
# and one of I-L (X's top bits); "{W" as "yA" (space) or "w" and one of k, o, 0 (tab, LF, CR),
# the group's last character then "i" for Q or one of J, K, N, g for W. Groups of whitespace
# follow, each opening with C, D or I (``_W2``: two whitespace bytes and the top bits of a
# third), up to the one that holds the quotation mark (WWQ, WQX or QXX).
_W2 = rb"(?:(?:C[Qg]|DQ|IA)[ko0]|(?:C[Si]|DS|IC)A)"  # "WW", and the top bits of the third byte
_OPENING_GROUPS = (
    rb"y[IJKL]"  # {Q
    rb"|(?:yA|w[ko0])(?:i"  # {WQ
    rb"|[JKNg](?:" + _W2 + rb"[JKNg])*+"  # {WW, then WWW groups
    rb"(?:" + _W2 + rb"i|(?:C[Si]|DS|IC)[IJKL]|I[g-v]))"  # then WWQ, WQX or QXX
)
_OPENING = re.compile(rb"e(?=" + _OPENING_GROUPS + rb")")  # where a JSON object's segment may start
_B64 = rb"[A-Za-z0-9_-]"
_PAD = rb"={0,2}+"  # base64's padding
# What follows a JWT's first dot, the one after its header: a JWE's encrypted key (maybe
# empty), IV, ciphertext and tag; else a JWS's payload (a JSON object) and signature.
_TAILS = (
    (_B64 + rb"*+" + _PAD + (rb"\." + _B64 + rb"++" + _PAD) * 3)
    + rb"|(?=e(?:"
    + _OPENING_GROUPS
    + rb"))"
    + (_B64 + rb"{8,}+" + _PAD + rb"\." + _B64 + rb"*+" + _PAD)
)
_FIRST_DOT = re.compile(rb"\.(?=(?P<tail>" + _TAILS + rb"))")
# Read backwards from a first dot: the header's padding and base64url characters.
_HEADER_BACKWARDS = re.compile(rb"(" + _PAD + rb")(" + _B64 + rb"*+)")
_SEGMENT = 8  # characters: the shortest JSON object with a key, {"":0}, in base64url
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
# The prefixes every token and JWT opens with (a JWT's: its header's first 3 characters), and
# the bytes they are made of, "=" padding a JWT's segments: the carry-over never cuts a run of
# these holding a prefix (``carry_runs._secret_start``).
PREFIXES: tuple[bytes, ...] = (
    *(b"ey%c" % third for third in b"IJKLA"),
    *(b"ew%c" % third for third in b"ko0"),
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
RUN_BYTES = bytes(sorted(_TOKEN_BYTES | {0x2E, 0x3D}))
# What the guards keep of the text (see the module docstring).
_NOT_TELLTALE = bytes(byte for byte in range(256) if byte not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-x")


def secret_hits(data: bytes, hits: list[Hit]) -> None:
    """The PEM blocks, then the JWTs, then the vendor tokens of ``data``."""
    kept = data.translate(None, _NOT_TELLTALE)
    # As str: ``in`` on a str costs a tenth of ``in`` on bytes (no buffer to take), and each
    # element of a tensor may pay these checks. On the text itself ``find`` is the cheap one.
    tells = kept.decode("ascii") if kept.lstrip(b"x") else ""  # usually no capital, "_" or "-"
    if "PRIVATEKEY" in tells:
        hits.extend((NAME, start, end) for start, end, _ in _pem_blocks(data))
    # A JWT may have no capital: its guard is a dot the rest of a token follows.
    if data.find(b".") >= 0 and _FIRST_DOT.search(data) is not None:
        _jwts(data, hits)
    if not tells:
        return
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


def open_block(data: bytes) -> tuple[int, bytes] | None:
    """Where the block ``open_pem`` names starts, and the END marker it awaits."""
    if _KEY not in data:
        return None
    blocks = list(_pem_blocks(data))
    if not blocks or blocks[-1][1] != len(data) or blocks[-1][2] is None:
        return None
    return blocks[-1][0], blocks[-1][2]


def last_block(data: bytes) -> tuple[int, int, bytes | None] | None:
    """The last PEM block of ``data`` as the scan finds it: where it starts, where it ends,
    and the END marker it awaits when it runs to the end of the text unclosed (else None);
    None when there is no block (``split_values``: a run glued to a closed block's END marker)."""
    if _KEY not in data:
        return None
    blocks = list(_pem_blocks(data))
    return blocks[-1] if blocks else None


# A ``PRIVATE KEY`` this many bytes or more before the end of a text is in a marker or not
# whatever follows: the most ``_pem_marker`` reads after its start (`` BLOCK-----``).
_MARKER_TAIL = len(_KEY) + len(_BLOCK) + _DASHES


class PemScan:
    """``open_pem`` of a text that only grows at its end, each byte read once or so: fed the
    whole text each time (a ``bytearray`` appended to), it goes on where the last feed
    stopped. ``_pem_blocks`` reads a text left to right and looks past a point only to finish
    a marker (``_MARKER_TAIL`` bytes) or to find an open block's END marker, so it stops at
    the first ``PRIVATE KEY`` whose marker the next bytes may complete, or in an open block
    where its END marker may start, and resumes there. (``carryover``: a text held across a
    stream's replies, read once for markers rather than on every reply.)"""

    __slots__ = ("_awaited", "_position")

    def __init__(self) -> None:
        self._position = 0  # where the next ``PRIVATE KEY`` or awaited END marker may start
        self._awaited: bytes | None = None  # the END marker the open block awaits

    def feed(self, data: bytes | bytearray) -> bytes | None:
        """``open_pem(data)``: ``data`` is the text of the last feed with bytes appended."""
        position, awaited = self._position, self._awaited
        if awaited is not None:
            found = data.find(awaited, position)
            if found < 0:
                self._position = max(position, len(data) - len(awaited) + 1)
                return awaited
            position, awaited = found + len(awaited), None
        while (key := data.find(_KEY, position)) >= 0:
            marker = _pem_marker(data, key)
            if marker is None:
                if key + _MARKER_TAIL > len(data):
                    position = key  # the next bytes may make it a marker: read it again then
                    break
                position = key + 1
                continue
            opens, _, label, end, (_, ends, dashes) = marker
            position = end
            if opens:
                closing = ends + bytes(data[label : end - _DASHES]) + dashes
                found = data.find(closing, end)
                if found < 0:
                    awaited = closing
                    position = max(end, len(data) - len(closing) + 1)
                    break
                position = found + len(closing)
        else:
            position = max(position, len(data) - len(_KEY) + 1)
        self._position, self._awaited = position, awaited
        return awaited


def _jwts(data: bytes, hits: list[Hit]) -> None:
    """The JWTs of ``data``, in order: from each dot that the rest of a token follows, back
    to the first opening of a JSON object's segment in the run of base64url characters before
    it (and its padding), at least ``_SEGMENT`` characters from the run's end, that no JWT
    found before covers. Each run is read once (a run of openings read from each of them costs
    quadratic time) and only at such a dot, which other text seldom holds."""
    backwards = b""
    resume = 0
    for dot in _FIRST_DOT.finditer(data):
        at = dot.start()
        if at < resume:
            continue
        backwards = backwards or data[::-1]
        header = _HEADER_BACKWARDS.match(backwards, len(data) - at)
        assert header is not None  # it matches the empty string
        run_end = at - len(header[1])
        opening = _OPENING.search(data, max(resume, run_end - len(header[2])), run_end)
        if opening is not None and opening.start() <= run_end - _SEGMENT:
            resume = dot.end("tail")
            hits.append((NAME, opening.start(), resume))


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
        opens, start, label, end, (_, ends, dashes) = marker
        awaited = None
        if opens:
            closing = ends + data[label : end - _DASHES] + dashes
            found = data.find(closing, end)
            end, awaited = (len(data), closing) if found < 0 else (found + len(closing), None)
        else:
            start = max(after, data.rfind(b"\x00", 0, start) + 1)
        yield start, end, awaited
        position = after = end


def _pem_marker(
    data: bytes | bytearray, key: int
) -> tuple[bool, int, int, int, tuple[bytes, bytes, bytes]] | None:
    """For the ``PRIVATE KEY`` at ``key``: (whether it is a BEGIN marker, where the marker
    starts, where its label starts, where it ends, its kind), None if it is in no marker. The
    nearest BEGIN or END of its kind before the label words wins."""
    after = key + len(_KEY)
    if data.startswith(_BLOCK, after):  # PGP's, in PEM's kind only
        after += len(_BLOCK)
        kind = _PEM
    else:
        kind = _SSH2 if data.startswith(_SSH2[2], after) else _PEM
    if not data.startswith(kind[2], after):
        return None
    begin, end, _ = kind
    label = key
    for words in range(_LABEL_WORDS + 1):
        if data.endswith(begin, 0, label):
            return True, label - len(begin), label, after + _DASHES, kind
        if data.endswith(end, 0, label):
            return False, label - len(end), label, after + _DASHES, kind
        if words == _LABEL_WORDS or label < 2 or data[label - 1] != 0x20:
            return None
        word = label - 1
        while word > 0 and label - 1 - word <= _LABEL_WORD_LENGTH and data[word - 1] in _LABEL_WORD_BYTES:
            word -= 1
        if not 0 < label - 1 - word <= _LABEL_WORD_LENGTH:
            return None
        label = word
    return None
