"""JSON elements masked natively (``labelgate.enforce.native``) are byte for byte what the
Python path gives.

``apply_masks`` runs with the extension's JSON masking on and off on the same tensors,
classification and masks; the masked values (and which of them are the very input objects)
must be equal. A hand corpus covers what the extension masks (escapes, non-ASCII, control
characters, every leaf type, nested and empty containers, overlapping spans, spans at leaf
edges, several shapes in a tensor) and what it must leave to Python (hash, floats, masked
containers or the root, lone surrogates, elements that are not the ones classified), and
``left_to_python`` checks which is which, so a path silently falling back cannot pass for
the native one. Hypothesis then generates documents, masks and spans.

The extension is required: the Makefile installs it, and a missing one fails here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate.classify import Catalog, DetectorSet, classify_outputs, jsonpaths
from labelgate.classify.detectors import BUILTIN_LABELS, Detection
from labelgate.classify.fields import Classification, LeafSpans
from labelgate.classify.jsonpaths import KeyNames
from labelgate.enforce import apply_masks, masking
from labelgate.enforce import native as json_native
from labelgate.enforce.compiled import compile_masks
from labelgate.oip.tensor import Tensor

HASH_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = b"native-json-mask-test-secret-32b"
MODEL = "m"
CATALOG = Catalog.from_data(
    {
        "entries": [
            {"model": MODEL, "path": f"outputs.doc[].{key}", "labels": ["internal"]} for key in ("a", "b")
        ]
    }
)
DETECTORS = DetectorSet(dict.fromkeys(BUILTIN_LABELS, "restricted"))  # every built-in scans
KEYS = KeyNames(CATALOG.key_names(MODEL), SECRET)
SSN, CARD, IBAN, EMAIL = "123-45-6789", "4111111111111111", "DE89370400440532013000", "x.y@example.com"


def key(name: str) -> str:
    """A key's path segment, as the classifier spells it."""
    return KEYS.segment(name)


def tensor(elements: Sequence[bytes]) -> Tensor:
    return Tensor("doc", "BYTES", [len(elements)], list(elements))


def classify(elements: Sequence[bytes]) -> Classification:
    return classify_outputs(MODEL, [tensor(elements)], CATALOG, DETECTORS, keys=KEYS)


def masked_both_ways(
    elements: Sequence[bytes], classification: Classification, masks: Sequence[dict[str, Any]]
) -> list[bytes]:
    """The masked elements, after checking both paths agree byte for byte (and on which
    elements are the input objects themselves)."""
    results = []
    for use_native in (True, False):
        with json_native.forced(use_native):
            results.append(apply_masks([tensor(elements)], classification, tuple(masks), HASH_KEY)[0].values)
    native, python = results
    assert native == python
    assert [type(value) for value in native] == [type(value) for value in python]
    assert [a is b for a, b in zip(native, elements, strict=True)] == [
        a is b for a, b in zip(python, elements, strict=True)
    ]
    return native


def left_to_python(
    elements: Sequence[bytes], classification: Classification, masks: Sequence[dict[str, Any]]
) -> list[int]:
    """The JSON elements the extension leaves to the Python path (as ``_mask_objects``
    asks it), by index."""
    _, index = compile_masks(tuple(masks))
    prefix = "outputs.doc[]"
    span_masks = {
        name: mask for name in BUILTIN_LABELS if (mask := index.lookup(f"outputs.doc{{{name}}}")) is not None
    }
    shapes = classification.json_shapes.get("doc", {})
    plans = json_native.JsonPlans(span_masks)
    known_of: dict[Any, Any] = {}
    for shape in dict.fromkeys(shaped[1] for shaped in shapes.values()):
        plans.add(shape, masking._shape_nodes(shape, prefix, index, KEYS, known_of)[0])
    values = list(elements)
    with json_native.forced(True):
        return plans.run(
            values, list(values), classification.json_elements.get("doc", {}), shapes, index.any_under(prefix)
        )


def doc(value: Any, **options: Any) -> bytes:
    return json.dumps(value, **options).encode("utf-8", "surrogatepass")


# --- the hand corpus --------------------------------------------------------------------------

