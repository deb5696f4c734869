"""Streamed text scanned across replies: pure.

A token-streaming model sends ``4111 11`` / ``11 1111 `` / ``1111``: scanned reply by
reply, no piece is a card number. So for streamed (decoupled) replies the gateway keeps
a carry-over per request, output and element: each reply's BYTES element is appended to
what was held, and only the part no future byte can still turn into a match is released
for classification now; the rest (at most ``window`` bytes, the longest match a detector
can make, and never the middle of a match already visible) waits for the next reply. The
final reply of a request, or the end of the stream, releases everything held.

Only text whose matches a scan of its raw bytes sees can be cut that way: ASCII without
backslashes, control characters (but tab, newline, return) or markup a renderer drops next
to a digit, with no custom detector whose match may be longer than the window. Anything
else is held whole until the request's final reply (or until it is a whole JSON object):
text that is not ASCII or holds such control characters (the classifier also reads it
folded, ``folding.py``: a full-width SSN is invisible to a raw scan, and zero-width
characters, NULs or ANSI escapes stretch a value past any window), text with such markup
(read rendered too, ``markup``: a comment between two digits is as long as the upstream
likes), text with JSON escapes (read decoded), and an element that opened like JSON (an object, an
array, a string, after any space or invisible character: ``jsonpaths.opens_json``): its keys
label its leaves, and JSON that is not a bare object may be opaque (``json_elements``), which
needs all of it. (Prose that opens with a quotation mark is held whole too: later, not less.)
Held text beyond ``hold_limit`` bytes in all fails the stream closed.

A UINT8 or INT8 tensor of one dimension, or of several all 1 but one (``[1, n]``, a batch
of one) is text too (its bytes, as one text, are scanned as a BYTES element is,
``numbers.py``): it is carried as one BYTES element is, and each reply releases a tensor of
its datatype and rank whose text axis is the length of the text released. An 8-bit tensor
with two dimensions above 1 (an image, not a text) is sent on as it came, as are BOOL
tensors.

So are numbers wider than 8 bits (INT16..UINT64, FP16, BF16, FP32, FP64) of such a shape,
whose raw bytes a client reads back with ``tobytes()`` (``numbers.packed_detections``), while
the bytes the output brought end in text (``_packed_text``), read as the classifier reads
binary, control characters dropped: their last ``_TEXT_END`` bytes (trailing NULs aside,
control characters but NUL dropped, across replies: text a few bytes a reply counts once
``_TEXT_LEAST`` bytes arrived) are UTF-8 without NULs, or, every control character dropped,
they end in a run of bytes a value may be made of (``_VALUE_BYTES``: letters, digits and the
separators values hold) at least ``_VALUE_RUN`` (8) long holding a letter or a digit. Then
they are carried as 8-bit text is, cut between elements only (``_element_cut``), and each
reply releases a tensor of their datatype whose text axis counts the elements released; once
the bytes no longer end in text, what is held goes with that reply, whole. An empty output of
the datatype held leaves what is held as it was. Floats, token ids and the like seldom end in
text (measured: ``_VALUE_RUN``), and only their last elements are read to tell: they are sent
on as they came, at a constant cost.

Bytes sent on (or released whole) that end in a shorter such run may hold the start of a
value the next replies complete (``\x80\x80123-45-`` / ``6789``): that run is read with the
output's next bytes, every control character dropped (``_follow_join``, the first elements of
each later reply only, until a byte no value holds or ``window`` of them arrive), and a
detection that starts in the run and ends past it ends the stream (``STREAM_VALUE_SPLIT``):
at most ``_VALUE_RUN - 1`` bytes of a value's start went out. (``ip_address`` and ``email``
count from 16 bytes there unless the next bytes read as text, as the classifier reads binary;
a run no cut falls in, digits or a token, going on past the window ends the stream too.)

What is not covered: a value in a form only another reading shows (folded, full-width digits,
markup, escapes, UTF-16 decoded) that begins right after binary bytes (fewer than
``_TEXT_LEAST`` text bytes before it), since its bytes are no ``_VALUE_BYTES``; an IPv6
address split at a colon (``:`` is no value byte: float exponents are); with custom patterns
(any printable ASCII is a value byte then) a match holding bytes that are not ASCII, or longer
than the window; text a row at a time (two dimensions above 1); and an output that changes
datatype or goes 8-bit between the replies (the join is read with wider numbers only). While
a PEM block is open in the request, numbers sent on as they came (and 8-bit images) are
covered whole (``_cover``).

The cut never falls inside a number-like run (a maximal run of digits, dots, ``e``/``E`` and
signs that holds a digit): a number written as a float (``4.111111111111111e``, 300 zeros,
``15``) is a card whatever its length (``patterns._float_cards``), so the whole run waits.
Nor inside a run of email characters that holds an ``@``: an email's domain has no length
bound (``patterns._emails``), so ``a@`` and 300 characters of domain cut in two would show
two halves no scan called an email. (Before its ``@`` a local part is 64 characters at most,
which the window holds.) Nor, with the ``secret`` detector on, inside a run of token
characters (letters, digits, ``_ - .`` and the ``=`` that pads a JWT's segments) holding a
secret's prefix before the cut (``credentials.PREFIXES``: ``eyJ``, ``ewo``, ``AKIA``,
``ghp_``...): a JWT has no length bound, and a token may be longer than the window. A PEM
private key is longer than the window too: a block whose BEGIN marker arrived runs to the
end of the text until its END marker does (``credentials``), so the scan's match holds it
from its BEGIN marker until then, or until the final reply. The runs are found by C-level
byte operations, never a Python loop per byte: a stream of digits is held whole, and a loop
over it on every reply costs quadratic time. For the same reason text held as one such run,
or ending in one the window's cut fell in (cut before it, between elements: ``_run_after``),
or as a key block still open, is held on without being read again while the pieces that
follow extend the run (are made of its bytes) or do not hold the awaited END marker; text
held whole (not ASCII, escapes, JSON) stays so as more is appended (what makes it so stays
in it); and so is text held while an earlier element's block is open. Each reply reads only
its own piece (and a few bytes before it): what the held text is (a run, an open block, an
object) is followed piece by piece (``_Reader``, ``credentials.PemScan``), and a JSON
object's end is found by following its nesting (``_ObjectScan``), parsed once when it closes.

A PEM block is followed across a request's replies in the order its text arrives (``_cover``):
once an element's text opens one it does not close (as written, or in a form the scan reads),
every piece any element of any output brings until its END marker arrives is inside it, and
so are the held bytes such pieces join, whenever they are released (a caller may print a
stream as it arrives). Released text carries no BEGIN marker for such pieces (a whole JSON
object that opened the block was released at once; a block closing in its own element puts
its END before the lines a later element held), so the carry-over says so: the tensor it
releases is a ``CoveredTensor``, whose covered elements the classifier covers with
``secret``. Only pieces that may spell ``PRIVATE KEY`` (escapes, text to fold) are read for
markers, and only while ``secret`` scans. A BEGIN marker no element's text holds whole but
the request's pieces show read in the order they arrived (``-----BEGIN RSA PRI`` in one
element, ``VATE KEY-----`` in another, of this reply or a later one) opens a block too, that
covers every piece of its reply and each later one until its END marker arrives
(``_split_arrivals``).

An output with text held that a later reply carries in another form (another datatype, or
not as text) fails the reply closed (``STREAM_OUTPUT_CHANGED``): the held text cannot be
joined to it, and dropping it would lose what the upstream sent without a record.

Released text is classified and decided like any output, so a value split across replies
reaches the classifier whole, and callers allowed to read the text around it still do.
"""

