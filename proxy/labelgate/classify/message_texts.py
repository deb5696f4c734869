"""The string and bytes fields of a protobuf message, at any depth, an Any's contents too,
read as the classifier reads them: the texts ``split_values`` follows across a routed
stream's messages. Apart because walking a message is one idea (bounded by depth and by the
message's value budget) and following its texts across messages another.

A map's texts are followed at the map's path as well as by key (``_map_lanes``): its string
keys (``tags{keys}``), which the classifier scans as it scans any text, and its string and
bytes values whatever their key (``tags{}``): a token stream may put each piece in a key, or
under a key that changes (``chunk_0``, ``chunk_1``), and a caller joining the map's keys or
values reads one text. A map has no order: the hold reads a message's entries in key order,
and each one of a message joined to each one of the next (``split_values._unread_pairs``),
the order a caller reads them in not known.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.integer_fields import Integers, may_be_integers
from labelgate.classify.integer_text import FLOAT_CPP_TYPES, key_order, whole_numbers
from labelgate.classify.messages import (
    ANY_REPLY_FIELD,
    ANY_TYPE,
    FIXED_STEP_VALUES,
    MAX_MESSAGE_DEPTH,
    MESSAGE_TOO_DEEP,
    MessageValues,
    _text,
    is_map,
    is_message,
    message_type_of,
    unpacked_any,
)
from labelgate.errors import UpstreamError


def text_fields(message: Message) -> Iterator[tuple[str, str, bytes]]:
    """(path, shown path, text) of every string and bytes field set in ``message``, at any
    depth, an Any's contents (``_any``) too, read as the classifier reads them (``_value``):
    the texts of its fields (``texts_of`` reads a map's keys and values at the map's path
    too). The path tells map entries apart by their key; the shown path, for error texts,
    writes each map key as ``{}`` (a key is the upstream's text, which no policy decided on),
    and an Any's contents under ``{}.``, as the classifier does (``extra{}.text``)."""
    return texts_of(message, MessageValues(None), lanes=False)


# (path, shown path, text)
_Text = tuple[str, str, bytes]
_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
# A map's texts at its own path (``_map_lanes``): its keys, and its values whatever their key.
# No field name holds braces, and a key is written ``['key']``: no field's path is one of these.
KEYS_LANE, VALUES_LANE = "{keys}", "{}"


@dataclass(frozen=True)
class _Reading:
    """What one walk of a message counts, gathers and yields (``texts_of``)."""

    values: MessageValues
    integers: list[Integers] | None  # where integer fields go (None: passed by)
    lanes: bool  # a map's texts at its own path too (``_map_lanes``)


def texts_of(
    message: Message,
    values: MessageValues,
    integers: list[Integers] | None = None,
    *,
    lanes: bool = True,
) -> Iterator[_Text]:
    """``integers``: where to put the integer fields met on the way (none: passed by).
    ``lanes``: a map's keys and values at the map's path too, as the hold follows them
    (``_map_lanes``); without, only the fields' own texts (``text_fields``; a PEM block's
    lines, ``SplitValues._follow_keys``, which reads each text once).

    Depth is counted as the classifier counts it (``messages._Walker``: ``walk``, ``_fold``),
    and a message deeper than it accepts ends the stream as its classification would
    (``MESSAGE_TOO_DEEP``): the root is 0; a message field's message, an Any's contents, and
    an Any's that an Any packs, one level down each; a map's message value one level down,
    an Any's contents among them two (the classifier folds the map's values a level down,
    then the Any's). Stopping short instead let a value split across messages nested 17 to
    32 Anys deep out whole, each message passing its own classification (review)."""
    reading = _Reading(values, integers, lanes)
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        # A reply that is itself an Any: one field, named as the classifier names it; its
        # contents a level down.
        yield from _any(message, ANY_REPLY_FIELD, ANY_REPLY_FIELD, 1, reading)
    else:
        yield from _walk(message, "", "", 0, reading)


def _walk(message: Message, prefix: str, shown: str, depth: int, reading: _Reading) -> Iterator[_Text]:
    """``depth``: ``message``'s, as the classifier counts it (``texts_of``)."""
    _refuse_deeper(depth)
    present = message.ListFields()
    # Counted before any is looked at, as the classifier counts (a shape of a million dims).
    reading.values.take(len(present) + sum(len(value) for field, value in present if field.is_repeated))
    integers = reading.integers
    for descriptor, value in present:
        if descriptor.is_extension:
            continue  # neither classified nor released (``messages.without_extensions``)
        path, named = f"{prefix}{descriptor.name}", f"{shown}{descriptor.name}"
        if not is_message(descriptor) and descriptor.type not in _TEXT_TYPES:
            # No text to hold, no step per element; integers (enums too) are read across
            # messages as the classifier reads a repeated one (``held_integers``), and so are
            # floats and doubles where they are whole numbers (``by_field``).
            if integers is not None and may_be_integers(descriptor):
                numbers = list(value) if descriptor.is_repeated else [value]
                floats = descriptor.cpp_type in FLOAT_CPP_TYPES
                integers.append((path, named, numbers, descriptor.is_repeated, floats))
            continue
        if is_map(descriptor):
            value_field = message_type_of(descriptor).fields_by_name["value"]
            if value_field.cpp_type in FLOAT_CPP_TYPES and whole_numbers(list(value.values())) is None:
                # As the classifier reads a map's values: whole numbers all, or not integers.
                if reading.lanes:
                    yield from _map_lanes(descriptor, value, path, named)
                continue
            # A map of Any is shown as the classifier names it, its contents under ``anys{}.``.
            opened = (
                "" if is_message(value_field) and message_type_of(value_field).full_name == ANY_TYPE else "{}"
            )
            for key in sorted(value, key=str):
                yield from _value(
                    value_field, value[key], f"{path}[{key!r}]", f"{named}{opened}", depth, True, reading
                )
            if reading.lanes:
                yield from _map_lanes(descriptor, value, path, named)
        elif descriptor.is_repeated:
            for index, item in enumerate(value):
                yield from _value(
                    descriptor, item, f"{path}[{index}]", f"{named}[{index}]", depth, False, reading
                )
        else:
            yield from _value(descriptor, value, path, named, depth, False, reading)


def _map_lanes(descriptor: FieldDescriptor, entries: Any, path: str, named: str) -> Iterator[_Text]:
    """A map's texts at the map's own path, as well as by key (``_walk``): its string keys
    (``path{keys}``), which the classifier scans as it scans any text, and its string and
    bytes values whatever their key (``path{}``). A token stream may put each piece in a key,
    or under a key that changes between messages (``chunk_0``, ``chunk_1``): followed by key
    alone, the pieces of ``my ssn is 123-45-`` / ``6789`` were never read together, and each
    message passed its own classification (review). Each entry is yielded on its own, in key
    order: the hold reads them joined so, and each joined to each of the next message's
    (``split_values._unread_pairs``), since a caller may read a map in any order.

    Integer keys are not followed (ids run together are digits without end: the digit runs
    across messages the hold does not read, ``held_integers``); a map's message values are
    followed by key only (each of their texts would be held again for every map above it)."""
    entry = message_type_of(descriptor)
    keys = sorted(entries, key=key_order)
    if entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
        lane, shown = f"{path}{KEYS_LANE}", f"{named}{KEYS_LANE}"
        for key in keys:
            yield lane, shown, _text(key)
    if entry.fields_by_name["value"].type in _TEXT_TYPES:
        lane, shown = f"{path}{VALUES_LANE}", f"{named}{VALUES_LANE}"
        for key in keys:
            # As the classifier reads a map's value: a string that is not UTF-8 as its bytes.
            yield lane, shown, _text(entries[key])


def _value(
    descriptor: FieldDescriptor,
    value: Any,
    path: str,
    shown: str,
    depth: int,
    in_map: bool,
    reading: _Reading,
) -> Iterator[_Text]:
    """One value of a field (an item of a repeated one, a map's value); ``depth``: the
    depth of the message the field is in."""
    integers = reading.integers
    if is_message(descriptor):
        if message_type_of(descriptor).full_name == ANY_TYPE:
            # Its contents a level down; in a map, a level below the map's values (``texts_of``).
            contents_depth = depth + 2 if in_map else depth + 1
            yield from _any(value, path, shown, contents_depth, reading)
        else:
            yield from _walk(value, f"{path}.", f"{shown}.", depth + 1, reading)
    elif may_be_integers(descriptor):
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


def _any(packed: Message, path: str, shown: str, depth: int, reading: _Reading) -> Iterator[_Text]:
    """An Any's contents, as release re-encodes them (``messages.unpacked_any``), under
    ``path{}.``; an Any that packs an Any is read through to the message at the end. One the
    gateway cannot read (its type not in the route's descriptor set, bytes that do not parse)
    may hold a piece of any text of the stream's other messages, which nothing can join: the
    stream ends before it leaves. (Its type URL is not read across messages: it ends in a
    type name the pool knows, so no value runs on across two; each message's classification
    scans it.)

    ``depth``: its contents', as the classifier counts it (``texts_of``). Refused when past
    what the classifier accepts even if they are an Any in turn: the message at the end of
    the chain is deeper still (the classifier refuses it), or it is an Any the gateway cannot
    read (refused here below)."""
    _refuse_deeper(depth)
    reading.values.take(FIXED_STEP_VALUES)  # parsed apart, as the classifier's walk counts it
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
        yield from _any(contents, path, shown, depth + 1, reading)
    else:
        yield from _walk(contents, f"{path}{{}}.", f"{shown}{{}}.", depth, reading)


def _refuse_deeper(depth: int) -> None:
    """A message deeper than the classifier accepts ends the stream as its classification
    would refuse it (``messages._Walker.walk``), with the same error: never fewer texts read
    (whatever is not read across messages leaves split)."""
    if depth > MAX_MESSAGE_DEPTH:
        raise UpstreamError(
            MESSAGE_TOO_DEEP, f"the upstream's reply nests messages deeper than {MAX_MESSAGE_DEPTH}"
        )