COMMON = [
    doc({"a": EMAIL, "b": int(CARD), "c": True, "d": None, "e": False, "f": SSN}),
    # Escapes in keys and values (decoded, then written as dumps writes them).
    b'{"a": "line\\nbreak \\"quoted\\" tab\\t \\u00e9 \\ud83d\\ude00 \\/slash ' + SSN.encode() + b'",'
    b' "k\\u00e9y\\"\\\\": "v\\u0001\\u001f\\u007f", "\\ud83d\\ude00": "' + EMAIL.encode() + b'"}',
    # A backslash once unescaped: the classifier reads it the Python way; masking natively.
    b'{"a": "back\\\\slash ' + SSN.encode() + b'", "b": "\\\\u0031"}',
    # Non-ASCII, read raw.
    doc({"名前": "山田 太郎", "a": f"Grüße {SSN} 😀", "b": "ü" * 9}, ensure_ascii=False),
    # Nested arrays and objects, empty containers, negative and long integers.
    doc({"a": [1, [2, [], {}], {"b": [{"c": SSN}]}], "e": {}, "f": [], "n": -42, "big": 10**30}),
    doc({"a": [[SSN, 1], [True, None, -7]], "b": [{"c": [EMAIL, CARD]}]}),
    # Pretty-printed, trailing whitespace: written compactly.
    doc({"a": {"x": SSN, "y": [True, None]}, "b": "plain"}, indent=2).replace(b"\n", b"\r\n") + b" \n",
    doc({"a": IBAN, "b": {"c": f"{CARD} and {SSN}"}}),
    doc({"a": "", "b": 7, "c": "😀😀😀😀😀"}, ensure_ascii=False),
    doc({}),
]
# Elements the extension leaves to Python whatever the mask.
ALWAYS_LEFT = [
    doc({"a": SSN, "f": 1.5}),  # a float anywhere
    doc({"a": SSN, "f": [0.0]}),
    b'  {"a": "' + SSN.encode() + b'"}',  # leading whitespace: the reader refuses it
    b'{"a": "\\ud800 ' + SSN.encode() + b'"}',  # a lone surrogate in a value
    b'{"\\udc00": "' + SSN.encode() + b'", "a": "' + EMAIL.encode() + b'"}',  # in a key
    b'{"a": "\\ud800\\u0041", "b": "x"}',
]
CORPUS = COMMON + ALWAYS_LEFT

A, B, C = key("a"), key("b"), key("c")
LEAF_MASKS = [
    [{"path": f"outputs.doc[]{A}", "strategy": "partial"}],
    [{"path": f"outputs.doc[]{A}", "strategy": "partial", "params": {"keep_last": 0}}],
    [{"path": f"outputs.doc[]{A}", "strategy": "partial", "params": {"keep_last": 99}}],
    [{"path": f"outputs.doc[]{B}", "strategy": "partial", "params": {"keep_last": 2}}],  # ints, strings
    [{"path": f"outputs.doc[]{C}", "strategy": "partial"}],  # booleans
    [{"path": f"outputs.doc[]{key('d')}", "strategy": "partial"}],  # a null stays null
    [{"path": f"outputs.doc[]{key('d')}", "strategy": "redact"}],
    [{"path": f"outputs.doc[]{key('d')}", "strategy": "null"}],
    [{"path": f"outputs.doc[]{A}", "strategy": "redact", "params": {"replacement": 'é"\\\n\x01█'}}],
    [{"path": f"outputs.doc[]{B}", "strategy": "redact"}],
    [{"path": f"outputs.doc[]{C}", "strategy": "null"}, {"path": f"outputs.doc[]{B}", "strategy": "null"}],
    [{"path": f"outputs.doc[]{key('e')}", "strategy": "null"}],
    [{"path": f"outputs.doc[]{A}[][]", "strategy": "partial", "params": {"keep_last": 1}}],
    [{"path": f"outputs.doc[]{key('名前')}", "strategy": "partial", "params": {"keep_last": 1}}],
    [{"path": "outputs.doc[]" + key('kéy"\\'), "strategy": "redact"}],
    [{"path": "outputs.doc[].*", "strategy": "partial"}],  # a glob: containers too (left)
    [{"path": f"outputs.doc[]{A}*", "strategy": "null"}],
]
SPAN_MASKS = [
    [{"path": "outputs.doc{us_ssn}", "strategy": "partial"}],
    [{"path": "outputs.doc{us_ssn}", "strategy": "redact", "params": {"replacement": "█"}}],
    [
        {"path": "outputs.doc{email}", "strategy": "null"},
        {"path": "outputs.doc{credit_card}", "strategy": "partial"},
    ],
    [{"path": "outputs.doc{*}", "strategy": "partial", "params": {"keep_last": 0}}],
    [
        {"path": "outputs.doc{iban}", "strategy": "redact"},
        {"path": f"outputs.doc[]{B}", "strategy": "partial"},
    ],
    [
        {"path": "outputs.doc{us_ssn}", "strategy": "partial"},
        {"path": f"outputs.doc[]{A}", "strategy": "null"},
    ],
]
# Masks the extension leaves to Python in every element they reach.
PYTHON_MASKS = [
    [{"path": f"outputs.doc[]{A}", "strategy": "hash"}],
    [{"path": "outputs.doc{us_ssn}", "strategy": "hash"}],
    [{"path": "outputs.doc[]", "strategy": "redact"}],  # the root
    [{"path": f"outputs.doc[]{A}", "strategy": "redact", "params": {"replacement": "\ud800"}}],
]


