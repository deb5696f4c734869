"""UTF-16 digits whose code units are printable ASCII, tabs and line breaks: text that folds
to itself, which the classifier's folding gates leave to the raw scan (THREAT-MODEL, the row
naming ``other_encodings.digit_encoding``).

Devanagari, Gurmukhi and Malayalam digits (U+0966, U+0A66, U+0D66) are, in UTF-16-LE, a letter
f..o then a tab, newline or return (the other way round in UTF-16-BE); superscript digits
(U+2070, U+2074-2079) a letter beside a space; circled digits (U+2460-2468) a letter beside
``$``. An SSN or a card so written (no byte order mark, no NUL) reaches a client that decodes
the element as UTF-16. ``digit_encoding`` reads such text, and the classifier asks it of every
element (``hidden_values.hidden_by_folding``; on the raw path and for ASCII tensors, the
native pass ``other_encodings.raw_digit_rows`` / ``read_as_digits`` names the few that do).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Sequence

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import classify_outputs, native
from labelgate.classify.folding import folded
from labelgate.classify.other_encodings import digit_encoding
from labelgate.enforce import apply_masks
from labelgate.enforce.strategies import Mask, Masker
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG, DETECTORS, KEY
from tests.enforce.test_partial_wide_digits import _digits_shown

THIN_SPACE = "\u2009"  # a separator with no zero byte: "\t " in UTF-16-LE, a space folded
SSN = "212-55-5462"  # valid: not 000, 666 or 9xx, not one published in advertising
CARD = "4111111111111111"  # Luhn-valid
CARD_OF_SUPERSCRIPTS = "4444444444444448"  # Luhn-valid, no 1, 2 or 3 (U+00B9-00B3 hold a NUL)
SUPERSCRIPTS = {0: 0x2070, **{digit: 0x2070 + digit for digit in range(4, 10)}}


def _in_script(value: str, zero: int) -> str:
    """``value``'s digits written from the script whose zero is ``zero``, its other characters
    thin spaces."""
    return "".join(chr(zero + int(char)) if char.isdigit() else THIN_SPACE for char in value)


def _cases() -> dict[str, tuple[bytes, str, str]]:
    """id -> (element, its encoding, the detector a reader of it finds)."""
    cases: dict[str, tuple[bytes, str, str]] = {}
    for script, zero in (("devanagari", 0x0966), ("gurmukhi", 0x0A66), ("malayalam", 0x0D66)):
        for encoding in ("utf-16-le", "utf-16-be"):
            cases[f"{script} ssn {encoding}"] = (_in_script(SSN, zero).encode(encoding), encoding, "us_ssn")
            cases[f"{script} card {encoding}"] = (
                _in_script(CARD, zero).encode(encoding),
                encoding,
                "credit_card",
            )
    for encoding in ("utf-16-le", "utf-16-be"):
        grouped = " ".join(CARD[start : start + 4] for start in range(0, 16, 4))
        cases[f"devanagari grouped card {encoding}"] = (
            _in_script(grouped, 0x0966).encode(encoding),
            encoding,
            "credit_card",
        )
        superscripts = "".join(chr(SUPERSCRIPTS[int(char)]) for char in CARD_OF_SUPERSCRIPTS)
        cases[f"superscript card {encoding}"] = (superscripts.encode(encoding), encoding, "credit_card")
        circled = "".join(chr(0x245F + int(char)) for char in CARD)
        cases[f"circled card {encoding}"] = (circled.encode(encoding), encoding, "credit_card")
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_such_text_folds_to_itself_and_reads_as_utf16_digits(case: str) -> None:
    data, encoding, _ = CASES[case]
    assert data.isascii() and 0 not in data and not data.startswith((b"\xff\xfe", b"\xfe\xff"))
    assert folded(data) is None  # the raw scan's alone
    assert DETECTORS.scan_each([data]) == {}  # nothing as written
    assert digit_encoding(data) == encoding


def _packed(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _decoded(name: str, elements: list[bytes]) -> Tensor:
    """``elements`` as the gateway gets them: a raw output decoded (its raw form kept)."""
    response = pb.ModelInferResponse(
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=name, datatype="BYTES", shape=[len(elements)])],
        raw_output_contents=[_packed(elements)],
    )
    (tensor,) = oip.decode_outputs(response)
    return tensor


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_a_value_in_such_text_is_found_in_a_public_output(case: str, raw: bool) -> None:
    """The end to end case: ``segment`` is public; the element's UTF-16 reading holds the value,
    so a detection spans it whole, and a policy's mask for the detector names it."""
    data, _, detector = CASES[case]
    elements = [b"retail", data]
    tensor = _decoded("segment", elements) if raw else Tensor("segment", "BYTES", [2], elements)
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    spans = classification.spans.get("segment", {})
    assert [(hit.detector, hit.start, hit.end) for hit in spans.get(1, [])] == [(detector, 0, len(data))]
    assert 0 not in spans


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
def test_a_json_object_that_reads_as_utf16_digits_is_opaque(use_native: bool) -> None:
    """A JSON object is ASCII that folds to itself too: ``{"a":"t t ... x "}`` is a card of
    superscripts to a client decoding the element as UTF-16-LE. The element is opaque
    (``FOLDED_TEXT``): the detector and the opaque field span it whole, and a mask on either
    rewrites it whole."""
    superscripts = "".join(chr(SUPERSCRIPTS[int(char)]) for char in CARD_OF_SUPERSCRIPTS)
    element = b'{"a":"' + superscripts.encode("utf-16-le") + b'"}'
    assert json.loads(element) == {"a": superscripts.encode("utf-16-le").decode()}
    assert digit_encoding(element) == "utf-16-le"
    if use_native and not native.digit_runs_available():
        pytest.skip("labelgate_native is not installed")
    with native.digit_runs_forced(use_native):
        tensor = Tensor("segment", "BYTES", [2], [b'{"a":"retail"}', element])
        classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    spans = classification.spans.get("segment", {})
    assert [(hit.detector, hit.start, hit.end) for hit in spans.get(1, [])] == [
        ("credit_card", 0, len(element)),
        ("opaque-json", 0, len(element)),
    ]
    assert 0 not in spans
    masks = [{"path": "outputs.segment{credit_card}", "strategy": "redact", "params": {}}]
    [result] = apply_masks([tensor], classification, masks, KEY)
    assert result.values[0] == b'{"a":"retail"}' and result.values[1] != element


