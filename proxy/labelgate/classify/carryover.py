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

8-bit text, and text packed into the raw bytes of wider numbers while those end in text, is
carried as one BYTES element is and released in the datatype it came in, wider numbers cut
between elements only (``carried_forms``, which also ends the stream when a value runs on
from numbers sent on as they came into the next reply's). Wider integers read as characters
(a code point an element, ``characters``) whose last elements may be the start of a value (a
run of characters values are made of, holding one a value may begin with: a full-width
digit, a letter) hold those elements back, cut between elements, until a character no value
holds comes after them (``carried_forms.CharacterReader``): a value split across replies
reaches the classifier whole, in one released tensor of the output's datatype.

The cut never falls inside a run a value may go on in past the window: a number-like run, a
run of email characters holding an ``@``, a run of token characters holding a secret's
prefix (``carry_runs``). A PEM private key is longer than the window too: a block whose BEGIN
marker arrived runs to the end of the text until its END marker does (``credentials``), so
the scan's match holds it from its BEGIN marker until then, or until the final reply. Text
held as one such run, or ending in one the window's cut fell in (cut before it, between
elements: ``_run_after``), or as a key block still open, is held on without being read again
while the pieces that follow extend the run (are made of its bytes) or do not hold the
awaited END marker; text held whole (not ASCII, escapes, JSON) stays so as more is appended
(what makes it so stays in it); and so is text held while an earlier element's block is
open. Each reply reads only its own piece (and a few bytes before it): what the held text is
(a run, an open block, an object) is followed piece by piece (``held_text``).

A PEM block is followed across a request's replies in the order its text arrives
(``carried_keys``): every piece inside one is released in a ``CoveredTensor``, which the
classifier covers with ``secret``.

Released text is read with what a later reply releases after it, in the order a reader sees
the two joined (``display_context``): a right-to-left character or a bidi control in one reply
reorders what comes after it (``ssn \\u202eא`` then ``9876-54-321`` shows ``ssn
123-45-6789``), and one in a later reply what came before it. A value only the joining shows
ends the stream (``STREAM_VALUE_SPLIT``) before the reply that completes it leaves; text with
neither character is not read so (its pieces are kept, a few windows of them).

An output with text held that a later reply carries in another form (another datatype, or
not as text) fails the reply closed (``STREAM_OUTPUT_CHANGED``): the held text cannot be
joined to it, and dropping it would lose what the upstream sent without a record.

Released text is classified and decided like any output, so a value split across replies
reaches the classifier whole, and callers allowed to read the text around it still do.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from labelgate.classify import (
    carried_forms,
    carried_keys,
    carry_runs,
    credentials,
    display_context,
    held_text,
    jsonpaths,
    numbers,
    reasons,
)
from labelgate.classify.decoded_text import reads_as_text
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import may_hide
from labelgate.errors import ResourceExhausted, UpstreamError
from labelgate.oip.tensor import Tensor

