from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import jsonschema
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import (
    Catalog,
    Classifier,
    Detection,
    DetectorSet,
    backend_labels,
    classify_outputs,
    to_policy_fields,
    union_labels,
)
from labelgate.classify.classifier import BACKEND_LABELS_INVALID
from labelgate.classify.fields import OPAQUE_JSON
from labelgate.classify.json_elements import KEY_DETECTED, MAX_JSON_PATHS, TOO_MANY_PATHS
from labelgate.classify.jsonpaths import DUPLICATE_KEY, INVALID_JSON, TOO_DEEP, KeyNames
from labelgate.errors import ConfigError, UpstreamError
from labelgate.oip.tensor import Tensor

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
INPUT_SCHEMA = json.loads((REPO / "proto" / "labelgate" / "v1" / "schema" / "input.json").read_text())
SECRET = b"0123456789abcdef0123456789abcdef"


def key(name: str, catalog: Catalog = CATALOG, model: str = "m") -> str:
    """How an uncatalogued key is spelled in the paths ``classify_outputs`` writes by default."""
    return KeyNames(catalog.key_names(model)).placeholder(name)


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


def test_numeric_tensors_are_scanned_for_the_numbers_they_hold() -> None:
    # tests/classify/test_numbers.py has the rest; a number no detector reads adds nothing.
    result = classify_outputs("m", [Tensor("ids", "INT64", [2], [4111111111111111, 7])], CATALOG, DETECTORS)
    assert labels_by_path(result) == {
        "outputs.ids": {"internal": ["default"]},
        "outputs.ids{credit_card}": {"confidential": ["detector:credit_card"]},
    }
    plain = classify_outputs("m", [Tensor("ids", "INT64", [1], [4111111111111112])], CATALOG, DETECTORS)
    assert labels_by_path(plain) == {"outputs.ids": {"internal": ["default"]}}
    assert plain.spans == {}


def test_detections_in_text_get_their_own_span_field_and_do_not_raise_the_tensor() -> None:
    notes = text("notes", "call 212-555-1234 about 123-45-6789", "nothing here", "ssn 078-05-1121")
    result = classify_outputs("customer-profile", [notes], CATALOG, DETECTORS)
    # The phone number is not scanned for: its label (internal) says no more than the output's.
    assert labels_by_path(result) == {
        "outputs.notes": {"internal": ["catalog"]},
        "outputs.notes{us_ssn}": {"confidential": ["detector:us_ssn"]},
    }
    spans = result.spans["notes"]
    assert sorted(spans) == [0, 2]
    assert [(hit.detector, notes.values[0][hit.start : hit.end]) for hit in spans[0]] == [
        ("us_ssn", b"123-45-6789"),
    ]


def test_every_detector_but_those_of_an_outputs_own_labels_scans_it() -> None:
    """Less sensitive detectors too: the default tables show ``restricted`` to a granted
    ``break-glass`` caller and never ``confidential``, so an SSN inside a ``restricted`` output
    went out in clear when only detectors above its label ran (found by review)."""
    line = "call 212-555-1234 about 123-45-6789, card 4111 1111 1111 1111"
    tensors = [text("notes", line), text("ssn", line), text("account_secret", line), text("free", line)]
    found = {
        path: sorted(sources[label][0] for label in sources)
        for path, sources in labels_by_path(
            classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
        ).items()
        if "{" in path
    }
    # notes is internal: the phone number says no more than that; ssn is confidential: the SSN
    # and the card say no more either; account_secret is restricted: all three are found.
    # An uncatalogued output gets the default label (internal).
    assert set(found) == {
        "outputs.notes{us_ssn}",
        "outputs.notes{credit_card}",
        "outputs.ssn{phone}",
        "outputs.account_secret{phone}",
        "outputs.account_secret{us_ssn}",
        "outputs.account_secret{credit_card}",
        "outputs.free{us_ssn}",
        "outputs.free{credit_card}",
    }
    public = classify_outputs("sentiment", [text("label", line)], CATALOG, DETECTORS)
    assert {p for p in labels_by_path(public) if "{" in p} == {
        "outputs.label{phone}",
        "outputs.label{us_ssn}",
        "outputs.label{credit_card}",
    }, "a public output is scanned by every detector"


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
        "outputs.free": {"confidential": ["backend"], "internal": ["default"]},
    }


