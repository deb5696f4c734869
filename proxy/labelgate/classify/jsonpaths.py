"""JSON objects inside BYTES elements: parsing and leaf paths, shared by classify and enforce.

Both sides must read an element the same way, or a mask could miss what the classifier
saw; so both use ``parse_object`` and the same path spelling (``KeyNames.segment``):
``.key`` for an object key the catalog names, ``.<key:xxxxxxxx>`` for any other key, and
``[]`` for every item of an array (``outputs.doc[].items[].ssn``).

Keys are data (a customer's name, an API key used as a key), and paths go into the policy
input, audit records, logs and approval requests; so a key is written verbatim only when
an operator wrote it in the catalog, and otherwise as the first 8 hex digits of its HMAC
with a secret of the gateway: stable for the same key, so masks and globs still reach it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from labelgate.classify import reasons
from labelgate.errors import ConfigError

# Deeper documents are not classified key by key (see ``read_object``).
MAX_DEPTH = 64

# Why an element that opens like a JSON object was not classified key by key.
INVALID_JSON = "invalid_json"
DUPLICATE_KEY = "duplicate_key"
TOO_DEEP = "too_deep"

PLACEHOLDER_KEY_INVALID = reasons.PLACEHOLDER_KEY_INVALID
# A shorter secret would let anyone who sees a placeholder guess low-entropy keys (names).
MIN_KEY_SECRET_BYTES = 16
# One secret per process when none is configured: placeholders are stable within the
# process (and across catalog reloads) but join nothing across gateways or restarts.
PROCESS_KEY_SECRET = secrets.token_bytes(32)
# Spellings are memoized per KeyNames; past this many distinct keys the memo starts over,
# so upstreams keying objects by ever-new data cannot grow it without bound.
KEY_MEMO_SIZE = 4096

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
_JSON_SPACE = b" \t\n\r"


def parse_object(element: bytes, check_depth: bool = True) -> dict[str, Any] | None:
    """The JSON object an element holds, or None when it is anything else (``read_object``)."""
    return read_object(element, check_depth)[0]


def opens_object(element: bytes) -> bool:
    """Whether ``element`` starts like a JSON object: ``{`` after JSON whitespace."""
    first = element[:1]
    return first == b"{" or (first in _JSON_SPACE and element.lstrip(_JSON_SPACE)[:1] == b"{")


def read_object(element: bytes, check_depth: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)``, or ``(None, reason)`` for an element that opens like an object
    but is not one to classify key by key (``INVALID_JSON``: not UTF-8 or not valid JSON;
    ``DUPLICATE_KEY``; ``TOO_DEEP``: nesting deeper than ``MAX_DEPTH``, unless the caller
    checks that itself, as ``flatten`` does), or ``(None, None)`` for plain text.
    """
    if not opens_object(element):
        return None, None
    try:
        value = _DECODER.decode(element.decode("utf-8"))
    except _DuplicateKey:
        return None, DUPLICATE_KEY
    except RecursionError:
        return None, TOO_DEEP
    except (UnicodeDecodeError, ValueError):
        return None, INVALID_JSON
    if not isinstance(value, dict):
        return None, INVALID_JSON  # unreachable after "{", kept as a guard
    if check_depth and _too_deep(value, 0):
        return None, TOO_DEEP
    return value, None


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


def flatten(value: dict[str, Any], names: KeyNames) -> tuple[list[Leaf], list[str]] | None:
    """Every scalar in document order, and every key (masking rewrites values only, so a
    key must be scanned too); None when nested deeper than ``MAX_DEPTH``.

    A leaf's suffix is what follows ``outputs.<tensor>[]``, keys spelled by
    ``names``: ``.contact.email``, ``.tags[]``, ``.<key:3f2a1b0c>.email``.
    Empty objects and arrays hold no data and give no leaf.
    """
    leaves: list[Leaf] = []
    keys: list[str] = []
    segment = names.segment

    # Recursion is bounded: the walk stops one level below MAX_DEPTH. It is about twice as
    # fast as an explicit stack, and flatten runs for every JSON element of every response.
    def walk(node: Any, location: Location, suffix: str) -> None:
        if len(location) > MAX_DEPTH:
            raise _TooDeep
        if isinstance(node, dict):
            keys.extend(node)
            for key, child in node.items():
                walk(child, (*location, key), suffix + segment(key))
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


class KeyNames:
    """How object keys are spelled in the field paths of one model's JSON elements.

    ``catalogued``: the key names written as literal segments of that model's catalog
    paths (``Catalog.key_names``); ``secret``: the HMAC key for every other key.
    """

    def __init__(self, catalogued: Iterable[str] = (), secret: bytes | None = None) -> None:
        secret = PROCESS_KEY_SECRET if secret is None else secret
        if len(secret) < MIN_KEY_SECRET_BYTES:
            raise ConfigError(
                PLACEHOLDER_KEY_INVALID,
                f"the secret of key placeholders needs at least {MIN_KEY_SECRET_BYTES} bytes",
            )
        self.catalogued = frozenset(catalogued)
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self._memo: dict[str, str] = {}

    def placeholder(self, key: str) -> str:
        """``<key:xxxxxxxx>``: the first 8 hex digits of HMAC-SHA256(secret, key as UTF-8)."""
        state = self._keyed.copy()  # the keyed pads are derived once, not per key
        state.update(key.encode("utf-8", "surrogatepass"))
        return f"<key:{state.hexdigest()[:8]}>"

    def segment(self, key: str) -> str:
        """The path segment for ``key``: ``.key`` if catalogued, else ``.<key:xxxxxxxx>``."""
        spelled = self._memo.get(key)
        if spelled is None:
            spelled = "." + (key if key in self.catalogued else self.placeholder(key))
            if len(self._memo) >= KEY_MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = spelled
        return spelled


# The escapes of a JSON string. Matches run left to right and never overlap, so "\\u0031"
# is an escaped backslash and then "u0031", as JSON reads it.
_ESCAPE = re.compile(rb'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_SIMPLE_ESCAPES = {
    b'"': b'"',
    b"\\": b"\\",
    b"/": b"/",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
}
# JSON in a string in JSON is escaped once more per level; past this many, give up.
MAX_UNESCAPE_LEVELS = 4


def _unescape_match(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code is None:
        return _SIMPLE_ESCAPES[match.group(2)]
    return chr(int(code, 16)).encode("utf-8", "surrogatepass")


def unescaped_forms(data: bytes) -> list[bytes]:
    """``data`` with its JSON escapes decoded, once per level of escaping (none if it has none).

    Escapes hide values from detectors that read raw text (``\\u0031\\u0032\\u0033-45-6789``,
    or ``\\n`` gluing a letter to a number), so text that may be JSON is scanned in these
    forms as well; every level is scanned, since decoding one can also hide what another showed.
    """
    forms: list[bytes] = []
    current = data
    for _ in range(MAX_UNESCAPE_LEVELS):
        if b"\\" not in current:
            break
        decoded = _ESCAPE.sub(_unescape_match, current)
        if decoded == current:
            break
        forms.append(decoded)
        current = decoded
    return forms


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
