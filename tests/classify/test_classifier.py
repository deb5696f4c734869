from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import (
    Catalog,
    Classifier,
    DetectorSet,
    backend_labels,
    classify_outputs,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.classifier import BACKEND_LABELS_INVALID, MAX_JSON_PATHS
from labelgate.errors import ConfigError, UpstreamError
from labelgate.oip.tensors import Tensor

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
INPUT_SCHEMA = json.loads((REPO / "proto" / "labelgate" / "v1" / "schema" / "input.json").read_text())


def text(name: str, *values: str | bytes) -> Tensor:
    elements = [value.encode() if isinstance(value, str) else value for value in values]
    return Tensor(name, "BYTES", [len(elements)], elements)


def doc(name: str, *objects: object) -> Tensor:
    return text(name, *(json.dumps(item) for item in objects))


def labels_by_path(classification) -> dict[str, dict[str, list[str]]]:
    return {field["path"]: field["sources"] for field in to_policy_fields(classification.fields)}


def test_catalog_labels_and_the_default_for_unknown_outputs() -> None:
    tensors = [
        text("ssn", "n/a"),
        Tensor("risk_score", "FP32", [1], [0.5]),
        Tensor("unlisted", "INT64", [2], [1, 2]),
    ]
    result = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    assert labels_by_path(result) == {
        "outputs.ssn": {"confidential": ["catalog"]},
        "outputs.risk_score": {"internal": ["catalog"]},
        "outputs.unlisted": {"internal": ["default"]},
    }
    assert result.element_counts == {"ssn": 1, "risk_score": 1, "unlisted": 2}
    assert result.labels() == {"confidential", "internal"}


def test_the_default_label_can_be_overridden() -> None:
    result = classify_outputs(
        "m", [Tensor("x", "INT32", [1], [1])], CATALOG, DETECTORS, default_label="restricted"
    )
    assert labels_by_path(result) == {"outputs.x": {"restricted": ["default"]}}


@pytest.mark.parametrize("label", ["public", "secret"])
def test_a_public_or_unknown_default_label_is_refused(label: str) -> None:
    with pytest.raises(ConfigError) as caught:
        classify_outputs("m", [Tensor("x", "INT32", [1], [1])], CATALOG, DETECTORS, default_label=label)
    assert caught.value.reason == "DEFAULT_LABEL_INVALID"


def test_numeric_tensors_are_never_scanned() -> None:
    result = classify_outputs("m", [Tensor("ids", "INT64", [1], [4111111111111111])], CATALOG, DETECTORS)
    assert labels_by_path(result) == {"outputs.ids": {"internal": ["default"]}}
    assert result.spans == {}


def test_detections_in_text_get_their_own_span_field_and_do_not_raise_the_tensor() -> None:
    notes = text("notes", "call 212-555-1234 about 123-45-6789", "nothing here", "ssn 078-05-1121")
    result = classify_outputs("customer-profile", [notes], CATALOG, DETECTORS)
    assert labels_by_path(result) == {
        "outputs.notes": {"internal": ["catalog"]},
        "outputs.notes{phone}": {"internal": ["detector:phone"]},
        "outputs.notes{us_ssn}": {"confidential": ["detector:us_ssn"]},
    }
    spans = result.spans["notes"]
    assert sorted(spans) == [0, 2]
    assert [(hit.detector, notes.values[0][hit.start : hit.end]) for hit in spans[0]] == [
        ("phone", b"212-555-1234"),
        ("us_ssn", b"123-45-6789"),
    ]


def test_backend_labels_join_catalog_labels() -> None:
    tensors = [text("segment", "gold"), text("free", "x")]
    result = classify_outputs(
        "customer-profile",
        tensors,
        CATALOG,
        DETECTORS,
        backend={"segment": {"restricted"}, "free": {"confidential"}},
    )
    assert labels_by_path(result) == {
        "outputs.segment": {"public": ["catalog"], "restricted": ["backend"]},
        "outputs.free": {"confidential": ["backend"]},
    }


def test_json_elements_are_classified_by_nested_key() -> None:
    catalog = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.profile[].contact.phone", "labels": ["confidential"]}]}
    )
    profile = doc(
        "profile",
        {
            "name": "Ann",
            "contact": {"email": "ann@example.com", "phone": "n/a"},
            "cards": [{"pan": 4111111111111111}],
        },
        {"name": "Bob", "tags": ["vip", "123-45-6789"], "empty": {}, "none": None},
    )
    result = classify_outputs("m", [profile], catalog, DETECTORS)
    assert labels_by_path(result) == {
        "outputs.profile": {"internal": ["default"]},
        "outputs.profile[].name": {"internal": ["default"]},
        "outputs.profile[].contact.email": {"internal": ["detector:email"]},
        "outputs.profile[].contact.phone": {"confidential": ["catalog"]},
        "outputs.profile[].cards[].pan": {"confidential": ["detector:credit_card"]},
        "outputs.profile[].tags[]": {"confidential": ["detector:us_ssn"]},
        "outputs.profile[].none": {"internal": ["default"]},
    }
    assert result.spans == {}
    leaves = result.json_elements["profile"]
    assert [(leaf.location, leaf.path) for leaf in leaves[0]] == [
        (("contact", "email"), "outputs.profile[].contact.email"),
        (("cards", 0, "pan"), "outputs.profile[].cards[].pan"),
    ]
    assert [(leaf.location, [hit.detector for hit in leaf.detections]) for leaf in leaves[1]] == [
        (("tags", 1), ["us_ssn"])
    ]


