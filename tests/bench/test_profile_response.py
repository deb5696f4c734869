"""The response-path benchmark measures the real thing: the demo backend's response, the
policy's masks for an analyst. Only its shape is checked; no timing is asserted."""

from __future__ import annotations

from bench.profile_response import (
    CATALOG_FILE,
    MODEL,
    STAGES,
    analyst_masks,
    customer_response,
    measure_response_path,
)
from labelgate.classify.catalog import Catalog
from labelgate.classify.classifier import Classifier
from labelgate.classify.detectors import DetectorSet
from labelgate.oip import tensors as oip


def test_the_response_is_the_demo_backends() -> None:
    response = customer_response(6)
    assert oip.uses_raw_outputs(response)
    tensors = {tensor.name: tensor for tensor in oip.decode_outputs(response)}
    assert list(tensors) == [
        "customer_id", "segment", "name", "email", "risk_score",
        "ssn", "card_number", "notes", "account_secret",
    ]  # fmt: skip
    assert tensors["customer_id"].values == [0, 1, 2, 3, 4, 5]
    assert tensors["notes"].values[5].startswith(b"{")  # id % 6 == 5: a JSON note
    assert not oip.uses_raw_outputs(customer_response(2, raw=False))


def test_the_masks_are_the_policys_for_an_analyst() -> None:
    classifier = Classifier(Catalog.from_file(CATALOG_FILE), DetectorSet.default())
    tensors = oip.decode_outputs(customer_response(6))
    masks = {mask.path: mask.strategy for mask in analyst_masks(classifier.classify_response(MODEL, tensors))}
    assert masks["outputs.account_secret"] == "null"
    assert masks["outputs.ssn"] == "partial"
    assert masks["outputs.notes{us_ssn}"] == "partial"
    # The catalog names no key of the JSON notes: the path spells them as placeholders.
    segment = classifier.key_names(MODEL).segment
    assert masks[f"outputs.notes[]{segment('billing')}{segment('iban')}"] == "partial"
    assert "outputs.email" not in masks  # analysts see internal data


def test_measure_reports_every_stage() -> None:
    result = measure_response_path(rows=6, repeats=2)
    assert (result["rows"], result["repeats"], result["raw"]) == (6, 2, True)
    for stage in STAGES:
        assert result[f"{stage}_us"] > 0
        assert 0 < result["min_us"][stage] <= result[f"{stage}_us"]
    assert result["total_us"] == round(sum(result[f"{stage}_us"] for stage in STAGES), 1)
    # 17 fields: detectors do not scan outputs the catalog labels at or above their own label.
    assert result["fields"] == 17
    assert result["masks"] == 9
    assert result["bytes_elements"] > 0
