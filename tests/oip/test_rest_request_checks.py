"""What the REST binding checks of an ``.../infer`` body before it builds the gRPC request, found
by review (REST front): the inputs' count before any input is built, the top-level keys' JSON
types in plain words, numbers a narrower float type cannot hold, and the binary extension's
header length read as strictly as ``Content-Length``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from labelgate.errors import InvalidInput
from labelgate.oip import rest
from labelgate.oip.tensors import decode_inputs

LIMIT = 1 << 24
INPUT = {"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}


def parse(document: object, header_length: str | None = None, max_inputs: int = 8) -> object:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return rest.infer_request("m", "", body, header_length, max_raw_bytes=LIMIT, max_inputs=max_inputs)[0]


def refusal(document: object, header_length: str | None = None, max_inputs: int = 8) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        parse(document, header_length, max_inputs)
    return refused.value


def test_inputs_are_counted_before_any_is_built() -> None:
    """Not one of these is an input (each would be refused as ``inputs[0] must be a JSON
    object``): the count comes first, so a body of 270,000 inputs builds none of them."""
    refused = refusal({"inputs": [5] * 9})
    assert (refused.reason, refused.message) == (
        "TOO_MANY_INPUTS",
        "the request has 9 inputs; at most 8 (limits.max_inputs)",
    )
    assert len(parse({"inputs": [INPUT] * 8}).inputs) == 8


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"inputs": [INPUT], "outputs": 5}, "outputs must be a list, not a number"),
        ({"inputs": [INPUT], "outputs": True}, "outputs must be a list, not true"),
        ({"inputs": [INPUT], "outputs": False}, "outputs must be a list, not false"),
        ({"inputs": [INPUT], "outputs": 0}, "outputs must be a list, not a number"),
        ({"inputs": [INPUT], "outputs": "ssn"}, "outputs must be a list, not a string"),
        ({"inputs": [INPUT], "outputs": {"name": "ssn"}}, "outputs must be a list, not an object"),
        ({"inputs": 5}, "inputs must be a list, not a number"),
        ({"inputs": None}, "inputs must be a list, not null"),
        ({"outputs": []}, "inputs must be a list, not null"),
        ({"inputs": [INPUT], "parameters": []}, "parameters must be a JSON object, not a list"),
        ({"inputs": [INPUT], "parameters": True}, "parameters must be a JSON object, not true"),
        ({"inputs": [INPUT], "id": 5}, "id must be a string, not a number"),
        ([INPUT], "the request must be a JSON object, not a list"),
    ],
)
def test_a_key_of_the_wrong_json_type_is_named_with_what_it_is(document: object, says: str) -> None:
    """Review: ``"outputs": 5`` was a 400 saying the request held text that is not valid
    Unicode or a number too large (iterating it raised a TypeError the parser took for
    protobuf's); ``"outputs": false`` was read as no outputs."""
    refused = refusal(document)
    assert (refused.reason, refused.message) == ("REST_REQUEST_INVALID", says)


def test_outputs_absent_or_null_name_none() -> None:
    assert list(parse({"inputs": [INPUT]}).outputs) == []
    assert list(parse({"inputs": [INPUT], "outputs": None}).outputs) == []
    assert [o.name for o in parse({"inputs": [INPUT], "outputs": [{"name": "ssn"}]}).outputs] == ["ssn"]


def float_input(datatype: str, *values: float) -> dict:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(values)], "data": list(values)}]}


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("FP32", 1e300),  # the reviewer's: packed as float32 infinity
        ("FP32", -1e39),
        ("FP32", 3.5e38),
        ("FP32", 3.4028235677973366e38),  # the first double that rounds past float32's largest
        ("BF16", 1e300),
        ("BF16", -3.5e38),
        ("FP16", 1e10),
        ("FP16", 65520.0),  # rounds to infinity
        ("FP16", -70000),  # an integer too
    ],
)
def test_a_number_a_narrower_float_type_cannot_hold_is_refused_not_sent_as_infinity(
    datatype: str, value: float
) -> None:
    refused = refusal(float_input(datatype, 0.5, value))
    assert refused.reason == "REST_REQUEST_INVALID"
    assert refused.message.startswith(f"inputs[0] has a number out of {datatype}'s range")


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP32", [3.4028234663852886e38, -3.4028234663852886e38, 1e-50, 0.1]),
        ("BF16", [3.4e38, -1.5, 0.0]),
        ("FP16", [65504.0, 65519.0, -65504, 1e-10]),
        ("FP64", [1e300, -1e308]),
    ],
)
def test_numbers_within_range_pass_and_stay_finite(datatype: str, values: list[float]) -> None:
    (tensor,) = decode_inputs(parse(float_input(datatype, *values)))
    assert len(tensor.values) == len(values) and all(math.isfinite(v) for v in tensor.values)


def test_an_infinity_in_binary_data_is_the_callers_own_bytes() -> None:
    """Only numbers written as JSON are checked: raw bytes go as they are, as over gRPC."""
    raw = np.array([np.inf], dtype="<f4").tobytes()
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}
    ).encode()
    request = parse(header + raw, str(len(header)))
    assert request.raw_input_contents[0] == raw


@pytest.mark.parametrize("length", ["1_3", " 13", "13 ", "+13", "\u0661\u0663", "13.0", "-1", "", "0x0d"])
def test_the_header_length_is_ascii_digits_only_as_content_length_is(length: str) -> None:
    """Review: ``int()`` read ``1_3`` (and Arabic-Indic digits, and spaces) as 13."""
    body = json.dumps({"inputs": [INPUT]}).encode()
    assert len(body) > 13
    refused = refusal(body, length)
    assert (refused.reason, refused.message) == (
        "REST_REQUEST_INVALID",
        "Inference-Header-Content-Length must be a whole number",
    )


def test_a_header_length_in_digits_is_read() -> None:
    body = json.dumps({"inputs": [INPUT]}).encode()
    assert len(parse(body, str(len(body))).inputs) == 1
    assert len(parse(body, "000" + str(len(body))).inputs) == 1
    assert "does not fit" in refusal(body, "9" * 40).message
