from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2, api_pb2, descriptor_pb2, wrappers_pb2

from labelgate._proto.labelgate.v1 import classification_pb2, demo_pb2
from labelgate.classify import Catalog, DetectorSet, classify_message
from labelgate.enforce import apply_message_masks
from labelgate.enforce.messages import MASKED_REQUIRED_FIELD, MESSAGE_REQUIRED_MISSING
from labelgate.enforce.strategies import MASK_INVALID
from labelgate.errors import PermissionDenied, PolicyUnavailable, UpstreamError
from tests.classify.numbers_proto import HIDDEN, Box, Numbers, Part, Plain, Record
from tests.classify.order_proto import Item, Order

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"


def mask(path: str, strategy: str, **params: object) -> dict:
    return {"path": path, "strategy": strategy, "params": params}


def masked(message, *masks: dict):
    return apply_message_masks(message, classify_message(message, CATALOG, DETECTORS), list(masks), KEY)


def customer() -> demo_pb2.Customer:
    return demo_pb2.Customer(
        customer_id=7,
        name="Ann",
        email="ann@example.com",
        ssn="123-45-6789",
        card_number="4111111111111111",
        notes="paid with 4111 1111 1111 1111, ssn 123-45-6789",
        account_secret="s3cret",
    )


def test_string_and_number_fields_per_strategy() -> None:
    original = customer()
    result = masked(
        original,
        mask("ssn", "partial", keep_last=4),
        mask("card_number", "hash"),
        mask("account_secret", "null"),
        mask("name", "redact", replacement="<name>"),
        mask("customer_id", "redact"),
    )
    assert result.ssn == "*******6789"
    assert result.card_number.startswith("hmac:")
    assert result.account_secret == ""
    assert result.name == "<name>"
    assert result.customer_id == 0
    assert result.email == original.email
    assert original == customer()  # the input is never changed


def test_span_masks_rewrite_only_the_detected_parts_of_a_string() -> None:
    result = masked(customer(), mask("notes{credit_card}", "partial"), mask("notes{us_ssn}", "redact"))
    assert result.notes == "paid with ***************1111, ssn [REDACTED]"


def test_a_field_mask_supersedes_its_span_masks_and_hashes_the_original() -> None:
    # ``hash`` covers a ``partial`` span (``strategies.covers``): the field mask alone applies.
    result = masked(customer(), mask("ssn", "hash"), mask("ssn{us_ssn}", "partial", keep_last=2))
    assert result.ssn == masked(customer(), mask("ssn", "hash")).ssn != ""


AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def test_a_field_mask_never_shows_more_of_a_span_than_its_own_mask() -> None:
    """Review s13 (rev-labels 3): a string field partial (keep_last 4) holding a secret the
    policy nulls: the field mask applied alone and showed the secret's last characters. The
    field takes the most protective mask of the spans inside it its own does not cover."""
    reply = customer()
    reply.notes = f"key {AWS_KEY}"
    result = masked(reply, mask("notes", "partial", keep_last=4), mask("notes{secret}", "null"))
    assert result.notes == ""
    result = masked(reply, mask("notes", "hash"), mask("notes{secret}", "redact", replacement="<k>"))
    assert result.notes == "<k>"
    # No partial of the field covers a partial span (review s13: a span no longer than its own
    # keep_last is starred whole): the field is redacted.
    result = masked(
        reply, mask("notes", "partial", keep_last=6), mask("notes{secret}", "partial", keep_last=2)
    )
    assert result.notes == "[REDACTED]"


def test_a_repeated_or_bytes_field_mask_never_shows_more_of_a_span_than_its_own_mask() -> None:
    order = Order(
        id="o-1",
        tags=[f"k {AWS_KEY}", "plain"],
        items=[{"note": f"k {AWS_KEY}"}, {"note": "plain note"}],
        blob=f"k {AWS_KEY}".encode(),
    )
    result = masked(
        order,
        mask("tags", "partial", keep_last=4),
        mask("tags{secret}", "redact"),
        mask("items[].note", "partial", keep_last=4),
        mask("items[].note{secret}", "null"),
        mask("blob", "partial", keep_last=4),
        mask("blob{secret}", "null"),
    )
    assert list(result.tags) == ["[REDACTED]", "[REDACTED]"]  # the field, every item
    assert [item.note for item in result.items] == ["", "******note"]
    assert result.blob == b""


