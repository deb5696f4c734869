from __future__ import annotations

from pathlib import Path

import pytest

from labelgate._proto.labelgate.v1 import demo_pb2
from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.messages import (
    FIELD_LABELS_INVALID,
    MAX_MESSAGE_DEPTH,
    MESSAGE_STRING_INVALID,
    MESSAGE_TOO_DEEP,
)
from labelgate.errors import ConfigError, UpstreamError
from tests.classify.order_proto import BadLabels, Item, Legacy, Node, Order

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


def test_a_maps_message_values_label_the_map() -> None:
    # The values' own labels (an option, the value type's catalog entries, the root's under
    # by_key{}.) and their detector hits all label the map: masking can only clear it whole.
    catalog = Catalog.from_data(
        {
            "entries": [
                {"message": "labelgatetest.Item", "path": "note", "labels": ["restricted"]},
                {"message": "labelgatetest.Order", "path": "by_key{}.quantity", "labels": ["public"]},
            ]
        }
    )
    order = Order(
        by_key={"k": Item(ssn="n/a", note="x", quantity=1), "j": Item(note="card 4111 1111 1111 1111")}
    )
    assert sources(classify_message(order, catalog, DETECTORS)) == {
        "by_key": {
            "confidential": ["catalog", "detector:credit_card"],
            "restricted": ["catalog"],
            "public": ["catalog"],
        }
    }
    assert sources(classify_message(Order(by_key={"k": Item()}), catalog, DETECTORS)) == {
        "by_key": {"internal": ["default"]}
    }


def test_an_any_is_labelled_by_what_it_packs() -> None:
    order = Order()
    order.extra.Pack(Item(ssn="123-45-6789"))
    assert sources(classify_message(order, CATALOG, DETECTORS)) == {
        "extra": {"confidential": ["catalog", "detector:us_ssn"]}
    }


@pytest.mark.parametrize(
    ("type_url", "value", "reason"),
    [
        ("type.googleapis.com/nowhere.Unknown", b"", "any_type_unknown"),
        ("type.googleapis.com/labelgatetest.Item", b"\xff\xff", "any_invalid"),
    ],
)
def test_an_any_that_cannot_be_read_fails_closed(type_url: str, value: bytes, reason: str) -> None:
    order = Order()
    order.extra.type_url, order.extra.value = type_url, value
    labels = sources(classify_message(order, CATALOG, DETECTORS))
    assert list(labels) == ["extra"]
    assert labels["extra"]["restricted"] == [f"catalog:fail_closed:{reason}"]


def test_an_anys_type_url_and_unreadable_bytes_are_scanned() -> None:
    order = Order()
    order.extra.type_url = "example.com/123-45-6789/nowhere.Unknown"
    order.extra.value = b"mail a@example.com"
    assert sources(classify_message(order, CATALOG, DETECTORS))["extra"] == {
        "restricted": ["catalog:fail_closed:any_type_unknown"],
        "confidential": ["detector:us_ssn"],
        "internal": ["detector:email"],
    }


def test_bytes_fields_are_scanned_like_strings() -> None:
    order = Order(blob=b"ssn 123-45-6789")
    result = classify_message(order, CATALOG, DETECTORS)
    assert sources(result)["blob{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    [leaf] = result.message_spans
    assert leaf.location == ("blob",)
    assert [order.blob[hit.start : hit.end] for hit in leaf.detections] == [b"123-45-6789"]


def nested(depth: int) -> Order:
    node = Node(text="leaf")
    for _ in range(depth - 1):
        node = Node(child=node)
    return Order(tree=node)


def test_a_reply_nested_deeper_than_the_limit_is_refused() -> None:
    # Order is level 0 and its tree level 1: the deepest Node sits at level ``depth``.
    classify_message(nested(MAX_MESSAGE_DEPTH), CATALOG, DETECTORS)
    with pytest.raises(UpstreamError) as caught:
        classify_message(nested(MAX_MESSAGE_DEPTH + 1), CATALOG, DETECTORS)
    assert caught.value.reason == MESSAGE_TOO_DEEP


def test_nesting_inside_maps_and_anys_counts_too() -> None:
    order = Order()
    order.extra.Pack(nested(MAX_MESSAGE_DEPTH))
    with pytest.raises(UpstreamError) as caught:
        classify_message(order, CATALOG, DETECTORS)
    assert caught.value.reason == MESSAGE_TOO_DEEP


def test_a_proto2_string_that_is_not_utf8_is_refused() -> None:
    message = Legacy.FromString(b"\x0a\x02\xff\xfe")  # proto2 parses it; the value is bytes
    with pytest.raises(UpstreamError) as caught:
        classify_message(message, CATALOG, DETECTORS)
    assert caught.value.reason == MESSAGE_STRING_INVALID


def test_catalog_entries_for_an_anys_own_fields_label_the_any() -> None:
    catalog = Catalog.from_data(
        {"entries": [{"message": "labelgatetest.Order", "path": "extra.value", "labels": ["restricted"]}]}
    )
    order = Order()
    order.extra.Pack(Item(note="x"))
    assert sources(classify_message(order, catalog, DETECTORS))["extra"] == {"restricted": ["catalog"]}


def test_an_any_packed_with_a_map_in_any_order_is_classified_by_its_contents() -> None:
    inner = Order(attrs={f"k{n}": "v" for n in range(5)}, id="x")
    order = Order()
    order.extra.Pack(inner)
    assert "restricted" not in sources(classify_message(order, CATALOG, DETECTORS))["extra"]
