"""An opaque route's reply as the record stage keeps it: its bytes, never read.

``Outcome.delivered`` holds the message a call delivered, and its session entry's
``response`` is that message's type name and bytes (``recording/entries.py``). An opaque
route's replies are bytes nothing in the gateway has read, so they are kept in that same
entry format (no new kind for the stores, the shape check or the viewers to learn) under a
type name no descriptor pool can hold.
"""

from __future__ import annotations

import dataclasses

from google.protobuf.message import Message


@dataclasses.dataclass(frozen=True)
class _NoDescriptor:
    """What a recording reads of a message's type: its name (``entries.encode_message``)."""

    full_name: str


class OpaqueReply(Message):
    """An opaque route's reply as the record stage keeps it (``Outcome.delivered``): the
    session entry's ``response`` is its bytes exactly as delivered (``base64``, and their count
    in ``bytes``), in the entry format a typed reply's take (``recording/entries.py``: no new
    kind for the stores, the shape check or the viewers to learn).

    Its type is a name no descriptor pool can hold (not an identifier): nothing is known of
    those bytes, so every viewer fails to decode it and shows none of them (``viewing.py``:
    "cannot be classified, so it is not shown"). A real type registered for them would have a
    replay parse what the call's policy never read, and show it under another type's fields.
    The rest of ``Message`` is not there: a reply to record, never to build or read."""

    __slots__ = ("_data",)
    DESCRIPTOR = _NoDescriptor("(opaque bytes)")  # type: ignore[assignment]

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializeToString(self, *, deterministic: bool = False) -> bytes:
        return self._data

    def ByteSize(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpaqueReply) and other._data == self._data

    def __repr__(self) -> str:
        return f"OpaqueReply({len(self._data)} bytes)"  # never the bytes: a log may print it

    __str__ = __repr__
