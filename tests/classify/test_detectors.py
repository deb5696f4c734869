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
from tests.classify.secret_values import (
    ALNUM,
    BASE64URL,
    JSON_LEADS,
    PEM_LABELS,
    TOKEN_FORMS,
    UPPER_DIGITS,
    jwe_value,
    jwt_value,
    pem_value,
    pick,
    secret_value,
    ssh2_value,
)
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


def test_overlapping_hits_merge_into_one_span_given_to_each_of_their_detectors() -> None:
    """One span covers them all, once per detector, the most sensitive first: a policy need
    not be monotone in rank (a caller may see ``restricted`` and not ``confidential``), so
    the SSN inside a restricted match must still be named for its own field and mask."""
    detectors = DetectorSet(custom=[CustomPattern("internal_mail", r"\S+@corp\.example\.com", "restricted")])
    text = "write 123-45-6789@corp.example.com"
    assert detectors.scan(text) == [
        Detection("internal_mail", "restricted", 6, len(text)),
        Detection("us_ssn", "confidential", 6, len(text)),
        Detection("email", "internal", 6, len(text)),
    ]
    # Without it the SSN and the e-mail address overlap: one span covers both.
    assert DETECTORS.scan(text) == [
        Detection("us_ssn", "confidential", 6, len(text)),
        Detection("email", "internal", 6, len(text)),
    ]
    # Two hits of one detector in a cluster: one span for it.
    many = "card 4111111111111111 -----BEGIN RSA PRIVATE KEY----- 4111111111111111 078-05-1121"
    assert DETECTORS.scan(many) == [
        Detection("credit_card", "confidential", 5, 21),
        Detection("secret", "restricted", 22, len(many)),
        Detection("credit_card", "confidential", 22, len(many)),
        Detection("us_ssn", "confidential", 22, len(many)),
    ]


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


# --- secrets ------------------------------------------------------------------------------

_SECRET_RNG = random.Random(20261212)
RSA_KEY = pem_value(_SECRET_RNG)
JWT = jwt_value(_SECRET_RNG)
UNSIGNED_JWT = jwt_value(_SECRET_RNG, signed=False)
JWTS = [
    JWT,
    UNSIGNED_JWT,  # alg none: the signature is empty, the last dot ends the token
    jwt_value(_SECRET_RNG, padded=True),  # "=" padding kept
    jwt_value(_SECRET_RNG, signed=False, padded=True),
    *(jwt_value(_SECRET_RNG, lead=lead) for lead in JSON_LEADS[1:]),  # whitespace after "{"
    *(jwe_value(_SECRET_RNG, lead) for lead in JSON_LEADS[:3]),  # JWE, its key maybe empty
]
GITHUB_PAT = TOKEN_FORMS["github_pat"](_SECRET_RNG)


@pytest.mark.parametrize(
    "value",
    [
        *(pem_value(_SECRET_RNG, label) for label in PEM_LABELS),
        ssh2_value(_SECRET_RNG),
        *JWTS,
        "AKIAIOSFODNN7EXAMPLE",
        "ASIA" + pick(_SECRET_RNG, UPPER_DIGITS, 16),
        *(f"gh{kind}_" + pick(_SECRET_RNG, ALNUM, 36) for kind in "pousr"),
        GITHUB_PAT,
        "glpat-" + pick(_SECRET_RNG, BASE64URL, 20),
        *(f"xox{kind}-1234567890-" + pick(_SECRET_RNG, ALNUM, 24) for kind in "abposr"),
        "sk_live_" + pick(_SECRET_RNG, ALNUM, 24),
        "rk_live_" + pick(_SECRET_RNG, ALNUM, 99),
        "AIza" + pick(_SECRET_RNG, BASE64URL, 35),
    ],
)
def test_secrets_are_found_whole_and_restricted(value: str) -> None:
    for text in (value, f"here it is: {value}. done", f'{{"token": "{value}"}}', f"key={value}&x=1"):
        assert found(text) == [("secret", value)], text
    if value in JWTS:  # no other string has such segments and dots
        assert found(f"x{value}") == found(f"_{value}") == [("secret", value)]
    assert [hit.label for hit in DETECTORS.scan(value)] == ["restricted"]


def test_a_private_key_without_its_end_marker_runs_to_the_end_of_the_text() -> None:
    # Fail closed: a reply cut short (or a key whose END line was dropped) is masked to its end.
    opened = RSA_KEY.rsplit("\n", 1)[0]
    assert found(f"the key: {opened}\nand more text") == [("secret", f"{opened}\nand more text")]
    other_end = opened + "\n-----END EC PRIVATE KEY-----\ntail"
    assert found(other_end) == [("secret", other_end)], "only its own END marker closes a block"
    # Among many texts (a tensor's elements) it runs on over every later one: the key's lines
    # may be elements of their own, its END marker dropped.
    texts = [b"before 123-45-6789", f"key {opened}".encode(), b"next element 123-45-6789", b"", b"last"]
    assert DETECTORS.scan_many(texts) == [
        [Detection("us_ssn", "confidential", 7, 18)],
        [Detection("secret", "restricted", 4, len(texts[1]))],
        # What the block covers is still named: the SSN has a field and a mask of its own.
        [
            Detection("secret", "restricted", 0, len(texts[2])),
            Detection("us_ssn", "confidential", 0, len(texts[2])),
        ],
        [],
        [Detection("secret", "restricted", 0, len(texts[4]))],
    ]


