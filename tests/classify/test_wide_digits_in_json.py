"""UTF-16 digits in a JSON string, at any offset, escaped or not; and a run of UTF-16 digits
in the byte order a text's NULs or mark do not name (THREAT-MODEL, the row naming
``other_encodings.digit_encoding``).

Review of cc66414 (two leaks, both tested here and failing on that code):

1. ``json.dumps({"a": ssn_as_utf16le_text})`` writes each tab of the Devanagari digits'
   code units as ``\\t``: the element as written never reads as UTF-16 digits, and decoded
   whole it does only when the string starts at an even offset. A client parsing the JSON and
   decoding the string as UTF-16-LE sees the SSN. Each JSON string (key or value, JSON in a
   string too) is now read from its own first byte (``other_encodings.string_readings``),
   and an element holding one that shows a value is opaque, the detector spanning it whole.
2. Text with NULs was read only in the byte order its NULs suggest (``name: `` in UTF-16-BE),
   so a run of digits in UTF-16-LE after it was never read; nor a second run in the other
   byte order of text without NULs. Each byte order holding a run is read now
   (``other_encodings.wide_encodings``, ``digit_encodings``).
"""

from __future__ import annotations

import json
import string
import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import classify_outputs, native
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.other_encodings import (
    digit_encoding,
    json_strings,
    read_as_digits,
    wide_encoding,
    wide_folded,
)
from labelgate.enforce import apply_masks
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG, DETECTORS, KEY
from tests.classify.test_native_wide_digits import DIGITS, FILLERS, OTHERS

THIN_SPACE = "\u2009"  # "\t " in UTF-16-LE: json.dumps writes its tab as \t
SSN = "212-55-5462"
CARD_OF_SUPERSCRIPTS = "4444444444444448"  # Luhn-valid, no 1, 2 or 3 (U+00B9-00B3 hold a NUL)
SUPERSCRIPTS = {0: 0x2070, **{digit: 0x2070 + digit for digit in range(4, 10)}}


def _devanagari(value: str) -> str:
    return "".join(chr(0x0966 + int(char)) if char.isdigit() else THIN_SPACE for char in value)


def _as_text(data: bytes) -> str:
    """UTF-16 bytes that are ASCII, as the string a model writes into its JSON."""
    return data.decode("ascii")


SSN_LE = _devanagari(SSN).encode("utf-16-le")  # letters and tabs: json.dumps escapes the tabs
SSN_BE = _devanagari(SSN).encode("utf-16-be")
CARD_LE = "".join(chr(SUPERSCRIPTS[int(char)]) for char in CARD_OF_SUPERSCRIPTS).encode("utf-16-le")
CARD_BE = "".join(chr(SUPERSCRIPTS[int(char)]) for char in CARD_OF_SUPERSCRIPTS).encode("utf-16-be")
assert b"\t" in SSN_LE and CARD_LE.isascii() and all(32 <= byte < 127 for byte in CARD_LE)


def _json_cases() -> dict[str, tuple[bytes, str]]:
    """id -> (element, the detector a client parsing it and decoding a string finds)."""
    cases: dict[str, tuple[bytes, str]] = {}
    for name, data, detector in (
        ("ssn le", SSN_LE, "us_ssn"),
        ("ssn be", SSN_BE, "us_ssn"),
        ("superscript card le", CARD_LE, "credit_card"),
        ("superscript card be", CARD_BE, "credit_card"),
    ):
        value = _as_text(data)
        written = {
            # A leaf at an odd and an even offset, spaced as json.dumps writes and compact.
            "leaf odd": json.dumps({"a": value}),
            "leaf even": json.dumps({"ab": value}),
            "compact leaf odd": json.dumps({"ab": value}, separators=(",", ":")),
            "compact leaf even": json.dumps({"a": value}, separators=(",", ":")),
            # A key, at an even and an odd offset.
            "key even": json.dumps({value: 1}),
            "key odd": json.dumps({"ab": 1, value: 2}),
            "nested leaf": json.dumps({"a": {"bc": [1, "x", value]}}),
            # JSON written into a JSON string: escaped twice.
            "json in a string": json.dumps({"doc": json.dumps({"a": value})}),
            # An array and a bare string: text in an output that is not keyed.
            "array": json.dumps(["x", value]),
            "bare string": json.dumps(value),
            # \u0009 rather than \t: an escape of another kind.
            "unicode escapes": json.dumps({"a": value}).replace("\\t", "\\u0009"),
        }
        for shape, element in written.items():
            cases[f"{name} {shape}"] = (element.encode(), detector)
        # Not JSON a strict reader takes (a raw tab in a string), at an odd offset: opaque.
        cases[f"{name} raw tabs"] = (b'{"a": "' + data + b'"}', detector)
    return cases


