from __future__ import annotations

import itertools
import random

import pytest

from labelgate.classify.detectors import (
    BUILTIN_LABELS,
    DETECTORS_INVALID,
    CustomPattern,
    Detection,
    DetectorSet,
)
from labelgate.errors import ConfigError
from tests.classify.sensitive import SENSITIVE_KINDS, card_value, filler, iban_value, ssn_value

DETECTORS = DetectorSet.default()


def found(text: str | bytes, detectors: DetectorSet = DETECTORS) -> list[tuple[str, str]]:
    return [(hit.detector, text[hit.start : hit.end]) for hit in detectors.scan(text)]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 on file", [("credit_card", "4111 1111 1111 1111")]),
        ("card 4111-1111-1111-1111.", [("credit_card", "4111-1111-1111-1111")]),
        ("card:4111111111111111", [("credit_card", "4111111111111111")]),
        (
            "amex 378282246310005 and 3782 822463 10005",
            [("credit_card", "378282246310005"), ("credit_card", "3782 822463 10005")],
        ),
        ("ssn 123-45-6789, ok", [("us_ssn", "123-45-6789")]),
        ("ssn 123 45 6789", [("us_ssn", "123 45 6789")]),
        ("pay DE89 3704 0044 0532 0130 00 now", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("pay GB82WEST12345698765432.", [("iban", "GB82WEST12345698765432")]),
        ("mail bob.smith+tag@mail.example.co.uk.", [("email", "bob.smith+tag@mail.example.co.uk")]),
        ("call +1 (555) 234-5678 today", [("phone", "+1 (555) 234-5678")]),
        ("call 212-555-1234 or 212.555.1234", [("phone", "212-555-1234"), ("phone", "212.555.1234")]),
        ("call +44 20 7946 0958 or +14155552671", [("phone", "+44 20 7946 0958"), ("phone", "+14155552671")]),
        ("from 192.168.1.10 and 8.8.8.8.", [("ip_address", "192.168.1.10"), ("ip_address", "8.8.8.8")]),
        (
            "v6 fe80::1ff:fe23:4567:890a, ::1 and 2001:db8::8a2e:370:7334.",
            [
                ("ip_address", "fe80::1ff:fe23:4567:890a"),
                ("ip_address", "::1"),
                ("ip_address", "2001:db8::8a2e:370:7334"),
            ],
        ),
    ],
)
def test_builtins_find_their_values(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 (fails Luhn)",
        "ref 41111111111111111111 (20 digits)",
        "ID4111111111111111X glued to letters",
        "epoch 1700000000000 ms",
        "serial 9111111111111111 starts with 9",
        "ssn-like 000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
        "longer id 123-45-6789-01 and 99-123-45-6789",
        "bare nine digits 123456789 and ten 2125551234",
        "not NANP 123-456-7890 555-123-4567 211-555-1234",
        "dates 2024-01-15 2024-01-15T10:30:45Z 10:30:45.123 12:30",
        "decimals 3.14159 1,234,567.89 v2.1.0 1.2.3",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "mac 00:1a:2b:3c:4d:5e and C++ std::vector<int> a::b Foo::Bar dead::beef",
        "ip-like 256.1.1.1 1.2.3.4.5 01.02.03.04",
        "small +1000000 points and user@localhost and @handle",
        "iban-like DE88370400440532013000 (bad check digits)",
    ],
)
def test_look_alikes_are_not_flagged(text: str) -> None:
    assert found(text) == []


