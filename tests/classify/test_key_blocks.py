"""PEM blocks that cross a message's texts (``classify.key_blocks``), without a message."""

from __future__ import annotations

import numpy as np

from labelgate.classify.detectors import Detection
from labelgate.classify.integer_text import CharacterRead
from labelgate.classify.key_blocks import SECRET, crosses_texts, opens_key_block

BEGIN = b"-----BEGIN PRIVATE KEY-----"
END = b"-----END PRIVATE KEY-----"
HIT = [Detection(SECRET, "restricted", 0, 5)]


def test_a_begin_marker_without_its_end_opens_a_block_in_any_form_the_scan_reads() -> None:
    assert opens_key_block(BEGIN + b"\nMIIE")
    assert not opens_key_block(BEGIN + b"\nMIIE\n" + END)
    assert opens_key_block(b"\\u002d----BEGIN PRIVATE KEY-----")  # a JSON escape decoded
    assert opens_key_block("－－－－－BEGIN PRIVATE KEY－－－－－".encode())  # full-width, folded
    assert not opens_key_block(b"no key here")


def test_a_text_the_secret_detector_flagged_that_opens_a_block_crosses_texts() -> None:
    assert crosses_texts([BEGIN, b"MIIE"], [HIT, []], [], [])
    assert not crosses_texts([BEGIN + b"\n" + END], [HIT], [], [])
    assert not crosses_texts([BEGIN], [[]], [], [])  # asked only where secret found something


def test_a_map_text_or_integer_codes_that_open_a_block_cross_texts() -> None:
    assert crosses_texts([], [], [("attrs", [b"k", BEGIN], {1: HIT})], [])
    codes = [*BEGIN]
    read = CharacterRead(("codes",), "codes[]", [(codes, np.array(codes, dtype="<i4"))], [])
    assert crosses_texts([], [], [], [read])  # no digit: a marker the scan did not look for