def test_nested_repeated_map_and_bytes_fields() -> None:
    order = Order(
        id="o-1",
        items=[{"ssn": "123-45-6789", "note": "mail a@example.com", "quantity": 2}, {"ssn": "078-05-1121"}],
        tags=["t 123-45-6789", "plain"],
        attrs={"owner": "b@example.com"},
        amount=5,
        blob=b"\x00secret",
        primary={"ssn": "x"},
        paid=True,
        scores=[0.5, 1.5],
    )
    result = masked(
        order,
        mask("items[].ssn", "partial", keep_last=2),
        mask("items[].note{email}", "redact"),
        mask("tags{us_ssn}", "null"),
        mask("attrs", "hash"),
        mask("amount", "partial"),
        mask("blob", "partial", keep_last=2),
        mask("primary", "redact"),
        mask("paid", "hash"),
        mask("scores[]", "redact"),
        mask("items[].quantity", "null"),
    )
    assert [item.ssn for item in result.items] == ["*********89", "*********21"]
    assert result.items[0].note == "mail [REDACTED]"
    assert result.items[0].quantity == 0
    assert list(result.tags) == ["t ", "plain"]
    assert dict(result.attrs) == {}
    assert result.amount == 0
    assert result.blob == b"*****et"
    assert not result.HasField("primary")
    assert result.paid is False
    assert list(result.scores) == [0.0, 0.0]
    assert result.id == "o-1"


def test_spans_that_no_longer_fit_clear_the_field_holding_them() -> None:
    original = customer()
    classification = classify_message(original, CATALOG, DETECTORS)
    changed = customer()
    changed.notes = "short"
    result = apply_message_masks(changed, classification, [mask("notes{us_ssn}", "redact")], KEY)
    assert result.notes == ""


def test_unknown_strategies_raise() -> None:
    with pytest.raises(PolicyUnavailable) as caught:
        masked(customer(), mask("ssn", "rot13"))
    assert caught.value.reason == MASK_INVALID


def test_unknown_fields_are_dropped_because_nobody_classified_them() -> None:
    secret = b"123-45-6789"
    unknown = bytes([0x9A, 0x06, len(secret)]) + secret  # field 99, length-delimited
    message = demo_pb2.Customer.FromString(demo_pb2.Customer(name="Ann").SerializeToString() + unknown)
    assert secret in message.SerializeToString()
    for masks in ([], [mask("name", "redact")]):
        result = apply_message_masks(message, classify_message(message, CATALOG, DETECTORS), masks, KEY)
        assert secret not in result.SerializeToString()
    assert secret in message.SerializeToString()  # the input keeps them


def test_span_masks_rewrite_only_the_detected_part_of_a_bytes_field() -> None:
    result = masked(Order(blob=b"ssn 123-45-6789 ok"), mask("blob{us_ssn}", "redact"))
    assert result.blob.startswith(b"ssn ") and result.blob.endswith(b" ok")
    assert b"123-45-6789" not in result.blob


def test_a_mask_on_a_map_of_messages_or_an_any_clears_it() -> None:
    order = Order(by_key={"k": {"ssn": "123-45-6789"}}, id="o-1")
    order.extra.Pack(demo_pb2.Customer(ssn="123-45-6789"))
    result = masked(order, mask("by_key", "redact"), mask("extra", "redact"))
    assert not result.by_key and not result.HasField("extra")
    assert result.id == "o-1"


@pytest.mark.parametrize(
    "value",
    [
        bytes([0x9A, 0x06, 11]) + b"123-45-6789",  # field 99, unknown to Item
        b"\x0a\x0b123-45-6789\x0a\x01x",  # ssn written twice: the parse keeps the last
        b"\x18\xff\xff\xff\xff\x0f",  # quantity -1 as a short varint
    ],
)
def test_an_any_is_released_re_encoded_from_what_was_classified(value: bytes) -> None:
    order = Order()
    order.extra.type_url, order.extra.value = "type.googleapis.com/labelgatetest.Item", value
    result = masked(order)
    parsed = Item.FromString(value)
    parsed.DiscardUnknownFields()
    assert result.extra.value == parsed.SerializeToString(deterministic=True)
    assert b"123-45-6789" not in result.extra.value


CARD = 4111111111111111


