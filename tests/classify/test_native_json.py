"""The native JSON reader (``labelgate_native.json_elements``) changes nothing classify gives.

``classify_outputs`` runs three ways on the same tensors: all Python (the reference), the
detectors native with the Python JSON reading, and the native JSON reader on top. Fields
(in order, with sources), spans, ``json_elements``, ``json_shapes`` (the bytes and every
field of each shape) and element counts must be equal, for a hand corpus of the elements
the reader must leave to Python, of escapes, nesting, numbers and whitespace, for mixed
tensors, and for generated documents and mutated bytes. Each way runs twice with the same
``KeyNames``, so shapes learnt on the first call are reused on the second.

The extension is required: the Makefile installs it, and a missing one fails here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate.classify import Catalog, DetectorSet, classify_outputs, jsonpaths, native, to_policy_fields
from labelgate.classify.detectors import BUILTIN_LABELS, CustomPattern
from labelgate.classify.fields import Classification
from labelgate.classify.json_elements import MAX_JSON_PATHS
from labelgate.classify.jsonpaths import (
    MAX_DEPTH,
    NATIVE_MEMO_MAX_BYTES,
    JsonShape,
    KeyNames,
    native_signature,
    read_shaped,
)
from labelgate.oip.tensor import Tensor
from tests.classify.sensitive import card_value, iban_value, ssn_value
from tests.classify.test_classifier import CATALOG

SECRET = b"native-json-test-secret-32-bytes"
MODELS = ("customer-profile", "m")
PATHS = ("python", "native-scan", "native-json")
# Every built-in above the default label (internal), so every one scans: overlaps included.
EVERY_BUILTIN = DetectorSet(dict.fromkeys(BUILTIN_LABELS, "restricted"))
DETECTOR_SETS = {"default": DetectorSet.default(), "every": EVERY_BUILTIN}
ALL_DETECTORS = 0b111111

_RNG = random.Random(12)
SENSITIVE = [
    ssn_value(_RNG),
    ssn_value(_RNG, " "),
    card_value(_RNG),
    card_value(_RNG, "spaces"),
    iban_value(_RNG),
    "BE71 0961 2345 6769",  # national rules: Python's IBAN pass
    "x.y@example.com",
    "+1 415 555 2671",
    "(415) 555-2671",
    "10.0.0.1",
    "2001:db8::1",  # IPv6: Python's pass
    "+4915112345678",  # a card and a phone overlapping: merged
    "+1 123-45-6789",
    "+1-212-555-0100",
    "user@192.168.0.1.example.com",
    "nothing to see",
    "",
]


def _ways(way: str) -> ExitStack:
    stack = ExitStack()
    stack.enter_context(native.forced(way != "python"))
    stack.enter_context(native.json_forced(way == "native-json"))
    return stack


def json_reads(elements: list[bytes], wanted: frozenset[str]) -> list[native.JsonRead | None]:
    """The native reader's answers, whatever ``LABELGATE_NATIVE`` says."""
    with _ways("native-json"):
        reads = native.json_reads(elements, wanted)
    assert reads is not None
    return reads


def _shape_fields(shape: JsonShape) -> tuple[Any, ...]:
    return (
        shape.locations,
        shape.suffixes,
        shape.suffix_set,
        shape.keys,
        shape.scanned,
        shape.numbers,
        json.dumps(shape.skeleton),  # key order included
    )


