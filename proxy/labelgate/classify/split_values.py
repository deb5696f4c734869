"""Values a routed token stream splits across its messages: pure.

A token-streaming gRPC service sends ``"card 4111 11"`` / ``"11 1111 1111 1111"``: classified
message by message (``Pipeline.release_reply``), neither piece is a card. ``ModelStreamInfer``
knows its BYTES elements are pieces of one text and moves held text into later replies
(``carryover.py``); a routed message's fields carry no such meaning, so the gateway may not
move text between messages. A route whose server streams are token streams
(``routes[].split_values: hold``) holds whole messages instead:

- each string and bytes field, found by its path (``choices[0].delta.content``), is read as
  one text across the held messages, the pieces in order, as the classifier reads it (a
  string as its UTF-8 bytes, bytes as they are: ``messages._text``); so is each such field
  of what an Any holds (``extra{}.text``, as the classifier names it). An Any the gateway
  cannot read (its type not in the route's descriptor set, bytes that do not parse) could
  hold a piece of any text: the stream ends (``STREAM_VALUE_SPLIT``) before it leaves. A
  string field that is not UTF-8 (proto2) ends it as the classifier would
  (``MESSAGE_STRING_INVALID``).
- a message is released once no later piece can still make a value of any of its fields'
  text: the carry-over's cut (``cut``: a window of bytes, never the middle of a match or of a
  number or email run) lies past it in every path; the end of the stream releases the rest.
  Text ``cut`` cannot cut (``None``: text that may hide a value from a raw scan: not ASCII,
  escapes, control characters, markup a renderer drops next to a digit) is held until the
  stream ends: so is a stream of binary bytes (audio, a file's chunks), bounded by
  ``hold_limit``.
- when messages are released, each path's text across them is scanned as the classifier
  reads text (raw, escapes and references decoded, folded, bytes that are not UTF-8 in the
  legacy encodings they read as text in: ``straddled``), and so is each message's piece on
  its own, in the same reading. A value across the pieces some byte of
  which no value of the same detector in its own piece covers is one only their joining
  makes: the stream ends (``STREAM_VALUE_SPLIT``) before any piece of it leaves, since each
  message is masked on its own and no mask could cover it (a ``partial`` mask would show
  the last characters of each piece). Where, not how many: a whole value in one piece that
  the next piece's first digit turns into no value must not stand in for one split across
  two others. Whole values side by side (``ann@x.com`` then ``bob@y.com``, one email
  joined) are covered byte by byte. In binary (``_is_noise``) an IPv6 address or an email
  counts from 16 bytes on, as in numbers' raw bytes that are not text (``8::`` is noise):
  only where every byte of it comes from messages whose piece is binary itself
  (``_Binary``), never because some other message of the path is.

Integer fields (repeated, scalar, a map's values), which a client reads back with ``chr`` as
the classifier reads a repeated one (``integer_text``), and float and double ones whose values
are whole numbers, as it reads those (``_by_field``), are followed by path too
(``held_integers``): the run of characters a value may be made of the path's values end in
(at most ``held_integers.INTEGER_TAIL``) is read with the next message's values, and a value only their
joining shows ends the stream; the messages such a run takes are held meanwhile.

Each path's text (and each integer path's values, read as characters) that left is kept and
read with what leaves after it in the order a reader sees them joined (``display_context``):
a right-to-left character or a bidi control in one message reorders what a later one brings
(``ssn \\u202eא`` then ``9876-54-321``), and one a later message brings what left before it. A
value only their joining shows ends the stream before the later messages leave; text that
holds neither character is not read so.

A PEM private key is the one value that spans fields (``key_blocks``): a message whose text
opens a block it does not close is covered whole by its own classification, but the key's
lines in later messages (in that field or any other) show no marker. So once a released
message leaves a block open, a later message with text besides the awaited END marker (in
any string or bytes field, an Any's contents too, any form the scan reads) ends the stream
(``STREAM_VALUE_SPLIT``, ``_follow_keys``) before it leaves, as a value split across one
field's messages does. A BEGIN marker is looked for in the same texts.

Messages held beyond ``hold_limit`` bytes (serialized, plus a parsed message's own cost,
plus their text, plus what is kept per path: its name and where each of its pieces ends)
fail the stream closed, and so does a stream holding text of more than ``max_paths`` paths
at once (``limits.max_fields``): paths are the upstream's choice (a map key each); the
gateway bounds what a process's streams hold together (``gateway/inflight.py``). Reading the
released messages across (``_release``, at the stream's end too) is counted against
``limits.max_message_values`` as one reply's classification is. Each
path records only the messages that carry it, and its cut is computed again only when its
text changed and only when it may matter: while one path holds the first held message
back, or text that cannot be cut (None, final for that text and any longer one) holds
everything, nothing else is read; a run the cut stops at (``CarryOver.run_members``)
that its own bytes extend does not move it; nor do a key block's lines before its END
marker once the block holds the cut (``CarryOver.open_block``): its match runs to the end
of the text, which was read again whole on every message; nor does a run glued to a closed
block's END marker that its own bytes extend (``_glued_run``): the run pulls the cut back
into the marker, the block to its start, and the whole text was read again per message.

A path is one text only where its position names it: a stream that moves one text between
list positions (``choices[0]`` carrying choice 1 in some messages) is read per position. A
record stream (each message a whole record) is not a token stream: its ids side by side are
one digit run, held to the end and at worst refused; such routes set ``per_message``.
"""

from __future__ import annotations

import itertools
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import credentials, display_context, key_blocks, reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.decoded_text import reads_as_text
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.folding import CONTROLS, UNFOLDABLE, FoldMemo, folded, may_hide
from labelgate.classify.held_integers import FREE, PATH_COST, PIECE_COST, HeldIntegers
from labelgate.classify.integer_text import CHARACTER_DTYPES, FLOAT_CPP_TYPES, whole_numbers
from labelgate.classify.jsonpaths import (
    _ESCAPE,
    MAX_UNESCAPE_LEVELS,
    _unescape_match,
    _unreferenced,
    may_escape,
    may_reference,
)
from labelgate.classify.markup import rendered
from labelgate.classify.messages import (
    ANY_REPLY_FIELD,
    ANY_TYPE,
    DECODED_TEXT_WEIGHT,
    FIXED_STEP_VALUES,
    TEXT_BYTES_PER_VALUE,
    MessageValues,
    _text,
    is_map,
    is_message,
    message_type_of,
    unpacked_any,
)
from labelgate.classify.numbers import _LOOSE, _LOOSE_SHORTEST
from labelgate.classify.other_encodings import (
    LEGACY_ENCODINGS,
    is_utf8,
    legacy_folded,
    legacy_readings,
    wide_folded,
)
from labelgate.classify.shown_text import rendered_reading
from labelgate.errors import ResourceExhausted, UpstreamError

