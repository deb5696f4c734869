"""The string and bytes fields of a protobuf message, at any depth, an Any's contents too,
read as the classifier reads them: the texts ``split_values`` follows across a routed
stream's messages. Apart because walking a message is one idea (bounded by depth and by the
message's value budget) and following its texts across messages another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.integer_fields import Integers, may_be_integers
from labelgate.classify.integer_text import FLOAT_CPP_TYPES, whole_numbers
from labelgate.classify.messages import (
    ANY_REPLY_FIELD,
    ANY_TYPE,
    FIXED_STEP_VALUES,
    MessageValues,
    _text,
    is_map,
    is_message,
    message_type_of,
    unpacked_any,
)
from labelgate.errors import UpstreamError

# Deeper than this, a path is not followed (classification refuses such replies anyway).
_MAX_DEPTH = 32


def text_fields(message: Message) -> Iterator[tuple[str, str, bytes]]:
    """(path, shown path, text) of every string and bytes field set in ``message``, at any
    depth, an Any's contents (``_any``) too, read as the classifier reads them (``_value``):
    the texts read across the held messages. The path tells map entries apart by their key;
    the shown path, for error texts, writes each map key as ``{}`` (a key is the upstream's
    text, which no policy decided on), and an Any's contents under ``{}.``, as the classifier
    does (``extra{}.text``)."""
    return texts_of(message, MessageValues(None))


# (path, shown path, text)
_Text = tuple[str, str, bytes]
_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def texts_of(
    message: Message, values: MessageValues, integers: list[Integers] | None = None
) -> Iterator[_Text]:
    """``integers``: where to put the integer fields met on the way (none: passed by)."""
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        # A reply that is itself an Any: one field, named as the classifier names it.
        yield from _any(message, ANY_REPLY_FIELD, ANY_REPLY_FIELD, 0, values, integers)
    else:
        yield from _walk(message, "", "", 0, values, integers)


def _walk(
    message: Message,
    prefix: str,
    shown: str,
    depth: int,
    values: MessageValues,
    integers: list[Integers] | None = None,
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
    integers: list[Integers] | None = None,
) -> Iterator[_Text]:
    """One value of a field (an item of a repeated one, a map's value)."""
    if is_message(descriptor):
        if message_type_of(descriptor).full_name == ANY_TYPE:
            yield from _any(value, path, shown, depth + 1, values, integers)
        else:
            yield from _walk(value, f"{path}.", f"{shown}.", depth + 1, values, integers)
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


def _any(
    packed: Message,
    path: str,
    shown: str,
    depth: int,
    values: MessageValues,
    integers: list[Integers] | None = None,
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
