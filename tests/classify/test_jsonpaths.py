"""JSON elements: what counts as an object, the depth limit, leaves in document order."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re

import pytest

from labelgate.classify import DetectorSet, jsonpaths
from labelgate.classify.jsonpaths import MAX_DEPTH, KeyNames
from labelgate.enforce.strategies import Mask, Masker
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
    # Keyed with a key derived from the secret for placeholders alone (placeholder_key).
    derived = hmac.new(SECRET, b"labelgate json key names", hashlib.sha512).digest()
    expected = hmac.new(derived, b"sk_live_abc123", hashlib.sha256).hexdigest()[:8]
    assert NAMES.placeholder("sk_live_abc123") == f"<key:{expected}>"
    assert NAMES.segment("root") == ".root"


def test_a_placeholder_is_not_the_start_of_the_hash_mask_of_its_key() -> None:
    """The gateway's secret keys both placeholders (logs, decision inputs, audit) and the
    ``hash`` mask (callers): the placeholder of a key is no prefix of the hash of the same
    text, and no hash a caller can be shown (of any bytes) is the placeholders' key."""
    masker = Masker(SECRET, [Mask("p", "hash")])
    for key in ("123-45-6789", "Ann Smith", "sk_live_abc123", ""):
        placeholder = NAMES.placeholder(key)
        hashed = masker.text(key, Mask("p", "hash"))
        assert hashed.startswith("hmac:") and not hashed.startswith(f"hmac:{placeholder[5:13]}")
    label_hashed = bytes.fromhex(masker.digest(jsonpaths.PLACEHOLDER_KEY_LABEL)[len("hmac:") :])
    assert label_hashed != jsonpaths.placeholder_key(SECRET)
    forged = hmac.new(label_hashed, b"123-45-6789", hashlib.sha256).hexdigest()[:8]
    assert NAMES.placeholder("123-45-6789") != f"<key:{forged}>"


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


def test_unescaped_forms_decode_character_references_as_html_reads_them() -> None:
    # Found by review (rev-tensors): an HTML or Markdown renderer shows "&#52;" as "4".
    assert jsonpaths.unescaped_forms(b"card &#52;&#x31;&#X31;&#49 &amp; more") == [b"card 4111 & more"]
    assert jsonpaths.unescaped_forms(b"AT&T, Q&A & 100%") == [], "no reference: not decoded"
    assert jsonpaths.unescaped_forms(b"\\u0026#52;") == [b"&#52;", b"4"], "a reference JSON escaped"
    assert jsonpaths.unescaped_forms(b"\xff &#52;") == [b"\xff 4"], "bytes not UTF-8 are kept"
    assert (
        jsonpaths.may_escape(b"&#52;") and jsonpaths.may_escape(b"\\n") and not jsonpaths.may_escape(b"a & b")
    )


# Found by review (rev-new L3): named references were decoded only beside a numeric one.
NAMED = {
    b"card 4111&nbsp;1111&nbsp;1111&nbsp;1111": "card 4111\u00a01111\u00a01111\u00a01111",
    b"ssn 123&ndash;45&ndash;6789": "ssn 123\u201345\u20136789",
    b"ssn 123&minus;45&minus;6789": "ssn 123\u221245\u22126789",
    b"ssn 123&hyphen;45&hyphen;6789": "ssn 123\u201045\u20106789",
    b"a &CounterClockwiseContourIntegral; b": "a \u2233 b",
    # A few legacy names need no semicolon in HTML's text: these read as spaces, digits or nothing.
    b"card 4111&nbsp1111&nbsp1111&nbsp1111": "card 4111\u00a01111\u00a01111\u00a01111",
    b"&sup1&sup2&sup3 &shy1": "\u00b9\u00b2\u00b3 \u00ad1",
    b"&acute &cedil &macr &uml": "\u00b4 \u00b8 \u00af \u00a8",
    b"Q&amp;A": "Q&A",
}


@pytest.mark.parametrize(("text", "shown"), NAMED.items(), ids=[text.decode() for text in NAMED])
def test_named_character_references_are_decoded_alone_too(text: bytes, shown: str) -> None:
    assert jsonpaths.may_reference(text) and jsonpaths.may_escape(text)
    assert jsonpaths.unescaped_forms(text) == [shown.encode()]


def test_an_ampersand_that_starts_no_reference_is_not_decoded() -> None:
    for text in (b"AT&T, Q&A", b"a & b", b"a=1&b=2&c=3", b"R&D;", b"& nbsp;", b"x&1;"):
        assert jsonpaths.unescaped_forms(text) == [], text
    assert not any(map(jsonpaths.may_reference, (b"AT&T, Q&A", b"a & b", b"a=1&b=2&c=3", b"&1;", b"no amp")))


