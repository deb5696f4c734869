"""Values a routed token stream splits across its messages: pure.

A token-streaming gRPC service sends ``"card 4111 11"`` / ``"11 1111 1111 1111"``: classified
message by message (``Pipeline.release_reply``), neither piece is a card. ``ModelStreamInfer``
knows its BYTES elements are pieces of one text and moves held text into later replies
(``carryover.py``); a routed message's fields carry no such meaning, so the gateway may not
move text between messages. A route whose server streams are token streams
(``routes[].split_values: hold``) holds whole messages instead:

- each string field, found by its path (``choices[0].delta.content``), is read as one text
  across the held messages, the pieces in order. (Bytes fields are not: a stream's bytes are
  audio or file chunks more often than text; each message's own classification reads them.)
- a message is released once no later piece can still make a value of any of its fields'
  text: the carry-over's cut (``cut``: a window of bytes, never the middle of a match or of a
  number or email run) lies past it in every path; the end of the stream releases the rest.
  Text ``cut`` cannot cut (``None``: text that may hide a value from a raw scan: not ASCII,
  escapes, control characters) is held until the stream ends.
- when messages are released, each path's text across them is scanned as the classifier
  reads text (raw, escapes and references decoded, folded: ``all_found``), and so is each
  message's piece on its own. A detector that finds more across the pieces than in the
  pieces alone found a value only their joining makes: the stream ends
  (``STREAM_VALUE_SPLIT``) before any piece of it leaves, since each message is masked on its
  own and no mask could cover it (a ``partial`` mask would show the last characters of each
  piece). Whole values side by side (``ann@x.com`` then ``bob@y.com``) are found as often
  either way.

Messages held beyond ``hold_limit`` bytes (serialized, plus a parsed message's own cost,
plus their text, plus what is kept per path: its name and where each of its pieces ends)
fail the stream closed, and so does a stream holding text of more than ``max_paths`` paths
at once (``limits.max_fields``): paths are the upstream's choice (a map key each). Each
path records only the messages that carry it, and its cut is computed again only when its
text changed and only when it may matter: while one path holds the first held message
back, or text that cannot be cut (None, final for that text and any longer one) holds
everything, nothing else is read; and a run the cut stops at (``CarryOver.run_members``)
that its own bytes extend does not move it.

A path is one text only where its position names it: a stream that moves one text between
list positions (``choices[0]`` carrying choice 1 in some messages) is read per position. A
record stream (each message a whole record) is not a token stream: its ids side by side are
one digit run, held to the end and at worst refused; such routes set ``per_message``.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.folding import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.messages import is_map, is_message
from labelgate.errors import ResourceExhausted, UpstreamError

# Deeper than this, a path is not followed (classification refuses such replies anyway).
_MAX_DEPTH = 32
# What a path's state costs beyond its text, counted toward the hold limit: the object, its
# name twice (as a key, as shown) and, per piece recorded, two 8-byte numbers. And what a
# held message costs beyond its serialized size: a parsed message of one string in a map
# takes about 1.7 KB (measured), so a stream of tiny messages is bounded too.
_PATH_COST = 512
_PIECE_COST = 16
_MESSAGE_COST = 1024
# Its cut was not read since its text changed; it holds nothing back (no piece ends past its cut).
_DIRTY, _FREE = -1, 1 << 62


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
        self._first = 0  # the number of the first message held
        self._held_bytes = 0
        self._paths: dict[str, _Path] = {}
        self._whole = 0  # paths whose text cannot be cut: everything is held to the end

    def hold(self, message: Message) -> list[Message]:
        """Take the next message; the messages that may leave now, in order."""
        number = self._first + len(self._held)
        size = message.ByteSize() + _MESSAGE_COST
        self._held.append((message, size))
        self._held_bytes += size
        for path, shown, piece in text_fields(message):
            state = self._paths.get(path)
            if state is None:
                if len(self._paths) >= self.max_paths:
                    raise ResourceExhausted(
                        reasons.STREAM_HELD_TOO_LARGE,
                        f"a stream holds text of more than {self.max_paths} string fields at once "
                        "(limits.max_fields)",
                    )
                state = self._paths[path] = _Path(shown)
                self._held_bytes += _PATH_COST + len(path) + len(shown)
            self._appended(state, piece)
            state.messages.append(number)
            state.text += piece
            state.ends.append(state.base + len(state.text))
            self._held_bytes += len(piece) + _PIECE_COST
        if self._held_bytes > self.hold_limit:
            raise ResourceExhausted(
                reasons.STREAM_HELD_TOO_LARGE,
                f"a stream holds more than {self.hold_limit} bytes of messages a value may still straddle",
            )
        return self._release(self._releasable())

    def flush(self) -> list[Message]:
        """The end of the stream: every message held, once no value straddles them."""
        return self._release(len(self._held))

    def _appended(self, state: _Path, piece: bytes) -> None:
        """``piece`` is about to extend ``state``'s text: whether its cut must be read again."""
        if not piece or state.blocks == _DIRTY or state.cut is None:
            return  # unchanged; not read yet; text that cannot be cut stays so
        if (
            state.members
            and state.messages
            and state.messages[0] == state.blocks
            and not piece.lstrip(state.members)
        ):
            # The cut stays at the run's start or before, and it holds back the path's first
            # held piece: the first message it holds back stays the same.
            return
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
        return least - first

    def _read(self, state: _Path) -> None:
        """Cut ``state``'s text, and note the first message the cut holds back."""
        text = bytes(state.text)
        cut = self.cut(text)
        state.cut = cut
        if cut is None:
            self._whole += 1
            state.blocks = 0
            return
        # The first piece that ends past the cut (ends are in order).
        at = bisect_left(state.ends, state.base + cut + 1)
        state.blocks = state.messages[at] if at < len(state.messages) else _FREE
        state.members = self._carry.run_members(text[cut:]) if self._carry is not None else b""

    def _release(self, count: int) -> list[Message]:
        if count == 0:
            return []
        last = self._first + count  # the first message kept
        for state in self._paths.values():
            taken = bisect_left(state.messages, last)
            if taken > 1:
                edges = [state.base, *state.ends[:taken]]
                pieces = [
                    bytes(state.text[start - state.base : end - state.base])
                    for start, end in itertools.pairwise(edges)
                ]
                pieces = [piece for piece in pieces if piece]
                if len(pieces) > 1:
                    self._refuse_split(state.shown, pieces)
        released = []
        for _ in range(count):
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
            self._held_bytes -= boundary + taken * _PIECE_COST
            if state.cut is None:
                self._whole -= 1
            state.blocks, state.cut = _DIRTY, 0
            if not state.text:  # what pieces are left of it are empty
                self._held_bytes -= (
                    len(state.messages) * _PIECE_COST + _PATH_COST + len(path) + len(state.shown)
                )
                del self._paths[path]
        return released

    def _refuse_split(self, path: str, pieces: list[bytes]) -> None:
        joined, *each = all_found(self.detectors, [b"".join(pieces), *pieces])
        alone = sum(each, Counter[str]())
        more = sorted(name for name, count in joined.items() if count > alone[name])
        if more:
            raise UpstreamError(
                reasons.STREAM_VALUE_SPLIT,
                f"the upstream split a value its detectors call {more[0]} across the messages of a "
                f"stream (field {path}); each message is masked on its own, so it is not sent",
            )