def test_a_key_one_line_per_element_runs_from_its_begin_element_to_its_end_element() -> None:
    lines = [line.encode() for line in RSA_KEY.split("\n")]
    texts = [b"here:", b"1 " + lines[0], *lines[1:-1], b"", lines[-1] + b" and a@b.co", b"a@b.co"]
    found = DETECTORS.scan_many(texts)
    assert found[0] == []
    assert found[1] == [Detection("secret", "restricted", 2, len(texts[1]))]
    assert found[2:-3] == [[Detection("secret", "restricted", 0, len(line))] for line in lines[1:-1]]
    assert found[-3] == [], "an empty element holds nothing to mask"
    end = len(lines[-1])
    assert found[-2] == [
        Detection("secret", "restricted", 0, end),
        Detection("email", "internal", end + 5, end + 11),
    ]
    assert found[-1] == [Detection("email", "internal", 0, 6)], "the block ends at its END marker"
    # Another label's END marker does not close it; its own, elements later, does.
    other = [
        b"-----BEGIN EC PRIVATE KEY-----",
        b"-----END RSA PRIVATE KEY-----",
        b"x",
        b"-----END EC PRIVATE KEY-----",
    ]
    assert [[(hit.start, hit.end) for hit in hits] for hits in DETECTORS.scan_many([*other, b"y"])] == [
        [(0, len(text))] for text in other
    ] + [[]]


def test_an_end_marker_without_its_begin_marker_runs_from_the_start_of_the_text() -> None:
    # The rest of a key whose BEGIN line is elsewhere (another element, past a NUL).
    rest = RSA_KEY.split("\n", 2)[2]
    assert found(f"{rest} then words") == [("secret", rest)]
    data = f"a {RSA_KEY[:40]}\x00{rest}".encode()
    assert [data[hit.start : hit.end] for hit in DETECTORS.scan(data)] == [data[2:]], "one block past a NUL"
    data = f"a {RSA_KEY[:40]}\x00{rest}\x00{rest}".encode()
    assert [data[hit.start : hit.end] for hit in DETECTORS.scan(data)] == [
        data[2 : -len(rest) - 1],
        rest.encode(),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq\n-----END CERTIFICATE-----",
        "a PRIVATE KEY is secret; -----BEGIN rsa PRIVATE KEY----- -----BEGIN PRIVATE KEY---",
        "-----BEGIN TOOLONGWORD PRIVATE KEY----- -----BEGIN A B C D PRIVATE KEY-----",
        "tokens start with eyJ and look like eyJhbGciOi.eyJzdWI.sig or eyJhbGc.eyJzdWIiOiIx.x",
        # Openings of "{" and whitespace not followed by a key, dotted words, dotted runs after no
        # JSON; a JWT spaced around its dots or padded past base64's two "=" (left undetected).
        "keyAgreement.keyAgreement.x eyAbcdefgh.eyAbcdefgh.sig ewokabcd.ewokabcd.sig ewogICAgfQ.ewogICAgfQ.x",
        "theyAreNot.eyAlready.x they.eyJhbGci.x eyJhbGci..a.b eyJhbGci.a.b.c aGVhZGVyCg.a.b.c.d",
        "eyJhbGci . eyJzdWIx . sig eyJhbGci===.eyJzdWIx.sig",
        "AKIAIOSFODNN7EXAMPL AKIAIOSFODNN7EXAMPLE1 AKIAIOSFODNN7EXAMPLEx AKIAIOSFODNN7EXAMPLe",
        "xAKIAIOSFODNN7EXAMPLE 1AKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLE-1 AKIAIOSFODNN7EXAMPLE_",
        "AKIBIOSFODNN7EXAMPLE akiaIOSFODNN7EXAMPLE",
        "ghp_" + "a" * 35 + " ghx_" + "a" * 36 + " ghp_" + "a" * 20 + "_" + "a" * 20 + " ghp_" + "a" * 252,
        "github_pat_" + "a" * 21 + " github_pat_" + "a" * 245 + " github_pat_" + "a" * 30 + "-x",
        "glpat-" + "a" * 19 + " glpat-" + "a" * 250 + " glpat_" + "a" * 30,
        "xoxb-123456789 xoxz-" + "1" * 20 + " xoxb-" + "1" * 20 + "_x xoxb-" + "1" * 251,
        "sk_test_" + "a" * 24 + " sk_live_" + "a" * 19 + " pk_live_" + "a" * 24 + " xsk_live_" + "a" * 24,
        "AIza" + "a" * 34 + " AIza" + "a" * 36 + " AIzb" + "a" * 35,
    ],
)
def test_secret_look_alikes_are_not_flagged(text: str) -> None:
    assert found(text) == []


def test_token_lengths_are_bounded_at_255_characters() -> None:
    for value in (
        "ghp_" + "a" * 251,
        "github_pat_" + "a" * 244,
        "glpat-" + "a" * 249,
        "xoxb-" + "1" * 250,
        "sk_live_" + "a" * 247,
    ):
        assert len(value) == 255
        assert found(f"{value} ok") == [("secret", value)]
        assert found(f"{value}a ok") == [], "a longer run is some other string"


def test_generated_secrets_are_always_found_in_filler_text() -> None:
    rng = random.Random(11)
    for _ in range(300):
        value = secret_value(rng)
        before, after = filler(rng, rng.randint(0, 12)), filler(rng, 4)
        end = rng.choice(["", ".", ",", " and", '"'])
        text = f"{before} {value}{end} {after}"
        assert found(text) == [("secret", value)], text