from __future__ import annotations

import array
import re
from collections.abc import Container, Hashable, Sequence
from dataclasses import dataclass, field

from labelgate.classify import credentials, jsonpaths, key_blocks, numbers, patterns, reasons
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import CONTROLS, may_hide
from labelgate.errors import ResourceExhausted, UpstreamError
from labelgate.oip.tensor import Tensor

STREAM_HELD_TOO_LARGE = reasons.STREAM_HELD_TOO_LARGE
STREAM_OUTPUT_CHANGED = reasons.STREAM_OUTPUT_CHANGED
STREAM_VALUE_SPLIT = reasons.STREAM_VALUE_SPLIT
# The 8-bit datatypes whose bytes are read as one text (``numbers.TEXT_DATATYPES``).
_TEXT_BYTES = frozenset({"UINT8", "INT8"})
# The numbers wider than 8 bits whose raw bytes are read as text too (``numbers.packed_detections``).
_PACKED = numbers.PACKED_DATATYPES
# Whether such bytes end in text (``_ends_in_text``) is read off their last ``_TEXT_END``
# bytes, trailing NULs aside (padding to whole elements) and control characters but NUL
# dropped (as the classifier drops them; NULs are what binary data and UTF-16 hold), of which
# at least ``_TEXT_LEAST`` must be there: fewer tell nothing (a quarter of single INT32 token
# ids, one FP32 score in twenty, read as ASCII). Or off the run of ``_VALUE_BYTES`` they end
# in, every control character dropped (``_value_run``): from ``_VALUE_RUN`` bytes on it is
# text too. Measured over streams of 20,000 replies of 1 to 64 elements each, and of one
# (normal, uniform, softmax, log-probability floats, embeddings, small whole numbers and masks
# as FP16, BF16, FP32, FP64; token ids as INT16..UINT64): see ``_VALUE_RUN``.
_TEXT_END = 32
_TEXT_LEAST = 16
# Control characters but NUL, dropped before asking whether bytes end in text.
_CONTROLS_BUT_NUL = CONTROLS.replace(b"\0", b"")
# What text does not end in: control characters but tab, newline and return (binary data
# holds them; so does text with NULs between its characters, UTF-16), and bytes that are not
# UTF-8 (``_ends_in_text``).
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What a built-in detector's match is made of up to where it is found (a PEM block from its
# BEGIN marker): ASCII letters and digits, and the separators values hold (cards, SSNs,
# phones, IBANs, IPv4 addresses, emails, tokens, JWTs, PEM markers; not an IPv6 address's
# colon, which float exponents are made of). A value that runs on from one reply's bytes into
# the next reply's starts in the run of these bytes they end in. With custom patterns, any
# printable ASCII (``_PRINTABLE``). A run without a letter or a digit is no text however long
# (float noise: ``@ @@``): a value's start in it is a PEM marker's dashes or an email's
# ``._%+-``, and it is read with the next bytes as a shorter run is.
_VALUE_BYTES = bytes(sorted(patterns._ALNUM)) + b" \t-.,'_+()@%="
_ALNUM = re.compile(rb"[0-9A-Za-z]")
_PRINTABLE = bytes(sorted(set(range(0x20, 0x7F)) | set(b"\t")))
# Bytes that end in a run of ``_VALUE_BYTES`` this long, holding a letter or a digit, are text
# (held and cut as text is): at most ``_VALUE_RUN - 1`` bytes of a value's start go out in a
# reply sent on as it came, and the stream ends (``STREAM_VALUE_SPLIT``) when the next bytes
# complete it (``CarryOver._follow_join``). Measured (streams above, one reply in how many held
# then, their values unchanged, until the next reply that does not end so): normal,
# log-probability and embedding floats 1 in 4,000 or fewer (FP64 none); uniform FP16 1 in
# 200-250, BF16 1 in 1,000; softmax FP16 1 in 400 to 3,000; INT16/UINT16 token ids 1 in 200,
# INT32..UINT64 ids 1 in 1,000 to 6,000; masks none; small whole numbers as FP16 1 in 6 (their
# bytes are capitals), as BF16 or FP32 1 in 100, as FP64 none. A constant FP16 0.5 ("8" bytes)
# always does: held to the request's final reply (or past ``hold_limit``). No ordinary stream
# was refused (2.4 million replies).
_VALUE_RUN = 8
# What a number written as a float is made of (``patterns._float_cards``).
_NUMBER_BYTES = b"0123456789.eE+-"
_DIGIT = re.compile(rb"[0-9]")
# Byte -> its kind, for finding a run with memchr: a digit, another number byte, or other.
_OTHER, _DIGIT_KIND = b"\x00", b"\x02"
_BYTE_KINDS = bytes(2 if 0x30 <= byte <= 0x39 else 1 if byte in _NUMBER_BYTES else 0 for byte in range(256))
# What an email is made of (``patterns._emails``: local part, "@", domain), and byte -> its
# kind: "@", another email byte, or other.
_EMAIL_BYTES = frozenset(patterns._EMAIL_LOCAL_CHARS + b"@")
_AT_KIND = b"\x02"
_EMAIL_KINDS = bytes(2 if byte == 0x40 else 1 if byte in _EMAIL_BYTES else 0 for byte in range(256))
# What a token or a JWT is made of, and byte -> whether it is one of those.
_SECRET_BYTES = frozenset(credentials.RUN_BYTES)
_SECRET_KINDS = bytes(1 if byte in _SECRET_BYTES else 0 for byte in range(256))
_LONGEST_PREFIX = max(len(prefix) for prefix in credentials.PREFIXES)
_EMAIL_RUN = bytes(sorted(_EMAIL_BYTES))
# A piece may complete a PRIVATE KEY marker begun this many bytes before its start (the
# marker's words, dashes and a PGP "BLOCK"): only then is an open block looked for again.
_MARKER_REACH = 64
_KEY_WORDS = b"PRIVATE KEY"
# How many held bytes before a piece are read with it for a PEM marker that may have begun in
# them: a marker's bytes, each written as a JSON escape (six bytes), twice over.
_KEY_REACH = 1024
# An element of an output (its name and index), whose text a request's replies carry.
_Element = tuple[str, int]
# The block of a BEGIN marker that no element's text holds whole, split across the pieces of
# a request's text in the order they arrived (``_split_arrivals``): no element opened it.
_ARRIVALS: _Element = ("", -1)
# A JSON text's structure, for following its nesting without parsing it (``_ObjectScan``).
_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.)*', re.DOTALL)
_STRUCTURE = re.compile(rb'"|[{\[]+|[}\]]+')
_JSON_SPACE = b" \t\n\r"


class _ObjectScan:
    """Where a text that opens like a JSON object stands: inside a string or not, and how
    deep. Fed piece by piece (a regular expression a string or a run of brackets, never a
    Python step per byte of a string), it tells when the outermost object closes. Only then
    can the text be a whole object, and if it is not then, no later text is: a parser reads
    every valid text's structure as this does, so the close is at the same place in it."""

    __slots__ = ("depth", "escaped", "in_string")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def closes(self, data: bytes) -> bool:
        """Take the next bytes of the text; whether the outermost object closed in them."""
        at, size = 0, len(data)
        while at < size:
            if self.in_string:
                if self.escaped:
                    self.escaped, at = False, at + 1
                    continue
                body = _STRING_BODY.match(data, at)
                at = body.end() if body is not None else at
                if at < size:  # a closing quote, or a backslash that ends the data
                    self.in_string = data[at] != 0x22
                    self.escaped = self.in_string
                    at += 1
                continue
            found = _STRUCTURE.search(data, at)
            if found is None:
                return False
            at, token = found.end(), found[0]
            if token == b'"':
                self.in_string = True
            elif token[0] in b"{[":
                self.depth += len(token)
            else:
                self.depth -= len(token)
                if self.depth <= 0:
                    return True
        return False