def all_found(detectors: DetectorSet, texts: Sequence[bytes]) -> list[Counter[str]]:
    """How many values of each detector each text holds, read as the classifier reads text:
    as written, with escapes and character references decoded, and folded."""
    found = detectors.scan_many(list(texts))
    counts = [Counter(hit.detector for hit in hits) for hits in found]
    # A hidden form says only that it holds at least one more value of a detector.
    escaped = hidden_by_escapes(texts, detectors) if any(map(may_escape, texts)) else {}
    folded = hidden_by_folding(texts, detectors, dict(enumerate(found)))
    for hidden in (escaped, folded):
        for index, hits in hidden.items():
            counts[index].update({hit.detector for hit in hits})
    return counts


def text_fields(message: Message) -> Iterator[tuple[str, str, bytes]]:
    """(path, shown path, UTF-8 bytes) of every string field set in ``message``, at any depth.
    The path tells map entries apart by their key; the shown path, for error texts, writes
    each map key as ``{}`` (a key is the upstream's text, which no policy decided on)."""
    yield from _walk(message, "", "", 0)


def _walk(message: Message, prefix: str, shown: str, depth: int) -> Iterator[tuple[str, str, bytes]]:
    if depth > _MAX_DEPTH:
        return
    for descriptor, value in message.ListFields():
        path, named = f"{prefix}{descriptor.name}", f"{shown}{descriptor.name}"
        if is_message(descriptor):
            if is_map(descriptor):
                for key in sorted(value, key=str):
                    yield from _map_value(value[key], f"{path}[{key!r}]", f"{named}{{}}", depth)
            elif descriptor.is_repeated:
                for index, item in enumerate(value):
                    yield from _walk(item, f"{path}[{index}].", f"{named}[{index}].", depth + 1)
            else:
                yield from _walk(value, f"{path}.", f"{named}.", depth + 1)
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            if descriptor.is_repeated:
                for index, item in enumerate(value):
                    yield f"{path}[{index}]", f"{named}[{index}]", _utf8(item)
            else:
                yield path, named, _utf8(value)


def _map_value(value: object, path: str, shown: str, depth: int) -> Iterator[tuple[str, str, bytes]]:
    if isinstance(value, Message):
        yield from _walk(value, f"{path}.", f"{shown}.", depth + 1)
    elif isinstance(value, str):
        yield path, shown, _utf8(value)


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")