def test_the_corpus_is_classified_key_by_key() -> None:
    classification = classify(CORPUS)
    assert sorted(classification.json_shapes["doc"]) == list(range(len(CORPUS)))


def _unreached(
    elements: Sequence[bytes], classification: Classification, masks: list[dict[str, Any]]
) -> set[int]:
    """Elements no mask reaches: both paths give them back as they are, unread."""
    with json_native.forced(False):
        values = apply_masks([tensor(elements)], classification, tuple(masks), HASH_KEY)[0].values
    return {position for position, value in enumerate(values) if value is elements[position]}


def _masked_containers(classification: Classification, masks: list[dict[str, Any]]) -> set[int]:
    """Elements in which a mask names something other than a leaf (an object, an array, the
    root), or hashes one: Python's to mask."""
    _, index = compile_masks(tuple(masks))
    found = set()
    for position, (_, shape) in classification.json_shapes["doc"].items():
        nodes = masking._shape_nodes(shape, "outputs.doc[]", index, KEYS, {})[0]
        if any(location not in shape.locations or mask.strategy == "hash" for location, mask in nodes):
            found.add(position)
    return found


def _partial_beyond_ascii(classification: Classification, masks: list[dict[str, Any]]) -> set[int]:
    """Elements in which a ``partial`` mask reaches a string leaf that is not ASCII: Python's
    to mask (it keeps what reads as at most ``keep_last`` characters folded)."""
    _, index = compile_masks(tuple(masks))
    found = set()
    for position, (raw, shape) in classification.json_shapes["doc"].items():
        document = json.loads(raw)
        for location, mask in masking._shape_nodes(shape, "outputs.doc[]", index, KEYS, {})[0]:
            if mask.strategy != "partial" or location not in shape.locations:
                continue
            value = document
            for step in location:
                value = value[step]
            if isinstance(value, str) and not value.isascii():
                found.add(position)
    return found


@pytest.mark.parametrize(
    "masks", LEAF_MASKS + SPAN_MASKS, ids=lambda masks: " ".join(m["path"] for m in masks)
)
def test_common_masks_are_native_and_exact(masks: list[dict[str, Any]]) -> None:
    classification = classify(CORPUS)
    masked = masked_both_ways(CORPUS, classification, masks)
    left = set(left_to_python(CORPUS, classification, masks))
    common = set(range(len(COMMON)))
    expected = _masked_containers(classification, masks) | _partial_beyond_ascii(classification, masks)
    assert left & common == expected & common
    assert left >= set(range(len(COMMON), len(CORPUS))) - _unreached(CORPUS, classification, masks)
    # Some element is masked natively, unless every leaf the masks reach is beyond ASCII.
    native = common - left - _unreached(CORPUS, classification, masks)
    assert any(masked[position] != CORPUS[position] for position in native) or not native