def test_the_backend_cannot_declare_an_uncatalogued_output_below_the_default() -> None:
    # An upstream that says its own output is public: the catalog's default still stands.
    for model in ("customer-profile", "a-model-the-catalog-does-not-know"):
        result = classify_outputs(
            model, [text("memo", "Q3 list")], CATALOG, DETECTORS, backend={"memo": {"public"}}
        )
        assert labels_by_path(result)["outputs.memo"] == {"internal": ["default"], "public": ["backend"]}


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
    # contact and phone are catalogued: only they are spelled verbatim.
    name, email, cards, pan = (key(k, catalog) for k in ("name", "email", "cards", "pan"))
    assert labels_by_path(result) == {
        "outputs.profile": {"internal": ["default"]},
        f"outputs.profile[].{name}": {"internal": ["default"]},
        # The email leaf is not scanned for emails: internal says no more than its own label.
        f"outputs.profile[].contact.{email}": {"internal": ["default"]},
        "outputs.profile[].contact.phone": {"confidential": ["catalog"]},
        # A detector adds to an uncatalogued leaf's default label, never replaces it.
        f"outputs.profile[].{cards}[].{pan}": {
            "confidential": ["detector:credit_card"],
            "internal": ["default"],
        },
        f"outputs.profile[].{key('tags', catalog)}[]": {
            "confidential": ["detector:us_ssn"],
            "internal": ["default"],
        },
        f"outputs.profile[].{key('none', catalog)}": {"internal": ["default"]},
    }
    assert result.spans == {}
    leaves = result.json_elements["profile"]
    assert [(leaf.location, leaf.path) for leaf in leaves[0]] == [
        (("cards", 0, "pan"), f"outputs.profile[].{cards}[].{pan}"),
    ]
    assert [(leaf.location, [hit.detector for hit in leaf.detections]) for leaf in leaves[1]] == [
        (("tags", 1), ["us_ssn"])
    ]


def test_a_json_array_is_scanned_as_text() -> None:
    element = b'["an array", "123-45-6789"]'
    result = classify_outputs("m", [text("t", element)], CATALOG, DETECTORS)
    assert "t" not in result.json_elements
    assert set(labels_by_path(result)) == {"outputs.t", "outputs.t{us_ssn}"}
    assert [element[hit.start : hit.end] for hit in result.spans["t"][0]] == [b"123-45-6789"]


