"""Masking JSON elements from their classified shapes gives what reading them again gives.

``Classification.json_shapes`` lets masking find the nodes a mask names once per shape and
skip elements nothing in them is masked. Without it masking reads every element again: the
exact path. Both must give the same bytes, for every mask kind, and an element that is not
the one classified must never be masked from the shape of another.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from labelgate.classify import Catalog, Classifier, DetectorSet
from labelgate.classify.fields import Classification
from labelgate.classify.jsonpaths import KeyNames
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = b"fedcba9876543210fedcba9876543210"
CATALOG = Catalog.from_data(
    {
        "entries": [
            {"model": "m", "path": f"outputs.doc[].{path}", "labels": ["internal"]} for path in ("a", "b")
        ]
    }
)
CLASSIFIER = Classifier(CATALOG, DetectorSet.default(), key_secret=SECRET)
PLACEHOLDER = KeyNames({"a", "b"}, SECRET).placeholder

ROWS = [
    {
        "a": {"ssn": "123-45-6789", "email": "x@example.com"},
        "b": [1, "987-65-4321", {"c": "4111111111111111"}],
    },
    {"a": {"ssn": "n/a", "email": "y@example.com"}, "b": [2, "none", {"c": "none"}]},
    {"a": {"email": "z@example.com", "ssn": "555-12-3456"}, "b": []},
    {"b": {"a": "DE89370400440532013000"}, "a": None},
    {"a": "plain", "b": 4111111111111111},
    {
        "a": {"ssn": "123-45-6789", "email": "x@example.com"},
        "b": [1, "987-65-4321", {"c": "4111111111111111"}],
    },
]
ELEMENTS = [json.dumps(row).encode() for row in ROWS] + [
    b"text 123-45-6789",
    b'  {"a":  {"ssn": "123-45-6789"}}  ',  # leading whitespace: read by the exact path
    b'{"a": 1, "a": 2}',  # opaque
]
SSN, EMAIL, C = PLACEHOLDER("ssn"), PLACEHOLDER("email"), PLACEHOLDER("c")

MASK_SETS = [
    [{"path": f"outputs.doc[].a.{SSN}", "strategy": "partial"}],
    [{"path": "outputs.doc[].a", "strategy": "hash"}],
    [{"path": "outputs.doc[].b[]", "strategy": "redact", "params": {"replacement": "#"}}],
    [{"path": f"outputs.doc[].b[].{C}", "strategy": "null"}],
    [{"path": "outputs.doc[]", "strategy": "redact"}],  # the whole element, as a JSON value
    [{"path": "outputs.doc{us_ssn}", "strategy": "partial", "params": {"keep_last": 2}}],
    [
        {"path": "outputs.doc{credit_card}", "strategy": "hash"},
        {"path": "outputs.doc[].a", "strategy": "null"},
    ],
    [
        {"path": "outputs.doc[].a.*", "strategy": "redact"},
        {"path": "outputs.doc{iban}", "strategy": "partial"},
    ],
    [{"path": "outputs.doc[].*", "strategy": "partial", "params": {"keep_last": 0}}],
    [
        {"path": f"outputs.doc[].a.{EMAIL}", "strategy": "null"},
        {"path": "outputs.doc{us_ssn}", "strategy": "null"},
    ],
    [{"path": "outputs.doc[].zzz", "strategy": "null"}],  # names nothing: elements stay as they are
]


def tensor(elements: list[bytes]) -> Tensor:
    return Tensor("doc", "BYTES", [len(elements)], list(elements))


def without_shapes(classification: Classification) -> Classification:
    return replace(classification, json_shapes={})


@pytest.mark.parametrize("masks", MASK_SETS, ids=lambda masks: " ".join(mask["path"] for mask in masks))
def test_masks_from_shapes_match_masks_from_reading_each_element(masks: list[dict]) -> None:
    tensors = [tensor(ELEMENTS)]
    classification = CLASSIFIER.classify_response("m", tensors)
    assert len(classification.json_shapes["doc"]) >= 6
    from_shapes = apply_masks(tensors, classification, tuple(masks), KEY)[0].values
    from_reading = apply_masks(tensors, without_shapes(classification), tuple(masks), KEY)[0].values
    assert from_shapes == from_reading
    assert from_shapes != ELEMENTS or masks[0]["path"].endswith("zzz")


def test_an_element_changed_after_classification_is_read_again() -> None:
    classified = [tensor(ELEMENTS)]
    classification = CLASSIFIER.classify_response("m", classified)
    masks = ({"path": f"outputs.doc[].a.{SSN}", "strategy": "null"},)
    changed = list(ELEMENTS)
    changed[0] = json.dumps({"a": [{"ssn": "123-45-6789"}], "b": 1}).encode()  # another shape
    changed[1] = b"no longer JSON"
    changed[2] = json.dumps({"a": {"ssn": "987-65-4321", "email": "z@example.com"}}).encode()
    masked = apply_masks([tensor(changed)], classification, masks, KEY)[0].values
    assert masked == apply_masks([tensor(changed)], without_shapes(classification), masks, KEY)[0].values
    assert masked[1] == b""  # classified as JSON, no longer JSON: emptied
    assert json.loads(masked[2]) == {"a": {"ssn": None, "email": "z@example.com"}}


def test_elements_nothing_is_masked_in_stay_the_same_bytes() -> None:
    elements = [b'{"a": {"x": 1},   "b": "keep my spacing"}', json.dumps({"a": {"ssn": "x"}}).encode()]
    classification = CLASSIFIER.classify_response("m", [tensor(elements)])
    masks = ({"path": f"outputs.doc[].a.{SSN}", "strategy": "null"},)
    masked = apply_masks([tensor(elements)], classification, masks, KEY)[0].values
    assert masked[0] is elements[0]
    assert masked[1] == b'{"a":{"ssn":null}}'
