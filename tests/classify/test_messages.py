from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor_pb2, struct_pb2, wrappers_pb2

from labelgate._proto.labelgate.v1 import classification_pb2, demo_pb2
from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.detectors import CustomPattern
from labelgate.classify.messages import (
    FIELD_LABELS_INVALID,
    MAX_MESSAGE_DEPTH,
    MESSAGE_STRING_INVALID,
    MESSAGE_TOO_DEEP,
    unpacked_any,
)
from labelgate.errors import ConfigError, UpstreamError
from tests.classify.codes_proto import INTEGER_FIELDS, Codes
from tests.classify.numbers_proto import HIDDEN, Box, Numbers
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
        # A detector adds its label: the map keeps the default beside it.
        "attrs": {"confidential": ["default"], "internal": ["detector:email"]},
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
    # Every label but public: a caller who may see one label need not see another.
    opaque = f"catalog:fail_closed:{reason}"
    assert {label for label, where in labels["extra"].items() if opaque in where} == {
        "internal",
        "confidential",
        "restricted",
    }


def test_an_anys_type_url_and_unreadable_bytes_are_scanned() -> None:
    order = Order()
    order.extra.type_url = "example.com/123-45-6789/nowhere.Unknown"
    order.extra.value = b"mail a@example.com"
    assert sources(classify_message(order, CATALOG, DETECTORS))["extra"] == {
        "restricted": ["catalog:fail_closed:any_type_unknown"],
        "confidential": ["catalog:fail_closed:any_type_unknown", "detector:us_ssn"],
        "internal": ["catalog:fail_closed:any_type_unknown", "detector:email"],
    }


def test_bytes_fields_are_scanned_like_strings() -> None:
    order = Order(blob=b"ssn 123-45-6789")
    result = classify_message(order, CATALOG, DETECTORS)
    assert sources(result)["blob{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    [leaf] = result.message_spans
    assert leaf.location == ("blob",)
    assert [order.blob[hit.start : hit.end] for hit in leaf.detections] == [b"123-45-6789"]


@pytest.mark.parametrize(
    "hidden",
    [
        b"ssn \\u0031\\u0032\\u0033-45-6789",  # JSON escapes, as a JSON reader shows them
        b"ssn &#49;&#50;&#51;-45-6789",  # character references, as a page or Markdown shows them
        b"ssn &#x31;&#x32;&#x33;-45-6789",
        b"ssn 123<b></b>-45-6789",  # markup, as a page shows it (``markup.rendered``)
        b"ssn 12**3**-45-6789",  # Markdown, as a chat UI shows it
    ],
)
def test_escapes_and_character_references_in_strings_are_read_decoded(hidden: bytes) -> None:
    for order in (Order(blob=hidden), Order(tree=Node(text=hidden.decode()))):
        result = classify_message(order, CATALOG, DETECTORS)
        assert any(path.endswith("{us_ssn}") for path in sources(result)), (hidden, sources(result))
    in_a_map = classify_message(Order(attrs={"note": hidden.decode()}), CATALOG, DETECTORS)
    assert "confidential" in sources(in_a_map)["attrs"], sources(in_a_map)


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


CARD = 4111111111111111


def card_numbers() -> list:
    struct = struct_pb2.Struct()
    struct["card"] = float(CARD)
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.Int64Value(value=CARD))
    return [
        *(
            pytest.param(Numbers(**{name: value}), f"{name}{{credit_card}}", (name,), id=name)
            for name, value in [
                ("i64", CARD),
                ("u64", CARD),
                ("f64", CARD),
                ("s64", -CARD),
                ("sf64", CARD),
                ("d", float(CARD)),
            ]
        ),
        # A fraction does not hide the card a reader sees in 4111111111111111.5.
        pytest.param(Numbers(d=CARD + 0.5), "d{credit_card}", ("d",), id="double-with-fraction"),
        pytest.param(Numbers(many=[1, CARD]), "many[]{credit_card}", ("many", 1), id="packed"),
        pytest.param(Numbers(doubles=[float(CARD)]), "doubles[]{credit_card}", ("doubles", 0), id="doubles"),
        pytest.param(
            Numbers(wrapped=wrappers_pb2.Int64Value(value=CARD)),
            "wrapped.value{credit_card}",
            ("wrapped", "value"),
            id="Int64Value",
        ),
        pytest.param(
            Numbers(child=Numbers(i64=CARD)), "child.i64{credit_card}", ("child", "i64"), id="nested"
        ),
        # Maps, Structs and Anys are one field: the card labels the field itself.
        pytest.param(Numbers(by_name={"k": CARD}), "by_name", None, id="map-int64-value"),
        pytest.param(Numbers(ratios={"k": float(CARD)}), "ratios", None, id="map-double-value"),
        pytest.param(Numbers(doc=struct), "doc.fields", None, id="Struct-number_value"),
        pytest.param(Numbers(extra=packed), "extra", None, id="Any-of-Int64Value"),
    ]