# Deeper than this, a path is not followed (classification refuses such replies anyway).
_MAX_DEPTH = 32
# What a held message's integer value costs, kept to be read when it is released.
_NUMBER_COST = 8
# What a held message costs beyond its serialized size (a path's state: ``PATH_COST``,
# ``PIECE_COST``): a parsed message of one string in a map takes about 1.7 KB (measured), so
# a stream of tiny messages is bounded too.
_MESSAGE_COST = 1024
# Its cut was not read since its text changed; it holds nothing back (no piece ends past its cut).
_DIRTY, _FREE = -1, FREE
# How many of a path's last bytes an appended piece is read with while a key block holds its
# cut (``CarryOver.keeps_cut``): more than the longest END marker.
_AWAITED_END = 128


@dataclass
class _Path:
    """One field path's text across the held messages: the messages that carry a piece of
    it (by number) and where each piece ends (offsets into the text before ``base`` bytes
    were released from its front)."""

    shown: str  # the path with map keys left out: they are the upstream's unclassified text
    text: bytearray = field(default_factory=bytearray)
    messages: array[int] = field(default_factory=lambda: array("q"))
    ends: array[int] = field(default_factory=lambda: array("q"))
    base: int = 0
    # The first message its cut holds back (_FREE: none), or _DIRTY; where the cut fell, and
    # the bytes that, appended, leave it there (``CarryOver.run_members``).
    blocks: int = _DIRTY
    cut: int | None = 0
    members: bytes = b""
    # The END marker of the PEM block that holds the cut where it is until it arrives
    # (``CarryOver.open_block``), or nothing.
    awaits: bytes = b""
    # The bytes that, appended, leave the cut where it is because they extend a run glued to
    # a closed PEM block's END marker (``_glued_run``), or nothing.
    glued: bytes = b""


