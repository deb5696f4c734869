"""JSON objects inside BYTES elements: parsing and leaf paths, shared by classify and enforce.

Both sides must read an element the same way, or a mask could miss what the classifier
saw; so both use ``parse_object`` and the same path spelling: ``.key`` for an object key
and ``[]`` for every item of an array (``outputs.doc[].items[].ssn``).
"""

from __future__ import annotations

import json
from typing import Any

# Deeper documents are classified as plain text (the whole element is scanned instead).
MAX_DEPTH = 64

Location = tuple[str | int, ...]  # keys and list indices from the element's root


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # json.loads would keep only the last value, so a classifier looking at the parsed
        # object would never see the others, while the original bytes still carry them.
        raise _DuplicateKey("duplicate key")
    return result


def parse_object(element: bytes, check_depth: bool = True) -> dict[str, Any] | None:
    """The JSON object an element holds, or None when it is anything else.

    None for: not starting with ``{``, not UTF-8, not valid JSON, duplicate keys, nesting
    deeper than ``MAX_DEPTH`` (unless the caller checks that itself, as ``flatten`` does).
    Such elements are treated as plain text.
    """
    first = element[:1]
    if first != b"{" and (not first.isspace() or element.lstrip()[:1] != b"{"):
        return None
    try:
        value = json.loads(element.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or (check_depth and flatten(value) is None):
        return None
    return value


Leaf = tuple[Location, str, Any]  # (location, path suffix, scalar value)


def flatten(value: dict[str, Any]) -> tuple[list[Leaf], list[str]] | None:
    """Every scalar in document order, and every key (keys become field paths, so they are
    scanned too); None when nested deeper than ``MAX_DEPTH``.

    A leaf's suffix is what follows ``outputs.<tensor>[]``: ``.contact.email``, ``.tags[]``.
    Empty objects and arrays hold no data and give no leaf.
    """
    leaves: list[Leaf] = []
    keys: list[str] = []
    stack: list[Leaf] = [((), "", value)]
    while stack:
        location, suffix, node = stack.pop()
        if len(location) > MAX_DEPTH:
            return None
        if isinstance(node, dict):
            keys.extend(node)
            stack.extend(
                ((*location, key), f"{suffix}.{key}", child) for key, child in reversed(node.items())
            )
        elif isinstance(node, list):
            item_suffix = suffix + "[]"
            stack.extend(
                ((*location, index), item_suffix, node[index]) for index in range(len(node) - 1, -1, -1)
            )
        else:
            leaves.append((location, suffix, node))
    return leaves, keys


def scannable(value: Any) -> str | None:
    """The text detectors read for a leaf: strings, and integers (a card stored as a number)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, for elements rewritten by masking."""
    return _encode(value, sort_keys=False)


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON, so the hash of a non-string value is stable."""
    return _encode(value, sort_keys=True)


def _encode(value: Any, sort_keys: bool) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\ud800" escape) has no UTF-8 form: keep it escaped.
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode("ascii")