@pytest.mark.parametrize(("message", "path", "location"), card_numbers())
def test_a_card_held_by_a_number_is_found_as_its_digits(message, path: str, location: tuple | None) -> None:
    # A client reads the card back from the number as readily as from a string
    # (jsonpaths.scannable reads numbers the same way in tensors, JSON and parameters).
    result = classify_message(message, CATALOG, DETECTORS)
    assert sources(result)[path]["confidential"] == ["detector:credit_card"]
    if location is not None:
        [leaf] = result.message_spans
        assert (leaf.location, leaf.path) == (location, path.split("{")[0])
        assert [hit.detector for hit in leaf.detections] == ["credit_card"]


def test_with_a_custom_detector_every_number_is_scanned() -> None:
    # The built-ins need 13 digits of a number (a card); a custom pattern may match fewer.
    detectors = DetectorSet(None, [CustomPattern("employee", r"^\d{6}$", "restricted")])
    result = classify_message(Numbers(i32=123456, many=[654321]), CATALOG, detectors)
    assert sources(result)["i32{employee}"] == {"restricted": ["detector:employee"]}
    assert sources(result)["many[]{employee}"] == {"restricted": ["detector:employee"]}
    assert "i32{employee}" not in sources(classify_message(Numbers(i32=123456), CATALOG, DETECTORS))


def test_small_numbers_are_not_data_for_the_built_in_detectors() -> None:
    result = classify_message(Numbers(i64=412345678901, many=[5, 7], by_name={"k": 1}), CATALOG, DETECTORS)
    assert not result.message_spans
    assert set(sources(result)) == {"i64", "many[]", "by_name"}


def test_an_anys_contents_have_no_extensions_at_any_depth() -> None:
    # Classification walks declared fields only; release re-encodes these contents, so an
    # extension left in them would leave unseen.
    box = Box(note="n")
    box.Extensions[HIDDEN] = "4111 1111 1111 1111"
    box.child.Extensions[HIDDEN] = "123-45-6789"
    options = descriptor_pb2.FieldOptions()
    options.Extensions[classification_pb2.labels].append("123-45-6789")
    for message in (box, options):
        packed = any_pb2.Any()
        packed.Pack(message)
        contents, reason = unpacked_any(packed)
        assert contents is not None and reason == ""
        assert b"4111" not in contents.SerializeToString() and b"123-45" not in contents.SerializeToString()
    assert contents is not None and not contents.ListFields()


def test_a_reply_that_is_an_any_is_one_field_labelled_by_what_it_packs() -> None:
    packed = any_pb2.Any()
    packed.Pack(Numbers(i64=CARD))  # a varint: no scan of the raw bytes could find it
    assert sources(classify_message(packed, CATALOG, DETECTORS)) == {
        "value": {"confidential": ["detector:credit_card"], "internal": ["default"]}
    }
    unreadable = any_pb2.Any(type_url="type.googleapis.com/nowhere.Unknown", value=b"x")
    unknown = ["catalog:fail_closed:any_type_unknown"]
    assert sources(classify_message(unreadable, CATALOG, DETECTORS)) == {
        "value": {"internal": unknown, "confidential": unknown, "restricted": unknown}
    }


