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

A value is not a measure of memory: upb builds each message, however empty on the wire, as
its type's whole layout (a slot for every field). 100,000 empty sub-messages (two bytes of
wire each, within the value bound) of a type of 500 text fields took 783 MiB and 0.6 s to
parse, 50,000 of them 391 MiB and 1.5 s (review). So the walk also adds up what the parse
will build (``Cost.parsed_bytes``): each message its type's layout (``_layout_bytes``: from the
descriptor, once a type), each map entry its entry's and its value message's (upb makes the
value of every entry, present or not), each value the slot it takes in a repeated field's
array. Past ``max_parsed_bytes`` (``limits.max_message_bytes``: what one request may build,
as it is what one may send) the request is refused (INVALID_ARGUMENT,
``REQUEST_TOO_LARGE``) unparsed, and within it the estimate is charged to the call's lease of
the request bytes budget (``inflight.parse_held``) before the parse, so that many such calls
together are shed (RESOURCE_EXHAUSTED, ``REQUEST_BYTES_EXHAUSTED``) rather than held.

Calibrated on protobuf 7.36's upb (Python's default), parsing 100,000 to 200,000 empty
messages of types of 1, 10 and 100 fields of each kind and measuring the process's resident
memory: a message takes an 8-byte header, 16 bytes a text or bytes field, 8 a 64-bit number,
a message, a repeated field or a map, 4 a 32-bit number, 1 a bool, a oneof its largest
member's and 4, a bit a field of presence, and up to 18% more of its arena's blocks (types
of 100 to 4,000 text fields); an element of a repeated field 17-23 bytes (a message's or a
number's) to 37-49 (a text's), as arrays grow by doubling in an arena that keeps what they
outgrew; a map entry 25 bytes (the same key again) to 134 (distinct text keys). The
estimate is at or above each of them, and within 4 times the most of them
(``tests/gateway/test_routed_request_bounds.py`` holds it to that).

A body so small that the most it could build is below ``INLINE_PARSED_BYTES`` (its length
times the most any byte of its type can build, ``_amplification``) is parsed at once, on
the event loop, without a walk: its bound is charged. A larger one is walked: on the event
loop while it holds no more than ``INLINE_WALK_VALUES`` (a large tensor is one value), else
in a worker thread (1-1.5 µs a value: 0.1-0.15 s at the default bound, measured), in its
caller's lane (``_Lane``): a caller's walks run one at a time, so one caller sending many
holds one of the threads while others' take their turns at the rest. The parse itself runs
on the event loop once the walk is done and its estimate charged: upb holds the GIL for its
whole parse (the loop stalled 177 ms of a 197 ms parse in a thread, measured), so a thread
would not spare the loop, and the estimate bounds it (16 MiB of layouts: 16-18 ms, measured).

A request type may say more (``MessageBounds``): message types whose contents are data,
copied as they are and counted one value (an inference tensor's contents: a legitimate INT64
or BYTES tensor holds millions of elements, bounded by its bytes; its layout counts, its
elements' slots do not), and top-level repeated fields with a bound of their own, refused
with that bound's own reason past it (a ``ModelInferRequest``'s inputs and requested
outputs: ``gateway/inference.py``).

Transports call this only once the caller is authenticated (``gateway/routes.py``,
``gateway/inference.py``): an anonymous caller's request is never walked nor parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate.calls import PROVEN
from labelgate.classify.reasons import MESSAGE_TOO_MANY_VALUES
from labelgate.errors import InvalidInput, LabelgateError
from labelgate.gateway import inflight, reasons
from labelgate.oip import reasons as oip_reasons

M = TypeVar("M", bound=Message)
T = TypeVar("T")

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