class SplitValues:
    """Holds a token stream's messages until no value can still straddle them (module docstring)."""

    def __init__(
        self,
        detectors: DetectorSet,
        cut: Callable[[bytes], int | None],
        hold_limit: int = 16 << 20,
        max_paths: int = 512,
    ) -> None:
        self.detectors = detectors
        self.cut = cut
        self.hold_limit = hold_limit
        self.max_paths = max_paths
        # The carry-over whose cut this is knows which runs stop it (``run_members``); of
        # another cut nothing is assumed: its text is cut again whenever it changed.
        owner = getattr(cut, "__self__", None)
        self._carry = owner if isinstance(owner, CarryOver) else None
        self._held: deque[tuple[Message, int]] = deque()  # each with its serialized size
        # Each held message's integer paths and values, read across messages when they are
        # released (``HeldIntegers.released``).
        self._fields: deque[list[tuple[str, str, list[int]]]] = deque()
        self._first = 0  # the number of the first message held
        self._held_bytes = 0
        self._paths: dict[str, _Path] = {}
        self._whole = 0  # paths whose text cannot be cut: everything is held to the end
        # PEM blocks across paths (``_follow_keys``): the held messages whose text may spell a
        # marker, and the END markers the blocks released messages left open await.
        self._secrets = credentials.NAME in detectors.names
        self._marked: set[int] = set()
        self._keys_open: frozenset[bytes] = frozenset()
        # Each path's text released so far, read with what is released after it in the order
        # a reader sees the two joined (``display_context``): a right-to-left character or a
        # bidi control one message released reorders what a later one brings, and one a later
        # message brings what came before it.
        reach = self._carry.window if self._carry is not None else display_context.DEFAULT_REACH
        self._shown = display_context.Followed(detectors, reach, limit=max_paths, noted=8 * max_paths)
        self._integers = HeldIntegers(detectors, max_paths, reach)

    def hold(self, message: Message, max_values: int | None = None) -> list[Message]:
        """Take the next message; the messages that may leave now, in order. ``max_values``
        (``limits.max_message_values``): the most values the walk of its fields may visit,
        counted as the classifier's walk counts them (``messages.MessageValues``: each present
        field, repeated element and map entry, before it is looked at); past it the stream
        ends (``MESSAGE_TOO_MANY_VALUES``), as the message's classification would refuse it,
        but before this walk has taken seconds of the event loop."""
        number = self._first + len(self._held)
        size = message.ByteSize() + _MESSAGE_COST
        self._held.append((message, size))
        self._held_bytes += size
        counted = MessageValues(max_values)
        integers: list[_Integers] = []
        fields: list[tuple[str, str, list[int]]] = []
        self._fields.append(fields)
        for path, shown, piece in _texts(message, counted, integers):
            if self._secrets and number not in self._marked and _may_spell_key(piece):
                self._marked.add(number)
            state = self._paths.get(path)
            if state is None:
                if len(self._paths) >= self.max_paths:
                    raise ResourceExhausted(
                        reasons.STREAM_HELD_TOO_LARGE,
                        f"a stream holds text of more than {self.max_paths} string or bytes fields at once "
                        "(limits.max_fields)",
                    )
                state = self._paths[path] = _Path(shown)
                self._held_bytes += PATH_COST + len(path) + len(shown)
            self._appended(state, piece)
            state.messages.append(number)
            state.text += piece
            state.ends.append(state.base + len(state.text))
            self._held_bytes += len(piece) + PIECE_COST
        for path, shown, numbers, repeated, records in _by_field(integers):
            self._integers.follow(number, path, shown, numbers, repeated, counted, records)
            fields.append((path, shown, numbers))
            self._held_bytes += _NUMBER_COST * len(numbers)
            self._held[-1] = (message, self._held[-1][1] + _NUMBER_COST * len(numbers))
        if self.held_bytes > self.hold_limit:
            raise ResourceExhausted(
                reasons.STREAM_HELD_TOO_LARGE,
                f"a stream holds more than {self.hold_limit} bytes of messages a value may still straddle",
            )
        return self._release(self._releasable(), max_values)

    def flush(self, max_values: int | None = None) -> list[Message]:
        """The end of the stream: every message held, once no value straddles them. Its
        reading is bounded as any release's is (``_release``: ``max_values``)."""
        return self._release(len(self._held), max_values)

    @property
    def held_bytes(self) -> int:
        """What the messages held cost, as ``hold_limit`` counts it: a process's hold streams
        together are bounded by it too (``gateway/inflight.py``: ``HeldBytes``)."""
        return (
            self._held_bytes + self._integers.held_bytes + self._integers.kept_bytes + self._shown.kept_bytes
        )

    def _appended(self, state: _Path, piece: bytes) -> None:
        """``piece`` is about to extend ``state``'s text: whether its cut must be read again."""
        if not piece or state.blocks == _DIRTY or state.cut is None:
            return  # unchanged; not read yet; text that cannot be cut stays so
        if (
            state.members
            and state.messages
            and state.messages[0] == state.blocks
            and not piece.lstrip(state.members)
            and _stays_cuttable(state.text, piece)
        ):
            # The cut stays at the run's start or before, and it holds back the path's first
            # held piece: the first message it holds back stays the same.
            return
        if state.glued and not piece.lstrip(state.glued) and _stays_cuttable(state.text, piece):
            return  # a run glued to a closed key block's END marker: the cut stays where it is
        if (
            state.awaits
            and self._carry is not None
            and self._carry.keeps_cut(bytes(state.text[-_AWAITED_END:]), piece, state.awaits)
        ):
            return  # a key block's lines before its END marker: the cut stays where it is
        state.blocks = _DIRTY

    def _releasable(self) -> int:
        """How many of the held messages (from the first) no later piece can join: the
        fewest any path lets go, each path's cut read only when it may matter."""
        if self._whole:
            return 0
        dirty = []
        first = self._first
        least = first + len(self._held)
        for state in self._paths.values():
            if state.blocks == _DIRTY:
                dirty.append(state)
            elif state.blocks <= first:
                return 0  # this one holds the first message back: nothing else matters now
            else:
                least = min(least, state.blocks)
        for state in dirty:
            self._read(state)
            if state.cut is None:
                return 0
            least = min(least, state.blocks)
        least = min(least, self._integers.first_held())
        return max(0, least - first)

    def _read(self, state: _Path) -> None:
        """Cut ``state``'s text, and note the first message the cut holds back."""
        text = bytes(state.text)
        cut = self.cut(text)
        state.cut = cut
        state.awaits = state.glued = b""
        if cut is None:
            self._whole += 1
            state.blocks = 0
            return
        # The first piece that ends past the cut (ends are in order).
        at = bisect_left(state.ends, state.base + cut + 1)
        state.blocks = state.messages[at] if at < len(state.messages) else _FREE
        if self._carry is not None:
            state.members = self._carry.run_members(text[cut:])
            state.awaits = self._carry.open_block(text, cut)
            if not (state.members or state.awaits):
                state.glued = _glued_run(self._carry, text, cut)
        else:
            state.members = b""

    def _release(self, count: int, max_values: int | None = None) -> list[Message]:
        """The first ``count`` messages held, once no value straddles them. What reading them
        across takes (each path's pieces joined, in every reading, and the texts a PEM block
        may run on into) is counted against ``max_values`` as one reply's classification is
        (``messages.MessageValues``: a text's bytes, a value per 128, four times that when it
        is read again decoded; each detection two), before it is read: past it the stream
        ends (``MESSAGE_TOO_MANY_VALUES``) and nothing is released. Unbounded, the end of a
        stream of 6 MiB of binary read it for 10 s (review); each path's text is weighed
        before any is read, so a large one is refused at once."""
        if count == 0:
            return []
        last = self._first + count  # the first message kept
        values = MessageValues(max_values)
        across = []  # the paths whose pieces are read joined
        for state in self._paths.values():
            pieces = _released_pieces(state, last)
            if len(pieces) > 1:
                values.take(len(pieces))
                values.take_text(b"".join(pieces))
                across.append(state)
        detectors = self.detectors if max_values is None else self.detectors.counting(values.found)
        for state in across:  # its pieces taken again: one path's copy at a time
            self._refuse_split(state.shown, _released_pieces(state, last), detectors)
        if self._keys_open or (self._marked and min(self._marked) < last):
            self._follow_keys(count, values)
        for path, state in self._paths.items():
            taken = bisect_left(state.messages, last)
            if taken:
                self._read_joined(
                    path, state, bytes(state.text[: state.ends[taken - 1] - state.base]), values
                )
        for offset in range(count):  # a message at a time: each is classified on its own
            for path, shown, numbers in self._fields[offset]:
                self._integers.released(path, shown, numbers, values)
        released = []
        for _ in range(count):
            self._fields.popleft()
            message, size = self._held.popleft()
            self._held_bytes -= size
            released.append(message)
        self._first = last
        for path in list(self._paths):
            state = self._paths[path]
            taken = bisect_left(state.messages, last)
            if not taken:
                continue  # none of its pieces left: its text and cut stand
            boundary = state.ends[taken - 1] - state.base
            del state.text[:boundary], state.messages[:taken], state.ends[:taken]
            state.base += boundary
            self._held_bytes -= boundary + taken * PIECE_COST
            if state.cut is None:
                self._whole -= 1
            state.blocks, state.cut, state.awaits, state.glued = _DIRTY, 0, b"", b""
            if not state.text:  # what pieces are left of it are empty
                self._held_bytes -= (
                    len(state.messages) * PIECE_COST + PATH_COST + len(path) + len(state.shown)
                )
                del self._paths[path]
        return released

    def _follow_keys(self, count: int, values: MessageValues) -> None:
        """A PEM block one message's text opens and does not close runs on into the messages
        after it, on every path: each message is classified on its own, and the key's lines
        in a later message's other field (or its own) show no marker (``key_blocks``). The
        message that opens it is covered whole (``messages``: every text of a reply that opens
        a block); a later one whose texts, but those holding the awaited END marker (in any
        form the scan reads) and blank ones, are not empty would carry lines of the key no
        mask covers: the stream ends (``STREAM_VALUE_SPLIT``) before it leaves, as a value
        split across one path's messages does. Asked only while a block is open or of
        messages whose text may spell a marker (``_may_spell_key``); each message walked and
        each text read counted against ``values`` (the release's: ``_release``)."""
        awaited = self._keys_open
        for offset in range(count):
            number = self._first + offset
            marked = number in self._marked
            if not awaited and not marked:
                continue
            self._marked.discard(number)
            texts = [text for _, _, text in _texts(self._held[offset][0], values)]
            for text in texts:
                values.take_text(text)  # read in every form the scan reads (``key_blocks``)
            opened: set[bytes] = set()
            if awaited:
                found: set[bytes] = set()
                for text in texts:
                    if not text.strip():
                        continue
                    _, left = key_blocks.run_on(text, awaited)
                    closes = awaited - left
                    if not closes:
                        raise UpstreamError(
                            reasons.STREAM_VALUE_SPLIT,
                            "the upstream sent a private key's lines in a later message of a stream "
                            "than its BEGIN marker; each message is masked on its own, so it is not sent",
                        )
                    found |= closes
                    opened |= left - awaited
                awaited = awaited - found
            if marked:
                for text in texts:
                    opened |= key_blocks.awaited_after(text)
            awaited = awaited | frozenset(opened)
        self._keys_open = awaited

    def _read_joined(self, path: str, state: _Path, text: bytes, values: MessageValues) -> None:
        """The text of ``path`` the messages being released carry, read after what of it left
        before, in the order a reader sees them joined (``display_context``); text that is not
        text (binary: ``_is_noise``, or not UTF-8 where it reads as no text) is not read so. A
        value only their joining shows ends the stream before they leave."""
        if not text or _is_noise(text):
            return
        decoded = text.decode("utf-8", "replace")
        if not (decoded.isascii() or reads_as_text(decoded)):
            return

        def charge(size: int) -> None:
            values.take(3 * size * DECODED_TEXT_WEIGHT // TEXT_BYTES_PER_VALUE)

        found = self._shown.take(path, decoded, charge)
        if found == display_context.UNREADABLE:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream sent a right-to-left character or a bidi control (field {state.shown}) after "
                "more of a stream's text than the gateway keeps to read it with; each message is masked "
                "on its own, so it is not sent",
            )
        if found is not None:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream split a value its detectors call {found} across the messages of a stream "
                f"(field {state.shown}) that only shows in the order a reader displays them joined (a "
                "right-to-left character or a bidi control in one message); each message is masked on "
                "its own, so it is not sent",
            )

    def _refuse_split(self, path: str, pieces: list[bytes], detectors: DetectorSet) -> None:
        straddling = straddled(detectors, pieces)
        if straddling == UNREADABLE:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream sent text that cannot be read across the messages of a stream (field "
                f"{path}: a cursor movement or a character the gateway cannot fold); each message is "
                "masked on its own, so it is not sent",
            )
        if straddling is not None:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream split a value its detectors call {straddling} across the messages of a "
                f"stream (field {path}); each message is masked on its own, so it is not sent",
            )


