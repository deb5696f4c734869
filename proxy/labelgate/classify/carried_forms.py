"""Tensors that are not BYTES carried across streamed replies as text: pure.

A client reads text out of numbers too: the bytes of an 8-bit tensor, the raw bytes of wider
numbers (``tobytes()``). A value a token stream splits across such replies is as whole to it
as one split across BYTES elements, so the carry-over (``carryover``) carries these forms as
text too, and a reply releases a tensor of the form it came in.

A UINT8 or INT8 tensor of one dimension, or of several all 1 but one (``[1, n]``, a batch
of one) is text (its bytes, as one text, are scanned as a BYTES element is, ``numbers.py``):
it is carried as one BYTES element is, and each reply releases a tensor of its datatype and
rank whose text axis is the length of the text released (``text_form``, ``text_tensor``). An
8-bit tensor with two dimensions above 1 (an image, not a text) is sent on as it came, as are
BOOL tensors.

So are numbers wider than 8 bits (INT16..UINT64, FP16, BF16, FP32, FP64) of such a shape,
whose raw bytes a client reads back with ``tobytes()`` (``numbers.packed_detections``), while
the bytes the output brought end in text (``PackedTextReader``), read as the classifier reads
binary, control characters dropped: their last ``_TEXT_END`` bytes (trailing NULs aside,
control characters but NUL dropped, across replies: text a few bytes a reply counts once
``_TEXT_LEAST`` bytes arrived) are UTF-8 without NULs, or, every control character dropped,
they end in a run of bytes a value may be made of (``_VALUE_BYTES``: letters, digits and the
separators values hold) at least ``_VALUE_RUN`` (8) long holding a letter or a digit. Then
they are carried as 8-bit text is, cut between elements only (``CarryOver._element_cut``),
and each reply releases a tensor of their datatype whose text axis counts the elements
released; once the bytes no longer end in text, what is held goes with that reply, whole. An
empty output of the datatype held leaves what is held as it was. Floats, token ids and the
like seldom end in text (measured: ``_VALUE_RUN``), and only their last elements are read to
tell: they are sent on as they came, at a constant cost.

Bytes sent on (or released whole) that end in a shorter such run may hold the start of a
value the next replies complete (``\\x80\\x80123-45-`` / ``6789``): that run is read with the
output's next bytes, every control character dropped (``_follow_join``, the first elements of
each later reply only, until a byte no value holds or ``window`` of them arrive), and a
detection that starts in the run and ends past it ends the stream (``STREAM_VALUE_SPLIT``):
at most ``_VALUE_RUN - 1`` bytes of a value's start went out. (``ip_address`` and ``email``
count from 16 bytes there unless the next bytes read as text, as the classifier reads binary;
a run no cut falls in, digits or a token, going on past the window ends the stream too.)

Wider integers (INT16..UINT64) of such a shape are also read as characters, an element each,
as the classifier reads them (``characters``: UTF-16 code units, code points, folded): a value
in code points (full-width digits, other scripts' digits, invisible characters between
digits) may be split across replies whose bytes end in no text. So when an output's elements
end in a run of characters a value may be made of (``_CHARACTER_VALUE_BYTES``, each read as
folding reads it; after an ESC, any printable ASCII: an escape sequence's) holding one a value
may begin with (a letter, a digit, ``@``, one folding makes several of that ends in one, a
UTF-16 high surrogate the next unit completes), that run is held back (``CharacterReader``): a reply
releases what came before it, in the output's datatype, and the run goes with the first reply
that brings a character no value holds after it (or with the final reply, or the end of the
stream). Only an output's last elements are read (more while they are all a value's
characters), and a run held is appended to, not read again. Token ids end so now and then:
measured (``tests/classify/test_carryover_characters.py``), a reply in 31 (16-bit ids) to 65
(INT64 ids below 150,000) ends with ids held, for one reply or a few; integers of any value,
one in 5,000. (Runs of ASCII code points are held too, though the packed carry reads them:
it sends a run shorter than ``_VALUE_RUN`` on and ends the stream when the next reply
completes a value, and reads an escape, an ANSI sequence or an invisible character after it
otherwise than the classifier does. They are 5% of the ids held.)

What is not covered: a value in a form only another reading shows (folded, full-width digits,
markup, escapes, UTF-16 decoded) that begins right after binary bytes (fewer than
``_TEXT_LEAST`` text bytes before it), since its bytes are no ``_VALUE_BYTES``; an IPv6
address split at a colon (``:`` is no value byte: float exponents are); with custom patterns
(any printable ASCII is a value byte then) a match holding bytes that are not ASCII, or longer
than the window; text a row at a time (two dimensions above 1); and an output that changes
datatype or goes 8-bit between the replies (the join is read with wider numbers only). Read
as characters: an OSC string (ESC ``]``) holding a character no value holds across replies, a
backspace that erases the last character of the reply before, an escape sequence begun more
than ``_CHARACTER_SLICE`` elements before the end of a reply that does not end in a run, and
(with custom patterns) a match holding a character that is not ASCII.
"""

