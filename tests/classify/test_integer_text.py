"""Repeated integer fields read as characters (``classify.integer_text``), without a message."""

from __future__ import annotations

import numpy as np

from labelgate.classify.detectors import DetectorSet
from labelgate.classify.integer_text import character_hits, key_order, unread_marker, worth_reading

SSN_CODES = [ord(c) for c in "SSN 536-22-8172"]


def test_codes_that_spell_an_ssn_are_worth_reading_and_found() -> None:
    detectors = DetectorSet.default()
    assert worth_reading(SSN_CODES, detectors)
    found = character_hits(np.array(SSN_CODES, dtype="<i4"), detectors)
    assert "us_ssn" in {hit.detector for hit in found}


def test_codes_without_a_digit_an_at_or_a_marker_letter_are_not_read() -> None:
    assert not worth_reading([1, 3, 224, 224, 3], DetectorSet.default())
    assert character_hits(np.array([], dtype="<i4"), DetectorSet.default()) == []


def test_a_marker_letter_without_digits_is_a_marker_the_scan_did_not_look_for() -> None:
    assert unread_marker([ord(c) for c in "BEGIN PRIVATE KEY"])
    assert not unread_marker([ord(c) for c in "KEY 1"])  # a digit: the scan looked
    assert not unread_marker([ord(c) for c in "PLAIN"])


def test_map_keys_order_numbers_by_value_then_digit_texts_then_other_text() -> None:
    assert sorted([10, -2, 3], key=key_order) == [-2, 3, 10]
    assert sorted(["b", "10", "9", "a"], key=key_order) == ["9", "10", "a", "b"]
    assert sorted([b"2", b"x", b"11"], key=key_order) == [b"2", b"11", b"x"]