# ``straddled``'s answer for joined text one of whose readings cannot be folded.
UNREADABLE: Final = "\x00unreadable"
# A reading of text (``_Readings``): how many levels of JSON escapes are decoded, whether
# character references are then decoded, and whether it is folded (``_FOLDED``), or folded
# and rendered (``_RENDERED``: ``shown_text.rendered_reading``); or the wide decode; or the
# decode in one legacy encoding, folded (``_LEGACY``, by encoding).
_Kind = tuple[int, bool, int]
_FOLDED: Final = 1
_RENDERED: Final = 2
_WIDE: Final[_Kind] = (-1, False, _FOLDED)
_LEGACY: Final[dict[str, _Kind]] = {
    encoding: (-2 - index, False, _FOLDED) for index, encoding in enumerate(LEGACY_ENCODINGS)
}


def straddled(detectors: DetectorSet, pieces: Sequence[bytes]) -> str | None:
    """A detector that finds a value in the text of ``pieces`` joined, in any reading the
    classifier gives text (as written, escapes and references decoded, folded: ``_Readings``),
    some byte of which no value that detector finds in the same reading of the piece holding
    that byte covers; ``UNREADABLE`` when a reading of the joined text cannot be folded; else
    None. Each message's classification masks every value of any reading of its piece
    (at its offsets, or the piece whole), so a value so covered is masked; any other was made
    by the joining. Where, not how many: a whole value in one piece that the next piece's
    first digit turns into no value (``321-54-9876`` + ``1``) must not stand in for a value
    split across two others. Values side by side (``ann@x.com`` + ``bob@y.com``, one email
    joined) are covered byte by byte. A reading that does not split where the pieces do (an
    escape, a terminal sequence or a combining mark across two pieces) places nothing: a
    value in it is refused."""
    joined = _Readings(b"".join(pieces), joined=True)
    parts = [_Readings(piece) for piece in pieces]
    read: set[bytes] = set()  # readings of the joined text scanned: another like one is the same
    # Binary (audio, a file's chunks) makes values of a few bytes by chance (``8::`` is an IPv6
    # address), in every reading, across pieces too: such a value counts from
    # ``_LOOSE_SHORTEST`` bytes on in it, as in numbers' raw bytes that are not text. Only in
    # the pieces that are binary: another message of random bytes (which the upstream may
    # add at will) must not make a short email split across pieces of text noise too.
    binary = _Binary(joined.levels[0], pieces)
    for kind in joined.kinds():
        form = joined.form(kind)
        if form is UNFOLDABLE:
            return UNREADABLE
        if form is None or form in read:
            continue
        read.add(form)
        hits = detectors.scan(form)
        if not hits:
            continue
        forms: list[bytes | None] | None = None
        starts: list[int] | None = None
        if binary.some and any(_chance(hit) for hit in hits):
            if not binary.every:  # else no piece's reading is needed to drop them
                forms = [part.form(kind) for part in parts]
                starts = _placed(forms, form)
            hits = [hit for hit in hits if not (_chance(hit) and binary.holds(hit, kind, form, starts))]
            if not hits:
                continue
        if forms is None:
            forms = [part.form(kind) for part in parts]
            starts = _placed(forms, form)
        if starts is None:
            return min(hit.detector for hit in hits)  # the pieces' readings place nothing
        found: dict[int, list[Detection]] = {}
        for hit in hits:
            first = bisect_right(starts, hit.start) - 1
            spans = []
            for index in range(first, len(pieces)):
                if starts[index] >= hit.end:
                    break
                if index not in found:
                    found[index] = detectors.scan(forms[index] or b"")  # alone: no block runs on
                spans += [
                    (starts[index] + own.start, starts[index] + own.end)
                    for own in found[index]
                    if own.detector == hit.detector
                ]
            if not _covers(spans, hit.start, hit.end):
                return hit.detector
    return None


# A text more than one byte in this many of which (plus a few) is a control byte is binary.
_NOISE_STRAY: Final = 32
_NOISE_SLACK: Final = 4
# A piece at least this long, with more than one control byte in this many, is binary when the
# run of binary pieces it is in is (``_Binary``).
_POOLED: Final = 64


