"""Values hidden by characters a reader never sees are found: default-ignorable characters
(variation selectors, the combining grapheme joiner, Hangul fillers...), control
characters (NULs, ANSI escapes, UTF-16 text) and output names written so (``folding``
and its callers: text tensors, JSON leaves, parameters, messages, streams, names)."""

from __future__ import annotations

import json

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import DetectorSet, classify_message, classify_outputs, native
from labelgate.classify.carryover import CarryOver
from labelgate.classify.folding import UNFOLDABLE, UNICODE_VERSION, folded, may_hide
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.parameters import classify_parameters, released_parameters
from labelgate.enforce import apply_masks
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor
from tests.classify.order_proto import Order
from tests.classify.test_folding import CATALOG, KEY, SSN, text_tensor

DETECTORS = DetectorSet.default()
CARD = "4111111111111111"


def spread(value: str, between: str) -> str:
    return between.join(value)


# One character of each kind of Default_Ignorable_Code_Point that is not a format character.
IGNORABLE = {
    "VS15 U+FE0E": "\ufe0e",
    "VS16 U+FE0F": "\ufe0f",
    "VS1 U+FE00": "\ufe00",
    "VS17 U+E0100": "\U000e0100",
    "combining grapheme joiner U+034F": "\u034f",
    "Hangul filler U+3164": "\u3164",
    "half-width Hangul filler U+FFA0": "\uffa0",
    "Hangul choseong filler U+115F": "\u115f",
    "Khmer vowel inherent U+17B4": "\u17b4",
    "Mongolian variation selector U+180B": "\u180b",
    "unassigned ignorable U+FFF0": "\ufff0",
    "unassigned tag U+E0FFF": "\U000e0fff",
}
CONTROL = {
    "NUL": "ssn 123\x00-45-6789",
    "ANSI colour reset": "ssn 123\x1b[0m-45-6789",
    "ANSI colour": "ssn \x1b[1;31m123-45-6789\x1b[0m",
    "DEL and BEL": "ssn 123\x7f-45\x07-6789",
    "C1 control": "ssn 123\x85-45-6789",
}
# Each reads as the SSN (or card) to a person or terminal; none is found by a raw scan.
HIDDEN = {
    **{name: f"ssn {spread(SSN, char)}" for name, char in IGNORABLE.items()},
    "VS1 in a card": f"card 4111\ufe00{CARD[4:]}",
    "CGJ in a card": f"card {spread(CARD, chr(0x34F))}",
    **CONTROL,
    "ANSI in a card": f"card 4111\x1b[0m{CARD[4:]}",
}
UTF16 = f"ssn {SSN}".encode("utf-16-le")


@pytest.mark.parametrize("text", HIDDEN.values(), ids=HIDDEN.keys())
def test_invisible_and_control_characters_are_folded_away(text: str) -> None:
    assert not DETECTORS.scan(text.encode()), "hidden from a raw scan"
    assert may_hide(text.encode())
    assert DETECTORS.scan(folded(text.encode()) or b""), "found once folded"


def test_utf16_text_folds_to_what_it_reads() -> None:
    assert folded(UTF16) == f"ssn {SSN}".encode()


def test_tab_newline_return_and_plain_ascii_are_left_alone() -> None:
    for text in (b"ssn 123\t45\n6789\r", b"plain text", b"[0m brackets"):
        assert not may_hide(text)
        assert folded(text) is None
    assert folded(b"a\x00b\tc") == b"ab\tc", "the kept controls stay where they are"


