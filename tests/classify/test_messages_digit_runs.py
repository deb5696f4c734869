"""Repeated integer fields of a typed reply read as digits, one value after another.

An upstream answering ``shape: [123, 45, 6789]`` or ``dims: [4111, 1111, 1111, 1111]`` hands
the caller an SSN or a card however a client prints the list (run together, or joined by a
space, a hyphen or a comma), as an inference reply's output shape does
(``classifier.check_output_shapes``). Such a field is found by the detector, gets its label,
and a mask zeroes every value of it. gRPC and REST release the same classified message (REST
writes it as JSON afterwards): what is found here is what both transports mask.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.enforce import apply_message_masks
from tests.classify.codes_proto import Codes

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"
SSN_PARTS = [123, 45, 6789]
CARD_PARTS = [4111, 1111, 1111, 1111]


def found(message) -> dict[str, dict[str, list[str]]]:
    result = classify_message(message, CATALOG, DETECTORS)
    return {field["path"]: field["sources"] for field in to_policy_fields(result.fields)}


def detected(message) -> set[str]:
    return {path for path in found(message) if "{" in path}


def test_integers_are_read_as_a_caller_prints_them() -> None:
    from labelgate.classify.messages import RUN_DIGITS, digit_runs

    assert digit_runs(SSN_PARTS) == [b"123456789", b"123 45 6789", b"123-45-6789", b"123,45,6789"]
    # One value is scanned as itself; too few digits for any detector say nothing.
    assert digit_runs([123456789]) == []
    assert digit_runs([1, 100, 7]) == [] and len("11007") < RUN_DIGITS


def test_metadata_shapes_spelling_an_ssn_or_a_card_are_found() -> None:
    metadata = pb.ModelMetadataResponse(name="m", platform="p", versions=["1"])
    metadata.outputs.add(name="out", datatype="BYTES", shape=SSN_PARTS)
    metadata.inputs.add(name="card", datatype="BYTES", shape=CARD_PARTS)
    by_path = found(metadata)
    assert by_path["outputs[].shape[]{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    assert by_path["inputs[].shape[]{credit_card}"] == {"confidential": ["detector:credit_card"]}


def test_config_dims_and_versions_spelling_an_ssn_or_a_card_are_found() -> None:
    config = ext.ModelConfig(name="m", platform="p")
    config.output.add(name="out", data_type=ext.TYPE_STRING, dims=SSN_PARTS)
    config.input.add(name="in", data_type=ext.TYPE_STRING, dims=CARD_PARTS)
    config.version_policy.specific.versions.extend(SSN_PARTS)
    assert {
        "config.output[].dims[]{us_ssn}",
        "config.input[].dims[]{credit_card}",
        "config.version_policy.specific.versions[]{us_ssn}",
    } <= detected(ext.ModelConfigResponse(config=config))


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([123, -45, -6789], id="negative-values-bring-hyphens"),
        pytest.param([7, 123, 45, 6789, 8], id="inside-a-longer-list"),
        pytest.param([41, 11111111, 111111], id="run-together"),
    ],
)
def test_a_value_split_over_integers_is_found_wherever_it_starts(values: list[int]) -> None:
    assert detected(Codes(s64=values)) & {"s64[]{us_ssn}", "s64[]{credit_card}"}


def test_a_mask_zeroes_every_value_of_the_field() -> None:
    message = Codes(i64=CARD_PARTS, i32=SSN_PARTS, lines=["kept"])
    result = classify_message(message, CATALOG, DETECTORS)
    assert {leaf.location for leaf in result.message_spans} == {
        *(("i64", index) for index in range(4)),
        *(("i32", index) for index in range(3)),
    }
    masks = [
        {"path": "i64[]{credit_card}", "strategy": "redact", "params": {}},
        {"path": "i32[]{us_ssn}", "strategy": "redact", "params": {}},
    ]
    released = apply_message_masks(message, result, masks, KEY)
    assert list(released.i64) == [0, 0, 0, 0] and list(released.i32) == [0, 0, 0]
    assert list(released.lines) == ["kept"]


def test_a_card_within_one_number_masks_that_number_only() -> None:
    # It is found as a number (and masked as one): the list read whole adds nothing.
    result = classify_message(Codes(i64=[1, 4111111111111111, 2]), CATALOG, DETECTORS)
    assert [leaf.location for leaf in result.message_spans] == [("i64", 1)]


def test_a_maps_integer_values_spelling_an_ssn_label_the_map() -> None:
    # In key order (numbers by value) the values read 123-45-6789.
    message = Codes(by_id={30: 6789, 10: 123, 20: 45})
    assert found(message)["by_id"]["confidential"] == ["detector:us_ssn"]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Codes(i64=[1, 3, 224, 224], u64=[4, 8, 16, 32]), id="shapes"),
        pytest.param(Codes(i32=list(range(1, 10))), id="versions"),
        pytest.param(Codes(i64=[1001, 1002, 1003, 1004, 1005, 1006]), id="ids"),
        pytest.param(Codes(by_id={1: 100, 2: 200, 3: 300, 4: 400}), id="map"),
    ],
)
def test_ordinary_integer_lists_are_not_data(message) -> None:
    result = classify_message(message, CATALOG, DETECTORS)
    assert not result.message_spans and not detected(message)
