"""A catalog entry on a key of a JSON element labels its path whatever the upstream puts
there (``json_elements._labelled_nodes``; review s11 F1).

``outputs.doc[].secret: restricted`` labelled only a leaf at exactly that path: an upstream
answering ``{"secret": ["pw"]}`` or ``{"secret": {"v": "pw"}}`` gave only the leaves below it
(``secret[]``, ``secret.<key:...>``), with the default label, so the policy never saw
``restricted`` and the value went out in clear. So did an operator's label on a sub-object
(``outputs.doc[].contact``). Now the object or array at a labelled path is a field of its own,
and the mask the policy asks for on it removes it whole, keys and all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelgate.classify import Catalog, DetectorSet, classify_outputs, native, to_policy_fields
from labelgate.classify.fields import OPAQUE_JSON, Classification
from labelgate.classify.json_elements import MAX_JSON_PATHS
from labelgate.classify.jsonpaths import KeyNames
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor

DETECTORS = DetectorSet.default()
HASH_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "PLTsecret7f3a9c"  # no detector recognises it: only the catalog protects it
KEY_SECRET = "PLTkey5e1d"  # a value the upstream puts in a key
CATALOG = Catalog.from_data(
    {
        "default_label": "internal",
        "entries": [
            {"model": "m", "path": "outputs.doc", "labels": ["public"]},
            {"model": "m", "path": "outputs.doc[].secret", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.doc[].list[].secret", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.doc[].contact", "labels": ["confidential"]},
            {"model": "globbed", "path": "outputs.doc[].*", "labels": ["restricted"]},
        ],
    }
)
# What the upstream may put at ``secret`` instead of the string: each holds the secret.
WRAPPED = {
    "array": [SECRET],
    "object": {"v": SECRET},
    "array of objects": [{"v": SECRET}],
    "array of arrays": [[SECRET]],
    "object in an object": {"v": {"w": [SECRET]}},
    "a key, no leaf": {KEY_SECRET: {}},
    "a key and a leaf": {KEY_SECRET: SECRET},
}
STRATEGIES = {
    "null": {},
    "redact": {"replacement": "[REDACTED]"},
    "hash": {},
    "partial": {"keep_last": 4},
}


def classify(
    elements: list[bytes], model: str = "m", keys: KeyNames | None = None, catalog: Catalog = CATALOG
) -> Classification:
    return classify_outputs(
        model, [Tensor("doc", "BYTES", [len(elements)], elements)], catalog, DETECTORS, keys=keys
    )


def labels_by_path(classification: Classification) -> dict[str, dict[str, list[str]]]:
    return {field["path"]: field["sources"] for field in to_policy_fields(classification.fields)}


def masks_above(
    classification: Classification, visible: set[str], strategy: str = "null"
) -> list[dict[str, Any]]:
    """What the default pack asks for: a mask on every field whose labels the caller may not
    see in clear (``visible``: the labels it may)."""
    return [
        {"path": field.path, "strategy": strategy, "params": STRATEGIES[strategy]}
        for field in classification.fields
        if not field.labels <= visible
    ]


def released(elements: list[bytes], classification: Classification, masks: list[dict[str, Any]]) -> bytes:
    (tensor,) = apply_masks(
        [Tensor("doc", "BYTES", [len(elements)], elements)], classification, masks, HASH_KEY
    )
    return b"\n".join(tensor.values)


def leaked(data: bytes, *values: str) -> list[str]:
    return [value for value in values if value.encode() in data]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("wrapped", WRAPPED.values(), ids=WRAPPED.keys())
def test_an_object_or_array_at_a_catalogued_path_carries_its_labels(wrapped: Any, use_native: bool) -> None:
    elements = [json.dumps({"a": 1, "secret": wrapped}).encode()]
    with native.forced(use_native):
        result = classify(elements)
    assert labels_by_path(result)["outputs.doc[].secret"] == {"restricted": ["catalog"]}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("wrapped", WRAPPED.values(), ids=WRAPPED.keys())
def test_the_mask_on_a_catalogued_object_or_array_removes_it_whole(
    wrapped: Any, strategy: str, use_native: bool
) -> None:
    """The caller may see public and internal data: the restricted node is masked whole,
    whatever the strategy (``partial`` has no meaning for an object or array: null), and
    the rest of the element stays readable."""
    elements = [json.dumps({"a": "keep-me", "secret": wrapped}).encode()]
    with native.forced(use_native):
        result = classify(elements)
    masks = masks_above(result, {"public", "internal"}, strategy)
    assert [mask["path"] for mask in masks] == ["outputs.doc[].secret"]
    out = released(elements, result, masks)
    assert not leaked(out, SECRET, KEY_SECRET), out
    assert json.loads(out)["a"] == "keep-me"


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("scalar", [False, True], ids=["wrapped-only", "with-a-string"])
def test_every_shape_of_a_tensor_gets_the_label_whatever_each_element_holds(
    scalar: bool, use_native: bool
) -> None:
    """Elements of several shapes in one tensor (the shape memo keeps each one): an array,
    an object, no secret at all, and maybe a string. One field, and the mask reaches every one."""
    documents = [
        {"secret": [SECRET, SECRET]},
        {"secret": {"v": SECRET}},
        {"other": "fine"},
        {"secret": SECRET} if scalar else {"secret": [[SECRET]]},
        {"secret": [SECRET]},
        {"secret": {"v": SECRET}},  # a shape met already
    ]
    elements = [json.dumps(document).encode() for document in documents]
    keys = KeyNames(CATALOG.key_names("m"))
    with native.forced(use_native):
        for _ in range(2):  # the second call reads every element from remembered shapes
            result = classify(elements, keys=keys)
            fields = labels_by_path(result)
            assert fields["outputs.doc[].secret"] == {"restricted": ["catalog"]}
            out = released(elements, result, masks_above(result, {"public", "internal"}))
            assert not leaked(out, SECRET), out
            assert [json.loads(line) for line in out.split(b"\n")] == [
                {"secret": None},
                {"secret": None},
                {"other": "fine"},
                {"secret": None},
                {"secret": None},
                {"secret": None},
            ]


def test_labels_follow_the_catalog_not_the_shape_remembered() -> None:
    """Shapes are remembered per ``KeyNames``, and one can be shared by classifications
    under other catalogs: a node's labels are looked up per call."""
    elements = [json.dumps({"secret": [SECRET]}).encode()]
    keys = KeyNames(CATALOG.key_names("m"))
    plain = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.doc[].other", "labels": ["public"]}]}
    )
    assert labels_by_path(classify(elements, keys=keys))["outputs.doc[].secret"] == {
        "restricted": ["catalog"]
    }
    assert "outputs.doc[].secret" not in labels_by_path(classify(elements, keys=keys, catalog=plain))
    assert labels_by_path(classify(elements, keys=keys))["outputs.doc[].secret"] == {
        "restricted": ["catalog"]
    }


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_catalogued_key_inside_an_array_of_objects_is_labelled_whatever_it_holds(use_native: bool) -> None:
    document = {"list": [{"secret": [SECRET]}, {"x": 1}, {"secret": {"v": [SECRET]}}]}
    elements = [json.dumps(document).encode()]
    with native.forced(use_native):
        result = classify(elements)
    assert labels_by_path(result)["outputs.doc[].list[].secret"] == {"restricted": ["catalog"]}
    out = released(elements, result, masks_above(result, {"public", "internal"}))
    assert not leaked(out, SECRET), out
    assert json.loads(out) == {"list": [{"secret": None}, {"x": 1}, {"secret": None}]}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_sub_object_an_operator_labels_is_masked_whole(use_native: bool) -> None:
    """``outputs.doc[].contact: confidential``: no misbehaving upstream needed."""
    document = {"id": 7, "contact": {"email": "ann-at-home", "phones": ["555 0100"], KEY_SECRET: {}}}
    elements = [json.dumps(document).encode()]
    with native.forced(use_native):
        result = classify(elements)
    fields = labels_by_path(result)
    assert fields["outputs.doc[].contact"] == {"confidential": ["catalog"]}
    out = released(elements, result, masks_above(result, {"public", "internal"}, "redact"))
    assert not leaked(out, "ann-at-home", "555 0100", KEY_SECRET), out
    assert json.loads(out) == {"id": 7, "contact": "[REDACTED]"}


