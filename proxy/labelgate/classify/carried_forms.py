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

What is not covered: a value in a form only another reading shows (folded, full-width digits,
markup, escapes, UTF-16 decoded) that begins right after binary bytes (fewer than
``_TEXT_LEAST`` text bytes before it), since its bytes are no ``_VALUE_BYTES``; an IPv6
address split at a colon (``:`` is no value byte: float exponents are); with custom patterns
(any printable ASCII is a value byte then) a match holding bytes that are not ASCII, or longer
than the window; text a row at a time (two dimensions above 1); and an output that changes
datatype or goes 8-bit between the replies (the join is read with wider numbers only).
"""

from __future__ import annotations

import array
import re
from collections.abc import Sequence
from dataclasses import dataclass

from labelgate.classify import carry_runs, numbers, patterns, reasons
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