def test_references_of_many_texts_are_decoded_together_as_each_alone() -> None:
    texts = [b"a &amp", b"#52; b", b"\xff&#52;", b"&#52", b"&notin;&#x1F600;&#0;", b"", b"&"]
    alone = [html.unescape(text.decode("utf-8", "surrogateescape")) for text in texts]
    assert jsonpaths.unreferenced(texts) == [text.encode("utf-8", "surrogateescape") for text in alone]
    assert jsonpaths.unreferenced(texts)[:4] == [b"a &", b"#52; b", b"\xff4", b"4"], "none reaches the next"


# --- shapes: read_shaped must say exactly what read_object + flatten say -----------------

SHAPED_ELEMENTS = [
    b'{"a": 1}',
    b'{"a": "x", "b": {"c": [1, "two", 3.5, null, true, {"d": "e"}], "f": {}}, "g": []}',
    b'{"b": {"c": [1, "two", 3.5, null, true, {"d": "e"}], "f": {}}, "a": "x", "g": []}',  # key order
    b'{"a": {"b": 1}}',
    b'{"a": [{"b": 1}]}',  # the same keys, nested differently
    b'{"a": [1, 2]}',
    b'{"a": [1, 2, 3]}',  # another array length
    b'{"a": "1"}',
    b'{"a": true}',  # bool, not int: never scanned
    b'{"a": 1.0}',
    b'{"a": NaN, "b": -Infinity}',
    b'{"a": "\\ud800", "\\udc00": "lone surrogates"}',
    b'{"k": "\\u0031\\u0032\\u0033-45-6789", "k2": "\\"quoted\\""}',
    b' \t{"a": 1} \n',  # JSON whitespace around
    b'{"a": 1} ',
    b'{"a": 1} x',
    b'{"a": 1, "a": 2}',
    b'{"a": {"b": 1, "b": 1}}',
    b'{"a": ',
    b'{"a": "\xff"}',
    b'\x0b{"a": 1}',
    b'[{"a": 1}]',
    b"plain text",
    b"",
    json.dumps({"root": nested(MAX_DEPTH - 1, "x", "dict")}).encode(),
    json.dumps({"root": nested(MAX_DEPTH, "x", "dict")}).encode(),
    json.dumps({"root": nested(MAX_DEPTH - 1, [], "list")}).encode(),
    json.dumps({"root": nested(MAX_DEPTH, [], "list")}).encode(),
    b'{"a": ' * 1200 + b"1" + b"}" * 1200,  # deeper than the recursion limit
]


def exact(element: bytes, names: KeyNames) -> object:
    """What read_object then flatten say of ``element``, in read_shaped's terms."""
    parsed, reason = jsonpaths.read_object(element, check_depth=False)
    if parsed is None:
        return reason
    flat = jsonpaths.flatten(parsed, names)
    if flat is None:
        return jsonpaths.TOO_DEEP
    leaves, keys = flat
    texts = [
        text.encode("utf-8", "surrogatepass") for *_, value in leaves if (text := jsonpaths.scannable(value))
    ]
    return (
        [(location, suffix) for location, suffix, _ in leaves],
        [value for *_, value in leaves],
        set(keys),
        texts,
    )


def shaped(element: bytes, names: KeyNames) -> object:
    read = jsonpaths.read_shaped(element, names)
    if not isinstance(read, tuple):
        return read
    shape, values = read
    keys = {key.decode("utf-8", "surrogatepass") for key in shape.keys}
    return (list(zip(shape.locations, shape.suffixes, strict=True)), values, keys, shape.texts(values))


def same(left: object, right: object) -> bool:
    # NaN is not equal to itself: compare such values by their JSON spelling.
    def plain(value: object) -> object:
        return sorted(value) if isinstance(value, set) else list(value)  # type: ignore[call-overload]

    return json.dumps(left, default=plain) == json.dumps(right, default=plain)


@pytest.mark.parametrize("element", SHAPED_ELEMENTS, ids=lambda element: repr(element[:40]))
def test_read_shaped_says_what_read_object_and_flatten_say(element: bytes) -> None:
    names = KeyNames({"a", "k"}, SECRET)
    expected = exact(element, names)
    assert same(shaped(element, names), expected)  # learns the shape
    assert same(shaped(element, names), expected)  # and reuses it


def test_elements_of_one_shape_share_it_and_others_get_their_own() -> None:
    names = KeyNames(set(), SECRET)
    first = jsonpaths.read_shaped(b'{"a": {"b": "x"}, "c": 1}', names)
    second = jsonpaths.read_shaped(b'{"a":{"b":"other value"},"c":22}', names)
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert first[0] is second[0]
    assert second[1] == ["other value", 22]
    for element in SHAPED_ELEMENTS:  # every other shape, read after these, still reads right
        assert same(shaped(element, names), exact(element, names))
    assert same(shaped(b'{"a": {"b": "x"}, "c": 1}', names), exact(b'{"a": {"b": "x"}, "c": 1}', names))