# Integers read as character codes: a client turns ``[83, 83, 78, 32, ...]`` back into text
# with ``chr``, as it does an INT64 tensor's elements (``numbers.character_detections``).
SSN_TEXT = "SSN 123-45-6789"
CARD_TEXT = f"card {CARD}"
BEGIN = "-----BEGIN PRIVATE KEY-----"
END = "-----END PRIVATE KEY-----"
KEY_LINES = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
]


def codes(text: str) -> list[int]:
    return [ord(char) for char in text]


@pytest.mark.parametrize("name", [*INTEGER_FIELDS, "kinds"])
def test_a_repeated_integer_field_of_any_kind_is_read_as_character_codes(name: str) -> None:
    # Signed, unsigned, zigzag, fixed, packed or not, and an enum (proto3 keeps any value).
    message = Codes(**{name: codes(SSN_TEXT)})
    result = classify_message(message, CATALOG, DETECTORS)
    assert sources(result)[f"{name}[]{{us_ssn}}"] == {"confidential": ["detector:us_ssn"]}
    # A leaf for every value: a mask zeroes the whole field, as it zeroes a whole tensor.
    assert [leaf.location for leaf in result.message_spans] == [
        (name, index) for index in range(len(SSN_TEXT))
    ]
    assert {leaf.path for leaf in result.message_spans} == {f"{name}[]"}


def test_a_card_or_an_email_in_character_codes_is_found_too() -> None:
    result = classify_message(
        Codes(i64=codes(CARD_TEXT), u32=codes("mail ann@example.com")), CATALOG, DETECTORS
    )
    assert sources(result)["i64[]{credit_card}"] == {"confidential": ["detector:credit_card"]}
    assert sources(result)["u32[]{email}"] == {"internal": ["detector:email"]}


def test_a_secret_with_no_digit_in_character_codes_is_found_too() -> None:
    # Review, seventh round: only a digit or an "@" let integers be read, and a token of
    # letters holds neither (one AWS key id in 28).
    result = classify_message(
        Codes(i64=codes("key AKIAABCDEFGHIJKLMNOP end"), u32=codes("tok sk_live_abcdefghijklmnopqrstuvwx")),
        CATALOG,
        DETECTORS,
    )
    assert sources(result)["i64[]{secret}"] == {"restricted": ["detector:secret"]}
    assert sources(result)["u32[]{secret}"] == {"restricted": ["detector:secret"]}


