"""Elements that are JSON but not a bare object, in outputs whose catalog labels JSON keys.

Only a bare object is classified key by key; a reader also finds the keys of an array of
objects, of an object after a byte-order mark or other whitespace, or of JSON written into a
JSON string. Where the catalog gives some key a label the output does not carry (above it or
below it in rank: the policy need not be monotone), such an element read as plain text would
lose that label: it fails closed instead (review: leaks, JSON shapes).
"""

from __future__ import annotations

import json

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, Detection, DetectorSet, classify_outputs, native, to_policy_fields
from labelgate.classify.fields import OPAQUE_JSON
from labelgate.classify.jsonpaths import NOT_AN_OBJECT, KeyNames
from labelgate.classify.labels import LABELS
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

DETECTORS = DetectorSet.default()
CATALOG = Catalog.from_data(
    {
        "entries": [
            {"model": "m", "path": "outputs.doc", "labels": ["public"]},
            {"model": "m", "path": "outputs.doc[].secret", "labels": ["restricted"]},
            # A key here says less than its output, in rank: still a label the output does
            # not carry (the policy need not be monotone in rank), lost as text.
            {"model": "m", "path": "outputs.flat", "labels": ["confidential"]},
            {"model": "m", "path": "outputs.flat[].secret", "labels": ["internal"]},
            {"model": "m", "path": "outputs.other[].x", "labels": ["public"]},
            # No key here says anything its output does not: nothing to lose as text.
            {"model": "m", "path": "outputs.same", "labels": ["confidential", "internal"]},
            {"model": "m", "path": "outputs.same[].secret", "labels": ["internal"]},
            {"model": "globbed", "path": "outputs.*", "labels": ["public"]},
        ]
    }
)
NOT_OBJECTS = [
    pytest.param(b'[{"secret": "s", "ssn": "078-05-1121"}]', id="array-of-objects"),
    pytest.param(b'["s", "078-05-1121"]', id="array-without-braces"),
    pytest.param(json.dumps(json.dumps({"secret": "s", "ssn": "078-05-1121"})).encode(), id="json-string"),
    pytest.param(b'\xef\xbb\xbf{"secret": "s", "ssn": "078-05-1121"}', id="utf-8-bom"),
    pytest.param('\u00a0{"secret": "s", "ssn": "078-05-1121"}'.encode(), id="no-break-space"),
    pytest.param(b'\x0b{"secret": "s", "ssn": "078-05-1121"}', id="vertical-tab"),
    pytest.param('{"secret": "s", "ssn": "078-05-1121"}'.encode("utf-16-be"), id="utf-16"),
]


def text_tensor(name: str, values: list[bytes], raw: bool) -> Tensor:
    """A BYTES tensor as the gateway decodes it, from raw contents or typed ones."""
    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, [Tensor(name, "BYTES", [len(values)], values)], raw=raw)
    return oip.decode_outputs(reply)[0]


def labels_by_path(classification) -> dict[str, dict[str, list[str]]]:
    return {field["path"]: field["sources"] for field in to_policy_fields(classification.fields)}


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("element", NOT_OBJECTS)
def test_json_that_is_not_a_bare_object_is_opaque_where_a_key_says_more(
    element: bytes, use_native: bool, raw: bool
) -> None:
    tensor = text_tensor("doc", [b"plain 078-05-1121", element, json.dumps({"secret": "s"}).encode()], raw)
    with native.forced(use_native):
        result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    fields = labels_by_path(result)
    assert fields[f"outputs.doc{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{NOT_AN_OBJECT}"] for label in ("internal", "public", "restricted")
    }
    assert list(result.json_elements["doc"]) == [2]
    assert result.spans["doc"][1][-1] == Detection(OPAQUE_JSON, "restricted", 0, len(element))
    assert [hit.detector for hit in result.spans["doc"][0]] == ["us_ssn"], "plain text: in place"


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize(
    ("name", "labels"),
    [("flat", {"confidential", "internal"}), ("other", {"internal", "public"})],
)
@pytest.mark.parametrize("element", NOT_OBJECTS)
def test_json_that_is_not_a_bare_object_is_opaque_where_a_key_says_less(
    element: bytes, name: str, labels: set[str], use_native: bool
) -> None:
    """A key catalogued below its output in rank (``internal`` in a ``confidential`` output)
    is a label the output does not carry: as text the element would lose it, and a policy
    that shows ``confidential`` and not ``internal`` (the default tables' ``restricted`` and
    ``internal`` for a granted ``break-glass``) would show the key's value."""
    tensor = text_tensor(name, [element], raw=True)
    with native.forced(use_native):
        result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    fields = labels_by_path(result)
    assert fields[f"outputs.{name}{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{NOT_AN_OBJECT}"] for label in labels
    }
    assert result.spans[name][0][-1] == Detection(OPAQUE_JSON, max(labels, key=LABELS.index), 0, len(element))


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize(("model", "name"), [("m", "same"), ("globbed", "t"), ("m", "t")])
@pytest.mark.parametrize("element", NOT_OBJECTS)
def test_json_that_is_not_a_bare_object_stays_text_where_no_key_says_more(
    element: bytes, model: str, name: str, use_native: bool
) -> None:
    tensor = text_tensor(name, [element], raw=True)
    with native.forced(use_native):
        result = classify_outputs(model, [tensor], CATALOG, DETECTORS)
    assert f"outputs.{name}{{{OPAQUE_JSON}}}" not in labels_by_path(result)
    assert name not in result.json_elements


def test_a_backend_label_above_every_key_keeps_such_elements_text() -> None:
    tensor = text_tensor("doc", [b'[{"secret": "s"}]'], raw=False)
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS, backend={"doc": {"restricted"}})
    assert f"outputs.doc{{{OPAQUE_JSON}}}" not in labels_by_path(result)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_card_in_a_json_float_with_a_fraction_is_found(use_native: bool) -> None:
    tensor = text_tensor("t", [b'{"n": 4111111111111111.5}', b'{"n": 378282246310005.25}'], raw=True)
    with native.forced(use_native):
        result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    leaf = f"outputs.t[].{KeyNames(CATALOG.key_names('m')).placeholder('n')}"
    assert labels_by_path(result)[leaf]["confidential"] == ["detector:credit_card"]
    assert [[hit.detections for hit in leaves] for leaves in result.json_elements["t"].values()] == [
        [(Detection("credit_card", "confidential", 0, 16),)],
        [(Detection("credit_card", "confidential", 0, 15),)],
    ]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("detectors", [DETECTORS, DetectorSet.none()], ids=["scanned", "unscanned"])
def test_json_without_a_brace_is_opaque_however_the_tensor_is_scanned(
    use_native: bool, detectors: DetectorSet
) -> None:
    # No "{" and no backslash anywhere: the one-call scan of a raw tensor would read it all.
    elements = [b'["s", "078-05-1121"]', b'"078-05-1121"', b"plain 078-05-1121"]
    with native.forced(use_native):
        result = classify_outputs("m", [text_tensor("doc", elements, raw=True)], CATALOG, detectors)
    assert labels_by_path(result)[f"outputs.doc{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{NOT_AN_OBJECT}"] for label in ("internal", "public", "restricted")
    }
    assert [spans[-1].detector for spans in result.spans["doc"].values()][:2] == [OPAQUE_JSON] * 2
