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
- when messages are released, each path's text across them (and across the held pieces up to
  the one its cut falls in: a value may reach from a released piece into a held one) is
  scanned as the classifier reads text (raw, escapes and references decoded, folded, bytes
  that are not UTF-8 in the legacy encodings they read as text in: ``straddled``), and so is
  each message's piece on its own, in the same reading. A value across the pieces some byte
  of which no value of the same detector in its own piece covers is one only their joining
  makes: the stream ends (``STREAM_VALUE_SPLIT``) before any piece of it leaves, since each
  message is masked on its own and no mask could cover it (a ``partial`` mask would show the
  last characters of each piece). Where, not how many: a whole value in one piece that the
  next piece's first digit turns into no value must not stand in for one split across two
  others. Whole values side by side (``ann@x.com`` then ``bob@y.com``, one email joined) are
  covered byte by byte. In binary (``binary_pieces.is_noise``) an IPv6 address or an email
  counts from 16 bytes on, as in numbers' raw bytes that are not text (``8::`` is noise):
  only where every byte of it comes from messages whose piece is binary itself
  (``binary_pieces.Binary``), never because some other message of the path is.

Integer fields (repeated, scalar, a map's values), which a client reads back with ``chr`` as
the classifier reads a repeated one (``integer_text``), and float and double ones whose values
are whole numbers, as it reads those (``integer_fields.by_field``), are followed by path too
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
block's END marker that its own bytes extend (``held_cuts.glued_run``): the run pulls the cut back
into the marker, the block to its start, and the whole text was read again per message.

A path is one text only where its position names it: a stream that moves one text between
list positions (``choices[0]`` carrying choice 1 in some messages) is read per position. A
map's is read by key and at the map's path too (``message_texts._map_lanes``): its string
keys (``tags{keys}``) and its string and bytes values whatever their key (``tags{}``), a
token stream putting its pieces in keys or under keys that change. A message's entries are
one piece there, in key order; a caller may read them in any order, so each entry of a
message is also read joined to each entry of the next message on the path
(``_unread_pairs``, weighed with the rest), a pair once. A
record stream (each message a whole record) is not a token stream: its ids side by side are
one digit run, held to the end and at worst refused; such routes set ``per_message``.

Beside this module: the readings a path's text is compared in, joined and piece by piece
(``piece_readings``), which pieces are binary (``binary_pieces``), when an appended piece
leaves a path's cut where it was (``held_cuts``), and which values are read as integers
(``integer_fields``; followed across messages by ``held_integers``).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from labelgate.classify import credentials, display_context, key_blocks, reasons
from labelgate.classify.binary_pieces import is_noise
from labelgate.classify.carryover import CarryOver
from labelgate.classify.decoded_text import reads_as_text
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.folding import may_hide
from labelgate.classify.held_cuts import AWAITED_END, glued_run, stays_cuttable
from labelgate.classify.held_integers import FREE, PATH_COST, PIECE_COST, HeldIntegers
from labelgate.classify.integer_fields import Integers, by_field
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.message_texts import texts_of
from labelgate.classify.messages import (
    DECODED_TEXT_WEIGHT,
    TEXT_BYTES_PER_VALUE,
    MessageValues,
)
from labelgate.classify.straddling import UNREADABLE, straddled, straddled_pairs
from labelgate.errors import ResourceExhausted, UpstreamError

# What a held message's integer value costs, kept to be read when it is released.
_NUMBER_COST = 8
# What a held message costs beyond its serialized size (a path's state: ``PATH_COST``,
# ``PIECE_COST``): a parsed message of one string in a map takes about 1.7 KB (measured), so
# a stream of tiny messages is bounded too.
_MESSAGE_COST = 1024
# Its cut was not read since its text changed; it holds nothing back (no piece ends past its cut).
_DIRTY, _FREE = -1, FREE
# The pairs of a map's entries read across messages a path remembers (``_unread_pairs``): so
# many at most, each of so many bytes at most; and the process's key for the digest of two
# messages' entries (``_Path.boundary``), which the upstream cannot aim a collision at.
_PAIRS_KEPT, _PAIR_BYTES = 64, 128
_BOUNDARY_KEY = secrets.token_bytes(16)


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
    # a closed PEM block's END marker (``glued_run``), or nothing.
    glued: bytes = b""
    # A map's entries (``message_texts._map_lanes``): one piece a message, its entries joined in
    # key order, and here the entries of each held message that carries several, which a caller
    # may read in any order (``_unread_pairs``); the last message whose entries were read with
    # the message before's, and short pairs read (entries that repeat, metadata or a Struct's
    # names, are read once), with what they hold.
    entries: dict[int, list[bytes]] = field(default_factory=dict)
    paired_upto: int = -1
    boundary: bytes = b""  # the digest of the last two messages' entries read in pairs
    paired: set[tuple[bytes, bytes]] = field(default_factory=set)
    paired_bytes: int = 0


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
        integers: list[Integers] = []
        fields: list[tuple[str, str, list[int]]] = []
        self._fields.append(fields)
        for path, shown, pieces in _by_path(texts_of(message, counted, integers)):
            if self._secrets and number not in self._marked and any(map(_may_spell_key, pieces)):
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
            piece = b"".join(pieces)
            if len(pieces) > 1:  # a map's entries (``message_texts._map_lanes``)
                state.entries[number] = pieces
                self._held_bytes += len(piece) + len(pieces) * PIECE_COST
            self._appended(state, piece)
            state.messages.append(number)
            state.text += piece
            state.ends.append(state.base + len(state.text))
            self._held_bytes += len(piece) + PIECE_COST
        for path, shown, numbers, repeated, records in by_field(integers):
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
            and stays_cuttable(state.text, piece)
        ):
            # The cut stays at the run's start or before, and it holds back the path's first
            # held piece: the first message it holds back stays the same.
            return
        if state.glued and not piece.lstrip(state.glued) and stays_cuttable(state.text, piece):
            return  # a run glued to a closed key block's END marker: the cut stays where it is
        if (
            state.awaits
            and self._carry is not None
            and self._carry.keeps_cut(bytes(state.text[-AWAITED_END:]), piece, state.awaits)
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
                state.glued = glued_run(self._carry, text, cut)
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
        for state in across:
            # A map's entries, several a message (``message_texts._map_lanes``): each of one
            # message's is read joined to each of the next's, weighed here too.
            pairs, _ = _unread_pairs(state, last)
            for pair in pairs:
                values.take(1)
                values.take_text(b"".join(pair))
        detectors = self.detectors if max_values is None else self.detectors.counting(values.found)
        for state in across:  # its pieces taken again: one path's copy at a time
            self._refuse_split(state.shown, _released_pieces(state, last), detectors)
            if state.entries:
                pairs, state.boundary = _unread_pairs(state, last)
                self._refuse(state.shown, straddled_pairs(detectors, pairs))
                for pair in pairs:
                    self._remember_pair(state, pair)
            state.paired_upto = state.messages[_released_span(state, last) - 1]
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
            for number in state.messages[:taken]:
                entries = state.entries.pop(number, None)
                if entries is not None:
                    self._held_bytes -= sum(map(len, entries)) + len(entries) * PIECE_COST
            del state.text[:boundary], state.messages[:taken], state.ends[:taken]
            state.base += boundary
            self._held_bytes -= boundary + taken * PIECE_COST
            if state.cut is None:
                self._whole -= 1
            state.blocks, state.cut, state.awaits, state.glued = _DIRTY, 0, b"", b""
            if not state.text:  # what pieces are left of it are empty
                held_entries = sum(
                    sum(map(len, entries)) + len(entries) * PIECE_COST for entries in state.entries.values()
                )
                self._held_bytes -= (
                    len(state.messages) * PIECE_COST
                    + PATH_COST
                    + len(path)
                    + len(state.shown)
                    + state.paired_bytes
                    + held_entries
                )
                del self._paths[path]
        return released

    def _remember_pair(self, state: _Path, pair: tuple[bytes, bytes]) -> None:
        """Note a short pair of a map's entries read across messages and found to make no
        value (``_unread_pairs``), counted as held; past ``_PAIRS_KEPT`` they are forgotten."""
        size = len(pair[0]) + len(pair[1])
        if size > _PAIR_BYTES:
            return
        if len(state.paired) >= _PAIRS_KEPT:
            state.paired.clear()
            self._held_bytes -= state.paired_bytes
            state.paired_bytes = 0
        state.paired.add(pair)
        state.paired_bytes += size + PIECE_COST
        self._held_bytes += size + PIECE_COST

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
            texts = [text for _, _, text in texts_of(self._held[offset][0], values, lanes=False)]
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
        text (binary: ``is_noise``, or not UTF-8 where it reads as no text) is not read so. A
        value only their joining shows ends the stream before they leave."""
        if not text or is_noise(text):
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
        self._refuse(path, straddled(detectors, pieces))

    def _refuse(self, path: str, straddling: str | None) -> None:
        """End the stream when ``straddling`` (``straddled``'s answer) names a split value."""
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


def _released_pieces(state: _Path, last: int) -> list[bytes]:
    """The pieces of ``state``'s text that the messages before ``last`` carry and, when some
    do, the held ones up to the piece its cut falls in; empty ones left out (they hold no byte
    of a value). A value may reach from a released piece into one held back (``x 212-55-``
    released, ``4462`` and a tail longer than the window held): it ends before the cut (never
    the middle of a match), so no later piece changes it, and read with the released pieces
    only it would leave in two, each message's own classification seeing half of it."""
    taken = _released_span(state, last)
    if taken < 2:
        return []
    edges = [state.base, *state.ends[:taken]]
    pieces = [
        bytes(state.text[start - state.base : end - state.base]) for start, end in itertools.pairwise(edges)
    ]
    return [piece for piece in pieces if piece]


def _released_span(state: _Path, last: int) -> int:
    """How many of ``state``'s pieces ``_released_pieces`` reads (0: none)."""
    taken = bisect_left(state.messages, last)
    if taken and taken < len(state.messages):
        if state.blocks == _DIRTY or state.cut is None:
            taken = len(state.messages)  # where it falls is not known: every held piece
        else:
            cut_in = bisect_left(state.ends, state.base + state.cut + 1)  # the piece it falls in
            taken = max(taken, min(cut_in + 1, len(state.messages)))
    return taken


def _unread_pairs(state: _Path, last: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Where a message carries several entries of a map (``_Path.entries``), a caller may read
    them in any order, so any of them may end it and any of the next message's begin that:
    each entry of a message with each of the next message carrying the path (of those
    ``_released_pieces`` reads), to read alone (the pair the path's own order joins too: its
    reading with the rest is another). Each pair once, and none read before
    (``_Path.paired_upto``, ``_Path.paired``); none where every message carries one entry. A
    value over three messages through an entry of one that holds several is read in key
    order only. With them, the digest of the last two messages' entries they come from
    (``_Path.boundary``), to note once they are read."""
    if not state.entries:
        return [], state.boundary
    taken = _released_span(state, last)
    # From the last message whose entries were read with the next's: the rest was read.
    first = bisect_right(state.messages, state.paired_upto, 0, taken)
    if first == taken:
        return [], state.boundary
    first = max(0, first - 1)
    starts = [state.ends[first - 1] if first else state.base, *state.ends[first:taken]]
    groups = []
    for number, (start, end) in zip(state.messages[first:taken], itertools.pairwise(starts), strict=False):
        if start == end:
            continue  # a message whose entries are all empty: its neighbours meet
        entries = state.entries.get(number)
        groups.append(
            [entry for entry in entries if entry]
            if entries is not None
            else [bytes(state.text[start - state.base : end - state.base])]
        )
    pairs: dict[tuple[bytes, bytes], None] = {}
    last_read = state.boundary
    for before, after in itertools.pairwise(groups):
        if len(before) == 1 and len(after) == 1:
            continue
        # The same entries as the two messages before (a map whose entries do not change):
        # their pairs were read, or are read with these.
        boundary = _digest(before, after)
        if boundary == last_read:
            continue
        last_read = boundary
        for pair in itertools.product(before, after):
            if pair not in state.paired:
                pairs[pair] = None
    return list(pairs), last_read


def _digest(before: list[bytes], after: list[bytes]) -> bytes:
    """Names two messages' entries (``_Path.boundary``): each entry's length, then its bytes."""
    hashed = hashlib.blake2b(digest_size=16, key=_BOUNDARY_KEY)
    for group in (before, after):
        hashed.update(len(group).to_bytes(8, "little"))
        for entry in group:
            hashed.update(len(entry).to_bytes(8, "little"))
            hashed.update(entry)
    return hashed.digest()


def _by_path(texts: Iterable[tuple[str, str, bytes]]) -> list[tuple[str, str, list[bytes]]]:
    """``texts`` (``message_texts.texts_of``) by path, in the order each path first comes: a
    map's path comes once an entry (``_map_lanes``), its entries in key order."""
    paths: dict[str, tuple[str, list[bytes]]] = {}
    for path, shown, text in texts:
        known = paths.get(path)
        if known is None:
            paths[path] = (shown, [text])
        else:
            known[1].append(text)
    return [(path, shown, pieces) for path, (shown, pieces) in paths.items()]


def _may_spell_key(text: bytes) -> bool:
    """Whether ``text`` may hold a PEM marker: ``PRIVATE KEY`` as written, or escapes or text
    to fold that may spell one. (A marker split across one path's messages is refused there:
    ``straddled``.) C-level searches."""
    return b"PRIVATE KEY" in text or may_escape(text) or may_hide(text)
