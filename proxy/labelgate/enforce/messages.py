"""The enforce stage for generic protobuf messages: apply masks to a copy. Pure.

Paths are those of ``labelgate.classify.messages`` (``name``, ``contact.email``,
``items[].ssn``; a repeated field may be named with or without ``[]``), plus
``<path>{<detector>}`` for detected spans in string and bytes fields. Per field type:

- string: the strategy's string (``null``: empty); bytes: as a BYTES element;
- numbers, bools, enums: zero, whatever the strategy (a type cannot change);
- messages, maps and Any: cleared, whatever the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify.fields import Classification
from labelgate.classify.jsonpaths import Location
from labelgate.classify.messages import ANY_TYPE, is_map, is_message, message_type_of, unpacked_any
from labelgate.enforce import reasons
from labelgate.enforce.compiled import MaskLike, compile_masks
from labelgate.enforce.strategies import Mask, Masker, MaskIndex, replace_spans

MESSAGE_REQUIRED_MISSING = reasons.MESSAGE_REQUIRED_MISSING
MASKED_REQUIRED_FIELD = reasons.MASKED_REQUIRED_FIELD

_ZERO = {
    FieldDescriptor.CPPTYPE_BOOL: False,
    FieldDescriptor.CPPTYPE_FLOAT: 0.0,
    FieldDescriptor.CPPTYPE_DOUBLE: 0.0,
}


def apply_message_masks(
    message: Message,
    classification: Classification,
    masks: Iterable[MaskLike],
    hash_key: bytes,
) -> Message:
    """A masked copy of ``message`` (the original is never changed).

    Unknown fields (numbers the descriptor does not know) are dropped from the copy: the
    classifier could not see them, so nothing says they are safe to pass on.
    """
    compiled, index = compile_masks(masks)  # memoized for a cached decision's masks tuple
    result = type(message)()
    result.CopyFrom(message)
    result.DiscardUnknownFields()
    canonical_anys(result)
    if not index:
        return result
    masker = Masker(hash_key, list(compiled))
    masked_at: list[Location] = []
    _mask_fields(result, "", (), index, masker, masked_at)
    for leaf in classification.message_spans:
        selected = [
            (hit.start, hit.end, mask)
            for hit in leaf.detections
            if (mask := _span_mask(index, leaf.path, hit.detector)) is not None
        ]
        if not selected or any(leaf.location[: len(done)] == done for done in masked_at):
            continue
        _mask_string_spans(result, leaf.location, selected, masker)
    return result


def canonical_anys(message: Message) -> None:
    """Re-encode every readable ``google.protobuf.Any`` in ``message`` from what was parsed of
    it (``classify.messages.unpacked_any``): DiscardUnknownFields does not reach into an
    Any's bytes, and bytes an upstream wrote (a field twice, unknown fields) could otherwise
    carry what classification never read. An Any that cannot be read keeps its bytes; it
    was classified as restricted."""
    for descriptor, value in message.ListFields():
        if descriptor.is_extension or not is_message(descriptor):
            continue
        if is_map(descriptor):
            if not is_message(message_type_of(descriptor).fields_by_name["value"]):
                continue
            items = list(value.values())
        else:
            items = list(value) if descriptor.is_repeated else [value]
        for item in items:
            if item.DESCRIPTOR.full_name == ANY_TYPE:
                contents, _ = unpacked_any(item)
                if contents is not None:
                    canonical_anys(contents)
                    item.value = contents.SerializeToString(deterministic=True)
            else:
                canonical_anys(item)


def _span_mask(index: MaskIndex, path: str, detector: str) -> Mask | None:
    mask = index.lookup(f"{path}{{{detector}}}")
    if mask is None and path.endswith("[]"):  # a repeated field named without its []
        mask = index.lookup(f"{path[:-2]}{{{detector}}}")
    return mask


def _mask_fields(
    message: Message,
    prefix: str,
    location: Location,
    index: MaskIndex,
    masker: Masker,
    masked_at: list[Location],
) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.is_extension:
            continue
        name = descriptor.name
        path = prefix + name
        here = (*location, name)
        mask = index.lookup(path)
        if mask is None and descriptor.is_repeated:
            mask = index.lookup(path + "[]")
        if mask is not None:
            masked_at.append(here)
            _mask_field(message, descriptor, value, mask, masker)
        elif is_map(descriptor):
            continue
        elif is_message(descriptor):
            if descriptor.is_repeated:
                for position, item in enumerate(value):
                    _mask_fields(item, path + "[].", (*here, position), index, masker, masked_at)
            else:
                _mask_fields(value, path + ".", here, index, masker, masked_at)


def _mask_field(
    message: Message, descriptor: FieldDescriptor, value: Any, mask: Mask, masker: Masker
) -> None:
    if is_message(descriptor):  # maps too: their entries are messages
        message.ClearField(descriptor.name)
    elif descriptor.is_repeated:
        masked = [_masked_scalar(descriptor, item, mask, masker) for item in value]
        del value[:]
        value.extend(masked)
    elif descriptor.cpp_type == FieldDescriptor.CPPTYPE_STRING:  # string and bytes
        setattr(message, descriptor.name, _masked_scalar(descriptor, value, mask, masker))
    else:
        message.ClearField(descriptor.name)  # numbers, bools, enums: the zero value


def _masked_scalar(descriptor: FieldDescriptor, value: Any, mask: Mask, masker: Masker) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_STRING:
        return masker.text(value, mask)
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        return masker.raw(value, mask)
    return _ZERO.get(descriptor.cpp_type, 0)


def _mask_string_spans(
    root: Message, location: Location, spans: list[tuple[int, int, Mask]], masker: Masker
) -> None:
    """Rewrite spans in the string or bytes value at ``location``.

    If the string is not where the classification saw it, or the spans do not fit, the
    message is not the one classified: the top-level field holding it is cleared.
    """
    try:
        holder: Any = root
        for step in location[:-1]:
            holder = holder[step] if isinstance(step, int) else getattr(holder, step)
        last = location[-1]
        current = holder[last] if isinstance(last, int) else getattr(holder, last)
        is_bytes = isinstance(current, bytes)  # a bytes field: spans index it as it is
        rewritten = replace_spans(
            current if is_bytes else current.encode("utf-8", "surrogatepass"), spans, masker
        )
        if rewritten is None:
            raise ValueError("spans do not fit")
        text = rewritten if is_bytes else rewritten.decode("utf-8", "surrogatepass")
        if isinstance(last, int):
            holder[last] = text
        else:
            setattr(holder, last, text)
    except (AttributeError, IndexError, TypeError, ValueError):
        root.ClearField(str(location[0]))