from __future__ import annotations

import array
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelgate.classify import carry_runs, characters, numbers, patterns, reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.folding import CONTROLS
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor

# The 8-bit datatypes whose bytes are read as one text (``numbers.TEXT_DATATYPES``).
EIGHT_BIT_TEXT = frozenset({"UINT8", "INT8"})
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
# complete it (``PackedTextReader._follow_join``). Measured (streams above, one reply in how
# many held then, their values unchanged, until the next reply that does not end so): normal,
# log-probability and embedding floats 1 in 4,000 or fewer (FP64 none); uniform FP16 1 in
# 200-250, BF16 1 in 1,000; softmax FP16 1 in 400 to 3,000; INT16/UINT16 token ids 1 in 200,
# INT32..UINT64 ids 1 in 1,000 to 6,000; masks none; small whole numbers as FP16 1 in 6 (their
# bytes are capitals), as BF16 or FP32 1 in 100, as FP64 none. A constant FP16 0.5 ("8" bytes)
# always does: held to the request's final reply (or past ``hold_limit``). No ordinary stream
# was refused (2.4 million replies).
_VALUE_RUN = 8
# Integers read as characters (``characters``, an element a character): the byte each one's
# character reads as there, folded (``characters.shown_view``), goes on a run a value may be
# made of (``CharacterReader``) when it is one of ``_VALUE_BYTES``, or ``:`` (an IPv6 address:
# no float exponents here), or what an escape that reading decodes is written with
# (``\u0031``, ``&#49;``), or a character folding drops (invisible characters, marks,
# controls) or makes several of; a run holding one of ``_CHARACTER_VALUE_STARTS`` (or one made
# several) may be the start of a value. With custom patterns, any printable ASCII.
_CHARACTER_VALUE_BYTES = _VALUE_BYTES + b":\\&#;"
_CHARACTER_VALUE_STARTS = bytes(sorted(patterns._ALNUM)) + b"@"
_PRINTABLE_TABLE = np.array([code in _PRINTABLE for code in range(256)])
# The last elements of a reply first read for that run (then four times as many, while they
# do not show where it starts).
_CHARACTER_SLICE = 16


def text_form(tensor: Tensor) -> tuple[str | None, bytes | None]:
    """How ``tensor`` is carried: ``("BYTES", None)`` element by element; an 8-bit datatype
    and the tensor's bytes as one text (``is_text_shape``); or ``(None, None)``, sent on as it
    came: other numbers, and 8-bit tensors with more than one dimension above 1 (images, not
    text) or with values out of their datatype's range (which encoding refuses)."""
    if tensor.datatype == "BYTES":
        return "BYTES", None
    if tensor.datatype not in EIGHT_BIT_TEXT or not is_text_shape(tensor.shape):
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


def text_tensor(name: str, datatype: str, text: bytes, like: Sequence[int]) -> Tensor:
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


@dataclass
class PackedEnd:
    """How an output of wider numbers ended, across a request's replies (``PackedTextReader``)."""

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
    # Integers read as characters (``CharacterReader``): how many of the output's last elements
    # are characters a value may be made of (across replies), whether one of them may begin a
    # value, whether an ESC is among them (then any printable ASCII goes on the run: an escape
    # sequence's), and the UTF-16 high surrogate the last reply ended in (paired with the next
    # reply's first unit).
    characters: int = 0
    character_value: bool = False
    escaped: bool = False
    high: int | None = None