NESTED_CATALOG = Catalog.from_data(
    {
        "entries": [
            {"model": "m", "path": "outputs.doc", "labels": ["internal"]},
            {"model": "m", "path": "outputs.doc[].contact.email", "labels": ["confidential"]},
            {"model": "m", "path": "outputs.doc[].secret", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.other[].x", "labels": ["public"]},
        ]
    }
)
OPAQUE_CASES = [
    pytest.param(b'{"123-45-6789": "an SSN as a key", "secret": "s"}', KEY_DETECTED, id="key"),
    pytest.param(b'{"ssn": "123-45-6789", "ssn": "x", "secret": "s"}', DUPLICATE_KEY, id="duplicate"),
    pytest.param(b'{"secret": "s", "truncated": "123-45-6789"', INVALID_JSON, id="invalid"),
    pytest.param(b'{"a": ' * 70 + b'"123-45-6789"' + b"}" * 70, TOO_DEEP, id="deep"),
    pytest.param(b'{"secret": "\\u0031\\u0032\\u0033-45-6789", "secret": 1}', DUPLICATE_KEY, id="escaped"),
    pytest.param(b'{"secret": "s", "note": "ssn\\n123-45-6789"', INVALID_JSON, id="newline-escape"),
]


@pytest.mark.parametrize(("element", "reason"), OPAQUE_CASES)
def test_elements_not_classifiable_key_by_key_fail_closed(element: bytes, reason: str) -> None:
    tensor = text("doc", "plain 078-05-1121", element, json.dumps({"secret": "fine"}))
    result = classify_outputs("m", [tensor], NESTED_CATALOG, DETECTORS)
    fields = labels_by_path(result)
    # Every label the catalog gives at or under outputs.doc (not outputs.other's public).
    assert fields[f"outputs.doc{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{reason}"] for label in ("confidential", "internal", "restricted")
    }
    assert fields["outputs.doc{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    assert list(result.json_elements["doc"]) == [2]
    # The opaque element is spanned whole, by what was found in it and by its own field.
    assert result.spans["doc"][1] == [
        Detection("us_ssn", "confidential", 0, len(element)),
        Detection(OPAQUE_JSON, "restricted", 0, len(element)),
    ]
    assert [hit.detector for hit in result.spans["doc"][0]] == ["us_ssn"]  # plain text: in place


def test_the_fail_closed_labels_include_the_default() -> None:
    catalog = Catalog.from_data({"entries": [{"model": "m", "path": "outputs.*", "labels": ["public"]}]})
    result = classify_outputs("m", [text("t", "{broken")], catalog, DETECTORS)
    assert labels_by_path(result)[f"outputs.t{{{OPAQUE_JSON}}}"] == {
        "internal": ["catalog:fail_closed:invalid_json"],
        "public": ["catalog:fail_closed:invalid_json"],
    }
    assert result.spans["t"] == {0: [Detection(OPAQUE_JSON, "internal", 0, 7)]}


@pytest.mark.parametrize(
    ("opening", "is_json"),
    [(b"", True), (b" ", True), (b"\t\n\r", True), (b"\x0b", False), (b"\x0c", False), (b"x", False)],
)
def test_elements_are_read_as_json_only_when_they_open_an_object(opening: bytes, is_json: bool) -> None:
    element = opening + b'{"id": "123-45-6789"}'
    result = classify_outputs("m", [text("t", b"no braces here", element)], CATALOG, DETECTORS)
    assert ("t" in result.json_elements) is is_json
    assert (f"outputs.t[].{key('id')}" in labels_by_path(result)) is is_json
    assert ("outputs.t{us_ssn}" in labels_by_path(result)) is not is_json


def test_text_and_json_elements_mix_in_one_tensor() -> None:
    tensor = text(
        "t",
        "ssn 123-45-6789",
        '{"card": "4111 1111 1111 1111"}',
        "iban DE89 3704 0044 0532 0130 00",
        "{not json",
    )
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert list(result.json_elements["t"]) == [1]
    assert {index: [hit.detector for hit in hits] for index, hits in result.spans["t"].items()} == {
        0: ["us_ssn"],
        2: ["iban"],
        3: [OPAQUE_JSON],
    }
    assert list(result.spans["t"]) == [0, 2, 3]  # in element order, whatever the detector order


def test_too_many_json_paths_make_every_json_element_opaque() -> None:
    objects = [{f"user_{i}": "a@example.com"} for i in range(MAX_JSON_PATHS + 1)]
    tensor = doc("doc", *objects, {"secret": "s"})
    result = classify_outputs("m", [tensor, doc("other", {"x": 1})], NESTED_CATALOG, DETECTORS)
    assert "doc" not in result.json_elements
    fields = labels_by_path(result)
    assert {path for path in fields if path.startswith("outputs.doc")} == {
        "outputs.doc",
        "outputs.doc{email}",
        f"outputs.doc{{{OPAQUE_JSON}}}",
    }
    assert fields[f"outputs.doc{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{TOO_MANY_PATHS}"]
        for label in ("confidential", "internal", "restricted")
    }
    assert len(result.spans["doc"]) == MAX_JSON_PATHS + 2
    assert list(result.json_elements["other"]) == [0]  # the limit is per tensor


def test_a_wide_object_alone_exceeds_the_limit() -> None:
    wide = {f"k{i}": i for i in range(300)} | {"secret": "s"}
    result = classify_outputs("m", [doc("doc", wide)], NESTED_CATALOG, DETECTORS)
    assert labels_by_path(result)[f"outputs.doc{{{OPAQUE_JSON}}}"] == {
        label: [f"catalog:fail_closed:{TOO_MANY_PATHS}"]
        for label in ("confidential", "internal", "restricted")
    }


