"""The enforce stage's shortcuts give what the plain way gives: whole-tensor masks, the
reused HMAC key, and the walk of JSON elements that skips subtrees no mask names."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from pathlib import Path

import pytest

from labelgate.classify import Catalog, DetectorSet, classify_outputs
from labelgate.classify.jsonpaths import KeyNames
from labelgate.classify.other_encodings import reads_wide
from labelgate.enforce import apply_masks
from labelgate.enforce.strategies import Mask, Masker, MaskIndex, _partial, covering
from labelgate.oip.tensor import Tensor

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
KEY = b"0123456789abcdef0123456789abcdef"
VALUES = [
    b"",
    b"a",
    b"4111111111111111",
    b"123-45-6789",
    "ünïcödé text".encode(),
    b"\xff\xfe broken \xff",
    b"tail \xe2\x82",  # a cut multi-byte character
]


def reference_raw(value: bytes, mask: Mask) -> bytes:
    """One element masked the plain way: text in, text out."""
    if mask.strategy == "null":
        return b""
    if mask.strategy == "redact":
        return mask.replacement.encode()
    if mask.strategy == "hash":
        return ("hmac:" + hmac.new(KEY, value, hashlib.sha256).hexdigest()).encode()
    text = value.decode("utf-8", "surrogateescape")
    if reads_wide(value):  # UTF-16 or UTF-32 text (a byte order mark): starred whole
        return b"*" * len(text)
    return _partial(text, mask.keep_last).encode("utf-8", "surrogateescape")


MASKS = [
    Mask("p", "null"),
    Mask("p", "redact"),
    Mask("p", "redact", {"replacement": "•"}),
    Mask("p", "hash"),
    *(Mask("p", "partial", {"keep_last": keep}) for keep in (0, 1, 4, 40)),
]


@pytest.mark.parametrize("mask", MASKS, ids=lambda mask: f"{mask.strategy}{dict(mask.params)}")
def test_whole_tensor_masks_equal_masking_each_element(mask: Mask) -> None:
    masker = Masker(KEY, [mask])
    expected = [reference_raw(value, mask) for value in VALUES]
    assert masker.raw_all(VALUES, mask) == expected
    assert [masker.raw(value, mask) for value in VALUES] == expected


def test_the_reused_hmac_state_gives_independent_digests() -> None:
    masker = Masker(KEY, [Mask("p", "hash")])
    first = masker.digest(b"a")
    assert masker.digest(b"b") == "hmac:" + hmac.new(KEY, b"b", hashlib.sha256).hexdigest()
    assert masker.digest(b"a") == first  # no state carried over from earlier values


def test_may_name_sees_every_path_an_exact_mask_extends() -> None:
    index = MaskIndex([Mask("outputs.doc[].billing.iban", "null"), Mask("outputs.ssn", "null")])
    for path in ("outputs.doc[]", "outputs.doc[].billing", "outputs.doc[].billing.iban", "outputs.ssn"):
        assert index.may_name(path), path
    for path in ("outputs.doc[].contact", "outputs.doc[].billing.ibanx", "outputs.notes", "outputs.t"):
        assert not index.may_name(path), path
    assert MaskIndex([Mask("outputs.*", "null")]).may_name("anything")


# Names the keys the documents below use (only catalogued keys are spelled verbatim); keys
# with "." or "[]" in them can never be catalogued, so they are always placeholders.
KEYED = Catalog.from_data(
    {
        "entries": [
            {"model": "m", "path": f"outputs.doc[].{path}", "labels": ["internal"]}
            for path in ("a.b.c", "other", "items[].ssn", "items2[].n", "root")
        ]
    }
)
SPELL = KeyNames(KEYED.key_names("m")).segment  # what classify_outputs uses by default


def classify_and_mask(documents: list[dict], *masks: dict) -> list[object]:
    tensor = Tensor("doc", "BYTES", [len(documents)], [json.dumps(d).encode() for d in documents])
    classification = classify_outputs("m", [tensor], KEYED, DetectorSet.default())
    [result] = apply_masks([tensor], classification, list(masks), KEY)
    return [json.loads(value) for value in result.values]


def test_a_key_with_a_dot_has_its_own_path() -> None:
    # "a.b" as one key is never catalogued, so it no longer spells the path of "b" in "a".
    documents = [{"a": {"b": "x", "c": "keep"}, "a.b": "y", "other": {"b": "keep"}}]
    masked = classify_and_mask(documents, {"path": "outputs.doc[].a.b", "strategy": "redact"})
    assert masked == [{"a": {"b": "[REDACTED]", "c": "keep"}, "a.b": "y", "other": {"b": "keep"}}]
    dotted = classify_and_mask(documents, {"path": f"outputs.doc[]{SPELL('a.b')}", "strategy": "redact"})
    assert dotted == [{"a": {"b": "x", "c": "keep"}, "a.b": "[REDACTED]", "other": {"b": "keep"}}]


def test_nested_masks_reach_into_arrays_and_leave_the_rest_alone() -> None:
    documents = [{"items": [{"ssn": "s1", "n": 1}, {"ssn": "s2"}], "items2": [{"ssn": "keep"}]}]
    masked = classify_and_mask(documents, {"path": "outputs.doc[].items[].ssn", "strategy": "null"})
    assert masked == [{"items": [{"ssn": None, "n": 1}, {"ssn": None}], "items2": [{"ssn": "keep"}]}]


def test_random_documents_mask_like_a_full_walk() -> None:
    """Against a reference that visits every node and asks the index about each."""
    rng = random.Random(3)
    keys = ["a", "b", "a.b", "c[]", "ssn"]

    def document(depth: int = 0) -> object:
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice(["text", 7, None, True])
        if roll < 0.7:
            return {rng.choice(keys): document(depth + 1) for _ in range(rng.randint(0, 3))}
        return [document(depth + 1) for _ in range(rng.randint(0, 2))]

    def named_inside(value: object, path: str, index: MaskIndex) -> list[Mask | None]:
        if isinstance(value, dict):
            children = [(path + SPELL(key), child) for key, child in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[]", child) for child in value]
        else:
            return []
        found: list[Mask | None] = []
        for child_path, child in children:
            found += [index.lookup(child_path), *named_inside(child, child_path, index)]
        return found

    def reference(value: object, path: str, index: MaskIndex, masker: Masker) -> object:
        mask = index.lookup(path)
        if mask is not None:
            # Masked whole: by a stronger mask named inside it, if any (``strategies.covering``).
            return masker.json_value(value, covering(mask, named_inside(value, path, index)))
        if isinstance(value, dict):
            return {key: reference(child, path + SPELL(key), index, masker) for key, child in value.items()}
        if isinstance(value, list):
            return [reference(child, f"{path}[]", index, masker) for child in value]
        return value

    paths = [
        "outputs.doc[].a",
        "outputs.doc[].a.b",
        f"outputs.doc[]{SPELL('a.b')}",
        f"outputs.doc[]{SPELL('c[]')}[]",
        "outputs.doc[].b[].ssn",
        "outputs.doc[]",
    ]
    for _ in range(300):
        documents = [{"root": document(), rng.choice(keys): document()}]
        masks = [{"path": path, "strategy": rng.choice(["null", "redact"])} for path in rng.sample(paths, 2)]
        index = MaskIndex([Mask.coerce(mask) for mask in masks])
        expected = [reference(d, "outputs.doc[]", index, Masker(KEY)) for d in documents]
        assert classify_and_mask(documents, *masks) == expected, (documents, masks)


@pytest.mark.parametrize("mask", MASKS, ids=lambda mask: f"{mask.strategy}{dict(mask.params)}")
def test_one_span_text_elements_mask_like_replace_spans(mask: Mask) -> None:
    # _mask_tensor stars a lone partial span itself; it must give what replace_spans gives,
    # ASCII or not (non-ASCII spans take the full path).
    from labelgate.enforce.strategies import replace_spans

    values = [
        b"SSN 123-45-6789 on file",
        "caf\u00e9 123-45-6789 \u00fcber".encode(),
        "n\u00b0 123\u201145\u20116789".encode(),
        b"no ssn here",
        b"123-45-6789",
    ]
    tensor = Tensor("notes", "BYTES", [len(values)], values)
    classification = classify_outputs("support-chat", [tensor], CATALOG, DetectorSet.default())
    spans = classification.spans["notes"]
    assert {len(found) for found in spans.values()} == {1}
    assert len(spans) >= 3
    span_mask = Mask("outputs.notes{us_ssn}", mask.strategy, mask.params)
    masker = Masker(KEY, [span_mask])
    expected = list(values)
    for position, (hit,) in spans.items():
        rewritten = replace_spans(values[position], [(hit.start, hit.end, span_mask)], masker)
        assert rewritten is not None
        expected[position] = rewritten
    (masked,) = apply_masks([tensor], classification, [span_mask], KEY)
    assert masked.values == expected
    assert masked.values != values
