"""The detectors' fast validators agree with python-stdnum, value by value.

``labelgate.classify.patterns`` writes out stdnum's rules over bytes for speed; these tests
are what keeps them the same rules.
"""

from __future__ import annotations

import random
import string
from decimal import Decimal

import pytest
from stdnum import iban, luhn, numdb
from stdnum.iso7064 import mod_97_10
from stdnum.us import ssn

from labelgate.classify import patterns

RNG_SEED = 20240611


def test_luhn_matches_stdnum() -> None:
    rng = random.Random(RNG_SEED)
    numbers = [str(n) for n in range(0, 10_000)]
    numbers += ["".join(rng.choices(string.digits, k=rng.randint(1, 19))) for _ in range(20_000)]
    numbers += [body + luhn.calc_check_digit(body) for body in numbers[-5000:]]  # valid ones too
    for number in numbers:
        assert patterns._card_ok(number.encode()) == luhn.is_valid(number), number


def test_ssn_rules_match_stdnum() -> None:
    # The rules look at area, group and serial separately: vary each over its whole range.
    numbers = [f"{area:03d}4567{serial:02d}" for area in range(1000) for serial in (12, 0)]
    numbers += [f"123{group:02d}6789" for group in range(100)]
    numbers += [f"12345{serial:04d}" for serial in range(10_000)]
    numbers += ["078051120", "457555462", "219099999", "078051121", "457555463", "219099998"]
    for number in numbers:
        digits = number.encode()
        assert patterns._ssn_ok(digits[:3], digits[3:5], digits[5:]) == ssn.is_valid(number), number


def _bban(rng: random.Random, structure: str) -> str:
    """A random BBAN of a registry structure such as ``4!n4!n12!c``."""
    alphabets = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    return "".join(
        "".join(rng.choices(alphabets[kind], k=int(count)))
        for count, kind in patterns._BBAN_PART.findall(structure)
    )


def _registry() -> dict[str, str]:
    registry = numdb.get("iban")
    countries = [a + b for a in string.ascii_uppercase for b in string.ascii_uppercase]
    return {cc: info[0][1]["bban"] for cc in countries if (info := registry.info(cc)) and info[0][1]}


def test_the_registry_is_read() -> None:
    structures = _registry()
    assert len(structures) > 60
    assert structures["DE"] == "8!n10!n"


@pytest.mark.parametrize("country", sorted(_registry()))
def test_iban_matches_stdnum_for_every_registry_country(country: str) -> None:
    rng = random.Random(f"{RNG_SEED}-{country}")
    structure = _registry()[country]
    candidates = []
    for _ in range(12):
        bban = _bban(rng, structure)
        valid_check = mod_97_10.calc_check_digits(bban + country)
        candidates.append(country + valid_check + bban)  # check digits right, BBAN random
        candidates.append(country + f"{rng.randint(0, 99):02d}" + bban)  # check digits random
        # Wrong length or a letter where the registry wants a digit, with right check digits.
        for other in (bban[:-1], bban + "7", "A" + bban[1:], "1" + bban[1:]):
            candidates.append(country + mod_97_10.calc_check_digits(other + country) + other)
    for candidate in candidates:
        assert patterns._iban_ok(candidate) == iban.is_valid(candidate), candidate


def test_iban_of_countries_without_a_registry_entry_is_refused() -> None:
    for country in ("QQ", "ZZ", "AA"):
        bban = "12345678901234567890"
        candidate = country + mod_97_10.calc_check_digits(bban + country) + bban
        assert patterns._iban_ok(candidate) is False
        assert iban.is_valid(candidate) is False


def test_nanp_rules() -> None:
    assert patterns._nanp_ok(b"2125551234")
    for number in (b"1125551234", b"2121551234", b"2115551234", b"2125111234", b"0125551234"):
        assert not patterns._nanp_ok(number), number


def test_the_integer_part_of_a_float_token_is_exact() -> None:
    """``_integer_part`` reads what ``int(Decimal(token))`` reads (no double rounding), as
    long as that has at most 19 digits and is not 0."""
    rng = random.Random(RNG_SEED)
    for _ in range(20_000):
        integer = "".join(rng.choices(string.digits, k=rng.randint(0, 21)))
        fraction = "".join(rng.choices(string.digits, k=rng.randint(0, 6)))
        exponent = rng.choice(["", f"{rng.randint(-25, 25)}", f"+{rng.randint(0, 25):03d}", "-0", "+99999"])
        if not integer and not fraction:
            continue
        token = f"{integer or '0'}.{fraction}e{exponent or 0}"
        value = int(Decimal(token)) if len(exponent.lstrip("+-").lstrip("0")) <= 4 else 0
        expected = str(value).encode() if 0 < value < 10**19 else None
        got = patterns._integer_part((integer + fraction).encode(), len(fraction), exponent.encode())
        assert got == expected, token