def _is_noise(text: bytes, stray: int = _NOISE_STRAY, slack: int = _NOISE_SLACK) -> bool:
    """Whether ``text`` is binary, not text: not UTF-8 (no string is), and more control bytes
    than one in ``_NOISE_STRAY`` plus ``slack``, NULs aside, as ``other_encodings.legacy_readings``
    tells binary from text in an encoding. C-level passes (a decode stops at binary's first
    stray byte)."""
    if text.isascii() or is_utf8(text):
        return False
    nuls = text.count(0)
    controls = len(text) - len(text.translate(None, CONTROLS)) - nuls
    return controls > (len(text) - nuls) // stray + slack


def _chance(hit: Detection) -> bool:
    """Whether ``hit``, if found in binary, may be a value its noise makes by chance: an IPv6
    address or an email shorter than ``numbers._LOOSE_SHORTEST`` bytes."""
    return hit.detector in _LOOSE and hit.end - hit.start < _LOOSE_SHORTEST


class _Binary:
    """Which of a path's pieces are binary, and whether a value a reading of their joined text
    shows lies in those alone: then a chance value of binary (``_chance``) counts for nothing.
    Decided piece by piece, never over the joined text: one message of random bytes (the
    upstream may add one at will) made the whole path binary, and a short email split across
    two pieces of plain text beside it noise. A piece is binary when ``_is_noise`` says so of
    it alone; or, from ``_POOLED`` bytes on, when it is not UTF-8, more than one byte in
    ``_POOLED`` of it is a control byte (NULs aside) and the run of pieces each binary either
    way that it is in is binary by ``_is_noise``, joined: of random bytes in chunks of 96
    bytes (compressed audio's frames) one chunk in 9 holds too few control bytes for the
    slack (of 160 bytes, one in 150), and a chance value across such a chunk ended its
    stream. Text (UTF-8, or any bytes without a control byte: a legacy encoding's, a stray
    byte's) and a piece shorter than that are never binary because of what is beside them.
    Each piece is read once (C-level passes); runs of pieces alike are read again only where
    a reading needs them (``_binary_spans``)."""

    def __init__(self, text: bytes, pieces: Sequence[bytes]) -> None:
        self.text = text  # the pieces joined
        self.pieces = pieces
        self.flags = _binary_pieces(pieces)
        self.some = any(flag and piece for flag, piece in zip(self.flags, pieces, strict=True))
        self.every = all(self.flags)
        # Runs of pieces alike (binary or not), each read joined, cut where the pieces are and
        # with their edges moved (``_runs``); and, per reading and layout, the binary runs'
        # places in it (``_binary_spans``). Worked out when asked.
        self._layouts: dict[bool, list[tuple[bool, _Readings]]] = {}
        self._spans: dict[tuple[_Kind, bool], tuple[list[int], list[int]]] = {}

    def holds(self, hit: Detection, kind: _Kind, form: bytes, starts: list[int] | None) -> bool:
        """Whether every byte of ``hit``, found in the reading ``kind`` of the joined text
        (``form``), comes from pieces that are binary; ``starts``: where each piece's reading
        starts in ``form`` (``_placed``), None when they do not make it (a character split
        across two binary chunks): then runs of pieces alike are read joined instead, and a
        value no binary run's reading is placed over is not known to lie in binary: it
        counts."""
        if self.every:
            return True
        if starts is not None:
            index = bisect_right(starts, hit.start) - 1
            while index < len(self.flags) and starts[index] < hit.end:
                if starts[index + 1] > starts[index] and not self.flags[index]:
                    return False  # a byte of it from a piece that is not binary
                index += 1
            return True
        for moved in (False, True):
            firsts, lasts = self._binary_spans(kind, form, moved)
            index = bisect_right(firsts, hit.start) - 1
            if index >= 0 and hit.end <= lasts[index]:
                return True
        return False

    def _binary_spans(self, kind: _Kind, form: bytes, moved: bool) -> tuple[list[int], list[int]]:
        """Where the binary runs (cut where the pieces are, or with their edges ``moved``:
        ``_runs``) lie in the reading ``kind`` of the joined text (``form``), in order: those
        whose own reading is its bytes there, the runs before them (or after them) placed
        so too (``_placed_runs``). Worked out once per reading and layout, when a chance
        value needs it: each byte of the path read at most twice more in that reading."""
        if (kind, moved) not in self._spans:
            if moved not in self._layouts:
                self._layouts[moved] = [
                    (binary, _Readings(self.text[start:end], joined=True))
                    for binary, start, end in _runs(self.text, self.pieces, self.flags, moved)
                ]
            runs = self._layouts[moved]
            places = _placed_runs([reading.as_part(kind) for _, reading in runs], form)
            spans = sorted(place for place, (binary, _) in zip(places, runs, strict=True) if place and binary)
            self._spans[kind, moved] = ([start for start, _ in spans], [end for _, end in spans])
        return self._spans[kind, moved]


def _placed_runs(forms: Sequence[bytes | None], form: bytes) -> list[tuple[int, int] | None]:
    """Where each of ``forms`` lies in ``form``, for those placed from its start (each where
    the one before ended, its bytes there) and from its end likewise, up to the first that
    is not; None for the others: where the joined reading differs from the runs' (a tag, a
    style or a hidden element across two runs: markup is not read run by run alike), a value
    is not placed. Linear."""
    places: list[tuple[int, int] | None] = [None] * len(forms)
    start = 0
    front = 0
    for index, part in enumerate(forms):
        if part is None or not form.startswith(part, start):
            break
        places[index] = (start, start + len(part))
        start += len(part)
        front = index + 1
    end = len(form)
    for index in range(len(forms) - 1, front - 1, -1):
        part = forms[index]
        if part is None or end - len(part) < start or not form.endswith(part, 0, end):
            break
        places[index] = (end - len(part), end)
        end -= len(part)
    return places


def _binary_pieces(pieces: Sequence[bytes]) -> list[bool]:
    """Which of ``pieces`` are binary (``_Binary``). An empty piece holds no byte of any
    value: it is binary, and does not end a run."""
    flags = [not piece or _is_noise(piece) for piece in pieces]
    dense = [
        flag or (len(piece) >= _POOLED and _is_noise(piece, stray=_POOLED, slack=0))
        for flag, piece in zip(flags, pieces, strict=True)
    ]
    start = 0
    while start < len(pieces):
        if not dense[start]:
            start += 1
            continue
        end = start
        while end < len(pieces) and (dense[end] or not pieces[end]):
            end += 1
        if _is_noise(b"".join(pieces[start:end])):
            flags[start:end] = [True] * (end - start)
        start = end
    return flags


