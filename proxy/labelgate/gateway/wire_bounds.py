"""What parsing a routed request may cost, known from its wire bytes before it is parsed.

A routed method's request is parsed by protobuf (upb) from the descriptors of its route.
Its wire size says little of what the parse builds: 16 MiB of empty sub-messages
(``\\x12\\x00`` repeated) took 0.25 s of the event loop and 384 MiB to parse (24 times its
bytes), and 8 such server streams held 3.5 GiB while the request bytes budget
(``limits.max_request_bytes_in_flight``) counted 128 MiB of wire (review). So before a
request is parsed its wire bytes are walked, which protobuf's format makes cheap: every
field, repeated element, group and map entry counts a value, each element of a packed
varint field too (an int64 parses to 8 bytes from one), and the walk stops at
``limits.max_message_values``, the bound a typed reply's values have: past it the request
is refused (INVALID_ARGUMENT, ``MESSAGE_TOO_MANY_VALUES``) without being parsed. What is
copied as it is (text, bytes, packed fixed-width numbers, unknown fields) counts one value
whatever its size: its bytes are counted already, as the request's. A message-set type's
contents (parsed by extensions the walk does not follow) count a value a byte.

Each counted value takes a byte of wire at least, so a body of no more bytes than the bound
is parsed without a walk. A larger one is walked and parsed in a worker thread, off the
event loop (1-1.5 µs a value: 0.1-0.15 s at the default bound, measured).

Transports call this only once the caller is authenticated and admitted
(``gateway/routes.py``): an anonymous caller's request is never walked nor parsed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate.classify.reasons import MESSAGE_TOO_MANY_VALUES
from labelgate.errors import InvalidInput
from labelgate.gateway.inference import not_parsed

M = TypeVar("M", bound=Message)

# protobuf's wire types.
_VARINT, _I64, _LEN, _START_GROUP, _END_GROUP, _I32 = range(6)
# upb refuses messages nested deeper than this (its default decode depth): so does the walk.
MAX_DEPTH = 100
_VARINT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_ENUM,
    }
)
# The bytes below 0x80 end a varint: deleting them leaves one byte per byte that does not.
_VARINT_ENDS = bytes(range(0x80))
# Threads that walk and parse large requests: it is Python and upb under the GIL, so more
# would not parse faster, only take the event loop's turns more often.
_PARSE_THREADS = 1


class TooManyValues(Exception):
    """The walk passed its bound."""


class Malformed(Exception):
    """The bytes are not protobuf's wire format (the parse would fail too)."""


# How the walk treats a field of a message: a message to walk into (``LEN``), a group to walk
# into (``START_GROUP``), a field packed of varints whose elements count, or one value.
_SUBMESSAGE, _GROUP, _PACKED_VARINTS = range(3)


@dataclass(frozen=True)
class _Shape:
    fields: dict[int, tuple[int, Descriptor | None]]
    opaque: bool  # a message set: its contents are extensions the walk does not follow


@functools.cache
def _shape(descriptor: Descriptor) -> _Shape:
    fields: dict[int, tuple[int, Descriptor | None]] = {}
    known = [*descriptor.fields, *descriptor.file.pool.FindAllExtensions(descriptor)]
    for field in known:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            fields[field.number] = (_SUBMESSAGE, field.message_type)
        elif field.type == FieldDescriptor.TYPE_GROUP:
            fields[field.number] = (_GROUP, field.message_type)
        elif field.is_repeated and field.type in _VARINT_TYPES:
            fields[field.number] = (_PACKED_VARINTS, None)
    return _Shape(fields, bool(descriptor.GetOptions().message_set_wire_format))


_UNKNOWN = _Shape({}, False)
_OPAQUE = _Shape({}, True)