@pytest.mark.parametrize(
    "element",
    [
        b"call \\u0031\\u0032\\u0033-45-6789 now",
        b'["\\u0031\\u0032\\u0033-45-6789"]',
        b"ssn\\n123-45-6789",
        b'{"note": "{\\"ssn\\": \\"\\\\u0031\\\\u0032\\\\u0033-45-6789\\"}"}',
    ],
    ids=["text", "array", "newline", "json-in-a-json-string"],
)
def test_escaped_values_are_found_and_span_what_holds_them(element: bytes) -> None:
    result = classify_outputs("m", [text("t", element)], CATALOG, DETECTORS)
    assert labels_by_path(result).get("outputs.t{us_ssn}") == {"confidential": ["detector:us_ssn"]} or (
        labels_by_path(result).get(f"outputs.t[].{key('note')}")
        == {"confidential": ["detector:us_ssn"], "internal": ["default"]}
    )
    if "t" in result.json_elements:  # the JSON string leaf is spanned whole
        [leaf] = result.json_elements["t"][0]
        assert [(hit.start, hit.end) for hit in leaf.detections] == [
            (0, len('{"ssn": "\\u0031\\u0032\\u0033-45-6789"}'))
        ]
    else:
        assert result.spans["t"][0] == [Detection("us_ssn", "confidential", 0, len(element))]


def test_json_escapes_in_values_of_classified_elements_are_decoded_by_the_parser() -> None:
    element = b'{"ssn": "\\u0031\\u0032\\u0033-45-6789", "note": "x\\/y \\"078-05-1121\\""}'
    result = classify_outputs("m", [text("t", element)], CATALOG, DETECTORS)
    leaves = result.json_elements["t"][0]
    assert [(leaf.location, [hit.detector for hit in leaf.detections]) for leaf in leaves] == [
        (("ssn",), ["us_ssn"]),
        (("note",), ["us_ssn"]),
    ]


def test_keys_never_reach_a_path_verbatim_unless_catalogued() -> None:
    named = {"sk_live_abc123": {"Ann Smith": "x"}, "contact": {"email": "e", "Bob": 2}}
    carded = {"4111111111111111": "x"}  # a detector fires on the key: opaque
    result = classify_outputs("m", [doc("doc", named, carded)], NESTED_CATALOG, DETECTORS)
    paths = [field["path"] for field in result.policy_fields()]
    assert not any(secret in path for path in paths for secret in ("sk_live", "4111", "Ann", "Bob"))
    assert paths == [
        "outputs.doc",
        f"outputs.doc{{{OPAQUE_JSON}}}",
        "outputs.doc{credit_card}",
        f"outputs.doc[].{key('sk_live_abc123', NESTED_CATALOG)}.{key('Ann Smith', NESTED_CATALOG)}",
        "outputs.doc[].contact.email",
        f"outputs.doc[].contact.{key('Bob', NESTED_CATALOG)}",
    ]


def test_placeholders_are_stable_per_secret_and_differ_across_secrets() -> None:
    tensor = doc("doc", {"sk_live_abc123": "x"})

    def paths(secret: bytes) -> list[str]:
        result = Classifier(CATALOG, DETECTORS, key_secret=secret).classify_response("m", [tensor])
        return [field.path for field in result.fields]

    derived = hmac.new(SECRET, b"labelgate json key names", hashlib.sha512).digest()  # placeholders' own
    expected = "<key:" + hmac.new(derived, b"sk_live_abc123", hashlib.sha256).hexdigest()[:8] + ">"
    assert paths(SECRET) == paths(SECRET) == ["outputs.doc", f"outputs.doc[].{expected}"]
    assert paths(b"another secret, 32 bytes long...") != paths(SECRET)


def test_glob_catalog_entries_match_placeholder_paths() -> None:
    catalog = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.doc[].*", "labels": ["confidential"]}]}
    )
    result = classify_outputs("m", [doc("doc", {"sk_live_abc123": "x"})], catalog, DETECTORS)
    assert labels_by_path(result)[f"outputs.doc[].{key('sk_live_abc123', catalog)}"] == {
        "confidential": ["catalog"]
    }