def test_a_value_found_only_folded_spans_the_whole_text() -> None:
    texts = [HIDDEN["NUL"].encode(), HIDDEN["VS16 U+FE0F"].encode(), b"x\x00y", UTF16]
    hidden = hidden_by_folding(texts, DETECTORS, DETECTORS.scan_each(texts))
    assert sorted(hidden) == [0, 1, 3]
    assert [(hit.detector, hit.start, hit.end) for hit in hidden[0]] == [("us_ssn", 0, len(texts[0]))]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_a_hidden_value_in_a_text_tensor_is_found_and_masked(use_native: bool, raw: bool) -> None:
    values = [*HIDDEN.values(), f"ssn {SSN}", "tab\tand text", "nothing here"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert {"outputs.free{us_ssn}", "outputs.free{credit_card}"} <= {f.path for f in result.fields}
        masks = [
            {"path": f"outputs.free{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")
        ]
        [masked] = apply_masks([tensor], result, masks, KEY)
    for name, value in zip(HIDDEN, masked.values, strict=False):
        assert value == b"[REDACTED]", name
    assert masked.values[-2:] == [b"tab\tand text", b"nothing here"]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_control_characters_hide_nothing_in_an_all_ascii_tensor(use_native: bool, raw: bool) -> None:
    # No element past ASCII: the tensor takes the paths ASCII text takes (the one-call raw
    # scan, the native spans), which must still fold these elements.
    values = [*CONTROL.values(), HIDDEN["ANSI in a card"], "tab\tand text", f"ssn {SSN}"]
    values = [value for value in values if value.isascii()]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        masks = [
            {"path": f"outputs.free{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")
        ]
        [masked] = apply_masks([tensor], result, masks, KEY)
    assert masked.values[:-2] == [b"[REDACTED]"] * (len(values) - 2), values
    assert masked.values[-2:] == [b"tab\tand text", b"ssn [REDACTED]"], "plain text keeps its spans"


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_utf16_text_in_a_text_tensor_is_found_and_masked(use_native: bool, raw: bool) -> None:
    with native.forced(use_native):
        tensor = Tensor("free", "BYTES", [2], [UTF16, b"ok"])
        if raw:
            tensor = text_tensor_of_bytes(tensor)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.free{us_ssn}", "strategy": "redact"}], KEY
        )
    assert masked.values == [b"[REDACTED]", b"ok"]


def text_tensor_of_bytes(tensor: Tensor) -> Tensor:
    """``tensor`` as the gateway decodes it from raw contents."""
    from labelgate.oip import tensors as oip

    reply = pb.ModelInferResponse()
    oip.encode_outputs(reply, [tensor], raw=True)
    [decoded] = oip.decode_outputs(reply)
    assert decoded.raw_form() is not None
    return decoded


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize(
    "hiding", ["VS16 U+FE0F", "combining grapheme joiner U+034F", "NUL", "ANSI colour reset"]
)
def test_a_json_leaf_hiding_a_value_is_opaque_and_masked_whole(use_native: bool, hiding: str) -> None:
    # A raw control character is not valid JSON; written as an escape it is (\\u0000, \\u001b).
    document = json.dumps({"contact": {"id": HIDDEN[hiding]}}, ensure_ascii=False)
    with native.forced(use_native):
        tensor = text_tensor("notes", [document, json.dumps({"contact": {"id": "x"}})], raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        assert "outputs.notes{us_ssn}" in {field.path for field in result.fields}
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.notes{us_ssn}", "strategy": "redact"}], KEY
        )
    assert b"6789" not in masked.values[0]
    assert json.loads(masked.values[1]) == {"contact": {"id": "x"}}


@pytest.mark.parametrize("use_native", [True, False])
def test_a_raw_control_character_in_a_json_element_is_masked_whole(use_native: bool) -> None:
    document = '{"contact": {"id": "' + HIDDEN["NUL"] + '"}}'
    with native.forced(use_native):
        tensor = text_tensor("notes", [document, "ok"], raw=True)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks(
            [tensor], result, [{"path": "outputs.notes{us_ssn}", "strategy": "redact"}], KEY
        )
    assert b"6789" not in masked.values[0]
    assert masked.values[1] == b"ok"


@pytest.mark.parametrize("hiding", ["VS16 U+FE0F", "Hangul filler U+3164", "NUL", "ANSI colour reset"])
def test_released_parameters_hiding_a_value_are_found(hiding: str) -> None:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].string_param = HIDDEN[hiding]
    released = {"note": "internal"}  # (the final flag is a bool only)
    result = classify_parameters(released_parameters(reply, released), released, DETECTORS)
    assert "parameters.note{us_ssn}" in {field.path for field in result.fields}


@pytest.mark.parametrize("hiding", ["combining grapheme joiner U+034F", "NUL", "ANSI colour"])
def test_message_strings_hiding_a_value_are_found(hiding: str) -> None:
    order = Order(id=HIDDEN[hiding], attrs={"k": HIDDEN["VS16 U+FE0F"]})
    labels = {field.path: set(field.labels) for field in classify_message(order, CATALOG, DETECTORS).fields}
    assert labels["id{us_ssn}"] == {"confidential"}
    assert "confidential" in labels["attrs"]


STREAMED = {
    "NULs": ["x" * 300 + " ssn 123\x00-4", "5-6789 " + "y" * 300],
    "ANSI escapes": ["ssn 123" + "\x1b[0m" * 60, "-45-6789 ok"],
    "variation selectors": ["ssn 123-" + "\ufe0f" * 100, "45-6789 ok"],
}