# What upb's parse builds (see the module's text for how it was measured). A field's slot in
# its message's layout, by type; a repeated field or a map is a pointer.
_SLOT_BYTES = {
    FieldDescriptor.TYPE_STRING: 16,  # a view: where, and how long
    FieldDescriptor.TYPE_BYTES: 16,
    FieldDescriptor.TYPE_MESSAGE: 8,
    FieldDescriptor.TYPE_GROUP: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_INT64: 8,
    FieldDescriptor.TYPE_UINT64: 8,
    FieldDescriptor.TYPE_SINT64: 8,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_INT32: 4,
    FieldDescriptor.TYPE_UINT32: 4,
    FieldDescriptor.TYPE_SINT32: 4,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_ENUM: 4,
    FieldDescriptor.TYPE_BOOL: 1,
}
_MESSAGE_HEADER_BYTES = 8
_ONEOF_CASE_BYTES = 4
# upb takes messages from its arena's blocks, and what is left of a block too small for the
# next message is lost: a quarter more than the layout (up to 18% measured, messages of
# 11 KiB five to a block).
_ARENA_SLACK_QUARTERS = 5
# What each value builds besides its message's layout: at most its slot in a repeated
# field's array, 16 bytes (a text's), four times over: an array grows by doubling, and the
# arena keeps what it outgrew (49 bytes measured an empty text, just past a doubling).
VALUE_BYTES = 64
# A map entry's share of its map's table: 134 bytes measured an entry of distinct text
# keys, of which its value's slot and its entry's layout count 114.
_MAP_ENTRY_BYTES = 48
# A body that can build no more than this is parsed at once, without a walk: about 0.25 ms
# (upb built 16 MiB of layouts in 16-18 ms, measured), less than a walk in a thread takes.
INLINE_PARSED_BYTES = 256 * 1024
# A walk of no more values than this runs on the event loop (at most 1.5 ms): a thread's hop
# took 90 µs, more than walking an inference request of a few tensors of any size does.
INLINE_WALK_VALUES = 1_000
# Threads that walk large requests (``_Lane``): Python under the GIL, so more would not walk
# faster; two, so that one caller's walk does not keep another's waiting for a thread.
_WALK_THREADS = 2


class TooManyValues(Exception):
    """The walk passed its bound."""


class TooLarge(Exception):
    """What the parse would build passed its bound (``Cost.parsed_bytes``)."""


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


