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


# One decoder for every element: ``json.loads`` with a hook builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
# Bytes that may start an element holding a JSON object: "{" or ASCII whitespace.
OBJECT_OPENERS = (b"{", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")


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
        value = _DECODER.decode(element.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or (check_depth and _too_deep(value, 0)):
        return None
    return value


def _too_deep(node: Any, depth: int) -> bool:
    """Whether some node under ``node`` (at ``depth``) lies deeper than ``MAX_DEPTH``, as
    ``flatten`` counts: its answer without building the leaves."""
    if isinstance(node, dict):
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return False
    if depth >= MAX_DEPTH:
        return len(children) > 0  # any child, even a scalar, would be too deep
    for child in children:  # noqa: SIM110 - a plain loop: no generator per container
        if isinstance(child, dict | list) and _too_deep(child, depth + 1):
            return True
    return False


Leaf = tuple[Location, str, Any]  # (location, path suffix, scalar value)


def flatten(value: dict[str, Any]) -> tuple[list[Leaf], list[str]] | None:
    """Every scalar in document order, and every key (keys become field paths, so they are
    scanned too); None when nested deeper than ``MAX_DEPTH``.

    A leaf's suffix is what follows ``outputs.<tensor>[]``: ``.contact.email``, ``.tags[]``.
    Empty objects and arrays hold no data and give no leaf.
    """
    leaves: list[Leaf] = []
    keys: list[str] = []

    # Recursion is bounded: the walk stops one level below MAX_DEPTH. It is about twice as
    # fast as an explicit stack, and flatten runs for every JSON element of every response.
    def walk(node: Any, location: Location, suffix: str) -> None:
        if len(location) > MAX_DEPTH:
            raise _TooDeep
        if isinstance(node, dict):
            keys.extend(node)
            for key, child in node.items():
                walk(child, (*location, key), f"{suffix}.{key}")
        elif isinstance(node, list):
            item_suffix = suffix + "[]"
            for index, child in enumerate(node):
                walk(child, (*location, index), item_suffix)
        else:
            leaves.append((location, suffix, node))

    try:
        walk(value, (), "")
    except _TooDeep:
        return None
    return leaves, keys


class _TooDeep(Exception):
    pass


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


# json.dumps with options builds an encoder per call; these are built once.
_ENCODERS = {
    sort_keys: json.JSONEncoder(ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))
    for sort_keys in (False, True)
}


def _encode(value: Any, sort_keys: bool) -> bytes:
    try:
        return _ENCODERS[sort_keys].encode(value).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\ud800" escape) has no UTF-8 form: keep it escaped.
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode("ascii")