class _Walk:
    """One body's walk: what is left of its bound (``left``) as it goes. Written for speed (a
    step per value, so locals and the one-byte varints inline): it stands before the parse."""

    __slots__ = ("data", "left")

    def __init__(self, data: bytes, limit: int) -> None:
        self.data = data
        self.left = limit

    def packed_varints(self, at: int, stop: int) -> None:
        """A packed varint field's elements, less the value its field counted. Each takes
        one to ten bytes: a field that must pass the bound is refused before it is counted."""
        length = stop - at
        if length // 10 > self.left:
            raise TooManyValues
        elements = length - len(self.data[at:stop].translate(None, _VARINT_ENDS))
        self.left -= max(elements - 1, 0)
        if self.left < 0:
            raise TooManyValues

    def message(self, shape: _Shape, at: int, end: int, depth: int, group: int = 0) -> int:
        """Count the values of one message from ``at``: up to ``end``, or, for a group's
        (``group``: its field number), up to its end tag. Where it ended."""
        if depth > MAX_DEPTH:
            raise Malformed
        data, fields, opaque = self.data, shape.fields, shape.opaque
        while at < end:
            tag = data[at]
            at += 1
            if tag >= 0x80:
                tag, at = _varint(data, at - 1, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise Malformed
            if wire == _END_GROUP:
                if number != group:
                    raise Malformed
                return at
            self.left -= 1
            if self.left < 0:
                raise TooManyValues
            if wire == _VARINT:
                if at < end and data[at] < 0x80:
                    at += 1
                else:
                    _, at = _varint(data, at, end)
            elif wire == _LEN:
                if at < end and data[at] < 0x80:
                    length = data[at]
                    at += 1
                else:
                    length, at = _varint(data, at, end)
                stop = at + length
                if stop > end:
                    raise Malformed
                kind, inner = fields.get(number, _NOT_WALKED)
                if kind == _SUBMESSAGE and inner is not None:
                    self.message(_shape(inner), at, stop, depth + 1)
                elif kind == _PACKED_VARINTS:
                    self.packed_varints(at, stop)
                elif opaque:
                    self.left -= length
                    if self.left < 0:
                        raise TooManyValues
                at = stop
            elif wire == _I64:
                at += 8
            elif wire == _I32:
                at += 4
            elif wire == _START_GROUP:
                kind, inner = fields.get(number, _NOT_WALKED)
                if kind == _GROUP and inner is not None:
                    inner_shape = _shape(inner)
                else:  # kept as unknown bytes, but walked for where it ends
                    inner_shape = _OPAQUE if opaque else _UNKNOWN
                at = self.message(inner_shape, at, end, depth + 1, number)
            else:
                raise Malformed
        if at > end or group:
            raise Malformed  # a fixed-width value or a group cut short
        return at


_NOT_WALKED: tuple[None, None] = (None, None)


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while at < end and shift < 70:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise Malformed


def count_values(message_type: type[Message], body: bytes, limit: int) -> int:
    """The values ``body`` holds as a ``message_type`` (see the module's text). Raises
    ``TooManyValues`` past ``limit`` (having walked no further), ``Malformed`` when it is not
    the wire format."""
    walk = _Walk(body, limit)
    walk.message(_shape(cast(Descriptor, message_type.DESCRIPTOR)), 0, len(body), 0)
    return limit - walk.left


def parse_within(message_type: type[M], body: bytes, max_values: int) -> M:
    """``body`` parsed as ``message_type``, once it is known to hold at most ``max_values``
    values. Raises ``InvalidInput``: ``MESSAGE_TOO_MANY_VALUES`` (nothing parsed), or
    ``REQUEST_NOT_PARSED``."""
    try:
        if len(body) > max_values:
            count_values(message_type, body, max_values)
        return message_type.FromString(body)
    except TooManyValues:
        raise too_many_values(message_type, max_values) from None
    except (Malformed, DecodeError):
        raise not_parsed(message_type) from None


def too_many_values(message_type: type[Message], max_values: int) -> InvalidInput:
    return InvalidInput(
        MESSAGE_TOO_MANY_VALUES,
        f"the request holds more than {max_values} values (fields, repeated elements, map "
        "entries: limits.max_message_values)",
        message_type=message_type.DESCRIPTOR.full_name,
    )


@functools.cache
def _parse_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_PARSE_THREADS, thread_name_prefix="labelgate-request-parse")


async def parsed(message_type: type[M], body: bytes, max_values: int) -> M:
    """``parse_within``, in a worker thread when ``body`` must be walked (it is larger than
    ``max_values`` bytes); a small body is parsed at once: no more than a few milliseconds."""
    if len(body) <= max_values:
        return parse_within(message_type, body, max_values)
    parse: Callable[[], M] = functools.partial(parse_within, message_type, body, max_values)
    job = _parse_threads().submit(parse)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        job.cancel()  # not begun: dropped; under way: it ends on its own, its result unread
        raise