class CharacterReader:
    """Whether wider integers read as characters (``characters``) end in what may be the start
    of a value, reply by reply: how many of an output's last elements the carry-over holds
    back (``CarryOver``). Reads an output's last elements only, more of them while they do not
    show where the run they end in starts: each reply's elements are read about once."""

    def __init__(self, custom_patterns: bool) -> None:
        if custom_patterns:  # any printable ASCII may be a custom match's, and begin one
            members, starts = _PRINTABLE, _PRINTABLE.translate(None, b" \t")
        else:
            members, starts = _CHARACTER_VALUE_BYTES, _CHARACTER_VALUE_STARTS
        self._members = _byte_table(members + bytes([characters.DROPPED, characters.LONGER]))
        self._starts = _byte_table(starts + bytes([characters.LONGER]))
        # What no run goes on with, even in an escape sequence.
        self._apart = ~(self._members | _PRINTABLE_TABLE)
        # What folds to several characters (``characters.LONGER``) read as what its last ones
        # are: after a character no value holds (``¼`` is ``1⁄4``, ``㈀`` is ``(一)``), the run
        # starts there; one that then holds no character a value may begin with (``㋀``,
        # ``1月``) ends any run, and one with no such character at all (``…``) goes on with a
        # run as a space does. (About a third of them below 50,000: token ids ending in one
        # are held no more.) The rest, ``LONGER`` (``⑴``, ``㎏``: may begin a value).
        self._longer = {code: self._longer_as(form) for code, form in characters.longer_forms().items()}
        # ASCII characters by their code (folding drops control characters): those a run goes
        # on with, and those it may begin with (``_read_ascii``).
        ascii_view = [characters.DROPPED if code in CONTROLS else code for code in range(0x80)]
        self._ascii_members = bytes(code for code in range(0x80) if self._members[ascii_view[code]])
        self._ascii_starts = bytes(code for code in range(0x80) if self._starts[ascii_view[code]])

    def read(self, tensor: Tensor, ends: dict[str, PackedEnd]) -> int:
        """How many of the last elements of ``tensor``'s output (the reply's, and those of
        earlier replies the run goes back into) may be the start of a value as the classifier
        reads them as characters: the run of characters a value may be made of they end in
        (``_CHARACTER_VALUE_BYTES``; after an ESC, any printable ASCII, which an escape
        sequence may be made of) when it holds one a value may begin with (``_CHARACTER_VALUE_STARTS``,
        a character folding makes several of, a high surrogate the next reply may pair), else
        0; 0 for a tensor not read so (another datatype, not a text shape: ``is_text_shape``).
        ``ends`` keeps the run for the output's next reply. An empty tensor leaves it as it was."""
        if tensor.datatype not in numbers.CHARACTER_DATATYPES or not is_text_shape(tensor.shape):
            return 0
        end = ends.setdefault(tensor.name, PackedEnd())
        size = tensor.size
        if size and self._ends_apart(tensor):
            end.characters, end.character_value, end.escaped, end.high = 0, False, False, None
            return 0
        count = min(size, _CHARACTER_SLICE)
        while size:
            read = self._read(_elements(tensor, size - count), end if count == size else None)
            if read is None and count == _CHARACTER_SLICE:
                read = self._read_ascii(tensor, end)  # (a mask, small counts: read whole, C-level)
            if read is not None:
                end.characters, end.character_value, end.escaped, end.high = read
                break
            count = min(size, 4 * count)
        return end.characters if end.character_value else 0

    def _read_ascii(self, tensor: Tensor, end: PackedEnd) -> tuple[int, bool, bool, None] | None:
        """``_read`` of all of ``tensor`` when its raw form holds ASCII code points only and no
        ESC or backspace (nothing a terminal hides), and the run before it is no escape
        sequence and ends in no half of a UTF-16 pair: C-level byte operations over a byte an
        element (``characters.ascii_characters``). None otherwise."""
        raw = tensor.raw_form()
        size = numbers.NUMBER_DTYPES[tensor.datatype].itemsize
        if raw is None or len(raw) != tensor.size * size or end.high is not None:
            return None
        text = characters.ascii_characters(raw, size)
        going_on = end.characters > 0
        if text is None or b"\x1b" in text or b"\x08" in text or (going_on and end.escaped):
            return None
        rest = text.rstrip(self._ascii_members)
        run = text[len(rest) :]
        starts = len(run.translate(None, self._ascii_starts)) < len(run)
        if rest or not going_on:
            return len(run), starts, False, None
        return end.characters + len(run), end.character_value or starts, False, None

    def _ends_apart(self, tensor: Tensor) -> bool:
        """Whether ``tensor``'s last element reads as a character no value holds (nor an
        escape sequence: no ESC among its last ``_CHARACTER_SLICE`` elements), whatever comes
        before it: no run goes on there. Asked of that element alone, without numpy (most
        ids: ``_read`` costs about ten times as much)."""
        dtype = numbers.NUMBER_DTYPES[tensor.datatype]
        size = dtype.itemsize
        raw = tensor.raw_form()
        if raw is not None and len(raw) == tensor.size * size:
            last: Any = int.from_bytes(raw[-size:], "little", signed=dtype.kind == "i")
            escape = 0x1B in raw[-_CHARACTER_SLICE * size :: size]  # (an element's low byte, at least)
        else:
            last, escape = tensor.values[-1], 0x1B in tensor.values[-_CHARACTER_SLICE:]
        if escape or not isinstance(last, int):
            return False
        if size == 2:
            last &= 0xFFFF
            if 0xD800 <= last < 0xE000:  # half a UTF-16 pair: the other half tells
                return False
        return self.apart(last)

    def apart(self, code: int) -> bool:
        """Whether the character ``code`` (a code point or a UTF-16 unit that is no half of a
        pair) reads as one no value holds, nor an escape sequence: no run goes on past it."""
        view = characters.folds_to(code)  # (no character: ``OTHER``, it joins nothing)
        if view == characters.LONGER:
            view = self._longer[code]
        return bool(self._apart[view])

    def run_of(self, units: np.ndarray[Any, Any]) -> tuple[int, bool]:
        """The run of characters a value may be made of that ``units`` (read whole: nothing
        before them) end in, and whether it holds one a value may begin with."""
        read = self._read(units, PackedEnd())
        if read is None:  # (read whole, it shows where its run starts): all of it, to be safe
            return len(units), True
        run, starts, _, _ = read
        return run, starts

    def _longer_as(self, form: bytes) -> int:
        """The byte a character folding makes ``form`` of is read as in a run (``_longer``)."""
        tail = form[len(form.rstrip(bytes(self._members.nonzero()[0].tolist()))) :]
        broken = len(tail) < len(form)
        if any(self._starts[byte] for byte in tail):
            return characters.LONGER
        return characters.OTHER if broken or not tail else characters.SPACE

    def _read(
        self, units: np.ndarray[Any, Any], end: PackedEnd | None
    ) -> tuple[int, bool, bool, int | None] | None:
        """The run of value characters ``units`` (an output's last elements; all of a reply's
        with ``end``, how the output ended before it) end in, whether it holds one a value may
        begin with or an ESC, and the high surrogate they end in; None when ``units`` (some of
        a reply's last elements) do not show where that run starts: no character that is none
        of a value's, escape sequence or not, after their first (which may be the second unit
        of a UTF-16 pair, or inside an escape sequence begun before them)."""
        going_on = end is not None and end.characters > 0  # the run the last reply ended in
        paired = units.dtype != object and units.dtype.itemsize == 2
        before = end.high if going_on and paired and end is not None else None
        if before is not None:  # the unit the last reply ended in, paired with the first here
            units = np.concatenate([np.asarray([before], dtype=units.dtype), units])
        # As ``characters.text_forms`` reads them, an element at a time: folded, what a terminal
        # does not show dropped, a cursor movement a space.
        points, _, view = characters.shown_view(units)
        for spliced in np.flatnonzero(view == characters.LONGER).tolist():  # (few: ``_longer``)
            view[spliced] = self._longer[int(points[spliced])]
        high = None
        if paired and len(units) and 0xD800 <= int(units[-1]) & 0xFFFF < 0xDC00:
            high = int(units[-1])
            view[-1] = characters.LONGER  # whatever character the next unit makes of it
        members = self._members[view]
        printable = _PRINTABLE_TABLE[view]
        other = ~(members | printable)
        if end is None and not other[1:].any():
            return None
        escapes = points == 0x1B
        at = np.arange(len(view))
        escaped = going_on and end is not None and end.escaped
        last_escape = np.maximum.accumulate(np.where(escapes, at, -1 if escaped else -3))
        last_other = np.maximum.accumulate(np.where(other, at, -2))
        members |= printable & (last_escape > last_other)
        starts = self._starts[view]
        breaks = np.flatnonzero(~members)
        if len(breaks):
            after = int(breaks[-1]) + 1
            return len(view) - after, bool(starts[after:].any()), bool(escapes[after:].any()), high
        assert end is not None  # (``other`` breaks a run)
        if not going_on:
            return len(view), bool(starts.any()), bool(escapes.any()), high
        # One run with the last reply's (which counted the unit paired here).
        run = end.characters + len(view) - (before is not None)
        return run, end.character_value or bool(starts.any()), end.escaped or bool(escapes.any()), high