def test_policy_fields_match_the_input_schema() -> None:
    tensors = [text("notes", "123-45-6789"), doc("doc", {"a": {"b": [1, "x@example.com"]}})]
    result = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    schema = {"$defs": INPUT_SCHEMA["$defs"], "type": "array", "items": {"$ref": "#/$defs/field"}}
    jsonschema.validate(result.policy_fields(), schema)
    labels_schema = {"$defs": INPUT_SCHEMA["$defs"], **INPUT_SCHEMA["properties"]["labels"]}
    jsonschema.validate(sorted(union_labels(result.fields)), labels_schema)


def test_policy_fields_with_placeholders_and_opaque_elements_match_the_input_schema() -> None:
    tensors = [text("doc", '{"sk_live_abc123": "x"}', "{broken 123-45-6789")]
    result = classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
    schema = {"$defs": INPUT_SCHEMA["$defs"], "type": "array", "items": {"$ref": "#/$defs/field"}}
    jsonschema.validate(result.policy_fields(), schema)


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
    result = classifier.classify_response("customer-profile", [text("notes", "123-45-6789")])
    assert set(labels_by_path(result)) == {"outputs.notes", "outputs.notes{us_ssn}"}


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
        (_response(a="confidential,secret"), "of output #0 names 1 unknown label(s)"),
        (_response(3), "must be a string"),
    ],
)
def test_bad_backend_labels_are_an_upstream_error(response: pb.ModelInferResponse, problem: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        backend_labels(response)
    assert caught.value.reason == BACKEND_LABELS_INVALID
    assert problem in caught.value.message
    assert "secret" not in caught.value.message, "the upstream's text is not quoted back"


# --- JSON shapes are remembered per Classifier: reuse must never change a result ----------

MIXED_ROWS = [
    {"contact": {"ssn": "123-45-6789", "email": "a@example.com"}, "n": 1},
    "plain text with 4111 1111 1111 1111",
    {"contact": {"ssn": "n/a", "email": "b@example.com"}, "n": 2},
    {"contact": {"email": "c@example.com", "ssn": "987-65-4321"}, "n": 3},  # keys in another order
    {"contact": {"ssn": "555-12-3456", "email": "d@example.com"}, "n": "4111111111111111"},
    {"4111111111111111": "a detector fires on this key"},
    {"contact": {"ssn": "123-45-6789", "email": "a@example.com"}, "n": 1, "n2": {"x": [1, "2"]}},
    {"rows": [{"iban": "DE89370400440532013000"}, {"iban": "none"}]},
    {"rows": [{"iban": "none"}]},
]


def mixed_tensor(rows: list[object]) -> Tensor:
    return text("doc", *(row if isinstance(row, str) else json.dumps(row) for row in rows))


def outcome(result) -> tuple[object, ...]:
    return (to_policy_fields(result.fields), result.spans, result.json_elements, result.element_counts)


def test_a_second_call_reusing_shapes_classifies_exactly_as_the_first() -> None:
    classifier = Classifier(NESTED_CATALOG, DETECTORS, key_secret=SECRET)
    tensor = mixed_tensor(MIXED_ROWS)
    first = classifier.classify_response("m", [tensor])
    second = classifier.classify_response("m", [tensor])
    fresh = Classifier(NESTED_CATALOG, DETECTORS, key_secret=SECRET).classify_response("m", [tensor])
    assert outcome(first) == outcome(second) == outcome(fresh)
    assert first.spans["doc"][5][-1].detector == OPAQUE_JSON  # the detected key: opaque
    # The same shapes in another order and mixed with new ones: each element as if alone.
    reordered = mixed_tensor(list(reversed(MIXED_ROWS)))
    again = classifier.classify_response("m", [reordered])
    assert outcome(again) == outcome(
        Classifier(NESTED_CATALOG, DETECTORS, key_secret=SECRET).classify_response("m", [reordered])
    )
    for position, row in enumerate(MIXED_ROWS):  # and element by element, alone
        alone = classifier.classify_response("m", [mixed_tensor([row])])
        leaves = first.json_elements["doc"].get(position)
        assert alone.json_elements.get("doc", {}).get(0) == leaves


def test_a_catalog_revision_never_reuses_the_previous_shapes() -> None:
    tensor = mixed_tensor(MIXED_ROWS[:3])
    before = Classifier(Catalog.from_data({"entries": []}), DETECTORS, key_secret=SECRET)
    revised = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.doc[].contact.email", "labels": ["confidential"]}]}
    )
    assert "outputs.doc[].contact.email" not in labels_by_path(before.classify_response("m", [tensor]))
    after = Classifier(revised, DETECTORS, key_secret=SECRET)  # what a bundle with it builds
    paths = labels_by_path(after.classify_response("m", [tensor]))
    assert paths["outputs.doc[].contact.email"] == {"confidential": ["catalog"]}
    placeholder = KeyNames((), SECRET).placeholder("contact")
    assert not any(path.startswith(f"outputs.doc[].{placeholder}") for path in paths)