@pytest.mark.parametrize("pieces", STREAMED.values(), ids=STREAMED.keys())
def test_streamed_text_hiding_a_value_is_held_whole_until_the_final_reply(pieces: list[str]) -> None:
    carry = CarryOver(DETECTORS, window=64)
    first, last = (
        carry.release("r1", [Tensor("text", "BYTES", [1], [piece.encode()])], final)
        for piece, final in zip(pieces, (False, True), strict=True)
    )
    assert first[0].values == [b""], "nothing released before the final reply"
    assert last[0].values == ["".join(pieces).encode()]
    assert DETECTORS.scan(folded(last[0].values[0]) or b""), "released whole, the value shows folded"


NAMES = {
    "full-width digits": "ssn_１２３-４５-６７８９",
    "zero-width spaces": f"card_{spread(CARD, chr(0x200B))}",
    "VS16": f"ssn_{spread(SSN, chr(0xFE0F))}",
    "NULs": f"ssn_{spread(SSN, chr(0))}",
    "ANSI escape": "card_4111\x1b[0m111111111111",
    "JSON escapes": "card_\\u0034111111111111111",
    "escaped full-width": "ssn_\\uff11\\uff12\\uff13-45-6789",
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_an_output_name_hiding_a_value_fails_the_reply(name: str) -> None:
    clean: set[tuple[str, ...]] = set()
    with pytest.raises(UpstreamError) as refused:
        classify_outputs(
            "customer-profile", [Tensor(name, "BYTES", [1], [b"x"])], CATALOG, DETECTORS, clean_names=clean
        )
    assert refused.value.reason == "OUTPUT_NAME_DETECTED"
    assert name not in refused.value.message
    assert not clean, "a refused name set is not remembered as clean"


def test_names_that_fold_to_nothing_found_still_pass() -> None:
    names = ["ｎｏｔｅｓ", "café\ufe0f", "tab\tname", "back\\slash"]
    classify_outputs("customer-profile", [Tensor(n, "BYTES", [1], [b"x"]) for n in names], CATALOG, DETECTORS)


@pytest.mark.parametrize(
    "text",
    [
        b"ssn 123\x1b]0;title\x07-45-6789",  # OSC: a window title, ended by BEL
        b"ssn 123\x1b]8;;https://x\x1b\\-45-6789",  # OSC: a hyperlink, ended by ST
        b"ssn 123\x1b(B-45-6789",  # a character-set designation
        b"ssn 123-45-678X\x089",  # a backspace over a character
        b"card 4111\x1b=1111\x1b>1111\x1b71111",  # keypad modes, save cursor
    ],
)
def test_terminal_sequences_other_than_csi_are_folded_away(text: bytes) -> None:
    # Found by review: folding dropped their ESC and left the rest between the digits.
    hidden = hidden_by_folding([text], DETECTORS, DETECTORS.scan_each([text]))
    assert hidden, folded(text)


# Found by review (rev-tensors): text in UTF-16 or UTF-32 was read only by dropping its NULs,
# which shows its ASCII characters and nothing else.
FULL_WIDTH = {ord(digit): 0xFF10 + int(digit) for digit in "0123456789"}


def in_digits_from(text: str, zero: int) -> str:
    """``text`` with its ASCII digits written in the script whose zero is ``zero``."""
    return text.translate({ord(digit): zero + int(digit) for digit in "0123456789"})


NOT_ASCII = {
    "full-width SSN": "ssn " + SSN.translate(FULL_WIDTH),
    "Arabic-Indic SSN": "ssn " + in_digits_from(SSN, 0x660),
    "Devanagari card": "card " + in_digits_from(CARD, 0x966),
    "zero-width spaces in a card": "card " + spread(CARD, "\u200b"),
    "soft hyphens in a card": "card " + spread(CARD, "\u00ad"),
    "no-break spaces in a card": "card 4111\u00a01111\u00a01111\u00a01111",
}


# Found by review: the runtime's Unicode database (Python 3.11: 14.0) reads digits and marks of
# later versions as unassigned code points, which folding kept as they were.
NEWER_DIGITS = {
    "Kawi (15.0)": 0x11F50,
    "Nag Mundari (15.0)": 0x1E4F0,
    "Outlined (16.0)": 0x1CCF0,
    "Garay (16.0)": 0x10D40,
}


@pytest.mark.parametrize("zero", NEWER_DIGITS.values(), ids=NEWER_DIGITS.keys())
def test_digits_newer_than_the_runtimes_unicode_fold_to_ascii(zero: int) -> None:
    for text in (f"card {CARD}", f"ssn {SSN}"):
        assert folded(in_digits_from(text, zero).encode()) == text.encode()


def test_a_combining_mark_newer_than_the_runtimes_unicode_is_dropped() -> None:
    text = "card " + "".join(digit + "\U00010efd" for digit in CARD)  # Mn since Unicode 15.0
    assert folded(text.encode()) == f"card {CARD}".encode()


def test_folding_reads_a_unicode_database_of_its_own() -> None:
    assert tuple(map(int, UNICODE_VERSION.split(".")))[:2] >= (17, 0)


UNASSIGNED = {"U+0378 (Greek block)": "\u0378", "U+40000 (plane 4)": "\U00040000"}


@pytest.mark.parametrize("char", UNASSIGNED.values(), ids=UNASSIGNED.keys())
def test_text_with_an_unassigned_code_point_fails_closed(char: str) -> None:
    # A newer Unicode may make it a digit (``card`` + sixteen of them) or a mark between digits.
    for text in (f"card {char * 16}", f"card {spread(CARD, char)}", f"note {char}"):
        assert folded(text.encode()) is UNFOLDABLE, text
        [spans] = hidden_by_folding([text.encode()], DETECTORS).values()
        assert {(hit.detector, hit.start, hit.end) for hit in spans} == {
            (name, 0, len(text.encode())) for name in DETECTORS.names
        }


def test_noncharacters_and_unassigned_code_points_in_binary_noise_do_not_fail_closed() -> None:
    assert folded("note \ufdd0 \U0001ffff".encode()) is not UNFOLDABLE, "never assigned: never digits"
    noise = bytes(range(128, 256)) * 4 + "\U00040000".encode() + bytes(range(128, 256)) * 4
    assert folded(noise) is not UNFOLDABLE, "an image's bytes read as UTF-8 are not text"


# Found by review: cursor movements were deleted, gluing decoy digits to the value a terminal
# shows over them.
MOVING = {
    "cursor left over a decoy": f"card 9999\x1b[4D{CARD}",
    "cursor to a column": f"card 9999\x1b[6G{CARD}",
    "back and forth": f"card {CARD[:8]}\x1b[8D\x1b[8C{CARD[8:]}",
    "overwriting a letter": "card 4111 1111x\x1b[1D 1111 1111",
    "erase line": f"card 9999\x1b[2K{CARD}",
    "device control string": f"card 9999\x1bP9999\x1b\\{CARD}",
}


@pytest.mark.parametrize("text", MOVING.values(), ids=MOVING.keys())
def test_text_that_moves_a_terminals_cursor_fails_closed(text: str) -> None:
    data = text.encode()
    assert folded(data) is UNFOLDABLE
    [spans] = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data])).values()
    assert "credit_card" in {hit.detector for hit in spans}