@pytest.mark.parametrize("masks", PYTHON_MASKS, ids=lambda masks: " ".join(m["path"] for m in masks))
def test_masks_only_python_applies_are_left_to_it(masks: list[dict[str, Any]]) -> None:
    classification = classify(CORPUS)
    masked_both_ways(CORPUS, classification, masks)
    left = set(left_to_python(CORPUS, classification, masks))
    assert left >= set(range(len(CORPUS))) - _unreached(CORPUS, classification, masks)
    assert left


def test_elements_that_are_not_the_ones_classified_are_left_to_python() -> None:
    classification = classify(COMMON)
    masks = [
        {"path": f"outputs.doc[]{A}", "strategy": "partial"},
        {"path": "outputs.doc{us_ssn}", "strategy": "null"},
    ]
    changed = list(COMMON)
    changed[0] = doc({"a": EMAIL, "b": int(CARD), "c": True, "d": None, "e": False, "f": "123-45-6780"})
    changed[1] = b"no longer JSON"
    changed[4] = doc({"a": [1]})  # another shape
    masked = masked_both_ways(changed, classification, masks)
    assert masked[1] == b""
    # a is an object or array in some, text beyond ASCII in others
    expected = (
        {0, 1, 4} | _masked_containers(classification, masks) | _partial_beyond_ascii(classification, masks)
    )
    assert set(left_to_python(changed, classification, masks)) == expected


def test_partial_on_booleans_numbers_and_nulls_is_null_both_ways() -> None:
    """Review (F3): the extension starred a boolean's text (``*alse``) and an integer's, as
    Python did; both now write null for them, and the element stays native."""
    elements = [doc({"a": True, "b": False}), doc({"a": 85000, "b": -7}), doc({"a": None, "b": SSN})]
    classification = classify(elements)
    masks = [
        {"path": "outputs.doc[].a", "strategy": "partial"},
        {"path": "outputs.doc[].b", "strategy": "partial", "params": {"keep_last": 0}},
    ]
    masked = masked_both_ways(elements, classification, masks)
    assert [json.loads(value) for value in masked] == [
        {"a": None, "b": None},
        {"a": None, "b": None},
        {"a": None, "b": "*" * len(SSN)},
    ]
    assert left_to_python(elements, classification, masks) == []


def test_partial_in_a_leaf_with_a_nul_is_left_to_python() -> None:
    """Review (F1): a leaf whose text may read as UTF-16 (a NUL in it) is starred whole by
    Python when it does (``other_encodings.reads_wide``); the extension leaves such leaves to it."""
    wide = "name Ann Smith".encode("utf-16-le").decode("ascii")  # ASCII with NULs: UTF-16
    elements = [doc({"a": wide, "b": 1}), doc({"a": "x\u0000 " + CARD, "b": 1}), doc({"a": SSN, "b": 1})]
    classification = classify(elements)
    node = [{"path": "outputs.doc[].a", "strategy": "partial"}]
    spans = [{"path": "outputs.doc{credit_card}", "strategy": "partial"}]
    assert json.loads(masked_both_ways(elements, classification, node)[0])["a"] == "*" * len(wide)
    assert left_to_python(elements, classification, node) == [0, 1]
    masked = masked_both_ways(elements, classification, spans)
    assert json.loads(masked[1])["a"] == "x\u0000 ************1111"  # one NUL: no UTF-16
    assert 1 in left_to_python(elements, classification, spans)


def test_several_shapes_in_one_tensor_each_get_their_plan() -> None:
    rows = [{"a": SSN, "b": 1}, {"b": SSN, "a": 1}, {"a": [SSN, 2]}, {"a": SSN, "b": 1}, {"a": {"a": SSN}}]
    elements = [doc(row) for row in rows]
    classification = classify(elements)
    masks = [{"path": f"outputs.doc[]{A}", "strategy": "partial", "params": {"keep_last": 1}}]
    masked = masked_both_ways(elements, classification, masks)
    assert masked[0] == b'{"a":"**********9","b":1}'
    assert masked[1] == b'{"b":"' + SSN.encode() + b'","a":null}'
    assert set(left_to_python(elements, classification, masks)) == {2, 4}  # a is an array, an object