@functools.cache
def _layout_bytes(descriptor: Descriptor) -> int:
    """What upb builds for one message of this type, however little of it the wire sets: its
    header, a slot for each field (a oneof's members share their largest one's), a bit for
    each field's presence, in 8-byte words, and its arena's slack."""
    size = _MESSAGE_HEADER_BYTES
    oneofs: dict[str, int] = {}
    for known_field in descriptor.fields:
        slot = 8 if known_field.is_repeated else _SLOT_BYTES.get(known_field.type, 16)
        oneof = known_field.containing_oneof
        if oneof is None:
            size += slot
        else:
            oneofs[oneof.full_name] = max(oneofs.get(oneof.full_name, 0), slot)
    size += sum(slot + _ONEOF_CASE_BYTES for slot in oneofs.values())
    size += (len(descriptor.fields) + 7) // 8
    return -(-size // 8) * 8 * _ARENA_SLACK_QUARTERS // 4


@functools.cache
def _weight(descriptor: Descriptor) -> int:
    """What one message of this type builds as a field's value, its value's slot aside: its
    layout; a map entry's also its share of the map, and its value message, made for every
    entry whether the wire has it or not (the walk counts it again when it does)."""
    weight = _layout_bytes(descriptor)
    if descriptor.GetOptions().map_entry:
        weight += _MAP_ENTRY_BYTES
        value = descriptor.fields_by_name.get("value")
        if value is not None and value.message_type is not None:
            weight += _layout_bytes(value.message_type)
    return weight


# How the walk treats a field of a message: a message to walk into (``LEN``), a group to walk
# into (``START_GROUP``), a field packed of varints whose elements count, a top-level field
# whose elements are counted against a bound of their own (walked into as a message when
# ``inner`` is not None), a message whose contents are data (its layout counts, not walked),
# or one value.
_SUBMESSAGE, _GROUP, _PACKED_VARINTS, _BOUNDED, _COPIED = range(5)


@dataclass(frozen=True)
class _Shape:
    # field number -> (how it is walked, its message type, what one such message builds)
    fields: dict[int, tuple[int, Descriptor | None, int]]
    opaque: bool  # a message set: its contents are extensions the walk does not follow
    copied: frozenset[str]  # what its sub-messages' shapes copy (``MessageBounds.copied``)


@functools.cache
def _shape(descriptor: Descriptor, copied: frozenset[str] = frozenset()) -> _Shape:
    fields: dict[int, tuple[int, Descriptor | None, int]] = {}
    known = [*descriptor.fields, *descriptor.file.pool.FindAllExtensions(descriptor)]
    for known_field in known:
        inner = known_field.message_type
        if inner is not None and inner.full_name in copied:
            fields[known_field.number] = (_COPIED, inner, _weight(inner))  # data: one value
        elif known_field.type == FieldDescriptor.TYPE_MESSAGE:
            fields[known_field.number] = (_SUBMESSAGE, inner, _weight(inner))
        elif known_field.type == FieldDescriptor.TYPE_GROUP:
            fields[known_field.number] = (_GROUP, inner, _weight(inner))
        elif known_field.is_repeated and known_field.type in _VARINT_TYPES:
            fields[known_field.number] = (_PACKED_VARINTS, None, 0)
    return _Shape(fields, bool(descriptor.GetOptions().message_set_wire_format), copied)


@functools.cache
def _top_shape(descriptor: Descriptor, copied: frozenset[str], bounded: frozenset[int]) -> _Shape:
    """``_shape``, its ``bounded`` fields counted apart (each a length-delimited field: a
    message, text or bytes; a group or a packed field is not bounded so)."""
    shape = _shape(descriptor, copied)
    fields = dict(shape.fields)
    for number in bounded:
        kind, inner, weight = fields.get(number, _NOT_WALKED)
        if kind not in (None, _SUBMESSAGE):
            raise ValueError(f"field {number} of {descriptor.full_name} cannot be bounded apart")
        fields[number] = (_BOUNDED, inner, weight)
    return _Shape(fields, shape.opaque, copied)


@functools.cache
def _amplification(descriptor: Descriptor, copied: frozenset[str]) -> int:
    """The most bytes a byte of a body of this type can make the parse build, as the walk
    estimates it: a value takes two bytes of wire at least (a tag and a length, a varint, a
    group's start and end), a packed varint's element or a message set's byte one. Over every
    type a body of this one can hold (``_shape``'s sub-messages, groups and copied types)."""
    most = VALUE_BYTES // 2
    seen: set[Descriptor] = set()
    waiting = [descriptor]
    while waiting:
        shape = _shape(waiting.pop(), copied)
        if shape.opaque:
            most = max(most, VALUE_BYTES)
        for kind, inner, weight in shape.fields.values():
            if kind == _PACKED_VARINTS:
                most = max(most, VALUE_BYTES)
            elif inner is not None:
                most = max(most, -(-(VALUE_BYTES + weight) // 2))
                if kind != _COPIED and inner not in seen:
                    seen.add(inner)
                    waiting.append(inner)
    return most


def parsed_bytes_at_most(message_type: type[Message], body: bytes, bounds: MessageBounds = _NO_BOUNDS) -> int:
    """The most ``parsed_bytes`` can be for any body of ``len(body)`` bytes of this type, not
    reading it: what the body at once parsed (``INLINE_PARSED_BYTES``) is charged."""
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)
    return _layout_bytes(descriptor) + len(body) * _amplification(descriptor, bounds.copied)


class _Walk:
    """One body's walk: what is left of its bounds (``left`` values, ``bytes_left`` of what
    the messages it holds build) as it goes. Written for speed (a step per value, so locals
    and the one-byte varints inline): it stands before the parse."""

    __slots__ = ("bytes_left", "data", "elements_left", "left")

    def __init__(self, data: bytes, limit: int, byte_limit: int, elements: Mapping[int, int]) -> None:
        self.data = data
        self.left = limit
        self.bytes_left = byte_limit
        self.elements_left = dict(elements)  # a bounded field's elements still allowed

    def element(self, number: int) -> None:
        left = self.elements_left[number] - 1
        if left < 0:
            raise TooManyElements(number)
        self.elements_left[number] = left

    def built(self, weight: int) -> None:
        """A message of ``weight`` bytes is built (``_weight``)."""
        self.bytes_left -= weight
        if self.bytes_left < 0:
            raise TooLarge

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
                kind, inner, weight = fields.get(number, _NOT_WALKED)
                if kind == _SUBMESSAGE and inner is not None:
                    self.bytes_left -= weight  # ``built``, inline: a step per message
                    if self.bytes_left < 0:
                        raise TooLarge
                    self.message(_shape(inner, shape.copied), at, stop, depth + 1)
                elif kind == _PACKED_VARINTS:
                    self.packed_varints(at, stop)
                elif kind == _BOUNDED:
                    self.element(number)
                    if inner is not None:
                        self.built(weight)
                        self.message(_shape(inner, shape.copied), at, stop, depth + 1)
                elif kind == _COPIED:
                    self.built(weight)
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
                kind, inner, weight = fields.get(number, _NOT_WALKED)
                if kind == _GROUP and inner is not None:
                    self.built(weight)
                    inner_shape = _shape(inner, shape.copied)
                else:  # kept as unknown bytes, but walked for where it ends
                    inner_shape = _OPAQUE if opaque else _UNKNOWN
                at = self.message(inner_shape, at, end, depth + 1, number)
            else:
                raise Malformed
        if at > end or group:
            raise Malformed  # a fixed-width value or a group cut short
        return at


_UNKNOWN = _Shape({}, False, frozenset())
_OPAQUE = _Shape({}, True, frozenset())
_NOT_WALKED: tuple[None, None, int] = (None, None, 0)


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


@dataclass(frozen=True)
class Cost:
    """What a body holds, walked: its values, and what parsing it would build (bytes of
    messages' layouts and of values' slots, the copied data aside)."""

    values: int
    parsed_bytes: int


# What a walk may build when the caller gives no bound of its own.
_UNBOUNDED = 2**62


def cost_of(
    message_type: type[Message],
    body: bytes,
    limit: int,
    bounds: MessageBounds = _NO_BOUNDS,
    max_parsed_bytes: int = _UNBOUNDED,
) -> Cost:
    """What ``body`` holds as a ``message_type`` (see the module's text). Raises
    ``TooManyValues`` past ``limit`` values, ``TooLarge`` past ``max_parsed_bytes`` (having
    walked no further), ``TooManyElements`` past a bound of ``bounds``, ``Malformed`` when it
    is not the wire format."""
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)
    if bounds.elements:
        shape = _top_shape(descriptor, bounds.copied, frozenset(bounds.elements))
    else:
        shape = _shape(descriptor, bounds.copied)
    most = {number: bound.most for number, bound in bounds.elements.items()}
    walk = _Walk(body, limit, max_parsed_bytes, most)
    walk.built(_layout_bytes(descriptor))
    walk.message(shape, 0, len(body), 0)
    values = limit - walk.left
    walk.built(values * VALUE_BYTES)
    return Cost(values, max_parsed_bytes - walk.bytes_left)


def count_values(
    message_type: type[Message], body: bytes, limit: int, bounds: MessageBounds = _NO_BOUNDS
) -> int:
    """The values ``body`` holds as a ``message_type`` (``cost_of``, no bound on its bytes)."""
    return cost_of(message_type, body, limit, bounds).values


def _inline(
    message_type: type[Message], body: bytes, max_values: int, max_parsed_bytes: int, bounds: MessageBounds
) -> int | None:
    """What parsing ``body`` at once may build, when it is small enough to be parsed without a
    walk (no more values than bytes, and no more than ``INLINE_PARSED_BYTES`` built); None
    when it must be walked."""
    if len(body) > max_values:
        return None
    most = parsed_bytes_at_most(message_type, body, bounds)
    return most if most <= min(INLINE_PARSED_BYTES, max_parsed_bytes) else None


@contextlib.contextmanager
def _refusals(
    message_type: type[Message], max_values: int, max_parsed_bytes: int, bounds: MessageBounds
) -> Iterator[None]:
    """What the walk and the parse raise, as the refusals the caller gets."""
    try:
        yield
    except TooManyValues:
        raise too_many_values(message_type, max_values) from None
    except TooLarge:
        raise too_large(message_type, max_parsed_bytes) from None
    except TooManyElements as past:
        raise bounds.elements[past.number].refusal() from None
    except (Malformed, DecodeError):
        raise not_parsed(message_type) from None


def parse_within(
    message_type: type[M],
    body: bytes,
    max_values: int,
    bounds: MessageBounds = _NO_BOUNDS,
    *,
    max_parsed_bytes: int,
) -> M:
    """``body`` parsed as ``message_type``, once it is known to hold at most ``max_values``
    values (and no more elements than ``bounds`` allows) and to build at most
    ``max_parsed_bytes``, here, and charged to nothing (``parsed`` is the transports').
    Raises ``InvalidInput``: ``MESSAGE_TOO_MANY_VALUES``, ``REQUEST_TOO_LARGE`` or a bound's
    own refusal (nothing parsed), or ``REQUEST_NOT_PARSED``."""
    with _refusals(message_type, max_values, max_parsed_bytes, bounds):
        if _inline(message_type, body, max_values, max_parsed_bytes, bounds) is None:
            cost_of(message_type, body, max_values, bounds, max_parsed_bytes)
        return message_type.FromString(body)


async def parsed(
    message_type: type[M],
    body: bytes,
    max_values: int,
    bounds: MessageBounds = _NO_BOUNDS,
    *,
    max_parsed_bytes: int,
) -> M:
    """``parse_within``, for a call: a body that must be walked is walked in its caller's lane
    (``_Lane``), and what its parse would build (or, parsed at once, may build) is charged
    to the call's lease (``inflight.parse_held``: RESOURCE_EXHAUSTED,
    ``REQUEST_BYTES_EXHAUSTED`` when it does not fit) before it is parsed, on the event loop."""
    with _refusals(message_type, max_values, max_parsed_bytes, bounds):
        built = _inline(message_type, body, max_values, max_parsed_bytes, bounds)
        if built is None:
            built = (await _walked(message_type, body, max_values, bounds, max_parsed_bytes)).parsed_bytes
        inflight.parse_held(built)
        return message_type.FromString(body)


async def _walked(
    message_type: type[Message], body: bytes, max_values: int, bounds: MessageBounds, max_parsed_bytes: int
) -> Cost:
    """``cost_of`` the body: here when it holds no more than ``INLINE_WALK_VALUES``, else in
    its caller's lane, walked again from its start (at most 1.5 ms lost, on a walk of up to
    0.15 s)."""
    at_once = min(max_values, INLINE_WALK_VALUES)
    try:
        return cost_of(message_type, body, at_once, bounds, max_parsed_bytes)
    except TooManyValues:
        if at_once == max_values:
            raise
    walk = functools.partial(cost_of, message_type, body, max_values, bounds, max_parsed_bytes)
    return await _lane().run(walk)


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


def too_large(message_type: type[Message], max_parsed_bytes: int) -> InvalidInput:
    return InvalidInput(
        oip_reasons.REQUEST_TOO_LARGE,
        f"parsed, the request's messages would take more than {max_parsed_bytes} bytes "
        "(limits.max_message_bytes): each message takes the whole layout of its type, however "
        "few of its fields it sets",
        message_type=message_type.DESCRIPTOR.full_name,
    )


# -- the walk threads --------------------------------------------------------------------


@functools.cache
def _walk_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_WALK_THREADS, thread_name_prefix="labelgate-request-walk")


