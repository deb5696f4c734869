"""Numeric tensors are scanned for the numbers and the text they hold."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, characters, classify_outputs
from labelgate.classify.detectors import CustomPattern
from labelgate.classify.fields import Classification
from labelgate.classify.folding import UNFOLDABLE, folded
from labelgate.classify.numbers import character_detections, numeric_detections
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
CARD = 4111111111111111
TEXT = b"ssn is 123-45-6789 card 4111111111111111"
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def span_fields(result: Classification) -> dict[str, set[str]]:
    """The ``{detector}`` fields and their labels."""
    return {item.path: set(item.labels) for item in result.fields if "{" in item.path}


def found(tensor: Tensor, detectors: DetectorSet = DETECTORS) -> set[str]:
    return {hit.detector for hits in numeric_detections(tensor, detectors).values() for hit in hits}


def decoded(tensor: Tensor) -> Tensor:
    """``tensor`` as the gateway gets it from a raw reply: values built from the buffer."""
    response = pb.ModelInferResponse()
    encode_outputs(response, [tensor], raw=True)
    (result,) = decode_outputs(response)
    assert result.raw_form() is not None
    return result


@pytest.mark.parametrize("datatype", ["INT64", "UINT64"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_a_card_in_a_64_bit_integer_tensor_gets_its_span_field(
    datatype: str, build: Callable[[Tensor], Tensor]
) -> None:
    tensor = build(Tensor("notes", datatype, [2], [CARD, 123456789]))
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert span_fields(result) == {"outputs.notes{credit_card}": {"confidential"}}
    assert [hit.detector for hit in result.spans["notes"][0]] == ["credit_card"]


def test_a_negative_card_is_found_as_its_digits() -> None:
    assert found(Tensor("n", "INT64", [1], [-CARD])) == {"credit_card"}


@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_the_extremes_of_64_bit_integers_are_read_without_wrapping(build: Callable[[Tensor], Tensor]) -> None:
    # abs(INT64_MIN) wraps in numpy; 19-digit values are candidates (and no card here).
    assert found(build(Tensor("n", "INT64", [3], [INT64_MIN, INT64_MAX, 0]))) == set()
    assert found(build(Tensor("n", "UINT64", [2], [UINT64_MAX, 0]))) == set()
    assert found(build(Tensor("n", "INT64", [2], [INT64_MIN, -CARD]))) == {"credit_card"}


@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_an_fp64_is_read_as_its_integer_parts_digits(build: Callable[[Tensor], Tensor]) -> None:
    assert found(build(Tensor("x", "FP64", [2], [float(CARD), 0.5]))) == {"credit_card"}
    assert found(build(Tensor("x", "FP64", [1], [-float(CARD)]))) == {"credit_card"}
    # A reader sees the card in 4111111111111111.5 (exact in a double) as well.
    assert found(build(Tensor("x", "FP64", [2], [CARD + 0.5, -(CARD + 0.5)]))) == {"credit_card"}
    # Not finite, or past 2**64: not a number's digits.
    assert found(build(Tensor("x", "FP64", [3], [float("nan"), float("inf"), -1e300]))) == set()


def test_ordinary_numbers_add_nothing() -> None:
    tensors = [
        Tensor("customer_id", "INT64", [3], [0, 41, 10**12 - 1]),
        Tensor("count", "INT32", [2], [2**31 - 1, -(2**31)]),
        Tensor("score", "FP64", [2], [0.25, 1e11]),
        Tensor("small", "UINT16", [1], [65535]),
    ]
    result = classify_outputs("m", tensors, CATALOG, DETECTORS)
    assert span_fields(result) == {}
    assert result.spans == {}


def test_fp32_is_not_read_as_digits() -> None:
    # FP32 cannot hold a 13-digit number exactly (numbers.py's docstring); its bytes are read
    # as text (test_numbers_packed.py), and a card's value holds none.
    assert found(Tensor("x", "FP32", [1], [float(CARD)])) == set()


@pytest.mark.parametrize("datatype", ["UINT8", "INT8"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_the_bytes_of_an_8_bit_tensor_are_scanned_as_text(
    datatype: str, build: Callable[[Tensor], Tensor]
) -> None:
    values = list(TEXT) if datatype == "UINT8" else [byte - 256 if byte > 127 else byte for byte in TEXT]
    tensor = build(Tensor("notes", datatype, [len(TEXT)], values))
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert span_fields(result) == {
        "outputs.notes{credit_card}": {"confidential"},
        "outputs.notes{us_ssn}": {"confidential"},
    }


def test_8_bit_text_is_folded_as_bytes_text_is() -> None:
    # Full-width digits (UTF-8) read as an SSN once folded, as in a BYTES element.
    text = "ssn １２３-４５-６７８９".encode()
    assert found(Tensor("notes", "UINT8", [len(text)], list(text))) == {"us_ssn"}


def test_8_bit_text_with_json_escapes_is_scanned_decoded() -> None:
    text = b"ssn \\u0031\\u0032\\u0033-45-6789"
    assert found(Tensor("notes", "UINT8", [len(text)], list(text))) == {"us_ssn"}


@pytest.mark.parametrize("datatype", ["INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_text_in_a_wider_integer_tensor_is_read_a_character_an_element(
    datatype: str, build: Callable[[Tensor], Tensor]
) -> None:
    # What a client reads back with chr(): an SSN and a card as code points.
    tensor = build(Tensor("notes", datatype, [len(TEXT)], list(TEXT)))
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    assert span_fields(result) == {
        "outputs.notes{credit_card}": {"confidential"},
        "outputs.notes{us_ssn}": {"confidential"},
    }
    # Offsets are the elements the value is in.
    spans = {(hit.detector, hit.start, hit.end) for hits in result.spans["notes"].values() for hit in hits}
    assert spans == {("us_ssn", 7, 18), ("credit_card", 24, 40)}


def code_units(text: str) -> list[int]:
    """``text`` as UTF-16 code units (what a UINT16 tensor of it holds)."""
    return list(np.frombuffer(text.encode("utf-16-le"), dtype="<u2").tolist())


@pytest.mark.parametrize("datatype", ["INT16", "INT32", "INT64", "UINT32"])
@pytest.mark.parametrize(
    "text",
    [
        "key AKIAABCDEFGHIJKLMNOP end",
        "tok ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ end",
        "tok sk_live_abcdefghijklmnopqrstuvwx end",
        "key \uff21\uff2b\uff29\uff21ABCDEFGHIJKLMNOP end",  # its prefix in full-width letters
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiGwBAQEFAASCBKcwggSjAgEAAoIBAQC\n"
        "-----END PRIVATE KEY-----",
    ],
)
def test_a_secret_with_no_digit_in_a_wider_integer_tensor_is_found(datatype: str, text: str) -> None:
    # Review, seventh round: only a digit or an "@" let the characters be scanned, and a
    # token of letters (one AWS key id in 28) or a key's block may hold neither.
    assert not any(char.isdigit() for char in text)
    assert "secret" in found(Tensor("t", datatype, [len(text)], [ord(char) for char in text]))


def test_wide_text_is_folded_and_utf16_pairs_are_one_character() -> None:
    text = "\U0001f600 ssn \uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19 ok"
    units = code_units(text)
    assert len(units) == len(text) + 1  # the emoji is a pair
    assert found(Tensor("t", "UINT16", [len(units)], units)) == {"us_ssn"}
    assert found(Tensor("t", "INT32", [len(text)], [ord(char) for char in text])) == {"us_ssn"}
    # Arabic-Indic digits, a no-break hyphen and a zero-width space.
    other = "ssn \u0661\u0662\u0663\u2011\u0664\u0665-\u200b6789"
    assert found(Tensor("t", "INT64", [len(other)], [ord(char) for char in other])) == {"us_ssn"}
    hits = numeric_detections(Tensor("t", "UINT16", [len(units)], units), DETECTORS)
    assert [(hit.start, hit.end) for found_hits in hits.values() for hit in found_hits] == [(7, 18)]


def test_control_characters_between_wide_digits_hide_nothing_and_hide_no_raw_value() -> None:
    hidden = "ssn 123\x00-45-6789 card 4111\x1b[0m111111111111"
    found_hidden = found(Tensor("t", "INT32", [len(hidden)], [ord(char) for char in hidden]))
    assert found_hidden == {"us_ssn", "credit_card"}
    beyond_ascii = "ssn \uff11\uff12\uff13\x1b[0m-45-6789"
    assert found(Tensor("t", "UINT16", [len(beyond_ascii)], code_units(beyond_ascii))) == {"us_ssn"}
    # Folding drops the NUL and so joins the letter to the SSN: the text as written still has it.
    joined = "ssn 123-45-6789\x00a"
    assert found(Tensor("t", "INT32", [len(joined)], [ord(char) for char in joined])) == {"us_ssn"}


def test_elements_that_are_no_character_join_nothing() -> None:
    digits = [ord(char) for char in "4111111111111111"]
    for breaker in (-1, 0x110000, 0xD800, 2**40):
        split = [*digits[:8], breaker, *digits[8:]]
        assert character_detections(np.array(split, dtype=np.int64), DETECTORS) == [], breaker
        # Their bytes (test_numbers_packed.py) are the digits with NULs and, for these two, a
        # control character between: the card once those are dropped, as in a UINT8 tensor.
        expected = {"credit_card"} if breaker in (0x110000, 2**40) else set()
        assert found(Tensor("t", "INT64", [len(split)], split)) == expected, breaker
    lone = [*digits[:8], 0xDC00, *digits[8:]]
    assert found(Tensor("t", "UINT16", [len(lone)], lone)) == set()
    assert found(Tensor("t", "INT64", [len(digits) + 1], [-5, *digits])) == {"credit_card"}


def test_ordinary_ids_read_as_characters_add_nothing() -> None:
    for ids in (list(range(100)), list(range(10_000)), list(range(0x10FF00, 0x110000))):
        assert found(decoded(Tensor("customer_id", "INT64", [len(ids)], ids))) == set()


def test_a_custom_pattern_reads_the_exact_wide_text() -> None:
    detectors = DetectorSet(custom=[CustomPattern("ticket", r"é\d{3}", "confidential")])
    text = "\U0001f600 ref é123 ok"
    hits = numeric_detections(Tensor("t", "INT32", [len(text)], [ord(char) for char in text]), detectors)
    assert {(hit.detector, hit.start, hit.end) for found_hits in hits.values() for hit in found_hits} == {
        ("ticket", 6, 10)
    }
    units = code_units(text)
    assert found(Tensor("t", "UINT16", [len(units)], units), detectors) == {"ticket"}


def test_the_folding_table_is_folding_character_by_character() -> None:
    # characters._folding_table skips the characters that cannot fold, for speed: it must
    # still say what folding.folded says of every character it covers.
    table, longer = characters._folding_table()
    for code in range(characters._TABLE_END):
        if 0xD800 <= code <= 0xDFFF:
            continue
        text = chr(code).encode("utf-8")
        form = folded(text)
        form = text if form is None or form is UNFOLDABLE else form
        if len(form) == 1 or not form:
            assert table[code] == (form[0] if form else 0), hex(code)
        elif code in longer:
            assert longer[code] == bytes(ord(c) if c < "\x80" else 0x80 for c in form.decode()), hex(code)
            assert table[code] == characters._LONGER, hex(code)
        else:
            assert table[code] == 0x80, hex(code)  # non-ASCII, or several without ASCII


def test_a_custom_detector_reads_every_number() -> None:
    detectors = DetectorSet(custom=[CustomPattern("employee", r"\b99\d{3}\b", "confidential")])
    assert found(Tensor("ids", "INT32", [3], [7, 99123, 12]), detectors) == {"employee"}
    assert found(Tensor("ids", "FP64", [2], [99123.0, 99123.5]), detectors) == {"employee"}
    assert found(Tensor("ids", "INT32", [1], [7]), detectors) == set()


def test_detectors_at_or_below_the_outputs_label_are_not_run() -> None:
    # As for text: a catalogued confidential output is not scanned for a confidential card.
    catalog = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.pan", "labels": ["confidential"]}]}
    )
    result = classify_outputs("m", [Tensor("pan", "INT64", [1], [CARD])], catalog, DETECTORS)
    assert span_fields(result) == {}


@pytest.mark.parametrize("datatype", ["INT64", "UINT64", "FP64"])
def test_raw_and_built_values_agree_around_the_smallest_card(datatype: str) -> None:
    # 4222222222222 is a 13-digit card; the others are the bounds the raw screen reads.
    values: list[float] = [4222222222222, 2**39 - 1, 2**39, 10**12 - 1, 10**12, 2**40, 0]
    if datatype == "INT64":
        values += [-4222222222222, -(2**39), -(2**39) - 1, INT64_MIN]
    if datatype == "FP64":
        values = [float(value) for value in values] + [2.0**33, -(2.0**33), float("nan")]
    tensor = Tensor("n", datatype, [len(values)], values)
    expected = {0: ["credit_card"]} | ({7: ["credit_card"]} if datatype == "INT64" else {})
    for form in (tensor, decoded(tensor)):
        detections = numeric_detections(form, DETECTORS)
        assert {index: [hit.detector for hit in hits] for index, hits in detections.items()} == expected


def test_8_bit_text_with_control_characters_is_folded_as_bytes_text_is() -> None:
    text = b"ssn 123\x00-45-6789 card 4111\x1b[0m111111111111"
    assert found(Tensor("notes", "UINT8", [len(text)], list(text))) == {"us_ssn", "credit_card"}


def test_bytes_that_are_not_utf8_text_are_scanned_raw_only() -> None:
    # An image's bytes: read as text (folded, escapes decoded) they cost tens of ms for
    # nothing; the raw scan still finds ASCII text among them.
    noise = bytes(range(128, 256)) * 4
    image = noise + b" ssn 123-45-6789 " + noise
    assert found(decoded(Tensor("pixels", "UINT8", [len(image)], list(image)))) == {"us_ssn"}
    hidden = "ssn １２３-４５-６７８９".encode()
    assert found(decoded(Tensor("t", "UINT8", [len(hidden)], list(hidden)))) == {"us_ssn"}, "UTF-8: folded"


def test_8_bit_text_with_stray_bytes_is_still_read_as_text() -> None:
    # A byte order mark (UTF-16 as Windows writes it) or one stray byte must not turn off
    # what folding reads: NULs between digits, other scripts' digits.
    for text in (
        "ssn 123-45-6789".encode("utf-16"),
        "card 4111111111111111".encode("utf-16-be"),
        b"\xff" + "ssn １２３-４５-６７８９".encode(),
        b"\xfe ssn \\u0031\\u0032\\u0033-45-6789",
    ):
        detected = found(decoded(Tensor("t", "UINT8", [len(text)], list(text))))
        assert detected in ({"us_ssn"}, {"credit_card"}), text


def test_huge_whole_floats_are_not_read_as_their_hundreds_of_digits() -> None:
    # 1e308 is whole; its 309 digits per element cost 440 MB on an 8 MB reply (review).
    values = [1e308, -1e300, 4111111111111111.0, 2.0**64]
    tensor = decoded(Tensor("t", "FP64", [len(values)], values))
    assert numeric_detections(tensor, DETECTORS) == {2: numeric_detections(tensor, DETECTORS)[2]}
    assert found(tensor) == {"credit_card"}


# Found by review (rev-tensors): these reached a client that reads the tensor as text.
FULL_WIDTH_SSN = "ssn １２３-４５-６７８９"
ZERO_WIDTH_CARD = "card " + "\u200b".join(str(CARD))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_utf16_and_utf32_text_in_an_8_bit_tensor_is_read_decoded(
    encoding: str, build: Callable[[Tensor], Tensor]
) -> None:
    for text, detector in ((FULL_WIDTH_SSN, "us_ssn"), (ZERO_WIDTH_CARD, "credit_card")):
        data = text.encode(encoding)
        assert found(build(Tensor("t", "UINT8", [len(data)], list(data)))) == {detector}, (text, encoding)


@pytest.mark.parametrize("datatype", ["UINT32", "INT32", "UINT8"])
def test_digits_newer_than_the_runtimes_unicode_are_read_in_tensors(datatype: str) -> None:
    text = "card " + str(CARD).translate({ord(d): 0x11F50 + int(d) for d in "0123456789"})  # Kawi, 15.0
    values = list(text.encode()) if datatype == "UINT8" else [ord(char) for char in text]
    assert found(decoded(Tensor("t", datatype, [len(values)], values))) == {"credit_card"}


def test_token_ids_that_are_unassigned_code_points_read_as_nothing() -> None:
    # A third of an LLM's token ids are unassigned code points: they join nothing, and do not
    # fail the tensor closed as they would text (``characters``).
    ids = [*range(0x40000, 0x40400), *range(0x30, 0x3A), *range(0x0378, 0x037A)]
    assert found(decoded(Tensor("output_ids", "INT32", [len(ids)], ids))) == set()


@pytest.mark.parametrize("datatype", ["UINT8", "UINT32", "INT32", "INT64"])
def test_character_references_in_a_tensor_are_read_decoded(datatype: str) -> None:
    text = "card " + "".join(f"&#{ord(digit)};" for digit in str(CARD))
    values = list(text.encode()) if datatype == "UINT8" else [ord(char) for char in text]
    assert found(decoded(Tensor("t", datatype, [len(values)], values))) == {"credit_card"}


@pytest.mark.parametrize("datatype", ["UINT8", "UINT32", "INT64"])
def test_a_cursor_movement_in_a_tensor_fails_it_closed(datatype: str) -> None:
    text = f"card 9999\x1b[4D{CARD}"
    values = list(text.encode()) if datatype == "UINT8" else [ord(char) for char in text]
    assert "credit_card" in found(decoded(Tensor("t", datatype, [len(values)], values)))


ROWS = [b"card 4111111111111111", b"7 more rows follow.."]  # NUL-padded to 21


def fixed_width(datatype: str) -> Tensor:
    """``ROWS`` as a fixed-width character array: bytes, or code points a row."""
    grid = np.array(ROWS, dtype="S21")
    if datatype in ("UINT8", "INT8"):
        values = np.frombuffer(grid.tobytes(), dtype=np.uint8)
    else:
        values = np.array([row.decode() for row in ROWS], dtype="U21").view(np.uint32)
    return Tensor("notes", datatype, [len(ROWS), 21], [int(value) for value in values])


@pytest.mark.parametrize("datatype", ["UINT8", "INT8", "UINT16", "UINT32", "INT32", "INT64"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_each_row_of_a_character_array_is_read_as_a_text_of_its_own(
    datatype: str, build: Callable[[Tensor], Tensor]
) -> None:
    # Read flat, the card runs into the next row's "7": a 17-digit number, no card.
    detections = numeric_detections(build(fixed_width(datatype)), DETECTORS)
    assert [(hit.detector, hit.start, hit.end) for hits in detections.values() for hit in hits] == [
        ("credit_card", 5, 21)
    ]


def test_rows_are_read_apart_only_at_their_ends() -> None:
    # A value split across rows is still read flat; a single row adds nothing.
    split = Tensor("t", "UINT8", [2, 13], list(b"ssn 123-45-67" + b"89 and more!!"))
    assert found(decoded(split)) == {"us_ssn"}
    one_row = Tensor("t", "UINT8", [1, 21], list(ROWS[0]))
    assert found(decoded(one_row)) == {"credit_card"}


def test_class_ids_that_read_as_escape_sequences_do_not_fail_a_tensor_closed() -> None:
    # A segmentation mask: background 0, classes 27 (ESC), 65 ("A"), 49 ("1")...
    mask = [0, 0, 27, 65, 49, 50, 0, 27, 91, 52, 68, 0] * 50
    for datatype in ("INT32", "UINT8"):
        assert found(decoded(Tensor("mask", datatype, [len(mask)], mask))) == set(), datatype


# Found by review (rev-new L4): read flat, "ref" glues onto the next row's card once the NULs
# padding it are dropped, and the rows were read apart only as UTF-8.
FULL_WIDTH_CARD = str(CARD).translate({ord(digit): 0xFF10 + int(digit) for digit in "0123456789"})


def wide_rows(rows: list[str], encoding: str, width: int = 20) -> Tensor:
    """``rows`` as a fixed-width character array of ``width`` characters in ``encoding``, as
    bytes (numpy's ``<U20`` viewed as UINT8, for UTF-32-LE)."""
    data = b"".join(row.ljust(width, "\0").encode(encoding) for row in rows)
    return Tensor("notes", "UINT8", [len(rows), len(data) // len(rows)], list(data))


@pytest.mark.parametrize("encoding", ["utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("build", [lambda tensor: tensor, decoded], ids=["values", "raw"])
def test_each_row_of_a_utf16_or_utf32_character_array_is_read_as_a_text_of_its_own(
    encoding: str, build: Callable[[Tensor], Tensor]
) -> None:
    for rows in (["ref", FULL_WIDTH_CARD], ["ref 9", FULL_WIDTH_CARD], ["ref", "\u200b".join(str(CARD))]):
        assert found(build(wide_rows(rows, encoding, 32))) == {"credit_card"}, (rows, encoding)
    grid = np.array(["ref", FULL_WIDTH_CARD], dtype="<U20").view(np.uint8).reshape(2, -1)
    assert found(build(Tensor("notes", "UINT8", list(grid.shape), grid.ravel().tolist()))) == {"credit_card"}


def test_wide_rows_of_binary_data_add_nothing() -> None:
    ids = np.random.default_rng(7).integers(0, 1000, (64, 32)).astype("<i4").view(np.uint8)
    assert found(decoded(Tensor("ids", "UINT8", list(ids.shape), ids.ravel().tolist()))) == set()


def _covers(hits: list, name: str, start: int, end: int) -> bool:
    return any(hit.detector == name and hit.start <= start and end <= hit.end for hit in hits)


def test_a_decoy_value_as_written_does_not_hide_one_only_another_reading_shows() -> None:
    """Bytes that are not UTF-8: an SSN as written names ``us_ssn``, and an SSN only the text
    with its control characters dropped shows must still be covered where it is (by a
    detection spanning the whole text), not stood in for by the decoy's name."""
    text = b"decoy 123-45-6789 \xff hidden 234-56\x00-7891"
    hidden = text.index(b"234")
    found = numeric_detections(Tensor("notes", "UINT8", [len(text)], list(text)), DetectorSet.default())
    hits = [hit for hits in found.values() for hit in hits]
    assert _covers(hits, "us_ssn", 6, 17)
    assert _covers(hits, "us_ssn", hidden, len(text))


def test_a_decoy_value_does_not_hide_one_only_the_wide_rows_show() -> None:
    """Rows read as UTF-16 one at a time (``_wide_row_detections``): a raw hit of the same
    detector elsewhere does not cover the value a row shows."""
    from labelgate.classify.detectors import Detection
    from labelgate.classify.numbers import _wide_row_detections

    width = 32
    rows = [row.encode("utf-16-le").ljust(width, b"\x00") for row in ("ssn 234-56-7891", "x")]
    text = b"".join(rows)
    decoy = [Detection("us_ssn", "confidential", 0, 2)]
    more = _wide_row_detections(text, width, DetectorSet.default(), decoy)
    assert _covers(more, "us_ssn", 0, len(text))


def test_the_folded_text_of_code_points_splices_every_form_in_its_place() -> None:
    """``_folded_text`` places what folds to several characters with numpy: it must read as
    each element's own form, joined, with each element's length (random code points, many
    of them such forms, dropped ones and tags among them)."""
    rng = random.Random(17)
    longer = sorted(characters.longer_forms())
    for _ in range(2000):
        choices = [rng.randint(0, 0x2FFF), rng.choice(longer), 0x200B, 0x202E, 0x41, 0x31, 0xE0001]
        points = np.array([rng.choice(choices) for _ in range(rng.randint(0, 40))], dtype=np.int64)
        view = characters._folded_view(points)
        forms = [
            b""
            if byte == characters.DROPPED
            else characters.longer_forms()[int(code)]
            if byte == characters.LONGER
            else bytes([byte])
            for byte, code in zip(view.tolist(), points.tolist(), strict=True)
        ]
        text, lengths = characters._folded_text(view, points)
        assert text == b"".join(forms)
        assert lengths.tolist() == [len(form) for form in forms]


def test_a_row_shown_in_display_order_is_read_on_its_own() -> None:
    """An override left open in one row runs into the next when the tensor is read flat, but
    a client reading row by row shows the next row alone (``123 45 6789`` before an Arabic
    letter, here): rows are read apart whenever the tensor may reorder (review)."""
    rows = ["id \u202dx\u0627".rjust(12), "\u0627" + "6789 45 123".rjust(11)]
    codes = [ord(char) for row in rows for char in row]
    array = np.array(codes, dtype=np.int32)
    found = characters.detections(array, DetectorSet(), lambda text: [], width=12)
    assert "us_ssn" in {hit.detector for hit in found}
