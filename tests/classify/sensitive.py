"""Generators of valid sensitive values (real check digits, via python-stdnum) for tests."""

from __future__ import annotations

import random

from stdnum import iban, luhn
from stdnum.iso7064 import mod_97_10
from stdnum.us import ssn

# Country code -> BBAN shape ("n" digit, "a" capital letter), for countries whose IBAN has
# no national check digits beyond mod 97 (so any random BBAN of the shape is valid).
IBAN_SHAPES = {
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "NL": "aaaa" + "n" * 10,
    "AT": "n" * 16,
    "CH": "n" * 17,
}
CARD_PREFIXES = {"4": 16, "51": 16, "55": 16, "2221": 16, "34": 15, "37": 15, "6011": 16, "65": 16}


def ssn_value(rng: random.Random, separator: str = "-") -> str:
    while True:
        area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])
        number = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if ssn.is_valid(number):
            return separator.join((number[:3], number[3:5], number[5:]))


def card_value(rng: random.Random, style: str = "plain") -> str:
    prefix, length = rng.choice(sorted(CARD_PREFIXES.items()))
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    digits = body + luhn.calc_check_digit(body)
    assert luhn.is_valid(digits)
    if style == "plain":
        return digits
    separator = " " if style == "spaces" else "-"
    if length == 15:  # Amex 4-6-5
        return separator.join((digits[:4], digits[4:10], digits[10:]))
    return separator.join(digits[i : i + 4] for i in range(0, length, 4))


def iban_value(rng: random.Random, grouped: bool = False) -> str:
    country = rng.choice(sorted(IBAN_SHAPES))
    bban = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if kind == "a" else rng.choice("0123456789")
        for kind in IBAN_SHAPES[country]
    )
    check = mod_97_10.calc_check_digits(bban + country)
    value = country + check + bban
    assert iban.is_valid(value), value
    if grouped:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


SENSITIVE_KINDS = {
    "us_ssn": lambda rng: ssn_value(rng, rng.choice("- ")),
    "credit_card": lambda rng: card_value(rng, rng.choice(["plain", "spaces", "dashes"])),
    "iban": lambda rng: iban_value(rng, rng.random() < 0.5),
}

_FILLER_TEXT = (
    "the customer called about the invoice and asked for a refund of 12 items on 2024-03-14 "
    "at 10:30 version 2.1.0 was deployed order #4521 shipped to the warehouse in aisle 7"
)
FILLER = _FILLER_TEXT.split(" ")


def filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(words))