def test_random_order_numbers_and_timestamps_do_not_look_like_cards_or_ssns() -> None:
    rng = random.Random(20240611)
    detectors = DetectorSet({"credit_card": "confidential", "us_ssn": "confidential"})
    for _ in range(2000):
        number = "".join(rng.choice("0123456789") for _ in range(rng.randint(5, 12)))
        texts = [
            f"order ORD-{number} shipped",
            f"invoice #{number}",
            f"at {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
            f"tracking {rng.choice('1789')}{''.join(rng.choice('0123456789') for _ in range(15))}",
            f"{rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        ]
        for text in texts:
            assert detectors.scan(text) == [], text


def test_generated_valid_values_are_always_found_in_filler_text() -> None:
    rng = random.Random(7)
    for _ in range(300):
        kind = rng.choice(sorted(SENSITIVE_KINDS))
        value = SENSITIVE_KINDS[kind](rng)
        before, after = filler(rng, rng.randint(0, 12)), filler(rng, 4)
        text = f"{before} {value}{rng.choice(['', '.', ',', ' and'])} {after}"
        assert (kind, value) in found(text), text


def test_offsets_index_the_given_text() -> None:
    text = "电话号码 123-45-6789，邮箱 é@example.com 和 a@example.com"
    hits = DETECTORS.scan(text)
    assert [text[hit.start : hit.end] for hit in hits] == ["123-45-6789", "a@example.com"]
    data = text.encode()
    assert [data[hit.start : hit.end] for hit in DETECTORS.scan(data)] == [b"123-45-6789", b"a@example.com"]


def test_invalid_utf8_bytes_are_scanned_anyway() -> None:
    data = b"\xff\xfe ssn 123-45-6789 \xc3"
    assert [data[hit.start : hit.end] for hit in DETECTORS.scan(data)] == [b"123-45-6789"]


def test_scan_many_matches_scan_and_never_crosses_elements() -> None:
    rng = random.Random(3)
    texts = [f"{filler(rng, 5)} {ssn_value(rng)} {card_value(rng)}".encode() for _ in range(50)]
    texts += [b"", b"4111 1111", b"1111 1111 end", b"123-45", b"-6789", b"a@", b"example.com"]
    assert DETECTORS.scan_many(texts) == [DETECTORS.scan(text) for text in texts]
    assert DETECTORS.scan_many([]) == []


def test_labels_default_and_can_be_configured() -> None:
    assert [hit.label for hit in DETECTORS.scan("123-45-6789 a@example.com")] == ["confidential", "internal"]
    custom = DetectorSet({"email": "restricted"})
    assert custom.scan("123-45-6789 a@example.com") == [Detection("email", "restricted", 12, 25)]
    assert custom.names == ("email",)
    assert DetectorSet.none().scan("123-45-6789") == []
    assert set(DETECTORS.names) == set(BUILTIN_LABELS)


def test_custom_patterns_find_matches_with_their_label() -> None:
    detectors = DetectorSet(
        builtins={},
        custom=[CustomPattern("project_code", r"\bPRJ-[A-Z]{3}\b", "restricted")],
    )
    text = "see PRJ-ABC and PRJ-XYZ, not PRJ-abcd"
    assert found(text, detectors) == [("project_code", "PRJ-ABC"), ("project_code", "PRJ-XYZ")]
    assert detectors.label_of("project_code") == "restricted"
    data = "é PRJ-ABC".encode()
    assert [data[hit.start : hit.end] for hit in detectors.scan(data)] == [b"PRJ-ABC"]


def test_overlapping_hits_merge_under_the_most_sensitive_label() -> None:
    detectors = DetectorSet(custom=[CustomPattern("internal_mail", r"\S+@corp\.example\.com", "restricted")])
    text = "write 123-45-6789@corp.example.com"
    assert detectors.scan(text) == [Detection("internal_mail", "restricted", 6, len(text))]
    # Without it the SSN and the e-mail address overlap: one span covers both.
    assert DETECTORS.scan(text) == [Detection("us_ssn", "confidential", 6, len(text))]


def test_scan_is_deterministic_and_sorted() -> None:
    text = "b@example.com 123-45-6789 4111111111111111 10.0.0.1 a@example.com"
    first = DETECTORS.scan(text)
    assert first == DETECTORS.scan(text)
    assert [hit.start for hit in first] == sorted(hit.start for hit in first)
    assert all(a.end <= b.start for a, b in itertools.pairwise(first))


@pytest.mark.parametrize(
    ("builtins", "custom", "problem"),
    [
        ({"passport": "confidential"}, [], "unknown built-in detector 'passport'"),
        ({"email": "secret"}, [], "label 'secret'"),
        (None, [CustomPattern("Bad-Name", "x", "internal")], "name must match"),
        (None, [CustomPattern("email", "x", "internal")], "already used"),
        (
            None,
            [CustomPattern("mine", "x", "internal"), CustomPattern("mine", "y", "internal")],
            "already used",
        ),
        (None, [CustomPattern("mine", "x", "top")], "label 'top'"),
        (None, [CustomPattern("mine", "(unclosed", "internal")], "invalid regex"),
        (None, [CustomPattern("mine", "x*", "internal")], "matches empty text"),
    ],
)
def test_bad_detector_configuration_is_rejected(builtins: dict | None, custom: list, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DetectorSet(builtins, custom)
    assert caught.value.reason == DETECTORS_INVALID
    assert problem in caught.value.message


def test_a_card_followed_by_a_short_number_is_still_found() -> None:
    assert found("card 4111 1111 1111 1111 10:30") == [("credit_card", "4111 1111 1111 1111")]
    assert found("at 10:30 123 45 6789 was given") == [("us_ssn", "123 45 6789")]


def test_iban_groups_do_not_swallow_the_next_word() -> None:
    rng = random.Random(5)
    value = iban_value(rng, grouped=True)
    assert found(f"iban {value} ABCD") == [("iban", value)]


@pytest.mark.parametrize(
    "padded",
    [
        "0004111111111111111",
        "04111111111111111",
        "0000004111111111111111",  # 22 digits: longer than any card, the padding aside
        "000000000000000000000000006011000990139424",
        "0004 1111 1111 1111 111",
    ],
)
def test_a_zero_padded_card_is_found_with_its_padding(padded: str) -> None:
    # A card stored in a fixed-width numeric column comes back zero-padded; a reader strips the zeros.
    assert found(f"pan {padded} ok") == [("credit_card", padded)]
    assert found(padded) == [("credit_card", padded)]


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111.5",
        "4111111111111111.25e0",
        "41111111111111112.5e-1",
        "4.1111111111111115E15",
        "6011000990139424.999",
        "0004111111111111111.75",
        "4111111111111111.0000000000000000000001",
    ],
)
def test_a_card_with_a_fractional_part_is_found_spanning_the_number(number: str) -> None:
    # A reader (and a JSON or CSV parser) reads the card as the number's integer part.
    assert found(f"total {number} due") == [("credit_card", number)]
    assert found(f"owed -{number}.") == [("credit_card", number)]


