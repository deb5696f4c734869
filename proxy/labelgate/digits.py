"""Whole numbers read from untrusted text (headers, forms, addresses): ASCII digits only.

``str.isdigit()`` also accepts digits ``int()`` refuses (``"²"``) or reads as other
numbers (``"١٢"``), so a check with it followed by ``int()`` turned a header into a 500.
"""

from __future__ import annotations

import re

_ASCII_DIGITS = re.compile(r"[0-9]+")
# Past this many significant digits the value is larger than every limit it is compared with
# (and ``int()`` of thousands of digits is refused or slow).
_MAX_DIGITS = 18


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative integer when it is ASCII digits only, else None. A number
    of more than 18 significant digits comes back as 10**18."""
    if _ASCII_DIGITS.fullmatch(text) is None:
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= _MAX_DIGITS else 10**_MAX_DIGITS
