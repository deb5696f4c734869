"""Synthetic customers: deterministic, and every identifier follows its real format rules."""

from __future__ import annotations

import json
import random
import re
import struct

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from labelgate.demo import data
from labelgate.demo.data import NOTE_KINDS, SEGMENTS, customer, note_kind

IDS = range(600)
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
CARD = re.compile(r"\b\d{16}\b")
EMAIL = re.compile(r"\b[\w.]+@example\.(?:com|org|net)\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}[0-9A-Z]{10,30}\b")


def test_same_id_same_row_and_ids_differ() -> None:
    assert [customer(i).customer_id for i in range(3)] == [0, 1, 2]
    fresh = data.customer.__wrapped__  # bypass the cache: determinism must not depend on it
    assert fresh(42) == fresh(42) == customer(42)
    assert customer(1) != customer(2)
    assert len({customer(i).ssn for i in IDS}) > 590


def test_identifiers_follow_their_rules() -> None:
    for customer_id in IDS:
        check_identifiers(customer(customer_id))


def check_identifiers(row: data.Customer) -> None:
    assert row.segment in SEGMENTS
    assert stdnum_ssn.is_valid(row.ssn), row.ssn
    area, group, serial = row.ssn.split("-")
    assert area not in ("000", "666") and not area.startswith("9")
    assert group != "00" and serial != "0000"
    assert len(row.card_number) == 16 and row.card_number.isdigit()
    assert luhn.is_valid(row.card_number)
    assert EMAIL.fullmatch(row.email)
    assert re.fullmatch(r"sk_live_[A-Za-z0-9]{24}", row.account_secret)
    assert 0.0 <= row.risk_score < 1.0
    assert struct.unpack("<f", struct.pack("<f", row.risk_score))[0] == row.risk_score


def test_iban_generator_always_passes_stdnum() -> None:
    for seed in range(2000):
        value = data.iban(random.Random(seed))
        assert stdnum_iban.is_valid(value), value


def test_luhn_check_digit_matches_stdnum() -> None:
    for body in ("7992739871", "411111111111111", "0", "5555555555554444"[:-1]):
        assert data.luhn_check_digit(body) == luhn.calc_check_digit(body)


def test_note_kind_follows_the_id() -> None:
    assert [note_kind(i) for i in range(6)] == list(NOTE_KINDS)
    assert {note_kind(i) for i in IDS} == set(NOTE_KINDS)


def test_notes_hold_what_their_kind_promises() -> None:
    for customer_id in IDS:
        check_notes(customer(customer_id), note_kind(customer_id))


def check_notes(row: data.Customer, kind: str) -> None:
    if kind == "json":
        document = json.loads(row.notes)
        assert document["contact"] == {"ssn": row.ssn, "email": row.email}
        assert stdnum_iban.is_valid(document["billing"]["iban"])
        assert document["billing"]["card_number"] == row.card_number
        return
    assert not row.notes.lstrip().startswith("{")
    found = {
        "ssn": SSN.findall(row.notes),
        "card": CARD.findall(row.notes),
        "email": EMAIL.findall(row.notes),
        "iban": IBAN.findall(row.notes),
    }
    expected = {"ssn": [row.ssn], "card": [row.card_number], "email": [row.email]}
    for what, values in found.items():
        if what == kind:
            if kind == "iban":
                assert len(values) == 1 and stdnum_iban.is_valid(values[0])
            else:
                assert values == expected[what]
        else:
            assert values == [], f"{kind} note also has a {what}: {row.notes}"
    if kind == "plain":
        assert not re.search(r"\d", row.notes)


def test_names_and_emails_are_fictional() -> None:
    # Reserved example domains only (RFC 2606), so no message can reach a real mailbox.
    assert {customer(i).email.rsplit("@", 1)[1] for i in IDS} == {"example.com", "example.org", "example.net"}