def test_character_codes_are_read_in_nested_repeated_and_folded_messages() -> None:
    message = Codes(
        children=[Codes(), Codes(i64=codes(SSN_TEXT))],
        child=Codes(s32=codes(SSN_TEXT)),
        nested={"k": Codes(f64=codes(SSN_TEXT))},
    )
    result = classify_message(message, CATALOG, DETECTORS)
    found = sources(result)
    assert found["children[].i64[]{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    assert found["child.s32[]{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    assert found["nested"]["confidential"] == ["detector:us_ssn"]  # a map of messages is one field
    assert ("children", 1, "i64", 0) in {leaf.location for leaf in result.message_spans}


def test_a_maps_integer_values_are_read_as_character_codes_in_key_order() -> None:
    # A map has no order: its values read in its keys' order (numbers by value) spell the SSN.
    by_name = {f"{index}": code for index, code in enumerate(codes(SSN_TEXT))}
    by_id = {index * 7: code for index, code in enumerate(codes(SSN_TEXT))}
    result = classify_message(Codes(by_name=by_name, by_id=by_id), CATALOG, DETECTORS)
    assert sources(result)["by_name"] == {"confidential": ["detector:us_ssn"], "internal": ["default"]}
    assert sources(result)["by_id"] == {"confidential": ["detector:us_ssn"], "internal": ["default"]}


def test_shapes_dims_and_versions_of_metadata_and_config_replies_are_read_as_character_codes() -> None:
    from labelgate._proto.inference import model_extensions_pb2 as ext
    from labelgate._proto.inference import open_inference_pb2 as pb

    metadata = pb.ModelMetadataResponse(name="m", platform="p", versions=["1"])
    metadata.inputs.add(name="x", datatype="INT64", shape=codes(SSN_TEXT))
    metadata.outputs.add(name="y", datatype="INT64", shape=codes(CARD_TEXT))
    found = sources(classify_message(metadata, CATALOG, DETECTORS))
    assert found["inputs[].shape[]{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    assert found["outputs[].shape[]{credit_card}"] == {"confidential": ["detector:credit_card"]}
    config = ext.ModelConfig(name="m")
    config.input.add(name="x", dims=codes(SSN_TEXT)).reshape.shape.extend(codes(SSN_TEXT))
    config.output.add(name="y", dims=codes(CARD_TEXT))
    config.version_policy.specific.versions.extend(codes(SSN_TEXT))
    config.dynamic_batching.preferred_batch_size.extend(codes(SSN_TEXT))
    found = sources(classify_message(ext.ModelConfigResponse(config=config), CATALOG, DETECTORS))
    for path in (
        "config.input[].dims[]{us_ssn}",
        "config.input[].reshape.shape[]{us_ssn}",
        "config.output[].dims[]{credit_card}",
        "config.version_policy.specific.versions[]{us_ssn}",
        "config.dynamic_batching.preferred_batch_size[]{us_ssn}",
    ):
        assert found[path]["confidential"] == [f"detector:{path.rsplit('{', 1)[1][:-1]}"], path


def test_a_mask_on_a_field_read_as_character_codes_zeroes_every_value() -> None:
    from labelgate.enforce import apply_message_masks

    message = Codes(i64=codes(SSN_TEXT), lines=["kept"])
    result = classify_message(message, CATALOG, DETECTORS)
    mask = {"path": "i64[]{us_ssn}", "strategy": "redact", "params": {}}
    released = apply_message_masks(message, result, [mask], b"0123456789abcdef0123456789abcdef")
    assert list(released.i64) == [0] * len(SSN_TEXT) and list(released.lines) == ["kept"]


def test_ordinary_integers_are_not_read_as_characters_or_scanned() -> None:
    # Shapes, counts and versions: nothing reads as a digit or an "@" (or a PEM marker's "K").
    message = Codes(i64=[-1, 3, 224, 224], i32=[1, 2, 3], u64=[4, 8, 16, 32], kinds=[0, 1], by_id={1: 1000})
    result = classify_message(message, CATALOG, DETECTORS)
    assert not result.message_spans
    assert not [path for path in sources(result) if "{" in path]
    # Nor bools, nor doubles holding a fraction (whole ones are read as integers are:
    # test_messages_float_ints.py).
    assert not classify_message(
        Codes(doubles=[code + 0.5 for code in codes(SSN_TEXT)]), CATALOG, DETECTORS
    ).message_spans


def test_with_a_custom_detector_every_integer_field_is_read_as_characters() -> None:
    # A custom pattern may match any character: no digit or "@" needed, as in a tensor.
    detectors = DetectorSet(None, [CustomPattern("codename", r"NIGHTJAR", "restricted")])
    result = classify_message(Codes(u64=codes("the NIGHTJAR file")), CATALOG, detectors)
    assert sources(result)["u64[]{codename}"] == {"restricted": ["detector:codename"]}
    assert not classify_message(Codes(u64=codes(SSN_TEXT)), CATALOG, DetectorSet.none()).message_spans


# A PEM key split over a message's texts: which text follows which is the renderer's choice.


def secret_paths(message) -> set[str]:
    found = sources(classify_message(message, CATALOG, DETECTORS))
    return {path for path, by_label in found.items() if "detector:secret" in by_label.get("restricted", [])}


def test_a_key_begun_in_a_string_and_continued_in_a_map_is_covered() -> None:
    from labelgate._proto.inference import open_inference_pb2 as pb

    metadata = pb.ModelMetadataResponse(name="m", platform=BEGIN, versions=["1"])
    metadata.properties["1"], metadata.properties["2"] = KEY_LINES
    assert {"platform{secret}", "properties", "name{secret}", "versions[]{secret}"} <= secret_paths(metadata)


def test_a_key_begun_after_its_lines_in_field_number_order_is_covered() -> None:
    # REST writes ModelConfig in declaration order: backend (17) before input (5).
    from labelgate._proto.inference import model_extensions_pb2 as ext

    config = ext.ModelConfig(name="m", backend=BEGIN)
    config.input.add(name=KEY_LINES[0], dims=[1])
    config.input.add(name=KEY_LINES[1], dims=[1])
    found = secret_paths(ext.ModelConfigResponse(config=config))
    assert {"config.backend{secret}", "config.input[].name{secret}", "config.input[].dims[]{secret}"} <= found


def test_a_key_whose_end_the_scan_meets_later_still_covers_every_text() -> None:
    # Scanned by field number: BEGIN (text), END (lines), then the key (blob) after both; another
    # rendering puts the key between its markers.
    message = Codes(text=BEGIN, lines=[END], blob=KEY_LINES[0].encode())
    assert {"text{secret}", "lines[]{secret}", "blob{secret}"} <= secret_paths(message)


def test_a_key_begun_in_a_folded_message_covers_the_reply_and_the_reverse() -> None:
    inner = Codes(text=BEGIN)
    outer = Codes(nested={"k": inner}, lines=KEY_LINES)
    assert {"nested", "lines[]{secret}"} <= secret_paths(outer)
    packed = any_pb2.Any()
    packed.Pack(Codes(lines=KEY_LINES))
    assert {"text{secret}", "extra"} <= secret_paths(Codes(text=BEGIN, extra=packed))


@pytest.mark.parametrize(
    "marker",
    [
        BEGIN.replace("-", "\\u002d", 1),  # a JSON escape
        BEGIN.replace("KEY", "ＫＥＹ"),  # full-width letters (folded)
        BEGIN.replace("PRIVATE", "PRI\u200bVATE"),  # a zero-width space (folded)
    ],
    ids=["escaped", "full-width", "zero-width"],
)
def test_a_hidden_begin_marker_covers_the_other_texts_too(marker: str) -> None:
    assert "lines[]{secret}" in secret_paths(Codes(text=marker, lines=KEY_LINES))


@pytest.mark.parametrize(
    "marker",
    [BEGIN, BEGIN.replace("KEY", "ＫＥＹ"), f"key 1: {BEGIN}"],
    ids=["alone", "full-width", "beside-a-digit"],
)
def test_a_begin_marker_in_character_codes_covers_the_other_texts(marker: str) -> None:
    # The marker alone has no digit or "@", which is all the built-ins otherwise need.
    assert {"lines[]{secret}", "i32[]{secret}"} <= secret_paths(Codes(i32=codes(marker), lines=KEY_LINES))


def test_a_begin_marker_in_a_maps_character_codes_covers_the_other_texts() -> None:
    assert {"lines[]{secret}", "by_name"} <= secret_paths(
        Codes(by_name={f"{index:02}": code for index, code in enumerate(codes(BEGIN))}, lines=KEY_LINES)
    )


def test_a_key_whole_in_one_text_covers_only_that_text() -> None:
    whole = "\n".join([BEGIN, *KEY_LINES, END])
    assert secret_paths(Codes(text=whole, lines=["a note"], i64=[1, 2])) == {"text{secret}"}
