"""Leak tests: generated sensitive values (valid check digits) are always found, and after
masking with any strategy none of them survives anywhere in the output bytes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.labelgate.v1 import demo_pb2
from labelgate.classify import Catalog, DetectorSet, classify_message, classify_outputs
from labelgate.enforce import STRATEGIES, apply_masks, apply_message_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs, tensor_to_raw
from tests.classify.sensitive import SENSITIVE_KINDS, card_value, filler

CATALOG = Catalog.from_data({"entries": []})
DETECTORS = DetectorSet.default()
KEY = b"leak-test-key-0123456789abcdef"
SEEDS = range(6)


def plant(rng: random.Random, count: int) -> tuple[str, list[str]]:
    values = [SENSITIVE_KINDS[rng.choice(sorted(SENSITIVE_KINDS))](rng) for _ in range(count)]
    parts = [filler(rng, rng.randint(0, 6))]
    for value in values:
        parts += [value + rng.choice(["", ".", ",", ";"]), filler(rng, rng.randint(1, 6))]
    return " ".join(part for part in parts if part), values


def forms(value: str) -> set[str]:
    """The value as planted and as bare characters: neither may survive masking."""
    return {value, value.replace(" ", "").replace("-", "")}


def json_element(rng: random.Random) -> tuple[dict, list[str]]:
    ssn = SENSITIVE_KINDS["us_ssn"](rng)
    note, in_note = plant(rng, 2)
    card = card_value(rng)
    element = {
        "id": rng.randint(1, 10**6),
        "profile": {"ssn": ssn, "notes": [note, "nothing to see"]},
        "payment": {"card": int(card) if rng.random() < 0.5 else card},
    }
    return element, [ssn, card, *in_note]


def detector_masks(classification, strategy: str) -> list[dict]:
    """What a policy that masks everything a detector found would return."""
    return [
        {"path": field.path, "strategy": strategy, "params": {"keep_last": 4}}
        for field in classification.fields
        if any(source.startswith("detector:") for sources in field.sources.values() for source in sources)
    ]


def span_masks(tensor_names: list[str], strategy: str) -> list[dict]:
    return [
        {"path": f"outputs.{name}{{{detector}}}", "strategy": strategy, "params": {}}
        for name in tensor_names
        for detector in DETECTORS.names
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_values_in_text_are_found(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        text, values = plant(rng, rng.randint(1, 4))
        data = text.encode()
        hits = DETECTORS.scan(data)
        for value in values:
            start = data.index(value.encode())
            end = start + len(value)
            assert any(hit.start <= start and end <= hit.end for hit in hits), (value, text)


def planted_tensors(rng: random.Random) -> tuple[list[Tensor], list[str]]:
    """A text tensor and a JSON tensor with sensitive values planted; and those values."""
    texts, planted = [], []
    for _ in range(20):
        text, values = plant(rng, rng.randint(1, 4))
        texts.append(text.encode())
        planted += values
    documents = []
    for _ in range(10):
        element, values = json_element(rng)
        documents.append(json.dumps(element).encode())
        planted += values
    tensors = [
        Tensor("notes", "BYTES", [len(texts)], texts),
        Tensor("doc", "BYTES", [len(documents)], documents),
    ]
    return tensors, planted


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_planted_value_survives_masking_of_text_and_json(seed: int, strategy: str) -> None:
    rng = random.Random(seed * 1000 + STRATEGIES.index(strategy))
    tensors, planted = planted_tensors(rng)
    classification = classify_outputs("m", tensors, CATALOG, DETECTORS)

    for masks in (detector_masks(classification, strategy), span_masks(["notes", "doc"], strategy)):
        result = apply_masks(tensors, classification, masks, KEY)
        output = b"\n".join(value for tensor in result for value in tensor.values)
        for value in planted:
            for form in forms(value):
                assert form.encode() not in output, (strategy, form)
        for element in result[1].values:
            json.loads(element)  # still valid JSON


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_planted_value_is_in_the_encoded_reply_of_decoded_tensors(seed: int, strategy: str) -> None:
    """As above, on tensors decoded from a raw reply (values built only when read, the raw
    form kept and reused) and through encoding: the bytes that would be sent hold none of the
    planted values, whole-output masks included, and the decoded tensors still encode to the
    bytes they came from (nothing changed their values in place)."""
    rng = random.Random(seed * 1000 + STRATEGIES.index(strategy))
    given, planted = planted_tensors(rng)
    reply = pb.ModelInferResponse()
    encode_outputs(reply, given, raw=True)
    whole = [{"path": f"outputs.{name}", "strategy": strategy, "params": {}} for name in ("notes", "doc")]
    choices: list[Callable[[Any], list[dict[str, Any]]]] = [
        lambda found: detector_masks(found, strategy),
        lambda _: span_masks(["notes", "doc"], strategy),
        lambda _: whole,
    ]
    for masks_of in choices:
        tensors = decode_outputs(reply)
        classification = classify_outputs("m", tensors, CATALOG, DETECTORS)
        result = apply_masks(tensors, classification, masks_of(classification), KEY)
        sent = pb.ModelInferResponse()
        sent.CopyFrom(reply)
        encode_outputs(sent, result, raw=True)
        output = b"".join(sent.raw_output_contents)
        for value in planted:
            for form in forms(value):
                assert form.encode() not in output, (strategy, form)
        assert [tensor_to_raw(tensor) for tensor in tensors] == list(reply.raw_output_contents)
        assert [tensor.values for tensor in tensors] == [tensor.values for tensor in given]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_planted_value_survives_masking_of_a_message(strategy: str) -> None:
    rng = random.Random(99 + STRATEGIES.index(strategy))
    for _ in range(20):
        notes, values = plant(rng, rng.randint(1, 4))
        message = demo_pb2.Customer(customer_id=1, notes=notes)
        classification = classify_message(message, CATALOG, DETECTORS)
        masks = [
            {"path": f"notes{{{detector}}}", "strategy": strategy, "params": {"keep_last": 4}}
            for detector in DETECTORS.names
        ]
        output = apply_message_masks(message, classification, masks, KEY).SerializeToString()
        for value in values:
            for form in forms(value):
                assert form.encode() not in output, (strategy, form)
