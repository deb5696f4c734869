"""JSON objects inside BYTES elements: parsing and leaf paths, shared by classify and enforce.

Both sides must read an element the same way, or a mask could miss what the classifier
saw; so both read it the same way (``read_object``, or for a shape already seen
``KeyNames.shaped`` or ``KeyNames.native_shape`` and ``parse_classified``, which reuse what
``read_object`` and ``flatten`` worked out for that shape) and spell paths the same way
(``KeyNames.segment``): ``.key`` for an object key the catalog names, ``.<key:xxxxxxxx>``
for any other key, and ``[]`` for every item of an array (``outputs.doc[].items[].ssn``).

Keys are data (a customer's name, an API key used as a key), and paths go into the policy
input, audit records, logs and approval requests; so a key is written verbatim only when
an operator wrote it in the catalog, and otherwise as the first 8 hex digits of its HMAC
with a secret of the gateway: stable for the same key, so masks and globs still reach it.
That HMAC's key is derived from the secret for placeholders alone (``placeholder_key``): the
gateway's secret is also the key of the ``hash`` mask, and a placeholder must not be the start
of the hash of the same text, which would link a key in the logs to a value in a reply.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import json.scanner
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, cast

from labelgate.classify import reasons
from labelgate.errors import ConfigError
from labelgate.memo import BoundedMemo

# Deeper documents are not classified key by key (see ``read_object``).
MAX_DEPTH = 64

# Why an element that opens like a JSON object was not classified key by key.
INVALID_JSON = "invalid_json"
DUPLICATE_KEY = "duplicate_key"
TOO_DEEP = "too_deep"
# Why an element that opens like JSON (``opens_json``) but not as a bare object is opaque.
NOT_AN_OBJECT = "not_an_object"

PLACEHOLDER_KEY_INVALID = reasons.PLACEHOLDER_KEY_INVALID
# A shorter secret would let anyone who sees a placeholder guess low-entropy keys (names).
MIN_KEY_SECRET_BYTES = 16
# One secret per process when none is configured: placeholders are stable within the
# process (and across catalog reloads) but join nothing across gateways or restarts.
PROCESS_KEY_SECRET = secrets.token_bytes(32)
# What ``placeholder_key`` derives the placeholders' key from, with the secret.
PLACEHOLDER_KEY_LABEL = b"labelgate json key names"
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


class LiteralFloat(float):
    """A JSON number its float does not give back (``json_float``): more significant digits
    than a double holds. ``4111111111111111110.0``, a 19-digit card, is ``4.111111111111111e18``
    as a float, which is no card; a reader that keeps number literals (a person, a log, an
    LLM, ``jq``, a decimal parser) reads the card. ``literal`` is the number as written,
    what ``scannable`` gives the detectors."""

    __slots__ = ("literal",)
    literal: str


# A float literal this short has at most 15 significant digits (a dot or an exponent takes
# a character), and a double gives back any 15.
_SHORT_FLOAT = 16
# Below this neither the number nor its float has the 13 digits before the point the shortest
# card has (``patterns._float_cards`` reads a number in text by its integer part, exact or
# parsed): whatever digits the float loses, the text detectors find the same in both.
_CARD_FLOOR = 1e12


def json_float(text: str) -> float:
    """The ``parse_float`` of every decoder of elements: ``float(text)``, or a ``LiteralFloat``
    when that float is not the number ``text`` writes (its shortest repr is another decimal)
    and either has 13 digits or more before the point. Every reader of an element (classify
    and enforce) reads its floats so. Most floats (short, or probabilities and scores below
    ``_CARD_FLOOR``) cost a length check and a comparison more than ``float``."""
    value = float(text)
    if len(text) <= _SHORT_FLOAT or -_CARD_FLOOR < value < _CARD_FLOOR:
        return value
    written = repr(value)
    if written == text or Decimal(text) == Decimal(written):
        return value  # the same number, maybe written another way (``1.50``, ``1e5``)
    literal = LiteralFloat(value)
    literal.literal = text
    return literal


# One decoder for every element: ``json.loads`` with a hook builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=json_float)
# Bytes that may start an element holding a JSON object: "{" or ASCII whitespace.
OBJECT_OPENERS = (b"{", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")
OBJECT_FIRST_BYTES = frozenset(OBJECT_OPENERS)  # the same, for ``element[:1] in``
_JSON_SPACE = b" \t\n\r"


def parse_object(element: bytes, check_depth: bool = True) -> dict[str, Any] | None:
    """The JSON object an element holds, or None when it is anything else (``read_object``)."""
    return read_object(element, check_depth)[0]


def opens_object(element: bytes) -> bool:
    """Whether ``element`` starts like a JSON object: ``{`` after JSON whitespace."""
    first = element[:1]
    return first == b"{" or (first in _JSON_SPACE and element.lstrip(_JSON_SPACE)[:1] == b"{")


# The first character of a JSON text that may hold keys: an object, an array, or a string
# (which may hold JSON in turn). Each is ASCII, so never part of a longer UTF-8 sequence.
_JSON_OPENING = re.compile(rb'[{\["]')


def opens_json(element: bytes) -> bool:
    """Whether a reader may parse ``element`` as JSON that holds keys: its first character
    is ``{``, ``[`` or ``"`` once everything a reader skips or does not see before it is
    left out. That is any space (``str.strip`` drops them all), control and format
    character (a byte-order mark, which ``json.loads`` skips on bytes; zero-width
    characters) and byte that is not UTF-8 (``json.loads`` reads UTF-16 and UTF-32 too:
    ``\\x00{``, ``\\xff\\xfe{``): every character Python does not print, and the space.
    Broader than any parser on purpose: it decides what fails closed (``json_elements``)."""
    found = _JSON_OPENING.search(element)
    if found is None:
        return False
    start = found.start()
    if start == 0:
        return True
    before = element[:start].decode("utf-8", "surrogateescape").replace(" ", "")
    return not any(map(str.isprintable, before))


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


# --- shapes: what flatten gives from keys alone, worked out once per key structure ---------
#
# A backend's JSON elements mostly share a few shapes (the same keys, in the same order,
# holding values of the same types). The locations, path suffixes and keys of an element
# depend on its shape alone, so they are computed (by ``flatten`` itself) for the first
# element of a shape and reused for the next; each element is then parsed by the C scanner
# and walked once to find its shape and its leaf values. Anything out of the ordinary
# (leading whitespace, invalid JSON, a duplicate key, too deep) takes the exact path above.

# Shapes remembered per KeyNames; past this many, or past this many signature tokens in
# all, the memo starts over (``BoundedMemo``: shapes come from data, memory stays bounded
# per model).
SHAPE_MEMO_SIZE = 256
SHAPE_MEMO_TOKENS = 32_768
# Signatures longer than this are not remembered at all (one wide element, read the slow way).
SHAPE_MEMO_MAX_TOKENS = 1024

# Tokens of a signature besides keys (str) and leaf types (type objects): never equal to either.
_OBJECT, _ARRAY, _END = 0, 1, 2
_JSON_SPACE_TEXT = " \t\n\r"
# The C scanners behind json.loads, called directly: decode() adds two regex matches and
# two Python calls per element. Objects as (key, value) tuples read fastest for the walk.
Scanner = Callable[[str, int], tuple[Any, int]]  # (text, start) -> (value, end)


def _scanner(decoder: json.JSONDecoder) -> Scanner:
    scan: Scanner = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]  # typeshed's context type
    return scan


_SCAN_PAIRS = _scanner(json.JSONDecoder(object_pairs_hook=tuple, parse_float=json_float))
_SCAN_DICTS = _scanner(json.JSONDecoder(parse_float=json_float))


@dataclass(frozen=True, eq=False, slots=True)
class JsonShape:
    """What ``flatten`` says of every element of one shape, values aside.

    Per leaf in document order: ``locations`` and ``suffixes``; ``scanned``: the positions of
    the leaves detectors read (strings and numbers, see ``scannable``), ``numbers``: whether
    any of those is a number. ``keys``: the distinct keys as UTF-8. ``skeleton``: the
    object with every leaf ``None``, where enforce finds the nodes a mask names.
    """

    locations: tuple[Location, ...]
    suffixes: tuple[str, ...]
    suffix_set: frozenset[str]
    keys: tuple[bytes, ...]
    scanned: tuple[int, ...]
    numbers: bool
    skeleton: dict[str, Any]

    def texts(self, values: list[Any]) -> list[bytes]:
        """The UTF-8 text of each scanned leaf among ``values`` (an element's leaf values)."""
        if not self.numbers:
            return [values[position].encode("utf-8", "surrogatepass") for position in self.scanned]
        return [
            cast(str, scannable(values[position])).encode("utf-8", "surrogatepass")
            for position in self.scanned
        ]


def _shape(parsed: dict[str, Any], leaves: list[Leaf], keys: list[str]) -> JsonShape:
    scanned = tuple(position for position, leaf in enumerate(leaves) if scannable(leaf[2]) is not None)
    return JsonShape(
        locations=tuple(location for location, _, _ in leaves),
        suffixes=tuple(suffix for _, suffix, _ in leaves),
        suffix_set=frozenset(suffix for _, suffix, _ in leaves),
        keys=tuple(key.encode("utf-8", "surrogatepass") for key in dict.fromkeys(keys)),
        scanned=scanned,
        numbers=any(not isinstance(leaves[position][2], str) for position in scanned),
        skeleton=_skeleton(parsed),
    )


def _skeleton(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _skeleton(child) for key, child in node.items()}
    if isinstance(node, list):
        return [_skeleton(child) for child in node]
    return None


def _signature(
    node: Any, depth: int, add_token: Callable[[Any], None], add_value: Callable[[Any], None]
) -> None:
    """Add ``node``'s shape to the tokens and its leaf values to the values, in document
    order; raise ``_TooDeep`` where ``flatten`` would give up. Objects are (key, value) tuples.

    Tokens, in prefix order: ``_OBJECT`` key child ... ``_END``, ``_ARRAY`` child ... ``_END``,
    and a leaf's type: so equal signatures mean the same keys, array lengths and leaf types.
    """
    if depth >= MAX_DEPTH and node:
        raise _TooDeep  # its children would lie deeper than MAX_DEPTH
    # The object and array loops are written out twice on purpose: this runs per element on
    # every call, and one shared loop over (key, child) pairs costs a tuple per child.
    if type(node) is tuple:
        add_token(_OBJECT)
        for key, child in node:
            add_token(key)
            kind = type(child)
            if kind is tuple or kind is list:
                _signature(child, depth + 1, add_token, add_value)
            else:
                add_token(kind)
                add_value(child)
    else:
        add_token(_ARRAY)
        for child in node:
            kind = type(child)
            if kind is tuple or kind is list:
                _signature(child, depth + 1, add_token, add_value)
            else:
                add_token(kind)
                add_value(child)
    add_token(_END)


def read_shaped(element: bytes, names: KeyNames) -> tuple[JsonShape, list[Any]] | str | None:
    """An element as ``read_object`` then ``flatten`` see it: ``(shape, leaf values)`` for an
    object to classify key by key, the reason for one that opens like an object but is not
    (``TOO_DEEP`` included), None for anything else."""
    if element[:1] == b"{":
        found = names.shaped(element)
        if found is not None:
            return found
    parsed, reason = read_object(element, check_depth=False)
    if parsed is None:
        return reason
    flat = flatten(parsed, names)
    if flat is None:
        return TOO_DEEP
    leaves, keys = flat
    return _shape(parsed, leaves, keys), [value for _, _, value in leaves]


def parse_classified(element: bytes) -> dict[str, Any] | None:
    """The object in an element already read as one (``read_shaped``), parsed without the
    duplicate-key and depth checks that reading passed; None if it is not one after all."""
    try:
        text = element.decode("utf-8")
        start = 0 if text[:1] == "{" else len(text) - len(text.lstrip(_JSON_SPACE_TEXT))
        value, end = _SCAN_DICTS(text, start)
    except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if (end != len(text) and len(text.rstrip(_JSON_SPACE_TEXT)) != end) or not isinstance(value, dict):
        return None
    return value


# Remembered for a signature whose element the exact path does not classify key by key.
_NOT_SHAPED = object()

# --- shapes by the native reader's signature ----------------------------------------------
#
# The native extension (``labelgate_native.json_elements``) reads the elements it can vouch
# for in one pass and names each one's shape by a signature of its own (``native_signature``).
# A new signature's shape is learnt here once, from the exact path on the element that
# brought it, and trusted only if the exact path reads that element to the same signature;
# otherwise the signature stays Python's (remembered as not shaped). The memo is bounded as
# ``_shapes`` is (``BoundedMemo``): past NATIVE_MEMO_SIZE signatures or NATIVE_MEMO_BYTES of
# them it starts over.
# A signature spends a byte per leaf and container mark and 5 plus its length per key, so
# these bound the shapes kept (and the memory their locations and paths take) about as the
# token bounds of ``_shapes`` do.
NATIVE_MEMO_SIZE = SHAPE_MEMO_SIZE
NATIVE_MEMO_BYTES = 64 * 1024
# A longer signature is not remembered: its element is read the exact way.
NATIVE_MEMO_MAX_BYTES = 2 * 1024
# A leaf's token in a native signature, by the type Python's json gives it.
_LEAF_TOKENS: dict[type, bytes] = {
    str: b"s",
    int: b"i",
    float: b"f",
    LiteralFloat: b"f",
    bool: b"b",
    type(None): b"n",
}


def native_signature(value: dict[str, Any]) -> bytes:
    """The signature the native reader gives a parsed object (``proxy/native/src/json.rs``):
    ``{``, per member ``:`` + the key's UTF-8 length (4 bytes, little-endian) + the key +
    its value, ``}``; ``[``, items, ``]``; a leaf's type token. A key with a lone surrogate
    raises ``UnicodeEncodeError`` (the native reader refuses such elements)."""
    out = bytearray()
    _native_tokens(value, out)
    return bytes(out)


def _native_tokens(node: Any, out: bytearray) -> None:
    kind = type(node)
    if kind is dict:
        out += b"{"
        for key, child in node.items():
            raw = key.encode("utf-8")
            out += b":" + len(raw).to_bytes(4, "little") + raw
            _native_tokens(child, out)
        out += b"}"
    elif kind is list:
        out += b"["
        for child in node:
            _native_tokens(child, out)
        out += b"]"
    else:
        out += _LEAF_TOKENS[kind]


def placeholder_key(secret: bytes) -> bytes:
    """The key of the placeholders' HMACs, derived from the gateway's ``secret``:
    HMAC-SHA512(secret, ``PLACEHOLDER_KEY_LABEL``). The same secret is the ``hash`` mask's key
    (``enforce.strategies``): HMAC-SHA256 of a value, for any bytes an upstream writes. So the
    derivation is no HMAC-SHA256 of the secret, which an upstream writing the label into a
    hashed field would hand a caller; and a placeholder (keyed with this) shares nothing with
    the hash of the same text. ``KeyNames`` derives it itself: whatever spells keys (the
    gateway, replays of recordings) spells them alike."""
    return hmac.new(secret, PLACEHOLDER_KEY_LABEL, hashlib.sha512).digest()


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
        self._keyed = hmac.new(placeholder_key(secret), digestmod=hashlib.sha256)
        self._memo: dict[str, str] = {}
        # Shapes spell keys with this object's names, so they are remembered here, and a
        # catalog revision (new Classifier, new KeyNames) never sees another's.
        # Weighed in signature tokens, and in native signature bytes (``native_shape``).
        self._shapes: BoundedMemo[tuple[Any, ...], object] = BoundedMemo(
            SHAPE_MEMO_SIZE, SHAPE_MEMO_TOKENS, SHAPE_MEMO_MAX_TOKENS
        )
        self._native_shapes: BoundedMemo[bytes, object] = BoundedMemo(
            NATIVE_MEMO_SIZE, NATIVE_MEMO_BYTES, NATIVE_MEMO_MAX_BYTES
        )

    def placeholder(self, key: str) -> str:
        """``<key:xxxxxxxx>``: the first 8 hex digits of HMAC-SHA256(``placeholder_key(secret)``,
        key as UTF-8)."""
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

    def shaped(self, element: bytes) -> tuple[JsonShape, list[Any]] | None:
        """``(shape, leaf values)`` of an element that starts with ``{`` and holds an object to
        classify key by key; None when only the exact path (``read_shaped``) can tell."""
        try:
            text = element.decode("utf-8")
            tree, end = _SCAN_PAIRS(text, 0)
        except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        if type(tree) is not tuple or (end != len(text) and len(text.rstrip(_JSON_SPACE_TEXT)) != end):
            return None
        tokens: list[Any] = []
        values: list[Any] = []
        try:
            _signature(tree, 0, tokens.append, values.append)
        except _TooDeep:
            return None
        signature = tuple(tokens)
        shape = self._shapes.entries.get(signature)
        if shape is None:
            shape = self._learn_shape(element, values)
            if shape is not None:
                self._shapes.put(signature, shape, len(signature))
        if not isinstance(shape, JsonShape):
            return None  # not to be remembered, or _NOT_SHAPED
        return shape, values

    def native_shape(self, element: bytes, signature: bytes) -> JsonShape | None:
        """The shape of an element the native reader read to ``signature``; None when the
        exact path (``read_shaped``) must read it (see ``native_signature``)."""
        shape = self._native_shapes.entries.get(signature)
        if shape is None:
            if not self._native_shapes.keeps(len(signature)):
                return None
            shape = self._learn_native(element, signature)
            self._native_shapes.put(signature, shape, len(signature))
        return shape if type(shape) is JsonShape else None

    def _learn_native(self, element: bytes, signature: bytes) -> JsonShape | object:
        """The shape of a new native signature, from the exact path; ``_NOT_SHAPED`` unless
        that path classifies the element key by key and reads it to the same signature."""
        parsed, _ = read_object(element, check_depth=False)
        if parsed is None:
            return _NOT_SHAPED
        flat = flatten(parsed, self)
        if flat is None:
            return _NOT_SHAPED
        try:
            agree = native_signature(parsed) == signature
        except UnicodeEncodeError:  # a lone surrogate in a key
            agree = False
        if not agree:
            return _NOT_SHAPED  # never reuse what cannot be trusted
        leaves, keys = flat
        return _shape(parsed, leaves, keys)

    def _learn_shape(self, element: bytes, values: list[Any]) -> JsonShape | object | None:
        """The shape of a new signature, from the exact path; ``_NOT_SHAPED`` when that path
        refuses the element for its keys (a duplicate), None when not to remember it."""
        parsed, reason = read_object(element, check_depth=False)
        if parsed is None:
            return _NOT_SHAPED if reason == DUPLICATE_KEY else None
        flat = flatten(parsed, self)
        if flat is None:
            return None
        leaves, keys = flat
        if list(map(type, values)) != [type(value) for _, _, value in leaves]:
            return None  # the two walks disagree: never reuse what cannot be trusted
        return _shape(parsed, leaves, keys)


# The escapes of a JSON string. Matches run left to right and never overlap, so "\\u0031"
# is an escaped backslash and then "u0031", as JSON reads it.
_ESCAPE = re.compile(rb'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
SIMPLE_ESCAPES = {
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
        return SIMPLE_ESCAPES[match.group(2)]
    return chr(int(code, 16)).encode("utf-8", "surrogatepass")


def may_escape(data: bytes) -> bool:
    """Whether ``data`` may hold an escape ``unescaped_forms`` decodes: a backslash or a
    character reference (``may_reference``). C-level searches: the guard before any of that work."""
    return _BACKSLASH in data or may_reference(data)


def may_reference(data: bytes) -> bool:
    """Whether ``data`` may hold a character reference (``REFERENCE``). A search for an
    ``&`` (memchr, asked with an int: ``b"&" in`` takes several times longer on short text)
    first: text without one, most text, costs that alone; text with one, a regular
    expression's search from each ``&``."""
    return _AMPERSAND in data and REFERENCE.search(data) is not None


_BACKSLASH, _AMPERSAND = b"\\&"
# The start of a character reference as HTML reads one in text: numeric (``&#52;``), named
# (``&nbsp;``: a letter, up to 31 more letters or digits, a semicolon), or one of the legacy
# names HTML decodes without a semicolon too that read as a space, a digit or nothing
# (``&nbsp1111`` shows as a no-break space and 1111; the others are letters and symbols).
# ``AT&T``, ``Q&A`` and a URL's ``&lang=en`` are none.
REFERENCE: Final = re.compile(rb"&(?:#|[A-Za-z][A-Za-z0-9]{0,31};|nbsp|shy|sup[123]|acute|cedil|macr|uml)")


def unescaped_forms(data: bytes) -> list[bytes]:
    """``data`` with its JSON escapes decoded, once per level of escaping, then with its
    character references decoded (none if it has neither).

    Escapes hide values from detectors that read raw text (``\\u0031\\u0032\\u0033-45-6789``,
    or ``\\n`` gluing a letter to a number), so text that may be JSON is scanned in these
    forms as well; every level is scanned, since decoding one can also hide what another showed.
    So do HTML's character references, numeric (``&#52;&#x31;``) and named (``&nbsp;``,
    ``&ndash;``, ``&minus;``), which every HTML page and Markdown renderer (a chat UI showing
    a model's answer) shows as the characters: text that may hold one (``may_reference``),
    and each decoded level that may, is also scanned as ``html.unescape`` reads it.

    Percent-encoding (``%34%31``) is not decoded: a renderer shows it as written, and only a
    URL's reader (a server, an address bar) decodes it, like base64 a deliberate encoding;
    ``%`` is common in ordinary text, and every value beside it would span its whole text.
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
    for form in [data, *forms]:
        if may_reference(form):
            unreferenced = _unreferenced(form)
            if unreferenced != form and unreferenced not in forms:
                forms.append(unreferenced)
    return forms


def _unreferenced(data: bytes) -> bytes:
    """``data`` with its character references decoded as HTML reads them (bytes that are not
    UTF-8 kept as they are)."""
    if _NOT_MARKUP.search(data) is None:
        return _unmarked(data)
    return html.unescape(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


# The references of markup escaped for HTML (code, quoted tags: what ``html.escape`` and
# MarkupSafe write), the most common by far: where no other is, they are decoded by C-level
# work, not ``html.unescape``'s Python call per reference (25 times the cost of scanning such
# text): one split around them where they are few, else a replace for each kind (``&amp;``
# last: ``&amp;lt;`` reads ``&lt;``, as HTML decodes it, once).
_MARKUP: Final = {
    b"lt": b"<",
    b"gt": b">",
    b"quot": b'"',
    b"#34": b'"',
    b"apos": b"'",
    b"#39": b"'",
    b"#x27": b"'",
    b"amp": b"&",
}
_MARKUP_REFERENCE: Final = re.compile(rb"&(amp|lt|gt|quot|#34|apos|#39|#x27);")
_NOT_MARKUP: Final = re.compile(rb"&(?!(?:amp|lt|gt|quot|#34|apos|#39|#x27);)[#A-Za-z]")
# The split costs a Python step per reference, each replace a copy of the text: the split
# while at most one byte in this many of the first ``_DENSITY_SAMPLE`` is an ``&``.
_SPARSE: Final = 64
_DENSITY_SAMPLE: Final = 4096


def _unmarked(data: bytes) -> bytes:
    """``data`` with its markup references (``_MARKUP``) decoded, one pass."""
    if data[:_DENSITY_SAMPLE].count(b"&") * _SPARSE <= min(len(data), _DENSITY_SAMPLE):
        parts = _MARKUP_REFERENCE.split(data)
        parts[1::2] = map(_MARKUP.__getitem__, parts[1::2])
        return b"".join(parts)
    for name, char in _MARKUP.items():
        reference = b"&" + name + b";"
        if reference in data:  # a search: cheaper than a replace that copies
            data = data.replace(reference, char)
    return data


def unreferenced(texts: Sequence[bytes]) -> list[bytes]:
    """Each of ``texts`` with its character references decoded (``_unreferenced``), by one
    ``_unmarked`` over them all when every reference is markup's, else one ``html.unescape``:
    the Python work per text is most of the cost. Between texts a NUL, or for
    ``html.unescape`` a lone surrogate, which neither decoding makes and no reference
    reaches across (a named one keeps what follows its name)."""
    # Joined by NULs, which no reference holds or decodes to (one in a text: one at a time).
    together = b"\x00".join(texts)
    if _NOT_MARKUP.search(together) is None:
        unmarked = _unmarked(together).split(b"\x00")
        return unmarked if len(unmarked) == len(texts) else list(map(_unmarked, texts))
    joined = _TEXT_BREAK.join([text.decode("utf-8", "surrogateescape") for text in texts])
    parts = html.unescape(joined).split(_TEXT_BREAK)
    if len(parts) != len(texts):  # never expected: then one at a time
        return [_unreferenced(text) for text in texts]
    return [part.encode("utf-8", "surrogateescape") for part in parts]


_TEXT_BREAK = "\udfff"


def scannable(value: Any) -> str | None:
    """The text detectors read for a leaf: strings, and numbers (a card stored as a number).

    A float that is a whole number is read as that integer's digits: ``4111111111111111.0``,
    ``4111111111111111e0`` and ``4.111111111111111e15`` are the card a JSON client parses
    back (below 2**64). A finite float with a fraction and an integer part is read as the
    digits of that part, a space, then the fraction as Python writes it:
    ``4111111111111111 .5``, since a reader sees the card in ``4111111111111111.5`` while
    the card pass sees digits glued to a dot; every digit is there once, so masking a span
    leaves none of it elsewhere. Any other float as Python writes it. Every number is
    scanned whatever its value, so which leaves a shape scans does not depend on the values
    of its first element.

    A number the float does not give back (``LiteralFloat``: ``4111111111111111110.0``, more
    digits than a double holds) is read as written, as the text detectors read a number in
    text (``patterns._float_cards``: the exact value's integer part, and the double's), since
    a reader keeping number literals sees those digits and the element leaves as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if type(value) is LiteralFloat:
            return value.literal
        # Past 2**64 no card or account number is left, and ``1e308``'s digits are 309 bytes
        # for its 5: a reply of such numbers would cost 60 times its size.
        if value.is_integer():
            return str(int(value)) if abs(value) < _LARGEST_WHOLE else repr(value)
        written = repr(value)
        if 1.0 <= abs(value) < _LARGEST_WHOLE:  # not NaN, not infinite
            # A float with a fraction lies below 2**52, and Python writes an exponent only
            # from 1e16 on: its integer part is the text before the dot.
            whole, _, fraction = written.partition(".")
            return f"{whole} .{fraction}"
        return written  # below 1 (an exponent below 1e-4), or not finite
    return None


_LARGEST_WHOLE = 2.0**64


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


# The C encoder those build on every encode() call, built once. Without a markers dict
# (no check for circular references: parsed JSON has none) the output is the same.
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODERS: dict[bool, Callable[[Any, int], Any]] = (
    {
        sort_keys: _C_MAKE_ENCODER(
            None, encoder.default, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, True
        )
        for sort_keys, encoder in _ENCODERS.items()
    }
    if _C_MAKE_ENCODER is not None
    else {}
)


def _encode(value: Any, sort_keys: bool) -> bytes:
    try:
        fast = _C_ENCODERS.get(sort_keys)
        if fast is not None:
            return "".join(fast(value, 0)).encode("utf-8")
        return _ENCODERS[sort_keys].encode(value).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\ud800" escape) has no UTF-8 form: keep it escaped.
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode("ascii")