def test_an_element_whose_structure_is_not_its_shape_s_is_left_to_python() -> None:
    """Leaf ordinals come from the shape: an element of other key order (a classification
    pairing it with another's shape) must not be masked by them (the wrong leaf would be)."""
    elements = [doc({"a": SSN, "b": EMAIL}), doc({"b": SSN, "a": EMAIL})]
    classification = classify(elements)
    shapes = classification.json_shapes["doc"]
    swapped = replace(
        classification, json_shapes={"doc": {0: (elements[0], shapes[1][1]), 1: (elements[1], shapes[0][1])}}
    )
    masks = [{"path": f"outputs.doc[]{A}", "strategy": "null"}]
    assert masked_both_ways(elements, swapped, masks) == [
        doc({"a": None, "b": EMAIL}, separators=(",", ":")),
        doc({"b": SSN, "a": None}, separators=(",", ":")),
    ]
    assert left_to_python(elements, swapped, masks) == [0, 1]


# --- spans the classifier never makes, but masking must take as they come ------------------------


def with_spans(classification: Classification, spans: dict[int, list[LeafSpans]]) -> Classification:
    elements = dict(classification.json_elements["doc"])
    elements.update(spans)
    return replace(classification, json_elements={"doc": elements})


def hit(detector: str, start: int, end: int) -> Detection:
    return Detection(detector, BUILTIN_LABELS[detector], start, end)


SPAN_CASES: dict[str, tuple[list[LeafSpans], bool]] = {
    # name: (the element's leaves, whether the extension masks it)
    "overlapping, merged under the strongest": (
        [LeafSpans(("a",), "", (hit("us_ssn", 0, 6), hit("email", 3, 9), hit("phone", 8, 11)))],
        True,
    ),
    # One span given to each detector of a merged cluster (``detectors._cluster_spans``): the
    # most protective of their masks, whichever comes first and whether or not one is unmasked.
    "one span, several detectors": (
        [LeafSpans(("a",), "", (hit("ip_address", 0, 11), hit("us_ssn", 0, 11), hit("phone", 0, 11)))],
        True,
    ),
    "adjacent and at both edges": (
        [LeafSpans(("a",), "", (hit("email", 4, 15), hit("us_ssn", 0, 4)))],
        True,
    ),
    "in an integer": ([LeafSpans(("b",), "", (hit("credit_card", 0, 16),))], True),
    "in a string and an integer": (
        [LeafSpans(("b",), "", (hit("credit_card", 2, 4),)), LeafSpans(("f",), "", (hit("us_ssn", 4, 6),))],
        True,
    ),
    "one leaf twice": (
        [LeafSpans(("f",), "", (hit("us_ssn", 0, 3),)), LeafSpans(("f",), "", (hit("phone", 0, 11),))],
        True,
    ),
    "inside a masked leaf": ([LeafSpans(("e",), "", (hit("us_ssn", 0, 1),))], True),
    "not masked by any mask": ([LeafSpans(("a",), "", (hit("ip_address", 0, 99),))], True),
    "past the end": ([LeafSpans(("a",), "", (hit("us_ssn", 10, 16),))], False),
    "empty": ([LeafSpans(("a",), "", (hit("us_ssn", 3, 3),))], False),
    "negative": ([LeafSpans(("a",), "", (hit("us_ssn", -1, 3),))], False),
    "in a boolean": ([LeafSpans(("c",), "", (hit("us_ssn", 0, 2),))], False),
    "in a null": ([LeafSpans(("d",), "", (hit("us_ssn", 0, 2),))], False),
    "at no leaf": ([LeafSpans(("zz",), "", (hit("us_ssn", 0, 2),))], False),
    "hashed": ([LeafSpans(("a",), "", (hit("iban", 0, 2),))], False),
}