def _runs(
    text: bytes, pieces: Sequence[bytes], flags: Sequence[bool], moved: bool
) -> list[tuple[bool, int, int]]:
    """(binary, start, end) of each run of ``pieces`` alike in ``text`` (their join), empty
    pieces aside. Cut where the pieces are, a character of binary split there (UTF-8, a
    legacy encoding's) reads otherwise in the joined reading, which the runs' readings would
    not make; so, if ``moved``, each edge of a binary run moves into it, up to
    ``_EDGE_REACH`` bytes, to the nearest place between two ASCII letters or digits (no
    multi-byte character, no escape and no markup but the rarest holds two side by side), or
    the text beside it takes it whole. Bytes of binary so given to text count as text's,
    never the other way. (Given to a short text, they may make it text that cannot be folded
    where the binary could: the edges where the pieces are are tried first.)"""
    runs: list[list[Any]] = []
    at = 0
    for binary, piece in zip(flags, pieces, strict=True):
        if piece:
            if runs and runs[-1][0] == binary:
                runs[-1][2] = at + len(piece)
            else:
                runs.append([binary, at, at + len(piece)])
        at += len(piece)
    for index, run in enumerate(runs):
        binary, start, end = run
        if not (binary and moved):
            continue
        if index:  # text before it: its start moves on
            found = _BETWEEN_ALNUM.search(text, start, min(end, start + _EDGE_REACH) + 1)
            start = found.start() if found else end
            runs[index - 1][2] = start
        if index + 1 < len(runs):  # text after it: its end moves back
            places = [
                found.start()
                for found in _BETWEEN_ALNUM.finditer(text, max(start, end - _EDGE_REACH), end + 1)
            ]
            end = places[-1] if places else start
            runs[index + 1][1] = end
        run[1], run[2] = start, end
    merged: list[tuple[bool, int, int]] = []
    for binary, start, end in runs:
        if end <= start:
            continue  # binary the text beside it took whole: that text is one run
        if merged and merged[-1][0] == binary:
            merged[-1] = (binary, merged[-1][1], end)
        else:
            merged.append((binary, start, end))
    return merged


# A place between two ASCII letters or digits (``_runs``), and how far into binary it is looked for.
_BETWEEN_ALNUM: Final = re.compile(rb"(?<=[0-9A-Za-z])(?=[0-9A-Za-z])")
_EDGE_REACH: Final = 256


def _placed(forms: Sequence[bytes | None], form: bytes) -> list[int] | None:
    """Where each of ``forms`` starts in ``form``, and where the last ends, when they make it
    in order; else None."""
    if any(part is None or part is UNFOLDABLE for part in forms):
        return None
    if b"".join(part for part in forms if part is not None) != form:
        return None
    return list(itertools.accumulate((len(part or b"") for part in forms), initial=0))


