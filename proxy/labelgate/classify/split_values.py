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

Messages held beyond ``hold_limit`` bytes (serialized, plus their text) fail the stream closed.
A path is one text only where its position names it: a stream that moves one text between
list positions (``choices[0]`` carrying choice 1 in some messages) is read per position. A
record stream (each message a whole record) is not a token stream: its ids side by side are
one digit run, held to the end and at worst refused; such routes set ``per_message``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.folding import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.messages import is_map, is_message
from labelgate.errors import ResourceExhausted, UpstreamError

# Deeper than this, a path is not followed (classification refuses such replies anyway).
_MAX_DEPTH = 32


@dataclass
class _Path:
    """One field path's text across the held messages, and where each message's piece ends."""

    text: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)
    shown: str = ""  # the path with map keys left out: they are the upstream's unclassified text


class SplitValues:
    """Holds a token stream's messages until no value can still straddle them (module docstring)."""

    def __init__(
        self, detectors: DetectorSet, cut: Callable[[bytes], int | None], hold_limit: int = 16 << 20
    ) -> None:
        self.detectors = detectors
        self.cut = cut
        self.hold_limit = hold_limit
        self._held: list[Message] = []
        self._held_bytes = 0
        self._paths: dict[str, _Path] = {}

    def hold(self, message: Message) -> list[Message]:
        """Take the next message; the messages that may leave now, in order."""
        size = message.ByteSize()
        for path, shown, piece in text_fields(message):
            state = self._paths.get(path)
            if state is None:
                state = self._paths[path] = _Path(ends=[0] * len(self._held), shown=shown)
            state.text += piece
            size += len(piece)
        self._held.append(message)
        self._held_bytes += size
        for state in self._paths.values():
            state.ends.append(len(state.text))
        if self._held_bytes > self.hold_limit:
            raise ResourceExhausted(
                reasons.STREAM_HELD_TOO_LARGE,
                f"a stream holds more than {self.hold_limit} bytes of messages a value may still straddle",
            )
        return self._release(self._releasable())

    def flush(self) -> list[Message]:
        """The end of the stream: every message held, once no value straddles them."""
        return self._release(len(self._held))

    def _releasable(self) -> int:
        """How many of the held messages (from the first) no later piece can join."""
        count = len(self._held)
        for state in self._paths.values():
            cut = self.cut(bytes(state.text))
            if cut is None:
                return 0
            count = min(count, sum(1 for end in state.ends if end <= cut))
        return count

    def _release(self, count: int) -> list[Message]:
        if count == 0:
            return []
        for state in self._paths.values():
            edges = [0, *state.ends[:count]]
            pieces = [bytes(state.text[start:end]) for start, end in itertools.pairwise(edges)]
            pieces = [piece for piece in pieces if piece]
            if len(pieces) > 1:
                self._refuse_split(state.shown, pieces)
        released, self._held = self._held[:count], self._held[count:]
        self._held_bytes = sum(message.ByteSize() for message in self._held)
        for path in list(self._paths):
            state = self._paths[path]
            boundary = state.ends[count - 1]
            del state.text[:boundary]
            state.ends = [end - boundary for end in state.ends[count:]]
            if state.text:
                self._held_bytes += len(state.text)
            else:
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
