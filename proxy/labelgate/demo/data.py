"""Deterministic synthetic customers for the demo backend. Never real people.

``customer(customer_id)`` always returns the same row for the same id: every value comes
from ``random.Random(customer_id)``. Identifiers follow the real format rules (so content
detectors and masks have realistic work) but are random: SSNs obey the SSA rules, card
numbers pass Luhn, IBANs carry valid check digits, e-mail addresses use the reserved
``example.*`` domains.

``notes`` varies by ``customer_id % 6`` so tests can pick a variant by id:

===  ==============  =====================================================
id   kind            what ``notes`` holds
===  ==============  =====================================================
0    ``plain``       plain text, nothing sensitive
1    ``ssn``         a sentence containing the row's SSN
2    ``card``        a sentence containing the row's card number
3    ``email``       a sentence containing the row's e-mail address
4    ``iban``        a sentence containing an IBAN
5    ``json``        a JSON object: ``contact.ssn``, ``contact.email``,
                     ``billing.iban``, ``billing.card_number``, ``preferences.channel``
===  ==============  =====================================================
"""

from __future__ import annotations

import functools
import json
import random
import string
import struct
from dataclasses import dataclass

NOTE_KINDS = ("plain", "ssn", "card", "email", "iban", "json")

SEGMENTS = ("retail", "small-business", "enterprise", "private-banking")

_FIRST_NAMES = (
    "Avery", "Blake", "Casey", "Dana", "Elliot", "Frankie", "Gray", "Harper", "Indigo", "Jules",
    "Kai", "Lane", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Tatum",
)  # fmt: skip
_LAST_NAMES = (
    "Ashdown", "Brightwater", "Copperfield", "Dunmore", "Eastbrook", "Fairwind", "Glenholm",
    "Hollowell", "Ironwood", "Juniper", "Kestrel", "Larkspur", "Mossgrove", "Northcott",
    "Oakhurst", "Pinecrest", "Quarrington", "Ravensworth", "Stonebridge", "Thistlewood",
)  # fmt: skip
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_PLAIN_NOTES = (
    "Prefers contact by post. Interested in the savings plan.",
    "Asked about branch opening hours during the holidays.",
    "Happy with the service; no follow-up needed.",
    "Requested a paper statement for last quarter.",
    "Will call back next week about the mortgage offer.",
)
_SECRET_ALPHABET = string.ascii_letters + string.digits
# Country, BBAN length: numeric BBANs (stdnum.iban also checks the French RIB key).
_IBAN_COUNTRIES = (("DE", 18), ("FR", 23))


@dataclass(frozen=True)
class Customer:
    customer_id: int
    segment: str  # public
    name: str  # internal
    email: str  # internal
    risk_score: float  # internal; exactly representable in FP32
    ssn: str  # confidential, "AAA-GG-SSSS"
    card_number: str  # confidential, 16 digits
    notes: str  # free text, see the module docstring
    account_secret: str  # restricted


def note_kind(customer_id: int) -> str:
    """Which ``notes`` variant a customer gets (see the module docstring)."""
    return NOTE_KINDS[customer_id % len(NOTE_KINDS)]


@functools.lru_cache(maxsize=65536)
def customer(customer_id: int) -> Customer:
    """The synthetic customer for an id; cached because benchmarks ask for the same ids often."""
    rng = random.Random(customer_id)  # noqa: S311 - deterministic fake data, reproducible by design
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    email = f"{first}.{last}{rng.randrange(100)}@{rng.choice(_EMAIL_DOMAINS)}".lower()
    ssn = us_ssn(rng)
    card_number = luhn_card_number(rng)
    return Customer(
        customer_id=customer_id,
        segment=rng.choice(SEGMENTS),
        name=f"{first} {last}",
        email=email,
        risk_score=as_fp32(round(rng.random(), 4)),
        ssn=ssn,
        card_number=card_number,
        notes=_notes(rng, note_kind(customer_id), ssn=ssn, card_number=card_number, email=email),
        account_secret="sk_live_" + "".join(rng.choices(_SECRET_ALPHABET, k=24)),
    )


def us_ssn(rng: random.Random) -> str:
    """A random SSN that follows the SSA rules: area not 000/666/9xx, group not 00, serial not 0000."""
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def luhn_card_number(rng: random.Random) -> str:
    """A random 16-digit card number (Visa or Mastercard prefix) with a valid Luhn check digit."""
    prefix = rng.choice(("4", "51", "52", "53", "54", "55"))
    body = prefix + "".join(rng.choices(string.digits, k=15 - len(prefix)))
    return body + luhn_check_digit(body)


def luhn_check_digit(digits: str) -> str:
    total = 0
    # Double every second digit counting from the right of the final number (check digit at 0).
    for position, char in enumerate(reversed(digits), start=1):
        value = int(char) * (2 if position % 2 == 1 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def iban(rng: random.Random) -> str:
    """A random IBAN with valid ISO 7064 mod 97-10 check digits (numeric BBAN countries)."""
    country, length = rng.choice(_IBAN_COUNTRIES)
    bban = "".join(rng.choices(string.digits, k=length))
    if country == "FR":
        # French RIB: bank(5) branch(5) account(11) key(2), key = 97 - (89b + 15g + 3a) mod 97.
        bank, branch, account = bban[:5], bban[5:10], bban[10:21]
        key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
        bban = f"{bank}{branch}{account}{key:02d}"
    rearranged = bban + "".join(str(ord(c) - 55) for c in country) + "00"
    return f"{country}{98 - int(rearranged) % 97:02d}{bban}"


def _notes(rng: random.Random, kind: str, *, ssn: str, card_number: str, email: str) -> str:
    if kind == "plain":
        return rng.choice(_PLAIN_NOTES)
    if kind == "ssn":
        return f"Customer called to confirm the SSN on file, {ssn}, before the address change."
    if kind == "card":
        return f"Card {card_number} was reported lost; a replacement is on its way."
    if kind == "email":
        return f"Send the signed contract to {email} and copy the branch manager."
    if kind == "iban":
        return f"Refund the overpayment to IBAN {iban(rng)} within five working days."
    document = {
        "contact": {"ssn": ssn, "email": email},
        "billing": {"iban": iban(rng), "card_number": card_number},
        "preferences": {"channel": rng.choice(("post", "phone", "app"))},
    }
    return json.dumps(document)


def as_fp32(value: float) -> float:
    """Round to the nearest float32 so values survive an FP32 tensor exactly."""
    rounded: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return rounded