class _Lane:
    """One caller's turn at the walk threads: its walks run one at a time, in order, so a
    caller sending many holds one thread, and the other callers' walks, one each at the
    threads' queue, take theirs in turn. Before, every walk queued for one thread: a caller's
    hundreds of calls kept everyone else's waiting (review)."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def run(self, work: Callable[[], T]) -> T:
        await self._lock.acquire()
        loop = asyncio.get_running_loop()
        try:
            job = _walk_threads().submit(work)
        except BaseException:  # the threads are shut down (the process is ending)
            self._lock.release()
            raise
        # Released when the walk ends, not when its caller stops waiting for it: a walk under
        # way runs to its end, and a caller that gives up on its calls must not have two.
        job.add_done_callback(lambda _: _call_soon(loop, self._lock.release))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            job.cancel()  # not begun: dropped, and the lane released
            raise


# A lane lives as long as a walk of its caller waits or runs (the callers of a process are
# many): by the event loop it serves (a lock is bound to one) and the caller's qualified id.
_LANES: weakref.WeakValueDictionary[tuple[asyncio.AbstractEventLoop, str | None], _Lane] = (
    weakref.WeakValueDictionary()
)


def _lane() -> _Lane:
    """The current call's caller's lane: the subject its authentication proved (``PROVEN``,
    set before any request is walked); one lane for calls without one."""
    proven = PROVEN.get()
    key = (asyncio.get_running_loop(), proven.subject.id if proven is not None else None)
    lane = _LANES.get(key)
    if lane is None:
        lane = _LANES[key] = _Lane()
    return lane


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits on the lane
        loop.call_soon_threadsafe(callback)