def _covers(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``spans`` together cover every byte of ``[start, end)``."""
    reached = start
    for first, last in sorted(spans):
        if first > reached:
            break
        reached = max(reached, last)
        if reached >= end:
            return True
    return reached >= end


class _Readings:
    """The readings of one text the classifier scans (``hidden_by_escapes``, ``hidden_by_folding``):
    as written, with up to ``MAX_UNESCAPE_LEVELS`` levels of JSON escapes decoded, each of those
    with its character references decoded, each folded, its wide decode, and, for bytes that
    are not UTF-8 (a bytes field's), each legacy encoding it reads as text in
    (``other_encodings.legacy_readings``). The same reading of the joined text and of each piece is
    the same kind: a piece with no escape decodes to itself. Worked out when asked for: most
    joined text needs its raw reading only."""

    def __init__(self, text: bytes, joined: bool = False) -> None:
        self.levels = [text]
        self.joined = joined  # the joined text, not a piece of it
        self._legacy: dict[str, bytes] | None = None  # encoding -> folded form, once read
        self._unreferenced: dict[int, bytes] = {}  # escape level -> its references decoded
        self._folds: dict[bytes, bytes | None] = {}  # decoded form -> ``folded``
        self._memo = FoldMemo()

    def kinds(self) -> Iterator[_Kind]:
        """The readings of this (joined) text that may differ from the others."""
        text = self.levels[0]
        yield (0, False, 0)
        if may_hide(text):
            yield (0, False, _FOLDED)
            yield (0, False, _RENDERED)
        if 0 in text or text.startswith((b"\xff\xfe", b"\xfe\xff")):
            yield _WIDE
        if not text.isascii() and not is_utf8(text):
            for encoding in self._legacy_forms():
                yield _LEGACY[encoding]
        if not may_escape(text):
            return
        for level in range(MAX_UNESCAPE_LEVELS + 1):
            current = self._level(level)
            if level and current == self._level(level - 1):
                break
            if level:
                yield (level, False, 0)
                yield (level, False, _FOLDED)
                yield (level, False, _RENDERED)
            if may_reference(current):
                yield (level, True, 0)
                yield (level, True, _FOLDED)
                yield (level, True, _RENDERED)

    def form(self, kind: _Kind) -> bytes | None:
        """This text in the reading ``kind``: None when it does not read so (no wide decode),
        ``UNFOLDABLE`` when it cannot be folded."""
        if kind == _WIDE:
            return wide_folded(self.levels[0])
        level, unreferenced, folds = kind
        if level < -1:
            return self._legacy_form(LEGACY_ENCODINGS[-2 - level])
        text = self._decoded(level, unreferenced)
        if not folds:
            return text
        form = self._folded(text)
        if folds == _RENDERED:
            # The joined text's rendered reading, None when it has none (``straddled`` skips
            # it); a piece's is rendered whatever it holds (``rendered_folded``), as that of
            # a text is (``hidden_by_folding``).
            if form is UNFOLDABLE:
                return None if self.joined else form
            if self.joined:
                return rendered_reading(text, form)
            return rendered(text if form is None else form)
        return text if form is None else form

    def as_part(self, kind: _Kind) -> bytes | None:
        """This (joined) text in the reading ``kind`` as it reads as part of a longer text so
        read (``_Binary``): as folded where it does not render otherwise, decoded in a legacy
        encoding whether or not it reads as text there; None when it does not read so (no
        wide decode) or cannot be folded."""
        form: bytes | None
        if kind[0] < -1:
            form = legacy_folded(LEGACY_ENCODINGS[-2 - kind[0]], self.levels[0])
        else:
            form = self.form(kind)
            if form is None and kind[2] == _RENDERED:
                form = self.form((kind[0], kind[1], _FOLDED))
        return None if form is UNFOLDABLE else form

    def _decoded(self, level: int, unreferenced: bool) -> bytes:
        """The text with ``level`` levels of escapes decoded, then its references if asked."""
        text = self._level(level)
        if not unreferenced:
            return text
        found = self._unreferenced.get(level)
        if found is None:
            found = self._unreferenced[level] = _unreferenced(text)
        return found

    def _folded(self, text: bytes) -> bytes | None:
        """``folded(text)`` of one of this text's decoded forms, each worked out once (its
        folded and rendered readings share it), with one ``FoldMemo`` for them all: they
        differ where escapes or references were decoded, no more, as the classifier folds
        them (``json_elements.hidden_by_escapes``)."""
        if text not in self._folds:
            self._folds[text] = folded(text, self._memo)
        return self._folds[text]

    def _legacy_forms(self) -> dict[str, bytes]:
        """The legacy readings of this text, by encoding (``other_encodings.legacy_readings``)."""
        if self._legacy is None:
            self._legacy = dict(legacy_readings(self.levels[0]))
        return self._legacy

    def _legacy_form(self, encoding: str) -> bytes | None:
        """This text decoded as ``encoding`` and folded; for a piece, as its own classification
        reads it: ASCII folded (the same in every one of these encodings), bytes that are not
        UTF-8 when they read as text in ``encoding`` (``legacy_readings``), else None (UTF-8
        is read in no legacy encoding): the piece places nothing."""
        text = self.levels[0]
        if self.joined:
            return self._legacy_forms()[encoding]
        if text.isascii():
            form = folded(text)
            return text if form is None else form
        if is_utf8(text):
            return None
        form = legacy_folded(encoding, text)
        return form if form in self._legacy_forms().values() else None

    def _level(self, level: int) -> bytes:
        while len(self.levels) <= level:
            last = self.levels[-1]
            self.levels.append(_ESCAPE.sub(_unescape_match, last) if b"\\" in last else last)
        return self.levels[level]


def _released_pieces(state: _Path, last: int) -> list[bytes]:
    """The pieces of ``state``'s text that the messages before ``last`` carry, empty ones left
    out (they hold no byte of a value)."""
    taken = bisect_left(state.messages, last)
    if taken < 2:
        return []
    edges = [state.base, *state.ends[:taken]]
    pieces = [
        bytes(state.text[start - state.base : end - state.base]) for start, end in itertools.pairwise(edges)
    ]
    return [piece for piece in pieces if piece]


def _glued_run(carry: CarryOver, text: bytes, cut: int) -> bytes:
    """For ``text`` cut at ``cut`` by ``carry``: the bytes that, appended, leave the cut where
    it is because a run glued to a closed PEM block's END marker holds it at the block's start
    or before (``-----END RSA PRIVATE KEY-----1111``...), else nothing. The run's match never
    ends and the window's cut falls in it (its first bytes at most one window after the
    block's end), moves back to the run's start inside the END marker (``-`` is a byte of every
    run), and from there to the block's start, which only the block's own bytes and what comes
    before them decide: no other match or run reaches from before a PEM marker past its
    spaces, and custom matches fit the window. So appended bytes of that run (text a raw scan
    can still judge: ``_stays_cuttable``) leave the cut where it was; the cut read again on
    every message read the whole text again each time. A token run needs a secret's prefix
    wholly before the window's cut (a number-like run inside it stops the cut only past it)."""
    window_at = len(text) - carry.window
    if window_at <= cut or credentials.NAME not in carry.detectors.names:
        return b""
    block = credentials.last_block(text)
    if block is None:
        return b""
    start, end, awaited = block
    if awaited is not None or cut > start or end >= window_at:
        return b""
    rest = text[end:]
    members = carry.run_members(rest)
    if members:
        return members
    if not rest.lstrip(credentials.RUN_BYTES) and any(
        prefix in text[end:window_at] for prefix in credentials.PREFIXES
    ):
        return credentials.RUN_BYTES
    return b""


def _stays_cuttable(text: bytearray, piece: bytes) -> bool:
    """Whether ``piece``, appended to cuttable ``text``, leaves it text a raw scan can judge
    (``CarryOver.cut_point``): it makes no text to fold, no markup next to a value's
    character (``__1__``), no escape. Their tests look a few bytes around a byte, which the
    text's last ``_AWAITED_END`` bytes hold. C-level searches over the piece and a few bytes."""
    joined = bytes(text[-_AWAITED_END:]) + piece
    return not may_hide(joined) and not may_escape(joined)


def _may_spell_key(text: bytes) -> bool:
    """Whether ``text`` may hold a PEM marker: ``PRIVATE KEY`` as written, or escapes or text
    to fold that may spell one. (A marker split across one path's messages is refused there:
    ``straddled``.) C-level searches."""
    return b"PRIVATE KEY" in text or may_escape(text) or may_hide(text)


def text_fields(message: Message) -> Iterator[tuple[str, str, bytes]]:
    """(path, shown path, text) of every string and bytes field set in ``message``, at any
    depth, an Any's contents (``_any``) too, read as the classifier reads them (``_value``):
    the texts read across the held messages. The path tells map entries apart by their key;
    the shown path, for error texts, writes each map key as ``{}`` (a key is the upstream's
    text, which no policy decided on), and an Any's contents under ``{}.``, as the classifier
    does (``extra{}.text``)."""
    return _texts(message, MessageValues(None))


# (path, shown path, text)
_Text = tuple[str, str, bytes]
_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


# (path, shown path, its values in order, whether a repeated field's, whether a float or
# double field's): an integer field's values (``HeldIntegers.follow``), or a float field's,
# read as integers where the classifier reads them so (``_by_field``).
_Integers = tuple[str, str, list[Any], bool, bool]


def _texts(
    message: Message, values: MessageValues, integers: list[_Integers] | None = None
) -> Iterator[_Text]:
    """``integers``: where to put the integer fields met on the way (none: passed by)."""
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        # A reply that is itself an Any: one field, named as the classifier names it.
        yield from _any(message, ANY_REPLY_FIELD, ANY_REPLY_FIELD, 0, values, integers)
    else:
        yield from _walk(message, "", "", 0, values, integers)


# An element of a repeated message (or a map's message value) in a path: ``chars[0].c``.
_ELEMENT = re.compile(r"\[\d+\](?=\.)")


def _by_field(integers: list[_Integers]) -> list[tuple[str, str, list[int], bool, bool]]:
    """A message's integer paths, the elements of a repeated message's one field taken
    together in order (``chars[0].c``, ``chars[1].c``: ``chars[].c``, whether ``records``), as
    the classifier reads them (``messages``: an integer field of a repeated message); the rest
    as they are. A record's field followed per element let a value split across messages'
    records out (review). A float or double field's values are integers where they are all
    whole numbers (``integer_text.whole_numbers``: a repeated field's, a records' field's
    across the records, a scalar), as the classifier reads them (``messages._as_integers``);
    else they are not followed: ``double`` code points one a message went out where int64
    ones ended the stream (review)."""
    fields: dict[str, tuple[str, list[Any], bool, bool, bool]] = {}
    for path, shown, numbers, repeated, floats in integers:
        field_path = _ELEMENT.sub("[]", path)
        records = field_path != path and not repeated
        if records:
            path, shown = field_path, _ELEMENT.sub("[]", shown)
        known = fields.get(path)
        if known is None:
            fields[path] = (shown, list(numbers), repeated, records, floats)
        else:
            known[1].extend(numbers)
    found = []
    for path, (shown, numbers, repeated, records, floats) in fields.items():
        if floats:
            whole = whole_numbers(numbers)
            if whole is None:
                continue  # a fraction among them: not read as integers
            numbers = whole[0]
        found.append((path, shown, numbers, repeated, records))
    return found


def _walk(
    message: Message,
    prefix: str,
    shown: str,
    depth: int,
    values: MessageValues,
    integers: list[_Integers] | None = None,
) -> Iterator[_Text]:
    if depth > _MAX_DEPTH:
        return
    present = message.ListFields()
    # Counted before any is looked at, as the classifier counts (a shape of a million dims).
    values.take(len(present) + sum(len(value) for field, value in present if field.is_repeated))
    for descriptor, value in present:
        if descriptor.is_extension:
            continue  # neither classified nor released (``messages.without_extensions``)
        path, named = f"{prefix}{descriptor.name}", f"{shown}{descriptor.name}"
        if not is_message(descriptor) and descriptor.type not in _TEXT_TYPES:
            # No text to hold, no step per element; integers (enums too) are read across
            # messages as the classifier reads a repeated one (``held_integers``), and so are
            # floats and doubles where they are whole numbers (``_by_field``).
            if integers is not None and _may_be_integers(descriptor):
                numbers = list(value) if descriptor.is_repeated else [value]
                floats = descriptor.cpp_type in FLOAT_CPP_TYPES
                integers.append((path, named, numbers, descriptor.is_repeated, floats))
            continue
        if is_map(descriptor):
            value_field = message_type_of(descriptor).fields_by_name["value"]
            if value_field.cpp_type in FLOAT_CPP_TYPES and whole_numbers(list(value.values())) is None:
                # As the classifier reads a map's values: whole numbers all, or not integers.
                continue
            # A map of Any is shown as the classifier names it, its contents under ``anys{}.``.
            opened = (
                "" if is_message(value_field) and message_type_of(value_field).full_name == ANY_TYPE else "{}"
            )
            for key in sorted(value, key=str):
                yield from _value(
                    value_field,
                    value[key],
                    f"{path}[{key!r}]",
                    f"{named}{opened}",
                    depth,
                    True,
                    values,
                    integers,
                )
        elif descriptor.is_repeated:
            for index, item in enumerate(value):
                yield from _value(
                    descriptor, item, f"{path}[{index}]", f"{named}[{index}]", depth, False, values, integers
                )
        else:
            yield from _value(descriptor, value, path, named, depth, False, values, integers)


def _value(
    descriptor: FieldDescriptor,
    value: Any,
    path: str,
    shown: str,
    depth: int,
    in_map: bool,
    values: MessageValues,
    integers: list[_Integers] | None = None,
) -> Iterator[_Text]:
    """One value of a field (an item of a repeated one, a map's value)."""
    if is_message(descriptor):
        if message_type_of(descriptor).full_name == ANY_TYPE:
            yield from _any(value, path, shown, depth + 1, values, integers)
        else:
            yield from _walk(value, f"{path}.", f"{shown}.", depth + 1, values, integers)
    elif _may_be_integers(descriptor):
        if integers is not None:  # a map's integer value, one a key (a float: whole, ``_walk``)
            integers.append((path, shown, [value], False, descriptor.cpp_type in FLOAT_CPP_TYPES))
    elif descriptor.type in _TEXT_TYPES:
        if descriptor.type == FieldDescriptor.TYPE_STRING and not in_map and not isinstance(value, str):
            # As the classifier refuses it (``messages._Walker._queue``), before it is held.
            raise UpstreamError(
                reasons.MESSAGE_STRING_INVALID,
                f"the upstream's reply has a string field ({shown}) that is not UTF-8",
            )
        # As the classifier reads it (``messages._text``): a string as its UTF-8 bytes, bytes
        # (and a map's string value that is not UTF-8, which proto2 hands over as bytes) as
        # they are.
        yield path, shown, _text(value)


def _may_be_integers(descriptor: FieldDescriptor) -> bool:
    """Whether a field's values are read as integers (``_by_field``): an integer or enum
    field's, a float or double field's when they are whole numbers."""
    return descriptor.cpp_type in CHARACTER_DTYPES or descriptor.cpp_type in FLOAT_CPP_TYPES


def _any(
    packed: Message,
    path: str,
    shown: str,
    depth: int,
    values: MessageValues,
    integers: list[_Integers] | None = None,
) -> Iterator[_Text]:
    """An Any's contents, as release re-encodes them (``messages.unpacked_any``), under
    ``path{}.``; an Any that packs an Any is read through to the message at the end. One the
    gateway cannot read (its type not in the route's descriptor set, bytes that do not parse)
    may hold a piece of any text of the stream's other messages, which nothing can join: the
    stream ends before it leaves. (Its type URL is not read across messages: it ends in a
    type name the pool knows, so no value runs on across two; each message's classification
    scans it.)"""
    if depth > _MAX_DEPTH:
        return
    values.take(FIXED_STEP_VALUES)  # parsed apart, as the classifier's walk counts it
    # Extensions are left in (``_walk`` passes them by): stripping them first would visit
    # every message the contents hold before one is counted.
    contents, why = unpacked_any(packed, keep_extensions=True)
    if contents is None:
        raise UpstreamError(
            reasons.STREAM_VALUE_SPLIT,
            f"the upstream sent a google.protobuf.Any the gateway cannot read (field {shown}: {why}) "
            "in a stream whose values may straddle its messages; each message is masked on its own, "
            "so it is not sent",
        )
    if contents.DESCRIPTOR.full_name == ANY_TYPE:
        yield from _any(contents, path, shown, depth + 1, values, integers)
    else:
        yield from _walk(contents, f"{path}{{}}.", f"{shown}{{}}.", depth + 1, values, integers)