_CARD_NUMBER = 4111111111111111


@pytest.mark.parametrize(
    "grouped",
    [
        f"{_CARD_NUMBER:,}",
        f"{_CARD_NUMBER:_}",
        f"{_CARD_NUMBER:030,}",  # zero-padded: 00,000,004,111,...
        "4 111 111 111 111 111",
        "4.111.111.111.111.111",
        "4'111'111'111'111'111",
        "4\t111\t111\t111\t111\t111",
        f"{6011000990139424:,}",
        f"{378282246310005:,}",
        f"{5555555555554444:,}",
        f"{4111111111111111.5:,.2f}",  # a float column: the fraction goes with the number
        "4.111.111.111.111.111,50",
        "4'111'111'111'111'111.50",
    ],
)
def test_a_card_grouped_in_thousands_is_found(grouped: str) -> None:
    # What number formatting writes of a card stored as an integer (f"{n:,}", locales, pandas).
    assert found(f"card {grouped} on file") == [("credit_card", grouped)]
    assert found(f"[{grouped}]") == [("credit_card", grouped)]


@pytest.mark.parametrize(
    "text",
    [
        "pan 0004111111111111112 (fails Luhn) 0000000000000000000 00001111111111111117",
        "pan 00004111111111 (11 digits past the zeros) x0004111111111111111",
        "total 4111111111111112.5 4111111111111111.5.1 4111111111111111.5e-1 1700000000000.5",
        "4,111,111,111,111,112 (fails Luhn) 1,234,567,890,123,456 2,024,000,000,000",
        "4,111,111,111,111,111,1 4,111,111,111,111,1111 12,4,111,111,111,111,111 4,111.111,111,111,111",
        "4 111 111 111 111 111 7 and 41,111,111,111,111,111 and 4,111,111,111,111,111,111,111",
        "4,111,111,111,111,111.50.3 4_111_111_111_111_111x",
    ],
)
def test_numbers_that_only_look_like_padded_fractional_or_grouped_cards_are_not_flagged(text: str) -> None:
    assert found(text) == []
