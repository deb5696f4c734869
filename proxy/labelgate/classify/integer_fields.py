"""A held message's integer fields, grouped as the classifier reads them: pure.

The walk of a message's fields (``split_values._walk``) notes each integer, enum, float and
double field it meets (``Integers``, ``may_be_integers``). ``by_field`` takes the elements of
a repeated message's field together (``chars[0].c``, ``chars[1].c``: ``chars[].c``) and keeps
a float or double field only where its values are all whole numbers, as ``messages`` reads
them; ``held_integers`` follows what it gives across messages. Apart from ``split_values``
because it decides which values are read as integers, not how a stream is held.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from labelgate.classify.integer_text import CHARACTER_DTYPES, FLOAT_CPP_TYPES, whole_numbers

# (path, shown path, its values in order, whether a repeated field's, whether a float or
# double field's): an integer field's values (``HeldIntegers.follow``), or a float field's,
# read as integers where the classifier reads them so (``by_field``).
Integers = tuple[str, str, list[Any], bool, bool]


# An element of a repeated message (or a map's message value) in a path: ``chars[0].c``.
_ELEMENT = re.compile(r"\[\d+\](?=\.)")


def by_field(integers: list[Integers]) -> list[tuple[str, str, list[int], bool, bool]]:
    """A message's integer paths, the elements of a repeated message's one field taken
    together in order (``chars[0].c``, ``chars[1].c``: ``chars[].c``, whether ``records``), as
    the classifier reads them (``messages``: an integer field of a repeated message); the rest
    as they are. A record's field followed per element let a value split across messages'
    records out (review). A float or double field's values are integers where they are all
    whole numbers (``integer_text.whole_numbers``: a repeated field's, a records' field's
    across the records, a scalar), as the classifier reads them (``message_numbers.as_integers``);
    else they are not followed: ``double`` code points one a message went out where int64
    ones ended the stream (review)."""
    fields: dict[str, tuple[str, list[Any], bool, bool, bool]] = {}
    for path, shown, numbers, repeated, floats in integers:
        field_path = _ELEMENT.sub("[]", path)
        records = field_path != path and not repeated
        if records:
            path, shown = field_path, _ELEMENT.sub("[]", shown)
        known = fields.get(path)
        if known is None:
            fields[path] = (shown, list(numbers), repeated, records, floats)
        else:
            known[1].extend(numbers)
    found = []
    for path, (shown, numbers, repeated, records, floats) in fields.items():
        if floats:
            whole = whole_numbers(numbers)
            if whole is None:
                continue  # a fraction among them: not read as integers
            numbers = whole[0]
        found.append((path, shown, numbers, repeated, records))
    return found


def may_be_integers(descriptor: FieldDescriptor) -> bool:
    """Whether a field's values are read as integers (``by_field``): an integer or enum
    field's, a float or double field's when they are whole numbers."""
    return descriptor.cpp_type in CHARACTER_DTYPES or descriptor.cpp_type in FLOAT_CPP_TYPES