def any_of(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def with_unknown_card(message) -> bytes:
    secret = b"4111 1111 1111 1111"
    return message.SerializePartialToString() + bytes([15 << 3 | 2, len(secret)]) + secret  # field 15


def test_an_any_packing_an_any_is_re_encoded_at_every_depth() -> None:
    # The inner Any's bytes are what classification unpacked, not what the upstream wrote.
    innermost = any_pb2.Any(
        type_url="type.googleapis.com/google.protobuf.StringValue",
        value=with_unknown_card(wrappers_pb2.StringValue(value="hello")),
    )
    three_deep = any_of(any_of(innermost))
    for order in (Order(extra=any_of(innermost)), Order(extra=three_deep)):
        result = masked(order)
        assert b"4111" not in result.SerializeToString()
        contents = result.extra
        while contents.Is(any_pb2.Any.DESCRIPTOR):
            inner = any_pb2.Any()
            contents.Unpack(inner)
            contents = inner
        value = wrappers_pb2.StringValue()
        assert contents.Unpack(value) and value.value == "hello"


def test_anys_in_a_map_in_a_repeated_field_and_the_reply_itself_are_re_encoded() -> None:
    innermost = any_pb2.Any(
        type_url="type.googleapis.com/google.protobuf.StringValue",
        value=with_unknown_card(wrappers_pb2.StringValue(value="hello")),
    )
    options = api_pb2.Api(name="svc")
    options.options.add(name="o", value=any_of(innermost))
    replies = [
        Numbers(anys={"k": innermost}),
        Numbers(anys={"k": any_of(innermost)}),
        options,
        innermost,
        any_of(any_of(innermost)),
    ]
    for reply in replies:
        assert b"4111" in reply.SerializeToString()
        assert b"4111" not in masked(reply).SerializeToString()


def test_a_mask_on_a_reply_that_is_an_any_clears_it() -> None:
    reply = any_of(Numbers(i64=CARD))
    assert masked(reply, mask("value", "partial")) == any_pb2.Any()
    assert masked(reply) == reply


def test_extensions_inside_an_any_are_not_released() -> None:
    box = Box(note="n")
    box.child.Extensions[HIDDEN] = "4111 1111 1111 1111"
    options = descriptor_pb2.FieldOptions()
    options.Extensions[classification_pb2.labels].append("123-45-6789")
    for reply in (Order(extra=any_of(box)), Order(extra=any_of(any_of(options)))):
        released = masked(reply).SerializeToString()
        assert b"4111" not in released and b"123-45" not in released


@pytest.mark.parametrize(
    ("reply", "path", "expected"),
    [
        (Numbers(i64=CARD, text="t"), "i64{credit_card}", Numbers(text="t")),
        (Numbers(d=CARD + 0.5), "d{credit_card}", Numbers()),
        (Numbers(many=[1, CARD, 2]), "many[]{credit_card}", Numbers(many=[1, 0, 2])),
        (Numbers(many=[1, CARD]), "many{credit_card}", Numbers(many=[1, 0])),  # named without []
        (Numbers(doubles=[float(CARD)]), "doubles[]{credit_card}", Numbers(doubles=[0.0])),
        (
            Numbers(wrapped=wrappers_pb2.Int64Value(value=CARD)),
            "wrapped.value{credit_card}",
            Numbers(wrapped=wrappers_pb2.Int64Value()),
        ),
        (Numbers(by_name={"k": CARD}, i64=3), "by_name", Numbers(i64=3)),
    ],
)
def test_a_mask_on_a_number_found_to_hold_a_card_zeroes_it(reply, path: str, expected) -> None:
    assert masked(reply, mask(path, "partial")) == expected


def test_a_masked_required_scalar_holds_its_default_and_the_reply_still_encodes() -> None:
    # What a proto2 reader of the cleared field would read: nothing of the upstream's value.
    record = Record(name="alice", acct=CARD, rank=3, part=Part(code="c"), plain=Plain(), count=1)
    result = masked(record, mask("acct", "null"), mask("rank", "redact"))
    assert (result.acct, result.rank) == (0, 7)  # rank declares [default = 7]
    assert Record.FromString(result.SerializeToString()) == result
    spans = masked(record, mask("acct{credit_card}", "null"))  # found by the detector
    assert spans.acct == 0 and spans.IsInitialized()


def test_a_masked_required_message_is_left_empty_when_that_is_a_whole_message() -> None:
    record = Record(name="alice", acct=1, rank=3, part=Part(code="c"), plain=Plain(note="n"), count=1)
    result = masked(record, mask("plain", "null"))
    assert result.HasField("plain") and result.plain == Plain()
    assert result.IsInitialized()


def test_a_mask_that_leaves_a_required_field_unset_refuses_the_reply() -> None:
    # An empty Part still misses its required code: no valid reply hides the part.
    record = Record(name="alice", acct=1, rank=3, part=Part(code="c"), plain=Plain(), count=1)
    with pytest.raises(PermissionDenied) as caught:
        masked(record, mask("part", "null"))
    assert caught.value.reason == MASKED_REQUIRED_FIELD


def test_a_reply_missing_a_required_field_is_refused() -> None:
    # grpc's deserializer does not check required fields: the upstream's reply parses.
    partial = Record.FromString(
        Record(name="a", acct=1, rank=1, part=Part(code="c")).SerializePartialToString()
    )
    for masks in ([], [mask("name", "redact")]):
        with pytest.raises(UpstreamError) as caught:
            apply_message_masks(partial, classify_message(partial, CATALOG, DETECTORS), masks, KEY)
        assert caught.value.reason == MESSAGE_REQUIRED_MISSING


def test_an_any_packing_a_message_missing_required_fields_is_re_encoded_as_it_was_read() -> None:
    packed = any_pb2.Any(
        type_url="type.googleapis.com/labelgaterequired.Part", value=with_unknown_card(Part())
    )
    result = masked(Order(extra=packed))
    assert result.extra.value == b""