def _ordered(value: Any) -> Any:
    """Dicts as lists of items, so their order counts in comparisons."""
    if isinstance(value, dict):
        return [(key, _ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    return value


def outcome(result: Classification) -> Any:
    shapes = {
        tensor: {index: (raw, _shape_fields(shape)) for index, (raw, shape) in by_index.items()}
        for tensor, by_index in result.json_shapes.items()
    }
    return _ordered(
        {
            "fields": to_policy_fields(result.fields),
            "spans": result.spans,
            "json_elements": result.json_elements,
            "json_shapes": shapes,
            "element_counts": result.element_counts,
        }
    )


def classified(
    tensors: Sequence[Tensor],
    way: str,
    model: str = "m",
    detectors: DetectorSet | None = None,
    catalog: Catalog = CATALOG,
) -> list[Any]:
    """The outcome of two calls in a row with one ``KeyNames`` (the second reuses shapes)."""
    detectors = DetectorSet.default() if detectors is None else detectors
    keys = KeyNames(catalog.key_names(model), SECRET)
    with _ways(way):
        return [outcome(classify_outputs(model, tensors, catalog, detectors, keys=keys)) for _ in range(2)]


def assert_same_everywhere(
    tensors: Sequence[Tensor], model: str = "m", detectors: DetectorSet | None = None
) -> None:
    reference = classified(tensors, "python", model, detectors)
    assert reference[0] == reference[1]
    for way in PATHS[1:]:
        assert classified(tensors, way, model, detectors) == reference, way


def tensor(name: str, elements: Sequence[bytes | str]) -> Tensor:
    values = [
        element.encode("utf-8", "surrogatepass") if isinstance(element, str) else element
        for element in elements
    ]
    return Tensor(name, "BYTES", [len(values)], values)


def nested(depth: int, inner: str) -> str:
    """An object whose innermost container lies at ``depth`` and holds ``inner``."""
    text = inner
    for level in range(depth):
        text = f"[{text}]" if level % 2 == 0 else f'{{"k":{text}}}'
    return f'{{"k":{text}}}'


SSN = SENSITIVE[0]
CARD = SENSITIVE[2]
IBAN = SENSITIVE[4]

# Elements the native reader must leave to Python (each still classified, the Python way).
LEFT_TO_PYTHON: list[bytes] = [
    # Floats: Python scans 4111111111111111.0 as the card's digits (jsonpaths.scannable).
    b'{"f": 4111111111111111.0, "g": 1e400, "h": -0.0, "i": 2E-3, "j": 0}',
    # More digits than a double holds: read as written (review F2), a card either way.
    b'{"f": 4111111111111111110.0, "g": 4.111111111111111110e18, "s": "' + SSN.encode() + b'"}',
    b'{"a": "\xff"}',  # invalid UTF-8
    b'{"a": 1}\xc3',
    b'{"a": 1',  # syntax
    b'{"a" 1}',
    b'{"a": 1,}',
    b'{"a": [1,]}',
    b"{'a': 1}",
    b'{"a": 01}',
    b'{"a": 1.}',
    b'{"a": .5}',
    b'{"a": 1e}',
    b'{"a": +1}',
    b'{"a": tru}',
    b'{"a": "x"} x',  # trailing text
    b'{"a": "x"}{}',
    b'{"a": "x"}\x0b',
    b'{"a": "x"}\xc2\xa0',
    b'{"a": 1, "a": 2}',  # duplicates
    b'{"a": 1, "\\u0061": "' + SSN.encode() + b'"}',
    b'{"a": {"b": 1, "b": 1}}',
    b'{"a": "tab\there"}',  # control character in a string
    b'{"a": "nul\x00"}',
    b'{"a": "\\ud800"}',  # lone surrogates
    b'{"a": "\\udc00 ' + SSN.encode() + b'"}',
    b'{"a": "\\ud800\\u0041"}',
    b'{"\\ud800": "' + SSN.encode() + b'"}',
    b'{"a": NaN}',
    b'{"a": Infinity, "b": "' + SSN.encode() + b'"}',
    b'{"a": -Infinity}',
    b'{"a": -0, "b": "' + CARD.encode() + b'"}',
    b'{"a": ' + b"4" * 5000 + b"}",  # Python refuses it too
    b'{"a": ' + b"4" * 700 + b', "b": "' + SSN.encode() + b'"}',  # long for the reader
    b'{"a": "x\\\\y ' + SSN.encode() + b'"}',  # a backslash in a leaf once unescaped
    b'{"a": "\\u005c\\u0031\\u0032\\u0033-45-6789"}',
    b'{"doc": "{\\"ssn\\": \\"123\\\\u002d45-6789\\"}"}',
    b'{"a": "' + IBAN.replace(" ", "").encode() + b'", "b": "BE71 0961 2345 6769"}',  # national IBAN
    b'{"a": "at 2001:db8::1", "b": "' + SSN.encode() + b'"}',  # IPv6
    nested(MAX_DEPTH, "1").encode(),  # too deep
    nested(MAX_DEPTH + 1, "").encode(),
    nested(500, "").encode(),
    b' {"a": "' + SSN.encode() + b'"}',  # leading whitespace
    b'\n\t{"a": 1}',
]
# Read natively, but its signature is too long to remember: the exact path reads it.
LONG_SIGNATURE = b'{"' + b"k" * (NATIVE_MEMO_MAX_BYTES + 10) + b'": "' + SSN.encode() + b'"}'

# Elements the native reader reads (and how Python classifies them must not change).
READ_NATIVELY: list[bytes] = [
    json.dumps({"contact": {"ssn": SSN, "email": "x.y@example.com"}, "card": CARD}).encode(),
    json.dumps({"a": SENSITIVE[:4] + SENSITIVE[6:10] + SENSITIVE[11:]}).encode(),
    json.dumps({"e": "\U0001f600 " + SSN, "\u00e9t\u00e9": "caf\u00e9 " + CARD}).encode(),  # escaped pairs
    json.dumps({"e": "\U0001f600 " + SSN, "\u00e9t\u00e9": "caf\u00e9 " + CARD}, ensure_ascii=False).encode(),
    b'{"a": "\\u0031\\u0032\\u0033-45-6789", "b": "\\"' + SSN.encode() + b'\\"\\n\\/"}',
    b'{"\\u0065mail": "x.y@example.com", "k\\"ey": 1, "k\\\\ey": 2}',  # keys with escapes
    b'{"a": {}, "b": [], "c": [[], {}, [{}]], "d": {"e": {"f": []}}}',  # empty containers
    b'{"n": 4111111111111111, "m": -4111111111111111, "big": ' + b"7" * 600 + b"}",  # ints
    b'{"h": 0, "j": 0}',  # zero
    b'{"t": true, "f": false, "n": null, "s": "' + SSN.encode() + b'"}',
    b'{ "a" :\t[ 1 ,\r\n"' + SSN.encode() + b'" ] } \n\r\t',  # whitespace
    b'{"a": "\\u0000 ' + SSN.encode() + b'"}',  # an escaped NUL
    b"{}",
    b'{"a": ""}',
    json.dumps({"customer": {"ssn": SSN, "notes": "call +1 415 555 2671"}, "email": "a@b.co"}).encode(),
    nested(MAX_DEPTH - 1, '"' + SSN + '"').encode(),  # as deep as the walk goes
    nested(MAX_DEPTH, "").encode(),  # empty at the limit
    json.dumps({"a": [{"x": SSN}, {"x": CARD}, {"y": 1}]}).encode(),
    json.dumps({"w": {f"k{index}": f"{SSN} {index}" for index in range(40)}}).encode(),
]

PLAIN: list[bytes] = [
    b"plain " + SSN.encode(),
    b"[1, 2, 3]",
    json.dumps([{"ssn": SSN}]).encode(),
    b"",
    b"{ not json " + CARD.encode(),
]


def test_the_native_reader_reads_what_it_vouches_for_and_leaves_the_rest() -> None:
    reads = json_reads(READ_NATIVELY + LEFT_TO_PYTHON, frozenset(DetectorSet.default().names))
    assert reads is not None  # active: the extension is required
    keys = KeyNames((), SECRET)
    for element, read in zip(READ_NATIVELY, reads, strict=False):
        assert read is not None, element
        signature = read[0]
        shape = keys.native_shape(element, signature)
        assert shape is not None, element
        reference = read_shaped(element, KeyNames((), SECRET))
        assert isinstance(reference, tuple)
        assert _shape_fields(shape) == _shape_fields(reference[0])
    for element, read in zip(LEFT_TO_PYTHON, reads[len(READ_NATIVELY) :], strict=True):
        assert read is None, element
    long_read = json_reads([LONG_SIGNATURE], frozenset())
    assert long_read is not None and long_read[0] is not None
    assert keys.native_shape(LONG_SIGNATURE, long_read[0][0]) is None
    assert long_read[0][0] not in keys._native_shapes.entries


def test_native_signatures_are_python_s_signatures() -> None:
    reads = json_reads(READ_NATIVELY, frozenset())
    assert reads is not None
    for element, read in zip(READ_NATIVELY, reads, strict=True):
        assert read is not None
        assert read[0] == native_signature(json.loads(element)), element
        assert read[1] == ()  # nothing wanted, nothing found
    # One bytes object per distinct signature in a call.
    again = json_reads([READ_NATIVELY[0]] * 3, frozenset())
    assert again is not None and again[0] is not None and again[2] is not None
    assert again[0][0] is again[2][0]


def test_a_signature_the_exact_path_disagrees_with_is_never_trusted() -> None:
    keys = KeyNames((), SECRET)
    element = b'{"a": "x"}'
    assert keys.native_shape(element, b"{:\x01\x00\x00\x00ai}") is None  # "a" is a string
    assert keys.native_shape(element, b"{:\x01\x00\x00\x00ai}") is None  # and stays refused
    assert keys.native_shape(b'{"a": 1, "a": 2}', b"{:\x01\x00\x00\x00ai:\x01\x00\x00\x00ai}") is None
    assert keys.native_shape(element, native_signature({"a": "x"})) is not None


@pytest.mark.parametrize("element", [*READ_NATIVELY, *LEFT_TO_PYTHON, LONG_SIGNATURE, *PLAIN])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("detectors", DETECTOR_SETS)
def test_each_element_alone(element: bytes, model: str, detectors: str) -> None:
    assert_same_everywhere([tensor("notes", [element])], model, DETECTOR_SETS[detectors])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("detectors", DETECTOR_SETS)
def test_mixed_tensors(model: str, detectors: str) -> None:
    rng = random.Random(7)
    pool = [*READ_NATIVELY, *LEFT_TO_PYTHON, LONG_SIGNATURE, *PLAIN]
    for _ in range(5):
        elements = [rng.choice(pool) for _ in range(25)]
        tensors = [tensor("notes", elements), tensor("doc", elements[::-1])]
        assert_same_everywhere(tensors, model, DETECTOR_SETS[detectors])


def test_the_demo_tensors() -> None:
    elements = [READ_NATIVELY[0], PLAIN[0], READ_NATIVELY[14], b"Happy.", READ_NATIVELY[0]]
    assert_same_everywhere(
        [tensor("notes", elements), tensor("ssn", [SSN.encode()]), tensor("email", [b"a@b.co"])],
        "customer-profile",
    )


def test_too_many_paths() -> None:
    elements = [json.dumps({f"key{index}": SSN}).encode() for index in range(MAX_JSON_PATHS + 20)]
    elements[3] = b'{"a": 1, "a": 2}'  # opaque for another reason first
    elements.insert(5, PLAIN[0])
    elements.append(b'{"broken": ')
    assert_same_everywhere([tensor("doc", elements)], detectors=EVERY_BUILTIN)


def test_keys_a_detector_fires_on() -> None:
    elements = [
        json.dumps({SSN: "x", "a": CARD}).encode(),
        json.dumps({"a": CARD}).encode(),
        json.dumps({"contact": {"x.y@example.com": 1}}).encode(),
        json.dumps({"a": CARD}).encode(),
    ]
    assert_same_everywhere([tensor("doc", elements)])
    assert_same_everywhere([tensor("doc", elements)], detectors=EVERY_BUILTIN)


def test_custom_detectors_keep_the_python_path() -> None:
    detectors = DetectorSet(custom=[CustomPattern("ticket", r"TCK-\d{4}", "confidential")])
    elements = [json.dumps({"a": f"TCK-1234 {SSN}", "b": CARD}).encode(), READ_NATIVELY[1]]
    assert_same_everywhere([tensor("doc", elements)], detectors=detectors)


def test_detectors_chosen_by_label() -> None:
    detectors = DetectorSet({"us_ssn": "restricted", "email": "internal", "phone": "confidential"})
    for model in MODELS:
        # customer-profile's "ssn" output is labelled: only what is above its label is scanned.
        assert_same_everywhere(
            [tensor("ssn", READ_NATIVELY), tensor("notes", READ_NATIVELY)], model, detectors
        )
    assert_same_everywhere([tensor("doc", READ_NATIVELY)], detectors=DetectorSet.none())


# --- generated documents ------------------------------------------------------------------

_KEYS = st.one_of(
    st.sampled_from(["ssn", "email", "a", "b", "contact", "\u00e9", "k\\", 'q"', SSN]),
    st.text(max_size=4),
)
_STRINGS = st.one_of(
    st.sampled_from(SENSITIVE),
    st.builds(
        lambda left, value, right: left + value + right,
        st.text(max_size=3),
        st.sampled_from(SENSITIVE),
        st.text(max_size=3),
    ),
    st.text(max_size=8),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.sampled_from(["\\", "\\u0031", "a\u0000b", "\U0001f600", "\u2028"]),
)
_LEAVES = st.one_of(
    _STRINGS,
    st.integers(),
    st.integers(min_value=10**15, max_value=10**19),
    st.sampled_from([0, -1, 4111111111111111, 10**700]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_DOCUMENTS = st.recursive(
    _LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=12,
)


@st.composite
def _elements(draw: st.DrawFn) -> bytes:
    document = draw(st.dictionaries(_KEYS, _DOCUMENTS, max_size=5))
    ascii_only = draw(st.booleans())
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (" ,", " : ")]))
    try:
        text = json.dumps(document, ensure_ascii=ascii_only, indent=indent, separators=separators)
    except ValueError:  # an integer too long for str()
        text = "{}"
    element = text.encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(["none", "none", "trail", "lead", "byte", "drop", "duplicate"]))
    if mutation == "trail":
        element += draw(st.sampled_from([b" ", b"\n", b"\x0b", b"x", b"}"]))
    elif mutation == "lead":
        element = draw(st.sampled_from([b" ", b"\t", b"\x0c"])) + element
    elif mutation in ("byte", "drop") and element:
        at = draw(st.integers(min_value=0, max_value=len(element) - 1))
        replacement = b"" if mutation == "drop" else bytes([draw(st.integers(min_value=0, max_value=255))])
        element = element[:at] + replacement + element[at + 1 :]
    elif mutation == "duplicate" and document:
        first = json.dumps(next(iter(document)))
        element = element.replace(b"{", b"{" + first.encode() + b": 0, ", 1)
    return element


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(_elements(), st.sampled_from(PLAIN)), min_size=1, max_size=6), st.sampled_from(MODELS)
)
def test_generated_documents(elements: list[bytes], model: str) -> None:
    assert_same_everywhere([tensor("notes", elements)], model, EVERY_BUILTIN)