JSON_CASES = _json_cases()


def _packed(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _tensor(elements: list[bytes], raw: bool) -> Tensor:
    """``elements`` as a typed tensor, or as the gateway gets a raw output (its raw form kept)."""
    if not raw:
        return Tensor("segment", "BYTES", [len(elements)], elements)
    response = pb.ModelInferResponse(
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name="segment", datatype="BYTES", shape=[len(elements)])
        ],
        raw_output_contents=[_packed(elements)],
    )
    (tensor,) = oip.decode_outputs(response)
    return tensor


def _masks() -> list[dict[str, object]]:
    return [
        {"path": f"outputs.segment{{{name}}}", "strategy": "redact", "params": {}}
        for name in sorted(DETECTORS.names)
    ]


def test_the_cases_hide_the_value_from_every_reading_but_the_strings() -> None:
    """What a client sees: parse the element, decode a string as UTF-16. The element as
    written shows nothing; an SSN's string at an odd offset does not read so whole (nor one
    escaped, at any offset: ``\\t`` is two bytes)."""
    for case, (element, _) in JSON_CASES.items():
        assert element.isascii() and DETECTORS.scan_each([element]) == {}, case
        assert any(digit_encoding(each) is not None for each in json_strings(element)), case
    assert digit_encoding(JSON_CASES["ssn le raw tabs"][0]) is None
    assert digit_encoding(JSON_CASES["ssn le leaf even"][0]) is None
    # The client's reading, for one of them.
    parsed = json.loads(JSON_CASES["ssn le json in a string"][0])
    assert json.loads(parsed["doc"])["a"].encode().decode("utf-16-le") == _devanagari(SSN)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
@pytest.mark.parametrize("case", JSON_CASES, ids=JSON_CASES)
def test_a_value_in_a_json_string_is_found_and_masked(case: str, raw: bool, use_native: bool) -> None:
    """``segment`` is public: the detector spans the element whole (with ``opaque-json`` for an
    object), its label reaches the output's fields, and a mask for it rewrites the element."""
    if use_native and not native.digit_runs_available():
        pytest.skip("labelgate_native is not installed")
    element, detector = JSON_CASES[case]
    elements = [b'{"a": "retail"}', element]
    with native.digit_runs_forced(use_native):
        tensor = _tensor(elements, raw)
        classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    spans = classification.spans.get("segment", {})
    found = {(hit.detector, hit.start, hit.end) for hit in spans.get(1, [])}
    assert (detector, 0, len(element)) in found, found
    assert 0 not in spans
    labels = {label for field in classification.fields for label in field.labels}
    assert DETECTORS.label_of(detector) in labels
    [masked] = apply_masks([tensor], classification, _masks(), KEY)
    assert masked.values[0] == elements[0] and masked.values[1] != element


# Mixed byte orders: marks or NULs name one, a run of digits is in the other.
NAME_BE = "name: ".encode("utf-16-be") * 3
NAME_LE = "name: ".encode("utf-16-le") * 3
MIXED = {
    "le digits after be nul text": NAME_BE + SSN_LE,
    "be digits after le nul text": NAME_LE + SSN_BE,
    "be digits after an le mark": b"\xff\xfe" + NAME_LE + SSN_BE,
    "le digits after a be mark": b"\xfe\xff" + NAME_BE + SSN_LE,
    # No NUL: a run of no value in UTF-16-LE first, the SSN in UTF-16-BE.
    "be digits after an le run": "\u0966\u0967\u0968\u0969".encode("utf-16-le") + SSN_BE,
}


@pytest.mark.parametrize("case", MIXED, ids=MIXED)
def test_each_byte_order_that_holds_digits_is_read(case: str) -> None:
    data = MIXED[case]
    expected = "utf-16-le" if "le digits" in case else "utf-16-be"
    assert wide_encoding(data) != expected  # what the marks or NULs (or the first run) say
    assert DETECTORS.scan_each([data]) == {}
    assert SSN.encode() in (wide_folded(data) or b"").replace(b" ", b"-")
    hidden = hidden_by_folding([b"retail", data], DETECTORS, {})
    assert [(hit.detector, hit.start, hit.end) for hit in hidden.get(1, [])] == [("us_ssn", 0, len(data))]


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
@pytest.mark.parametrize("case", MIXED, ids=MIXED)
def test_a_value_in_the_other_byte_order_is_found_in_an_output(case: str, raw: bool) -> None:
    data = MIXED[case]
    tensor = _tensor([b"retail", data], raw)
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    spans = classification.spans.get("segment", {})
    assert [(hit.detector, hit.start, hit.end) for hit in spans.get(1, [])] == [("us_ssn", 0, len(data))]
    [masked] = apply_masks([tensor], classification, _masks(), KEY)
    assert masked.values[1] != data


