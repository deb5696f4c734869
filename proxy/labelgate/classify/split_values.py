"""Values a routed server stream splits across its messages: pure.

A token-streaming gRPC service sends ``"card 4111 11"`` / ``"11 1111 1111 1111"``: classified
message by message (``Pipeline.release_reply``), neither piece is a card. ``ModelStreamInfer``
knows its BYTES elements are pieces of one text and moves held text into later replies
(``carryover.py``); a routed message's fields carry no such meaning (a ``status`` field repeated
whole in every message is no piece of anything), so the gateway may not move text between
messages. It holds whole messages instead:

- each text field (string or bytes, found by its path: ``choices[0].delta.content``) is read as
  one text across the held messages, the pieces in order;
- a message is released once no later piece can still make a value of any of its fields'
  text: the carry-over's cut (``cut``: a window of bytes, never the middle of a match or of a
  number or email run) lies past it in every path; the end of the stream releases the rest;
- a value the detectors find across two or more messages ends the stream
  (``STREAM_VALUE_SPLIT``) before any of its pieces leaves: each message is masked on its own,
  so no mask could cover it (a ``partial`` mask would show the last characters of each piece).
  Unless each message's own scan finds its piece inside a value at least as sensitive: then
  the "value" is whole values side by side (``ann@x.com`` then ``bob@y.com`` in a record
  stream's ``email`` field), and each message's mask covers its own.

Text ``cut`` cannot cut (``None``: text that may hide a value from a raw scan) is held until
the stream ends. Held text beyond ``hold_limit`` bytes fails the stream closed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.detectors import Detection, DetectorSet
from labelgate.classify.labels import LABEL_RANK
from labelgate.classify.messages import is_map, is_message
from labelgate.errors import ResourceExhausted, UpstreamError

_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
# Deeper than this, a path is not followed (classification refuses such replies anyway).
_MAX_DEPTH = 32


@dataclass
class _Path:
    """One field path's text across the held messages, and where each message's piece ends."""

    text: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)


class SplitValues:
    """Holds a stream's messages until no value can still straddle them (module docstring)."""

    def __init__(
        self, detectors: DetectorSet, cut: Callable[[bytes], int | None], hold_limit: int = 16 << 20
    ) -> None:
        self.detectors = detectors
        self.cut = cut
        self.hold_limit = hold_limit
        self._held: list[Message] = []
        self._paths: dict[str, _Path] = {}

    def hold(self, message: Message) -> list[Message]:
        """Take the next message; the messages that may leave now, in order."""
        pieces = dict(text_fields(message))
        for path, piece in pieces.items():
            state = self._paths.get(path)
            if state is None:
                state = self._paths[path] = _Path(ends=[0] * len(self._held))
            state.text += piece
        self._held.append(message)
        for state in self._paths.values():
            state.ends.append(len(state.text))
        if sum(len(state.text) for state in self._paths.values()) > self.hold_limit:
            raise ResourceExhausted(
                reasons.STREAM_HELD_TOO_LARGE,
                f"a stream holds more than {self.hold_limit} bytes of text that may still be split",
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
        for path, state in self._paths.items():
            boundary = state.ends[count - 1]
            if boundary:
                self._refuse_straddling(path, state, count, boundary)
        released, self._held = self._held[:count], self._held[count:]
        for path in list(self._paths):
            state = self._paths[path]
            boundary = state.ends[count - 1]
            del state.text[:boundary]
            state.ends = [end - boundary for end in state.ends[count:]]
            if not state.text:
                del self._paths[path]
        return released

    def _refuse_straddling(self, path: str, state: _Path, count: int, boundary: int) -> None:
        text = bytes(state.text[:boundary])
        edges = [0, *state.ends[:count]]
        pieces = list(itertools.pairwise(edges))
        for hit in self.detectors.scan(text):
            parts = [(max(hit.start, start), min(hit.end, end)) for start, end in pieces]
            parts = [(start, end) for start, end in parts if start < end]
            if len(parts) > 1 and not all(self._found_alone(text, edges, part, hit) for part in parts):
                raise UpstreamError(
                    reasons.STREAM_VALUE_SPLIT,
                    f"the upstream split a value its detectors call {hit.detector} across the messages "
                    f"of a stream (field {path}); each message is masked on its own, so it is not sent",
                )

    def _found_alone(self, text: bytes, edges: list[int], part: tuple[int, int], hit: Detection) -> bool:
        """Whether a message's scan alone finds its ``part`` of ``hit`` inside a value at least
        as sensitive: then the message's own mask covers it, and the hit is only two whole
        values side by side (``ann@x.com`` + ``bob@y.com`` reads as ``ann@x.combob``)."""
        start = max(edge for edge in edges if edge <= part[0])
        end = min(edge for edge in edges if edge >= part[1])
        rank = LABEL_RANK[hit.label]
        return any(
            own.start + start <= part[0] and part[1] <= own.end + start and LABEL_RANK[own.label] >= rank
            for own in self.detectors.scan(text[start:end])
        )


def text_fields(message: Message) -> Iterator[tuple[str, bytes]]:
    """(path, UTF-8 bytes) of every string and bytes field set in ``message``, at any depth."""
    yield from _walk(message, "", 0)


def _walk(message: Message, prefix: str, depth: int) -> Iterator[tuple[str, bytes]]:
    if depth > _MAX_DEPTH:
        return
    for descriptor, value in message.ListFields():
        path = f"{prefix}{descriptor.name}"
        if is_message(descriptor):
            if is_map(descriptor):
                for key in sorted(value, key=str):
                    yield from _scalar_or_message(value[key], f"{path}[{key!r}]", depth)
            elif descriptor.is_repeated:
                for index, item in enumerate(value):
                    yield from _walk(item, f"{path}[{index}].", depth + 1)
            else:
                yield from _walk(value, f"{path}.", depth + 1)
        elif descriptor.type in _TEXT_TYPES:
            if descriptor.is_repeated:
                for index, item in enumerate(value):
                    yield f"{path}[{index}]", _bytes(item)
            else:
                yield path, _bytes(value)


def _scalar_or_message(value: object, path: str, depth: int) -> Iterator[tuple[str, bytes]]:
    if isinstance(value, Message):
        yield from _walk(value, f"{path}.", depth + 1)
    elif isinstance(value, str | bytes):
        yield path, _bytes(value)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