def test_generated_documents_are_mostly_read_natively() -> None:
    """The generator reaches the native reader (else the comparison above proves little)."""
    rng = random.Random(3)
    documents = [
        {"a": rng.choice(SENSITIVE[:5]), "b": [rng.randint(0, 10**16), False, None], "c": {"d": True}}
        for _ in range(20)
    ]
    reads = json_reads([json.dumps(item).encode() for item in documents], frozenset(["us_ssn"]))
    assert reads is not None and all(read is not None for read in reads)


def test_shapes_taking_turns_with_repeated_hits() -> None:
    """Every element read natively, shapes taking turns and hits met again (within a shape and
    across shapes: the extension hands one tuple per distinct hit): the same answers."""
    shapes = [
        lambda value: {"a": value, "b": "x"},
        lambda value: {"b": "x", "a": value},
        lambda value: {"a": value, "c": {"d": value}},
    ]
    values = [SSN, CARD, f"{SSN} {CARD}", "x.y@example.com", "none"]  # the email alone only
    elements = [json.dumps(shapes[index % 3](values[index % 5])).encode() for index in range(45)]
    reads = json_reads(elements, frozenset(EVERY_BUILTIN.names))
    assert reads is not None and all(read is not None for read in reads)
    first, again = reads[0], reads[15]  # one shape, one value
    assert first is not None and again is not None and first[1] == again[1] and first[1]
    assert_same_everywhere([tensor("doc", elements)], detectors=EVERY_BUILTIN)
    assert_same_everywhere([tensor("doc", elements), tensor("notes", elements[::-1])])