@pytest.mark.parametrize(
    "element",
    [
        pytest.param(json.dumps([{"secret": [SECRET]}]).encode(), id="array-of-objects"),
        pytest.param(b'{"secret": ["%s"], "secret": 1}' % SECRET.encode(), id="duplicate-key"),
        pytest.param(b'\xef\xbb\xbf{"secret": {"v": "%s"}}' % SECRET.encode(), id="utf-8-bom"),
        pytest.param(b'{"secret": {"v": "%s"}' % SECRET.encode(), id="invalid-json"),
    ],
)
def test_an_opaque_element_holding_a_wrapped_secret_is_masked_whole(element: bytes) -> None:
    """Elements not classified key by key keep every label under the output and the default
    (``outputs.doc{opaque-json}``): the wrapped secret goes with them."""
    elements = [element, json.dumps({"secret": [SECRET]}).encode()]
    result = classify(elements)
    fields = labels_by_path(result)
    assert set(fields[f"outputs.doc{{{OPAQUE_JSON}}}"]) == {
        "public",
        "internal",
        "confidential",
        "restricted",
    }
    assert fields["outputs.doc[].secret"] == {"restricted": ["catalog"]}
    out = released(elements, result, masks_above(result, {"public", "internal"}))
    assert not leaked(out, SECRET), out


def test_only_nodes_on_a_catalogued_path_are_looked_up() -> None:
    """Objects keyed by data (no leaf at all, nothing the catalog names) add no field and
    never count against the bound: the walk follows the catalog's paths only."""
    document: dict[str, Any] = {f"id-{number}": {} for number in range(MAX_JSON_PATHS * 2)}
    document["secret"] = [SECRET]
    result = classify([json.dumps(document).encode()])
    fields = labels_by_path(result)
    assert fields["outputs.doc"] == {"public": ["catalog"]}, "no fail-closed label: not too many"
    assert fields["outputs.doc[].secret"] == {"restricted": ["catalog"]}
    assert len(fields) == 3  # the output, the node, its leaf


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({f"k{number}": {} for number in range(MAX_JSON_PATHS + 1)}, id="labelled-nodes"),
        pytest.param(
            {f"k{number}": {"v": number} for number in range(MAX_JSON_PATHS // 2 + 1)}, id="with-their-leaves"
        ),
    ],
)
def test_more_labelled_nodes_than_the_bound_label_the_whole_output(document: dict[str, Any]) -> None:
    """A glob reaching every node (``outputs.doc[].*``) and objects keyed by data: past
    ``MAX_JSON_PATHS`` paths (nodes and leaves together) the output itself carries the most
    sensitive label under it, and a mask on it empties every element."""
    document = {KEY_SECRET: SECRET, **document}
    elements = [json.dumps(document).encode()]
    result = classify(elements, model="globbed")
    fields = labels_by_path(result)
    assert fields["outputs.doc"]["restricted"] == ["catalog:fail_closed:too_many_paths"]
    assert len(fields) <= MAX_JSON_PATHS + 1
    out = released(elements, result, masks_above(result, {"public", "internal"}))
    assert not leaked(out, SECRET, KEY_SECRET), out