@pytest.mark.parametrize("case", SPAN_CASES)
def test_spans_as_replace_spans_applies_them(case: str) -> None:
    leaves, native = SPAN_CASES[case]
    elements = [doc({"a": EMAIL, "b": int(CARD), "c": True, "d": None, "e": False, "f": SSN})]
    classification = with_spans(classify(elements), {0: leaves})
    masks: list[dict[str, Any]] = [
        {"path": "outputs.doc{us_ssn}", "strategy": "partial", "params": {"keep_last": 2}},
        {"path": "outputs.doc{email}", "strategy": "redact", "params": {"replacement": "é"}},
        {"path": "outputs.doc{phone}", "strategy": "null"},
        {"path": "outputs.doc{credit_card}", "strategy": "partial"},
        {"path": "outputs.doc{iban}", "strategy": "hash"},
        {"path": f"outputs.doc[]{key('e')}", "strategy": "redact"},
    ]
    masked_both_ways(elements, classification, masks)
    assert left_to_python(elements, classification, masks) == ([] if native else [0])


@pytest.mark.parametrize(
    ("start", "end", "strategy", "native"),
    [
        (1, 3, "null", True),  # what is left is UTF-8 again
        (0, 8, "null", True),
        (0, 1, "null", False),  # half a character left behind
        (5, 7, "null", False),
        (1, 3, "partial", False),  # partial on half characters: Python's (and it empties)
        (0, 6, "partial", False),  # on text beyond ASCII: Python's (it counts them folded)
        (6, 8, "partial", True),  # on ASCII
    ],
)
def test_spans_cutting_characters(start: int, end: int, strategy: str, native: bool) -> None:
    elements = [doc({"a": "ééé x"}, ensure_ascii=False)]
    classification = with_spans(
        classify(elements), {0: [LeafSpans(("a",), "", (hit("us_ssn", start, end),))]}
    )
    masks = [{"path": "outputs.doc{us_ssn}", "strategy": strategy, "params": {"keep_last": 1}}]
    masked_both_ways(elements, classification, masks)
    assert left_to_python(elements, classification, masks) == ([] if native else [0])


# --- generated documents, masks and spans ----------------------------------------------------

KEY_NAMES = st.sampled_from(["a", "b", "c", "é", 'k"q\\', "tab\tkey", "😀", "\x00", ""]) | st.text(max_size=3)
SENSITIVE = st.sampled_from([SSN, CARD, IBAN, EMAIL, f"{SSN} {EMAIL}", "+1 415 555 2671", "ü 123-45-6789"])
TEXT = st.text(st.characters(codec="utf-8"), max_size=10) | SENSITIVE
LEAVES = st.one_of(
    TEXT,
    st.integers(min_value=-(10**20), max_value=10**20) | st.sampled_from([int(CARD), 0, -1]),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEY_NAMES, children, max_size=3),
    max_leaves=8,
)
DOCUMENTS = st.dictionaries(KEY_NAMES, VALUES, max_size=4)
STRATEGIES = st.sampled_from(["partial", "partial", "partial", "redact", "redact", "null", "null", "hash"])
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "keep_last": st.integers(min_value=0, max_value=20),
        "replacement": st.sampled_from(["", "#", "é█", '"\\\n']),
    },
)


def _serialized(data: st.DataObject, value: dict[str, Any]) -> bytes:
    return doc(
        value,
        ensure_ascii=data.draw(st.booleans()),
        indent=data.draw(st.sampled_from([None, None, 1])),
        separators=data.draw(st.sampled_from([None, (",", ":")])),
    )


