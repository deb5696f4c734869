"""The publish gate compares catalogs by what they label, not by their entries' text (review:
a candidate adding one entry for another output, ``outputs.other[].diagnosis``, made the model
name the key ``diagnosis``, so every output spells it literally and the served
``outputs.doc[].<key:*>`` glob (``confidential``) stopped matching ``outputs.doc[].diagnosis``:
the catalog section was empty and the revision published; adding ``outputs.doc[].diagnosis:
public`` was reported only as "added without the default label: internal -> public").

Every path and key either catalog names is spelled as each catalog spells it and labelled by
each catalog's own lookup (``labelgate.policy.catalog_impact``).
"""

from __future__ import annotations

from typing import Any

import pytest

from labelgate.bundle.gate import HoldRule, hold_reasons
from labelgate.classify.catalog import Catalog
from labelgate.policy.catalog_impact import catalog_changes

MODEL = "customer-profile"
SERVED = [
    {"model": MODEL, "path": "outputs.doc", "labels": ["internal"]},
    {"model": MODEL, "path": "outputs.doc[].<key:*>", "labels": ["confidential"]},
]


def catalog(entries: list[dict[str, Any]], default_label: str = "internal") -> Catalog:
    return Catalog.from_data({"default_label": default_label, "entries": entries})


def entry(path: str, *labels: str, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "path": path, "labels": list(labels)}


def verdict(served: list[dict[str, Any]], proposed: list[dict[str, Any]]) -> list[str]:
    report = {"distinct": 1, "changes": [], "errors": [], "catalog": changes(served, proposed)}
    return hold_reasons(report, HoldRule())


def changes(served: list[dict[str, Any]], proposed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return catalog_changes(catalog(served), catalog(proposed))


def test_an_entry_for_another_output_respells_a_key_and_holds() -> None:
    proposed = [*SERVED, entry("outputs.other[].diagnosis", "internal")]
    assert changes(SERVED, proposed) == [
        {
            "kind": "catalog key spelled otherwise",
            "model": MODEL,
            "message": None,
            "path": "outputs.doc[].diagnosis",
            "was": ["confidential"],
            "now": ["internal"],
            "respelled_keys": ["diagnosis"],
        }
    ]
    assert verdict(SERVED, proposed) == [
        "catalog key spelled otherwise: customer-profile outputs.doc[].diagnosis confidential -> internal "
        "(named by one catalog only: diagnosis)"
    ]


def test_naming_the_key_public_holds_for_the_label_the_glob_gave() -> None:
    assert verdict(SERVED, [*SERVED, entry("outputs.doc[].diagnosis", "public")]) == [
        "catalog key spelled otherwise: customer-profile outputs.doc[].diagnosis confidential -> public "
        "(named by one catalog only: diagnosis)"
    ]


def test_a_key_the_candidate_stops_naming_loses_what_its_literal_entry_gave() -> None:
    served = [entry("outputs.doc[].diagnosis", "confidential"), entry("outputs.doc[].ssn", "confidential")]
    proposed = [entry("outputs.doc[].ssn", "confidential")]
    assert verdict(served, proposed) == [
        "catalog key spelled otherwise: customer-profile outputs.doc[].diagnosis confidential -> internal "
        "(named by one catalog only: diagnosis)"
    ]


def test_a_glob_narrowed_to_some_names_holds_for_the_others() -> None:
    served = [entry("outputs.*", "confidential")]
    (reason,) = verdict(served, [entry("outputs.?", "confidential")])
    assert "outputs.<another output> confidential -> internal" in reason, reason


def test_a_nested_key_under_a_glob_holds() -> None:
    served = [entry("outputs.doc[].<key:*>.ssn", "restricted")]
    proposed = [*served, entry("outputs.doc[].patient.name", "internal")]
    (reason,) = verdict(served, proposed)
    assert "outputs.doc[].patient.ssn restricted -> internal" in reason, reason


def test_a_message_glob_narrowed_holds() -> None:
    message = "inference.ModelStatisticsResponse"
    served = [{"message": message, "path": "model_stats[].*", "labels": ["confidential"]}]
    proposed = [{"message": message, "path": "model_stats[].name", "labels": ["confidential"]}]
    (reason,) = verdict(served, proposed)
    assert reason.startswith("catalog field removed: ") and "model_stats[].*" in reason, reason


@pytest.mark.parametrize(
    ("served", "proposed"),
    [
        # The key named, with the label the glob gave it (and more).
        (SERVED, [*SERVED, entry("outputs.doc[].diagnosis", "confidential")]),
        (SERVED, [*SERVED, entry("outputs.doc[].diagnosis", "confidential", "restricted")]),
        # A glob matching both spellings keeps the label wherever the key is named.
        (
            SERVED,
            [*SERVED, entry("outputs.doc[].*", "confidential"), entry("outputs.other[].diagnosis", "public")],
        ),
        # A key named in another model is spelled otherwise only there.
        (SERVED, [*SERVED, entry("outputs.other[].diagnosis", "internal", model="sentiment")]),
        # A literal entry replaced by a glob covering its key.
        ([*SERVED, entry("outputs.doc[].diagnosis", "confidential")], SERVED),
    ],
)
def test_a_catalog_change_keeping_every_watched_label_is_published(
    served: list[dict[str, Any]], proposed: list[dict[str, Any]]
) -> None:
    assert verdict(served, proposed) == []


def test_the_same_catalog_in_another_order_is_no_change() -> None:
    served = [*SERVED, entry("outputs.other[].diagnosis", "internal")]
    assert changes(served, list(reversed(served))) == []