def test_every_element_of_a_shape_with_a_detected_key_is_opaque_and_only_those() -> None:
    rows = [{"4111111111111111": "x", "a": 1}, {"a": 1}, {"4111111111111111": "y", "a": 2}, {"a": 3}]
    result = classify_outputs("m", [mixed_tensor(rows)], NESTED_CATALOG, DETECTORS)
    assert sorted(result.json_elements["doc"]) == [1, 3]
    assert sorted(result.spans["doc"]) == [0, 2]
    assert labels_by_path(result)["outputs.doc{opaque-json}"] == {  # every label under doc
        label: [f"catalog:fail_closed:{KEY_DETECTED}"] for label in ("confidential", "internal", "restricted")
    }


def test_an_output_shape_whose_dimensions_read_as_a_value_fails_the_reply() -> None:
    # Masks change values, never the layout: dimensions of 1 (or a factorisation of the
    # element count) carry digits to the caller through any mask.
    card = [4] + [1] * 15  # four elements, reading 4111111111111111
    ssn = [123, 45, 6789]  # read with hyphens: 123-45-6789
    for shape in (card, ssn, [1, 4111, 1111, 1111, 1111]):
        tensor = Tensor("flag", "BOOL", shape, [])  # the shape alone is read here
        with pytest.raises(UpstreamError) as refused:
            classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert refused.value.reason == "OUTPUT_SHAPE_DETECTED", shape
        assert "4111" not in refused.value.message and "6789" not in refused.value.message
    for fine in ([100], [1, 100, 7], [2, 3, 4, 5, 6, 7], [1] * 12, [16, 1024, 4096]):
        classify_outputs("customer-profile", [Tensor("flag", "BOOL", fine, [])], CATALOG, DETECTORS)


def test_an_output_name_holding_what_a_detector_finds_fails_the_reply() -> None:
    # The upstream names its outputs: names travel to the caller and into paths, logs and records.
    for name in ("card_4111111111111111", "bob.secret@example.com"):
        with pytest.raises(UpstreamError) as refused:
            classify_outputs("customer-profile", [text(name, "x")], CATALOG, DETECTORS)
        assert refused.value.reason == "OUTPUT_NAME_DETECTED"
        assert name not in refused.value.message
    clean: set[tuple[str, ...]] = set()
    classify_outputs("customer-profile", [text("notes", "x")], CATALOG, DETECTORS, clean_names=clean)
    assert clean == {("notes",)}, "a name set that passed is not scanned again"


def test_a_value_split_over_output_names_fails_the_reply() -> None:
    # Each name alone holds no value; printed together, in the reply's order, they do.
    split = (
        ["ssn 123", "45", "6789"],
        ["card 4111", "1111", "1111", "1111"],
        ["mail ceo@acme", ".io"],
        ["ssn 123\t45", "6789"],  # a TSV header
        ["4111\t1111", "1111\t1111"],
    )
    for names in split:
        tensors = [text(name, "x") for name in names]
        with pytest.raises(UpstreamError) as refused:
            classify_outputs("customer-profile", tensors, CATALOG, DETECTORS)
        assert refused.value.reason == "OUTPUT_NAME_DETECTED", names
        assert not any(name in refused.value.message for name in names)
    ordinary = [
        "output_0",
        "output_1",
        "logits",
        "scores_2024",
        "ids",
        "v1",
        "v2",
        "2048",
        "4096",
        "8192",
        "16384",
    ]
    classify_outputs("customer-profile", [text(name, "x") for name in ordinary], CATALOG, DETECTORS)