def _leaf_texts(value: Any, location: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(value, dict):
        return {
            k: v for key_, child in value.items() for k, v in _leaf_texts(child, (*location, key_)).items()
        }
    if isinstance(value, list):
        return {k: v for i, child in enumerate(value) for k, v in _leaf_texts(child, (*location, i)).items()}
    return {location: value}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_documents_and_masks(data: st.DataObject) -> None:
    documents: list[dict[str, Any]] = data.draw(st.lists(DOCUMENTS, min_size=1, max_size=4))
    if data.draw(st.integers(0, 9)) == 0:  # now and then a float: the element is Python's
        documents[0]["f"] = 0.5
    documents += data.draw(st.lists(st.sampled_from(documents), max_size=2))  # shapes met twice
    elements = [_serialized(data, document) for document in documents]
    classification = classify(elements)
    # Paths inside the elements (a mask on the whole tensor never reads them).
    paths = sorted({field.path for field in classification.fields} - {"outputs.doc"})
    chosen = data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4)) if paths else []
    chosen += data.draw(
        st.lists(st.sampled_from(["outputs.doc[].*", f"outputs.doc[]{A}*", "outputs.doc{*}"]), max_size=1)
    )
    masks = [
        {"path": path, "strategy": data.draw(STRATEGIES), "params": data.draw(PARAMS)} for path in chosen
    ]
    if data.draw(st.booleans()):  # spans anywhere, fitting or not
        spans: dict[int, list[LeafSpans]] = {}
        for position, document in enumerate(documents):
            if position not in classification.json_shapes.get("doc", {}):
                continue
            leaves = list(_leaf_texts(document).items()) if document else []
            picked = data.draw(st.lists(st.sampled_from(leaves), max_size=2)) if leaves else []
            spans[position] = []
            for location, value in picked:
                size = len(str(value).encode("utf-8", "surrogatepass")) if value is not None else 4
                hits = data.draw(
                    st.lists(
                        st.builds(
                            hit,
                            st.sampled_from(sorted(BUILTIN_LABELS)),
                            st.integers(min_value=-1, max_value=size),
                            st.integers(min_value=0, max_value=size + 1),
                        ),
                        min_size=1,
                        max_size=3,
                    )
                )
                spans[position].append(LeafSpans(location, "", tuple(hits)))
        if "doc" in classification.json_elements:
            classification = with_spans(classification, spans)
        masks += [
            {"path": f"outputs.doc{{{name}}}", "strategy": data.draw(STRATEGIES)}
            for name in ("us_ssn", "phone")
        ]
    masked_both_ways(elements, classification, masks)


def test_signature_memo_names_leaf_ordinals() -> None:
    shape = classify([doc({"a": [1, {"b": 2}], "c": "x"})]).json_shapes["doc"][0][1]
    known = json_native._shape_of(shape)
    assert known is not None
    ordinals, skeleton = known
    assert ordinals == {("a", 0): 0, ("a", 1, "b"): 1, ("c",): 2}
    assert skeleton == jsonpaths.native_signature({"a": [None, {"b": None}], "c": None})


def test_leaves_of_other_types_are_read_by_python_only() -> None:
    """Fields are read by position only from ``LeafSpans`` and ``Detection`` themselves: a
    plain tuple in their place is the Python path's to refuse, with or without the extension."""
    elements = [doc({"a": SSN})]
    classification = classify(elements)
    masks = ({"path": "outputs.doc{us_ssn}", "strategy": "null"},)
    plain_hit: Any = ("us_ssn", "x", 0, 3)
    plain_leaf: Any = (("a",), "", (hit("us_ssn", 0, 3),))
    for leaf in [plain_leaf, LeafSpans(("a",), "", (plain_hit,))]:
        odd = with_spans(classification, {0: [leaf]})
        for use_native in (True, False):
            with json_native.forced(use_native), pytest.raises(AttributeError):
                apply_masks([tensor(elements)], odd, masks, HASH_KEY)
    shared = LeafSpans(("a",), "", (hit("us_ssn", 0, 3), hit("email", 0, 1)))
    with json_native.forced(True):
        assert json_native.detectors({0: [shared], 1: [shared, LeafSpans((), "", ())]}) == {"us_ssn", "email"}
        assert json_native.detectors({0: [(("a",), "", ())]}) is None  # type: ignore[list-item]
    with json_native.forced(False):
        assert json_native.detectors({0: [shared]}) is None  # off: the caller's Python reads them