def _byte_table(members: bytes) -> np.ndarray[Any, Any]:
    """Byte -> whether it is one of ``members``."""
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(members, dtype=np.uint8)] = True
    return table


def _elements(tensor: Tensor, start: int) -> np.ndarray[Any, Any]:
    """The elements of wider integers from ``start`` on, as numpy reads them (values their
    datatype cannot hold as Python objects, as ``numbers`` reads them)."""
    dtype = numbers.NUMBER_DTYPES[tensor.datatype]
    raw = tensor.raw_form()
    if raw is not None and len(raw) == tensor.size * dtype.itemsize:
        return np.frombuffer(raw, dtype=dtype, offset=start * dtype.itemsize)
    values = tensor.values[start:]
    try:
        return np.asarray(values, dtype=dtype)
    except (OverflowError, TypeError, ValueError):
        return np.asarray(values, dtype=object)


class PackedTextReader:
    """Whether an output of wider numbers carries text, reply by reply, for a carry-over
    scanning with ``detectors`` and cutting ``window`` bytes before the end; and the values
    that run on from bytes sent on as they came into the next reply's."""

    def __init__(self, detectors: DetectorSet, window: int, secrets: bool, custom_patterns: bool) -> None:
        self.detectors = detectors
        self.window = window
        self._secrets = secrets
        # The bytes a value may be made of (``_VALUE_BYTES``; any printable with custom patterns).
        self._value_bytes = _PRINTABLE if custom_patterns else _VALUE_BYTES

    def read(
        self, tensor: Tensor, ends: dict[str, PackedEnd], holding: bool, position: int
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
        end = ends.setdefault(tensor.name, PackedEnd())
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

    def held_back(
        self, ends: dict[str, PackedEnd], name: str, tail: bytes | bytearray, piece: bytes, keep: int
    ) -> None:
        """The output's last ``keep`` bytes (of those held, ``tail``, then the reply's,
        ``piece``) are held back, not sent (``CharacterReader``): a join whose bytes they show
        all (every control character dropped; an open join runs to the output's last byte)
        began in nothing sent, and is dropped. (Else a value the next reply completes would end
        the stream though none of it went out.) Reads a few of those bytes only (a join is
        short): when they show too few, the join stays."""
        end = ends.get(name)
        if end is None or end.join is None or keep <= 0:
            return
        reach = min(keep, 16 * len(end.join) + 64)
        held = (
            piece[-reach:] if len(piece) >= reach else bytes(tail[len(tail) - reach + len(piece) :]) + piece
        )
        if len(held.translate(None, CONTROLS)) >= len(end.join):
            end.join, end.run = None, 0

    def _follow_join(self, tensor: Tensor, end: PackedEnd, position: int) -> None:
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
                    reasons.STREAM_VALUE_SPLIT,
                    f"the upstream split a value its detectors call {hit.detector} across the replies "
                    f"of a stream (output {position}, in its numbers' bytes); each reply is masked on "
                    "its own, so it is not sent",
                )
        if values < min(len(shown), room):
            end.join = None  # a byte no value holds: what began in the run ended before it
        elif len(joined) - run > self.window:
            end.join = None  # longer than any match, but for a run no cut falls in:
            start = carry_runs.run_start(joined, run, self._secrets)
            if start < run and carry_runs.run_of(joined[start:], self._secrets):
                raise UpstreamError(
                    reasons.STREAM_VALUE_SPLIT,
                    f"the upstream sent a run of digits, an email or a token across the replies of a "
                    f"stream (output {position}, in its numbers' bytes) past {self.window} bytes; each "
                    "reply is masked on its own, so it is not sent",
                )
        else:
            end.join = joined


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