def test_shapes_belong_to_their_key_names() -> None:
    """A catalog revision builds new KeyNames: a key it catalogues is spelled verbatim at once,
    never by a shape the previous names learned."""
    element = b'{"email": "a@example.com"}'
    before, after = KeyNames(set(), SECRET), KeyNames({"email"}, SECRET)
    old = jsonpaths.read_shaped(element, before)
    new = jsonpaths.read_shaped(element, after)
    assert isinstance(old, tuple) and isinstance(new, tuple)
    assert old[0].suffixes == ("." + before.placeholder("email"),)
    assert new[0].suffixes == (".email",)


def test_a_duplicate_key_is_refused_every_time_even_once_its_shape_is_known() -> None:
    names = KeyNames(set(), SECRET)
    for _ in range(3):
        assert jsonpaths.read_shaped(b'{"a": 1, "a": 2}', names) == jsonpaths.DUPLICATE_KEY
    assert isinstance(jsonpaths.read_shaped(b'{"a": 1, "b": 2}', names), tuple)


def test_the_shape_memo_is_bounded_in_shapes_and_in_tokens() -> None:
    names = KeyNames(set(), SECRET)
    for number in range(jsonpaths.SHAPE_MEMO_SIZE + 10):
        element = json.dumps({f"key{number}": number}).encode()
        assert same(shaped(element, names), exact(element, names))
        assert 0 < len(names._shapes.entries) <= jsonpaths.SHAPE_MEMO_SIZE
    wide = {f"k{key}": key for key in range(150)}  # about 300 tokens a shape
    for number in range(2 * jsonpaths.SHAPE_MEMO_TOKENS // 300):
        element = json.dumps({**wide, f"last{number}": "x"}).encode()
        assert same(shaped(element, names), exact(element, names))
        assert sum(map(len, names._shapes.entries)) == names._shapes.weight <= jsonpaths.SHAPE_MEMO_TOKENS
    too_wide = json.dumps({f"k{key}": key for key in range(jsonpaths.SHAPE_MEMO_MAX_TOKENS)}).encode()
    before = dict(names._shapes.entries)
    assert same(shaped(too_wide, names), exact(too_wide, names))  # read, not remembered
    assert names._shapes.entries == before


@pytest.mark.parametrize("element", SHAPED_ELEMENTS, ids=lambda element: repr(element[:40]))
def test_parse_classified_reads_an_object_as_parse_object_does(element: bytes) -> None:
    expected = jsonpaths.parse_object(element)
    if expected is not None:
        assert same(jsonpaths.parse_classified(element), expected)


def test_huge_whole_floats_are_scanned_as_written_not_as_their_digits() -> None:
    from labelgate.classify.jsonpaths import scannable

    assert scannable(4111111111111111.0) == "4111111111111111"
    assert scannable(1e308) == "1e+308", "309 digits for 5 bytes of JSON: read as written"
    assert scannable(2.0**64) == repr(2.0**64)


CARD_19 = "4111111111111111110"  # Luhn-valid, past what a double holds


@pytest.mark.parametrize(
    "literal",
    [
        f"{CARD_19}.0",
        f"{CARD_19}e0",
        f"{CARD_19[0]}.{CARD_19[1:]}e18",
        f"-{CARD_19}.5",
        f"{CARD_19[:17]}.{CARD_19[17:]}e2",
        "0.000000000004111111111111111110e30",
    ],
)
def test_a_float_literal_its_float_does_not_give_back_is_read_as_written(literal: str) -> None:
    """Review (F2): ``4111111111111111110.0`` parses to ``4.111111111111111e18``, whose digits
    (``4111111111111111168``) are no card, and the element leaves as written: readers keeping
    the literal read the card. Every reader of elements keeps the literal of such a number,
    and ``scannable`` gives it, as the text detectors read a number in text."""
    element = f'{{"n": {literal}, "s": "x"}}'.encode()
    names = KeyNames((), SECRET)
    values = [
        jsonpaths.parse_object(element)["n"],  # type: ignore[index]
        jsonpaths.parse_classified(element)["n"],  # type: ignore[index]
        json.loads(element, parse_float=jsonpaths.json_float)["n"],
    ]
    for _ in range(2):  # learnt, then from the shape memo
        shaped = names.shaped(element)
        assert shaped is not None
        values.append(shaped[1][0])
        assert shaped[0].texts(shaped[1]) == [literal.encode(), b"x"]
    for value in values:
        assert type(value) is jsonpaths.LiteralFloat and value == float(literal)
        assert jsonpaths.scannable(value) == literal
    assert jsonpaths.dumps({"n": values[0]}) == jsonpaths.dumps({"n": float(literal)})  # written as the float
    assert [hit.detector for hit in DetectorSet.default().scan(literal.encode())] == ["credit_card"]


@pytest.mark.parametrize(
    ("literal", "scanned"),
    [
        ("4111111111111111.0", "4111111111111111"),
        ("4111111111111111.000000000", "4111111111111111"),
        ("0.30000000000000004", "0.30000000000000004"),  # a double's shortest repr
        ("1.50000000000000000000", "1 .5"),
        ("2.5e-3", "0.0025"),
        ("1e5", "100000"),
        ("1e999", "inf"),  # short: no more digits than a double holds
        # Below 1e12: no 13 digits before the point in either (the fewest a card has).
        ("0.41111111111111111110", "0.4111111111111111"),
        ("411111111111.11111110", "411111111111 .1111"),
    ],
)
def test_a_float_literal_its_float_gives_back_or_below_a_card_is_a_float(literal: str, scanned: str) -> None:
    value = jsonpaths.parse_object(f'{{"n": {literal}}}'.encode())["n"]  # type: ignore[index]
    assert type(value) is float and jsonpaths.scannable(value) == scanned


def test_a_fractional_floats_integer_part_is_read_apart_from_its_fraction() -> None:
    from labelgate.classify.jsonpaths import scannable

    # A reader sees the card in 4111111111111111.5; the card pass would see digits glued to a dot.
    assert scannable(4111111111111111.5) == "4111111111111111 .5"
    assert scannable(-378282246310005.25) == "-378282246310005 .25"
    # No integer part to read (and below 1e-4 Python writes an exponent): as written.
    assert scannable(0.5) == "0.5"
    assert scannable(-0.25) == "-0.25"
    assert scannable(1.5e-07) == "1.5e-07"
    assert [scannable(float(name)) for name in ("nan", "inf", "-inf")] == ["nan", "inf", "-inf"]


NOT_BARE_OBJECTS = [
    b'[{"secret": "x"}]',
    b'["x"]',
    b'"{\\"secret\\": \\"x\\"}"',
    b'"just a string"',
    b"  \n[1]",
    b'\xef\xbb\xbf{"secret": "x"}',  # json.loads(bytes) skips a UTF-8 byte-order mark
    '\u00a0{"secret": "x"}'.encode(),  # str.strip() drops any whitespace
    '\u200b\u2060[{"secret": "x"}]'.encode(),  # zero-width: a reader sees nothing there
    b'\x0b{"secret": "x"}',
    b'\x00\x00{"secret": "x"}',
    # json.loads(bytes) reads UTF-16 and UTF-32 as well
    *('{"secret": "x"}'.encode(codec) for codec in ("utf-16", "utf-16-be", "utf-16le", "utf-32", "utf-32be")),
]


@pytest.mark.parametrize("element", NOT_BARE_OBJECTS, ids=repr)
def test_json_that_may_hold_keys_opens_like_json_whatever_comes_before_it(element: bytes) -> None:
    assert jsonpaths.opens_json(element)


@pytest.mark.parametrize(
    "element", [b"", b"   ", b"plain text", b"see [1] and {2}", b'he said "hi"', b"42", b"null", b"x{}"]
)
def test_text_that_does_not_open_like_json_is_not_read_as_json(element: bytes) -> None:
    assert not jsonpaths.opens_json(element)


@pytest.mark.parametrize("element", NOT_BARE_OBJECTS, ids=repr)
def test_whatever_pythons_json_reads_to_an_object_array_or_string_opens_like_json(element: bytes) -> None:
    try:
        value = json.loads(element)
    except ValueError:
        return
    assert isinstance(value, dict | list | str) and jsonpaths.opens_json(element)


def test_markup_references_alone_decode_as_html_reads_them() -> None:
    # Decoded without ``html.unescape`` when no other reference is there: the same text.
    texts = [
        b"&lt;b&gt; Tom &amp; Jerry &quot;hi&quot; &apos;x&apos; &#39;y&#x27; &#34;",
        b"&amp;lt; &amp;amp; &amp;#39;",
        b"&lt &amp &#X27;",
        b"\xff&lt;",
    ]
    alone = [
        html.unescape(text.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        for text in texts
    ]
    assert jsonpaths.unreferenced(texts) == alone
    assert jsonpaths.unreferenced(texts[:2]) == alone[:2]
    assert jsonpaths.unreferenced([b"a\x00&lt;", b"&amp;"]) == [b"a\x00<", b"&"], "a NUL in a text"
    assert [jsonpaths.unescaped_forms(text) for text in texts[:2]] == [[form] for form in alone[:2]]
    assert alone[1] == b"&lt; &amp; &#39;", "decoded once"
