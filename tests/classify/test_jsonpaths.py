"""JSON elements: what counts as an object, the depth limit, leaves in document order."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest

from labelgate.classify import jsonpaths
from labelgate.classify.jsonpaths import MAX_DEPTH, KeyNames
from labelgate.errors import ConfigError

SECRET = b"0123456789abcdef0123456789abcdef"
NAMES = KeyNames({"root", "k", "b", "x", "y", "z"}, SECRET)


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
    too_deep = jsonpaths.flatten(document, NAMES) is None
    assert (jsonpaths.parse_object(element) is None) == too_deep
    assert jsonpaths.parse_object(element, check_depth=False) == document


def test_the_limit_is_where_flatten_puts_it() -> None:
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH - 1, 1, "list")}, NAMES) is not None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH, 1, "list")}, NAMES) is None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH - 1, [], "list")}, NAMES) is not None
    assert jsonpaths.flatten({"root": nested(MAX_DEPTH, [], "list")}, NAMES) is None


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
    leaves, keys = jsonpaths.flatten({"b": {"x": 1, "y": [2, {"z": 3}]}, "a": [], "c": None}, NAMES)
    c = NAMES.placeholder("c")
    assert [(location, suffix) for location, suffix, _ in leaves] == [
        (("b", "x"), ".b.x"),
        (("b", "y", 0), ".b.y[]"),
        (("b", "y", 1, "z"), ".b.y[].z"),
        (("c",), f".{c}"),  # not catalogued: never verbatim
    ]
    assert keys == ["b", "a", "c", "x", "y", "z"]  # an object's keys at once, when it is reached


def test_dumps_is_compact_and_keeps_lone_surrogates_escaped() -> None:
    assert jsonpaths.dumps({"a": "ü", "b": [1, 2]}) == '{"a":"ü","b":[1,2]}'.encode()
    assert jsonpaths.dumps({"a": "\ud800"}) == b'{"a":"\\ud800"}'
    assert jsonpaths.canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_uncatalogued_keys_are_placeholders_stable_per_secret() -> None:
    other = KeyNames({"root"}, b"another secret of 32 bytes......")
    for key in ("sk_live_abc123", "4111111111111111", "Ann Smith", "a.b", "c[]", "<key:00000000>"):
        placeholder = NAMES.placeholder(key)
        assert re.fullmatch(r"<key:[0-9a-f]{8}>", placeholder), placeholder
        assert NAMES.segment(key) == "." + placeholder == "." + KeyNames((), SECRET).placeholder(key)
        assert other.placeholder(key) != placeholder
    expected = hmac.new(SECRET, b"sk_live_abc123", hashlib.sha256).hexdigest()[:8]
    assert NAMES.placeholder("sk_live_abc123") == f"<key:{expected}>"
    assert NAMES.segment("root") == ".root"


def test_the_default_secret_is_one_per_process_and_short_secrets_are_refused() -> None:
    assert KeyNames().placeholder("x") == KeyNames(secret=jsonpaths.PROCESS_KEY_SECRET).placeholder("x")
    with pytest.raises(ConfigError) as caught:
        KeyNames((), b"short")
    assert caught.value.reason == jsonpaths.PLACEHOLDER_KEY_INVALID


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        (b'{"a": 1}', None),
        (b"plain text", None),
        (b'{"a": 1, "a": 2}', jsonpaths.DUPLICATE_KEY),
        (b'{"a": ', jsonpaths.INVALID_JSON),
        (b'{"a": "\xff"}', jsonpaths.INVALID_JSON),
        (b'{"a": ' * 70 + b"1" + b"}" * 70, jsonpaths.TOO_DEEP),
    ],
)
def test_why_an_element_that_opens_an_object_is_not_one(element: bytes, reason: str | None) -> None:
    assert jsonpaths.read_object(element)[1] == reason


def test_unescaped_forms_decode_every_level_of_json_escapes() -> None:
    assert jsonpaths.unescaped_forms(b"no escapes") == []
    assert jsonpaths.unescaped_forms(b'"\\u0031\\u0032\\u0033-45-6789 \\" \\/ \\n"') == [
        b'"123-45-6789 " / \n"'
    ]
    assert jsonpaths.unescaped_forms(b"\\\\u0031") == [b"\\u0031", b"1"]  # JSON in JSON
    assert jsonpaths.unescaped_forms(b"C:\\Users") == []  # not a JSON escape