def test_the_shape_memo_keeps_no_wide_shape_and_stays_within_its_leaf_bound() -> None:
    # A backend can send a wide element on every call (the classifier keeps no shape that
    # wide, so each call brings a new one): the plans' memo must not keep them alive.
    json_native._SHAPES.clear()
    wide = json.dumps({"a": SSN, "b": list(range(json_native.SHAPE_MEMO_MAX_LEAVES + 1))}).encode()
    for _ in range(3):
        classification = classify([wide])
        masked = masked_both_ways([wide], classification, [{"path": "outputs.doc[].a", "strategy": "null"}])
        assert json.loads(masked[0])["a"] is None
    assert json_native._SHAPES.entries == {}
    # Narrower shapes are kept, and all together never past SHAPE_MEMO_LEAVES leaves.
    width = json_native.SHAPE_MEMO_MAX_LEAVES - 1
    for extra in range(json_native.SHAPE_MEMO_LEAVES // width + 3):
        element = json.dumps({"a": SSN, f"k{extra}": list(range(width - 1))}).encode()
        masked_both_ways([element], classify([element]), [{"path": "outputs.doc[].a", "strategy": "null"}])
        kept = sum(len(shape.locations) for shape in json_native._SHAPES.entries)
        assert 0 < kept == json_native._SHAPES.weight <= json_native.SHAPE_MEMO_LEAVES


def test_the_shape_memo_stays_within_its_shape_bound() -> None:
    # Narrow shapes, more of them than the memo holds: their leaves stay far below the leaf
    # bound, so only the shape bound keeps the memo (and the shapes it keeps alive) small.
    json_native._SHAPES.clear()
    mask = [{"path": "outputs.doc[].a", "strategy": "null"}]
    for extra in range(json_native.SHAPE_MEMO_SIZE + 10):
        element = json.dumps({"a": SSN, f"k{extra}": extra}).encode()
        masked = masked_both_ways([element], classify([element]), mask)
        assert json.loads(masked[0])["a"] is None
        assert 0 < len(json_native._SHAPES.entries) <= json_native.SHAPE_MEMO_SIZE
    assert json_native._SHAPES.weight < json_native.SHAPE_MEMO_LEAVES // 8


@pytest.mark.parametrize(
    ("leaf_mask", "span_mask", "expected"),
    [
        ({"strategy": "partial", "params": {"keep_last": 4}}, {"strategy": "null"}, None),
        ({"strategy": "redact"}, {"strategy": "partial", "params": {"keep_last": 0}}, "[REDACTED]"),
        ({"strategy": "partial", "params": {"keep_last": 2}}, {"strategy": "redact"}, "[REDACTED]"),
        (
            {"strategy": "partial", "params": {"keep_last": 4}},
            {"strategy": "partial", "params": {"keep_last": 0}},
            "*" * 11,
        ),
    ],
)
def test_a_masked_leaf_takes_a_span_mask_its_own_does_not_cover_both_ways(
    leaf_mask: dict[str, Any], span_mask: dict[str, Any], expected: str | None
) -> None:
    """Review s13 (rev-labels 3): a masked leaf skipped the spans in it, so ``partial`` kept the
    last characters of a value the policy nulls. The extension masks it as Python does, itself."""
    elements = [doc({"f": SSN, "a": EMAIL}), doc({"f": "no ssn here", "a": EMAIL})]
    classification = classify(elements)
    masks = [
        {"path": f"outputs.doc[]{key('f')}", **leaf_mask},
        {"path": "outputs.doc{us_ssn}", **span_mask},
    ]
    result = masked_both_ways(elements, classification, masks)
    assert left_to_python(elements, classification, masks) == []
    assert json.loads(result[0])["f"] == expected
    without_span = masked_both_ways(elements, classification, masks[:1])
    assert json.loads(result[1]) == json.loads(without_span[1])  # no SSN in it: the leaf's own mask


@pytest.mark.parametrize("span_keep_last", [1, 20])
def test_a_partial_leaf_holding_a_partial_span_is_redacted_both_ways(span_keep_last: int) -> None:
    """Review s13 (rev-last 1): no partial of the whole covers a partial part (a part no longer
    than its own keep_last is starred whole, the whole's last characters would be its): the
    leaf is redacted. The extension leaves such an element to Python."""
    elements = [doc({"f": SSN, "a": EMAIL})]
    classification = classify(elements)
    masks = [
        {"path": f"outputs.doc[]{key('f')}", "strategy": "partial", "params": {"keep_last": 4}},
        {"path": "outputs.doc{us_ssn}", "strategy": "partial", "params": {"keep_last": span_keep_last}},
    ]
    result = masked_both_ways(elements, classification, masks)
    assert json.loads(result[0])["f"] == "[REDACTED]"