# Ordinary ASCII text, some of it read as UTF-16 digits that are no value (four superscript
# digits, Devanagari digits as single-letter columns of a TSV): nothing found, nothing masked.
ORDINARY = [
    b"t u v w x",
    b"x y x y x y x y",
    b"f\tg\th\ti\tj\n",
    b"name\tsegment\tscore\nana\tretail\t0.42\n",
    b"a\tb\tc\td\te\tf\tg\th\n",
    b"$a$b$c$d",
    json.dumps({"id": "cust-000123", "segment": "retail", "tags": ["a", "b"], "score": 12.5}).encode(),
    b"The committee met on Tuesday to review the quarterly budget; it was approved.",
    base64.b64encode(bytes(range(256))),
    b"cust-000123 cust-000124 2024-01-31 10:15:00",
]


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
def test_ordinary_ascii_text_is_left_unchanged(raw: bool) -> None:
    """A mask needs a detector's hit in some reading: text whose UTF-16 reading shows digits
    but no value keeps every byte, under masks for every detector a wide reading may find."""
    elements = list(ORDINARY)
    tensor = _decoded("segment", elements) if raw else Tensor("segment", "BYTES", [len(elements)], elements)
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    assert classification.spans.get("segment", {}) == {}
    masks = [
        {"path": f"outputs.segment{{{name}}}", "strategy": "redact", "params": {}}
        for name in sorted(DETECTORS.names)
    ]
    [result] = apply_masks([tensor], classification, masks, KEY)
    assert list(result.values) == elements


@pytest.mark.parametrize("keep_last", [0, 2, 4])
@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_partial_keeps_no_more_digits_of_such_text_than_keep_last(case: str, keep_last: int) -> None:
    """``partial`` counts ASCII text a byte a character (``strategies._partial_bytes``): each
    UTF-16 digit here is two of them, so ``keep_last`` bytes show at most half as many digits."""
    data, _, _ = CASES[case]
    assert _digits_shown(data) >= 9
    mask = Mask("outputs.segment", "partial", {"keep_last": keep_last})
    masker = Masker(KEY)
    masked = masker.raw(data, mask)
    assert len(masked) == len(data) and _digits_shown(masked) <= keep_last, masked
    assert masker.text(data.decode("ascii"), mask).encode() == masked
    assert re.fullmatch(rb"\**", masked[: len(data) - keep_last])