# A text held on whose first bytes are JSON space: whether it opens like an object is not known.
_UNSEEN = "unseen"


class _Reader:
    """What ``_carry`` reads of an element's held text, followed as pieces are appended to it
    (``_held_on``), each piece read once: whether the text is one run a cut never falls in
    (``CarryOver._run_of``), the END marker a PEM block it leaves open awaits
    (``credentials.PemScan``), and where it stands as a JSON object (``_ObjectScan``; an
    object's close is the one place it may become one). Read whole from the held text once,
    the first time it is held on; ``_carry``, which cuts the text again, drops it."""

    __slots__ = ("at", "digit", "email", "end", "number", "object", "pem", "prefix", "token")

    def __init__(self, held: bytes | bytearray) -> None:
        self.number = self.email = self.token = True  # made of such bytes only
        self.digit = self.at = self.prefix = False  # holds a digit, an "@", a secret's prefix
        self.end = b""  # its last bytes, where a secret's prefix may have begun
        self.object: _ObjectScan | str | None = _UNSEEN
        self.pem = credentials.PemScan()
        self.add(bytes(held))

    def add(self, piece: bytes) -> bool:
        """Take the next piece; whether the text's outermost object closed in it."""
        if self.number and piece.lstrip(_NUMBER_BYTES):
            self.number = False
        self.digit = self.digit or _DIGIT.search(piece) is not None
        if self.email and piece.lstrip(_EMAIL_RUN):
            self.email = False
        self.at = self.at or b"@" in piece
        if self.token and piece.lstrip(credentials.RUN_BYTES):
            self.token = False
        if self.token and not self.prefix:
            joined = self.end + piece
            self.prefix = _holds_prefix(joined)
            self.end = joined[-(_LONGEST_PREFIX - 1) :]
        scan = self.object
        if scan is _UNSEEN:
            if _only_space(piece):
                return False
            # As ``jsonpaths.opens_object`` reads the text: its first byte past JSON space.
            scan = _ObjectScan() if piece.lstrip(_JSON_SPACE)[:1] == b"{" else None
        if not isinstance(scan, _ObjectScan):
            self.object = None
            return False
        closed = scan.closes(piece)
        self.object = None if closed else scan  # one object now, or never (``_ObjectScan``)
        return closed

    def run(self, secrets: bool) -> bytes:
        """``CarryOver._run_of`` of the text."""
        if self.number and self.digit:
            return _NUMBER_BYTES
        if self.email and self.at:
            return _EMAIL_RUN
        if secrets and self.token and self.prefix:
            return credentials.RUN_BYTES
        return b""


@dataclass
class _Held:
    shape: list[int]
    datatype: str  # the form the text was held in: BYTES, or an 8-bit datatype
    tails: dict[int, bytearray] = field(default_factory=dict)  # element index -> held bytes
    # Elements whose held bytes are one number-like run, or one run of token characters
    # holding a secret's prefix, and the bytes of such a run: more of them extend it, and
    # are held on without reading the run again (a run of megabytes, read on every reply,
    # costs quadratic time).
    runs: dict[int, bytes] = field(default_factory=dict)
    # Elements whose held bytes end in an open PEM block, and the END marker it awaits.
    keys: dict[int, bytes] = field(default_factory=dict)
    # Elements held whole until the final reply (a raw scan cannot judge them, and what
    # makes it so stays in them), and how a text that opens like a JSON object stands
    # (None: it does not, or can no longer be one object).
    whole: dict[int, _ObjectScan | None] = field(default_factory=dict)
    # Elements whose held text is held on as pieces come (``_held_on``), and what ``_carry``
    # would read of it, followed piece by piece (``_Reader``).
    readers: dict[int, _Reader] = field(default_factory=dict)


class CoveredTensor(Tensor):
    """A released tensor some of whose elements a PEM block opened before them runs into: a
    block an earlier reply of the request opened, or another element or output of the same
    reply, that their text does not show (its BEGIN marker was released before, or the
    reply's elements put it after them). ``key_cover``: element index -> how many bytes of
    its text from the start the block covers. The classifier covers them with ``secret``
    (``classifier._covered_elements``)."""

    __slots__ = ("key_cover",)

    def __init__(self, tensor: Tensor, key_cover: dict[int, int]) -> None:
        for name in Tensor.__slots__:
            setattr(self, name, getattr(tensor, name))
        self.key_cover = key_cover


@dataclass
class _Keys:
    """The PEM blocks of one request's text in the order it arrived (``CarryOver._keys``)."""

    # Element -> the END markers the blocks its text (released and held) leaves open await.
    open: dict[_Element, frozenset[bytes]] = field(default_factory=dict)
    # Elements whose open block's BEGIN marker was released: their later text runs inside it
    # and no longer shows it.
    released: set[_Element] = field(default_factory=set)
    # Element -> how many of its held bytes, from the start, a block runs over.
    inside: dict[_Element, int] = field(default_factory=dict)


@dataclass
class _Piece:
    """What a reply brought for one element, and what of its text was released."""

    position: int  # the output's position in the reply
    element: _Element
    piece: bytes
    before: bytes  # up to ``_KEY_REACH`` bytes held before the piece
    held: int  # bytes held before the piece
    released: int = 0
    kept: int = 0  # bytes held after the reply


@dataclass
class _PackedEnd:
    """How an output of wider numbers ended, across a request's replies (``_packed_text``)."""

    # Its last bytes (``_TEXT_END``), trailing NULs aside: with control characters but NUL
    # dropped (whether they end in text), and with all dropped, as the classifier reads binary
    # (the run of ``_VALUE_BYTES`` they end in).
    text: bytes = b""
    shown: bytes = b""
    # A reply sent on with such a run shorter than ``_VALUE_RUN`` at its end, the join: that
    # run and what came after it (every control character dropped), read until no value begun
    # in the run can still run on (``_follow_join``); ``run``, the run's length.
    join: bytes | None = None
    run: int = 0