STREAM_HELD_TOO_LARGE = reasons.STREAM_HELD_TOO_LARGE
STREAM_OUTPUT_CHANGED = reasons.STREAM_OUTPUT_CHANGED
STREAM_VALUE_SPLIT = reasons.STREAM_VALUE_SPLIT
# The numbers wider than 8 bits whose raw bytes may be carried as text (``carried_forms``).
_PACKED = numbers.PACKED_DATATYPES
# Bytes before a piece read with it for a PEM marker (``carried_keys``).
_MARKER_REACH = carried_keys.MARKER_REACH
_KEY_REACH = carried_keys.KEY_REACH


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
    whole: dict[int, held_text.ObjectScan | None] = field(default_factory=dict)
    # Elements whose held text is held on as pieces come (``_held_on``), and what ``_carry``
    # would read of it, followed piece by piece (``held_text.HeldReader``).
    readers: dict[int, held_text.HeldReader] = field(default_factory=dict)


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
        # The PEM blocks of the stream's requests; the pieces of the reply being released,
        # when ``secret`` scans.
        self._blocks = carried_keys.KeyBlocks()
        self._pieces: list[carried_keys.Piece] | None = None
        # Per request and output of numbers wider than 8 bits, how its bytes ended so far,
        # and what reads whether they end in text (``carried_forms``).
        self._ends: dict[Hashable, dict[str, carried_forms.PackedEnd]] = {}
        self._packed_text = carried_forms.PackedTextReader(
            detectors, window, self._secrets, custom_patterns=longest != 0
        )
        self._characters = carried_forms.CharacterReader(custom_patterns=longest != 0)
        # Per request, what of each output's texts was released (``display_context``), by
        # output name and element (-1: an output read as one text).
        self._shown: dict[Hashable, display_context.Followed] = {}
        self._kept_bytes = 0  # what they keep, counted with what is held (``hold_limit``)

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
                if out is tensor
                and (tensor.datatype in carried_forms.EIGHT_BIT_TEXT or tensor.datatype in _PACKED)
            ]
            released = self._blocks.cover(request, released, pieces, flushed, final, passed)
        shown = self._shown.pop(request, None) if final else self._shown.get(request)
        if shown is None:
            shown = display_context.Followed(self.detectors, self.window)
            if not final:
                self._shown[request] = shown
        kept = shown.kept_bytes
        for position, tensor in enumerate([*released, *flushed]):
            self._read_joined(shown, tensor, position)
        self._kept_bytes += shown.kept_bytes - kept
        if final:
            self._kept_bytes -= shown.kept_bytes
        else:
            self._hold(0)
        return released + flushed

    def flush(self) -> list[tuple[Hashable, list[Tensor]]]:
        """Everything still held, per request (the stream ended before their final replies)."""
        pending, self._held = self._held, {}
        keys = self._blocks.take_all()
        shown, self._shown = self._shown, {}
        self._kept_bytes = 0
        self._ends = {}
        self._held_bytes = 0
        flushed = [
            (
                request,
                carried_keys.covered_flush(
                    [_flushed(name, rest) for name, rest in outputs.items() if rest.tails], keys.get(request)
                ),
            )
            for request, outputs in pending.items()
            if any(rest.tails for rest in outputs.values())
        ]
        for request, tensors in flushed:
            followed = shown.get(request) or display_context.Followed(self.detectors, self.window)
            for position, tensor in enumerate(tensors):
                self._read_joined(followed, tensor, position)
        return flushed

    def _read_joined(self, shown: display_context.Followed, tensor: Tensor, position: int) -> None:
        """Read what ``tensor`` releases of each of its texts after what was released of it
        before, in the order a reader sees them joined (``display_context``): a value only
        their joining shows ends the stream before this reply leaves."""
        for key, text in _texts(tensor):
            found = shown.take(key, text)
            if found is None:
                continue
            if found == display_context.UNREADABLE:
                raise UpstreamError(
                    STREAM_VALUE_SPLIT,
                    f"the upstream sent a right-to-left character or a bidi control (output {position}) "
                    "after more of a stream's text than the gateway keeps to read it with; the replies "
                    "are masked one by one, so it is not sent",
                )
            raise UpstreamError(
                STREAM_VALUE_SPLIT,
                f"the upstream split a value its detectors call {found} across the replies of a stream "
                f"(output {position}) that only shows in the order a reader displays them joined (a "
                "right-to-left character or a bidi control in one reply); each reply is masked on its "
                "own, so it is not sent",
            )

    def _release_tensor(
        self,
        tensor: Tensor,
        held: dict[str, _Held],
        final: bool,
        position: int,
        ends: dict[str, carried_forms.PackedEnd],
    ) -> Tensor:
        form, text = carried_forms.text_form(tensor)
        state = held.get(tensor.name)
        release_all = final
        keep, claimed = 0, False
        if form is None and tensor.datatype in _PACKED:
            holding = state is not None and bool(state.tails) and state.datatype == tensor.datatype
            packed = self._packed_text.read(tensor, ends, holding, position)
            if packed is not None:
                (text, claimed), form = packed, tensor.datatype
                # Held text whose bytes no longer end in text goes now, whole with this piece.
                release_all = final or not claimed
            # Integers read as characters that may end in a value's start: those elements are
            # held back (``carried_forms.CharacterReader``), cut between elements.
            run = self._characters.read(tensor, ends)
            if run and not final:
                text = text if text is not None else numbers.packed_bytes(tensor)
                if text is not None:
                    form, unit = tensor.datatype, numbers.packed_item_size(tensor.datatype)
                    tail = state.tails.get(0, b"") if holding and state is not None else b""
                    keep = min(run * unit, len(tail) + len(text))
                    self._packed_text.held_back(ends, tensor.name, tail, text, keep)
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
            # What may begin a value is held back even when the bytes no longer end in text.
            release = release_all and not keep
            released = self._noted(
                tensor, form, held, 0, text, release, position, unit=unit, keep=keep, plain=not claimed
            )
            return carried_forms.text_tensor(tensor.name, form, released, tensor.shape)
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
        keep: int = 0,
        plain: bool = False,
    ) -> bytes:
        """``_carry``, noting for ``KeyBlocks.cover`` what the element held, brought and released."""
        pieces = self._pieces
        if pieces is None:
            return self._carry(tensor, form, held, index, piece, final, hold_whole, unit, keep, plain)
        state = held.get(tensor.name)
        tail = state.tails.get(index, b"") if state is not None else b""
        entry = carried_keys.Piece(
            position, (tensor.name, index), piece, bytes(tail[-_KEY_REACH:]), len(tail)
        )
        if plain and form in numbers.CHARACTER_DATATYPES:  # read as the classifier reads them
            entry.binary = form
        released = self._carry(tensor, form, held, index, piece, final, hold_whole, unit, keep, plain)
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
        keep: int = 0,
        plain: bool = False,
    ) -> bytes:
        """What to release now of element ``index`` of ``tensor``'s text: what was held of
        it, then ``piece``; holds back the rest (all of it with ``hold_whole``). ``unit``: the
        bytes of one of the tensor's elements (wider numbers' bytes are cut between them).
        ``keep``: how many of the last bytes to hold back at least (integers read as
        characters that may end in a value's start); with ``plain`` (bytes that do not end in
        text, ``carried_forms``), those and no more (``_held_back``)."""
        if keep and plain and not final:
            return self._held_back(tensor, form, held, index, piece, keep)
        state = held.get(tensor.name)
        if state is not None and index in state.tails and not final:
            kept = self._held_on(state, index, piece, tensor.shape, hold_whole)
            if kept and keep:  # a whole JSON object, but for what may begin a value
                return self._held_back(tensor, form, held, index, kept, keep)
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
            # nor text the catalog can label. (But for what may begin a value: ``keep``.)
            return (
                self._held_back(tensor, form, held, index, text, keep)
                if keep and text and not final
                else text
            )
        # A run held whole and extended by its own bytes only is still one run: held whole.
        extends_run = members is not None and not piece.lstrip(members)
        # So is a key block still open: only its END marker, maybe begun in the held bytes, ends it.
        still_open = closing is not None and closing not in text[max(0, len(tail) - len(closing) + 1) :]
        held_on = extends_run or still_open or hold_whole
        cuttable = not held_on and not was_whole and self._cuttable(text)
        cut = (self._cut(text) if unit == 1 else self._element_cut(text, unit)) if cuttable else 0
        cut = min(cut, len(text) - keep)
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
            kept_text = text[cut:]
            state.tails[index] = bytearray(kept_text)
            if was_whole:
                state.whole[index] = scan
            elif not (held_on or cuttable or held_text.only_space(text)):
                # Held whole from now on (cut is 0): later pieces are not read with it.
                state.whole[index] = held_text.object_scan(text)
            if members is not None and extends_run:
                state.runs[index] = members
            elif self._cuts and index not in state.whole:  # text held whole is no run
                run = carry_runs.run_of(kept_text, self._secrets) or (
                    self._run_after(text, cut) if cuttable else b""
                )
                if run:
                    state.runs[index] = run
            if closing is not None and still_open:
                state.keys[index] = closing
            elif self._cuts and self._secrets:
                awaited = credentials.open_pem(kept_text)
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
        (``held_text.HeldReader``). None when the text is cut again (``_carry``)."""
        tail = state.tails[index]
        members = state.runs.get(index)
        closing = state.keys.get(index)
        whole = index in state.whole
        extends_run = not whole and members is not None and not piece.lstrip(members)
        still_open = closing is not None and closing not in held_text.joined_end(
            tail, piece, len(closing) - 1
        )
        if not (whole or extends_run or still_open or hold_whole):
            return None
        # Text held whole needs one only for its blocks; a run extended, none (yet).
        keys = self._cuts and self._secrets
        reader = state.readers.get(index)
        if reader is None and not extends_run and (keys or not whole):
            reader = state.readers[index] = held_text.HeldReader(tail)
        closed = reader.add(piece) if reader is not None else False
        if whole:
            scan = state.whole[index]
            closed = scan is not None and scan.closes(piece)
            if closed:
                state.whole[index] = None  # one object now, or never (``held_text.ObjectScan``)
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

    def _held_back(
        self, tensor: Tensor, form: str, held: dict[str, _Held], index: int, piece: bytes, keep: int
    ) -> bytes:
        """What to release now of element ``index`` of ``tensor`` (integers read as characters,
        whose bytes do not end in text: ``carried_forms``): what was held of it, then ``piece``,
        but the last ``keep`` bytes (``carried_forms.CharacterReader``), held back as they are.
        While those are all of it, ``piece`` is appended to what is held, nothing read again."""
        state = held.get(tensor.name)
        tail = state.tails.get(index) if state is not None else None
        # Held as it came (nothing the carry-over follows in it) and one run still: appended to.
        if (
            state is not None
            and tail is not None
            and keep >= len(tail) + len(piece)
            and not any(index in kept for kept in (state.runs, state.keys, state.whole, state.readers))
        ):
            self._hold(len(piece))
            tail += piece
            if len(state.tails) == 1:  # a holding takes the shape of its latest reply
                state.shape = list(tensor.shape)
            return b""
        text = piece
        if state is not None and tail is not None:
            text = b"".join((tail, piece))
            self._drop(state, index)  # what the carry-over knew of it was of text it held
        cut = len(text) - keep
        if cut < len(text):
            self._hold(len(text) - cut)
            if state is None or not state.tails:  # a holding takes the form of its reply
                state = held[tensor.name] = _Held(list(tensor.shape), form)
            state.tails[index] = bytearray(text[cut:])
        return text[:cut]

    def _hold(self, size: int) -> None:
        self._held_bytes += size
        if self._held_bytes + self._kept_bytes > self.hold_limit:
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
        the bytes that, appended, cannot move that cut forward (``carry_runs.run_members``);
        nothing when this carry-over does not cut."""
        if not self._cuts or not rest:
            return b""
        return carry_runs.run_members(rest, self._secrets)

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

    def _run_after(self, text: bytes, cut: int) -> bytes:
        """For ``text`` cut at ``cut`` (``_cut``, ``_element_cut``): the bytes that extend the
        run it ends in (``carry_runs.run_of``) when the window's cut fell in that run and moved
        back to its start, and from there to ``cut`` (a match straddling the run's start, an
        element's start): text cut so (``the number is: 1`` and a run of ones, FP32) is cut
        there again while the run grows by its own bytes (the window's cut stays in it; nothing
        before its start changes), so it is held on as a run held whole is (``_held_on``). Else
        nothing."""
        start = carry_runs.run_start(text, max(0, len(text) - self.window), self._secrets)
        if start <= cut:
            return b""
        members = carry_runs.run_of(text[start:], self._secrets)
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
        match or run that straddles it (``carry_runs``) and off the middle of a UTF-8
        character."""
        cut = carry_runs.run_start(text, max(0, len(text) - self.window), self._secrets)
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
            cut = carry_runs.run_start(text, cut, self._secrets)
        while 0 < cut < len(text) and text[cut] & 0xC0 == 0x80:
            cut -= 1
        return cut


def _texts(tensor: Tensor) -> list[tuple[tuple[str, int], str]]:
    """The texts a client reads in ``tensor`` (``display_context``), by output name and element:
    each BYTES element's UTF-8, an 8-bit text's, integers of a text shape read as characters
    (UTF-16 units for 16 bits, else code points, as ``characters`` reads them). Bytes that are
    not text (an image's, audio: ``reads_as_text``) are none, nor are other tensors."""
    name = tensor.name
    if tensor.datatype == "BYTES":
        found = []
        for index, value in enumerate(tensor.values):
            if value:
                text = bytes(value).decode("utf-8", "replace")
                if text.isascii() or reads_as_text(text):
                    found.append(((name, index), text))
        return found
    if not tensor.size or not carried_forms.is_text_shape(tensor.shape):
        return []
    if tensor.datatype in carried_forms.EIGHT_BIT_TEXT:
        _, data = carried_forms.text_form(tensor)
        text = (data or b"").decode("utf-8", "replace")
        return [((name, -1), text)] if text.isascii() or reads_as_text(text) else []
    if tensor.datatype not in numbers.CHARACTER_DATATYPES:
        return []
    dtype = numbers.NUMBER_DTYPES[tensor.datatype]
    raw = tensor.raw_form()
    if raw is not None and len(raw) == tensor.size * dtype.itemsize:
        points = np.frombuffer(raw, dtype=dtype)
    else:
        try:
            points = np.asarray(tensor.values, dtype=dtype)
        except (OverflowError, TypeError, ValueError):
            points = np.asarray(tensor.values, dtype=object)
    return [((name, -1), display_context.text_of_points(points, dtype.itemsize))]


def _flushed(name: str, held: _Held) -> Tensor:
    if held.datatype != "BYTES":
        return carried_forms.text_tensor(name, held.datatype, bytes(held.tails.get(0, b"")), held.shape)
    count = 1
    for dim in held.shape:
        count *= dim
    values = [bytes(held.tails.get(index, b"")) for index in range(count)]
    return Tensor(name, "BYTES", list(held.shape), values)
