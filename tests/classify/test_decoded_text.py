"""Decoded text told from binary data (``decoded_text``): its strays and a guessed decode's
spaces counted as their patterns find them."""

from __future__ import annotations

import numpy as np
import unicodedata2 as unicode_data

from labelgate.classify.decoded_text import _NOT_TEXT, _SPACES, reads_as_text, stray_count

RNG = np.random.default_rng(11)


def test_strays_are_counted_as_the_pattern_finds_them() -> None:
    for size in (100, 5000, 100_000):
        text = RNG.bytes(size).decode("utf-8", "replace") + "\U0001f600\ufffd\x85\udfff"
        assert stray_count(text) == len(_NOT_TEXT.findall(text))
        assert reads_as_text(text) == (len(_NOT_TEXT.findall(text)) * 8 <= len(text))


def test_the_spaces_a_guessed_decode_needs_are_every_space_separator() -> None:
    separators = "".join(chr(code) for code in range(0x110000) if unicode_data.category(chr(code)) == "Zs")
    assert "".join(_SPACES.findall(separators)) == separators
