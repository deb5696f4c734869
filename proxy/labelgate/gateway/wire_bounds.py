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

A request type may say more (``MessageBounds``): message types whose contents are data,
copied as they are and counted one value (an inference tensor's contents: a legitimate INT64
or BYTES tensor holds millions of elements, bounded by its bytes), and top-level repeated
fields with a bound of their own, refused with that bound's own reason past it (a
``ModelInferRequest``'s inputs and requested outputs: ``gateway/inference.py``).

Transports call this only once the caller is authenticated (``gateway/routes.py``,
``gateway/inference.py``): an anonymous caller's request is never walked nor parsed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate.classify.reasons import MESSAGE_TOO_MANY_VALUES
from labelgate.errors import InvalidInput, LabelgateError
from labelgate.gateway import reasons

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


class TooManyElements(Exception):
    """A top-level repeated field passed its own bound (``MessageBounds.elements``)."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


@dataclass(frozen=True)
class ElementBound:
    """The most elements one top-level repeated field may have, and its refusal past them."""

    most: int
    refusal: Callable[[], LabelgateError]


@dataclass(frozen=True)
class MessageBounds:
    """What a request type's walk knows besides the value bound: the message types whose
    contents are data (full names: one value each, not walked), and the top-level repeated
    fields bounded apart (by field number). Past such a field's bound the request is
    refused with its own reason, as the same excess is once parsed, not as too many values."""

    copied: frozenset[str] = frozenset()
    elements: Mapping[int, ElementBound] = field(default_factory=lambda: MappingProxyType({}))


_NO_BOUNDS = MessageBounds()

# How the walk treats a field of a message: a message to walk into (``LEN``), a group to walk
# into (``START_GROUP``), a field packed of varints whose elements count, a top-level field
# whose elements are counted against a bound of their own (walked into as a message when
# ``inner`` is not None), or one value.
_SUBMESSAGE, _GROUP, _PACKED_VARINTS, _BOUNDED = range(4)


@dataclass(frozen=True)
class _Shape:
    fields: dict[int, tuple[int, Descriptor | None]]
    opaque: bool  # a message set: its contents are extensions the walk does not follow
    copied: frozenset[str]  # what its sub-messages' shapes copy (``MessageBounds.copied``)


@functools.cache
def _shape(descriptor: Descriptor, copied: frozenset[str] = frozenset()) -> _Shape:
    fields: dict[int, tuple[int, Descriptor | None]] = {}
    known = [*descriptor.fields, *descriptor.file.pool.FindAllExtensions(descriptor)]
    for known_field in known:
        inner = known_field.message_type
        if inner is not None and inner.full_name in copied:
            continue  # data: one value, as text or bytes are
        if known_field.type == FieldDescriptor.TYPE_MESSAGE:
            fields[known_field.number] = (_SUBMESSAGE, inner)
        elif known_field.type == FieldDescriptor.TYPE_GROUP:
            fields[known_field.number] = (_GROUP, inner)
        elif known_field.is_repeated and known_field.type in _VARINT_TYPES:
            fields[known_field.number] = (_PACKED_VARINTS, None)
    return _Shape(fields, bool(descriptor.GetOptions().message_set_wire_format), copied)


@functools.cache
def _top_shape(descriptor: Descriptor, copied: frozenset[str], bounded: frozenset[int]) -> _Shape:
    """``_shape``, its ``bounded`` fields counted apart (each a length-delimited field: a
    message, text or bytes; a group or a packed field is not bounded so)."""
    shape = _shape(descriptor, copied)
    fields = dict(shape.fields)
    for number in bounded:
        kind, inner = fields.get(number, _NOT_WALKED)
        if kind not in (None, _SUBMESSAGE):
            raise ValueError(f"field {number} of {descriptor.full_name} cannot be bounded apart")
        fields[number] = (_BOUNDED, inner)
    return _Shape(fields, shape.opaque, copied)


_UNKNOWN = _Shape({}, False, frozenset())
_OPAQUE = _Shape({}, True, frozenset())


class _Walk:
    """One body's walk: what is left of its bound (``left``) as it goes. Written for speed (a
    step per value, so locals and the one-byte varints inline): it stands before the parse."""

    __slots__ = ("data", "elements_left", "left")

    def __init__(self, data: bytes, limit: int, elements: Mapping[int, int]) -> None:
        self.data = data
        self.left = limit
        self.elements_left = dict(elements)  # a bounded field's elements still allowed

    def element(self, number: int) -> None:
        left = self.elements_left[number] - 1
        if left < 0:
            raise TooManyElements(number)
        self.elements_left[number] = left

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
                    self.message(_shape(inner, shape.copied), at, stop, depth + 1)
                elif kind == _PACKED_VARINTS:
                    self.packed_varints(at, stop)
                elif kind == _BOUNDED:
                    self.element(number)
                    if inner is not None:
                        self.message(_shape(inner, shape.copied), at, stop, depth + 1)
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
                    inner_shape = _shape(inner, shape.copied)
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


def count_values(
    message_type: type[Message], body: bytes, limit: int, bounds: MessageBounds = _NO_BOUNDS
) -> int:
    """The values ``body`` holds as a ``message_type`` (see the module's text). Raises
    ``TooManyValues`` past ``limit`` (having walked no further), ``TooManyElements`` past a
    bound of ``bounds``, ``Malformed`` when it is not the wire format."""
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)
    if bounds.elements:
        shape = _top_shape(descriptor, bounds.copied, frozenset(bounds.elements))
    else:
        shape = _shape(descriptor, bounds.copied)
    walk = _Walk(body, limit, {number: bound.most for number, bound in bounds.elements.items()})
    walk.message(shape, 0, len(body), 0)
    return limit - walk.left


def parse_within(
    message_type: type[M], body: bytes, max_values: int, bounds: MessageBounds = _NO_BOUNDS
) -> M:
    """``body`` parsed as ``message_type``, once it is known to hold at most ``max_values``
    values (and no more elements than ``bounds`` allows). Raises ``InvalidInput``:
    ``MESSAGE_TOO_MANY_VALUES`` or a bound's own refusal (nothing parsed), or
    ``REQUEST_NOT_PARSED``."""
    try:
        if len(body) > max_values:
            count_values(message_type, body, max_values, bounds)
        return message_type.FromString(body)
    except TooManyValues:
        raise too_many_values(message_type, max_values) from None
    except TooManyElements as past:
        raise bounds.elements[past.number].refusal() from None
    except (Malformed, DecodeError):
        raise not_parsed(message_type) from None


def leading_text(body: bytes, number: int) -> str:
    """The text of field ``number`` when it is ``body``'s first field, else "" (also when it
    is not UTF-8), read in constant time without parsing the rest: protobuf's serializers
    write fields in their numbers' order, so a request's field 1 (the model an inference
    request names) is first. Only for what a refusal of an unparsed request is recorded
    under: a later field of the same number would win once parsed."""
    end = len(body)
    try:
        tag, at = _varint(body, 0, end)
        if tag != (number << 3) | _LEN:
            return ""
        length, at = _varint(body, at, end)
    except Malformed:
        return ""
    if at + length > end:
        return ""
    try:
        return str(memoryview(body)[at : at + length], "utf-8")
    except UnicodeDecodeError:
        return ""


def not_parsed(message_type: type[Message]) -> InvalidInput:
    # The parser's own text is left out: it is grpc's and protobuf's, not a stable message.
    return InvalidInput(
        reasons.REQUEST_NOT_PARSED,
        f"the request is not a valid {message_type.DESCRIPTOR.full_name} message",
        message_type=message_type.DESCRIPTOR.full_name,
    )


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


async def parsed(
    message_type: type[M], body: bytes, max_values: int, bounds: MessageBounds = _NO_BOUNDS
) -> M:
    """``parse_within``, in a worker thread when ``body`` must be walked (it is larger than
    ``max_values`` bytes); a small body is parsed at once: no more than a few milliseconds."""
    if len(body) <= max_values:
        return parse_within(message_type, body, max_values, bounds)
    parse: Callable[[], M] = functools.partial(parse_within, message_type, body, max_values, bounds)
    job = _parse_threads().submit(parse)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        job.cancel()  # not begun: dropped; under way: it ends on its own, its result unread
        raise