def test_a_value_in_the_other_byte_order_is_found_in_8_bit_text() -> None:
    """UINT8 text is read through ``wide_folded`` (``numbers``): each byte order too."""
    data = MIXED["le digits after be nul text"]
    tensor = Tensor("segment", "UINT8", [len(data)], list(data))
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    found = {hit.detector for hits in classification.spans.get("segment", {}).values() for hit in hits}
    assert "us_ssn" in found


# Ordinary JSON, some of whose strings read as UTF-16 digits that are no value (four
# superscripts at an odd offset, single letters between tabs): nothing found, nothing masked.
ORDINARY_JSON = [
    json.dumps({"a": "t u v w x"}).encode(),
    json.dumps({"ab": "t u v w x"}).encode(),
    json.dumps({"note": "f\tg\th\ti\tj\n", "n": 3}).encode(),
    json.dumps({"t u v w": ["x y x y", "$a$b$c$d"]}).encode(),
    json.dumps({"doc": json.dumps({"a": "f\tg\th\ti\t"})}).encode(),
    json.dumps({"contact": {"id": "cust-000123"}, "tags": ["a", "b"], "score": 12.5}).encode(),
    b'["x", "t u v w x"]',
    b'He said "f\\tg\\th\\ti\\t" twice.',
]


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
def test_ordinary_json_is_left_unchanged(raw: bool) -> None:
    elements = list(ORDINARY_JSON)
    assert len(read_as_digits(elements)) >= 5  # read, and nothing found
    tensor = _tensor(elements, raw)
    classification = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    assert classification.spans.get("segment", {}) == {}
    leaves = classification.json_elements.get("segment", {}).values()
    assert len(classification.json_elements.get("segment", {})) == 6  # no object is opaque
    assert not any(leaf.detections for each in leaves for leaf in each)
    [masked] = apply_masks([tensor], classification, _masks(), KEY)
    assert list(masked.values) == elements


# --- the prefilter never misses a string ----------------------------------------------------

_ESCAPES = [b"\\t", b"\\n", b"\\r", b'\\"', b"\\\\", b"\\u0009", b"\\u2009", b"\\ud83d\\ude00", b"\\x"]


@st.composite
def _json_texts(draw: st.DrawFn) -> bytes:
    """Text of pieces: ASCII text, quotes, escapes, runs of ASCII digit units in either byte
    order (a tab among them written as ``\\t`` now and then), strings json.dumps wrote."""
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(("text", "quote", "escape", "run", "dumped")))
        if kind == "text":
            pieces.append(draw(st.text(string.printable, max_size=6)).encode())
        elif kind == "quote":
            pieces.append(b'"')
        elif kind == "escape":
            pieces.append(draw(st.sampled_from(_ESCAPES)))
        else:
            units = draw(st.lists(st.sampled_from(DIGITS + FILLERS + OTHERS[:50]), min_size=3, max_size=8))
            if draw(st.booleans()):
                units = [unit[::-1] for unit in units]
            run = b"".join(units)
            if kind == "run":
                pieces.append(run.replace(b"\t", b"\\t") if draw(st.booleans()) else run)
            else:
                pieces.append(json.dumps({"k" * draw(st.integers(0, 2)): run.decode("ascii")}).encode())
    return b"".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_json_texts(), min_size=1, max_size=8))
def test_every_text_holding_a_string_that_reads_as_digits_is_named(texts: list[bytes]) -> None:
    """``read_as_digits`` (the classifier's gate) names every text one of whose JSON strings
    (``json_strings``) reads as UTF-16 digits from its own first byte, natively and not."""
    expected = {
        index
        for index, text in enumerate(texts)
        if digit_encoding(text) is not None
        or any(digit_encoding(each) is not None for each in json_strings(text))
    }
    for use_native in (True, False):
        if use_native and not native.digit_runs_available():
            continue
        with native.digit_runs_forced(use_native):
            assert expected <= read_as_digits(texts)


def test_json_strings_are_what_a_reader_gets() -> None:
    element = json.dumps({"a\tb": ["x\u2009", {"c": '\U0001f600"q\\'}], "d": json.dumps({"e": "f\tg"})})
    strings = json_strings(element.encode())
    parsed = json.loads(element)
    inner = json.loads(parsed["d"])
    expected = ["a\tb", "x\u2009", "c", '\U0001f600"q\\', "d", parsed["d"], "e", inner["e"]]
    assert sorted(strings) == sorted(each.encode() for each in expected)
