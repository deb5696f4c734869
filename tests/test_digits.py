"""Whole numbers from untrusted text: ASCII digits only, never a ValueError from ``int()``."""

from __future__ import annotations

import pytest

from labelgate.digits import whole_number


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("007", 7), ("8080", 8080), ("9" * 40, 10**18)])
def test_ascii_digits_are_a_number(text: str, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", ["", "²", "١٢", "１２", "-1", "+1", " 1", "1 ", "1e3", "0x10", "1_000"])
def test_anything_else_is_none(text: str) -> None:
    assert whole_number(text) is None
