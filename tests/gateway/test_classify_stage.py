"""The classify stage's request-phase fields follow the catalog in force, memo or not."""

from __future__ import annotations

import json
import os
from pathlib import Path
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


def test_a_catalog_file_completed_within_one_tick_of_its_clock_is_read_on_the_next_pass(
    tmp_path: Path,
) -> None:
    # A coarse clock (or a copy keeping its time) is pinned with utime: the watcher once saw
    # only the time, refused the half-written file, and never read the finished one.
    def catalog(label: str) -> str:
        entry = {"model": "m", "path": "outputs.diagnosis", "labels": [label]}
        return json.dumps({"default_label": "internal", "entries": [entry]}, indent=1)

    def labels(stage: ClassifierStage) -> list[list[str]]:
        return [sorted(found.labels) for found in stage.expected_fields("m", ["diagnosis"])]

    path, tick = tmp_path / "catalog.json", (2_000_000_000_000, 2_000_000_000_000)
    path.write_text(catalog("internal"))
    os.utime(path, ns=(1_000_000_000_000, 1_000_000_000_000))
    stage = ClassifierStage(path, DetectorSet.default())
    new = catalog("restricted")
    with open(path, "w") as file:  # written in place, caught half-way
        file.write(new[: len(new) // 2])
    os.utime(path, ns=tick)
    assert not stage.reload_if_changed() and labels(stage) == [["internal"]]
    with open(path, "a") as file:
        file.write(new[len(new) // 2 :])
    os.utime(path, ns=tick)  # the rest, within the same tick
    assert stage.reload_if_changed() and labels(stage) == [["restricted"]]
    assert not stage.reload_if_changed(), "read once, not on every pass"