class CarryOver:
    """Held-back text of one stream, keyed by request."""

    def __init__(self, detectors: DetectorSet, window: int, hold_limit: int = 16 << 20) -> None:
        self.detectors = detectors
        self.window = window
        self.hold_limit = hold_limit
        longest = detectors.longest_custom_match()
        # Cutting needs every match to fit the window (see the module docstring).
        self._cuts = longest is not None and longest <= window
        self._secrets = credentials.NAME in detectors.names
        self._held: dict[Hashable, dict[str, _Held]] = {}
        self._held_bytes = 0  # across the stream's requests and elements
        # Per request whose text holds a PEM block (``_cover``); the pieces of the reply
        # being released, when ``secret`` scans.
        self._keys: dict[Hashable, _Keys] = {}
        self._pieces: list[_Piece] | None = None
        # Per request, the end of its text in the order it arrived that may be the start of
        # a PEM marker (from a dash, at most ``_MARKER_REACH`` bytes): ``_split_arrivals``.
        self._arrived: dict[Hashable, bytes] = {}
        # Per request and output of numbers wider than 8 bits, how its bytes ended so far
        # (``_packed_text``), and the bytes a value may be made of (``_VALUE_BYTES``).
        self._ends: dict[Hashable, dict[str, _PackedEnd]] = {}
        self._value_bytes = _VALUE_BYTES if longest == 0 else _PRINTABLE

    def release(self, request: Hashable, tensors: Sequence[Tensor], final: bool) -> list[Tensor]:
        """What of ``tensors`` can be classified and sent now; holds back the rest.

        With ``final`` everything held for ``request`` is released, including outputs this
        reply does not carry (they come back as BYTES tensors of the shape they were first
        held with, or as 8-bit tensors of the text held).
        """
        held = self._held.pop(request, {}) if final else self._held.setdefault(request, {})
        ends = self._ends.pop(request, {}) if final else self._ends.setdefault(request, {})
        self._pieces = [] if self._secrets else None
        try:
            released = [
                self._release_tensor(tensor, held, final, position, ends)
                for position, tensor in enumerate(tensors)
            ]
            pieces = self._pieces
        finally:
            self._pieces = None
        flushed: list[Tensor] = []
        if final:
            carried = {tensor.name for tensor in tensors}
            flushed = [_flushed(name, rest) for name, rest in held.items() if name not in carried]
            # What is left of this request's holdings is released above or dropped.
            self._held_bytes -= sum(len(tail) for rest in held.values() for tail in rest.tails.values())
        if pieces is not None:
            # Numbers sent on as they came, whose bytes a client may read as text.
            passed = [
                position
                for position, (tensor, out) in enumerate(zip(tensors, released, strict=True))
                if out is tensor and (tensor.datatype in _TEXT_BYTES or tensor.datatype in _PACKED)
            ]
            released = self._cover(request, released, pieces, flushed, final, passed)
        return released + flushed

    def flush(self) -> list[tuple[Hashable, list[Tensor]]]:
        """Everything still held, per request (the stream ended before their final replies)."""
        pending, self._held = self._held, {}
        keys, self._keys = self._keys, {}
        self._arrived = {}
        self._ends = {}
        self._held_bytes = 0
        return [
            (
                request,
                _covered_flush(
                    [_flushed(name, rest) for name, rest in outputs.items() if rest.tails], keys.get(request)
                ),
            )
            for request, outputs in pending.items()
            if any(rest.tails for rest in outputs.values())
        ]

    def _cover(
        self,
        request: Hashable,
        released: list[Tensor],
        pieces: list[_Piece],
        flushed: list[Tensor],
        final: bool,
        passed: Sequence[int] = (),
    ) -> list[Tensor]:
        """``released`` with the elements PEM blocks run into marked (``CoveredTensor``), and
        ``flushed`` so in place; the request's blocks brought up to date with this reply.
        ``passed``: the positions of numbers sent on as they came (not carried as text: an
        image, floats), covered whole while a block is open in the reply (their bytes may
        hold its lines; they are not read for its END marker).

        A block is followed in the order the text arrived: one an element's text opens (as it
        is or in a form the scan reads, ``key_blocks.awaited_after``) runs until a piece of
        that element brings its END marker. While any is open, each piece any element of any
        output brings in the reply is inside it (a caller may print the stream as it arrives,
        or each reply's outputs in any order), but for the text of the element that opened it
        while that text is held with its BEGIN marker (its own scan covers it); and so are
        the held bytes such pieces join, whenever they are released. Nothing runs unless a
        piece may spell ``PRIVATE KEY`` (escapes, text to fold) or a block is open.

        A BEGIN marker no element's text holds whole, split across the pieces in the order
        they arrived (over elements, outputs and replies: ``_split_arrivals``), opens a block
        no element does (``_ARRIVALS``): every piece of the reply that completes it is inside
        it, and every later one until a piece brings its END marker."""
        keys = self._keys.get(request)
        split, left = self._split_arrivals(request, pieces, final, keys)
        asked = [entry for entry in pieces if _may_open(entry.before, entry.piece)]
        if keys is None and not asked and not split:
            return released
        keys = keys if keys is not None else _Keys()
        before = {element for element, awaited in keys.open.items() if awaited}
        released_before = set(keys.released)
        awaited_before = frozenset().union(*(keys.open[element] for element in before))
        if split:
            # Every piece of the reply is inside, as in a block open before it (fail closed:
            # where in the reply's order it opened is the caller's reading); open after it
            # until its END marker arrives.
            keys.open[_ARRIVALS] = left
            before.add(_ARRIVALS)
            awaited_before |= split
        for entry in pieces:
            element = entry.element
            awaited = keys.open.get(element, frozenset())
            if awaited and entry.piece:
                awaited = key_blocks.run_on(entry.before + entry.piece, awaited)[1]
            elif not awaited and _may_open(entry.before, entry.piece):
                awaited = key_blocks.awaited_after(entry.before + entry.piece)
            if awaited:
                keys.open[element] = awaited
                if not entry.kept:
                    keys.released.add(element)  # all of its text left: what follows is inside
            else:
                keys.open.pop(element, None)
                keys.released.discard(element)
        opened = before | {element for element, awaited in keys.open.items() if awaited}
        awaited_any = awaited_before.union(*(keys.open.get(element, frozenset()) for element in opened))
        covers: dict[int, dict[int, int]] = {}
        if opened:
            for position in passed:
                if released[position].size:
                    covers[position] = {0: released[position].size}  # one text, covered whole
        for entry in pieces:
            element = entry.element
            inside = keys.inside.pop(element, 0)
            if entry.piece and (bool(opened - {element}) or element in released_before):
                # Through the last END marker it shows as written, else all of it.
                end = key_blocks.run_on(entry.piece, awaited_any)[0] if awaited_any else len(entry.piece)
                inside = entry.held + end
            if inside and entry.released:
                covers.setdefault(entry.position, {})[element[1]] = min(inside, entry.released)
            if inside > entry.released and entry.kept:
                keys.inside[element] = min(inside - entry.released, entry.kept)
        keys.open = {element: awaited for element, awaited in keys.open.items() if awaited}
        if final:
            self._keys.pop(request, None)
            if flushed:
                flushed[:] = _covered_flush(flushed, keys)
        elif keys.open or keys.inside:
            self._keys[request] = keys
        else:
            self._keys.pop(request, None)
        if not covers:
            return released
        return [
            CoveredTensor(tensor, covers[position]) if position in covers else tensor
            for position, tensor in enumerate(released)
        ]

    def _split_arrivals(
        self, request: Hashable, pieces: list[_Piece], final: bool, keys: _Keys | None
    ) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """The blocks of BEGIN markers that the request's text shows only read in the order
        it arrived (the held start of such a marker, then this reply's pieces in order:
        ``key_blocks.split_markers`` over them), which no element's text holds whole
        (``-----BEGIN RSA PRI`` in one element, ``VATE KEY-----`` in another, in this reply
        or a later one): the END markers awaited by those open during this reply (opened in
        it, or before it: ``_ARRIVALS``), and by those still open after it (their END marker
        not arrived as written). The request's arrival end is kept for the next reply. One
        join of the reply's pieces and C-level searches: most replies hold no ``PRIVATE KEY``."""
        start = self._arrived.pop(request, b"")
        texts = [start, *(entry.piece for entry in pieces if entry.piece)]
        joined = b"".join(texts)
        if not final and b"-" in joined[-_MARKER_REACH:]:
            end = joined[-_MARKER_REACH:]
            self._arrived[request] = end[end.index(b"-") :]
        earlier = keys.open.get(_ARRIVALS, frozenset()) if keys is not None else frozenset()
        # An END marker ending past the bytes an earlier reply brought (those it read).
        seen = len(start)
        left = {closing for closing in earlier if joined.find(closing, max(0, seen - len(closing) + 1)) < 0}
        opened = set(earlier)
        for _, _, end_at, closing in key_blocks.split_markers(texts, joined):
            opened.add(closing)
            if joined.find(closing, end_at) < 0:
                left.add(closing)
        return frozenset(opened), frozenset(left)

    def _release_tensor(
        self, tensor: Tensor, held: dict[str, _Held], final: bool, position: int, ends: dict[str, _PackedEnd]
    ) -> Tensor:
        form, text = _text_form(tensor)
        state = held.get(tensor.name)
        release_all = final
        if form is None and tensor.datatype in _PACKED:
            holding = state is not None and bool(state.tails) and state.datatype == tensor.datatype
            packed = self._packed_text(tensor, ends, holding, position)
            if packed is not None:
                (text, in_text), form = packed, tensor.datatype
                # Held text whose bytes no longer end in text goes now, whole with this piece.
                release_all = final or not in_text
        if state is not None and state.tails and state.datatype != form:
            # Held text cannot be joined to this form, and dropping it loses it unrecorded.
            # The position, not the name: the message may reach the caller.
            raise UpstreamError(
                STREAM_OUTPUT_CHANGED,
                f"a streamed reply carries its output {position} in another form (datatype) "
                "than the text held back for it from an earlier reply",
            )
        if form is None:
            return tensor
        if text is not None:  # an 8-bit text, or wider numbers' bytes that end in text
            unit = numbers.packed_item_size(form) if form in _PACKED else 1
            released = self._noted(tensor, form, held, 0, text, release_all, position, unit=unit)
            return _text_tensor(tensor.name, form, released, tensor.shape)
        values = []
        for index, value in enumerate(tensor.values):
            # A key block open in an earlier element runs on into the later ones (one line an
            # element, ``credentials``): they are held whole while it is open, since a cut of
            # their own would release key lines scanned without their BEGIN marker.
            state = held.get(tensor.name)
            key_open = state is not None and any(opened < index for opened in state.keys)
            values.append(self._noted(tensor, form, held, index, bytes(value), final, position, key_open))
        # A final reply whose tensor shrank leaves tails with no element to carry them: they
        # are dropped, never attached to another element.
        return tensor.with_values(values)

    def _packed_text(
        self, tensor: Tensor, ends: dict[str, _PackedEnd], holding: bool, position: int
    ) -> tuple[bytes, bool] | None:
        """For numbers wider than 8 bits of a text shape (``is_text_shape``): their raw bytes,
        as a client reads them back with ``tobytes()``, and whether those the output brought
        so far end in text, when they do or ``holding`` (text is held for the output); None
        otherwise: sent on as they came (floats, ids, values that are no numbers). An empty
        output leaves what is held as it was (the final reply releases it).

        They end in text when their last bytes, control characters but NUL dropped, are text
        (``_ends_in_text``), or when those bytes with every control character dropped end in
        a run of ``_VALUE_BYTES`` at least ``_VALUE_RUN`` long (``_value_run``). ``ends`` keeps
        both for the output's next reply, so text a few bytes a reply is read as text from its
        ``_TEXT_LEAST``-th byte on (from its ``_VALUE_RUN``-th in such a run). Bytes sent on
        with a shorter run at their end leave a join the next replies' first bytes are read
        with (``_follow_join``). Only the output's last elements, and while a join is open its
        first ones, are read to tell (``_packed_end``, ``_packed_head``): the usual floats cost
        what a small output does."""
        if not is_text_shape(tensor.shape):
            return None
        if not tensor.size:
            return (b"", True) if holding else None
        read = _packed_end(tensor)
        if read is None:
            return None
        end = ends.setdefault(tensor.name, _PackedEnd())
        if end.join is not None:
            self._follow_join(tensor, end, position)
        end.text = (end.text + read[0])[-_TEXT_END:]
        end.shown = (end.shown + read[1])[-_TEXT_END:]
        run = _value_run(end.shown, self._value_bytes)
        in_text = _ends_in_text(end.text) or (
            run >= _VALUE_RUN and _ALNUM.search(end.shown, len(end.shown) - run) is not None
        )
        if not in_text:
            # Sent on (or released whole): a value may run on from the run it ends in. (A join
            # still open is part of that run: every byte since it was a value's.)
            end.join, end.run = (end.shown[-run:], run) if run else (None, 0)
        if not (in_text or holding):
            return None
        data = numbers.packed_bytes(tensor)
        return None if data is None else (data, in_text)

    def _follow_join(self, tensor: Tensor, end: _PackedEnd, position: int) -> None:
        """Read the first bytes of ``tensor`` (the output's next reply), every control character
        dropped, after the run of ``_VALUE_BYTES`` an earlier reply was sent on with
        (``end.join``): when a detection, as the classifier reads such bytes (``ip_address`` and
        ``email`` from 16 bytes unless the bytes read as text), starts in that run and ends
        past it, a value was split across the replies and its start already went out: the
        stream ends (``STREAM_VALUE_SPLIT``). The join is read on while every byte after the
        run is a value's, up to ``window`` of them (the longest match), then closed; a run no
        cut may fall in (digits, an email's domain, a token) still going on past them ends the
        stream too. Reads the output's first elements only: a byte no value holds ends it."""
        joined, run = end.join or b"", end.run
        room = self.window + 1 - (len(joined) - run)  # one past the window: what ends a value
        count = max(1, 4 * _TEXT_END // numbers.packed_item_size(tensor.datatype))
        while True:
            raw = _packed_head(tensor, count)
            if raw is None:
                return  # values that are no numbers: the classifier covers them whole
            shown = raw.translate(None, CONTROLS)
            values = len(shown) - len(shown.lstrip(self._value_bytes))
            if values < len(shown) or len(shown) >= room or count >= tensor.size:
                break
            count *= 4
        joined += shown[: min(values + 1, room)]
        hits = self.detectors.scan(joined)
        if not numbers._reads_as_text(raw):
            hits = numbers._kept(hits)  # as binary is read: noise makes short IPs and emails
        for hit in hits:
            if hit.start < run < hit.end:
                raise UpstreamError(
                    STREAM_VALUE_SPLIT,
                    f"the upstream split a value its detectors call {hit.detector} across the replies "
                    f"of a stream (output {position}, in its numbers' bytes); each reply is masked on "
                    "its own, so it is not sent",
                )
        if values < min(len(shown), room):
            end.join = None  # a byte no value holds: what began in the run ended before it
        elif len(joined) - run > self.window:
            end.join = None  # longer than any match, but for a run no cut falls in:
            start = _run_start(joined, run, self._secrets)
            if start < run and self._run_of(joined[start:]):
                raise UpstreamError(
                    STREAM_VALUE_SPLIT,
                    f"the upstream sent a run of digits, an email or a token across the replies of a "
                    f"stream (output {position}, in its numbers' bytes) past {self.window} bytes; each "
                    "reply is masked on its own, so it is not sent",
                )
        else:
            end.join = joined

    def _noted(
        self,
        tensor: Tensor,
        form: str,
        held: dict[str, _Held],
        index: int,
        piece: bytes,
        final: bool,
        position: int,
        hold_whole: bool = False,
        unit: int = 1,
    ) -> bytes:
        """``_carry``, noting for ``_cover`` what the element held, brought and released."""
        pieces = self._pieces
        if pieces is None:
            return self._carry(tensor, form, held, index, piece, final, hold_whole, unit)
        state = held.get(tensor.name)
        tail = state.tails.get(index, b"") if state is not None else b""
        entry = _Piece(position, (tensor.name, index), piece, bytes(tail[-_KEY_REACH:]), len(tail))
        released = self._carry(tensor, form, held, index, piece, final, hold_whole, unit)
        entry.released = len(released)
        entry.kept = entry.held + len(piece) - entry.released
        pieces.append(entry)
        return released

    def _carry(
        self,
        tensor: Tensor,
        form: str,
        held: dict[str, _Held],
        index: int,
        piece: bytes,
        final: bool,
        hold_whole: bool = False,
        unit: int = 1,
    ) -> bytes:
        """What to release now of element ``index`` of ``tensor``'s text: what was held of
        it, then ``piece``; holds back the rest (all of it with ``hold_whole``). ``unit``: the
        bytes of one of the tensor's elements (wider numbers' bytes are cut between them)."""
        state = held.get(tensor.name)
        if state is not None and index in state.tails and not final:
            kept = self._held_on(state, index, piece, tensor.shape, hold_whole)
            if kept is not None:
                return kept
        tail = state.tails.pop(index, b"") if state else b""
        members = state.runs.pop(index, None) if state else None
        closing = state.keys.pop(index, None) if state else None
        was_whole = state is not None and index in state.whole
        scan = state.whole.pop(index, None) if state is not None else None
        if state is not None:
            state.readers.pop(index, None)
        self._held_bytes -= len(tail)
        text = b"".join((tail, piece))
        # Parsed only when a "}" arrived: held JSON is not parsed again on every reply.
        # (Text held whole was followed piece by piece, ``_held_on``, this piece too.)
        completes = not was_whole and b"}" in piece and jsonpaths.parse_object(text) is not None
        if final or (not text) or completes:
            # A whole JSON object is a message of its own: halves would be neither JSON
            # nor text the catalog can label.
            return text
        # A run held whole and extended by its own bytes only is still one run: held whole.
        extends_run = members is not None and not piece.lstrip(members)
        # So is a key block still open: only its END marker, maybe begun in the held bytes, ends it.
        still_open = closing is not None and closing not in text[max(0, len(tail) - len(closing) + 1) :]
        held_on = extends_run or still_open or hold_whole
        cuttable = not held_on and not was_whole and self._cuttable(text)
        cut = (self._cut(text) if unit == 1 else self._element_cut(text, unit)) if cuttable else 0
        if cut < len(text):
            self._held_bytes += len(text) - cut
            if self._held_bytes > self.hold_limit:
                raise ResourceExhausted(
                    STREAM_HELD_TOO_LARGE,
                    f"a stream holds more than {self.hold_limit} bytes that cannot be "
                    "released before their requests' final replies",
                )
            if state is None or not state.tails:  # a holding takes the form of its reply
                state = held[tensor.name] = _Held(list(tensor.shape), form)
            held_text = text[cut:]
            state.tails[index] = bytearray(held_text)
            if was_whole:
                state.whole[index] = scan
            elif not (held_on or cuttable or _only_space(text)):
                # Held whole from now on (cut is 0): later pieces are not read with it.
                state.whole[index] = _object_scan(text)
            if members is not None and extends_run:
                state.runs[index] = members
            elif self._cuts and index not in state.whole:  # text held whole is no run
                run = self._run_of(held_text) or (self._run_after(text, cut) if cuttable else b"")
                if run:
                    state.runs[index] = run
            if closing is not None and still_open:
                state.keys[index] = closing
            elif self._cuts and self._secrets:
                awaited = credentials.open_pem(held_text)
                if awaited is not None:
                    state.keys[index] = awaited
        return text[:cut]

    def _held_on(
        self, state: _Held, index: int, piece: bytes, shape: Sequence[int], hold_whole: bool
    ) -> bytes | None:
        """What to release now of element ``index`` when the text held for it is held on
        (the module docstring: a run ``piece`` extends, a key block ``piece`` does not close,
        text held whole, or text ``hold_whole`` holds while an earlier element's block is
        open) with ``piece`` appended, reading only ``piece`` and a few bytes before it:
        nothing, or all of it once it is a whole JSON object. What ``_carry`` would find of
        the longer text (a run, an open block, a closed object) is followed piece by piece
        (``_Reader``). None when the text is cut again (``_carry``)."""
        tail = state.tails[index]
        members = state.runs.get(index)
        closing = state.keys.get(index)
        whole = index in state.whole
        extends_run = not whole and members is not None and not piece.lstrip(members)
        still_open = closing is not None and closing not in _joined_end(tail, piece, len(closing) - 1)
        if not (whole or extends_run or still_open or hold_whole):
            return None
        # Text held whole needs one only for its blocks; a run extended, none (yet).
        keys = self._cuts and self._secrets
        reader = state.readers.get(index)
        if reader is None and not extends_run and (keys or not whole):
            reader = state.readers[index] = _Reader(tail)
        closed = reader.add(piece) if reader is not None else False
        if whole:
            scan = state.whole[index]
            closed = scan is not None and scan.closes(piece)
            if closed:
                state.whole[index] = None  # one object now, or never (``_ObjectScan``)
        if closed and (whole or b"}" in piece):  # as ``_carry`` asks (``completes``)
            text = b"".join((tail, piece))
            if jsonpaths.parse_object(text) is not None:
                self._drop(state, index)
                return text
        self._hold(len(piece))
        tail += piece
        if len(state.tails) == 1:  # a holding takes the shape of its latest reply (``_carry``)
            state.shape = list(shape)
        if extends_run or reader is None:
            return b""  # one run still: no marker (a run holds no space), no other run
        if self._cuts and not whole:
            run = reader.run(self._secrets)
            if run:
                state.runs[index] = run
            else:
                state.runs.pop(index, None)
        if keys and not still_open:  # (still open: the block it awaits, as before)
            awaited = reader.pem.feed(tail)
            if awaited is not None:
                state.keys[index] = awaited
            else:
                state.keys.pop(index, None)
        return b""

    def _hold(self, size: int) -> None:
        self._held_bytes += size
        if self._held_bytes > self.hold_limit:
            raise ResourceExhausted(
                STREAM_HELD_TOO_LARGE,
                f"a stream holds more than {self.hold_limit} bytes that cannot be "
                "released before their requests' final replies",
            )

    def _drop(self, state: _Held, index: int) -> None:
        """Element ``index`` holds nothing any more."""
        self._held_bytes -= len(state.tails.pop(index))
        for kept in (state.runs, state.keys, state.whole, state.readers):
            kept.pop(index, None)

    def run_members(self, rest: bytes) -> bytes:
        """For text whose cut falls at the start of ``rest`` (routed streams, ``split_values``):
        the bytes that, appended, cannot move that cut forward, since the cut of the longer
        text falls in ``rest``'s run and moves back to its start or before: ``rest`` is one
        number-like run with a digit, one email run with an ``@``, or (with the secret
        detector) one token run with a secret's prefix in its first bytes. Else nothing."""
        if not self._cuts or not rest:
            return b""
        if not rest.lstrip(_NUMBER_BYTES) and _DIGIT.search(rest):
            return _NUMBER_BYTES
        if not rest.lstrip(_EMAIL_RUN) and b"@" in rest:
            return _EMAIL_RUN
        if self._secrets and not rest.lstrip(credentials.RUN_BYTES) and _holds_prefix(rest[:_LONGEST_PREFIX]):
            return credentials.RUN_BYTES
        return b""

    def open_block(self, text: bytes, cut: int) -> bytes:
        """For text cut at ``cut`` (``cut_point``; routed streams, ``split_values``): the END
        marker of the PEM block it ends in when only that marker's arrival may move the cut
        (``keeps_cut``), else nothing. The block must open at or after the cut and run at
        least ``_MARKER_REACH`` bytes past the window's start: the window's cut then falls in
        the block, whose match runs to the end of the text, and moves back to its start and
        on from there. Appended bytes that do not close it leave that so, and leave what
        comes before its start as it was: no other match or run reaches from before a BEGIN
        marker past the space after its ``BEGIN`` (custom matches fit the window). So the
        cut stays where it is."""
        if not (self._cuts and self._secrets):
            return b""
        found = credentials.open_block(text)
        if found is None:
            return b""
        start, awaited = found
        if start < cut or len(text) - self.window < start + _MARKER_REACH:
            return b""
        return awaited

    def keeps_cut(self, end: bytes, piece: bytes, awaited: bytes) -> bool:
        """Whether ``piece``, appended to text whose last bytes are ``end`` and whose cut an
        open block awaiting ``awaited`` holds (``open_block``), leaves the cut where it is: it
        does not bring that marker (maybe begun in ``end``), nor make the text one a raw scan
        cannot judge (``_cuttable``: text to fold, escapes; their tests look a few bytes
        around a byte, which ``end`` holds). C-level searches over the piece and a few bytes."""
        joined = end[-max(_MARKER_REACH, len(awaited)) :] + piece
        return awaited not in joined and not may_hide(joined) and not jsonpaths.may_escape(joined)

    def _run_of(self, held: bytes) -> bytes:
        """The bytes that extend ``held`` when it is one run a cut never falls in (see the
        module docstring), else nothing."""
        if not held.lstrip(_NUMBER_BYTES) and _DIGIT.search(held):
            return _NUMBER_BYTES
        if not held.lstrip(_EMAIL_RUN) and b"@" in held:
            return _EMAIL_RUN
        if self._secrets and not held.lstrip(credentials.RUN_BYTES) and _holds_prefix(held):
            return credentials.RUN_BYTES
        return b""

    def _run_after(self, text: bytes, cut: int) -> bytes:
        """For ``text`` cut at ``cut`` (``_cut``, ``_element_cut``): the bytes that extend the run
        it ends in (``_run_of``) when the window's cut fell in that run and moved back to its
        start, and from there to ``cut`` (a match straddling the run's start, an element's
        start): text cut so (``the number is: 1`` and a run of ones, FP32) is cut there again
        while the run grows by its own bytes (the window's cut stays in it; nothing before its
        start changes), so it is held on as a run held whole is (``_held_on``). Else nothing."""
        start = _run_start(text, max(0, len(text) - self.window), self._secrets)
        if start <= cut:
            return b""
        members = self._run_of(text[start:])
        return members if members and text[start - 1] not in members else b""

    def cut_point(self, text: bytes) -> int | None:
        """Where ``text`` may be cut so that nothing after it can make a value of what is
        before it; None when a scan of its raw bytes may not see every match it holds (the
        routed streams' hold, ``split_values.py``)."""
        return self._cut(text) if self._cuttable(text) else None

    def _cuttable(self, text: bytes) -> bool:
        """Whether a scan of ``text``'s raw bytes sees every match it could hold."""
        if not self._cuts or may_hide(text) or jsonpaths.may_escape(text):
            return False
        return not jsonpaths.opens_json(text)

    def _cut(self, text: bytes) -> int:
        """Where to cut: ``window`` bytes before the end, moved back to the start of any
        match or run that straddles it (see the module docstring) and off the middle of a
        UTF-8 character."""
        cut = _run_start(text, max(0, len(text) - self.window), self._secrets)
        hits = self.detectors.scan(text) if cut else []  # nothing to release: no need
        return self._off_values(text, cut, hits)

    def _element_cut(self, text: bytes, unit: int) -> int:
        """``_cut`` for wider numbers' bytes (``unit`` of them an element): moved back
        between two elements, and off any match or run it then falls in, until it stays."""
        cut = self._cut(text)
        hits = self.detectors.scan(text) if cut % unit else []
        while cut % unit:
            cut = self._off_values(text, cut - cut % unit, hits)
        return cut

    def _off_values(self, text: bytes, cut: int, hits: Sequence[Detection]) -> int:
        """``cut``, moved back to the start of any of ``hits`` or run that straddles it, and
        off the middle of a UTF-8 character."""
        moved = -1
        while cut != moved:  # a match may start inside a run, a run inside a match
            moved = cut
            for hit in hits:
                if hit.start < cut < hit.end:
                    cut = hit.start
            cut = _run_start(text, cut, self._secrets)
        while 0 < cut < len(text) and text[cut] & 0xC0 == 0x80:
            cut -= 1
        return cut


def _may_open(before: bytes, piece: bytes) -> bool:
    """Whether ``piece``, after the held bytes ``before``, may complete a PEM marker: ``PRIVATE
    KEY`` as written near it, or escapes or text to fold that may spell one. C-level searches."""
    if not piece:
        return False
    return (
        _KEY_WORDS in before[-_MARKER_REACH:] + piece
        or jsonpaths.may_escape(piece)
        or may_hide(piece)
        or jsonpaths.may_escape(before)  # an escape the piece ends
    )


def _covered_flush(tensors: list[Tensor], keys: _Keys | None) -> list[Tensor]:
    """Tensors of held text released whole (``_flushed``), marked where a block runs over
    their held bytes (``_Keys.inside``)."""
    if keys is None or not keys.inside:
        return tensors
    marked: list[Tensor] = []
    for tensor in tensors:
        covers = {index: inside for (name, index), inside in keys.inside.items() if name == tensor.name}
        marked.append(CoveredTensor(tensor, covers) if covers else tensor)
    return marked


def _joined_end(tail: bytearray, piece: bytes, before: int) -> bytes:
    """``piece`` with up to ``before`` bytes held before it: where a marker may now end."""
    return b"".join((tail[max(0, len(tail) - before) :], piece)) if before > 0 else piece


def _only_space(text: bytes) -> bool:
    """Whether ``text`` is JSON space only: whether it opens like an object is not known yet."""
    return not text.strip(_JSON_SPACE)


def _object_scan(text: bytes) -> _ObjectScan | None:
    """How ``text``, held whole, stands as a JSON object (``_ObjectScan``): None when it does
    not open like one, or its outermost object closed already (its reply parsed it then)."""
    if not jsonpaths.opens_object(text):
        return None
    scan = _ObjectScan()
    return None if scan.closes(text) else scan


def _run_start(text: bytes, cut: int, secrets: bool) -> int:
    """``cut``, moved back to the start of the number-like run, email-like run or (with
    ``secrets``) secret run that straddles it (see the module docstring), until none does."""
    moved = -1
    while cut != moved:
        moved = cut
        cut = _email_start(text, _number_start(text, cut))
        if secrets:
            cut = _secret_start(text, cut)
    return cut


def _secret_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the run of token characters that straddles it when a secret's
    prefix begins in the run before ``cut`` (a token or JWT may go on past it)."""
    if not 0 < cut < len(text) or text[cut - 1] not in _SECRET_BYTES or text[cut] not in _SECRET_BYTES:
        return cut
    marked = text.translate(_SECRET_KINDS)
    start = marked.rfind(_OTHER, 0, cut) + 1
    end = marked.find(_OTHER, cut)
    end = len(text) if end < 0 else end
    return start if _holds_prefix(text[start : min(end, cut + _LONGEST_PREFIX - 1)]) else cut


def _holds_prefix(run: bytes) -> bool:
    """Whether a secret's prefix occurs in ``run`` (C-level searches, one per prefix)."""
    return any(prefix in run for prefix in credentials.PREFIXES)


def _email_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the run of email characters, holding an ``@``, that straddles it."""
    return _run_holding(text, cut, _EMAIL_BYTES, _EMAIL_KINDS, _AT_KIND)


def _number_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the number-like run (``_NUMBER_BYTES``, with a digit) that
    straddles it. (A line of dashes or "eee" is no number: the window's cut stands.)"""
    return _run_holding(text, cut, _NUMBER_BYTES, _BYTE_KINDS, _DIGIT_KIND)


def _run_holding(text: bytes, cut: int, members: Container[int], kinds: bytes, needed: bytes) -> int:
    """``cut``, or the start of the run of ``members`` that straddles it when the run holds a
    byte ``kinds`` maps to ``needed`` (other members map to 1, anything else to 0). C-level
    byte operations only: the run may be megabytes of digits."""
    if not 0 < cut < len(text) or text[cut - 1] not in members or text[cut] not in members:
        return cut
    marked = text.translate(kinds)
    start = marked.rfind(_OTHER, 0, cut) + 1
    end = marked.find(_OTHER, cut)
    return start if marked.find(needed, start, len(text) if end < 0 else end) >= 0 else cut


def _text_form(tensor: Tensor) -> tuple[str | None, bytes | None]:
    """How ``tensor`` is carried: ``("BYTES", None)`` element by element; an 8-bit datatype
    and the tensor's bytes as one text (``is_text_shape``); or ``(None, None)``, sent on as it
    came: other numbers, and 8-bit tensors with more than one dimension above 1 (images, not
    text) or with values out of their datatype's range (which encoding refuses)."""
    if tensor.datatype == "BYTES":
        return "BYTES", None
    if tensor.datatype not in _TEXT_BYTES or not is_text_shape(tensor.shape):
        return None, None
    raw = tensor.raw_form()
    if raw is not None and len(raw) == tensor.size:
        return tensor.datatype, raw
    try:  # C-level, and refusing values out of range rather than wrapping them
        text = (
            bytes(tensor.values) if tensor.datatype == "UINT8" else array.array("b", tensor.values).tobytes()
        )
    except (OverflowError, TypeError, ValueError):
        return None, None
    return tensor.datatype, text


def is_text_shape(shape: Sequence[int]) -> bool:
    """Whether an 8-bit tensor of ``shape`` is one text: one dimension, or several of which
    at most one is not 1 (``[1, n]``, a batch of one, is how Triton models give an output)."""
    return len(shape) >= 1 and sum(1 for dim in shape if dim != 1) <= 1


def _text_tensor(name: str, datatype: str, text: bytes, like: Sequence[int]) -> Tensor:
    """An 8-bit tensor holding ``text`` (its raw form), or one of wider numbers whose raw
    bytes ``text`` is (whole elements), shaped as ``like`` with its text axis (the one
    dimension that is not 1, else the last) the number of its elements."""
    axis = next((index for index, dim in enumerate(like) if dim != 1), len(like) - 1)
    if datatype in _PACKED:
        count = len(text) // numbers.packed_item_size(datatype)
        shape = [*like[:axis], count, *like[axis + 1 :]]
        return Tensor.decoded(
            name, datatype, shape, text, count, lambda: numbers.packed_values(text, datatype)
        )
    shape = [*like[:axis], len(text), *like[axis + 1 :]]

    def read() -> list[int]:  # built only if something reads the values
        return list(text) if datatype == "UINT8" else list(memoryview(text).cast("b"))

    return Tensor.decoded(name, datatype, shape, text, len(text), read)


def _packed_end(tensor: Tensor) -> tuple[bytes, bytes] | None:
    """The end of wider numbers' raw bytes, trailing NULs aside (padding to whole elements),
    read two ways: with control characters but NUL dropped, the last ``_TEXT_END`` bytes
    (``_ends_in_text``: a NUL is no text), and with every control character dropped, as the
    classifier reads binary (``numbers.packed_detections``), the last ``_TEXT_END`` bytes
    (``_value_run``). Read from their last elements only, more of them while those give fewer
    bytes either way (an output of zeros, or of control bytes, is read about twice); None for
    values that are no numbers."""
    count = max(1, 4 * _TEXT_END // numbers.packed_item_size(tensor.datatype))
    while True:
        data = numbers.packed_bytes(tensor, count)
        if data is None:
            return None
        end = data.rstrip(b"\0")
        text, shown = end.translate(None, _CONTROLS_BUT_NUL), end.translate(None, CONTROLS)
        if count >= tensor.size or min(len(text), len(shown)) >= _TEXT_END:
            return text[-_TEXT_END:], shown[-_TEXT_END:]
        count *= 4


def _packed_head(tensor: Tensor, count: int) -> bytes | None:
    """The raw bytes of the first ``count`` elements of wider numbers (no more is read)."""
    raw = tensor.raw_form()
    size = numbers.packed_item_size(tensor.datatype)
    if raw is not None and len(raw) == tensor.size * size:
        return raw[: count * size]
    if count < tensor.size:
        tensor = Tensor(tensor.name, tensor.datatype, [count], tensor.values[:count])
    return numbers.packed_bytes(tensor)


def _value_run(shown: bytes, members: bytes) -> int:
    """How many of the last bytes of ``shown`` are ``members``: the run a value could
    continue from into the next bytes (``_VALUE_BYTES``). C-level."""
    return len(shown) - len(shown.rstrip(members))


def _ends_in_text(end: bytes) -> bool:
    """Whether ``end`` (``_packed_end``) is text: at least ``_TEXT_LEAST`` bytes, UTF-8
    (but for a character cut at either end) without control characters (``_NOT_TEXT``). A
    C-level search first: float bytes nearly always hold a control byte."""
    if len(end) < _TEXT_LEAST or _NOT_TEXT.search(end) is not None:
        return False
    if end.isascii():
        return True
    start = 0
    while start < 3 and 0x80 <= end[start] < 0xC0:  # the rest of a character begun before
        start += 1
    stop = len(end)
    for back in (1, 2, 3):  # a character the next bytes finish
        byte = end[-back]
        if byte < 0x80:
            break
        if byte >= 0xC0:
            stop -= back if back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4) else 0
            break
    return "\ufffd" not in end[start:stop].decode("utf-8", "replace")


def _flushed(name: str, held: _Held) -> Tensor:
    if held.datatype != "BYTES":
        return _text_tensor(name, held.datatype, bytes(held.tails.get(0, b"")), held.shape)
    count = 1
    for dim in held.shape:
        count *= dim
    values = [bytes(held.tails.get(index, b"")) for index in range(count)]
    return Tensor(name, "BYTES", list(held.shape), values)
