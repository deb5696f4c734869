"""The enforce stage for generic protobuf messages: apply masks to a copy. Pure.

Paths are those of ``labelgate.classify.messages`` (``name``, ``contact.email``,
``items[].ssn``; a repeated field may be named with or without ``[]``), plus
``<path>{<detector>}`` for detected spans in string, bytes and number fields. A field masked
whole takes the most protective of its spans' masks if its own does not cover them
(``strategies.covering``). Per field type:

- string: the strategy's string (``null``: empty); bytes: as a BYTES element;
- numbers, bools, enums: zero, whatever the strategy (a type cannot change); a number with
  a detected span (``i64{credit_card}``) too, whole;
- messages, maps and Any: cleared, whatever the strategy; a reply that is itself an Any is
  cleared by a mask on its one field (``ANY_REPLY_FIELD``).

A proto2 ``required`` field cannot be cleared: protobuf will not encode the reply. A masked
required number, bool or enum holds its default and a masked required message is left empty,
which is what a reader of the cleared field would read: the call still works, and nothing of
the upstream's value is in it. A reply still missing a required field is refused, inside the
call's record: one the upstream sent that way (``MESSAGE_REQUIRED_MISSING``), or one a mask
left so (an empty message that has required fields of its own: ``MASKED_REQUIRED_FIELD``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from labelgate.classify.fields import Classification
from labelgate.classify.jsonpaths import Location
from labelgate.classify.messages import (
    ANY_REPLY_FIELD,
    ANY_TYPE,
    is_map,
    is_message,
    message_type_of,
    unpacked_any,
    without_extensions,
)
from labelgate.enforce import reasons
from labelgate.enforce.compiled import MaskLike, compile_masks
from labelgate.enforce.strategies import Mask, Masker, MaskIndex, covering, replace_spans
from labelgate.errors import PermissionDenied, UpstreamError

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
    if not _encodable(result):
        raise UpstreamError(MESSAGE_REQUIRED_MISSING, "the upstream's reply leaves a required field unset")
    if not index:
        return result
    if result.DESCRIPTOR.full_name == ANY_TYPE:
        if index.lookup(ANY_REPLY_FIELD) is not None:
            result.Clear()
        return result
    masker = Masker(hash_key, list(compiled))
    spans: list[tuple[Location, list[tuple[int, int, Mask]]]] = []
    within: dict[Location, list[Mask]] = {}  # a location -> the span masks at or under it
    for leaf in classification.message_spans:
        selected = [
            (hit.start, hit.end, mask)
            for hit in leaf.detections
            if (mask := _span_mask(index, leaf.path, hit.detector)) is not None
        ]
        if selected:
            spans.append((leaf.location, selected))
            for end in range(1, len(leaf.location) + 1):
                within.setdefault(leaf.location[:end], []).extend(mask for _, _, mask in selected)
    masked_at: list[Location] = []
    _mask_fields(result, "", (), index, masker, masked_at, within)
    for location, selected in spans:
        if not any(location[: len(done)] == done for done in masked_at):
            _mask_spans(result, location, selected, masker)
    if not _encodable(result):
        raise PermissionDenied(
            MASKED_REQUIRED_FIELD, "policy masks a required field of the reply that nothing can stand in for"
        )
    return result


def _encodable(message: Message) -> bool:
    """Whether protobuf can encode ``message``: no required field unset, extensions aside
    (release strips them, ``without_extensions``)."""
    return message.IsInitialized() or without_extensions(message).IsInitialized()


def canonical_anys(message: Message) -> None:
    """Re-encode every readable ``google.protobuf.Any`` in ``message`` (``message`` itself
    too) from what was parsed of it (``classify.messages.unpacked_any``), at every depth (an
    Any packing an Any): DiscardUnknownFields does not reach into an Any's bytes, and bytes an
    upstream wrote (a field twice, unknown fields, extensions) could otherwise carry what
    classification never read. An Any that cannot be read keeps its bytes; it was
    classified as restricted."""
    if message.DESCRIPTOR.full_name == ANY_TYPE:
        contents, _ = unpacked_any(message)
        if contents is not None:
            canonical_anys(contents)
            # Partial: the contents is released as it was read, required fields or not.
            message.value = contents.SerializePartialToString(deterministic=True)  # type: ignore[attr-defined]
        return
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
    within: dict[Location, list[Mask]],
) -> None:
    """Mask the fields masks name; a field masked whole takes the most protective of the span
    masks inside it its own mask does not cover (``strategies.covering``: ``partial`` on a
    string would show the last characters of a secret found in it), and its spans are then
    not looked at again."""
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
            _mask_field(message, descriptor, value, covering(mask, within.get(here, ())), masker)
        elif is_map(descriptor):
            continue
        elif is_message(descriptor):
            if descriptor.is_repeated:
                for position, item in enumerate(value):
                    _mask_fields(item, path + "[].", (*here, position), index, masker, masked_at, within)
            else:
                _mask_fields(value, path + ".", here, index, masker, masked_at, within)


def _mask_field(
    message: Message, descriptor: FieldDescriptor, value: Any, mask: Mask, masker: Masker
) -> None:
    if is_message(descriptor):  # maps too: their entries are messages
        _clear(message, descriptor)
    elif descriptor.is_repeated:
        masked = [_masked_scalar(descriptor, item, mask, masker) for item in value]
        del value[:]
        value.extend(masked)
    elif descriptor.cpp_type == FieldDescriptor.CPPTYPE_STRING:  # string and bytes
        setattr(message, descriptor.name, _masked_scalar(descriptor, value, mask, masker))
    else:
        _clear(message, descriptor)  # numbers, bools, enums: the zero value


def _clear(message: Message, descriptor: FieldDescriptor) -> None:
    """Clear a field; a required one holds what reading it cleared gives (see the docstring)."""
    message.ClearField(descriptor.name)
    if descriptor.is_required:
        if is_message(descriptor):
            getattr(message, descriptor.name).SetInParent()
        else:
            setattr(message, descriptor.name, descriptor.default_value)


def _masked_scalar(descriptor: FieldDescriptor, value: Any, mask: Mask, masker: Masker) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_STRING:
        return masker.text(value, mask)
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        return masker.raw(value, mask)
    return _zero(descriptor)


def _zero(descriptor: FieldDescriptor) -> Any:
    """A number's, bool's or enum's zero value (an enum's first, which proto2 may not number 0)."""
    if descriptor.cpp_type == FieldDescriptor.CPPTYPE_ENUM and descriptor.enum_type is not None:
        return descriptor.enum_type.values[0].number
    return _ZERO.get(descriptor.cpp_type, 0)


def _mask_spans(
    root: Message, location: Location, spans: list[tuple[int, int, Mask]], masker: Masker
) -> None:
    """Rewrite spans in the string or bytes value at ``location``; zero a number there.

    If the value is not where the classification saw it, or the spans do not fit, the
    message is not the one classified: the top-level field holding it is cleared.
    """
    # The item's index in a repeated field, the steps to the message holding the field, its name.
    position = location[-1] if isinstance(location[-1], int) else None
    steps = location[: -1 if position is None else -2]
    name = str(location[len(steps)])
    try:
        holder: Any = root
        for step in steps:
            holder = holder[step] if isinstance(step, int) else getattr(holder, step)
        descriptor = holder.DESCRIPTOR.fields_by_name[name]
        if descriptor.cpp_type != FieldDescriptor.CPPTYPE_STRING:
            if position is None:
                _clear(holder, descriptor)
            else:
                getattr(holder, name)[position] = _zero(descriptor)
            return
        field = getattr(holder, name)
        current = field if position is None else field[position]
        is_bytes = isinstance(current, bytes)  # a bytes field: spans index it as it is
        rewritten = replace_spans(
            current if is_bytes else current.encode("utf-8", "surrogatepass"), spans, masker
        )
        if rewritten is None:
            raise ValueError("spans do not fit")
        text = rewritten if is_bytes else rewritten.decode("utf-8", "surrogatepass")
        if position is None:
            setattr(holder, name, text)
        else:
            field[position] = text
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        fields: Any = root.DESCRIPTOR.fields_by_name
        top = str(location[0])
        if top in fields:
            _clear(root, fields[top])
        else:
            root.ClearField(top)  # not a field: as protobuf says