def test_sequences_that_only_style_text_are_still_folded_away() -> None:
    for text in (HIDDEN["ANSI colour"], HIDDEN["ANSI in a card"], "ssn 123\x1b]0;title\x07-45\x1b(B-6789"):
        assert (
            folded(text.encode()) == f"ssn {SSN}".encode() or folded(text.encode()) == f"card {CARD}".encode()
        )


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_wide_newer_and_moved_text_in_a_text_tensor_is_found_and_masked(use_native: bool, raw: bool) -> None:
    values = [
        NOT_ASCII["zero-width spaces in a card"].encode("utf-16-le"),
        NOT_ASCII["Arabic-Indic SSN"].encode("utf-32"),
        in_digits_from(f"card {CARD}", 0x11F50).encode(),
        MOVING["cursor left over a decoy"].encode(),
        b"ok",
    ]
    with native.forced(use_native):
        tensor = Tensor("free", "BYTES", [len(values)], values)
        if raw:
            tensor = text_tensor_of_bytes(tensor)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        masks = [
            {"path": f"outputs.free{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")
        ]
        [masked] = apply_masks([tensor], result, masks, KEY)
    assert masked.values == [b"[REDACTED]"] * 4 + [b"ok"]


def test_bytes_that_are_not_text_read_a_cursor_movement_as_a_space() -> None:
    # A dark image's pixels hold ESC-letter pairs: failing them closed would mask every one.
    pixels = bytes([27, 65, 0, 3, 50, 51, 27, 91, 52, 68, 17]) * 40
    assert folded(pixels) not in (None, UNFOLDABLE)
    assert hidden_by_folding([pixels], DETECTORS, DETECTORS.scan_each([pixels])) == {}
    # The same decoy, padded with NULs so it reads as no text: still apart, the card found.
    padded = MOVING["cursor left over a decoy"].encode() + b"\x00" * 100
    assert folded(padded) == f"card 9999 {CARD}".encode()
    assert hidden_by_folding([padded], DETECTORS, DETECTORS.scan_each([padded]))
