"""The classify stage's request-phase fields follow the catalog in force, memo or not."""

from __future__ import annotations

from typing import Any

from labelgate.classify import Catalog, DetectorSet
from labelgate.gateway.classify_stage import ClassifierStage


def catalog(ssn_label: str) -> Catalog:
    return Catalog.from_data(
        {
            "default_label": "internal",
            "entries": [
                {"model": "customer-profile", "path": "outputs.ssn", "labels": [ssn_label]},
                {"model": "sentiment", "path": "outputs.*", "labels": ["public"]},
            ],
        }
    )


def summary(fields: list[Any]) -> list[tuple[str, list[str]]]:
    return [(f.path, sorted(f.labels)) for f in fields]


def test_expected_fields_are_the_catalogs_and_follow_a_new_one() -> None:
    stage = ClassifierStage(None, DetectorSet.default())
    first = catalog("confidential")
    stage.use_catalog(first)
    asks = [
        ("customer-profile", ()),
        ("customer-profile", ("ssn",)),
        ("sentiment", ("label",)),
        ("other", ()),
    ]
    for _ in range(2):  # worked out, then remembered: the same answers
        for model, outputs in asks:
            got = stage.expected_fields(model, outputs)
            assert summary(got) == summary(first.expected_fields(model, outputs))
            got.clear()  # the caller's list is its own: the next answer is whole
    assert summary(stage.expected_fields("customer-profile", ("ssn",))) == [("outputs.ssn", ["confidential"])]
    stage.use_catalog(catalog("restricted"))  # a new bundle's catalog: no stale answer
    assert summary(stage.expected_fields("customer-profile", ("ssn",))) == [("outputs.ssn", ["restricted"])]