def test_a_large_tensor_is_read_without_the_gil() -> None:
    """Past 64 KiB in a call the extension reads without the GIL: the same answers."""
    elements = [*READ_NATIVELY, *LEFT_TO_PYTHON, *PLAIN] * 40
    assert sum(map(len, elements)) > 64 * 1024
    assert_same_everywhere([tensor("notes", elements)], detectors=EVERY_BUILTIN)


def test_the_native_shape_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonpaths, "NATIVE_MEMO_SIZE", 4)
    monkeypatch.setattr(jsonpaths, "NATIVE_MEMO_BYTES", 200)
    keys = KeyNames((), SECRET)
    elements = [json.dumps({f"k{index}": SSN, "v": [index]}).encode() for index in range(30)]
    elements.append(json.dumps({"k" * 150: SSN, "w": "x" * 10}).encode())
    reads = json_reads(elements, frozenset())
    assert reads is not None
    for element, read in zip(elements, reads, strict=True):
        assert read is not None
        assert keys.native_shape(element, read[0]) is not None
        assert len(keys._native_shapes.entries) <= 4
        assert sum(map(len, keys._native_shapes.entries)) == keys._native_shapes.weight <= 200
    for way in ("python", "native-json"):
        with _ways(way):
            results = [
                outcome(classify_outputs("m", [tensor("doc", elements)], CATALOG, EVERY_BUILTIN, keys=keys))
            ]
        assert results == [classified([tensor("doc", elements)], "python", detectors=EVERY_BUILTIN)[0]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=6), st.sampled_from(jsonpaths.OBJECT_OPENERS)), max_size=40))
def test_object_candidates_are_the_elements_starting_with_an_opener(values: list[bytes]) -> None:
    openers = b"".join(jsonpaths.OBJECT_OPENERS)
    expected = [index for index, value in enumerate(values) if value[:1] in jsonpaths.OBJECT_FIRST_BYTES]
    with native.json_forced(True):
        assert native.object_candidates(values, openers) == expected
        assert native.object_candidates([*values, bytearray(b"{")], openers) is None  # not exactly bytes
    with native.json_forced(False):
        assert native.object_candidates(values, openers) is None  # the caller's own path then