@pytest.mark.parametrize(
    "element",
    [
        b'{"123-45-6789": "key holds an SSN"}',
        b'{"ssn": "123-45-6789", "ssn": "x"}',
        b'{"truncated": "123-45-6789"',
        b'["an array", "123-45-6789"]',
        b'{"deep": ' * 70 + b'"123-45-6789"' + b"}" * 70,
    ],
)
def test_elements_that_are_not_plain_json_objects_are_scanned_as_text(element: bytes) -> None:
    result = classify_outputs("m", [text("t", element)], CATALOG, DETECTORS)
    assert "t" not in result.json_elements
    assert "outputs.t{us_ssn}" in labels_by_path(result)
    assert [element[hit.start : hit.end] for hit in result.spans["t"][0]] == [b"123-45-6789"]


@pytest.mark.parametrize(
    ("opening", "is_json"),
    [(b"", True), (b" ", True), (b"\t\n\r", True), (b"\x0b", False), (b"\x0c", False), (b"x", False)],
)
def test_elements_are_read_as_json_only_when_they_open_an_object(opening: bytes, is_json: bool) -> None:
    element = opening + b'{"id": "123-45-6789"}'
    result = classify_outputs("m", [text("t", b"no braces here", element)], CATALOG, DETECTORS)
    assert ("t" in result.json_elements) is is_json
    assert ("outputs.t[].id" in labels_by_path(result)) is is_json
    assert ("outputs.t{us_ssn}" in labels_by_path(result)) is not is_json


def test_text_and_json_elements_mix_in_one_tensor() -> None:
    tensor = text(
        "t", "ssn 123-45-6789", '{"card": "4111 1111 1111 1111"}', "mail a@example.com", "{not json"
    )
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert list(result.json_elements["t"]) == [1]
    assert {index: [hit.detector for hit in hits] for index, hits in result.spans["t"].items()} == {
        0: ["us_ssn"],
        2: ["email"],
    }
    assert list(result.spans["t"]) == [0, 2]  # in element order, whatever the detector order


def test_too_many_json_paths_fall_back_to_text() -> None:
    objects = [{f"user_{i}": "a@example.com"} for i in range(MAX_JSON_PATHS + 1)]
    result = classify_outputs("m", [doc("t", *objects)], CATALOG, DETECTORS)
    assert "t" not in result.json_elements
    assert set(labels_by_path(result)) == {"outputs.t", "outputs.t{email}"}


def test_policy_fields_match_the_input_schema() -> None:
    tensors = [text("notes", "123-45-6789"), doc("doc", {"a": {"b": [1, "x@example.com"]}})]
    result = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    schema = {"$defs": INPUT_SCHEMA["$defs"], "type": "array", "items": {"$ref": "#/$defs/field"}}
    jsonschema.validate(result.policy_fields(), schema)
    labels_schema = {"$defs": INPUT_SCHEMA["$defs"], **INPUT_SCHEMA["properties"]["labels"]}
    jsonschema.validate(sorted(union_labels(result.fields)), labels_schema)


def test_classification_is_deterministic() -> None:
    tensors = [text("notes", "a@example.com 123-45-6789"), doc("doc", {"z": 1, "a": "10.0.0.1"})]
    first = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    second = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    assert first.policy_fields() == second.policy_fields()
    assert first.spans == second.spans


def test_the_classifier_object_wires_both_phases() -> None:
    classifier = Classifier(CATALOG, DETECTORS)
    assert [field.path for field in classifier.expected_fields("customer-profile", ["ssn"])] == [
        "outputs.ssn"
    ]
    result = classifier.classify_response("customer-profile", [text("ssn", "123-45-6789")])
    assert set(labels_by_path(result)) == {"outputs.ssn", "outputs.ssn{us_ssn}"}


def _response(shared: object = None, **per_output: object) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="m")
    if shared is not None:
        response.parameters["labelgate.labels"].CopyFrom(_parameter(shared))
    for name in ("a", "b"):
        output = response.outputs.add(name=name, datatype="BYTES", shape=[0])
        if name in per_output:
            output.parameters["labelgate.labels"].CopyFrom(_parameter(per_output[name]))
    return response


def _parameter(value: object) -> pb.InferParameter:
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter(int64_param=int(value))  # type: ignore[call-overload]


def test_backend_labels_come_from_output_and_response_parameters() -> None:
    assert backend_labels(_response()) == {}
    assert backend_labels(_response(a="confidential, restricted")) == {"a": {"confidential", "restricted"}}
    assert backend_labels(_response("internal", b="public")) == {
        "a": {"internal"},
        "b": {"internal", "public"},
    }
    assert backend_labels(_response(a=" , ")) == {}


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (_response(a="confidential,secret"), "unknown labels ['secret']"),
        (_response(3), "must be a string"),
    ],
)
def test_bad_backend_labels_are_an_upstream_error(response: pb.ModelInferResponse, problem: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        backend_labels(response)
    assert caught.value.reason == BACKEND_LABELS_INVALID
    assert problem in caught.value.message
