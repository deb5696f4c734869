"""A ``{detector}`` mask for what was found in a numeric tensor zeroes the whole tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import profile_response
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs
from labelgate.classify.fields import Classification
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "rego"
CATALOG = Catalog.from_file(POLICY_DIR / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"numeric-masks-key-0123456789abcd"
CARD = 4111111111111111
TEXT = b"ssn is 123-45-6789 card 4111111111111111"
MODEL = "uncatalogued-model"


def mask(path: str, strategy: str = "partial", **params: object) -> dict[str, Any]:
    return {"path": path, "strategy": strategy, "params": params or {"keep_last": 4}}


def masked(tensors: list[Tensor], *masks: dict[str, Any]) -> list[Tensor]:
    classification = classify_outputs(MODEL, tensors, CATALOG, DETECTORS)
    return apply_masks(tensors, classification, list(masks), KEY)


@pytest.mark.parametrize("strategy", ["partial", "redact", "hash", "null"])
def test_a_mask_on_a_card_in_an_int64_zeroes_the_tensor(strategy: str) -> None:
    ids = Tensor("ids", "INT64", [1, 2], [CARD, 123456789])
    (result,) = masked([ids], mask("outputs.ids{credit_card}", strategy))
    assert (result.datatype, result.shape, result.values) == ("INT64", [1, 2], [0, 0])
    assert ids.values == [CARD, 123456789]  # never mutated


@pytest.mark.parametrize("path", ["outputs.notes{us_ssn}", "outputs.notes{credit_card}", "outputs.notes{*}"])
def test_a_mask_on_text_in_a_uint8_tensor_zeroes_the_tensor(path: str) -> None:
    notes = Tensor("notes", "UINT8", [len(TEXT)], list(TEXT))
    (result,) = masked([notes], mask(path))
    assert (result.datatype, result.shape, result.values) == ("UINT8", [len(TEXT)], [0] * len(TEXT))


@pytest.mark.parametrize("datatype", ["UINT16", "INT32", "INT64"])
def test_a_mask_on_text_in_a_wider_integer_tensor_zeroes_the_tensor(datatype: str) -> None:
    notes = Tensor("notes", datatype, [len(TEXT)], list(TEXT))
    (result,) = masked([notes], mask("outputs.notes{us_ssn}"))
    assert (result.datatype, result.shape, result.values) == (datatype, [len(TEXT)], [0] * len(TEXT))


def test_a_mask_on_a_detector_not_found_leaves_the_tensor() -> None:
    ids = Tensor("ids", "INT64", [2], [CARD, 7])
    (result,) = masked([ids], mask("outputs.ids{us_ssn}"), mask("outputs.other{credit_card}"))
    assert result is ids


def test_a_span_mask_on_a_numeric_tensor_that_was_not_classified_fails_closed() -> None:
    ids = Tensor("ids", "INT64", [2], [5, 7])
    (result,) = apply_masks([ids], Classification(fields=[]), [mask("outputs.ids{credit_card}")], KEY)
    assert result.values == [0, 0]
    # Nor may the tensor have changed size since it was classified.
    classification = classify_outputs(MODEL, [Tensor("ids", "INT64", [1], [5])], CATALOG, DETECTORS)
    (result,) = apply_masks([ids], classification, [mask("outputs.ids{credit_card}")], KEY)
    assert result.values == [0, 0]


def test_decoded_tensors_are_zeroed_and_encode_back() -> None:
    response = pb.ModelInferResponse()
    tensors = [
        Tensor("ids", "INT64", [2], [CARD, 1]),
        Tensor("notes", "UINT8", [len(TEXT)], list(TEXT)),
        Tensor("score", "FP32", [1], [0.5]),
    ]
    encode_outputs(response, tensors, raw=True)
    outputs = decode_outputs(response)
    result = masked(outputs, mask("outputs.ids{credit_card}"), mask("outputs.notes{us_ssn}"))
    reply = pb.ModelInferResponse()
    encode_outputs(reply, result, raw=True)
    assert reply.raw_output_contents[0] == bytes(16)
    assert reply.raw_output_contents[1] == bytes(len(TEXT))
    assert result[2] is outputs[2]


def analyst_masks(classification: Classification) -> tuple[Any, ...]:
    """The masks the shipped policy (``rego/``) gives an ``analysts`` caller on these fields."""
    return profile_response.analyst_masks(classification, POLICY_DIR, model=MODEL)


def test_the_shipped_policy_masks_what_analysts_would_see_of_numbers_as_of_text() -> None:
    tensors = [
        Tensor("card", "INT64", [2], [CARD, 123456789]),
        Tensor("raw", "UINT8", [len(TEXT)], list(TEXT)),
        Tensor("text", "BYTES", [1], [TEXT]),
        Tensor("plain", "INT64", [2], [1, 2]),
    ]
    classification = classify_outputs(MODEL, tensors, CATALOG, DETECTORS)
    masks = analyst_masks(classification)
    paths = {item["path"] if isinstance(item, dict) else item.path for item in masks}
    assert {"outputs.card{credit_card}", "outputs.raw{us_ssn}", "outputs.raw{credit_card}"} <= paths
    card, raw, text, plain = apply_masks(tensors, classification, masks, KEY)
    assert card.values == [0, 0]
    assert raw.values == [0] * len(TEXT)
    assert b"123-45-6789" not in text.values[0] and b"4111111111111111" not in text.values[0]
    assert plain is tensors[3]
