"""JSON elements: what counts as an object, the depth limit, leaves in document order."""

from __future__ import annotations

import json

import pytest

from labelgate.classify import jsonpaths
from labelgate.classify.jsonpaths import MAX_DEPTH


def nested(depth: int, innermost: object, kind: str) -> object:
    """``innermost`` under ``depth`` levels of objects (``{"k": ...}``) or arrays (``[...]``)."""
    value = innermost
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("innermost", ["scalar", {}, [], {"a": 1}, [1]], ids=repr)
@pytest.mark.parametrize("depth", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_the_depth_check_agrees_with_flatten(kind: str, innermost: object, depth: int) -> None:
    document = {"root": nested(depth - 1, innermost, kind)}  # the innermost value sits at ``depth``
    element = json.dumps(document).encode()
    too_deep = jsonpaths.flatten(document) is None
    assert (jsonpaths.parse_object(element) is None) == too_deep
    assert jsonpaths.parse_object(element, check_depth=False) == document


def test_the_limit_is_where_flatten_puts_it() -> None:
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH - 1, 1, "list")}) is not None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH, 1, "list")}) is None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH - 1, [], "list")}) is not None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH, [], "list")}) is None


@pytest.mark.parametrize(
    ("element", "is_object"),
    [
        (b'{"a": 1}', True),
        (b' \t\n\r{"a": 1}', True),
        (b'\x0b{"a": 1}', False),  # a space to Python, not to JSON
        (b'\x0c{"a": 1}', False),
        (b'{"a": 1} ', True),
        (b'{"a": 1} x', False),
        (b'[{"a": 1}]', False),
        (b'{"a": 1, "a": 2}', False),
        (b'{"a": "\xff"}', False),
        (b"", False),
        (b"plain text", False),
    ],
)
def test_what_counts_as_a_json_object(element: bytes, is_object: bool) -> None:
    assert (jsonpaths.parse_object(element) is not None) is is_object


def test_leaves_and_keys_in_document_order() -> None:
    leaves, keys = jsonpaths.flatten({"b": {"x": 1, "y": [2, {"z": 3}]}, "a": [], "c": None})
    assert [(location, suffix) for location, suffix, _ in leaves] == [
        (("b", "x"), ".b.x"),
        (("b", "y", 0), ".b.y[]"),
        (("b", "y", 1, "z"), ".b.y[].z"),
        (("c",), ".c"),
    ]
    assert keys == ["b", "a", "c", "x", "y", "z"]  # an object's keys at once, when it is reached


def test_dumps_is_compact_and_keeps_lone_surrogates_escaped() -> None:
    assert jsonpaths.dumps({"a": "ü", "b": [1, 2]}) == '{"a":"ü","b":[1,2]}'.encode()
    assert jsonpaths.dumps({"a": "\ud800"}) == b'{"a":"\\ud800"}'
    assert jsonpaths.canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
