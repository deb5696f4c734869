"""Through a real gateway: UTF-16 digits without a NUL, and numbers drawn in one glyph.

Review (rev-mask): an SSN or a card in Mongolian digits and U+2010 hyphens, UTF-16 with no NUL,
reached a caller without groups from a public output unmasked (finding 1); ``partial`` on a
confidential output kept all nine Mongolian digits after ``abcd\\xc3\\xa9`` (finding 2) and
eight digits of ``⓫⓬⓭⓮⓯⓰⓱⓲`` (finding 3). The test fails on the old code.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from tests.gateway.harness import (
    AuditedStack,
    TokenIssuer,
    capture_unary,
    run_audited_gateway,
    run_planted_upstream,
)
from tests.gateway.planted_upstream import plant_request

PUBLIC, CONFIDENTIAL = "wide-digits-public", "wide-digits-confidential"
HYPHEN = "\u2010"


def _mongolian(value: str) -> str:
    return "".join(chr(0x1810 + int(char)) if char.isdigit() else HYPHEN for char in value)


CASES = {
    # (model, caller, element): what a caller receives must show no value, no more than 4 digits.
    "ssn, public, no groups": (PUBLIC, "no-group", _mongolian("123-45-6789").encode("utf-16-le")),
    "card, public, no groups": (PUBLIC, "no-group", _mongolian("4111111111111111").encode("utf-16-be")),
    "partial after an e-acute": (
        CONFIDENTIAL,
        "analyst",
        b"abcd\xc3\xa9" + _mongolian("123456789").encode("utf-16-le"),
    ),
    "partial of drawn numbers": (
        CONFIDENTIAL,
        "analyst",
        "\u24eb\u24ec\u24ed\u24ee\u24ef\u24f0\u24f1\u24f2".encode(),
    ),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[AuditedStack]:
    directory: Path = tmp_path_factory.mktemp("wide-digits")
    entries = [
        {"model": PUBLIC, "path": "outputs.*", "labels": ["public"]},
        {"model": CONFIDENTIAL, "path": "outputs.text", "labels": ["confidential"]},
    ]
    with (
        run_planted_upstream(directory) as (address, _),
        run_audited_gateway(directory, address, token_issuer, catalog_entries=entries) as audited,
    ):
        yield audited


def _digits(element: bytes) -> int:
    """The most digits a reading of ``element`` shows: UTF-8 or UTF-16 of either byte order,
    each character's folded digits, a drawn number's two."""
    counts = []
    for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
        reading = element[: len(element) // 2 * 2] if encoding != "utf-8" else element
        text = reading.decode(encoding, "replace")
        drawn = sum(2 for char in text if "\u24eb" <= char <= "\u24f4")
        mongolian = sum(1 for char in text if "\u1810" <= char <= "\u1819")
        counts.append(len(re.findall("[0-9]", text)) + drawn + mongolian)
    return max(counts)


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_what_a_caller_receives_shows_no_more_than_its_mask_allows(
    stack: AuditedStack, token_issuer: TokenIssuer, case: str
) -> None:
    model, caller, value = CASES[case]
    assert _digits(value) >= 8  # there to find
    output = {"name": "text", "datatype": "BYTES", "shape": [1], "values": [{"hex": value.hex()}]}
    request = plant_request({"reply": {"raw": True, "outputs": [output]}}, model=model)
    got = asyncio.run(capture_unary(stack.address, request, token_issuer.headers(caller)))
    assert got.code.name == "OK", got.details
    reply = pb.ModelInferResponse.FromString(got.messages[0])
    raw = reply.raw_output_contents[0]
    element = raw[4 : 4 + struct.unpack("<I", raw[:4])[0]]
    assert _digits(element) <= 4, element
