from __future__ import annotations

from pathlib import Path

import pytest

from labelgate._proto.labelgate.v1 import demo_pb2
from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.messages import FIELD_LABELS_INVALID
from labelgate.errors import ConfigError
from tests.classify.order_proto import BadLabels, Order

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()


def sources(classification) -> dict[str, dict[str, list[str]]]:
    return {field["path"]: field["sources"] for field in to_policy_fields(classification.fields)}


def test_customer_fields_take_labels_from_options_catalog_and_detectors() -> None:
    customer = demo_pb2.Customer(
        customer_id=7,
        name="Ann",
        ssn="123-45-6789",
        notes="paid with 4111 1111 1111 1111, mail ann@example.com",
        account_secret="s3cret",
    )
    result = classify_message(customer, CATALOG, DETECTORS)
    assert sources(result) == {
        "customer_id": {"public": ["catalog"]},
        "name": {"internal": ["catalog"]},
        "ssn": {"confidential": ["catalog"]},
        "notes": {"internal": ["catalog"]},
        "account_secret": {"restricted": ["catalog"]},
        "ssn{us_ssn}": {"confidential": ["detector:us_ssn"]},
        "notes{credit_card}": {"confidential": ["detector:credit_card"]},
        "notes{email}": {"internal": ["detector:email"]},
    }
    notes = customer.notes.encode()
    [ssn, note] = result.message_spans
    assert (ssn.location, ssn.path) == (("ssn",), "ssn")
    assert note.location == ("notes",)
    assert [notes[hit.start : hit.end] for hit in note.detections] == [
        b"4111 1111 1111 1111",
        b"ann@example.com",
    ]


def test_absent_fields_are_not_data() -> None:
    assert sources(classify_message(demo_pb2.Customer(), CATALOG, DETECTORS)) == {}


def test_nested_repeated_and_map_fields() -> None:
    catalog = Catalog.from_data(
        {
            "entries": [
                {"message": "labelgatetest.Item", "path": "note", "labels": ["restricted"]},
                {"message": "labelgatetest.Order", "path": "tags[]", "labels": ["public"]},
                {"message": "labelgatetest.Order", "path": "primary", "labels": ["confidential"]},
            ]
        }
    )
    order = Order(
        id="o-1",
        items=[{"ssn": "n/a", "note": "mail a@example.com", "quantity": 2}],
        tags=["t 123-45-6789"],
        attrs={"owner": "b@example.com"},
        amount=5,
        blob=b"\x00",
        primary={"ssn": "x"},
        paid=True,
        scores=[0.5],
    )
    result = classify_message(order, catalog, DETECTORS, default_label="confidential")
    assert sources(result) == {
        "id": {"confidential": ["default"]},
        "items[].ssn": {"confidential": ["catalog"]},
        "items[].note": {"restricted": ["catalog"]},
        "items[].quantity": {"confidential": ["default"]},
        "tags[]": {"public": ["catalog"]},
        "attrs": {"internal": ["detector:email"]},
        "amount": {"restricted": ["catalog"]},
        "blob": {"confidential": ["default"]},
        "primary": {"confidential": ["catalog"]},
        "primary.ssn": {"confidential": ["catalog"]},
        "paid": {"confidential": ["default"]},
        "scores[]": {"confidential": ["default"]},
        "items[].note{email}": {"internal": ["detector:email"]},
        "tags[]{us_ssn}": {"confidential": ["detector:us_ssn"]},
    }
    assert [(leaf.location, leaf.path) for leaf in result.message_spans] == [
        (("items", 0, "note"), "items[].note"),
        (("tags", 0), "tags[]"),
    ]


def test_unknown_labels_in_a_field_option_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        classify_message(BadLabels(secret="x"), CATALOG, DETECTORS)
    assert caught.value.reason == FIELD_LABELS_INVALID
    assert "labelgatetest.BadLabels.secret" in caught.value.message
    assert "top-secret" in caught.value.message
